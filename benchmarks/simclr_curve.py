"""Probe accuracy per training time for SimCLR on bouncing balls.

    python benchmarks/simclr_curve.py --epochs 6 --name default
    python benchmarks/simclr_curve.py --epochs 6 --name vivit --encoder vivit

Runs `homework.simclr.train` with the given flags and, after every epoch's checkpoint, scores the
current encoder with the linear probe (train-split labels, held-out test split). Writes
benchmarks/results/simclr_curve_NAME.csv and a PNG of accuracy against wall time.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import fire
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo is the package root
from homework import simclr  # noqa: E402
from worlds import balls  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main(name: str = "default", num_train: int = 1000, num_test: int = 500, data_dir: str = "data/balls",
         **train_flags) -> None:
    """Train with TRAIN_FLAGS (any `homework.simclr train` flag) and probe after every epoch.

    Args:
        name: tag of the output files.
        num_train: labelled train-split videos that fit each probe.
        num_test: held-out test-split videos that score it.
        data_dir: where worlds.balls splits live.
    """
    train_data = balls.ensure_split("train", data_dir)
    test_data = balls.ensure_split("test", data_dir)
    train_videos, train_y = train_data["videos"][:num_train], torch.from_numpy(train_data["num_balls"][:num_train] - 1)
    test_videos, test_y = test_data["videos"][:num_test], torch.from_numpy(test_data["num_balls"][:num_test] - 1)
    rows: list[dict] = []
    started = time.time()
    probe_seconds = 0.0
    save_training_state = simclr.save_training_state

    def save_and_probe(path, model, optimizer, epoch, run_config):
        nonlocal probe_seconds
        save_training_state(path, model, optimizer, epoch, run_config)
        t0 = time.time()
        train_seconds = t0 - started - probe_seconds  # probing time is not training time
        accuracy = simclr.probe_accuracy(model.encoder, train_videos, train_y, test_videos, test_y)
        model.encoder.train()
        probe_seconds += time.time() - t0
        rows.append({"epoch": epoch, "train_seconds": round(train_seconds, 1), "accuracy": round(accuracy, 4)})
        print(f"epoch {epoch}: probe accuracy {accuracy:.4f}")

    simclr.save_training_state = save_and_probe  # probe after every epoch's checkpoint
    train_flags.setdefault("output_dir", train_flags.pop("out_dir", f"runs/bench_{name}"))
    train_flags.setdefault("overwrite", True)
    simclr.train(data_dir=data_dir, **train_flags)

    torch.manual_seed(0)
    random_encoder = simclr.create_encoder(simclr.load_encoder(train_flags["output_dir"]).config)
    baseline = simclr.probe_accuracy(random_encoder.eval(), train_videos, train_y, test_videos, test_y)
    rows.insert(0, {"epoch": 0, "train_seconds": 0.0, "accuracy": round(baseline, 4)})

    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"simclr_curve_{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "train_seconds", "accuracy"])
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["train_seconds"] / 60 for r in rows], [r["accuracy"] for r in rows], "o-", label=name)
    ax.axhline(0.97, color="grey", ls="--", lw=1, label="bar: 97%")
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("linear probe accuracy (held-out)")
    ax.set_title("SimCLR on bouncing balls: 1, 2 or 3 balls")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"simclr_curve_{name}.png", dpi=120)
    print(f"wrote {RESULTS / f'simclr_curve_{name}.csv'} (random encoder {baseline:.4f}, final {rows[-1]['accuracy']:.4f})")


if __name__ == "__main__":
    fire.Fire(main)
