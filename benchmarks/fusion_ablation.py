"""Every fusion kind x downsampling of `homework.fusion`, trained and scored: a CSV and a figure.

    python -m benchmarks.fusion_ablation                       # 8 epochs each, about 30 minutes
    python -m benchmarks.fusion_ablation --epochs 1 --subset --name quick   # a quick look (quick_checkpoints/)
    python -m benchmarks.fusion_ablation rescore               # the kept checkpoints, scored again, no training

Each run is `python -m homework.fusion train` in a fresh process, then scored on the validation
split and on a held-out dataset generated from a seed never used in training. Writes
OUTPUT_DIR/NAME.csv and .png (default benchmarks/results/fusion_ablation.{csv,png}), and keeps
each run's best checkpoint (model.safetensors, config.json, metrics.json: about 0.2 MB) in
CHECKPOINTS_DIR/FUSION_DOWNSAMPLE (default benchmarks/results/ablation_checkpoints/, committed, for
the default NAME; OUTPUT_DIR/NAME_checkpoints/ for another),
so that `rescore` remakes the accuracy columns of the table without retraining.

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
import shutil
import sys
import time
from pathlib import Path

import fire
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo is the package root
from benchmarks.curves import RESULTS, run_peak_rss_mib  # noqa: E402
from homework import fusion, shapes_data  # noqa: E402
from homework.cli_checks import check_int, fail, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = RESULTS / "ablation_checkpoints"  # CHECKPOINTS/FUSION_DOWNSAMPLE: each run's best checkpoint
DEFAULT_NAME = "fusion_ablation"
KEPT_FILES = (fusion.WEIGHTS, "config.json", "metrics.json")  # what a kept checkpoint holds

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
         name: str = DEFAULT_NAME, runs_dir: str = "runs/fusion_ablation", threads: int = 0,
         checkpoints_dir: str = "", keep_checkpoints: bool = True, overwrite: bool = False) -> None:
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
        checkpoints_dir: where each run's best checkpoint is kept (FUSION_DOWNSAMPLE/), for `rescore`;
            default OUTPUT_DIR/ablation_checkpoints for the default NAME, else OUTPUT_DIR/NAME_checkpoints.
        keep_checkpoints: keep them at all (--nokeep_checkpoints: no).
        overwrite: replace NAME.csv / NAME.png, and kept checkpoints, if they exist.
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
    if keep_checkpoints and not checkpoints_dir:
        checkpoints_dir = str(Path(output_dir) / ("ablation_checkpoints" if name == DEFAULT_NAME else f"{name}_checkpoints"))
    if not keep_checkpoints:
        checkpoints_dir = ""
    if checkpoints_dir and any(Path(checkpoints_dir).glob(f"*/{fusion.WEIGHTS}")) and not overwrite:
        fail(f"{checkpoints_dir} already holds kept checkpoints; pass --overwrite or another --checkpoints_dir")
    heldout = load_heldout(heldout_dir, heldout_seed)
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
            if checkpoints_dir:
                keep_checkpoint(run, Path(checkpoints_dir) / run.name)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_ablation(rows, png_path, f"held-out: {len(heldout)} samples, seed {heldout_seed}; "
                                  f"{'30% subset' if subset else 'full train split'}, {epochs} epochs")
    val_samples = len(shapes_data.split_ids(data_dir, "valid", subset))
    csv_path.with_suffix(".md").write_text(readme_table(rows, val_samples, len(heldout)))
    print(f"\nwrote {csv_path}, {png_path} and {csv_path.with_suffix('.md')}")
    for row in rows:
        print(f"{row['fusion']:9s} {row['downsample']:7s} held-out {row['heldout_accuracy']:.4f} "
              f"val_loss {row['val_loss']:.4f} params {row['parameters']:7,d} "
              f"{row['seconds_per_epoch']:6.2f}s/epoch {row['cpu_ms_per_step']:6.1f} CPU ms/step peak {row['peak_memory_mb']:7.1f} MB "
              f"(+{row['training_memory_mb']:.1f} MB training)")


def load_heldout(heldout_dir: str, heldout_seed: int) -> shapes_data.ShapesSplit:
    """The held-out dataset (generated from HELDOUT_SEED if missing), all of it; one line if it has another seed."""
    shapes_data.ensure_dataset(heldout_dir, seed=heldout_seed)
    if shapes_data.dataset_seed(heldout_dir) != heldout_seed:
        fail(f"{heldout_dir} was made from seed {shapes_data.dataset_seed(heldout_dir)}, not --heldout_seed "
             f"{heldout_seed}; pass the matching seed or another --heldout_dir")
    return shapes_data.load_split(heldout_dir, "all")


def shown_path(path: Path) -> str:
    """PATH relative to the repository when it lies inside it (so that results name no machine's folders)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def keep_checkpoint(run: Path, kept: Path) -> None:
    """Copy a run's best checkpoint (KEPT_FILES) to KEPT, replacing what was there."""
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    for file in KEPT_FILES:
        shutil.copy2(run / file, kept / file)


def rescore(checkpoints_dir: str = str(CHECKPOINTS), data_dir: str = shapes_data.DEFAULT_DATA_DIR,
            heldout_dir: str = "data/shapes_heldout", heldout_seed: int = 90210, output_dir: str = str(RESULTS),
            name: str = "fusion_ablation_rescore", threads: int = 0, overwrite: bool = False) -> None:
    """Score the kept checkpoints again, without training: OUTPUT_DIR/NAME.csv, and the table printed.

    Remakes the table's accuracy, loss and parameter columns (and the CPU ms / step, which needs no
    training), and prints how far they are from the training run's, OUTPUT_DIR/fusion_ablation.csv;
    the time and memory columns are the training run's alone.

    Args:
        checkpoints_dir: a folder of FUSION_DOWNSAMPLE/ checkpoints, as `fusion_ablation` keeps them.
        data_dir: the training dataset, whose validation split is scored (generated with seed 0 if missing).
        heldout_dir: the held-out dataset (generated from heldout_seed if missing).
        heldout_seed: the world seed of the held-out dataset.
        output_dir: where NAME.csv goes; default benchmarks/results.
        name: the output file's name, without extension.
        threads: torch CPU threads; 0 = torch's default (every core).
        overwrite: replace NAME.csv if it exists.
    """
    check_int("threads", threads, 0)
    check_int("heldout_seed", heldout_seed, 0)
    folders = sorted(p.parent for p in Path(checkpoints_dir).glob(f"*/{fusion.WEIGHTS}"))
    if not folders:
        fail(f"{checkpoints_dir} holds no checkpoints (FUSION_DOWNSAMPLE/{fusion.WEIGHTS}); "
             "make them with `python -m benchmarks.fusion_ablation` or pass another --checkpoints_dir")
    csv_path = Path(output_dir) / f"{name}.csv"
    if csv_path.exists() and not overwrite:
        fail(f"{csv_path} exists; pass --overwrite or another --output_dir or --name")
    set_threads(threads)
    order = {(kind, down): i for i, (kind, down) in enumerate(
        (k, d) for k in fusion.FUSIONS for d in fusion.DOWNSAMPLES)}
    models = sorted(((fusion.load_model(folder), folder) for folder in folders),
                    key=lambda pair: order[(pair[0].config.fusion, pair[0].config.downsample)])
    if shapes_data.dataset_seed(shapes_data.ensure_dataset(data_dir)) == heldout_seed:
        fail(f"--heldout_seed {heldout_seed} is the training data's seed; choose another")
    val = shapes_data.load_split(data_dir, "valid")
    heldout = load_heldout(heldout_dir, heldout_seed)
    rows = []
    for model, folder in tqdm(models, desc="rescoring", unit="checkpoint"):
        val_loss, val_acc = fusion.evaluate(model, val)
        _, heldout_acc = fusion.evaluate(model, heldout)
        rows.append({"fusion": model.config.fusion, "downsample": model.config.downsample,
                     "val_accuracy": round(val_acc, 6), "heldout_accuracy": round(heldout_acc, 6),
                     "val_loss": round(val_loss, 6), "parameters": fusion.count_parameters(model),
                     "cpu_ms_per_step": round(step_cpu_ms(model.config), 1), "checkpoint": shown_path(folder)})
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"validation: {len(val)} samples of {data_dir}; held-out: {len(heldout)} samples of {heldout_dir} "
          f"(seed {heldout_seed})")
    print(markdown_table(rows))
    recorded_path = Path(output_dir) / "fusion_ablation.csv"
    if recorded_path.exists():
        with recorded_path.open() as f:
            recorded = {(r["fusion"], r["downsample"]): r for r in csv.DictReader(f)}
        gaps = [abs(float(recorded[key][col]) - row[col]) for row in rows
                if (key := (row["fusion"], row["downsample"])) in recorded
                for col in ("val_accuracy", "heldout_accuracy", "val_loss")]
        if gaps:
            print(f"largest difference from {recorded_path} (accuracies, val loss): {max(gaps):.6f}")
    print(f"wrote {csv_path}")


def readme_table(rows: list[dict], val_samples: int, heldout_samples: int) -> str:
    """The README's table of a run: every column, in Markdown (what NAME.md holds)."""
    lines = [f"| fusion | downsample | val acc ({val_samples}) | held-out acc ({heldout_samples}) | val loss | parameters "
             "| CPU ms / step | s / epoch (wall, shared CPU) | training memory (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['fusion']} | {r['downsample']} | {100 * float(r['val_accuracy']):.2f}% "
              f"| {100 * float(r['heldout_accuracy']):.2f}% | {float(r['val_loss']):.4f} | {int(r['parameters']):,} "
              f"| {float(r['cpu_ms_per_step']):.0f} | {float(r['seconds_per_epoch']):.1f} "
              f"| {float(r['training_memory_mb']):.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown_table(rows: list[dict]) -> str:
    """The README's table of the accuracy columns: fusion, downsample, val acc, held-out acc, val loss, parameters."""
    lines = ["| fusion | downsample | val acc | held-out acc | val loss | parameters | CPU ms / step |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['fusion']} | {r['downsample']} | {100 * r['val_accuracy']:.2f}% | {100 * r['heldout_accuracy']:.2f}% "
              f"| {r['val_loss']:.4f} | {r['parameters']:,} | {r['cpu_ms_per_step']:.0f} |" for r in rows]
    return "\n".join(lines)


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


COMMANDS = {"run": main, "rescore": rescore}  # the first is the default: `python -m benchmarks.fusion_ablation`

if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else "run"
    fire.Fire(COMMANDS[command], command=sys.argv[2 if command in sys.argv[1:2] else 1:],
              name=f"benchmarks.fusion_ablation {command}")
