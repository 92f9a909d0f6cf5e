"""The shapes dataset as a grouped FiftyOne dataset folder, written without FiftyOne.

    python -m worlds shapes fiftyone                      # data/assessment -> data/assessment_fiftyone/
    python -m worlds shapes fiftyone --load               # ... and the persistent FiftyOne dataset "shapes"
    python -m worlds shapes fiftyone --launch             # ... and the FiftyOne App on it

The folder is in `fiftyone.types.FiftyOneDataset` format, so anyone with FiftyOne reads it with

    fo.Dataset.from_dir("data/assessment_fiftyone", dataset_type=fo.types.FiftyOneDataset)

Layout (FiftyOne's own, as its exporter writes it):

    metadata.json        media_type "group", the two slices and their media types, and `info`:
                         the classes, the dataset's statistics (stats.json), splits and sensor
    samples.json         {"samples": [...]}: two per paired sample, one per slice, sharing a group
    data/rgb/cubes_0000.png     the camera image, copied
    data/lidar/cubes_0000.pcd   the scan as a point cloud: x, y, z in metres in the sensor frame
                                (x forward, y left, z up; `shapes.beams_to_cartesian`), returns only

Each sample carries `sample_id` ("cubes/0000"), `label` (a Classification: "cubes" or
"spheres"), `split` ("train" or "valid") and `subset` (true for the fixed 30% subset of its
split), and the same as tags ("train" / "valid", and "subset"), so the App filters on either.
The lidar slice also has `num_points`. metadata.json has no `version`: FiftyOne then reads the
folder with its legacy importer, which infers the field schema from the samples instead of
expecting a database dump of one FiftyOne version.

Same dataset, same bytes: the object IDs are derived from the dataset's seed and sample IDs,
and nothing records the time it was written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worlds import shapes

SLICES = {"rgb": "image", "lidar": "point-cloud"}  # group slice -> FiftyOne media type; the first is the default
SPLITS = ("all", "train", "valid")  # what --split takes: everything, or one split
SUBSET_TAG = "subset"
INSTALL = "pip install -r requirements-fiftyone.txt"  # the one line that says how to get FiftyOne


def default_output(data_dir: str | Path, split: str) -> Path:
    """DATA_DIR_fiftyone (or DATA_DIR_fiftyone_SPLIT): beside the dataset, never inside it."""
    root = Path(data_dir)
    return root.with_name(root.name + "_fiftyone" + ("" if split == "all" else f"_{split}"))


def object_id(*parts: object) -> dict:
    """A MongoDB ObjectId (24 hex digits) made from PARTS, in FiftyOne's JSON form: the same parts, the same ID."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:24]
    return {"$oid": digest}


def pcd_bytes(points: np.ndarray) -> bytes:
    """A binary PCD v0.7 file of float32 points (N, 3): fields x, y, z, one row (unorganised)."""
    points = np.ascontiguousarray(points, dtype="<f4")
    header = ("# .PCD v0.7 - Point Cloud Data file format\n"
              "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
              f"WIDTH {len(points)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(points)}\nDATA binary\n")
    return header.encode("ascii") + points.tobytes()


def read_pcd(path: str | Path) -> np.ndarray:
    """The points (N, 3) of a PCD file written by `pcd_bytes`."""
    data = Path(path).read_bytes()
    end = data.index(b"DATA binary\n") + len(b"DATA binary\n")
    count = int(next(line for line in data[:end].decode("ascii").splitlines() if line.startswith("POINTS")).split()[1])
    return np.frombuffer(data[end:], dtype="<f4").reshape(count, 3)


def scan_points(ranges: np.ndarray, azimuth: np.ndarray, zenith: np.ndarray) -> np.ndarray:
    """The returns of a scan (H, W) as points (N, 3) in the sensor frame, beams in row-major order."""
    x, y, z, valid = shapes.beams_to_cartesian(ranges, azimuth, zenith).reshape(4, -1)
    keep = valid > 0
    return np.stack([x[keep], y[keep], z[keep]], axis=1)


def split_membership(splits: dict) -> dict[str, tuple[str, bool]]:
    """Sample ID -> (its split, the kit's name: "train" or "valid"; whether it is in the 30% subset)."""
    member = {}
    for split, key in shapes.SPLIT_KEYS.items():
        subset = set(splits["subset"][key])
        for sid in splits[key]:
            member[sid] = (split, sid in subset)
    return member


def check_output(out: Path, overwrite: bool) -> None:
    """OUT as a place to write the folder: empty or missing, or (with OVERWRITE) a FiftyOne folder to replace."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --output {out} is a file, not a folder; choose another --output")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SystemExit(f"error: {out} is not empty; pass --overwrite to replace it or choose another --output")
        if not (out / "samples.json").exists():
            raise SystemExit(f"error: {out} holds files that are not a FiftyOne dataset folder; "
                             "--overwrite replaces only such a folder; choose another --output")
        shutil.rmtree(out)


def write_folder(data_dir: str | Path, output: str | Path, split: str = "all", overwrite: bool = False) -> Path:
    """Write the FiftyOne dataset folder of a shapes dataset; return its path.

    Args:
        data_dir: a dataset made by `python -m worlds shapes`.
        output: the folder to write (made; must be empty, unless OVERWRITE and it is a FiftyOne folder).
        split: "all", "train" or "valid": which samples to write.
        overwrite: replace a FiftyOne folder already at OUTPUT.
    """
    root, out = Path(data_dir), Path(output)
    meta = shapes.read_meta(root)
    if meta is None:
        raise SystemExit(f"error: no shapes dataset in {root}; make it with `python -m worlds shapes --data_dir {root}`")
    check_output(out, overwrite)
    splits = json.loads((root / "splits.json").read_text())
    stats = json.loads((root / "stats.json").read_text())
    azimuth, zenith = np.load(root / "azimuth.npy"), np.load(root / "zenith.npy")
    member = split_membership(splits)
    ids = sorted(sid for sid in member if split == "all" or member[sid][0] == split)
    for name in SLICES:
        (out / "data" / name).mkdir(parents=True, exist_ok=True)

    samples = []
    for sid in tqdm(ids, desc=f"fiftyone {root.name}", unit="sample"):
        name, index = sid.split("/")
        sample_split, in_subset = member[sid]
        stem = f"{name}_{index}"
        rgb_file, pcd_file = f"data/rgb/{stem}.png", f"data/lidar/{stem}.pcd"
        shutil.copyfile(root / name / "rgb" / f"{index}.png", out / rgb_file)
        points = scan_points(np.load(root / name / "lidar" / f"{index}.npy"), azimuth, zenith)
        (out / pcd_file).write_bytes(pcd_bytes(points))
        group_id = object_id(meta["seed"], sid, "group")
        tags = [sample_split] + ([SUBSET_TAG] if in_subset else [])
        for slice_name, filepath, extra in (("rgb", rgb_file, {}), ("lidar", pcd_file, {"num_points": len(points)})):
            samples.append({
                "_id": object_id(meta["seed"], sid, slice_name),
                "filepath": filepath,
                "tags": tags,
                "group": {"_id": group_id, "_cls": "Group", "name": slice_name},
                "label": {"_id": object_id(meta["seed"], sid, slice_name, "label"), "_cls": "Classification",
                          "tags": [], "label": name},
                "sample_id": sid,
                "split": sample_split,
                "subset": in_subset,
                **extra,
            })

    info = {  # FiftyOne takes `description` and `classes` (the default classes) out of it, and keeps the rest
        "description": f"shapes world (seed {meta['seed']}): cubes and spheres seen by an RGB camera and a LiDAR",
        "classes": list(shapes.CLASSES),
        "source": str(root),
        "world": {"name": "shapes", **meta},
        "statistics": stats,
        "splits": {split: len(splits[key]) for split, key in shapes.SPLIT_KEYS.items()}  # the kit's names
        | {f"subset_{split}": len(splits["subset"][key]) for split, key in shapes.SPLIT_KEYS.items()},
        "sensor": {"frame": "x forward, y left, z up; origin at the sensor", "height_m": shapes.SENSOR_HEIGHT,
                   "beams": [shapes.SIZE, shapes.SIZE], "max_range_m": shapes.MAX_RANGE,
                   "azimuth_rad": [round(float(a), 6) for a in azimuth],
                   "zenith_rad": [round(float(z), 6) for z in zenith]},
        "split_written": split,
    }
    metadata = {
        "media_type": "group",
        "group_field": "group",
        "group_media_types": SLICES,
        "default_group_slice": next(iter(SLICES)),
        "info": info,
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
    (out / "samples.json").write_text(json.dumps({"samples": samples}, indent=1) + "\n")
    print(f"wrote {len(ids)} groups ({len(samples)} samples: {' + '.join(SLICES)}) to {out}")
    return out


def import_fiftyone(flag: str):
    """FiftyOne itself, or one line saying how to install it."""
    try:
        import fiftyone as fo
    except ImportError:
        raise SystemExit(f"error: {flag} needs FiftyOne, which is not installed; install it with `{INSTALL}`") from None
    return fo


def load_dataset(folder: str | Path, name: str, persistent: bool, overwrite: bool = False):
    """The folder as a FiftyOne dataset NAME (persistent or not); an existing one only with OVERWRITE."""
    fo = import_fiftyone("--load" if persistent else "--launch")
    if fo.dataset_exists(name):
        if not overwrite:
            raise SystemExit(f"error: FiftyOne already has a dataset {name!r}; pass --overwrite to replace it "
                             "or choose another --name")
        fo.delete_dataset(name)
    dataset = fo.Dataset.from_dir(str(folder), dataset_type=fo.types.FiftyOneDataset, name=name)
    dataset.persistent = persistent
    return dataset


def launch_app(dataset, port: int) -> None:
    """Open the FiftyOne App on DATASET at PORT and serve it until Ctrl-C."""
    fo = import_fiftyone("--launch")
    session = fo.launch_app(dataset, port=port, auto=False)
    print(f"the FiftyOne App is at {session.url}; Ctrl-C stops it")
    session.wait(-1)
