"""The training log every VLM-side checkpoint carries: `history.json` (losses and evaluations by
step) and `training_curve.png` (the same, drawn).

    log = TrainingLog("per_family", "valid accuracy")
    for step in range(max_steps):
        ...
        log.step(step, max_steps, loss=loss.item())        # every 20 steps: the mean of the last 20
        if time_to_evaluate:
            if log.evaluation(step, accuracy, per_family):  # a new best
                save the checkpoint
            log.write(out)
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path

import numpy as np

LOG_EVERY = 20  # steps between the history's loss entries, each the mean of the last LOG_EVERY steps


class TrainingLog:
    """The history of one run: the mean of the last LOG_EVERY losses at the first step, every
    LOG_EVERY steps and the last, and each evaluation (accuracy, and per BREAKDOWN key: a family,
    a template). `best` is the best accuracy so far (-1 before any evaluation)."""

    def __init__(self, breakdown: str, ylabel: str, losses: dict[str, str] | None = None, yscale: str = "linear",
                 chance: float | None = None):
        self.breakdown, self.ylabel, self.losses, self.yscale, self.chance = breakdown, ylabel, losses, yscale, chance
        self.history: list[dict] = []
        self.recent: deque[dict[str, float]] = deque(maxlen=LOG_EVERY)  # the last LOG_EVERY steps' losses
        self.best = -1.0
        self.start = time.time()

    def seconds(self) -> float:
        return round(time.time() - self.start, 1)

    def mean(self, key: str = "loss") -> float:
        return float(np.mean([r[key] for r in self.recent]))

    def step(self, step: int, max_steps: int, extra: dict | None = None, **losses: float) -> None:
        """Record STEP's (0-based) LOSSES; on a logged step, add their means (and EXTRA) to the history."""
        self.recent.append(losses)
        if step == 0 or (step + 1) % LOG_EVERY == 0 or step + 1 == max_steps:
            self.history.append({"step": step + 1, **{k: self.mean(k) for k in losses}, "seconds": self.seconds(),
                                 **(extra or {})})

    def evaluation(self, step: int, accuracy: float, breakdown: dict[str, float]) -> bool:
        """Record an evaluation after STEP (0-based); True if it is the best so far."""
        self.history.append({"step": step + 1, "seconds": self.seconds(), "accuracy": accuracy,
                             self.breakdown: breakdown})
        improved = accuracy > self.best
        self.best = max(self.best, accuracy)
        return improved

    def write(self, out: Path) -> None:
        """OUT/history.json and OUT/training_curve.png."""
        (Path(out) / "history.json").write_text(json.dumps(self.history, indent=1))
        plot_training_curve(self.history, Path(out) / "training_curve.png", self.breakdown, self.ylabel,
                            losses=self.losses, yscale=self.yscale, chance=self.chance)


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
