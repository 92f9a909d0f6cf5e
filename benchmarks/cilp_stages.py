"""The CILP stages table of the README: each stage's figures, and the RGB-only accuracy on held-out sets.

    python -m benchmarks.cilp_stages                                      # pretrain, project, finetune, then the table
    python -m benchmarks.cilp_stages --checkpoint homework/checkpoints/cilp   # the table of a finished run, no training

Training runs the three `python -m homework.cilp` stages with their defaults (seed 0, `--threads 1`
unless told) into RUN_DIR, each in a fresh process. The table reads what the finetune checkpoint
recorded of every stage (its config.json `metrics`) and scores the checkpoint on held-out
datasets generated from seeds never used in training (made if missing). Writes
OUTPUT_DIR/NAME.json and NAME.md (default benchmarks/results/cilp_stages.{json,md}).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo is the package root
from benchmarks.curves import RESULTS, results_paths, write_results  # noqa: E402
from homework import cilp, shapes_data  # noqa: E402
from homework.cli_checks import check_int, fail, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = {90210: "data/shapes_heldout", 31337: "data/shapes_heldout_final"}  # seed -> folder, as the README names them
STAGES = ("pretrain", "project", "finetune")


def run_stages(run_dir: str, data_dir: str, threads: int) -> dict[str, float]:
    """`python -m homework.cilp STAGE` for each stage, in order, into RUN_DIR; wall seconds of each."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    seconds = {}
    for stage in STAGES:
        command = [sys.executable, "-m", "homework.cilp", stage, "--run_dir", run_dir, "--data_dir", data_dir,
                   "--threads", str(threads), "--overwrite"]
        print(f"\n== {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        if subprocess.run(command, env=env).returncode:
            fail(f"`{' '.join(command[1:])}` failed (its output is above)")
        seconds[stage] = round(time.perf_counter() - started, 1)
    return seconds


def table(results: dict) -> str:
    """The README's table, from RESULTS (recorded metrics and held-out accuracies)."""
    m = results["metrics"]
    pre, train = m["pretrain"], results["training"]
    chance = math.log(32)
    rows = [
        (f"pretrain ({train['epochs']} epochs)", "contrastive validation loss, batches of 32",
         f"{pre['contrastive_val_loss_batch32']:.3f} (chance {chance:.2f}; bar < 3.2)"),
        ("", "RGB -> LiDAR retrieval top-1 within batches of 32", f"{100 * pre['retrieval_top1_batch32']:.2f}%"),
        ("", f"RGB -> LiDAR retrieval top-1 over all {results['val_samples']} validation scans",
         f"{100 * pre['retrieval_top1_all_val']:.2f}%"),
        ("", f"learned logit scale (init {1 / 0.07:.1f})", f"{pre['logit_scale']:.2f}"),
        ("", f"LiDAR-only classifier validation accuracy ({train['lidar_epochs']} epochs)",
         f"{100 * pre['lidar_classifier_val_accuracy']:.2f}%"),
        (f"project ({train['project_epochs']} epochs on frozen embeddings)",
         f"projector validation MSE (target variance per dimension {m['lidar_embedding_variance']:.2f})",
         f"{m['projector_val_mse']:.2f}"),
        ("", "RGB-only validation accuracy before fine-tuning", f"{100 * m['rgb_only_val_accuracy_before_finetune']:.1f}%"),
        (f"finetune ({train['finetune_epochs']} epochs, flips + up to {train['finetune_shift']}-pixel shifts)",
         "RGB-only validation accuracy", f"{100 * m['rgb_only_val_accuracy']:.2f}%"),
    ]
    for k, (seed, scored) in enumerate(results["heldout"].items()):
        rows.append(("test" if k == 0 else "", f"RGB-only accuracy, `{scored['data_dir']}` (seed {seed}, {scored['n']:,})",
                     f"{100 * scored['accuracy']:.2f}%"))
    lines = ["| stage | figure | value |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def main(checkpoint: str = "", run_dir: str = "runs/cilp_stages", data_dir: str = shapes_data.DEFAULT_DATA_DIR,
         output_dir: str = str(RESULTS), name: str = "cilp_stages", threads: int = 1, overwrite: bool = False) -> None:
    """Train the CILP stages (unless --checkpoint), then write OUTPUT_DIR/NAME.json and NAME.md.

    Args:
        checkpoint: a finished finetune checkpoint to table without training (e.g. homework/checkpoints/cilp);
            default: train all three stages into RUN_DIR and table RUN_DIR/finetune.
        run_dir: where the stages are trained (replaced).
        data_dir: the training dataset (generated with seed 0 if missing).
        output_dir: where NAME.json and NAME.md go; default benchmarks/results.
        name: the output files' name, without extension.
        threads: torch CPU threads per stage and for scoring; 0 = torch's default (every core).
        overwrite: replace NAME.json / NAME.md if they exist.
    """
    check_int("threads", threads, 0)
    paths = results_paths(output_dir, name, overwrite)
    seconds = None
    if not checkpoint:
        shapes_data.ensure_dataset(data_dir)
        seconds = run_stages(run_dir, data_dir, threads)
        checkpoint = str(Path(run_dir) / "finetune")
    record = json.loads((Path(checkpoint) / "config.json").read_text()) if (Path(checkpoint) / "config.json").exists() else {}
    if record.get("stage") != "finetune":
        fail(f"{checkpoint} is not a CILP finetune checkpoint (its config.json says stage "
             f"{record.get('stage')!r}); pass the folder `python -m homework.cilp finetune` wrote")
    set_threads(threads)
    model = cilp.load_model(checkpoint)
    train_seed = shapes_data.dataset_seed(record["training"]["data_dir"]) if Path(record["training"]["data_dir"]).exists() \
        else record["training"].get("data_seed")
    heldout = {}
    for seed, folder in HELDOUT.items():
        if seed == train_seed:
            fail(f"held-out seed {seed} is the training data's seed")
        data = shapes_data.load_split(folder, "all", generate_seed=seed)
        if shapes_data.dataset_seed(folder) != seed:
            fail(f"{folder} was made from seed {shapes_data.dataset_seed(folder)}, not {seed}; move it away")
        _, metrics = cilp.classify_eval(model, data.rgb, data.labels)
        heldout[seed] = {"data_dir": folder, "n": len(data), "accuracy": round(metrics["accuracy"], 4)}
        print(f"{checkpoint} on {folder} (seed {seed}): accuracy {metrics['accuracy']:.4f}")
    val_samples = len(shapes_data.split_ids(record["training"]["data_dir"], "valid")) \
        if Path(record["training"]["data_dir"]).exists() else None
    results = {"checkpoint": checkpoint, "training": record["training"], "metrics": record["metrics"],
               "val_samples": val_samples, "heldout": heldout, "stage_wall_seconds": seconds, "threads": threads}
    write_results(paths, results, table(results))


if __name__ == "__main__":
    fire.Fire(main)
