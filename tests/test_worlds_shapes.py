"""worlds/shapes.py: ray-cast geometry, beams to points, determinism, splits, CLI."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worlds import shapes

ROOT = Path(__file__).resolve().parents[1]


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes") / "tiny"
    shapes.generate(num_samples=10, seed=5, data_dir=str(root), workers=1, quiet=True)
    return root


# --------------------------------------------------------------------------- geometry


def test_sphere_hit_at_known_range():
    origin = np.zeros(3)
    dirs = np.array([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0]])
    t = shapes.hit_sphere(origin, dirs, np.array([5.0, 0, 0]), 1.0)
    assert t[0] == pytest.approx(4.0)
    assert np.isinf(t[1]) and np.isinf(t[2])  # sideways misses; behind is not a hit


def test_box_hit_axis_aligned_and_rotated():
    origin = np.zeros(3)
    dirs = np.array([[1.0, 0, 0], [0, 0, 1.0]])
    t, normals = shapes.hit_box(origin, dirs, np.array([5.0, 0, 0]), np.ones(3), np.eye(3))
    assert t[0] == pytest.approx(4.0) and np.isinf(t[1])
    assert normals[0] == pytest.approx([-1, 0, 0])
    # turned 45 degrees about z: the ray meets the vertical edge at 5 - sqrt(2)
    t, _ = shapes.hit_box(origin, dirs[:1], np.array([5.0, 0, 0]), np.ones(3), shapes.yaw_matrix(math.pi / 4))
    assert t[0] == pytest.approx(5 - math.sqrt(2))


def test_cast_beam_hits_sphere_and_floor_at_hand_computed_ranges():
    """The sensor sits SENSOR_HEIGHT above the floor: a level beam must hit a sphere centred
    4 m ahead at that height at 4 - r, and a beam 45 degrees down must hit the floor at h * sqrt(2)."""
    h = shapes.SENSOR_HEIGHT
    scene = {"label": 1, "center": np.array([4.0, 0.0, h]), "size": 0.5, "checker": 1.0,
             "floor": np.full(3, 0.5), "color": np.ones(3), "pillars": []}
    down = np.array([1.0, 0.0, -1.0]) / math.sqrt(2)
    left = np.array([0.0, 1.0, 0.0])
    dirs = np.stack([np.array([1.0, 0.0, 0.0]), down, left])
    t, normals, albedo, on_object = shapes.cast(scene, np.array([0.0, 0.0, h]), dirs)
    assert t[0] == pytest.approx(3.5)
    assert on_object.tolist() == [True, False, False]
    assert normals[0] == pytest.approx([-1, 0, 0])
    assert t[1] == pytest.approx(h * math.sqrt(2))
    assert np.isinf(t[2])  # a level beam to the side sees nothing: no return


def test_beam_angles_and_cartesian_conversion():
    azimuth, zenith = shapes.beam_angles()
    assert azimuth.shape == zenith.shape == (shapes.SIZE,)
    assert azimuth[0] > 0 > azimuth[-1]  # left column looks to +y
    assert zenith[0] < math.pi / 2 < zenith[-1]  # top row looks up, bottom row down
    az = np.array([0.0, math.pi / 2])
    zen = np.array([math.pi / 2, 0.0])
    ranges = np.array([[2.0, 3.0], [4.0, shapes.NO_RETURN]], dtype=np.float32)  # rows: zenith, cols: azimuth
    points = shapes.beams_to_cartesian(ranges, az, zen)
    assert points.shape == (4, 2, 2)
    assert points[:, 0, 0] == pytest.approx([2, 0, 0, 1], abs=1e-6)  # level, straight ahead
    assert points[:, 0, 1] == pytest.approx([0, 3, 0, 1], abs=1e-6)  # level, to the left
    assert points[:, 1, 0] == pytest.approx([0, 0, 4, 1], abs=1e-6)  # straight up
    assert points[:, 1, 1] == pytest.approx([0, 0, 0, 0])  # no return: zeros, not valid
    batched = shapes.beams_to_cartesian(np.stack([ranges, ranges]), az, zen)
    assert batched.shape == (2, 4, 2, 2) and np.array_equal(batched[1], points)


def test_rendered_ranges_agree_with_rgb_rays():
    rgb, ranges = shapes.render_sample(0, 1, 3)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert ranges.shape == (64, 64) and ranges.dtype == np.float32
    valid = ranges > 0
    assert 0.3 < valid.mean() < 1.0  # floor and object return; sky does not
    assert ranges[valid].max() <= shapes.MAX_RANGE + 0.1
    assert not valid[0].any()  # the top row looks up into the sky


# --------------------------------------------------------------------------- the dataset


def test_layout_splits_and_subset(tiny):
    for name in shapes.CLASSES:
        assert len(list((tiny / name / "rgb").glob("*.png"))) == 10
        assert len(list((tiny / name / "lidar").glob("*.npy"))) == 10
    assert np.load(tiny / "azimuth.npy").shape == (64,)
    splits = json.loads((tiny / "splits.json").read_text())
    train, val = set(splits["train"]), set(splits["val"])
    assert len(val) == 4 and len(train) == 16 and not train & val  # 20% per class
    assert len(train | val) == 20
    sub_train, sub_val = set(splits["subset"]["train"]), set(splits["subset"]["val"])
    assert sub_train <= train and sub_val <= val
    assert len(sub_train) + len(sub_val) == 6  # 30% of 20, stratified: round(0.3 * 8) + round(0.3 * 2) per class
    assert all(sum(i.startswith(c) for i in sub_train) == 2 for c in shapes.CLASSES)
    stats = json.loads((tiny / "stats.json").read_text())
    assert stats["counts"] == {"cubes": 10, "spheres": 10}
    assert len(stats["rgb_mean"]) == 3 and len(stats["lidar_std"]) == 4
    assert sum(stats["range_histogram"]["counts"]) == round(stats["valid_fraction"] * 20 * 64 * 64)


def test_same_seed_same_bytes_whatever_the_workers(tiny, tmp_path):
    shapes.generate(num_samples=10, seed=5, data_dir=str(tmp_path / "again"), workers=2, quiet=True)
    assert file_digests(tmp_path / "again") == file_digests(tiny)
    shapes.generate(num_samples=10, seed=6, data_dir=str(tmp_path / "other"), workers=1, quiet=True)
    assert (tmp_path / "other" / "cubes/rgb/0000.png").read_bytes() != (tiny / "cubes/rgb/0000.png").read_bytes()


def test_refuses_to_overwrite_another_dataset(tiny, tmp_path):
    target = tmp_path / "d"
    shapes.generate(num_samples=5, seed=1, data_dir=str(target), workers=1, quiet=True)
    with pytest.raises(SystemExit, match="--overwrite"):
        shapes.generate(num_samples=5, seed=2, data_dir=str(target), workers=1, quiet=True)
    with pytest.raises(SystemExit, match="num_samples"):
        shapes.generate(num_samples=0, data_dir=str(tmp_path / "e"))
    with pytest.raises(SystemExit, match="no .*stats.json"):
        shapes.stats(data_dir=str(tmp_path / "missing"))


def test_png_writer_round_trips():
    from PIL import Image

    rgb, _ = shapes.render_sample(1, 0, 0)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"shapes_png_{os.getpid()}.png"
    shapes.write_png(path, rgb)
    try:
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), rgb)
    finally:
        path.unlink()


def test_gallery(tiny, tmp_path):
    out = tmp_path / "g.png"
    shapes.gallery(data_dir=str(tiny), num=1, out=str(out))
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("command", [[], ["gallery"], ["benchmark"]])
def test_cli_help(command):
    result = subprocess.run([sys.executable, "-m", "worlds", "shapes", *command, "--help"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "PAGER": "cat"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--num" in result.stdout + result.stderr  # where Fire writes help depends on the terminal
