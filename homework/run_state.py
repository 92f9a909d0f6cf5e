"""Resumable training state: save it atomically, and resume only a run made with the same settings.

    state = load_state(run / "last.pt", settings)       # None when there is none
    ...
    save_state(run / "last.pt", settings, model=model.state_dict(), optimizer=opt.state_dict(), step=step)

A state is a dict of tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(weights_only=True)` (no pickled code runs). It is written to a temporary file and
renamed into place: a run killed mid-save leaves the previous state whole. Its SETTINGS (a
JSON-able dict) are stored with it; `load_state` raises `SettingsMismatch`, naming what differs,
when they are not the ones asked for, and each caller decides: start afresh, or refuse.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


class SettingsMismatch(Exception):
    """The saved state was made with other settings; `differences` maps a setting to (saved, now)."""

    def __init__(self, path: Path, differences: dict):
        self.path, self.differences = path, differences
        super().__init__(f"{path} was made with other settings (saved, now): {differences}")


def _plain(settings: dict) -> dict:
    return json.loads(json.dumps(settings))  # tuples -> lists, as they come back from the file


def save_state(path: str | Path, settings: dict, **state) -> None:
    """STATE and its SETTINGS at PATH, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({**state, "settings": _plain(settings)}, tmp)
    os.replace(tmp, path)


def load_state(path: str | Path, settings: dict) -> dict | None:
    """The state saved at PATH (None if there is none); SettingsMismatch if it was made with other SETTINGS."""
    path = Path(path)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved, now = state.get("settings", {}), _plain(settings)
    if saved != now:
        keys = sorted(set(saved) | set(now))
        raise SettingsMismatch(path, {k: (saved.get(k), now.get(k)) for k in keys if saved.get(k) != now.get(k)})
    return state
