"""Training the CLIP with default settings: multiple-choice accuracy against wall-clock time.

    python -m benchmarks.clip_train [--max_steps 1500] [--eval_every 100]

Writes to benchmarks/results/:
- clip_train_<device>.csv and .png: valid multiple-choice accuracy (overall and per caption
  template) against seconds of training;
- clip_train_<device>.json: setup and training seconds, the time to 70% and 90%, and the
  trained model's speed (multiple-choice sets per second) and peak memory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import fire
import torch

from benchmarks.curves import RESULTS, peak_memory, seconds_to, write_curve


def main(max_steps: int = 1500, eval_every: int = 100, eval_samples: int = 500, data_dir: str = "data") -> None:
    """Train with the defaults, evaluating often, and record the curve and the figures.

    Args:
        max_steps: optimisation steps.
        eval_every: steps between evaluations.
        eval_samples: valid multiple-choice sets per evaluation.
        data_dir: root folder of the data.
    """
    from homework.clip import load_model, predict, train
    from homework.data import MultiChoiceQADataset

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path("runs") / f"bench-clip-{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.time()
    train(output_dir=str(out), data_dir=data_dir, max_steps=max_steps, eval_every=eval_every, eval_samples=eval_samples)
    wall = time.time() - start
    record = json.loads((out / "training_config.json").read_text())
    evals = [h for h in json.loads((out / "history.json").read_text()) if "accuracy" in h]
    write_curve(evals, "per_template", f"clip_train_{device}",
                xlabel=f"seconds of training after {record['setup_seconds']:.0f} s of setup ({device})",
                ylabel="valid multiple-choice accuracy", title="CLIP over the base's towers, default settings",
                levels=(0.7, 0.9, 0.2))  # 0.2: chance among five captions

    model = load_model(out)
    sets = MultiChoiceQADataset("valid", data_dir=data_dir, max_samples=eval_samples)
    items = [sets[i] for i in range(len(sets))]
    start = time.perf_counter()
    predict(model, [it["image_path"] for it in items], [it["candidates"] for it in items])
    sets_per_s = len(items) / (time.perf_counter() - start)

    figures = {
        "device": device, "threads": torch.get_num_threads(), "setup_seconds": record["setup_seconds"],
        "train_seconds": evals[-1]["seconds"], "wall_seconds": round(wall, 1),
        "final_accuracy": round(evals[-1]["accuracy"], 4), "best_accuracy": round(max(h["accuracy"] for h in evals), 4),
        "train_seconds_to_70": seconds_to(evals, 0.7), "train_seconds_to_90": seconds_to(evals, 0.9),
        "sets_per_second": round(sets_per_s, 1), **peak_memory(device), "checkpoint": str(out),
    }
    (RESULTS / f"clip_train_{device}.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    fire.Fire(main)
