"""The VLM and CLIP references on a kart split whose seed was never used: the README's two tables.

    python -m benchmarks.fresh_split      # data/fresh (seed 8675309, 300 frames x 10 views), made if missing
    python -m benchmarks.fresh_split --vlm runs/vlm_new --clip runs/clip_new --name fresh_split_new

Renders the split (`python -m worlds kart --split fresh --seed 8675309 --num_frames 300`), makes
its questions and captions (`generate_qa.py`, `homework.generate_captions`, the kit's rules) if
they are missing, then asks the committed VLM reference VLM_SAMPLES questions spread evenly over
the split (as `finetune` evaluates) and scores the committed CLIP reference on its multiple-choice
sets (the first CLIP_SAMPLES, as `clip test --max_samples` does; default all). Writes
OUTPUT_DIR/NAME.json and NAME.md (default benchmarks/results/fresh_split.{json,md}).
"""

from __future__ import annotations

import sys
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo is the package root
from benchmarks.curves import RESULTS, results_paths, write_results  # noqa: E402
from homework.cli_checks import check_int, fail  # noqa: E402
from worlds import kart  # noqa: E402


def tables(results: dict) -> str:
    """The VLM's per-family table and the CLIP's per-template table, in Markdown."""
    out = []
    for model, key in (("vlm", "family"), ("clip", "template")):
        r = results[model]
        out += [f"| {key} | n | accuracy |", "|---|---|---|"]
        out += [f"| {name} | {r['counts'][name]} | {100 * acc:.1f}% |" for name, acc in r["per_group"].items()]
        out += [f"| all | {sum(r['counts'].values())} | {100 * r['accuracy']:.1f}% |", ""]
    return "\n".join(out)


def main(split: str = "fresh", seed: int = 8675309, num_frames: int = 300, data_dir: str = "data",
         vlm_samples: int = 3000, clip_samples: int = 0, output_dir: str = str(RESULTS), name: str = "fresh_split",
         overwrite: bool = False, vlm: str = "homework/checkpoints/vlm", clip: str = "homework/checkpoints/clip") -> None:
    """Score a VLM and a CLIP checkpoint (the committed references unless told) on SPLIT; write
    OUTPUT_DIR/NAME.json and NAME.md.

    Args:
        split: the kart split to score on (rendered from SEED if it is missing).
        seed: its world seed; must be one no training used.
        num_frames: frames to render if the split is missing (10 views each).
        data_dir: root folder of the data.
        vlm_samples: questions to ask the VLM, spread evenly over the split.
        clip_samples: multiple-choice sets to score the CLIP on; 0 = all of them.
        output_dir: where NAME.json and NAME.md go; default benchmarks/results.
        name: the output files' name, without extension.
        overwrite: replace NAME.json / NAME.md if they exist.
        vlm: the VLM checkpoint to score (default: the committed reference).
        clip: the CLIP checkpoint to score (default: the committed reference).
    """
    check_int("seed", seed, 0)
    check_int("num_frames", num_frames, 1)
    check_int("vlm_samples", vlm_samples, 1)
    check_int("clip_samples", clip_samples, 0)
    if seed in kart.SPLIT_SEEDS.values():
        fail(f"--seed {seed} is the seed of a split the kit trains or pretrains on; choose another")
    paths = results_paths(output_dir, name, overwrite)
    # imported here: transformers takes a while, and --help need not wait
    from homework.clip import evaluate, load_model
    from homework.data import VQADataset, benchmark
    from homework.finetune import load_finetuned

    vlm_model, clip_model = load_finetuned(vlm), load_model(clip)  # a missing or wrong checkpoint stops before any work
    folder = Path(data_dir) / split
    if not any(folder.glob("*_info.json")):
        kart.generate(split=split, num_frames=num_frames, seed=seed, data_dir=data_dir)
    # the questions and the multiple-choice sets are made on the spot by the datasets if missing
    vlm_result = benchmark(vlm_model, VQADataset(split, data_dir=data_dir, max_samples=vlm_samples, spread=True),
                           batch_size=100)
    clip_result = evaluate(clip_model, split, data_dir, clip_samples or None)
    results = {
        "split": split, "seed": seed, "data_dir": data_dir,
        "vlm": {"checkpoint": str(vlm), "accuracy": round(vlm_result.accuracy, 4),
                "per_group": {k: round(v, 4) for k, v in vlm_result.per_family.items()}, "counts": vlm_result.counts},
        "clip": {"checkpoint": str(clip), "accuracy": round(clip_result.accuracy, 4),
                 "per_group": {k: round(v, 4) for k, v in clip_result.per_template.items()},
                 "counts": clip_result.counts, "recall_at_1": clip_result.recall_at_1,
                 "recall_at_5": clip_result.recall_at_5},
    }
    write_results(paths, results, tables(results))


if __name__ == "__main__":
    fire.Fire(main)
