"""Training the CLIP with default settings: multiple-choice accuracy against wall-clock time.

    python -m benchmarks.clip_train [--max_steps 1500] [--eval_every 100]

Writes to benchmarks/results/:
- clip_train_<device>.csv and .png: valid multiple-choice accuracy (overall and per caption
  template) against seconds of training;
- clip_train_<device>.json: setup and training seconds, the time to 70% and 90%, and the
  trained model's speed (multiple-choice sets per second) and peak memory.
"""

from __future__ import annotations

import csv
import json
import resource
import time
from pathlib import Path

import fire
import torch

RESULTS = Path(__file__).parent / "results"


def main(max_steps: int = 1500, eval_every: int = 100, eval_samples: int = 500, data_dir: str = "data") -> None:
    """Train with the defaults, evaluating often, and record the curve and the figures.

    Args:
        max_steps: optimisation steps.
        eval_every: steps between evaluations.
        eval_samples: valid multiple-choice sets per evaluation.
        data_dir: root folder of the data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from homework.clip import load_model, predict, train
    from homework.data import MultiChoiceQADataset

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path("runs") / f"bench-clip-{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.time()
    train(output_dir=str(out), data_dir=data_dir, max_steps=max_steps, eval_every=eval_every, eval_samples=eval_samples)
    wall = time.time() - start
    record = json.loads((out / "training_config.json").read_text())
    evals = [h for h in json.loads((out / "history.json").read_text()) if "accuracy" in h]

    RESULTS.mkdir(exist_ok=True)
    templates = list(evals[-1]["per_template"])
    with open(RESULTS / f"clip_train_{device}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "seconds", "accuracy", *templates])
        for h in evals:
            w.writerow([h["step"], h["seconds"], round(h["accuracy"], 4),
                        *(round(h["per_template"].get(t, float("nan")), 4) for t in templates)])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([h["seconds"] for h in evals], [h["accuracy"] for h in evals], marker="o", color="k", label="all")
    for t in templates:
        ax.plot([h["seconds"] for h in evals], [h["per_template"].get(t) for h in evals], alpha=0.5, label=t)
    for level, style in ((0.2, "-."), (0.7, "--"), (0.9, ":")):
        ax.axhline(level, color="grey", ls=style, lw=0.8)
    ax.set(xlabel=f"seconds of training after {record['setup_seconds']:.0f} s of setup ({device})",
           ylabel="valid multiple-choice accuracy", ylim=(0, 1), title="CLIP over the base's towers, default settings")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / f"clip_train_{device}.png", dpi=110)

    model = load_model(out)
    sets = MultiChoiceQADataset("valid", data_dir=data_dir, max_samples=eval_samples)
    items = [sets[i] for i in range(len(sets))]
    start = time.perf_counter()
    predict(model, [it["image_path"] for it in items], [it["candidates"] for it in items])
    sets_per_s = len(items) / (time.perf_counter() - start)

    def first(threshold: float):
        return next((h["seconds"] for h in evals if h["accuracy"] >= threshold), None)

    figures = {
        "device": device, "threads": torch.get_num_threads(), "setup_seconds": record["setup_seconds"],
        "train_seconds": evals[-1]["seconds"], "wall_seconds": round(wall, 1),
        "final_accuracy": round(evals[-1]["accuracy"], 4), "best_accuracy": round(max(h["accuracy"] for h in evals), 4),
        "train_seconds_to_70": first(0.7), "train_seconds_to_90": first(0.9),
        "sets_per_second": round(sets_per_s, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None,
        "checkpoint": str(out),
    }
    (RESULTS / f"clip_train_{device}.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    fire.Fire(main)
