"""Fine-tuning the VLM with default settings: accuracy against wall-clock time, throughput, memory.

    python -m benchmarks.vlm_finetune [--max_steps 1500] [--eval_every 100]

Writes to benchmarks/results/:
- vlm_finetune_<device>.csv and .png: valid accuracy (overall and per family) against seconds;
- vlm_finetune_<device>.json: the base's accuracy before fine-tuning, the time to 70% and 90%,
  inference answers per second and peak memory of the fine-tuned model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import fire
import torch

from benchmarks.curves import RESULTS, peak_memory, seconds_to, write_curve


def main(max_steps: int = 1500, eval_every: int = 100, eval_samples: int = 500, data_dir: str = "data") -> None:
    """Fine-tune with the defaults, evaluating often, and record the curve and the figures.

    Args:
        max_steps: optimisation steps.
        eval_every: steps between evaluations.
        eval_samples: valid questions per evaluation.
        data_dir: root folder of the data.
    """
    from homework.base_vlm import BaseVLM
    from homework.data import VQADataset, benchmark
    from homework.finetune import load_finetuned, train

    device = "cuda" if torch.cuda.is_available() else "cpu"
    valid = VQADataset("valid", data_dir=data_dir, max_samples=eval_samples)
    base_acc = benchmark(BaseVLM("tiny"), valid, progress=False).accuracy
    out = Path("runs") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    train(output_dir=str(out), data_dir=data_dir, max_steps=max_steps, eval_every=eval_every, eval_samples=eval_samples)
    evals = [h for h in json.loads((out / "history.json").read_text()) if "accuracy" in h]
    write_curve(evals, "per_family", f"vlm_finetune_{device}", xlabel=f"wall-clock seconds ({device})",
                ylabel="valid accuracy", title="LoRA fine-tuning of the kit's base, default settings")

    vlm = load_finetuned(out)
    items = [valid[i] for i in range(len(valid))]
    start = time.perf_counter()
    for i in range(0, len(items), 100):
        vlm.answer([it["image_path"] for it in items[i:i + 100]], [it["question"] for it in items[i:i + 100]])
    answers_per_s = len(items) / (time.perf_counter() - start)

    figures = {
        "device": device, "threads": torch.get_num_threads(), "base_accuracy_before_finetuning": round(base_acc, 4),
        "final_accuracy": round(evals[-1]["accuracy"], 4), "best_accuracy": round(max(h["accuracy"] for h in evals), 4),
        "seconds_to_70": seconds_to(evals, 0.7), "seconds_to_90": seconds_to(evals, 0.9),
        "train_seconds": evals[-1]["seconds"], "answers_per_second": round(answers_per_s, 1), **peak_memory(device),
        "checkpoint": str(out),
    }
    (RESULTS / f"vlm_finetune_{device}.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    fire.Fire(main)
