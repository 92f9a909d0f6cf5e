"""Bouncing-ball videos: 1 to 3 shaded balls bouncing elastically off the walls and each other.

    python -m worlds balls --split train                  # data/balls/train/*.npz
    python -m worlds balls --split test --num_videos 500  # a held-out split with its own seed
    python -m worlds balls gallery --split train          # data/balls/train_gallery.png
    python -m worlds balls clevrer --video_dir CLEVRER/video_train --split clevrer

Each split is a folder of shards `shard_00000.npz` (a few hundred videos each) plus `meta.json`.
A shard holds, for N videos of T frames of S x S pixels and up to MAX_BALLS balls:

    videos      (N, T, S, S, 3) uint8   the frames
    num_balls   (N,)            int64   the label: how many balls (1..3; -1 when unknown)
    positions   (N, T, 3, 2)    float32 ball centres (x, y) in pixels per frame, NaN for absent balls
    velocities  (N, T, 3, 2)    float32 pixels per frame, NaN for absent balls
    radii       (N, 3)          float32 pixels, NaN for absent balls
    collisions  (N, T)          bool    a ball-ball collision happened during the step into frame t

Every video draws its randomness from its own generator, seeded by (split seed, video index),
so the bytes depend only on the seed and never on the number of worker processes.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from worlds import check_split_name

MAX_BALLS = 3
SHARD_SIZE = 250  # videos per .npz shard: small enough to load one at a time
FORMAT_VERSION = 1
# Each split has its own seed; the grader's held-out split uses a seed given at grading time.
SPLIT_SEEDS = {"train": 1000, "valid": 2000, "test": 3000}
DEFAULT_NUM_VIDEOS = {"train": 2000, "valid": 500, "test": 500}
SUBSTEPS = 8  # physics steps per frame: balls move at most a fraction of a radius per step


# ----------------------------------------------------------------------------------------------
# Physics
# ----------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """The simulated motion of one video's balls (n balls, T frames)."""

    positions: np.ndarray  # (T, n, 2) float64, centres in pixels
    velocities: np.ndarray  # (T, n, 2) float64, pixels per frame
    radii: np.ndarray  # (n,) float64, pixels
    masses: np.ndarray  # (n,) float64, proportional to the ball's area
    collisions: np.ndarray  # (T,) bool, a ball-ball collision during the step into frame t

    def kinetic_energy(self) -> np.ndarray:
        """(T,) total kinetic energy per frame; an elastic world keeps it constant."""
        return 0.5 * (self.masses[None, :] * (self.velocities**2).sum(-1)).sum(-1)


def _place_balls(rng: np.random.Generator, radii: np.ndarray, size: float) -> np.ndarray:
    """Non-overlapping starting centres, by rejection sampling. (n, 2)"""
    for _ in range(1000):
        positions = rng.uniform(radii[:, None], size - radii[:, None], size=(len(radii), 2))
        gaps = [
            np.linalg.norm(positions[i] - positions[j]) - radii[i] - radii[j]
            for i in range(len(radii))
            for j in range(i + 1, len(radii))
        ]
        if not gaps or min(gaps) > 1.0:
            return positions
    raise RuntimeError("could not place the balls without overlap; use fewer or smaller balls")


def _keep_in_box(x: np.ndarray, v: np.ndarray, radii: np.ndarray, size: float) -> None:
    """Reflect balls that crossed a wall (in place): mirror the position, flip the velocity."""
    low, high = radii[:, None], size - radii[:, None]
    below, above = x < low, x > high
    x[:] = np.where(below, 2 * low - x, np.where(above, 2 * high - x, x))
    v[:] = np.where(below, np.abs(v), np.where(above, -np.abs(v), v))
    np.clip(x, low, high, out=x)  # a mirrored overshoot can never leave the box


def _collide(x: np.ndarray, v: np.ndarray, radii: np.ndarray, masses: np.ndarray, size: float) -> bool:
    """Resolve ball-ball contacts in place; True if any pair bounced.

    An approaching touching pair exchanges momentum along the line of centres (an elastic impulse
    keeps both momentum and kinetic energy), then the pair is pushed apart, heavier ball less, so
    that no two balls overlap in a rendered frame. Pushing never changes a velocity.
    """
    bounced = False
    n = len(radii)
    for i in range(n):
        for j in range(i + 1, n):
            d = x[j] - x[i]
            dist = float(np.hypot(d[0], d[1]))
            if dist >= radii[i] + radii[j]:
                continue
            normal = d / dist if dist > 1e-9 else np.array([1.0, 0.0])
            approach = float((v[i] - v[j]) @ normal)  # > 0 when the balls move towards each other
            if approach > 0:
                impulse = 2.0 * approach / (1.0 / masses[i] + 1.0 / masses[j])
                v[i] -= impulse / masses[i] * normal
                v[j] += impulse / masses[j] * normal
                bounced = True
    # Separate overlapping pairs; a push into a wall is undone by the clip, so repeat a few times.
    for _ in range(8):
        worst = 0.0
        for i in range(n):
            for j in range(i + 1, n):
                d = x[j] - x[i]
                dist = float(np.hypot(d[0], d[1]))
                overlap = radii[i] + radii[j] - dist
                if overlap <= 0:
                    continue
                worst = max(worst, overlap)
                normal = d / dist if dist > 1e-9 else np.array([1.0, 0.0])
                share = masses[j] / (masses[i] + masses[j])
                x[i] -= (overlap + 1e-6) * share * normal
                x[j] += (overlap + 1e-6) * (1.0 - share) * normal
        np.clip(x, radii[:, None], size - radii[:, None], out=x)
        if worst == 0.0:
            break
    return bounced


def simulate(rng: np.random.Generator, num_balls: int, num_frames: int = 20, size: int = 64) -> Trajectory:
    """Bouncing balls in a size x size box: random radius, velocity; elastic walls and collisions."""
    radii = rng.uniform(0.08, 0.11, size=num_balls) * size  # 5 to 7 px at 64: ball counts stay distinct
    masses = radii**2  # flat discs of one density: mass grows with area
    speed = rng.uniform(0.025, 0.06, size=num_balls) * size  # pixels per frame
    angle = rng.uniform(0, 2 * np.pi, size=num_balls)
    v = np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=-1)  # (n, 2)
    x = _place_balls(rng, radii, float(size))  # (n, 2)

    positions = np.zeros((num_frames, num_balls, 2))
    velocities = np.zeros((num_frames, num_balls, 2))
    collisions = np.zeros(num_frames, dtype=bool)
    positions[0], velocities[0] = x, v
    for t in range(1, num_frames):
        for _ in range(SUBSTEPS):
            x += v / SUBSTEPS
            _keep_in_box(x, v, radii, float(size))
            collisions[t] |= _collide(x, v, radii, masses, float(size))
        positions[t], velocities[t] = x, v
    return Trajectory(positions, velocities, radii, masses, collisions)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in [0, 1]) to RGB in [0, 1]. (3,)"""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _background(rng: np.random.Generator, size: int, num_frames: int) -> np.ndarray:
    """A muted two-colour gradient with a soft wave texture that drift over the video: the colours
    cross-fade, the gradient turns and the waves roll, so only the balls stay the same.
    (T, S, S, 3) float in [0, 1]"""

    def muted() -> np.ndarray:
        return _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.15, 0.55))

    start, end = np.stack([muted(), muted()]), np.stack([muted(), muted()])  # (2, 3) gradient ends
    s = np.linspace(0, 1, num_frames)[:, None, None]  # (T, 1, 1) progress through the video
    colours = (1 - s) * start + s * end  # (T, 2, 3)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)  # (S, S) each
    t = np.arange(num_frames)[:, None, None]  # (T, 1, 1)
    a = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.15, 0.15) * t  # gradient direction turns
    ramp = np.clip(0.5 + (np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5)), 0, 1)  # (T, S, S)
    k, b, phase = rng.uniform(2, 8), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)
    roll = rng.uniform(0.2, 0.6) * rng.choice([-1, 1])  # radians per frame
    wave = rng.uniform(0.02, 0.07) * np.sin(2 * np.pi * k * (np.cos(b) * xx + np.sin(b) * yy) + phase + roll * t)
    image = (1 - ramp)[..., None] * colours[:, None, None, 0] + ramp[..., None] * colours[:, None, None, 1]
    return np.clip(image + wave[..., None], 0, 1)


def _ball_colours(rng: np.random.Generator, n: int, background: np.ndarray) -> np.ndarray:
    """Saturated colours that stand out from the background's mean colour in every frame. (n, 3)"""
    means = background.reshape(len(background), -1, 3).mean(1)  # (T, 3)
    colours = []
    while len(colours) < n:
        c = _hsv_to_rgb(rng.uniform(), rng.uniform(0.45, 1.0), rng.uniform(0.6, 1.0))
        if np.abs(c - means).sum(-1).min() > 0.45:
            colours.append(c)
    return np.stack(colours)


def render(rng: np.random.Generator, trajectory: Trajectory, size: int = 64) -> np.ndarray:
    """Shaded balls (diffuse + specular, soft shadow) over a drifting background. (T, S, S, 3) uint8"""
    T = trajectory.positions.shape[0]
    background = _background(rng, size, T)  # (T, S, S, 3)
    colours = _ball_colours(rng, len(trajectory.radii), background)
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.0), 1.0])  # from the viewer's side
    light /= np.linalg.norm(light)
    halfway = light + np.array([0.0, 0.0, 1.0])
    halfway /= np.linalg.norm(halfway)
    shadow_offset = -light[:2] / light[2] * 0.25  # shadows fall away from the light, in radii

    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres, (S, S) each
    frames = background.copy()  # (T, S, S, 3)
    centres = trajectory.positions  # (T, n, 2)
    for k, r in enumerate(trajectory.radii):  # shadows first, so no ball is darkened by another's
        sx = centres[:, k, 0, None, None] + shadow_offset[0] * r
        sy = centres[:, k, 1, None, None] + shadow_offset[1] * r
        dist = np.hypot(xs[None] - sx, ys[None] - sy)  # (T, S, S)
        shade = np.clip((1.15 * r - dist) / (0.4 * r), 0, 1) * 0.35
        frames *= (1 - shade)[..., None]
    for k, r in enumerate(trajectory.radii):
        dx = (xs[None] - centres[:, k, 0, None, None]) / r  # (T, S, S), in radii
        dy = (ys[None] - centres[:, k, 1, None, None]) / r
        rho2 = dx**2 + dy**2
        nz = np.sqrt(np.clip(1 - rho2, 0, 1))
        normal = np.stack([dx, dy, nz], axis=-1)  # (T, S, S, 3) sphere normals
        diffuse = np.clip(normal @ light, 0, 1)[..., None]
        specular = np.clip(normal @ halfway, 0, 1)[..., None] ** 24
        colour = colours[k] * (0.3 + 0.7 * diffuse) + 0.6 * specular
        alpha = np.clip((1 - np.sqrt(rho2)) * r + 0.5, 0, 1)[..., None]  # anti-aliased edge
        frames = (1 - alpha) * frames + alpha * np.clip(colour, 0, 1)
    return (frames * 255 + 0.5).astype(np.uint8)


def make_video(seed: int, index: int, num_frames: int = 20, size: int = 64) -> dict[str, np.ndarray]:
    """One video and its labels, from its own generator seeded by (seed, index)."""
    rng = np.random.default_rng([seed, index])
    num_balls = int(rng.integers(1, MAX_BALLS + 1))
    trajectory = simulate(rng, num_balls, num_frames, size)
    video = render(rng, trajectory, size)
    pad = MAX_BALLS - num_balls  # absent balls are NaN so every video has the same label shapes
    nan_balls = np.full((num_frames, pad, 2), np.nan)
    return {
        "videos": video,
        "num_balls": np.int64(num_balls),
        "positions": np.concatenate([trajectory.positions, nan_balls], 1).astype(np.float32),
        "velocities": np.concatenate([trajectory.velocities, nan_balls], 1).astype(np.float32),
        "radii": np.concatenate([trajectory.radii, np.full(pad, np.nan)]).astype(np.float32),
        "collisions": trajectory.collisions,
    }


# ----------------------------------------------------------------------------------------------
# Storage: byte-reproducible .npz shards
# ----------------------------------------------------------------------------------------------


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, but with fixed zip timestamps so the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def _stack(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([item[key] for item in items]) for key in items[0]}


def _prepare_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SystemExit(f"error: {out} already holds files; pass --overwrite to replace them")
        for old in list(out.glob("shard_*.npz")) + [out / "meta.json"]:
            old.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def generate(
    split: str = "train",
    num_videos: int | None = None,
    seed: int | None = None,
    num_frames: int = 20,
    size: int = 64,
    data_dir: str = "data/balls",
    overwrite: bool = False,
) -> str:
    """Render a split of bouncing-ball videos to DATA_DIR/SPLIT/shard_*.npz.

    Args:
        split: name of the split folder; train, valid and test have their own default seeds.
        num_videos: how many videos (default: 2000 for train, 500 for valid and test).
        seed: the split's seed (default: the split's own; required for any other split name).
        num_frames: frames per video.
        size: frame width and height in pixels.
        data_dir: where the split folders live.
        overwrite: replace an existing split folder.
    """
    check_split_name(split)
    if seed is None:
        if split not in SPLIT_SEEDS:
            raise SystemExit(f"error: split {split!r} has no default seed; pass --seed N")
        seed = SPLIT_SEEDS[split]
    if num_videos is None:
        num_videos = DEFAULT_NUM_VIDEOS.get(split, 500)
    for name, value, low in (("num_videos", num_videos, 1), ("num_frames", num_frames, 2), ("size", size, 16)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SystemExit(f"error: --{name} must be an integer >= {low}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SystemExit(f"error: --seed must be a non-negative integer, got {seed!r}")

    out = Path(data_dir) / split
    _prepare_dir(out, overwrite)
    bar = tqdm(total=num_videos, desc=f"balls {split}", unit="video")
    for shard, start in enumerate(range(0, num_videos, SHARD_SIZE)):
        stop = min(start + SHARD_SIZE, num_videos)
        items = []
        for index in range(start, stop):
            items.append(make_video(seed, index, num_frames, size))
            bar.update(1)
        save_npz(out / f"shard_{shard:05d}.npz", _stack(items))
    bar.close()
    meta = {"world": "balls", "version": FORMAT_VERSION, "split": split, "seed": seed,
            "num_videos": num_videos, "num_frames": num_frames, "size": size, "max_balls": MAX_BALLS}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {num_videos} videos to {out}")
    return str(out)


def load_split(split: str = "train", data_dir: str = "data/balls") -> dict[str, np.ndarray]:
    """All shards of a split, concatenated: the arrays described in this module's docstring."""
    folder = Path(data_dir) / split
    shards = sorted(folder.glob("shard_*.npz"))
    if not shards:
        raise FileNotFoundError(f"no shards in {folder}; run: python -m worlds balls --split {split}")
    parts = []
    for shard in shards:
        with np.load(shard) as data:
            parts.append({key: data[key] for key in data.files})
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def ensure_split(
    split: str, data_dir: str = "data/balls", num_videos: int | None = None, seed: int | None = None
) -> dict[str, np.ndarray]:
    """Load a split, generating it first (with a progress bar) if it is missing."""
    folder = Path(data_dir) / split
    if not (folder / "meta.json").exists():
        print(f"{folder} is missing; generating it")
        generate(split=split, num_videos=num_videos, seed=seed, data_dir=data_dir)
    return load_split(split, data_dir)


# ----------------------------------------------------------------------------------------------
# Gallery
# ----------------------------------------------------------------------------------------------


def gallery(
    split: str = "train",
    num_videos: int = 6,
    num_frames: int = 10,
    data_dir: str = "data/balls",
    out: str | None = None,
    overwrite: bool = False,
) -> str:
    """Draw a few videos as frame strips (one row each; a red frame marks a collision) to a PNG.

    Args:
        split: which split to draw (generated first if missing).
        num_videos: how many videos (rows).
        num_frames: how many evenly spaced frames per row.
        data_dir: where the split folders live.
        out: the PNG to write (default: DATA_DIR/SPLIT_gallery.png).
        overwrite: replace an existing PNG.
    """
    for name, value in (("num_videos", num_videos), ("num_frames", num_frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SystemExit(f"error: --{name} must be a positive integer, got {value!r}")
    path = Path(out) if out is not None else Path(data_dir) / f"{split}_gallery.png"
    if path.exists() and not overwrite:
        raise SystemExit(f"error: {path} exists; pass --overwrite to replace it")
    data = ensure_split(split, data_dir)
    videos = data["videos"][:num_videos]  # (V, T, S, S, 3)
    V, T, S = videos.shape[0], videos.shape[1], videos.shape[2]
    frame_ids = np.linspace(0, T - 1, min(num_frames, T)).round().astype(int)
    scale, pad, label_w = 2, 4, 70
    cell = S * scale + pad
    sheet = Image.new("RGB", (label_w + cell * len(frame_ids) + pad, cell * V + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row in range(V):
        y = pad + row * cell
        n = int(data["num_balls"][row])
        draw.text((6, y + S * scale // 2 - 6), f"#{row}: {n if n >= 0 else '?'} ball{'s' if n != 1 else ''}",
                  fill=(0, 0, 0))
        for col, t in enumerate(frame_ids):
            x = label_w + col * cell
            frame = Image.fromarray(videos[row, t]).resize((S * scale, S * scale), Image.NEAREST)
            sheet.paste(frame, (x, y))
            if data["collisions"][row, t]:
                draw.rectangle([x - 2, y - 2, x + S * scale + 1, y + S * scale + 1], outline=(230, 0, 0), width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    print(f"wrote {path}")
    return str(path)


# ----------------------------------------------------------------------------------------------
# CLEVRER-style videos
# ----------------------------------------------------------------------------------------------


def read_video_frames(path: str | Path, num_frames: int = 20, size: int = 64) -> np.ndarray:
    """Decode an .mp4 (PyAV), take num_frames evenly spaced frames, centre-crop, resize. (T, S, S, 3)"""
    try:
        import av
    except ImportError:
        raise SystemExit("error: reading .mp4 needs PyAV; run: pip install av") from None
    with av.open(str(path)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not decoded:
        raise ValueError(f"{path} has no video frames")
    ids = np.linspace(0, len(decoded) - 1, num_frames).round().astype(int)
    frames = []
    for i in ids:
        image = Image.fromarray(decoded[i])
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        frames.append(np.asarray(image))
    return np.stack(frames)


def find_clevrer_videos(video_dir: str | Path) -> list[Path]:
    """CLEVRER's layout `video_00000-01000/video_00000.mp4`, or .mp4 files directly in video_dir."""
    root = Path(video_dir)
    return sorted(root.glob("video_*-*/video_*.mp4")) or sorted(root.glob("*.mp4"))


def _clevrer_object_count(annotation_dir: Path | None, video: Path) -> int:
    """Objects in CLEVRER's annotation_XXXXX.json (object_property), or -1 if there is none."""
    if annotation_dir is None:
        return -1
    stem = video.stem.replace("video_", "annotation_")
    hits = sorted(annotation_dir.glob(f"**/{stem}.json"))
    if not hits:
        return -1
    return len(json.loads(hits[0].read_text()).get("object_property", [])) or -1


def clevrer(
    video_dir: str = "",
    split: str = "clevrer",
    num_frames: int = 20,
    size: int = 64,
    max_videos: int = 0,
    annotation_dir: str = "",
    data_dir: str = "data/balls",
    overwrite: bool = False,
) -> str:
    """Convert CLEVRER-style .mp4 videos into this world's split format (DATA_DIR/SPLIT).

    Args:
        video_dir: folder with video_00000-01000/video_00000.mp4 ... (or .mp4 files directly).
        split: name of the split folder to write.
        num_frames: evenly spaced frames sampled per video.
        size: output frame size in pixels (centre-cropped to a square, then resized).
        max_videos: convert at most this many (0: all).
        annotation_dir: optional CLEVRER annotation folder; its object counts become num_balls.
        data_dir: where the split folders live.
        overwrite: replace an existing split folder.
    """
    if not video_dir or not Path(video_dir).is_dir():
        raise SystemExit(f"error: --video_dir must be a folder of CLEVRER videos, got {video_dir!r}")
    for name, value, low in (("num_frames", num_frames, 1), ("size", size, 8), ("max_videos", max_videos, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SystemExit(f"error: --{name} must be an integer >= {low}, got {value!r}")
    videos = find_clevrer_videos(video_dir)
    if max_videos:
        videos = videos[:max_videos]
    if not videos:
        raise SystemExit(f"error: no video_*.mp4 files under {video_dir}")
    annotations = Path(annotation_dir) if annotation_dir else None
    out = Path(data_dir) / split
    _prepare_dir(out, overwrite)
    nan_balls = np.full((num_frames, MAX_BALLS, 2), np.nan, dtype=np.float32)
    items = []
    shard = 0
    for path in tqdm(videos, desc=f"clevrer -> {split}", unit="video"):
        items.append({
            "videos": read_video_frames(path, num_frames, size),
            "num_balls": np.int64(_clevrer_object_count(annotations, path)),
            "positions": nan_balls,
            "velocities": nan_balls,
            "radii": np.full(MAX_BALLS, np.nan, dtype=np.float32),
            "collisions": np.zeros(num_frames, dtype=bool),
        })
        if len(items) == SHARD_SIZE:
            save_npz(out / f"shard_{shard:05d}.npz", _stack(items))
            items, shard = [], shard + 1
    if items:
        save_npz(out / f"shard_{shard:05d}.npz", _stack(items))
    meta = {"world": "clevrer", "version": FORMAT_VERSION, "split": split, "source": str(video_dir),
            "num_videos": len(videos), "num_frames": num_frames, "size": size, "max_balls": MAX_BALLS}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(videos)} videos to {out}")
    return str(out)


COMMANDS = {"generate": generate, "gallery": gallery, "clevrer": clevrer}
