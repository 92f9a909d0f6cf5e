"""homework/run_state.py: states round-trip, saves are atomic, other settings are named."""

from __future__ import annotations

import pytest
import torch

from homework.run_state import SettingsMismatch, load_state, save_state


def test_a_state_round_trips_and_loads_without_pickled_code(tmp_path):
    path = tmp_path / "run" / "last.pt"
    assert load_state(path, {"seed": 0}) is None
    save_state(path, {"seed": 0, "sizes": (1, 2)}, model={"w": torch.ones(2)}, step=7, losses=[0.5, 0.25])
    state = load_state(path, {"seed": 0, "sizes": (1, 2)})  # tuples compare as the lists they become
    assert state["step"] == 7 and torch.equal(state["model"]["w"], torch.ones(2)) and state["losses"] == [0.5, 0.25]
    torch.load(path, weights_only=True)  # plain tensors and numbers only
    assert not list(path.parent.glob("*.tmp"))


def test_other_settings_are_named(tmp_path):
    path = tmp_path / "last.pt"
    save_state(path, {"seed": 0, "batch_size": 32}, step=1)
    with pytest.raises(SettingsMismatch) as error:
        load_state(path, {"seed": 1, "batch_size": 32})
    assert error.value.differences == {"seed": (0, 1)} and "other settings" in str(error.value)
