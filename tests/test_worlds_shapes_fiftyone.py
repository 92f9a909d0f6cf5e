"""worlds/shapes_fiftyone.py: the grouped FiftyOne folder, its schema without FiftyOne, and its import with it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worlds import shapes
from worlds import shapes_fiftyone as fof

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_KEYS = {"_id", "filepath", "tags", "group", "label", "sample_id", "split", "subset"}
OBJECT_ID = {"$oid"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes_fo") / "tiny"
    shapes.generate(num_samples=10, seed=5, data_dir=str(root), workers=1, quiet=True)
    return root


@pytest.fixture(scope="module")
def folder(tiny) -> Path:
    shapes.fiftyone(data_dir=str(tiny))
    return fof.default_output(tiny, "all")


def is_object_id(value) -> bool:
    return isinstance(value, dict) and set(value) == OBJECT_ID and len(value["$oid"]) == 24 \
        and int(value["$oid"], 16) >= 0


def test_metadata_is_a_grouped_legacy_folder_with_the_statistics(tiny, folder):
    assert folder == tiny.parent / "tiny_fiftyone"  # beside the dataset, never inside it
    metadata = json.loads((folder / "metadata.json").read_text())
    assert "version" not in metadata  # FiftyOne's legacy importer: it infers the schema from the samples
    assert metadata["media_type"] == "group" and metadata["group_field"] == "group"
    assert metadata["group_media_types"] == {"rgb": "image", "lidar": "point-cloud"}
    assert metadata["default_group_slice"] == "rgb"
    info = metadata["info"]
    assert info["statistics"] == json.loads((tiny / "stats.json").read_text())
    assert info["classes"] == list(shapes.CLASSES)
    assert info["splits"] == {"train": 16, "valid": 4, "subset_train": 4, "subset_valid": 2}
    assert info["world"]["seed"] == 5 and len(info["sensor"]["zenith_rad"]) == shapes.SIZE


def test_samples_json_schema_one_group_per_sample(tiny, folder):
    samples = json.loads((folder / "samples.json").read_text())["samples"]
    splits = json.loads((tiny / "splits.json").read_text())
    subset = set(splits["subset"]["train"] + splits["subset"]["val"])
    assert len(samples) == 2 * 20
    groups: dict[str, dict[str, dict]] = {}
    for s in samples:
        assert SAMPLE_KEYS <= set(s) <= SAMPLE_KEYS | {"num_points"}, s.keys()
        assert is_object_id(s["_id"]) and is_object_id(s["group"]["_id"]) and is_object_id(s["label"]["_id"])
        assert s["group"]["_cls"] == "Group" and s["label"]["_cls"] == "Classification"
        assert not Path(s["filepath"]).is_absolute() and (folder / s["filepath"]).is_file()
        name = s["sample_id"].split("/")[0]
        assert s["label"]["label"] == name in shapes.CLASSES
        split = "valid" if s["sample_id"] in splits["val"] else "train"
        assert s["split"] == split and s["subset"] == (s["sample_id"] in subset)
        assert s["tags"] == [split] + (["subset"] if s["subset"] else [])
        groups.setdefault(s["group"]["_id"]["$oid"], {})[s["group"]["name"]] = s
    assert len(groups) == 20 and len({s["sample_id"] for s in samples}) == 20  # one group per paired sample
    for group in groups.values():
        assert set(group) == {"rgb", "lidar"} and group["rgb"]["sample_id"] == group["lidar"]["sample_id"]
        assert group["rgb"]["filepath"].endswith(".png") and group["lidar"]["filepath"].endswith(".pcd")
        assert "num_points" in group["lidar"] and "num_points" not in group["rgb"]
    assert len({s["_id"]["$oid"] for s in samples}) == 40


def test_media_are_the_png_and_the_scan_in_the_sensor_frame(tiny, folder):
    rgb_file = folder / "data/rgb/spheres_0003.png"
    assert rgb_file.read_bytes() == (tiny / "spheres/rgb/0003.png").read_bytes()
    ranges = np.load(tiny / "spheres/lidar/0003.npy")
    points = fof.read_pcd(folder / "data/lidar/spheres_0003.pcd")
    x, y, z, valid = shapes.beams_to_cartesian(ranges, *shapes.beam_angles()).reshape(4, -1)
    keep = valid > 0
    assert points.shape == (keep.sum(), 3) and points.dtype == np.float32
    assert np.allclose(points, np.stack([x[keep], y[keep], z[keep]], 1), atol=1e-5)
    assert abs(points[:, 2].min() + shapes.SENSOR_HEIGHT) < 0.05  # the floor lies SENSOR_HEIGHT below the sensor
    header = (folder / "data/lidar/spheres_0003.pcd").read_bytes()[:300].decode("ascii", "replace")
    assert "FIELDS x y z" in header and f"POINTS {keep.sum()}" in header and "DATA binary" in header
    sample = next(s for s in json.loads((folder / "samples.json").read_text())["samples"]
                  if s["filepath"] == "data/lidar/spheres_0003.pcd")
    assert sample["num_points"] == keep.sum()


def test_same_dataset_same_bytes_and_one_split(tiny, folder, tmp_path):
    again = tmp_path / "again"
    shapes.fiftyone(data_dir=str(tiny), output=str(again))
    for name in ("metadata.json", "samples.json", "data/lidar/cubes_0001.pcd"):
        assert (again / name).read_bytes() == (folder / name).read_bytes()
    shapes.fiftyone(data_dir=str(tiny), output=str(tmp_path / "valid"), split="valid")
    samples = json.loads((tmp_path / "valid/samples.json").read_text())["samples"]
    assert len(samples) == 2 * 4 and {s["split"] for s in samples} == {"valid"}


def test_refuses_to_overwrite_and_bad_values(tiny, tmp_path):
    out = tmp_path / "out"
    shapes.fiftyone(data_dir=str(tiny), output=str(out))
    with pytest.raises(SystemExit, match="--overwrite"):
        shapes.fiftyone(data_dir=str(tiny), output=str(out))
    shapes.fiftyone(data_dir=str(tiny), output=str(out), overwrite=True)  # a FiftyOne folder: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not a FiftyOne dataset folder"):
        shapes.fiftyone(data_dir=str(tiny), output=str(mine), overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(SystemExit, match="--split must be one of"):
        shapes.fiftyone(data_dir=str(tiny), split="test")
    with pytest.raises(SystemExit, match="no shapes dataset"):
        shapes.fiftyone(data_dir=str(tmp_path / "missing"))


def test_load_without_fiftyone_is_one_line(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fiftyone", None)  # `import fiftyone` now raises ImportError
    for flag in ("load", "launch"):
        with pytest.raises(SystemExit, match=r"needs FiftyOne.*pip install -r requirements-fiftyone.txt") as e:
            shapes.fiftyone(data_dir=str(tiny), output=str(tmp_path / flag), **{flag: True})
        assert "\n" not in str(e.value) and not (tmp_path / flag).exists()  # checked before any work


def test_cli_help(run_cli):
    proc = run_cli("-m", "worlds", "shapes", "fiftyone", "--help")
    assert proc.returncode == 0, proc.output
    assert "--load" in proc.output and "--launch" in proc.output and "--split" in proc.output


IMPORT_CHECK = """
import json, sys
import fiftyone as fo

folder = sys.argv[1]
dataset = fo.Dataset.from_dir(folder, dataset_type=fo.types.FiftyOneDataset)  # not persistent
try:
    lidar, rgb = dataset.select_group_slices("lidar"), dataset.select_group_slices("rgb")
    first = dataset.first()
    group = dataset.get_group(first.group.id)
    print(json.dumps({
        "media_type": dataset.media_type, "groups": len(dataset), "slices": dataset.group_media_types,
        "rgb": len(rgb), "lidar": len(lidar), "labels": lidar.count_values("label.label"),
        "tags": rgb.count_sample_tags(), "subset": lidar.count_values("subset"),
        "lidar_media": lidar.first().media_type, "classes": dataset.default_classes,
        "stats": dataset.info["statistics"]["counts"], "group": sorted(group),
        "points": lidar.sum("num_points"),
    }))
finally:
    dataset.delete()
"""


@pytest.mark.skipif(importlib.util.find_spec("fiftyone") is None,
                    reason="FiftyOne is not installed (pip install -r requirements-fiftyone.txt)")
def test_real_fiftyone_imports_the_folder(folder, tmp_path):
    """FiftyOne in a child process with its own database folder and config: nothing of the user's is touched."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_")}
    env.update(FIFTYONE_DATABASE_DIR=str(tmp_path / "db"), FIFTYONE_CONFIG_PATH=str(tmp_path / "config.json"),
               FIFTYONE_APP_CONFIG_PATH=str(tmp_path / "app_config.json"), FIFTYONE_DO_NOT_TRACK="true",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", IMPORT_CHECK, str(folder)], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    samples = json.loads((folder / "samples.json").read_text())["samples"]
    assert got["media_type"] == "group" and got["slices"] == {"rgb": "image", "lidar": "point-cloud"}
    assert got["groups"] == got["rgb"] == got["lidar"] == 20  # one group per paired sample, both slices
    assert got["group"] == ["lidar", "rgb"] and got["lidar_media"] == "point-cloud"
    assert got["labels"] == {"cubes": 10, "spheres": 10} and got["classes"] == list(shapes.CLASSES)
    assert got["tags"] == {"train": 16, "valid": 4, "subset": 6}
    assert got["subset"] == {"true": 6, "false": 14} or got["subset"] == {"True": 6, "False": 14}
    assert got["stats"] == {"cubes": 10, "spheres": 10}
    assert got["points"] == sum(s.get("num_points", 0) for s in samples)
