"""What the training benchmarks share: the accuracy-against-time table and figure, the time to a
level of accuracy, and peak memory (this process's, or a child command's)."""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def results_paths(output_dir: str | Path, name: str, overwrite: bool) -> tuple[Path, Path]:
    """OUTPUT_DIR/NAME.json and NAME.md, checked before any work: one line if either exists and not OVERWRITE."""
    json_path, md_path = Path(output_dir) / f"{name}.json", Path(output_dir) / f"{name}.md"
    if (json_path.exists() or md_path.exists()) and not overwrite:
        from homework.cli_checks import fail

        fail(f"{json_path} or {md_path} exists; pass --overwrite or another --output_dir or --name")
    return json_path, md_path


def write_results(paths: tuple[Path, Path], results: dict, markdown: str) -> None:
    """RESULTS as JSON and the MARKDOWN tables made from them, at PATHS (from results_paths); the tables printed."""
    json_path, md_path = paths
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    md_path.write_text(markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")


def write_curve(evals: list[dict], breakdown: str, name: str, xlabel: str, ylabel: str, title: str,
                levels: tuple[float, ...] = (0.7, 0.9)) -> None:
    """RESULTS/NAME.csv and .png: the evaluations' accuracy, overall and per BREAKDOWN key (a
    question family, a caption template), against their "seconds"; LEVELS drawn as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(exist_ok=True)
    keys = list(evals[-1][breakdown])
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "seconds", "accuracy", *keys])
        for h in evals:
            w.writerow([h["step"], h["seconds"], round(h["accuracy"], 4),
                        *(round(h[breakdown].get(k, float("nan")), 4) for k in keys)])
    seconds = [h["seconds"] for h in evals]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(seconds, [h["accuracy"] for h in evals], marker="o", color="k", label="all")
    for k in keys:
        ax.plot(seconds, [h[breakdown].get(k) for h in evals], alpha=0.5, label=k)
    for level, style in zip(levels, ("--", ":", "-."), strict=False):
        ax.axhline(level, color="grey", ls=style, lw=0.8)
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)


def seconds_to(evals: list[dict], level: float) -> float | None:
    """Seconds of the first evaluation at LEVEL accuracy or above (None if never)."""
    return next((h["seconds"] for h in evals if h["accuracy"] >= level), None)


def _rss_mib(usage: resource.struct_rusage) -> float:
    return usage.ru_maxrss / 1024  # Linux reports ru_maxrss in KiB


def peak_memory(device: str) -> dict:
    """This process's peak resident memory, and the GPU's peak allocation on cuda, in MiB."""
    return {"peak_rss_mib": round(_rss_mib(resource.getrusage(resource.RUSAGE_SELF))),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None}


def run_peak_rss_mib(command: list[str], **popen_args) -> float:
    """Run COMMAND (a child process) to its end and return its own peak resident memory in MiB, as the
    kernel counted it (`os.wait4`'s rusage): nothing of this process's memory, before or after, counts.
    A failed command raises `subprocess.CalledProcessError`."""
    child = subprocess.Popen(command, **popen_args)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, command)
    return _rss_mib(usage)
