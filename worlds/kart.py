"""The kart world: moments of a SuperTuxKart-like race, rendered from a seed.

Each frame is one moment of a race on one track. Each of its views is the picture from a
camera that follows one kart (the ego car) from behind and above, so the ego sits low in the
middle of the picture; karts ahead appear higher and smaller, karts between the camera and
the ego lower and larger. The files follow the real SuperTuxKart recordings exactly:

    data/<split>/<frame:05x>_info.json
    data/<split>/<frame:05x>_<view:02d>_im.jpg       (150x100 JPEG)

`info.json` holds `track`, `karts` (names; the index is the kart id), `detections` (one list
per view of rows `[class_id, kart_id, x1, y1, x2, y2]` in 600x400 coordinates, class 1 = kart),
`distance_down_track` and `velocity` (one per kart). The extra key `ego` (the kart id each
view follows) is for checks only: nothing downstream needs it, so real recordings work too.
Real recordings also hold rows of other classes (2-8 and 255: the track, pickups, bombs,
projectiles, ...) whose second column is not a kart id; `kart_rows` keeps the karts alone.

    python -m worlds kart --split train --num_frames 2000
    python -m worlds kart gallery --split train --num_frames 6
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from worlds import check_split_name

# ----------------------------------------------------------------------------------------
# The rosters: the one place that names karts and tracks. Everything else imports these.
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KartLook:
    body: tuple[int, int, int]  # main colour of the kart's back
    trim: tuple[int, int, int]  # spoiler / stripe colour
    head: tuple[int, int, int]  # driver's head colour
    emblem: tuple[int, int, int]  # colour of the emblem on the back
    shape: str  # body outline: "box", "wedge" or "round"
    mark: str  # emblem: circle, triangle, diamond, star, cross, square, bar, ring
    trim_style: str  # "spoiler" (bar on top) or "stripe" (vertical band)
    ears: str  # head decoration: "none", "ears", "horns", "hat", "crest"


KARTS: dict[str, KartLook] = {
    "tux": KartLook((235, 190, 20), (30, 30, 30), (20, 20, 25), (250, 250, 250), "round", "circle", "spoiler", "none"),
    "gnu": KartLook((140, 90, 40), (230, 210, 160), (110, 70, 35), (250, 240, 200), "box", "triangle", "stripe", "horns"),
    "nolok": KartLook((110, 30, 30), (30, 30, 30), (60, 120, 40), (240, 200, 40), "wedge", "star", "spoiler", "crest"),
    "sara_the_racer": KartLook((220, 40, 140), (250, 250, 250), (240, 200, 160), (60, 20, 90), "wedge", "diamond", "stripe", "hat"),
    "adiumy": KartLook((40, 170, 60), (250, 230, 40), (60, 200, 80), (20, 60, 20), "round", "square", "stripe", "ears"),
    "amanda": KartLook((150, 60, 200), (250, 160, 40), (200, 120, 60), (250, 250, 250), "box", "circle", "spoiler", "ears"),
    "beastie": KartLook((200, 20, 20), (250, 250, 250), (210, 30, 30), (30, 30, 30), "wedge", "triangle", "spoiler", "horns"),
    "emule": KartLook((120, 120, 130), (230, 60, 30), (150, 140, 120), (250, 200, 40), "box", "cross", "stripe", "ears"),
    "gavroche": KartLook((50, 60, 160), (200, 40, 40), (230, 190, 150), (250, 250, 250), "box", "star", "stripe", "hat"),
    "hexley": KartLook((250, 120, 20), (40, 40, 40), (250, 140, 60), (40, 120, 220), "round", "ring", "spoiler", "crest"),
    "kiki": KartLook((250, 180, 210), (120, 60, 160), (250, 250, 250), (120, 60, 160), "round", "star", "stripe", "ears"),
    "konqi": KartLook((40, 130, 60), (250, 250, 250), (70, 170, 80), (200, 30, 30), "wedge", "bar", "spoiler", "horns"),
    "pidgin": KartLook((120, 80, 180), (250, 250, 250), (140, 110, 200), (250, 200, 40), "box", "diamond", "spoiler", "crest"),
    "puffy": KartLook((30, 110, 200), (250, 220, 40), (240, 220, 60), (250, 250, 250), "round", "cross", "spoiler", "none"),
    "suzanne": KartLook((160, 110, 70), (60, 200, 210), (200, 160, 120), (30, 30, 30), "box", "ring", "spoiler", "ears"),
    "wilber": KartLook((110, 100, 90), (250, 150, 40), (120, 110, 100), (240, 240, 240), "wedge", "circle", "stripe", "crest"),
    "xue": KartLook((230, 230, 240), (60, 160, 230), (250, 250, 250), (230, 60, 60), "round", "triangle", "stripe", "hat"),
    "sara_the_wizard": KartLook((55, 30, 120), (240, 200, 60), (240, 200, 160), (120, 220, 250), "wedge", "ring", "spoiler", "hat"),
}


@dataclass(frozen=True)
class TrackLook:
    sky_top: tuple[int, int, int]
    sky_horizon: tuple[int, int, int]
    hills: tuple[int, int, int]  # silhouette on the horizon
    ground: tuple[int, int, int]
    ground_alt: tuple[int, int, int]  # second ground tone for the texture
    texture: str  # "rows" (bands across), "checker", "furrows" (bands along) or "speckle"
    road: tuple[int, int, int]
    kerb: tuple[int, int, int]  # kerbs alternate this colour and white-ish
    props: tuple[str, ...]  # roadside props drawn along the track
    prop_colour: tuple[int, int, int]
    fog: float  # 0 = clear, 1 = thick


TRACKS: dict[str, TrackLook] = {
    "abyss": TrackLook((5, 5, 25), (40, 20, 70), (25, 15, 45), (45, 35, 60), (30, 25, 45), "speckle",
                       (85, 80, 95), (150, 60, 220), ("pillar", "crystal"), (120, 200, 230), 0.3),
    "black_forest": TrackLook((90, 130, 170), (170, 190, 190), (20, 60, 30), (40, 80, 35), (30, 65, 30), "speckle",
                              (95, 80, 65), (200, 40, 40), ("pine", "pine", "rock"), (20, 70, 35), 0.5),
    "cocoa_temple": TrackLook((60, 120, 60), (150, 190, 120), (40, 90, 40), (70, 120, 40), (55, 100, 35), "speckle",
                              (140, 110, 70), (220, 180, 60), ("palm", "pillar"), (150, 130, 90), 0.4),
    "cornfield_crossing": TrackLook((80, 150, 230), (200, 225, 245), (120, 150, 70), (200, 180, 70), (170, 150, 50),
                                    "furrows", (110, 105, 100), (230, 40, 40), ("corn", "corn", "house"), (220, 190, 60), 0.1),
    "fortmagma": TrackLook((60, 10, 10), (200, 60, 20), (70, 20, 15), (60, 30, 25), (230, 80, 10), "speckle",
                           (55, 50, 50), (250, 140, 20), ("lavarock", "pillar"), (90, 40, 30), 0.3),
    "hacienda": TrackLook((70, 140, 220), (240, 210, 160), (180, 120, 80), (200, 160, 110), (185, 145, 95), "rows",
                          (170, 120, 90), (40, 120, 200), ("cactus", "house"), (60, 140, 60), 0.1),
    "lighthouse": TrackLook((50, 130, 230), (180, 220, 250), (60, 110, 160), (40, 110, 190), (60, 140, 210), "rows",
                            (180, 170, 140), (240, 240, 240), ("lighthouse", "rock"), (230, 60, 50), 0.1),
    "minigolf": TrackLook((110, 180, 250), (220, 240, 250), (90, 170, 90), (60, 190, 70), (90, 210, 90), "checker",
                          (60, 150, 60), (250, 250, 250), ("flag", "ball"), (250, 250, 250), 0.0),
    "sandtrack": TrackLook((230, 170, 80), (250, 230, 170), (200, 150, 80), (225, 190, 120), (210, 170, 100), "rows",
                           (200, 160, 100), (160, 90, 40), ("pyramid", "palm"), (210, 170, 90), 0.3),
    "scotland": TrackLook((120, 140, 160), (190, 200, 205), (80, 110, 90), (70, 120, 60), (60, 105, 55), "speckle",
                          (120, 120, 115), (40, 60, 160), ("rock", "pine", "house"), (100, 100, 100), 0.6),
    "snowmountain": TrackLook((120, 160, 210), (230, 240, 250), (220, 230, 240), (240, 245, 250), (215, 225, 240),
                              "speckle", (170, 180, 195), (40, 90, 200), ("snowman", "pine"), (250, 250, 250), 0.5),
    "zengarden": TrackLook((200, 160, 190), (250, 225, 220), (150, 110, 130), (215, 210, 190), (195, 190, 170),
                           "furrows", (120, 100, 90), (200, 40, 60), ("lantern", "sakura"), (230, 150, 180), 0.2),
    "candela_city": TrackLook((20, 20, 50), (90, 60, 110), (45, 40, 70), (70, 70, 80), (58, 58, 70), "checker",
                              (48, 48, 56), (250, 200, 40), ("tower", "lamp"), (250, 220, 120), 0.2),
    "gran_paradiso_island": TrackLook((40, 150, 240), (190, 230, 250), (60, 150, 80), (230, 210, 150), (210, 190, 130),
                                      "rows", (150, 140, 120), (40, 160, 200), ("palm", "house"), (60, 160, 60), 0.1),
    "olivermath": TrackLook((30, 40, 60), (120, 160, 200), (70, 80, 100), (150, 150, 160), (120, 120, 135), "checker",
                            (90, 95, 110), (40, 220, 220), ("tower", "crystal"), (180, 200, 220), 0.0),
    "overworld": TrackLook((100, 170, 250), (210, 235, 250), (80, 160, 70), (90, 180, 70), (110, 195, 85), "rows",
                           (200, 180, 130), (250, 250, 250), ("flag", "pine"), (60, 130, 50), 0.0),
    "ravenbridge_mansion": TrackLook((40, 40, 60), (110, 100, 110), (30, 30, 40), (60, 70, 50), (50, 55, 40), "speckle",
                                     (100, 90, 85), (120, 30, 30), ("tower", "pine"), (50, 45, 55), 0.6),
    "snowtuxpeak": TrackLook((60, 110, 200), (210, 225, 245), (250, 250, 255), (235, 240, 250), (205, 215, 235),
                             "furrows", (140, 150, 170), (220, 40, 40), ("pine", "rock"), (40, 90, 60), 0.2),
    "tutorial": TrackLook((130, 190, 240), (230, 240, 250), (150, 170, 150), (170, 200, 150), (150, 185, 130), "checker",
                          (160, 160, 160), (250, 140, 20), ("ball", "flag"), (250, 140, 20), 0.0),
    "volcano_island": TrackLook((150, 80, 60), (240, 170, 110), (60, 40, 40), (70, 60, 55), (40, 120, 50), "speckle",
                                (110, 90, 80), (250, 90, 20), ("palm", "lavarock"), (60, 40, 35), 0.3),
    "xr591": TrackLook((10, 10, 20), (60, 70, 90), (90, 90, 100), (100, 100, 110), (80, 80, 90), "furrows",
                       (60, 60, 70), (250, 230, 40), ("pillar", "lamp"), (200, 200, 210), 0.1),
}

KART_CLASS = 1  # the class id of a kart in `detections`


def kart_rows(rows: list[list]) -> list[list]:
    """The kart rows of one view's detections (real recordings hold other classes too)."""
    return [r for r in rows if int(r[0]) == KART_CLASS]


def check_info(info: dict, where: str | Path) -> None:
    """Stop with one line unless an info file can be read: a known track, known kart names,
    and kart rows whose ids name one of its karts."""
    try:
        track, names, views = info["track"], info["karts"], info["detections"]
    except (KeyError, TypeError) as e:
        raise SystemExit(f"error: {where} is not a kart info file (no {e} key); it needs track, karts and detections") from None
    if track not in TRACKS:
        raise SystemExit(f"error: {where} is on track {track!r}, which the kit does not know; add it to TRACKS in "
                         f"worlds/kart.py (with a look), then remake the base")
    unknown = [n for n in names if n not in KARTS]
    if unknown:
        raise SystemExit(f"error: {where} has kart {unknown[0]!r}, which the kit does not know; add it to KARTS in "
                         f"worlds/kart.py (with a look), then remake the base")
    for v, rows in enumerate(views):
        for r in kart_rows(rows):
            if not (isinstance(r[1], int | float) and float(r[1]).is_integer() and 0 <= r[1] < len(names)):
                raise SystemExit(f"error: {where}, view {v}: kart row {r} names kart id {r[1]!r}, but the file lists "
                                 f"{len(names)} karts (ids 0 to {len(names) - 1}); fix or drop that row")


SPLIT_SEEDS = {"train": 1000, "valid": 2000, "train_demo": 3000, "pretrain": 4000}  # each known split has its own seed
DEFAULT_NUM_FRAMES = {"train": 2000, "valid": 200, "train_demo": 8, "pretrain": 10000}
OTHER_SPLIT_FRAMES = 200  # the default for a split of any other name

# ----------------------------------------------------------------------------------------
# Geometry. Boxes are in the real data's 600x400 coordinates; pictures are 150x100 JPEGs.
# ----------------------------------------------------------------------------------------

BOX_WIDTH, BOX_HEIGHT = 600, 400  # coordinate frame of `detections`
IMAGE_WIDTH, IMAGE_HEIGHT = 150, 100  # saved picture size
CANVAS_SCALE = 2  # draw at 300x200, then average down to 150x100 (anti-aliasing)
CANVAS_W, CANVAS_H = IMAGE_WIDTH * CANVAS_SCALE, IMAGE_HEIGHT * CANVAS_SCALE
TO_CANVAS = CANVAS_W / BOX_WIDTH  # box coordinates -> canvas pixels

FOCAL = 430.0  # focal length in box pixels (about 70 degrees across)
HORIZON = 150.0  # row of the horizon in box pixels
CAM_HEIGHT = 2.4  # metres above the road
CAM_BACK = 6.0  # metres behind the ego kart
NEAR, FAR = 0.9, 19.0  # karts are drawn between these depths; fog hides the rest
KART_W, KART_H = 1.2, 1.0  # metres
ROAD_HALF = 4.5  # metres
EGO_ANCHOR = (BOX_WIDTH / 2, HORIZON + FOCAL * (CAM_HEIGHT - KART_H / 2) / CAM_BACK)  # ego box centre


@dataclass
class Kart:
    kart_id: int
    s: float  # distance down the track, metres
    lateral: float  # offset from the road's centre line, metres (positive = right)
    speed: float  # metres per second


def _layout(rng: np.random.Generator, num_karts: int) -> list[Kart]:
    """A race pack: karts spread along the road, never overlapping each other."""
    base = rng.uniform(50, 900)
    karts: list[Kart] = []
    pack_length = rng.uniform(2.6, 4.5) * num_karts
    while len(karts) < num_karts:
        s = base + rng.uniform(0, pack_length)
        lateral = rng.uniform(-ROAD_HALF + 0.8, ROAD_HALF - 0.8)
        if all(abs(s - k.s) > 2.4 or abs(lateral - k.lateral) > 1.7 for k in karts):
            karts.append(Kart(len(karts), s, lateral, rng.uniform(14, 26)))
    return karts


def _project(x: float, z: float, height: float) -> tuple[float, float]:
    """Camera-frame point (x right, z forward, height above road) -> box pixel (u, v)."""
    return BOX_WIDTH / 2 + FOCAL * x / z, HORIZON + FOCAL * (CAM_HEIGHT - height) / z


def _kart_boxes(karts: list[Kart], ego: Kart, curve: float, sway: float) -> list[tuple[float, Kart, tuple]]:
    """(depth, kart, unclipped box) for every kart in front of the camera, far first."""
    out = []
    for k in karts:
        dz = k.s - ego.s
        z = dz + CAM_BACK
        if not NEAR < z < FAR:
            continue
        x = k.lateral - ego.lateral + 0.5 * curve * dz * dz + sway * z
        u0, v1 = _project(x - KART_W / 2, z, 0.0)
        u1, v0 = _project(x + KART_W / 2, z, KART_H)
        out.append((z, k, (u0, v0, u1, v1)))
    out.sort(key=lambda t: -t[0])
    return out


def _clip_box(box: tuple) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return max(x1, 0.0), max(y1, 0.0), min(x2, float(BOX_WIDTH)), min(y2, float(BOX_HEIGHT))


def _area(box: tuple) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def covered_fraction(box: tuple, nearer: list[tuple]) -> float:
    """Fraction of `box` hidden behind the union of `nearer` boxes (rasterised on a 1 px grid
    of box coordinates, so overlapping occluders are not counted twice)."""
    x1, y1, x2, y2 = (int(round(c)) for c in box)
    if x2 <= x1 or y2 <= y1:
        return 1.0
    mask = np.zeros((y2 - y1, x2 - x1), dtype=bool)
    for n in nearer:
        a, b = int(round(n[0])) - x1, int(round(n[1])) - y1
        c, d = int(round(n[2])) - x1, int(round(n[3])) - y1
        mask[max(b, 0):max(d, 0), max(a, 0):max(c, 0)] = True
    return float(mask.mean())


HIDDEN = 0.85  # a kart covered more than this is not detected (as in segmentation-made labels)


def _detections(boxes: list[tuple[float, Kart, tuple]]) -> list[list]:
    """Detection rows for one view, from the far-first list of projected boxes."""
    rows = []
    for i, (_, kart, box) in enumerate(boxes):
        clipped = _clip_box(box)
        if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
            continue
        nearer = [_clip_box(b) for _, _, b in boxes[i + 1:]]
        if covered_fraction(clipped, nearer) > HIDDEN:
            continue
        rows.append([1, kart.kart_id, *(round(c, 2) for c in clipped)])
    return rows


def _view_is_clear(rows: list[list], ego_id: int, boxes) -> bool:
    """The ego must be found from the boxes alone, and be seen whole."""
    if not rows:
        return False
    nearest = min(rows, key=lambda r: math.dist(((r[2] + r[4]) / 2, (r[3] + r[5]) / 2), EGO_ANCHOR))
    if nearest[1] != ego_id:
        return False
    ego_box = next(r for r in rows if r[1] == ego_id)[2:]
    nearer = [_clip_box(b) for z, _, b in boxes if z < CAM_BACK - 1e-6]
    return covered_fraction(ego_box, nearer) < 0.2


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------

_ROWS = np.arange(CANVAS_H, dtype=np.float32)[:, None] + 0.5  # canvas rows, (H, 1)
_COLS = np.arange(CANVAS_W, dtype=np.float32)[None, :] + 0.5  # canvas cols, (1, W)


def _ground(track: TrackLook, ego: Kart, curve: float, sway: float, hills_phase: float) -> np.ndarray:
    """Sky, hills, ground texture, road and kerbs as a float (H, W, 3) canvas."""
    v = _ROWS / TO_CANVAS  # (H, 1) box rows
    u = _COLS / TO_CANVAS  # (1, W) box cols
    img = np.empty((CANVAS_H, CANVAS_W, 3), dtype=np.float32)

    # Sky: a vertical gradient, then hills as a smooth silhouette above the horizon.
    t = np.clip(v / HORIZON, 0, 1)  # (H, 1)
    sky = np.asarray(track.sky_top, np.float32) * (1 - t[..., None]) + np.asarray(track.sky_horizon, np.float32) * t[..., None]
    img[:] = sky
    phase = hills_phase - curve * 900.0  # the skyline turns with the road
    ridge = HORIZON - 18 - 14 * np.sin(u / 61.0 + phase) - 8 * np.sin(u / 23.0 + 2.3 * phase)  # (1, W)
    hills = (v >= ridge) & (v < HORIZON)
    img[hills] = track.hills

    # Ground: each row below the horizon is one depth z; each pixel one lateral x.
    below = v[:, 0] > HORIZON + 0.5
    vg = v[below]  # (Hg, 1)
    z = FOCAL * CAM_HEIGHT / (vg - HORIZON)  # (Hg, 1) depth of the road at this row
    x = (u - BOX_WIDTH / 2) * z / FOCAL  # (Hg, W) lateral position in the camera frame
    dz = z - CAM_BACK
    centre = 0.5 * curve * dz * dz + sway * z - ego.lateral  # road centre line in camera frame
    off = np.abs(x - centre)  # distance from the road's centre line
    s_abs = ego.s + dz  # distance down the track at this row

    # Each ground pixel gets a palette index; one lookup turns indices into colours.
    if track.texture == "rows":
        pick = np.broadcast_to(np.floor(s_abs / 3.0) % 2, x.shape)
    elif track.texture == "checker":
        pick = (np.floor(s_abs / 2.5) + np.floor((x - centre) / 2.5)) % 2
    elif track.texture == "furrows":
        pick = np.floor((x - centre) / 1.2) % 2
    else:  # speckle: a fixed pseudo-random pattern tied to the ground, not to the screen
        a, b = np.floor(s_abs * 1.7), np.floor((x - centre) * 1.7)
        pick = np.floor(np.abs(np.sin(a * 12.9898 + b * 78.233)) * 43758.5453) % 3 == 0
    idx = pick.astype(np.uint8)  # 0, 1: the two ground tones
    idx[off < ROAD_HALF] = 2  # road
    kerb = (off >= ROAD_HALF) & (off < ROAD_HALF + 0.6)
    idx[kerb] = 3 + np.broadcast_to(np.floor(s_abs / 1.5) % 2, x.shape)[kerb].astype(np.uint8)
    idx[(off < 0.12) & (np.floor(s_abs / 2.0) % 2 == 0)] = 5  # dashed centre line
    palette = np.asarray([track.ground, track.ground_alt, track.road, track.kerb, (235, 235, 235), (220, 220, 220)], np.float32)
    out = palette[idx]  # (Hg, W, 3)

    fog = np.clip(track.fog * (z / 40.0), 0, 0.85)[..., None]  # far ground fades into the haze
    out = out * (1 - fog) + np.asarray(track.sky_horizon, np.float32) * fog
    img[below] = out
    return img


def _poly(draw: ImageDraw.ImageDraw, pts, fill) -> None:
    draw.polygon([(px * TO_CANVAS, py * TO_CANVAS) for px, py in pts], fill=fill)


def _ellipse(draw: ImageDraw.ImageDraw, box, fill) -> None:
    x1, y1, x2, y2 = (c * TO_CANVAS for c in box)
    if x2 > x1 and y2 > y1:
        draw.ellipse((x1, y1, x2, y2), fill=fill)


def _rect(draw: ImageDraw.ImageDraw, box, fill) -> None:
    x1, y1, x2, y2 = (c * TO_CANVAS for c in box)
    if x2 > x1 and y2 > y1:
        draw.rectangle((x1, y1, x2, y2), fill=fill)


def _draw_kart(draw: ImageDraw.ImageDraw, look: KartLook, box, shade: float) -> None:
    """A kart seen from behind, filling `box` (box pixels): wheels, body, trim, emblem, driver."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1

    def c(col):
        return tuple(int(min(255, ch * shade)) for ch in col)

    body_top = y1 + 0.42 * h
    # rear wheels
    _rect(draw, (x1, y2 - 0.36 * h, x1 + 0.22 * w, y2), c((25, 25, 25)))
    _rect(draw, (x2 - 0.22 * w, y2 - 0.36 * h, x2, y2), c((25, 25, 25)))
    # driver's head (behind the body's top edge) and its decoration
    hx, hr = x1 + 0.5 * w, 0.2 * w
    hy = y1 + 0.2 * h
    if look.ears == "ears":
        _ellipse(draw, (hx - hr * 1.2, hy - hr * 1.3, hx - hr * 0.3, hy - hr * 0.2), c(look.head))
        _ellipse(draw, (hx + hr * 0.3, hy - hr * 1.3, hx + hr * 1.2, hy - hr * 0.2), c(look.head))
    elif look.ears == "horns":
        _poly(draw, [(hx - hr, hy - hr * 0.3), (hx - hr * 1.4, hy - hr * 1.5), (hx - hr * 0.4, hy - hr * 0.8)], c((235, 225, 200)))
        _poly(draw, [(hx + hr, hy - hr * 0.3), (hx + hr * 1.4, hy - hr * 1.5), (hx + hr * 0.4, hy - hr * 0.8)], c((235, 225, 200)))
    elif look.ears == "hat":
        _rect(draw, (hx - hr * 1.3, hy - hr * 0.9, hx + hr * 1.3, hy - hr * 0.6), c(look.trim))
        _rect(draw, (hx - hr * 0.7, hy - hr * 1.7, hx + hr * 0.7, hy - hr * 0.6), c(look.trim))
    elif look.ears == "crest":
        _poly(draw, [(hx - hr * 0.4, hy - hr * 0.8), (hx, hy - hr * 1.9), (hx + hr * 0.4, hy - hr * 0.8)], c(look.emblem))
    _ellipse(draw, (hx - hr, hy - hr, hx + hr, hy + hr), c(look.head))
    # body
    if look.shape == "box":
        _rect(draw, (x1 + 0.06 * w, body_top, x2 - 0.06 * w, y2 - 0.12 * h), c(look.body))
    elif look.shape == "wedge":
        _poly(draw, [(x1 + 0.03 * w, y2 - 0.12 * h), (x2 - 0.03 * w, y2 - 0.12 * h),
                     (x2 - 0.25 * w, body_top), (x1 + 0.25 * w, body_top)], c(look.body))
    else:
        _ellipse(draw, (x1 + 0.04 * w, body_top - 0.05 * h, x2 - 0.04 * w, y2 - 0.05 * h), c(look.body))
    # trim: a spoiler across the top or a stripe down the middle
    if look.trim_style == "spoiler":
        _rect(draw, (x1, body_top - 0.1 * h, x2, body_top + 0.02 * h), c(look.trim))
    else:
        _rect(draw, (hx - 0.09 * w, body_top, hx + 0.09 * w, y2 - 0.12 * h), c(look.trim))
    # emblem in the middle of the back
    ex, ey, er = hx, y1 + 0.68 * h, 0.13 * w
    col = c(look.emblem)
    if look.mark == "circle":
        _ellipse(draw, (ex - er, ey - er, ex + er, ey + er), col)
    elif look.mark == "ring":
        _ellipse(draw, (ex - er, ey - er, ex + er, ey + er), col)
        _ellipse(draw, (ex - er * 0.5, ey - er * 0.5, ex + er * 0.5, ey + er * 0.5), c(look.body))
    elif look.mark == "triangle":
        _poly(draw, [(ex - er, ey + er), (ex + er, ey + er), (ex, ey - er)], col)
    elif look.mark == "diamond":
        _poly(draw, [(ex - er, ey), (ex, ey - er), (ex + er, ey), (ex, ey + er)], col)
    elif look.mark == "square":
        _rect(draw, (ex - er * 0.8, ey - er * 0.8, ex + er * 0.8, ey + er * 0.8), col)
    elif look.mark == "cross":
        _rect(draw, (ex - er, ey - er * 0.3, ex + er, ey + er * 0.3), col)
        _rect(draw, (ex - er * 0.3, ey - er, ex + er * 0.3, ey + er), col)
    elif look.mark == "bar":
        _rect(draw, (ex - er * 1.4, ey - er * 0.35, ex + er * 1.4, ey + er * 0.35), col)
    else:  # star
        pts = []
        for i in range(10):
            r = er * (1.1 if i % 2 == 0 else 0.45)
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((ex + r * math.cos(a), ey + r * math.sin(a)))
        _poly(draw, pts, col)


def _draw_prop(draw: ImageDraw.ImageDraw, kind: str, colour, u: float, v: float, scale: float) -> None:
    """A roadside prop standing on the ground at box pixel (u, v); `scale` is pixels per metre."""
    s = scale
    if kind == "pine":
        _rect(draw, (u - 0.15 * s, v - 0.8 * s, u + 0.15 * s, v), (80, 50, 30))
        _poly(draw, [(u - 1.1 * s, v - 0.7 * s), (u + 1.1 * s, v - 0.7 * s), (u, v - 4.0 * s)], colour)
    elif kind == "palm":
        _rect(draw, (u - 0.15 * s, v - 3.2 * s, u + 0.15 * s, v), (130, 90, 50))
        _ellipse(draw, (u - 1.3 * s, v - 3.8 * s, u + 1.3 * s, v - 2.9 * s), (50, 140, 50))
    elif kind == "sakura":
        _rect(draw, (u - 0.15 * s, v - 2.0 * s, u + 0.15 * s, v), (90, 60, 50))
        _ellipse(draw, (u - 1.4 * s, v - 3.6 * s, u + 1.4 * s, v - 1.6 * s), colour)
    elif kind == "rock":
        _ellipse(draw, (u - 1.0 * s, v - 1.0 * s, u + 1.0 * s, v + 0.1 * s), colour)
    elif kind == "lavarock":
        _ellipse(draw, (u - 1.0 * s, v - 1.2 * s, u + 1.0 * s, v + 0.1 * s), colour)
        _ellipse(draw, (u - 0.3 * s, v - 0.8 * s, u + 0.3 * s, v - 0.3 * s), (250, 120, 20))
    elif kind == "pillar":
        _rect(draw, (u - 0.4 * s, v - 3.5 * s, u + 0.4 * s, v), colour)
        _rect(draw, (u - 0.6 * s, v - 3.8 * s, u + 0.6 * s, v - 3.4 * s), colour)
    elif kind == "crystal":
        _poly(draw, [(u - 0.5 * s, v), (u + 0.5 * s, v), (u, v - 2.5 * s)], colour)
    elif kind == "corn":
        _rect(draw, (u - 0.1 * s, v - 2.4 * s, u + 0.1 * s, v), (100, 150, 50))
        _ellipse(draw, (u - 0.3 * s, v - 2.6 * s, u + 0.3 * s, v - 1.6 * s), colour)
    elif kind == "house":
        _rect(draw, (u - 1.5 * s, v - 2.0 * s, u + 1.5 * s, v), (220, 200, 170))
        _poly(draw, [(u - 1.8 * s, v - 2.0 * s), (u + 1.8 * s, v - 2.0 * s), (u, v - 3.3 * s)], (170, 60, 50))
    elif kind == "cactus":
        _rect(draw, (u - 0.25 * s, v - 2.4 * s, u + 0.25 * s, v), colour)
        _rect(draw, (u - 0.8 * s, v - 1.6 * s, u - 0.25 * s, v - 1.3 * s), colour)
        _rect(draw, (u - 0.8 * s, v - 2.0 * s, u - 0.55 * s, v - 1.3 * s), colour)
    elif kind == "lighthouse":
        _poly(draw, [(u - 0.9 * s, v), (u + 0.9 * s, v), (u + 0.5 * s, v - 6 * s), (u - 0.5 * s, v - 6 * s)], (245, 245, 245))
        _rect(draw, (u - 0.75 * s, v - 2.5 * s, u + 0.75 * s, v - 1.7 * s), colour)
        _rect(draw, (u - 0.6 * s, v - 5.0 * s, u + 0.6 * s, v - 4.2 * s), colour)
    elif kind == "flag":
        _rect(draw, (u - 0.05 * s, v - 2.2 * s, u + 0.05 * s, v), (240, 240, 240))
        _poly(draw, [(u, v - 2.2 * s), (u + 0.9 * s, v - 1.9 * s), (u, v - 1.6 * s)], (230, 40, 40))
    elif kind == "ball":
        _ellipse(draw, (u - 0.3 * s, v - 0.6 * s, u + 0.3 * s, v), colour)
    elif kind == "pyramid":
        _poly(draw, [(u - 3.0 * s, v), (u + 3.0 * s, v), (u, v - 3.5 * s)], colour)
    elif kind == "snowman":
        _ellipse(draw, (u - 0.6 * s, v - 1.2 * s, u + 0.6 * s, v), colour)
        _ellipse(draw, (u - 0.4 * s, v - 1.9 * s, u + 0.4 * s, v - 1.1 * s), colour)
    elif kind == "tower":
        _rect(draw, (u - 1.2 * s, v - 7.0 * s, u + 1.2 * s, v), colour)
        for row in range(1, 6):  # lit windows
            _rect(draw, (u - 0.7 * s, v - (row * 1.2 + 0.3) * s, u + 0.7 * s, v - row * 1.2 * s), (250, 240, 170))
    elif kind == "lamp":
        _rect(draw, (u - 0.07 * s, v - 3.0 * s, u + 0.07 * s, v), (70, 70, 75))
        _ellipse(draw, (u - 0.35 * s, v - 3.4 * s, u + 0.35 * s, v - 2.8 * s), colour)
    elif kind == "lantern":
        _rect(draw, (u - 0.1 * s, v - 1.2 * s, u + 0.1 * s, v), (90, 90, 90))
        _rect(draw, (u - 0.35 * s, v - 1.8 * s, u + 0.35 * s, v - 1.2 * s), colour)
    else:
        raise ValueError(f"unknown prop {kind!r}")


def _props(track_name: str, track: TrackLook, ego: Kart, curve: float, sway: float):
    """(depth, kind, u, v, scale) for roadside props in view; placed by distance down the track
    so that every view of a frame sees the same props."""
    spacing = 7.0
    track_key = zlib.crc32(track_name.encode())
    first = math.floor((ego.s - CAM_BACK + NEAR) / spacing)
    out = []
    for k in range(first, first + int(45 / spacing) + 1):
        h = np.random.default_rng([track_key, k + 100000]).random(4)
        for side in (-1, 1):
            if h[2 if side < 0 else 3] < 0.35:
                continue
            s = k * spacing + h[0] * spacing
            dz = s - ego.s
            z = dz + CAM_BACK
            if not NEAR < z < 45:
                continue
            lateral = side * (ROAD_HALF + 1.5 + 5 * h[1 if side < 0 else 0])
            x = lateral - ego.lateral + 0.5 * curve * dz * dz + sway * z
            u, v = _project(x, z, 0.0)
            kind = track.props[(k + (side > 0)) % len(track.props)]
            out.append((z, kind, u, v, FOCAL / z))
    return out


def render_view(info: dict, view: int, rng: np.random.Generator, scene: dict) -> tuple[Image.Image, list[list]]:
    """Draw one view of a frame; returns the 150x100 picture and its detection rows."""
    track = TRACKS[info["track"]]
    karts: list[Kart] = scene["karts"]
    ego = karts[scene["ego"][view]]
    curve, sway = scene["curve"], scene["sway"][view]
    canvas = _ground(track, ego, curve, sway, scene["hills_phase"])
    img = Image.fromarray(canvas.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)

    boxes = _kart_boxes(karts, ego, curve, sway)
    items = [(z, "prop", p) for z, *p in _props(info["track"], track, ego, curve, sway)]
    items += [(z, "kart", (k, box)) for z, k, box in boxes]
    items.sort(key=lambda t: -t[0])  # painter's algorithm: far first
    names = info["karts"]
    for z, what, payload in items:
        shade = 1.0 - 0.5 * track.fog * min(z / FAR, 1.0)
        if what == "prop":
            kind, u, v, scale = payload
            _draw_prop(draw, kind, tuple(int(ch * shade) for ch in track.prop_colour), u, v, scale)
        else:
            kart, box = payload
            _draw_kart(draw, KARTS[names[kart.kart_id]], box, shade)

    # Lighting and sensor noise, then down to 150x100 and JPEG.
    pic = np.asarray(img.reduce(CANVAS_SCALE), dtype=np.float32)
    pic = pic * scene["light"] + scene["tint"]
    pic += rng.standard_normal(pic.shape, dtype=np.float32) * scene["noise"]
    out = Image.fromarray(np.clip(pic, 0, 255).astype(np.uint8), "RGB")
    return out, _detections(boxes)


def make_frame(seed: int, frame: int, num_views: int) -> tuple[dict, list[bytes]]:
    """One moment of a race: its info dict and the JPEG bytes of each view.

    Everything is drawn from a generator seeded by (seed, frame), so a frame's bytes depend on
    nothing else (not on the number of worker processes)."""
    rng = np.random.default_rng([seed, frame])
    names = list(KARTS)
    num_karts = int(rng.integers(num_views, min(num_views + 5, len(names)) + 1)) if num_views < len(names) else len(names)
    if num_views > len(names):
        raise ValueError(f"num_views={num_views} is more than the {len(names)} karts in the roster")
    track_name = list(TRACKS)[int(rng.integers(len(TRACKS)))]
    race = [names[i] for i in rng.permutation(len(names))[:num_karts]]

    for _attempt in range(500):
        karts = _layout(rng, num_karts)
        scene = {
            "karts": karts,
            "ego": list(range(num_views)),
            "curve": float(rng.uniform(-0.03, 0.03)),
            "sway": [float(rng.uniform(-0.03, 0.03)) for _ in range(num_views)],
            "hills_phase": float(rng.uniform(0, 2 * math.pi)),
        }
        views = [_kart_boxes(karts, karts[v], scene["curve"], scene["sway"][v]) for v in range(num_views)]
        if all(_view_is_clear(_detections(b), v, b) for v, b in enumerate(views)):
            break
    else:  # pragma: no cover - the layout rules make this practically impossible
        raise RuntimeError(f"could not lay out frame {frame} of seed {seed}")

    info = {
        "track": track_name,
        "karts": race,
        "detections": [],
        "distance_down_track": [round(k.s, 3) for k in karts],
        "velocity": [[0.0, 0.0, round(k.speed, 3)] for k in karts],
        "ego": scene["ego"],
    }
    jpegs = []
    for v in range(num_views):
        scene["light"] = float(rng.uniform(0.7, 1.2))
        scene["tint"] = rng.uniform(-12, 12, 3).astype(np.float32)
        scene["noise"] = float(rng.uniform(1.5, 6.0))
        img, rows = render_view(info, v, rng, scene)
        info["detections"].append(rows)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(80, 96)))
        jpegs.append(buf.getvalue())
    return info, jpegs


def _write_frame(job: tuple[int, int, int, str]) -> int:
    seed, frame, num_views, out_dir = job
    info, jpegs = make_frame(seed, frame, num_views)
    out = Path(out_dir)
    for v, data in enumerate(jpegs):
        (out / f"{frame:05x}_{v:02d}_im.jpg").write_bytes(data)
    (out / f"{frame:05x}_info.json").write_text(json.dumps(info))
    return len(jpegs)


def split_seed(split: str) -> int:
    """The split's own seed: fixed for the known splits, derived from the name otherwise."""
    return SPLIT_SEEDS.get(split, zlib.crc32(split.encode()) % 1_000_000 + 10_000)


def generate(
    split: str = "train",
    num_frames: int | None = None,
    seed: int | None = None,
    data_dir: str = "data",
    num_views: int = 10,
    workers: int | None = None,
    overwrite: bool = False,
) -> None:
    """Render a split of the kart world into DATA_DIR/SPLIT.

    Args:
        split: split name; its files go to DATA_DIR/SPLIT.
        num_frames: race moments to render (default: {frames}).
        seed: world seed (default: the split's own seed, see SPLIT_SEEDS).
        data_dir: root folder of the data.
        num_views: views per frame, one per followed kart (the real recordings have 10).
        workers: processes to render with (default: all cores).
        overwrite: replace a split that already has frames.
    """
    split, data_dir = check_split_name(str(split)), str(data_dir)
    if num_frames is None:
        num_frames = DEFAULT_NUM_FRAMES.get(split, OTHER_SPLIT_FRAMES)
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise SystemExit(f"error: --num_frames must be a positive integer, got {num_frames!r}")
    if not isinstance(num_views, int) or not 1 <= num_views <= len(KARTS):
        raise SystemExit(f"error: --num_views must be an integer from 1 to {len(KARTS)}, got {num_views!r}")
    if seed is None:
        seed = split_seed(split)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SystemExit(f"error: --seed must be a non-negative integer, got {seed!r}")
    out = Path(data_dir) / split
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: cannot create {out} ({e.strerror}); pass a writable --data_dir") from None
    if not os.access(out, os.W_OK):
        raise SystemExit(f"error: {out} is not writable; pass a writable --data_dir")
    if any(out.glob("*_info.json")) and not overwrite:
        raise SystemExit(f"error: {out} already holds frames; pass --overwrite to replace them, or pick another --split")
    for old in list(out.glob("*_info.json")) + list(out.glob("*_im.jpg")):
        old.unlink()

    workers = workers or os.cpu_count() or 1
    jobs = [(seed, f, num_views, str(out)) for f in range(num_frames)]
    bar = tqdm(total=num_frames * num_views, desc=f"kart world {split}", unit="view")
    if workers == 1:
        for job in jobs:
            bar.update(_write_frame(job))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for n in pool.imap_unordered(_write_frame, jobs, chunksize=4):
                bar.update(n)
    bar.close()
    print(f"wrote {num_frames} frames x {num_views} views to {out} (seed {seed})")



# The help's defaults, from the one table above (each written as "N for SPLIT").
generate.__doc__ = generate.__doc__.replace("{frames}", ", ".join(
    [f"{n} for {split}" for split, n in DEFAULT_NUM_FRAMES.items()] + [f"else {OTHER_SPLIT_FRAMES}"]))

def draw_boxes(image: Image.Image, rows: list[list], names: list[str], ego_id: int | None = None, scale: int = 4) -> Image.Image:
    """The picture enlarged `scale` times, with its boxes and kart names (the ego in red)."""
    big = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(big)
    k = big.width / BOX_WIDTH
    for _, kart_id, x1, y1, x2, y2 in kart_rows(rows):
        kart_id = int(kart_id)
        colour = (255, 40, 40) if kart_id == ego_id else (40, 255, 80)
        draw.rectangle((x1 * k, y1 * k, x2 * k, y2 * k), outline=colour, width=2)
        label = names[kart_id] + (" (ego)" if kart_id == ego_id else "")
        draw.text((x1 * k + 2, max(y1 * k - 11, 0)), label, fill=colour)
    return big


def gallery(split: str = "train", data_dir: str = "data", num_frames: int = 4, num_views: int = 4, output: str | None = None) -> None:
    """Write one PNG contact sheet of frames with their boxes and names.

    Args:
        split: split to draw from (generated first if it is missing).
        data_dir: root folder of the data.
        num_frames: frames to show, one per row.
        num_views: views to show per frame.
        output: PNG path (default: DATA_DIR/kart_gallery_SPLIT.png).
    """
    split = check_split_name(str(split))
    folder = Path(str(data_dir)) / split
    infos = sorted(folder.glob("*_info.json"))
    if not infos:
        generate(split=split, data_dir=str(data_dir))
        infos = sorted(folder.glob("*_info.json"))
    scale = 3
    cell_w, cell_h = IMAGE_WIDTH * scale, IMAGE_HEIGHT * scale + 14
    sheet = Image.new("RGB", (cell_w * num_views, cell_h * min(num_frames, len(infos))), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for row, path in enumerate(infos[:num_frames]):
        info = json.loads(path.read_text())
        check_info(info, path)
        frame = path.name.split("_")[0]
        for v in range(min(num_views, len(info["detections"]))):
            picture = folder / f"{frame}_{v:02d}_im.jpg"
            if not picture.is_file():
                raise SystemExit(f"error: {picture} is missing; copy the split's pictures beside its info files")
            img = Image.open(picture).convert("RGB")
            ego = find_ego(info["detections"][v])
            sheet.paste(draw_boxes(img, info["detections"][v], info["karts"], ego, scale), (v * cell_w, row * cell_h + 14))
            draw.text((v * cell_w + 3, row * cell_h + 1), f"{frame} view {v} - {info['track']}", fill=(230, 230, 230))
    out = Path(output) if output else Path(str(data_dir)) / f"kart_gallery_{split}.png"
    sheet.save(out)
    print(f"wrote {out}")


def find_ego(rows: list[list]) -> int | None:
    """The ego's kart id, from the boxes alone: the box whose centre is nearest to where the
    camera puts the followed kart (low in the middle of the picture)."""
    rows = kart_rows(rows)
    if not rows:
        return None
    best = min(rows, key=lambda r: math.dist(((r[2] + r[4]) / 2, (r[3] + r[5]) / 2), EGO_ANCHOR))
    return int(best[1])


COMMANDS = {"generate": generate, "gallery": gallery}
