"""The cubes-and-spheres RGB + LiDAR dataset (`python -m worlds shapes`), as tensors in memory.

Used by `homework.fusion` and `homework.cilp`. A model sees:

    rgb    float32 (B, 3, 64, 64) in [0, 1]
    lidar  float32 (B, 4, 64, 64): x, y, z in metres in the sensor frame (0 where no return), valid 0/1

and a label 0 (cube) or 1 (sphere). The whole dataset fits in memory (2,000 samples: about 160 MB).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from homework.cli_checks import check_split
from worlds import shapes

CLASSES = shapes.CLASSES
DEFAULT_DATA_DIR = shapes.DEFAULT_DIR
SPLITS = ("train", "valid", "all")  # the kit's split names; "all" = train + valid (a held-out dataset)
SPLIT_ALIASES = {"val": "valid"}  # the old spelling, still accepted with a note
SPLIT_KEYS = shapes.SPLIT_KEYS  # each split's key in splits.json (worlds/shapes.py writes them)


@dataclass
class InputStats:
    """Per-channel input normalisation, from the training set's stats.json (`channel_stats`); a
    model's config holds it, so the model normalises its own inputs and they stay raw."""

    rgb_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    rgb_std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    lidar_mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.5])  # x, y, z (m), valid
    lidar_std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 0.5])


@dataclass
class ShapesSplit:
    """One split in memory; row i of every field is the same sample."""

    rgb: torch.Tensor  # (N, 3, H, W) float32 in [0, 1]
    lidar: torch.Tensor  # (N, 4, H, W) float32: x, y, z (m), valid
    labels: torch.Tensor  # (N,) int64, index into CLASSES
    ids: list[str]  # "cubes/0012", ...

    def __len__(self) -> int:
        return len(self.ids)

    def dataset(self) -> torch.utils.data.TensorDataset:
        return torch.utils.data.TensorDataset(self.rgb, self.lidar, self.labels)


def to_model_inputs(rgb: np.ndarray, ranges: np.ndarray, azimuth: np.ndarray | None = None,
                    zenith: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw sensor arrays as stored on disk -> model inputs.

    Args:
        rgb: uint8 (B, H, W, 3) images. ranges: float32 (B, H, W) LiDAR ranges, 0 for no return.
        azimuth, zenith: the dataset's beam angles; default the world's own (`shapes.beam_angles()`).

    Returns:
        rgb float32 (B, 3, H, W) in [0, 1] and lidar float32 (B, 4, H, W) (x, y, z, valid).
    """
    rgb, ranges = np.asarray(rgb), np.asarray(ranges)
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or ranges.shape != rgb.shape[:3]:
        raise ValueError(f"expected rgb (B, H, W, 3) and ranges (B, H, W), got {rgb.shape} and {ranges.shape}")
    if azimuth is None or zenith is None:
        azimuth, zenith = shapes.beam_angles()
    rgb_t = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
    lidar_t = torch.from_numpy(shapes.beams_to_cartesian(ranges, azimuth, zenith))  # (B, 4, H, W)
    return rgb_t, lidar_t


def ensure_dataset(data_dir: str = DEFAULT_DATA_DIR, num_samples: int = 1000, seed: int = 0) -> Path:
    """The dataset folder, generated first (with a progress bar) if it holds no dataset."""
    return shapes.ensure(data_dir, num_samples=num_samples, seed=seed)


def split_ids(data_dir: str | Path, split: str, subset: bool = False) -> list[str]:
    """The sample IDs of a split ("train", "valid" or "all"; "val" still works), or of its fixed 30% subset."""
    split = check_split("split", split, SPLITS, SPLIT_ALIASES)
    splits = json.loads((Path(data_dir) / "splits.json").read_text())
    source = splits["subset"] if subset else splits
    if split == "all":
        return sorted(source[SPLIT_KEYS["train"]] + source[SPLIT_KEYS["valid"]])
    return list(source[SPLIT_KEYS[split]])


def load_split(data_dir: str = DEFAULT_DATA_DIR, split: str = "train", subset: bool = False,
               generate_seed: int | None = None) -> ShapesSplit:
    """Load a split into memory, generating the dataset first if `data_dir` has none.

    Args:
        data_dir: a dataset made by `python -m worlds shapes`.
        split: "train", "valid" or "all" (all = train + valid, for a held-out set); "val" still works.
        subset: only the fixed 30% subset of the split (listed in splits.json).
        generate_seed: the world seed to use if the dataset must be generated. None: the default
            folder is generated with seed 0, any other missing folder is an error (a mistyped
            held-out path must not quietly become a copy of the training data).
    """
    if generate_seed is None and shapes.read_meta(data_dir) is None and Path(data_dir) != Path(DEFAULT_DATA_DIR):
        raise SystemExit(f"error: no shapes dataset in {data_dir}; make it with "
                         f"`python -m worlds shapes --seed SEED --data_dir {data_dir}` or pass --generate_seed SEED")
    root = ensure_dataset(data_dir, seed=0 if generate_seed is None else generate_seed)
    ids = split_ids(root, split, subset)
    azimuth, zenith = np.load(root / "azimuth.npy"), np.load(root / "zenith.npy")
    rgbs, ranges = [], []
    for sid in tqdm(ids, desc=f"loading {root.name}/{split}{' subset' if subset else ''}", leave=False):
        rgb, scan = shapes.load_pair(root, sid)
        rgbs.append(rgb)
        ranges.append(scan)
    rgb_t, lidar_t = to_model_inputs(np.stack(rgbs), np.stack(ranges), azimuth, zenith)
    labels = torch.tensor([CLASSES.index(sid.split("/")[0]) for sid in ids], dtype=torch.long)
    return ShapesSplit(rgb=rgb_t, lidar=lidar_t, labels=labels, ids=ids)


def channel_stats(data_dir: str | Path) -> dict:
    """Per-channel mean and std of the dataset (from stats.json), for the models' input normalisation."""
    stats = json.loads((Path(data_dir) / "stats.json").read_text())
    return {key: stats[key] for key in ("rgb_mean", "rgb_std", "lidar_mean", "lidar_std")}


def dataset_seed(data_dir: str | Path) -> int | None:
    """The world seed a dataset was generated from (None if unknown)."""
    meta = shapes.read_meta(data_dir)
    return None if meta is None else meta["seed"]
