"""homework/training_log.py: the history's loss means and evaluations, the best so far, the files."""

from __future__ import annotations

import json

import pytest

from homework.training_log import LOG_EVERY, TrainingLog


def test_losses_are_logged_as_means_and_the_best_evaluation_is_kept(tmp_path):
    log = TrainingLog("per_family", "valid accuracy")
    max_steps = 2 * LOG_EVERY + 5
    for step in range(max_steps):
        log.step(step, max_steps, loss=float(step), extra={"lr": 0.1})
    logged = [h for h in log.history if "loss" in h]
    assert [h["step"] for h in logged] == [1, LOG_EVERY, 2 * LOG_EVERY, max_steps]  # the first, every 20, the last
    assert logged[0]["loss"] == 0.0 and logged[1]["loss"] == pytest.approx((LOG_EVERY - 1) / 2)
    assert logged[-1]["loss"] == pytest.approx(sum(range(max_steps - LOG_EVERY, max_steps)) / LOG_EVERY)
    assert all(h["lr"] == 0.1 for h in logged) and log.mean() == logged[-1]["loss"]
    assert log.best == -1.0
    assert log.evaluation(9, 0.5, {"ego": 0.5}) and not log.evaluation(19, 0.4, {"ego": 0.4})
    assert log.evaluation(29, 0.7, {"ego": 0.7}) and log.best == 0.7
    log.write(tmp_path)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["accuracy"] for h in history if "accuracy" in h] == [0.5, 0.4, 0.7]
    assert history[-1] == {"step": 30, "seconds": history[-1]["seconds"], "accuracy": 0.7, "per_family": {"ego": 0.7}}
    assert (tmp_path / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
