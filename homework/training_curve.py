"""The training curve every VLM-side checkpoint carries: `training_curve.png`, losses and accuracy against steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_training_curve(history: list[dict], out: Path, breakdown: str, ylabel: str,
                        losses: dict[str, str] | None = None, yscale: str = "linear",
                        chance: float | None = None) -> None:
    """Two panels: the training losses (LOSSES: label -> history key) against steps, and the
    validation accuracy, overall and per BREAKDOWN key (a family, a template), against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    logged = [h for h in history if "loss" in h]
    for label, key in (losses or {"loss": "loss"}).items():
        a.plot([h["step"] for h in logged], [h[key] for h in logged], label=label)
    a.set(xlabel="step", ylabel="training loss (mean of last 20)", yscale=yscale)
    if len(losses or {}) > 1:
        a.legend(fontsize=7)
    evals = [h for h in history if "accuracy" in h]
    b.plot([h["step"] for h in evals], [h["accuracy"] for h in evals], marker="o", color="k", label="all")
    for name in evals[-1][breakdown] if evals else []:
        b.plot([h["step"] for h in evals], [h[breakdown].get(name, np.nan) for h in evals], alpha=0.6, label=name)
    if chance is not None:
        b.axhline(chance, color="grey", linestyle=":", label="chance")
    b.set(xlabel="step", ylabel=ylabel, ylim=(0, 1.02))
    b.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
