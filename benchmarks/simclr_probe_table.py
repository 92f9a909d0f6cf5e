"""Probe several SimCLR checkpoints on the held-out split and tabulate them beside a random encoder.

    python benchmarks/simclr_probe_table.py homework/checkpoints/simclr runs/simclr_ddp

Writes benchmarks/results/simclr_probe_table.csv: one row per checkpoint (its training wall time
and process count from its config.json) plus the random-encoder baseline of the same variant.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo is the package root
from homework import simclr  # noqa: E402
from worlds import balls  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main(*checkpoints: str, num_train: int = 2000, num_test: int = 500, test_split: str = "test",
         data_dir: str = "data/balls", out: str = str(RESULTS / "simclr_probe_table.csv")) -> None:
    """Probe each CHECKPOINT directory (train-split labels fit, TEST_SPLIT scores).

    Args:
        num_train: labelled train-split videos that fit each probe.
        num_test: held-out videos that score it.
        test_split: the held-out split (its seed must never have been used in training).
        data_dir: where worlds.balls splits live.
        out: the CSV to write.
    """
    if not checkpoints:
        raise SystemExit("error: name at least one checkpoint directory")
    torch.set_num_threads(1)
    train_data = balls.ensure_split("train", data_dir)
    test_data = balls.ensure_split(test_split, data_dir, num_videos=num_test)
    train_videos, train_y = train_data["videos"][:num_train], torch.from_numpy(train_data["num_balls"][:num_train] - 1)
    test_videos, test_y = test_data["videos"][:num_test], torch.from_numpy(test_data["num_balls"][:num_test] - 1)
    test_seed = json.loads((Path(data_dir) / test_split / "meta.json").read_text())["seed"]
    rows = []
    for checkpoint in checkpoints:
        encoder = simclr.load_encoder(checkpoint)
        config = json.loads((Path(checkpoint) / simclr.CONFIG_FILE).read_text())
        torch.manual_seed(0)
        random_encoder = simclr.create_encoder(encoder.config).eval()
        started = time.time()
        baseline = simclr.probe_accuracy(random_encoder, train_videos, train_y, test_videos, test_y)
        accuracy = simclr.probe_accuracy(encoder, train_videos, train_y, test_videos, test_y)
        rows.append({
            "checkpoint": checkpoint, "encoder": encoder.config.encoder,
            "processes": config["train"]["world_size"], "epochs": config["train"]["epochs"],
            "train_wall_seconds": config["train"].get("wall_seconds"), "train_data_seed": config["train"]["data_seed"],
            "test_split": test_split, "test_seed": test_seed, "num_train": len(train_y), "num_test": len(test_y),
            "random_encoder_accuracy": round(baseline, 4), "probe_accuracy": round(accuracy, 4),
        })
        print(f"{checkpoint}: probe {accuracy:.4f} (random encoder {baseline:.4f}), {time.time() - started:.0f} s")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
