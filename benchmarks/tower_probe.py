"""What a base's vision tower knows on pictures it was and was not trained on, read by its own heads.

    python -m benchmarks.tower_probe --run_dir runs/pretrain_10k --splits pretrain,fresh
    python -m benchmarks.tower_probe --run_dir runs/pretrain_stk --data_dir DIR --splits train,valid --name tower_probe_stk

Stage 1 of `pretraining.base_vlm pretrain` trains the tower with two throwaway heads (the
picture's facts, and which kart's centre is on which token) and keeps them in RUN_DIR/vision.pt.
This reads that state and scores the facts head on each split: every fact (ego, track, count, the
counts on each side, each clearly placed kart's side and depth), with the same rules as the run's,
on the views where the fact is clear. The gap between the split the tower was trained on and one it never saw is overfitting, which a
fine-tuning run would take many minutes to show; the count's confusion table says where counting
fails (measured: a tower trained 10,000 steps on 3,000 rendered frames counted the karts of 100% of
its own views and 85.9% of a fresh split's; on 10,000 frames, 96.5% and 91.7%).

Writes benchmarks/results/NAME.{json,md} and NAME.png (the count's confusion, one panel per split).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import fire
import numpy as np
import torch

from benchmarks.curves import RESULTS, results_paths, write_results


def probe_split(model, head, views, pictures, batch_size: int = 256) -> dict:
    """Accuracy of every fact of FACT_CLASSES over the VIEWS where it is known, of each clearly
    placed kart's side and depth ("side", "depth": the ego's own row left out), and the count's
    confusion (true count -> predicted count -> views)."""
    from pretraining.base_vlm import DEPTHS, FACT_CLASSES, SIDES, view_facts

    right, seen, confusion = Counter(), Counter(), {}
    with torch.no_grad():
        for start in range(0, len(views), batch_size):
            chunk = views[start:start + batch_size]
            logits, place_logits = head(model.vision(pictures.batch([p for p, _ in chunk])))
            predicted = {name: logits[name].argmax(1).tolist() for name in FACT_CLASSES}
            placed = place_logits.argmax(-1).tolist()  # (B, karts, 2): side and depth classes
            for row, (_, view) in enumerate(chunk):
                facts, places = view_facts(view)
                for kart, (side, depth) in enumerate(places):
                    for name, target, ego in (("side", side, SIDES.index("ego")), ("depth", depth, DEPTHS.index("ego"))):
                        if target > ego:  # a kart in sight, clearly on one side (not absent, not the ego)
                            seen[name] += 1
                            right[name] += placed[row][kart][name == "depth"] == target
                for name, target in facts.items():
                    if target < 0:
                        continue
                    seen[name] += 1
                    right[name] += predicted[name][row] == target
                    if name == "karts":
                        cell = confusion.setdefault(str(target), {})
                        cell[str(predicted[name][row])] = cell.get(str(predicted[name][row]), 0) + 1
    names = [*FACT_CLASSES, "side", "depth"]
    return {"views": len(views), "accuracy": {n: round(right[n] / seen[n], 4) for n in names if seen[n]},
            "counts": {n: seen[n] for n in names if seen[n]}, "count_confusion": confusion}


def tables(results: dict) -> str:
    splits = list(results["splits"])
    facts = list(next(iter(results["splits"].values()))["accuracy"])
    lines = [f"| fact | {' | '.join(splits)} |", "|---|" + "---|" * len(splits)]
    for fact in facts:
        cells = [f"{r['accuracy'][fact]:.1%} ({r['counts'][fact]})" if fact in r["accuracy"] else "" for r in results["splits"].values()]
        lines.append(f"| {fact} | {' | '.join(cells)} |")
    for split, r in results["splits"].items():
        lines += ["", f"Count on {split}: true count, views, share read right", "", "| karts | views | right |", "|---|---|---|"]
        for true, row in sorted(r["count_confusion"].items(), key=lambda kv: int(kv[0])):
            n = sum(row.values())
            lines.append(f"| {true} | {n} | {row.get(true, 0) / n:.0%} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """One confusion matrix of the count per split, rows normalised."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = results["splits"]
    fig, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.8), squeeze=False)
    for ax, (split, r) in zip(axes[0], splits.items(), strict=True):
        confusion = r["count_confusion"]
        size = 1 + max([int(t) for t in confusion] + [int(p) for row in confusion.values() for p in row] + [1])
        grid = np.zeros((size, size))
        for t, row in confusion.items():
            for p, n in row.items():
                grid[int(t), int(p)] = n
        shown = grid / np.maximum(grid.sum(1, keepdims=True), 1)
        ax.imshow(shown[1:, 1:], cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(size - 1), range(1, size))
        ax.set_yticks(range(size - 1), range(1, size))
        for i in range(1, size):
            for j in range(1, size):
                if grid[i, j]:
                    ax.text(j - 1, i - 1, f"{shown[i, j]:.0%}", ha="center", va="center", fontsize=6,
                            color="white" if shown[i, j] > 0.5 else "black")
        ax.set_xlabel("karts read by the tower's head")
        ax.set_ylabel("karts in the picture")
        ax.set_title(f"{split}: count {r['accuracy'].get('karts', float('nan')):.1%}")
    fig.suptitle(f"vision tower of {results['run_dir']}")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(run_dir: str = "runs/pretrain", splits: str = "pretrain,valid", data_dir: str = "data", num_views: int = 3000,
         output_dir: str = str(RESULTS), name: str = "tower_probe", overwrite: bool = False) -> None:
    """Score the stage-1 heads kept in RUN_DIR/vision.pt on the first NUM_VIEWS views of each of SPLITS.

    Args:
        run_dir: a pretraining run's folder (its --run_dir), holding vision.pt.
        splits: comma-separated kart splits of DATA_DIR to score (a known split is rendered if missing).
        data_dir: root folder of the data.
        num_views: views per split, from the start of the split.
        output_dir: where NAME.json, NAME.md and NAME.png go.
        name: the results' file name.
        overwrite: replace results of the same name.
    """
    from generate_qa import ensure_world, split_views
    from homework.cli_checks import check_int, fail
    from homework.modeling_kart_vlm import KartVLMForConditionalGeneration, build_tokenizer, tiny_config
    from homework.vlm_inputs import PictureCache
    from pretraining.base_vlm import FactsHead
    from worlds.kart import KARTS

    check_int("num_views", num_views, 1)
    names = [s.strip() for s in (splits if isinstance(splits, str) else ",".join(map(str, splits))).split(",") if s.strip()]
    if not names:
        fail("--splits is empty; pass one or more kart splits, e.g. --splits pretrain,valid")
    state_path = Path(run_dir) / "vision.pt"
    if not state_path.is_file():
        fail(f"{state_path} does not exist; pass the --run_dir of a `python -m pretraining.base_vlm pretrain` run")
    paths = results_paths(output_dir, name, overwrite)
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    settings = state.get("settings", {})
    model = KartVLMForConditionalGeneration(tiny_config(len(build_tokenizer())))
    model.vision.load_state_dict(state["vision"])
    model.eval()
    head = FactsHead(model.num_image_tokens, model.config.vision_channels[-1], len(KARTS))
    head.load_state_dict(state["head"])
    results = {"run_dir": str(run_dir), "step": int(state["step"]), "settings": settings, "splits": {}}
    for split in names:
        split_dir = ensure_world(split, str(data_dir))
        views = [(str(Path(data_dir) / f), v) for f, v in split_views(split_dir, rules=settings.get("rules", "kit"))][:num_views]
        if not views:
            fail(f"no pictures in {split_dir}")
        pictures = PictureCache([p for p, _ in views], desc=split)
        results["splits"][split] = probe_split(model, head, views, pictures)
    write_results(paths, results, tables(results))
    plot(results, paths[0].with_suffix(".png"))
    print(f"wrote {paths[0].with_suffix('.png')}")


if __name__ == "__main__":
    fire.Fire(main)
