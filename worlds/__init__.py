"""Procedural data worlds. Each module renders one kind of scene from a seed.

    python -m worlds kart --split train --num_frames 2000
    python -m worlds kart gallery --split train
    python -m worlds shapes --num_samples 1000
    python -m worlds balls --split train --num_videos 2000
    python -m worlds robot --split train --num_episodes 2000
    python -m worlds robot gallery --split train
"""

import re


def check_split_name(split) -> str:
    """A split is a plain folder name under the data folder, never a path: one line otherwise."""
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", split) or split.strip(".") == "":
        raise SystemExit(f"error: --split must be a plain folder name (letters, digits, _ . -), got {split!r}")
    return split
