"""worlds/robot.py: every signal's shape and range, determinism, pools, anomalies, the CLI."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from worlds import robot

ROOT = Path(__file__).resolve().parents[1]


def test_every_signal_has_its_shape_dtype_and_range():
    ep = robot.render_episode(5, 0, "train")
    assert ep["camera1"].shape == ep["camera2"].shape == (64, 64, 3) and ep["camera1"].dtype == np.uint8
    assert ep["audio"].shape == (robot.AUDIO_SAMPLES,) == (48000,) and ep["audio"].dtype == np.int16
    assert ep["pressure"].shape == (1000,) and ep["pressure"].dtype == np.float32
    assert 0 <= ep["pressure"].min() and ep["pressure"].max() <= robot.PRESSURE_MAX
    assert ep["emg"].shape == (8, 1000) and ep["emg"].dtype == np.float16 and np.abs(ep["emg"]).max() < 10
    c = ep["causes"]
    assert c["material"] in range(5) and c["outcome"] in range(3) and c["grasp"] in range(2)
    assert 0.1 <= c["height"] <= 0.9 and 3 <= c["force"] <= 9


def test_same_seed_same_bytes_and_new_noise_keeps_the_causes():
    a, b = robot.render_split(3, 4, "train"), robot.render_split(3, 4, "train")
    for key in robot.SIGNALS + robot.CAUSES:
        assert np.array_equal(a[key], b[key]), key
    again = robot.render_split(3, 4, "train", noise=1)
    for key in robot.CAUSES:
        assert np.array_equal(a[key], again[key]), key
    assert not np.array_equal(a["audio"], again["audio"]) and not np.array_equal(a["emg"], again["emg"])


def test_held_out_splits_have_unseen_objects_and_operator():
    seen, unseen = robot.render_split(9, 30, "train"), robot.render_split(9, 30, "heldout")
    assert set(seen["instance"]) <= set(robot.SEEN_POOL["instances"])
    assert set(seen["operator"]) <= set(robot.SEEN_POOL["operators"])
    assert set(unseen["instance"]) <= set(robot.UNSEEN_POOL["instances"])
    assert set(unseen["operator"]) == set(robot.UNSEEN_POOL["operators"])
    assert not set(robot.SEEN_POOL["instances"]) & set(robot.UNSEEN_POOL["instances"])


def test_outcome_follows_the_friction_ratio():
    c = [robot.sample_causes(1, i, robot.SEEN_POOL) for i in range(300)]
    for x in c:
        assert x["outcome"] == (0 if x["ratio"] < robot.R_DROP else 1 if x["ratio"] < robot.R_SLIP else 2)
    counts = np.bincount([x["outcome"] for x in c], minlength=3)
    assert counts.min() > 60  # roughly balanced


def test_anomalies_change_what_they_say():
    rng = np.random.default_rng(0)
    ep, donor = robot.render_episode(2, 0), robot.render_episode(2, 1)
    seen = set()
    for _ in range(60):
        out, detail = robot.inject_anomaly(ep, "fault", rng)
        seen.add(detail)
        if detail == "pressure_stuck":
            assert np.ptp(out["pressure"]) == 0
        elif detail == "pressure_saturated":
            assert out["pressure"].max() == robot.PRESSURE_MAX
        elif detail == "emg_flat":
            assert (np.abs(out["emg"]).max(1) == 0).sum() == 1
        elif detail == "audio_dropout":
            assert (out["audio"] == 0).sum() > 0.5 * robot.SAMPLE_RATE
        elif detail == "camera_black":
            assert out["camera1"].max() == 0 or out["camera2"].max() == 0
    assert seen == set(robot.FAULTS)
    out, detail = robot.inject_anomaly(ep, "collision", rng)
    assert detail == "collision" and out["pressure"].max() > ep["pressure"].max()
    out, detail = robot.inject_anomaly(ep, "swap", rng, donor)
    what = detail.removeprefix("swap_")
    assert np.array_equal(out[what], donor[what]) and np.array_equal(out["pressure"], ep["pressure"])
    assert np.array_equal(ep["camera1"], robot.render_episode(2, 0)["camera1"])  # the original is untouched
    with pytest.raises(ValueError, match="donor"):
        robot.inject_anomaly(ep, "swap", rng)
    kinds = robot.anomaly_set(4, 2)["anomaly"]
    assert kinds.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_cli_generates_draws_and_refuses_bad_values(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "worlds", "robot", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "TQDM_DISABLE": "1",
                                                           "OMP_NUM_THREADS": "1"})

    data = str(tmp_path / "robot")
    ok = run("--split", "valid", "--num_episodes", "3", "--seed", "8", "--data_dir", data)
    assert ok.returncode == 0, ok.stderr
    digest = hashlib.sha256((tmp_path / "robot/valid/episodes.npz").read_bytes()).hexdigest()
    again = run("--split", "valid", "--num_episodes", "3", "--seed", "9", "--data_dir", data)
    assert again.returncode == 1 and again.stderr.strip().startswith("error:") and "--overwrite" in again.stderr
    assert hashlib.sha256((tmp_path / "robot/valid/episodes.npz").read_bytes()).hexdigest() == digest
    drawn = run("gallery", "--split", "valid", "--num", "2", "--data_dir", data)
    assert drawn.returncode == 0, drawn.stderr
    wavs = sorted((tmp_path / "robot/valid/gallery").glob("*.wav"))
    assert (tmp_path / "robot/valid/gallery/gallery.png").stat().st_size > 10_000 and len(wavs) == 2
    with wave.open(str(wavs[0])) as w:
        assert w.getframerate() == 16000 and w.getnframes() == 48000
    for args, words in ((["--split", "../x"], "--split"), (["--num_episodes", "-1"], "--num_episodes"),
                        (["gallery", "--num", "9", "--data_dir", data, "--split", "valid"], "--num")):
        bad = run(*args, "--data_dir", data) if args[0] != "gallery" else run(*args)
        assert bad.returncode == 1 and bad.stderr.strip().startswith(f"error: {words}"), bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert run("--help").returncode == 0
