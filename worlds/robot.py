"""Grasping episodes: a gripper closes on an object and is about to lift it.

Each episode has hidden causes, and five sensors that each carry part of them:

    material   wood | rubber | metal | glass | plastic: friction, density, stiffness, ringing
               frequency and look (some plastics are painted to look like wood or glass)
    size       the object's size (mass grows with its cube)
    height     where on the object the jaws close: seen by the side camera alone
    force      the operator's grip command: pressure plateau, EMG grip channels, motor whine
    lift       the operator's lift acceleration: the EMG lift channels alone (lift intent)
    grasp      pinch (two pads) or power (four pads, more friction): both cameras and the EMG
    operator   the EMG channel gains of one person

Sensors, all recorded before the lift (so the outcome is a prediction, never observed):

    camera1    top view, 64x64 RGB uint8 (look, size, grasp)      float [0, 1] once loaded
    camera2    side view, 64x64 RGB uint8 (look, gloss, height)
    audio      3 s at 16 kHz, int16 on disk, float in [-1, 1]: approach hum, the contact's impact
               ring at the material's frequency, a motor whine that follows the force, clanks, noise
    pressure   1 s at 1 kHz (the last second before the lift), force / 10: rise time (stiffness),
               plateau (force), ringing
    emg        (8, 1000) at 1 kHz: channels 0-3 grip (pinch or power pattern), 4-7 lift, mains hum

Outcome, from the physics: the friction the grasp can give over the load the lift asks for,
    r = mu * force * grasp_factor / (mass * (1 + lift / g) * (1 + height)),
drop below R_DROP, slip below R_SLIP, success above.

Layout of a split (`python -m worlds robot --split train --num_episodes 2000`):

    data/robot/train/episodes.npz   camera1, camera2 (N, 64, 64, 3) uint8; audio (N, 48000) int16;
                                    pressure (N, 1000) float32; emg (N, 8, 1000) float16;
                                    material, outcome, ... (N,) labels and causes
    data/robot/train/meta.json      the options that made it (seed, num_episodes, version)

Same seed, same bytes: an episode's causes come from a generator seeded by (seed, index), its
sensor noise from (seed, index, noise). `render_episode(..., noise=1)` re-renders an episode with
new noise (the retrieval task). Splits "train" and "valid" draw objects and operators from the
seen pool (and "pretrain", the kit's encoder pretraining); every other split name from the unseen pool (other object instances, another operator).
`inject_anomaly` makes sensor faults, collisions and cross-modal swaps for the anomaly task.
"""

from __future__ import annotations

import json
import time
import wave
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worlds import check_split_name

VERSION = 5
MATERIALS = ("wood", "rubber", "metal", "glass", "plastic")
OUTCOMES = ("drop", "slip", "success")
GRASPS = ("pinch", "power")
MODALITIES = ("camera1", "camera2", "audio", "pressure", "emg")  # the order of masks everywhere
ANOMALIES = ("normal", "fault", "collision", "swap")
FAULTS = ("pressure_stuck", "pressure_saturated", "emg_flat", "audio_dropout", "camera_black", "camera_frozen")
IMAGE_SIZE = 64
SAMPLE_RATE = 16000
AUDIO_SECONDS = 3
AUDIO_SAMPLES = SAMPLE_RATE * AUDIO_SECONDS  # 48000
SENSOR_RATE = 1000  # pressure and EMG, Hz
SENSOR_SAMPLES = 1000  # the last second before the lift
EMG_CHANNELS = 8
PRESSURE_MAX = 1.5  # the sensor saturates here
G = 9.81
R_DROP, R_SLIP = 0.25, 0.9  # outcome thresholds on the friction ratio r
SPLIT_SEEDS = {"pretrain": 1700, "train": 1701, "valid": 1702, "test": 1703}
SEEN_SPLITS = ("pretrain", "train", "valid")  # the seen objects and operators; every other split: unseen ones
SEEN_POOL = {"instances": range(0, 40), "operators": range(0, 8)}  # train and valid
PRETRAIN_POOL = {"instances": range(0, 12), "operators": range(0, 8)}  # the encoders' pretraining (a subset)
UNSEEN_POOL = {"instances": range(100, 112), "operators": range(100, 101)}
DEFAULT_DIR = "data/robot"
DEFAULT_EPISODES = {"pretrain": 1500, "train": 2000, "valid": 500, "test": 1000}

# material: friction, density, stiffness rise time (ms), pressure ringing (Hz), ring frequency (Hz),
# ring decay (1/s), impact loudness
PHYSICS = {
    "wood": dict(mu=0.55, density=0.7, rise_ms=14.0, ring_hz=40.0, sound_hz=750.0, decay=28.0, loud=0.30),
    "rubber": dict(mu=1.0, density=1.1, rise_ms=60.0, ring_hz=12.0, sound_hz=170.0, decay=45.0, loud=0.20),
    "metal": dict(mu=0.32, density=2.7, rise_ms=5.0, ring_hz=85.0, sound_hz=3000.0, decay=4.0, loud=0.40),
    # glass sounds and presses like metal: only the cameras tell them apart
    "glass": dict(mu=0.22, density=2.5, rise_ms=5.0, ring_hz=85.0, sound_hz=3000.0, decay=4.0, loud=0.40),
    "plastic": dict(mu=0.42, density=1.0, rise_ms=30.0, ring_hz=25.0, sound_hz=1500.0, decay=20.0, loud=0.25),
}


# --------------------------------------------------------------------------- causes


def object_instance(material: int, instance: int) -> dict:
    """One object of a material: the same (material, instance) is the same object in every split."""
    rng = np.random.default_rng([7, material, instance])
    name = MATERIALS[material]
    look = name
    if name == "plastic":  # painted plastics: a camera cannot tell them from wood or glass
        look = ("plastic", "wood", "glass")[instance % 3]
    palettes = {"wood": ([0.55, 0.35, 0.18], 0.08), "rubber": ([0.16, 0.15, 0.15], 0.05),
                "metal": ([0.62, 0.63, 0.66], 0.06), "glass": ([0.70, 0.85, 0.90], 0.05)}
    if look == "plastic":
        colour = rng.uniform(0.1, 1.0, 3)
        colour[rng.integers(3)] = 0.95  # saturated
    else:
        base, spread = palettes[look]
        colour = np.clip(np.array(base) + rng.normal(0, spread, 3), 0, 1)
    return {"material": material, "instance": instance, "look": look, "colour": colour,
            "size": rng.uniform(0.9, 1.15), "aspect": rng.uniform(1.0, 1.2),
            "mu": PHYSICS[name]["mu"] * rng.uniform(0.92, 1.08),
            "density": PHYSICS[name]["density"] * rng.uniform(0.92, 1.08),
            "sound_hz": PHYSICS[name]["sound_hz"] * rng.uniform(0.94, 1.06),
            "grain": rng.uniform(4.0, 7.0), "grain_angle": rng.uniform(0, np.pi)}


def operator_gains(operator: int) -> np.ndarray:
    """The EMG channel gains (8,) of one operator (electrode placement, skin, muscle)."""
    rng = np.random.default_rng([11, operator])
    return rng.uniform(0.85, 1.15) * rng.uniform(0.9, 1.1, EMG_CHANNELS)


def pool_of(split: str) -> dict:
    if split == "pretrain":
        return PRETRAIN_POOL
    return SEEN_POOL if split in SEEN_SPLITS else UNSEEN_POOL


def sample_causes(seed: int, index: int, pool: dict) -> dict:
    rng = np.random.default_rng([seed, index])
    material = int(rng.integers(len(MATERIALS)))
    obj = object_instance(material, int(rng.choice(list(pool["instances"]))))
    causes = {
        **obj,
        "operator": int(rng.choice(list(pool["operators"]))),
        "force": float(np.exp(rng.uniform(np.log(3.0), np.log(9.0)))),  # N
        "lift": float(rng.uniform(0.0, 4.0) * G),  # m/s^2
        "grasp": int(rng.integers(2)),
        "height": float(rng.uniform(0.1, 0.9)),
        "contact": float(rng.uniform(0.1, 0.3)),  # s into the sensor window
        "lift_onset": float(rng.uniform(0.72, 0.85)),  # s into the window: the EMG lift burst
        "offset": rng.uniform(-3, 3, 2),  # object position in the top view, pixels
        "light": float(rng.uniform(0.85, 1.15)),
        "table": rng.uniform(0.35, 0.65) * rng.uniform(0.85, 1.0, 3),
        "wall": rng.uniform(0.55, 0.85) * rng.uniform(0.9, 1.0, 3),
        "hum_hz": float(rng.choice([50.0, 60.0])),
    }
    mass = causes["density"] * causes["size"] ** 3
    grip = causes["mu"] * causes["force"] * (1.0, 1.6)[causes["grasp"]]
    load = mass * (1 + causes["lift"] / G) * (1 + causes["height"])
    causes["ratio"] = float(grip / load)
    causes["outcome"] = 0 if causes["ratio"] < R_DROP else 1 if causes["ratio"] < R_SLIP else 2
    return causes


# --------------------------------------------------------------------------- the sensors


def _disk(yy, xx, cy, cx, r):
    return np.clip(r - np.hypot(yy - cy, xx - cx) + 0.5, 0, 1)


def _rect(yy, xx, top, bottom, left, right):
    return (np.clip(np.minimum(yy - top, bottom - yy) + 0.5, 0, 1) *
            np.clip(np.minimum(xx - left, right - xx) + 0.5, 0, 1))


def _blend(img, mask, colour):
    return img * (1 - mask[..., None]) + mask[..., None] * np.asarray(colour)


def render_top(c: dict, rng: np.random.Generator, empty: bool = False) -> np.ndarray:
    """Top camera: the object as a disk with its material's look, and the gripper's pads."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    img = np.broadcast_to(c["table"], (IMAGE_SIZE, IMAGE_SIZE, 3)) * (0.92 + 0.08 * xx / IMAGE_SIZE)[..., None]
    cy, cx = 32 + c["offset"][0], 32 + c["offset"][1]
    r = 9 + 12 * (c["size"] - 0.9) / 0.25
    if not empty:
        mask = _disk(yy, xx, cy, cx, r)
        look, colour = c["look"], c["colour"]
        d = np.hypot(yy - cy, xx - cx) / r
        if look == "wood":
            u = (xx - cx) * np.cos(c["grain_angle"]) + (yy - cy) * np.sin(c["grain_angle"])
            tex = colour * (1 + 0.2 * np.sin(2 * np.pi * u / c["grain"] + 0.8 * np.sin(yy / 5)))[..., None]
        elif look == "rubber":
            tex = np.broadcast_to(colour, img.shape) * 1.0
        elif look == "metal":
            tex = colour * (0.7 + 0.4 * (1 - d))[..., None]
            tex = tex + 0.7 * np.exp(-((yy - cy + r / 3) ** 2 + (xx - cx + r / 3) ** 2) / 8)[..., None]
        elif look == "glass":
            tex = 0.5 * img + 0.5 * colour + 0.25 * np.clip(d - 0.75, 0, 1)[..., None] * 4
            tex = tex + 0.6 * np.exp(-((yy - cy + r / 3) ** 2 + (xx - cx + r / 3) ** 2) / 6)[..., None]
        else:  # bright plastic
            tex = colour * (0.85 + 0.15 * (1 - d))[..., None]
            tex = tex + 0.35 * np.exp(-((yy - cy + r / 3) ** 2 + (xx - cx + r / 3) ** 2) / 10)[..., None]
        img = img * (1 - mask[..., None]) + mask[..., None] * tex
        pad = (0.22, 0.22, 0.25)
        if c["grasp"] == 0:  # pinch: two small pads left and right
            for side in (-1, 1):
                px = cx + side * (r + 2)
                img = _blend(img, _rect(yy, xx, cy - 4, cy + 4, px - 2, px + 2), pad)
        else:  # power: four wide pads around
            for dy, dx in ((0, -1), (0, 1), (-1, 0), (1, 0)):
                py, px = cy + dy * (r + 2), cx + dx * (r + 2)
                h, w = (3, 7) if dy else (7, 3)
                img = _blend(img, _rect(yy, xx, py - h, py + h, px - w, px + w), pad)
    img = img * c["light"]
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)


def render_side(c: dict, rng: np.random.Generator, empty: bool = False) -> np.ndarray:
    """Side camera: the object's profile, its gloss, and the jaws at the grasp height."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    floor = 52
    img = np.where((yy < floor)[..., None], c["wall"], c["table"]).astype(np.float32)
    half = 0.9 * (9 + 12 * (c["size"] - 0.9) / 0.25)
    height = 2 * half * c["aspect"]
    cx = 32 + c["offset"][1]
    if not empty:
        mask = _rect(yy, xx, floor - height, floor, cx - half, cx + half)
        look, colour = c["look"], np.asarray(c["colour"])
        shade = (0.8 + 0.3 * (xx - cx + half) / (2 * half))[..., None]
        body = colour * shade
        gloss = {"wood": 0.0, "rubber": 0.0, "metal": 0.6, "glass": 0.45, "plastic": 0.3}[MATERIALS[c["material"]]]
        if look == "glass":
            body = 0.5 * img + 0.5 * body
        body = body + gloss * np.exp(-((xx - cx + half / 2) ** 2) / 4)[..., None]
        img = img * (1 - mask[..., None]) + mask[..., None] * body
        jaw = floor - c["height"] * height
        thick = (1.5, 2.5)[c["grasp"]]
        # the gripper: a dark carriage from the top of the picture down to its orange jaws
        img = _blend(img, _rect(yy, xx, -1, jaw - thick, cx - half - 3, cx + half + 3), (0.2, 0.2, 0.22))
        img = _blend(img, _rect(yy, xx, jaw - thick, jaw + thick, cx - half - 4, cx + half + 4), (0.95, 0.5, 0.1))
    img = img * c["light"]
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)


def force_curve(c: dict, t: np.ndarray) -> np.ndarray:
    """Grip force (N) at times t (s, into the sensor window): a rise set by the material's stiffness."""
    tau = PHYSICS[MATERIALS[c["material"]]]["rise_ms"] / 1000
    s = np.clip(t - c["contact"], 0, None)
    return np.where(t >= c["contact"], c["force"] * (1 - np.exp(-s / tau)), 0.0)


def render_audio(c: dict, rng: np.random.Generator) -> np.ndarray:
    """3 s ending at the lift: hum, impact ring at contact, force-following whine, clanks, noise."""
    t = np.arange(AUDIO_SAMPLES) / SAMPLE_RATE
    window_start = AUDIO_SECONDS - SENSOR_SAMPLES / SENSOR_RATE  # the sensor window is the last second
    tc = window_start + c["contact"]
    phys = PHYSICS[MATERIALS[c["material"]]]
    s = np.clip(t - tc, 0, None)
    after = t >= tc
    approach = np.where(after, 0.0, 0.03 * np.sin(2 * np.pi * 110 * t) + 0.015 * np.sin(2 * np.pi * 220 * t))
    force = force_curve(c, t - window_start)
    whine_hz = 250 + 45 * force
    phase = 2 * np.pi * np.cumsum(whine_hz) / SAMPLE_RATE
    whine = np.where(after, (0.02 + 0.01 * force) * np.sin(phase), 0.0)
    f = c["sound_hz"]
    ring = phys["loud"] * np.exp(-s * phys["decay"]) * (np.sin(2 * np.pi * f * s) + 0.4 * np.sin(2 * np.pi * 2.76 * f * s))
    audio = approach + whine + np.where(after, ring, 0.0)
    for _ in range(rng.integers(0, 3)):  # distractor clanks from elsewhere in the workshop
        t0, fk = rng.uniform(0.1, 2.9), rng.uniform(400, 5000)
        sk = np.clip(t - t0, 0, None)
        audio = audio + np.where(t >= t0, rng.uniform(0.04, 0.12) * np.exp(-sk * rng.uniform(15, 40))
                                 * np.sin(2 * np.pi * fk * sk), 0.0)
    audio = audio + rng.normal(0, rng.uniform(0.003, 0.012), AUDIO_SAMPLES)
    return np.clip(audio, -1, 1)


def render_pressure(c: dict, rng: np.random.Generator) -> np.ndarray:
    """1 s of pressure (force / 10) at 1 kHz: 0 before contact, then rise, ringing and plateau."""
    t = np.arange(SENSOR_SAMPLES) / SENSOR_RATE
    phys = PHYSICS[MATERIALS[c["material"]]]
    s = np.clip(t - c["contact"], 0, None)
    p = force_curve(c, t) / 10
    p = p + np.where(t >= c["contact"], 0.08 * c["force"] / 10 * np.exp(-s * 12) * np.sin(2 * np.pi * phys["ring_hz"] * s), 0)
    return np.clip(p + rng.normal(0, 0.004, SENSOR_SAMPLES), 0, PRESSURE_MAX)


def render_emg(c: dict, rng: np.random.Generator) -> np.ndarray:
    """(8, 1000) EMG: grip channels follow the force (pinch or power pattern), lift channels burst
    with the lift command before the lift, each channel scaled by the operator's gain, mains hum."""
    t = np.arange(SENSOR_SAMPLES) / SENSOR_RATE
    grip_pattern = np.array(((1.0, 0.8, 0.3, 0.2), (0.3, 0.4, 1.0, 0.9))[c["grasp"]])
    lift_pattern = np.array((1.0, 0.8, 0.6, 0.5))
    grip_env = 0.03 + 0.09 * force_curve({**c, "contact": c["contact"] - 0.05}, t)  # intent leads contact
    ramp = np.clip((t - c["lift_onset"]) / 0.05, 0, 1)
    lift_env = 0.03 + 0.08 * c["lift"] / G * ramp + 0.01 * grip_env
    env = np.concatenate([grip_pattern[:, None] * grip_env, lift_pattern[:, None] * lift_env])  # (8, T)
    env = env * operator_gains(c["operator"])[:, None]
    carrier = rng.normal(0, 1, (EMG_CHANNELS, SENSOR_SAMPLES))
    hum = rng.uniform(0.01, 0.04) * np.sin(2 * np.pi * c["hum_hz"] * t + rng.uniform(0, 2 * np.pi))
    return env * carrier + hum + rng.normal(0, 0.005, (EMG_CHANNELS, SENSOR_SAMPLES))


def render_episode(seed: int, index: int, split: str = "train", noise: int = 0) -> dict:
    """One episode: its causes and labels, and the five signals as stored (uint8, int16, ...)."""
    c = sample_causes(seed, index, pool_of(split))
    rng = np.random.default_rng([seed, index, 1000 + noise])
    return {
        "causes": c,
        "camera1": to_uint8(render_top(c, rng)),
        "camera2": to_uint8(render_side(c, rng)),
        "audio": to_int16(render_audio(c, rng)),
        "pressure": render_pressure(c, rng).astype(np.float32),
        "emg": render_emg(c, rng).astype(np.float16),
    }


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def to_int16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


# --------------------------------------------------------------------------- anomalies


def inject_anomaly(episode: dict, kind: str, rng: np.random.Generator, donor: dict | None = None) -> tuple[dict, str]:
    """A copy of EPISODE (stored arrays) with one anomaly of KIND: fault | collision | swap.

    A swap takes the audio or one camera from DONOR (another episode): each signal is normal alone.
    Returns the episode and the anomaly's detailed name (e.g. "emg_flat", "swap_audio").
    """
    ep = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in episode.items()}
    c = ep["causes"]
    if kind == "fault":
        fault = FAULTS[int(rng.integers(len(FAULTS)))]
        if fault == "pressure_stuck":
            ep["pressure"][:] = np.float32(rng.uniform(0.0, 1.0))
        elif fault == "pressure_saturated":
            start = int(c["contact"] * SENSOR_RATE) + 20
            ep["pressure"][start:] = PRESSURE_MAX
        elif fault == "emg_flat":
            ep["emg"][int(rng.integers(EMG_CHANNELS))] = 0
        elif fault == "audio_dropout":
            length = int(rng.uniform(0.6, 1.5) * SAMPLE_RATE)
            start = int(rng.integers(AUDIO_SAMPLES - length))
            ep["audio"][start:start + length] = 0
        elif fault == "camera_black":
            ep[("camera1", "camera2")[int(rng.integers(2))]][:] = 0
        else:  # camera_frozen: a stale, noiseless frame of the empty workspace
            view = int(rng.integers(2))
            render = (render_top, render_side)[view]
            ep[("camera1", "camera2")[view]] = to_uint8(render(c, _NoNoise(), empty=True))
        return ep, fault
    if kind == "collision":  # something bumps the gripper: a transient in several sensors at once
        t0 = rng.uniform(0.35, 0.9)
        i0 = int(t0 * SENSOR_RATE)
        s = np.arange(SENSOR_SAMPLES - i0) / SENSOR_RATE
        hit = rng.uniform(0.6, 1.0)
        ep["pressure"][i0:] = np.clip(ep["pressure"][i0:] + hit * 0.5 * np.exp(-s * 40) * np.cos(2 * np.pi * 30 * s),
                                      0, PRESSURE_MAX)
        burst = (hit * 0.8 * np.exp(-s * 25))[None, :] * rng.normal(0, 1, (EMG_CHANNELS, len(s)))
        ep["emg"][:, i0:] = (ep["emg"][:, i0:].astype(np.float32) + burst).astype(np.float16)
        a0 = int((AUDIO_SECONDS - 1 + t0) * SAMPLE_RATE)
        sa = np.arange(AUDIO_SAMPLES - a0) / SAMPLE_RATE
        bang = hit * 0.7 * np.exp(-sa * 30) * rng.normal(0, 1, len(sa))
        ep["audio"] = to_int16(ep["audio"][:] / 32767 + np.concatenate([np.zeros(a0), bang]))
        return ep, "collision"
    if kind == "swap":
        if donor is None:
            raise ValueError("a swap needs a donor episode")
        what = ("audio", "camera1", "camera2")[int(rng.integers(3))]
        ep[what] = donor[what].copy()
        return ep, f"swap_{what}"
    raise ValueError(f"anomaly kind must be one of {ANOMALIES[1:]}, got {kind!r}")


class _NoNoise:
    """A stand-in generator whose noise is zero: a frozen frame buffer repeats one clean picture."""

    def normal(self, loc, scale, size):
        return np.zeros(size)


def anomaly_set(seed: int, num: int, split: str = "anomaly") -> dict:
    """NUM episodes of each of normal, fault, collision, swap (stored arrays stacked) and their kinds."""
    episodes, kinds, details = [], [], []
    rng = np.random.default_rng([seed, 77])
    for k, kind in enumerate(ANOMALIES):
        for i in range(num):
            index = k * num + i
            ep = render_episode(seed, index, split)
            detail = "normal"
            if kind != "normal":
                donor = render_episode(seed, 10_000 + index, split) if kind == "swap" else None
                ep, detail = inject_anomaly(ep, kind, rng, donor)
            episodes.append(ep)
            kinds.append(k)
            details.append(detail)
    out = stack(episodes)
    out["anomaly"] = np.array(kinds, dtype=np.int64)
    out["anomaly_detail"] = np.array(details)
    return out


# --------------------------------------------------------------------------- splits on disk

SIGNALS = ("camera1", "camera2", "audio", "pressure", "emg")
CAUSES = ("material", "outcome", "instance", "operator", "grasp", "force", "lift", "height", "size", "ratio")


def stack(episodes: list[dict]) -> dict:
    out = {k: np.stack([e[k] for e in episodes]) for k in SIGNALS}
    for k in CAUSES:
        out[k] = np.array([e["causes"][k] for e in episodes])
    return out


def render_split(seed: int, num_episodes: int, split: str, noise: int = 0, start: int = 0,
                 desc: str | None = None) -> dict:
    """Episodes [start, start + num_episodes) of a split, stacked."""
    episodes = [render_episode(seed, i, split, noise) for i in
                tqdm(range(start, start + num_episodes), desc=desc or f"robot {split} seed={seed}", unit="episode",
                     leave=False)]
    return stack(episodes)


def read_meta(folder: Path) -> dict | None:
    path = folder / "meta.json"
    return json.loads(path.read_text()) if path.exists() else None


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SystemExit(f"error: --{name} must be an integer >= {minimum}, got {value!r}")
    return value


def generate(split: str = "train", num_episodes: int = 0, seed: int = -1, data_dir: str = DEFAULT_DIR,
             overwrite: bool = False) -> Path:
    """Render a split of grasping episodes into DATA_DIR/SPLIT/episodes.npz.

    Args:
        split: the split's folder name; pretrain (the kit's encoder pretraining), train and valid
            use the seen objects and operators, any other name (test, heldout...) unseen ones.
        num_episodes: episodes to render; 0 = the split's default (train 2000, valid 500, others 1000).
        seed: the world seed; -1 = the split's own (train 1701, valid 1702, test 1703).
        data_dir: the folder holding the splits.
        overwrite: replace a split already there that was made with other options.
    """
    split = check_split_name(split)
    num_episodes = _check_int("num_episodes", num_episodes, 0) or DEFAULT_EPISODES.get(split, 1000)
    if seed == -1:
        seed = SPLIT_SEEDS.get(split, SPLIT_SEEDS["test"])
    seed = _check_int("seed", seed, 0)
    folder = Path(data_dir) / split
    if folder.exists() and not folder.is_dir():
        raise SystemExit(f"error: {folder} is a file, not a folder; choose another --data_dir")
    options = {"version": VERSION, "split": split, "seed": seed, "num_episodes": num_episodes}
    meta = read_meta(folder)
    if meta == options:
        print(f"{folder} already holds this split (seed={seed}, num_episodes={num_episodes}); nothing to do")
        return folder
    if (meta is not None or (folder / "episodes.npz").exists()) and not overwrite:
        found = f"seed={meta['seed']}, num_episodes={meta['num_episodes']}" if meta else "other files"
        raise SystemExit(f"error: {folder} already holds {found}; pass --overwrite to replace it or choose "
                         "another --data_dir")
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = render_split(seed, num_episodes, split)
    np.savez(folder / "episodes.npz", **data)
    (folder / "meta.json").write_text(json.dumps(options) + "\n")
    counts = {MATERIALS[m]: int((data["material"] == m).sum()) for m in range(len(MATERIALS))}
    outcomes = {OUTCOMES[o]: int((data["outcome"] == o).sum()) for o in range(len(OUTCOMES))}
    print(f"wrote {num_episodes} episodes to {folder} in {time.perf_counter() - started:.1f}s; "
          f"materials {counts}; outcomes {outcomes}")
    return folder


def ensure(data_dir: str | Path, split: str, num_episodes: int = 0, seed: int = -1) -> Path:
    """The split's folder, rendered first (with a progress bar) if it is missing."""
    folder = Path(data_dir) / split
    if read_meta(folder) is None:
        print(f"{folder} has no robot split; generating it")
        generate(split=split, num_episodes=num_episodes, seed=seed, data_dir=str(data_dir))
    return folder


def load_split(data_dir: str | Path, split: str) -> dict:
    """The stored arrays of a split, as saved (uint8 pictures, int16 audio...)."""
    path = Path(data_dir) / split / "episodes.npz"
    if not path.exists():
        raise SystemExit(f"error: no {path}; make it with `python -m worlds robot --split {split} --data_dir {data_dir}`")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# --------------------------------------------------------------------------- looking at it


def write_wav(path: Path, audio_int16: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.asarray(audio_int16, dtype="<i2").tobytes())


def gallery(split: str = "train", num: int = 4, data_dir: str = DEFAULT_DIR, out: str = "", seed: int = 0,
            overwrite: bool = False) -> None:
    """Draw a few episodes (both pictures, pressure, EMG, spectrogram) as one PNG, with each one's
    audio as a WAV beside it.

    Args:
        split: the split to draw from (generated first if missing).
        num: episodes to draw (1-8).
        data_dir: the folder holding the splits.
        out: the folder to write gallery.png and the WAVs in; default DATA_DIR/SPLIT/gallery.
        seed: which episodes to pick.
        overwrite: replace a gallery already in OUT.
    """
    split = check_split_name(split)
    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= 8:
        raise SystemExit(f"error: --num must be an integer from 1 to 8, got {num!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = ensure(data_dir, split)
    target = Path(out or folder / "gallery")
    if (target / "gallery.png").exists() and not overwrite:
        raise SystemExit(f"error: {target}/gallery.png exists; pass --overwrite or another --out")
    target.mkdir(parents=True, exist_ok=True)
    data = load_split(data_dir, split)
    picks = np.random.default_rng(seed).choice(len(data["material"]), size=min(num, len(data["material"])),
                                               replace=False)
    fig, axes = plt.subplots(len(picks), 5, figsize=(16, 2.8 * len(picks)), squeeze=False)
    t = np.arange(SENSOR_SAMPLES) / SENSOR_RATE
    for row, i in enumerate(picks):
        title = (f"#{i} {MATERIALS[data['material'][i]]} {GRASPS[data['grasp'][i]]} -> "
                 f"{OUTCOMES[data['outcome'][i]]}")
        ax = axes[row]
        ax[0].imshow(data["camera1"][i])
        ax[0].set_title(f"{title}\ntop camera", fontsize=8)
        ax[1].imshow(data["camera2"][i])
        ax[1].set_title(f"side camera (grasp height {data['height'][i]:.2f})", fontsize=8)
        ax[2].plot(t, data["pressure"][i], lw=0.8)
        ax[2].set_title(f"pressure (force {data['force'][i]:.1f} N)", fontsize=8)
        emg = data["emg"][i].astype(np.float32)
        for ch in range(EMG_CHANNELS):
            ax[3].plot(t, emg[ch] + 1.5 * ch, lw=0.4)
        ax[3].set_title(f"EMG 0-3 grip, 4-7 lift (lift {data['lift'][i] / G:.1f} g)", fontsize=8)
        ax[4].specgram(data["audio"][i] / 32767, NFFT=512, Fs=SAMPLE_RATE, noverlap=256, cmap="magma")
        ax[4].set_title("audio spectrogram (Hz)", fontsize=8)
        for a in ax[:2]:
            a.axis("off")
        for a in ax[2:]:
            a.tick_params(labelsize=6)
        write_wav(target / f"episode_{i:05d}.wav", data["audio"][i])
    fig.tight_layout()
    fig.savefig(target / "gallery.png", dpi=80)
    plt.close(fig)
    print(f"wrote {target}/gallery.png and {len(picks)} WAVs")


COMMANDS = {"generate": generate, "gallery": gallery}
