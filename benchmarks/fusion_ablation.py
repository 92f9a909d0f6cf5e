"""Every fusion kind x downsampling of `homework.fusion`, trained and scored: a CSV and a figure.

    python -m benchmarks.fusion_ablation                       # 8 epochs each, about 30 minutes
    python -m benchmarks.fusion_ablation --epochs 1 --subset   # a quick look

Each run is `python -m homework.fusion train` in a fresh process, then scored on the validation
split and on a held-out dataset generated from a seed never used in training. Writes
OUTPUT_DIR/NAME.csv and .png (default benchmarks/results/fusion_ablation.{csv,png}).

What each column measures:
- seconds_per_epoch: wall-clock, the training run's median epoch (it suffers when other jobs share the CPU);
- cpu_ms_per_step: CPU time of one training step of 64 samples on one thread, which compares fairly;
- peak_memory_mb: the training process's peak resident memory, as the kernel counted it for that child;
- training_memory_mb: that peak minus the peak of one baseline child that only loads the train and
  validation splits and builds a model (the same imports, data and threads): what training itself adds.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import fire
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo is the package root
from benchmarks.curves import RESULTS, run_peak_rss_mib  # noqa: E402
from homework import fusion, shapes_data  # noqa: E402
from homework.cli_checks import check_int, fail  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The baseline child: what a training run holds before its first step (imports, both splits, a model).
BASELINE_CHILD = """
import sys
from homework import fusion, shapes_data
from homework.cli_checks import set_threads
data_dir, subset, threads = sys.argv[1], sys.argv[2] == "subset", int(sys.argv[3])
set_threads(threads)
train_split = shapes_data.load_split(data_dir, "train", subset)
val_split = shapes_data.load_split(data_dir, "valid", subset)
model = fusion.FusionClassifier(fusion.FusionConfig(**shapes_data.channel_stats(data_dir)))
"""


def step_cpu_ms(config: fusion.FusionConfig, batch_size: int = 64, steps: int = 5) -> float:
    """CPU milliseconds of one training step (forward, backward, AdamW) on one thread, median of `steps`.

    CPU time, not wall-clock time, so that the number stays comparable on a machine other jobs share.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = fusion.FusionClassifier(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        rgb, lidar = torch.rand(batch_size, 3, config.image_size, config.image_size), torch.randn(
            batch_size, 4, config.image_size, config.image_size)
        labels = torch.randint(0, config.num_classes, (batch_size,))
        times = []
        for _ in range(steps + 1):  # the first step warms up the allocator
            started = time.process_time()
            loss = F.cross_entropy(model(rgb, lidar), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(1000 * (time.process_time() - started))
        return float(np.median(times[1:]))
    finally:
        torch.set_num_threads(threads)


def main(epochs: int = 8, subset: bool = False, data_dir: str = shapes_data.DEFAULT_DATA_DIR,
         heldout_dir: str = "data/shapes_heldout", heldout_seed: int = 90210, output_dir: str = str(RESULTS),
         name: str = "fusion_ablation", runs_dir: str = "runs/fusion_ablation", threads: int = 0,
         overwrite: bool = False) -> None:
    """Train every fusion kind x downsampling; write OUTPUT_DIR/NAME.csv and OUTPUT_DIR/NAME.png.

    Args:
        epochs: epochs per run.
        subset: train each run on the fixed 30% subset (faster, and far from converged at 8 epochs).
        data_dir: the training dataset.
        heldout_dir: the held-out dataset (generated from heldout_seed if missing).
        heldout_seed: the world seed of the held-out dataset; must differ from the training seed.
        output_dir: where NAME.csv and NAME.png go; default benchmarks/results.
        name: the output files' name, without extension.
        runs_dir: where the grid's checkpoints go (replaced).
        threads: torch CPU threads per run; 0 = torch's default (every core).
        overwrite: replace NAME.csv / NAME.png if they exist.
    """
    check_int("epochs", epochs)
    check_int("threads", threads, 0)
    check_int("heldout_seed", heldout_seed, 0)
    shapes_data.ensure_dataset(data_dir)
    if shapes_data.dataset_seed(data_dir) == heldout_seed:
        fail(f"--heldout_seed {heldout_seed} is the training data's seed; choose another")
    csv_path, png_path = Path(output_dir) / f"{name}.csv", Path(output_dir) / f"{name}.png"
    if (csv_path.exists() or png_path.exists()) and not overwrite:
        fail(f"{csv_path} or {png_path} exists; pass --overwrite or another --output_dir or --name")
    shapes_data.ensure_dataset(heldout_dir, seed=heldout_seed)
    if shapes_data.dataset_seed(heldout_dir) != heldout_seed:
        fail(f"{heldout_dir} was made from seed {shapes_data.dataset_seed(heldout_dir)}, not --heldout_seed "
             f"{heldout_seed}; pass the matching seed or another --heldout_dir")
    heldout = shapes_data.load_split(heldout_dir, "all")
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": os.pathsep.join(filter(None, (
        str(ROOT), os.environ.get("PYTHONPATH"))))}
    baseline_mb = run_peak_rss_mib([sys.executable, "-c", BASELINE_CHILD, data_dir, "subset" if subset else "all",
                                    str(threads)], env=env)
    print(f"baseline (imports, both splits, a model): peak {baseline_mb:.1f} MB")
    rows = []
    for kind in fusion.FUSIONS:
        for downsample in fusion.DOWNSAMPLES:
            run = Path(runs_dir) / f"{kind}_{downsample}"
            command = [sys.executable, "-m", "homework.fusion", "train", "--fusion", kind, "--downsample", downsample,
                       "--epochs", str(epochs), "--data_dir", data_dir, "--output_dir", str(run), "--overwrite",
                       "--threads", str(threads)] + (["--subset"] if subset else [])
            print(f"\n== {kind} / {downsample}: {' '.join(command[1:])}")
            peak_mb = run_peak_rss_mib(command, env=env)
            metrics = json.loads((run / "metrics.json").read_text())
            model = fusion.load_model(run, kind, downsample)
            _, heldout_acc = fusion.evaluate(model, heldout)
            cpu_ms = step_cpu_ms(model.config)
            rows.append({"fusion": kind, "downsample": downsample, "val_accuracy": metrics["val_accuracy"],
                         "heldout_accuracy": round(heldout_acc, 6), "val_loss": metrics["val_loss"],
                         "parameters": metrics["parameters"], "seconds_per_epoch": metrics["seconds_per_epoch"],
                         "cpu_ms_per_step": round(cpu_ms, 1), "peak_memory_mb": round(peak_mb, 1),
                         "training_memory_mb": round(peak_mb - baseline_mb, 1), "best_epoch": metrics["epoch"],
                         "epochs": epochs, "threads": metrics["threads"]})
            print(f"-> held-out accuracy {heldout_acc:.4f}")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_ablation(rows, png_path, f"held-out: {len(heldout)} samples, seed {heldout_seed}; "
                                  f"{'30% subset' if subset else 'full train split'}, {epochs} epochs")
    print(f"\nwrote {csv_path} and {png_path}")
    for row in rows:
        print(f"{row['fusion']:9s} {row['downsample']:7s} held-out {row['heldout_accuracy']:.4f} "
              f"val_loss {row['val_loss']:.4f} params {row['parameters']:7,d} "
              f"{row['seconds_per_epoch']:6.2f}s/epoch {row['cpu_ms_per_step']:6.1f} CPU ms/step peak {row['peak_memory_mb']:7.1f} MB "
              f"(+{row['training_memory_mb']:.1f} MB training)")


def plot_ablation(rows: list[dict], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    x = np.arange(len(fusion.FUSIONS))
    for k, downsample in enumerate(fusion.DOWNSAMPLES):
        sel = [r for r in rows if r["downsample"] == downsample]
        offset = (k - 0.5) * 0.38
        axes[0].bar(x + offset, [100 * (1 - r["heldout_accuracy"]) for r in sel], 0.38, label=downsample)
        axes[1].bar(x + offset, [r["cpu_ms_per_step"] for r in sel], 0.38, label=downsample)
        axes[2].bar(x + offset, [r["parameters"] / 1000 for r in sel], 0.38, label=downsample)
        axes[3].bar(x + offset, [r["training_memory_mb"] for r in sel], 0.38, label=downsample)
    titles = ("held-out error (%)", "CPU ms per step (64 samples, 1 thread)", "parameters (thousands)",
              "training memory (MB)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xticks(x, fusion.FUSIONS)
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"fusion x downsampling ablation ({subtitle})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    fire.Fire(main)
