"""The bouncing-balls world: physics, determinism, storage, gallery, CLEVRER reader, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worlds import balls

REPO = Path(__file__).resolve().parents[1]


def _trajectories(count: int, seed: int = 11):
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        yield balls.simulate(rng, int(rng.integers(1, 4)), num_frames=20, size=64)


def test_energy_is_kept_through_wall_and_ball_bounces():
    bounced = 0
    for trajectory in _trajectories(60):
        energy = trajectory.kinetic_energy()  # (T,)
        np.testing.assert_allclose(energy, energy[0], rtol=1e-9)
        bounced += int(trajectory.collisions.any())
    assert bounced >= 5, "too few ball-ball collisions to test the elastic impulse"


def test_head_on_collision_of_equal_balls_swaps_velocities():
    # Two equal balls moving towards each other along x: an elastic collision swaps their velocities.
    x = np.array([[20.0, 32.0], [29.9, 32.0]])
    v = np.array([[1.0, 0.0], [-2.0, 0.0]])
    radii = np.array([5.0, 5.0])
    assert balls._collide(x, v, radii, radii**2, 64.0)
    np.testing.assert_allclose(v, [[-2.0, 0.0], [1.0, 0.0]], atol=1e-12)
    assert np.linalg.norm(x[1] - x[0]) >= 10.0 - 1e-9  # pushed apart: no overlap left


def test_balls_stay_in_the_box_and_never_overlap():
    for trajectory in _trajectories(80, seed=12):
        p, r = trajectory.positions, trajectory.radii  # (T, n, 2), (n,)
        assert (p - r[None, :, None] >= -1e-9).all() and (p + r[None, :, None] <= 64 + 1e-9).all()
        n = len(r)
        for i in range(n):
            for j in range(i + 1, n):
                gap = np.linalg.norm(p[:, i] - p[:, j], axis=-1) - r[i] - r[j]  # (T,)
                assert (gap >= -1e-6).all(), f"balls {i} and {j} overlap by {-gap.min():.4f} px"


def test_balls_actually_move():
    trajectory = next(iter(_trajectories(1, seed=13)))
    assert np.abs(np.diff(trajectory.positions, axis=0)).max() > 0.5


def test_make_video_is_deterministic_and_labelled():
    a, b = balls.make_video(5, 3), balls.make_video(5, 3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["videos"].shape == (20, 64, 64, 3) and a["videos"].dtype == np.uint8
    n = int(a["num_balls"])
    assert 1 <= n <= 3
    assert np.isfinite(a["positions"][:, :n]).all() and np.isnan(a["positions"][:, n:]).all()
    assert not np.array_equal(balls.make_video(5, 4)["videos"], a["videos"])


def test_generate_same_seed_same_bytes_and_no_silent_overwrite(tmp_path):
    balls.generate(split="train", num_videos=6, seed=3, num_frames=6, size=32, data_dir=str(tmp_path / "a"))
    balls.generate(split="train", num_videos=6, seed=3, num_frames=6, size=32, data_dir=str(tmp_path / "b"))
    digest = [hashlib.sha256((tmp_path / d / "train" / "shard_00000.npz").read_bytes()).hexdigest() for d in "ab"]
    assert digest[0] == digest[1]
    data = balls.load_split("train", str(tmp_path / "a"))
    assert data["videos"].shape == (6, 6, 32, 32, 3)
    assert set(data["num_balls"].tolist()) <= {1, 2, 3}
    assert data["collisions"].shape == (6, 6) and data["positions"].shape == (6, 6, 3, 2)
    # each video depends only on (seed, index): the first 6 of a longer split are the same videos
    balls.generate(split="train", num_videos=8, seed=3, num_frames=6, size=32, data_dir=str(tmp_path / "c"))
    np.testing.assert_array_equal(balls.load_split("train", str(tmp_path / "c"))["videos"][:6], data["videos"])
    with pytest.raises(SystemExit, match="--overwrite"):
        balls.generate(split="train", num_videos=6, seed=3, data_dir=str(tmp_path / "a"))
    with pytest.raises(SystemExit, match="num_videos"):
        balls.generate(split="x", num_videos=0, seed=1, data_dir=str(tmp_path / "d"))
    with pytest.raises(SystemExit, match="seed"):
        balls.generate(split="heldout", num_videos=2, data_dir=str(tmp_path / "d"))


def test_gallery_draws_a_png(tmp_path):
    balls.generate(split="train", num_videos=3, seed=1, num_frames=5, size=32, data_dir=str(tmp_path))
    out = balls.gallery(split="train", num_videos=3, num_frames=4, data_dir=str(tmp_path))
    from PIL import Image

    image = Image.open(out)
    assert image.size[0] > 4 * 64 and image.size[1] > 3 * 64


def test_clevrer_reader_on_a_video_it_writes(tmp_path):
    av = pytest.importorskip("av")
    folder = tmp_path / "video_train" / "video_00000-01000"
    folder.mkdir(parents=True)
    # 12 frames of 48x32 (CLEVRER is wider than tall): a white square sliding right on grey
    with av.open(str(folder / "video_00007.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for t in range(12):
            frame = np.full((32, 48, 3), 90, dtype=np.uint8)
            frame[10:22, 2 + 3 * t : 14 + 3 * t] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    annotations = tmp_path / "annotation_train" / "annotation_00000-01000"
    annotations.mkdir(parents=True)
    (annotations / "annotation_00007.json").write_text(json.dumps({"object_property": [{}, {}, {}, {}]}))

    assert balls.find_clevrer_videos(tmp_path / "video_train") == [folder / "video_00007.mp4"]
    frames = balls.read_video_frames(folder / "video_00007.mp4", num_frames=4, size=16)
    assert frames.shape == (4, 16, 16, 3) and frames.dtype == np.uint8
    bright_x = [np.argwhere(f.mean(-1) > 170)[:, 1].mean() for f in frames]  # the square's column
    assert bright_x[0] < bright_x[-1], "frames should come out in time order"

    balls.clevrer(video_dir=str(tmp_path / "video_train"), split="clevrer", num_frames=4, size=16,
                  annotation_dir=str(tmp_path / "annotation_train"), data_dir=str(tmp_path / "out"))
    data = balls.load_split("clevrer", str(tmp_path / "out"))
    assert data["videos"].shape == (1, 4, 16, 16, 3)
    assert data["num_balls"].tolist() == [4]


def test_cli_help_and_bad_value():
    env = {**os.environ, "PAGER": "cat"}
    commands = [["--help"], ["gallery", "--help"], ["clevrer", "--help"],
                ["--num_videos", "-3", "--data_dir", "/nonexistent"]]
    running = [subprocess.Popen([sys.executable, "-m", "worlds", "balls", *c], cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]  # in parallel
    results = [(p, *p.communicate(timeout=120)) for p in running]
    for process, out, err in results[:3]:
        assert process.returncode == 0, err
        assert "--split" in out + err or "--video_dir" in out + err
    process, out, err = results[3]
    assert process.returncode != 0 and "error: --num_videos" in err
    assert "Traceback" not in err
