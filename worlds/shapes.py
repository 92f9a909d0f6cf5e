"""Cubes and spheres seen by an RGB camera and a LiDAR that share one viewpoint.

Each sample is one cube or one sphere (random size, pose, colour and position) on a checkered
floor, lit by a random sun, with a few background pillars as clutter. Both sensors are ray cast
in vectorised numpy over the same 64 x 64 azimuth x zenith grid of beams, so pixel (i, j) of
the RGB image and cell (i, j) of the LiDAR scan look along the same ray.

Layout of a dataset (`python -m worlds shapes --num_samples 1000 --seed 0`):

    data/assessment/
      cubes/rgb/0000.png     64x64 RGB image            cubes/lidar/0000.npy  64x64 float32 ranges (m)
      spheres/rgb/0000.png   (same IDs pair RGB and LiDAR)  spheres/lidar/0000.npy
      azimuth.npy            (64,) radians, one per column, left (+y) to right (-y)
      zenith.npy             (64,) radians from straight up (+z), one per row, top to bottom
      splits.json            train / val (20%) IDs and a fixed 30% subset of each
      stats.json             counts, per-channel mean/std, range histogram
      meta.json              the options that made it (seed, num_samples, version)

`python -m worlds shapes fiftyone` writes it as a grouped FiftyOne dataset folder (worlds/shapes_fiftyone.py).

Sensor frame: x forward, y left, z up, origin at the sensor (SENSOR_HEIGHT above the floor).
A range of 0 (`NO_RETURN`) marks a beam with no return (sky, beyond MAX_RANGE, or a dropout).
`beams_to_cartesian` turns a scan into (x, y, z, valid) channels.

Same seed, same bytes: every sample draws from its own generator seeded by (seed, class, index),
so the files do not depend on the number of worker processes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import struct
import tempfile
import time
import zlib
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

VERSION = 2
CLASSES = ("cubes", "spheres")  # label 0 = cube, 1 = sphere
SIZE = 64  # image and scan resolution, pixels / beams per side
SENSOR_HEIGHT = 1.2  # metres above the floor
AZIMUTH_FOV = np.deg2rad(48.0)  # total horizontal field of view
ELEVATION_RANGE = (np.deg2rad(-33.0), np.deg2rad(15.0))  # lowest, highest beam above horizontal
MAX_RANGE = 20.0  # metres; farther surfaces give no return
NO_RETURN = 0.0
RANGE_NOISE = 0.01  # metres, std of LiDAR range noise
DROPOUT = 0.005  # fraction of beams that randomly return nothing
PIXEL_NOISE = 3.0  # std of camera noise, in 0-255 units
VAL_FRACTION = 0.2
SUBSET_FRACTION = 0.3
SPLIT_KEYS = {"train": "train", "valid": "val"}  # the kit's split names -> their keys in splits.json
HIST_BINS = np.arange(0.0, MAX_RANGE + 1.0, 1.0)  # range histogram bin edges, metres
CHUNK = 50  # samples per work item; fixed so bytes and stats do not depend on the worker count
DEFAULT_DIR = "data/assessment"


# --------------------------------------------------------------------------- beams and geometry


def beam_angles() -> tuple[np.ndarray, np.ndarray]:
    """The (azimuth, zenith) angles in radians: azimuth per column, zenith per row."""
    azimuth = np.linspace(AZIMUTH_FOV / 2, -AZIMUTH_FOV / 2, SIZE)  # left (+y) to right (-y)
    elevation = np.linspace(ELEVATION_RANGE[1], ELEVATION_RANGE[0], SIZE)  # top row looks highest
    zenith = np.pi / 2 - elevation
    return azimuth, zenith


def beam_directions(azimuth: np.ndarray, zenith: np.ndarray) -> np.ndarray:
    """Unit direction of every beam, (H, W, 3), from zenith (rows) x azimuth (columns)."""
    zen, az = np.meshgrid(zenith, azimuth, indexing="ij")  # (H, W) each
    return np.stack([np.sin(zen) * np.cos(az), np.sin(zen) * np.sin(az), np.cos(zen)], axis=-1)


def beams_to_cartesian(ranges: np.ndarray, azimuth: np.ndarray, zenith: np.ndarray) -> np.ndarray:
    """Convert a LiDAR scan to points in the sensor frame.

    Args:
        ranges: (H, W) or (B, H, W) ranges in metres, NO_RETURN (0) where the beam saw nothing.
        azimuth: (W,) radians per column. zenith: (H,) radians from +z per row.

    Returns:
        float32 (4, H, W) or (B, 4, H, W): x, y, z in metres (0 where no return) and valid (0/1).
    """
    ranges = np.asarray(ranges, dtype=np.float32)
    valid = (ranges > NO_RETURN).astype(np.float32)
    dirs = beam_directions(azimuth, zenith).astype(np.float32)  # (H, W, 3)
    xyz = ranges[..., None] * dirs  # (..., H, W, 3)
    out = np.concatenate([xyz, valid[..., None]], axis=-1)  # (..., H, W, 4)
    return np.moveaxis(out, -1, -3).copy()  # (..., 4, H, W)


def sphere_rows(origin: np.ndarray, dirs: np.ndarray, center: np.ndarray, radius: float):
    """The rays (N, 3) that hit a sphere from outside: their indices, distances and unit normals."""
    to_center = center - origin  # (3,)
    along = dirs @ to_center  # (N,)  distance to the point nearest the centre, |d| = 1
    disc = radius * radius - (to_center @ to_center - along * along)  # squared half-chord
    rows = np.flatnonzero((disc >= 0) & (along > 0))
    t = along[rows] - np.sqrt(disc[rows])
    normals = (origin + dirs[rows] * t[:, None] - center) / radius
    return rows, t, normals


def hit_sphere(origin: np.ndarray, dirs: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Nearest hit of rays (N, 3) from one origin outside a sphere: t (N,), inf on a miss."""
    rows, t_rows, _ = sphere_rows(origin, dirs, center, radius)
    t = np.full(len(dirs), np.inf, dtype=dirs.dtype)
    t[rows] = t_rows
    return t


def sphere_normals(origin: np.ndarray, dirs: np.ndarray, t: np.ndarray, center: np.ndarray) -> np.ndarray:
    p = origin + dirs * t[:, None]
    n = p - center
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def box_rows(origin: np.ndarray, dirs: np.ndarray, center: np.ndarray, half: np.ndarray, rot: np.ndarray):
    """The rays (N, 3) that hit an oriented box from outside: indices, distances, world-frame normals.

    A slab test in the box frame, run only on the rays that pass within the box's bounding sphere.

    Args:
        half: (3,) half extents along the box's own axes; rot: (3, 3) box axes as columns.
    """
    to_center = center - origin
    along = dirs @ to_center  # (N,)
    near = np.flatnonzero((along > 0) & (to_center @ to_center - along * along <= half @ half))
    o = rot.T @ (origin - center)  # (3,) origin in the box frame
    d = dirs[near] @ rot  # (M, 3) directions in the box frame
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    t1 = (-half - o) / d  # (M, 3)
    t2 = (half - o) / d
    t_near = np.minimum(t1, t2)
    t_far = np.maximum(t1, t2)
    t_enter = np.maximum(np.maximum(t_near[:, 0], t_near[:, 1]), t_near[:, 2])
    t_exit = np.minimum(np.minimum(t_far[:, 0], t_far[:, 1]), t_far[:, 2])
    hit = np.flatnonzero((t_exit >= t_enter) & (t_enter > 1e-6))
    axis = t_near[hit].argmax(axis=1)  # the face each ray enters through
    n_local = np.zeros((len(hit), 3), dtype=dirs.dtype)
    n_local[np.arange(len(hit)), axis] = -np.sign(d[hit, axis])
    return near[hit], t_enter[hit], n_local @ rot.T


def hit_box(origin: np.ndarray, dirs: np.ndarray, center: np.ndarray, half: np.ndarray, rot: np.ndarray):
    """Nearest hit of rays (N, 3) with an oriented box: t (N,) (inf on a miss) and normals (N, 3)."""
    rows, t_rows, n_rows = box_rows(origin, dirs, center, half, rot)
    t = np.full(len(dirs), np.inf, dtype=dirs.dtype)
    normals = np.zeros((len(dirs), 3), dtype=dirs.dtype)
    t[rows], normals[rows] = t_rows, n_rows
    return t, normals


def hit_floor(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Hits with the plane z = 0 (only for rays going down): t (N,), inf on a miss."""
    with np.errstate(divide="ignore"):
        t = -origin[2] / dirs[:, 2]
    return np.where((dirs[:, 2] < -1e-9) & (t > 0), t, np.inf)


# --------------------------------------------------------------------------- one sample


def sample_scene(rng: np.random.Generator, label: int) -> dict:
    """Draw a scene: the object (cube or sphere), the light, colours and background clutter."""
    distance = rng.uniform(3.0, 6.0)
    size = rng.uniform(0.45, 0.8)  # sphere radius or half the cube's side
    lateral = (distance * np.tan(AZIMUTH_FOV / 2) - 1.6 * size) * 0.8
    y = rng.uniform(-lateral, lateral)
    hue = rng.uniform(0.15, 1.0, size=3)
    scene = {
        "label": label,
        "center": np.array([distance, y, size]),  # resting on the floor
        "size": size,
        "yaw": rng.uniform(0, np.pi / 2),
        "color": hue / hue.max() * rng.uniform(0.55, 1.0),
        "light": None,
        "ambient": rng.uniform(0.2, 0.45),
        "floor": rng.uniform(0.25, 0.6) * rng.uniform(0.7, 1.0, size=3),
        "checker": rng.uniform(0.5, 1.5),  # checker square size, metres
        "sky_top": rng.uniform(0.4, 0.9, size=3),
        "sky_bottom": rng.uniform(0.6, 1.0, size=3),
        "pillars": [],
    }
    light_el = rng.uniform(np.deg2rad(25), np.deg2rad(70))
    light_az = rng.uniform(-np.pi, np.pi)
    scene["light"] = np.array(
        [np.cos(light_el) * np.cos(light_az), np.cos(light_el) * np.sin(light_az), np.sin(light_el)]
    )
    for _ in range(rng.integers(0, 5)):
        width, height = rng.uniform(0.15, 0.4), rng.uniform(1.5, 3.5)
        px = rng.uniform(distance + 2.0, 16.0)
        py = rng.uniform(-0.5, 0.5) * px
        scene["pillars"].append(
            {
                "center": np.array([px, py, height / 2]),
                "half": np.array([width, width, height / 2]),
                "rot": yaw_matrix(rng.uniform(0, np.pi / 2)),
                "color": rng.uniform(0.2, 0.8, size=3),
            }
        )
    return _as_float32(scene)


def _as_float32(tree):
    """Scene arrays and numbers in float32, so that rendering runs in single precision."""
    if isinstance(tree, dict):
        return {key: _as_float32(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_as_float32(value) for value in tree]
    if isinstance(tree, np.ndarray | float):
        return np.float32(tree) if isinstance(tree, float) else tree.astype(np.float32)
    return tree


@functools.lru_cache(maxsize=1)
def _beam_cache() -> dict:
    """What every sample shares: beam directions, floor hits and the sky gradient (read-only)."""
    azimuth, zenith = beam_angles()
    dirs = beam_directions(azimuth, zenith).reshape(-1, 3).astype(np.float32)
    origin = np.array([0.0, 0.0, SENSOR_HEIGHT], dtype=np.float32)
    t_floor = hit_floor(origin, dirs)
    floor_xy = (origin + dirs * np.where(np.isfinite(t_floor), t_floor, 0)[:, None])[:, :2]
    sky_w = ((dirs[:, 2] + 0.6) / 0.9).clip(0, 1)[:, None]  # vertical sky gradient
    cache = {"origin": origin, "dirs": dirs, "t_floor": t_floor, "floor_xy": floor_xy, "sky_w": sky_w}
    for value in cache.values():
        value.setflags(write=False)
    return cache


def cast(scene: dict, origin: np.ndarray, dirs: np.ndarray):
    """Trace rays (N, 3) from `origin`: t (N,), normals (N, 3), albedo (N, 3), hit object mask."""
    beams = _beam_cache()
    if dirs is beams["dirs"] and origin is beams["origin"]:
        t, floor_xy = beams["t_floor"].copy(), beams["floor_xy"]
    else:
        t = hit_floor(origin, dirs)
        floor_xy = (origin + dirs * np.where(np.isfinite(t), t, 0)[:, None])[:, :2]
    normals = np.zeros((len(dirs), 3), dtype=dirs.dtype)
    normals[:, 2] = 1.0
    cells = np.floor(floor_xy / scene["checker"])
    albedo = scene["floor"][None, :] * (0.75 + 0.25 * ((cells[:, 0] + cells[:, 1]) % 2))[:, None]
    if scene["label"] == 0:
        half = np.full(3, scene["size"], dtype=dirs.dtype)
        obj = box_rows(origin, dirs, scene["center"], half, yaw_matrix(scene["yaw"]).astype(dirs.dtype))
    else:
        obj = sphere_rows(origin, dirs, scene["center"], scene["size"])
    hits = [(*box_rows(origin, dirs, p["center"], p["half"], p["rot"]), p["color"]) for p in scene["pillars"]]
    on_object = np.zeros(len(dirs), dtype=bool)
    for k, (rows, t_rows, n_rows, colour) in enumerate([*hits, (*obj, scene["color"])]):
        closer = t_rows < t[rows]  # keep the nearest surface
        rows = rows[closer]
        t[rows], normals[rows], albedo[rows] = t_rows[closer], n_rows[closer], colour
        if k == len(hits):  # the object comes last
            on_object[rows] = True
    t[t > MAX_RANGE] = np.inf
    return t, normals, albedo, on_object


def render_sample(seed: int, label: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one sample: RGB uint8 (H, W, 3) and LiDAR float32 ranges (H, W).

    The sample's generator is seeded by (seed, label, index), and by nothing else.
    """
    rng = np.random.default_rng([seed, label, index])
    scene = sample_scene(rng, label)
    beams = _beam_cache()
    origin, flat = beams["origin"], beams["dirs"]
    t, normals, albedo, _ = cast(scene, origin, flat)
    hit = np.isfinite(t)

    # shading: Lambert, with the hard shadow the object casts (pillars cast none, to stay fast)
    light = scene["light"]
    lambert = np.clip(normals @ light, 0.0, None)
    lit = hit & (lambert > 0)
    # cull with scalars per ray: the point p = o + t d lies in the shadow cylinder of the object's
    # bounding sphere if c - p is in front along the light and within its radius of the light ray
    center = scene["center"]
    half = np.full(3, scene["size"], dtype=np.float32)
    to_center = center - origin
    t_lit = np.where(lit, t, 0)
    along = to_center @ light - t_lit * (flat @ light)  # (c - p) . L
    dist2 = to_center @ to_center - 2 * t_lit * (flat @ to_center) + t_lit * t_lit  # |c - p|^2
    rows = np.flatnonzero(lit & (along > 0) & (dist2 - along * along <= half @ half))
    start = origin + flat[rows] * t[rows, None] + normals[rows] * 1e-4  # (M, 3), just off the surface
    if scene["label"] == 1:  # one shadow ray per candidate point, towards the sun
        oc = start - center
        b = oc @ light
        c = np.einsum("ij,ij->i", oc, oc) - scene["size"] ** 2
        shadowed = (b * b - c > 0) & (c > -1e-9)  # in front (culled above) and outside the sphere
    else:
        rot = yaw_matrix(scene["yaw"]).astype(np.float32)
        o = (start - center) @ rot  # (M, 3) in the box frame
        d = rot.T @ light
        d = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1, t2 = (-half - o) / d, (half - o) / d
        t_enter = np.minimum(t1, t2).max(axis=1)
        t_exit = np.maximum(t1, t2).min(axis=1)
        shadowed = (t_exit >= np.maximum(t_enter, 0)) & (t_exit > 1e-6)
    sun = lambert
    sun[rows[shadowed]] = 0.0
    shade = scene["ambient"] + (1 - scene["ambient"]) * sun
    colour = albedo * shade[:, None]
    sky_w = beams["sky_w"]
    sky = scene["sky_bottom"] * (1 - sky_w) + scene["sky_top"] * sky_w
    colour = np.where(hit[:, None], colour, sky)
    rgb = colour * 255 + PIXEL_NOISE * rng.standard_normal(colour.shape, dtype=np.float32)
    rgb = rgb.clip(0, 255).round().astype(np.uint8).reshape(SIZE, SIZE, 3)

    ranges = np.where(hit, t + RANGE_NOISE * rng.standard_normal(len(t), dtype=np.float32), NO_RETURN)
    ranges[rng.random(len(t), dtype=np.float32) < DROPOUT] = NO_RETURN
    return rgb, ranges.astype(np.float32).reshape(SIZE, SIZE)


# --------------------------------------------------------------------------- the dataset


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 (H, W, 3) image as a PNG, stored uncompressed (zlib level 0).

    Camera noise leaves little to compress (level 1 saves 22% of 12 KB), and compressing would
    cost a tenth of the time it takes to render a sample.
    """
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 0))
    Path(path).write_bytes(png + chunk(b"IEND", b""))


def sample_id(label: int, index: int) -> str:
    return f"{CLASSES[label]}/{index:04d}"


def _render_chunk(job: tuple[str, int, int, int, int]) -> dict:
    """Render and write samples [start, stop) of one class; return their statistics."""
    data_dir, seed, label, start, stop = job
    stats = {"rgb_sum": np.zeros(3), "rgb_sq": np.zeros(3), "lidar_sum": np.zeros(4), "lidar_sq": np.zeros(4),
             "hist": np.zeros(len(HIST_BINS) - 1, dtype=np.int64), "pixels": 0}
    root = Path(data_dir) / CLASSES[label]
    flat_dirs = _beam_cache()["dirs"].astype(np.float64)
    for index in range(start, stop):
        rgb, ranges = render_sample(seed, label, index)
        write_png(root / "rgb" / f"{index:04d}.png", rgb)
        np.save(root / "lidar" / f"{index:04d}.npy", ranges)
        rgb01 = rgb.reshape(-1, 3).astype(np.float64) / 255
        stats["rgb_sum"] += rgb01.sum(0)
        stats["rgb_sq"] += np.einsum("ij,ij->j", rgb01, rgb01)
        r = ranges.reshape(-1).astype(np.float64)  # x, y, z = r * direction; 0 where no return
        valid = r > NO_RETURN
        stats["lidar_sum"] += np.append(r @ flat_dirs, valid.sum())
        stats["lidar_sq"] += np.append((r * r) @ (flat_dirs * flat_dirs), valid.sum())
        stats["hist"] += np.bincount(np.minimum(r[valid], MAX_RANGE - 1e-9).astype(np.int64),
                                     minlength=len(HIST_BINS) - 1)
        stats["pixels"] += SIZE * SIZE
    return stats


def make_splits(num_samples: int, seed: int) -> dict:
    """Stratified splits: 20% of each class for validation, and a fixed 30% subset of each split."""
    rng = np.random.default_rng([seed, 1_000_003])
    splits: dict = {"seed": seed, "val_fraction": VAL_FRACTION, "subset_fraction": SUBSET_FRACTION,
                    "train": [], "val": [], "subset": {"train": [], "val": []}}
    n_val = int(round(num_samples * VAL_FRACTION))
    for label in range(len(CLASSES)):
        order = rng.permutation(num_samples)
        val, train = sorted(order[:n_val]), sorted(order[n_val:])
        splits["val"] += [sample_id(label, i) for i in val]
        splits["train"] += [sample_id(label, i) for i in train]
        for name, ids in (("train", train), ("val", val)):
            keep = sorted(rng.permutation(ids)[: int(round(len(ids) * SUBSET_FRACTION))])
            splits["subset"][name] += [sample_id(label, int(i)) for i in keep]
    return splits


def read_meta(data_dir: str | Path) -> dict | None:
    path = Path(data_dir) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else None


def generate(num_samples: int = 1000, seed: int = 0, data_dir: str = DEFAULT_DIR, workers: int = 0,
             overwrite: bool = False, quiet: bool = False) -> None:
    """Render the dataset: `num_samples` cubes and as many spheres, with splits and statistics.

    Args:
        num_samples: samples per class (at least 5).
        seed: the world's seed; the same seed gives the same bytes.
        data_dir: where to write (cubes/, spheres/, azimuth.npy, zenith.npy, splits.json, stats.json).
        workers: processes to render with; 0 means one per CPU core. Does not change the bytes.
        overwrite: replace a dataset already in data_dir that was made with other options.
        quiet: no statistics printout (the progress bar stays).
    """
    make_dataset(num_samples, seed, data_dir, workers, overwrite, quiet)


def make_folder(root: Path) -> None:
    """ROOT as a folder to write the dataset in (made if missing), or one line saying why it cannot be."""
    if root.exists() and not root.is_dir():
        raise SystemExit(f"error: --data_dir {root} is a file, not a folder; choose another --data_dir")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: --data_dir {root} cannot be made ({e.strerror}); choose another --data_dir") from None


def make_dataset(num_samples: int = 1000, seed: int = 0, data_dir: str = DEFAULT_DIR, workers: int = 0,
                 overwrite: bool = False, quiet: bool = False) -> dict:
    """`generate`, returning the dataset statistics."""
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 5:
        raise SystemExit(f"error: --num_samples must be an integer >= 5, got {num_samples!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SystemExit(f"error: --seed must be a non-negative integer, got {seed!r}")
    if not isinstance(workers, int) or workers < 0:
        raise SystemExit(f"error: --workers must be a non-negative integer, got {workers!r}")
    root = Path(data_dir)
    make_folder(root)
    options = {"version": VERSION, "seed": seed, "num_samples": num_samples}
    meta = read_meta(root)
    if meta is not None and meta == options:
        if not quiet:
            print(f"{root} already holds this dataset (seed={seed}, num_samples={num_samples}); nothing to do")
        return json.loads((root / "stats.json").read_text())
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            found = f"seed={meta['seed']}, num_samples={meta['num_samples']}" if meta else "other files"
            raise SystemExit(f"error: {root} already holds {found}; pass --overwrite to replace it "
                             "or choose another --data_dir")
        for name in CLASSES:
            shutil.rmtree(root / name, ignore_errors=True)
        (root / "meta.json").unlink(missing_ok=True)
    for name in CLASSES:
        (root / name / "rgb").mkdir(parents=True, exist_ok=True)
        (root / name / "lidar").mkdir(parents=True, exist_ok=True)
    azimuth, zenith = beam_angles()
    np.save(root / "azimuth.npy", azimuth.astype(np.float32))
    np.save(root / "zenith.npy", zenith.astype(np.float32))

    jobs = [(str(root), seed, label, start, min(start + CHUNK, num_samples))
            for label in range(len(CLASSES)) for start in range(0, num_samples, CHUNK)]
    workers = workers or os.cpu_count() or 1
    total = {}
    started = time.perf_counter()
    with tqdm(total=2 * num_samples, desc=f"shapes seed={seed}", unit="sample") as bar:
        if workers == 1:
            results = map(_render_chunk, jobs)
            pool = None
        else:
            pool = Pool(min(workers, len(jobs)))
            results = pool.imap(_render_chunk, jobs)  # in job order: the sums do not depend on workers
        for job, part in zip(jobs, results, strict=True):
            for key, value in part.items():
                total[key] = total.get(key, 0) + value
            bar.update(job[4] - job[3])
        if pool is not None:
            pool.close()
            pool.join()
    seconds = time.perf_counter() - started

    pixels = total["pixels"]
    rgb_mean = total["rgb_sum"] / pixels
    lidar_mean = total["lidar_sum"] / pixels
    stats = {
        "counts": {name: num_samples for name in CLASSES},
        "total": 2 * num_samples,
        "rgb_mean": [round(float(v), 6) for v in rgb_mean],
        "rgb_std": [round(float(v), 6) for v in np.sqrt(total["rgb_sq"] / pixels - rgb_mean**2)],
        "lidar_channels": ["x", "y", "z", "valid"],
        "lidar_mean": [round(float(v), 6) for v in lidar_mean],
        "lidar_std": [round(float(v), 6) for v in np.sqrt(total["lidar_sq"] / pixels - lidar_mean**2)],
        "valid_fraction": round(float(lidar_mean[3]), 6),
        "range_histogram": {"bin_edges_m": HIST_BINS.tolist(), "counts": total["hist"].tolist()},
    }
    splits = make_splits(num_samples, seed)
    stats["splits"] = {"train": len(splits["train"]), "val": len(splits["val"]),
                       "subset_train": len(splits["subset"]["train"]), "subset_val": len(splits["subset"]["val"])}
    (root / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    (root / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    (root / "meta.json").write_text(json.dumps(options) + "\n")
    if not quiet:
        print(f"wrote {2 * num_samples} samples to {root} in {seconds:.1f}s "
              f"({2 * num_samples / seconds:.0f} samples/s, {workers} workers)")
        print_stats(stats)
    return stats


def print_stats(stats: dict) -> None:
    print(f"counts: {stats['counts']}  splits: {stats['splits']}")
    print(f"rgb mean {stats['rgb_mean']} std {stats['rgb_std']}")
    print(f"lidar (x, y, z, valid) mean {stats['lidar_mean']} std {stats['lidar_std']}")
    hist = stats["range_histogram"]
    peak = max(hist["counts"]) or 1
    for lo, count in zip(hist["bin_edges_m"][:-1], hist["counts"], strict=False):
        print(f"  {lo:4.0f}-{lo + 1:<3.0f}m {'#' * int(40 * count / peak)} {count}")


def ensure(data_dir: str | Path = DEFAULT_DIR, num_samples: int = 1000, seed: int = 0) -> Path:
    """Return data_dir, generating the dataset there first if it is missing."""
    root = Path(data_dir)
    if read_meta(root) is None:
        print(f"{root} has no shapes dataset; generating one (seed={seed}, num_samples={num_samples})")
        make_dataset(num_samples=num_samples, seed=seed, data_dir=str(root))
    return root


def load_pair(data_dir: str | Path, sid: str) -> tuple[np.ndarray, np.ndarray]:
    """One sample by ID ("cubes/0012"): RGB uint8 (H, W, 3) and LiDAR ranges float32 (H, W)."""
    root = Path(data_dir)
    name, index = sid.split("/")
    rgb = np.asarray(Image.open(root / name / "rgb" / f"{index}.png").convert("RGB"))
    return rgb, np.load(root / name / "lidar" / f"{index}.npy")


# --------------------------------------------------------------------------- looking at it


def gallery(data_dir: str = DEFAULT_DIR, num: int = 4, out: str = "", seed: int = 0) -> None:
    """Draw RGB, LiDAR depth and the point cloud side by side for a few samples of each class.

    Args:
        data_dir: the dataset to draw from (generated first if missing).
        num: samples per class (1-8).
        out: the PNG to write; default DATA_DIR/gallery.png.
        seed: which samples to pick, and the world seed if the dataset must be generated.
    """
    if not isinstance(num, int) or not 1 <= num <= 8:
        raise SystemExit(f"error: --num must be an integer from 1 to 8, got {num!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = ensure(data_dir, seed=seed)
    azimuth, zenith = np.load(root / "azimuth.npy"), np.load(root / "zenith.npy")
    count = read_meta(root)["num_samples"]
    rng = np.random.default_rng(seed)
    ids = [sample_id(label, int(i)) for label in range(len(CLASSES))
           for i in rng.choice(count, size=min(num, count), replace=False)]
    fig = plt.figure(figsize=(9, 2.8 * len(ids)))
    for row, sid in enumerate(ids):
        rgb, ranges = load_pair(root, sid)
        ax = fig.add_subplot(len(ids), 3, 3 * row + 1)
        ax.imshow(rgb)
        ax.set_title(f"{sid} RGB", fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(len(ids), 3, 3 * row + 2)
        ax.imshow(np.ma.masked_equal(ranges, NO_RETURN), cmap="viridis_r", vmin=0, vmax=MAX_RANGE)
        ax.set_title("LiDAR range (blank: no return)", fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(len(ids), 3, 3 * row + 3, projection="3d")
        x, y, z, valid = beams_to_cartesian(ranges, azimuth, zenith).reshape(4, -1)
        keep = (valid > 0) & (x < 10)  # the near field, where the object stands
        ax.scatter(x[keep], y[keep], z[keep], c=z[keep], s=0.5, cmap="plasma")
        ax.set_xlim(0, 10)
        ax.set_ylim(-5, 5)
        ax.set_zlim(0, 3)
        ax.view_init(elev=20, azim=-150)
        ax.set_title("point cloud (m)", fontsize=8)
        ax.tick_params(labelsize=5)
    fig.tight_layout()
    path = Path(out or root / "gallery.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")


def stats(data_dir: str = DEFAULT_DIR) -> None:
    """Print the statistics of a generated dataset (counts, channel mean/std, range histogram).

    Args:
        data_dir: a dataset made by `python -m worlds shapes`.
    """
    path = Path(data_dir) / "stats.json"
    if not path.exists():
        raise SystemExit(f"error: no {path}; generate it with `python -m worlds shapes --data_dir {data_dir}`")
    print_stats(json.loads(path.read_text()))


def benchmark(num_samples: int = 1000, workers: int = 0, scratch: str = "data") -> None:
    """Time the generation of 2 x num_samples samples into a temporary folder; print samples/s.

    Also prints the CPU time per sample (this process and its workers), so that the rate on idle
    cores can be told apart from the rate on a machine that other jobs are sharing.

    Args:
        num_samples: samples per class.
        workers: processes; 0 means one per CPU core.
        scratch: the folder to make the temporary dataset in (on the disk the data will live on).
    """
    import resource

    def cpu_seconds() -> float:
        return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                   for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))

    Path(scratch).mkdir(parents=True, exist_ok=True)
    cores = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=scratch, prefix="shapes_benchmark_") as tmp:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        make_dataset(num_samples=num_samples, seed=12345, data_dir=tmp, workers=workers, quiet=True)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    total = 2 * num_samples
    print(f"{total} samples in {seconds:.2f}s: {total / seconds:.0f} samples/s ({cores} workers, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}); {1000 * cpu / total:.2f} ms of CPU "
          f"per sample, so about {cores * total / cpu:.0f} samples/s on {cores} idle cores")


def fiftyone(data_dir: str = DEFAULT_DIR, split: str = "all", output: str = "", load: bool = False,
             launch: bool = False, name: str = "shapes", port: int = 5151, overwrite: bool = False) -> None:
    """Write the dataset as a grouped FiftyOne dataset folder (rgb + lidar slices); optionally load it and open the App.

    Args:
        data_dir: a dataset made by `python -m worlds shapes` (the default one is generated if missing).
        split: all | train | valid: which samples to write ("val" still works).
        output: the folder to write; default DATA_DIR_fiftyone (DATA_DIR_fiftyone_SPLIT for one split).
        load: also make the persistent FiftyOne dataset NAME from it (needs FiftyOne: requirements-fiftyone.txt).
        launch: also open the FiftyOne App on it, until Ctrl-C (loads it first; kept only with --load).
        name: the FiftyOne dataset's name, for --load and --launch.
        port: the App's port, for --launch.
        overwrite: replace the folder at OUTPUT (a FiftyOne folder only) and a FiftyOne dataset NAME.
    """
    from worlds import shapes_fiftyone as fo_folder  # imports this module; FiftyOne only for --load/--launch

    if split == "val":
        print("note: --split val is now spelled --split valid; the old name goes in the next release")
        split = "valid"
    if split not in fo_folder.SPLITS:
        raise SystemExit(f"error: --split must be one of {', '.join(fo_folder.SPLITS)}, got {split!r}")
    for flag, value in (("load", load), ("launch", launch), ("overwrite", overwrite)):
        if not isinstance(value, bool):
            raise SystemExit(f"error: --{flag} is a switch (--{flag} or --no{flag}), got {value!r}")
    if not isinstance(name, str) or not name.strip():
        raise SystemExit(f"error: --name must be a non-empty dataset name, got {name!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise SystemExit(f"error: --port must be an integer from 1 to 65535, got {port!r}")
    if load or launch:
        fo_folder.import_fiftyone("--load" if load else "--launch")  # before any work: a missing FiftyOne is one line
    if Path(data_dir) == Path(DEFAULT_DIR):
        ensure(data_dir)
    folder = fo_folder.write_folder(data_dir, output or fo_folder.default_output(data_dir, split), split, overwrite)
    if load or launch:
        dataset = fo_folder.load_dataset(folder, name, persistent=load, overwrite=overwrite)
        print(dataset)
        if launch:
            fo_folder.launch_app(dataset, port)


COMMANDS = {"generate": generate, "gallery": gallery, "stats": stats, "benchmark": benchmark, "fiftyone": fiftyone}
