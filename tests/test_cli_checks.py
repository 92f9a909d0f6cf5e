"""homework/cli_checks.py: every bad value is one line that names the flag, the value and what is allowed."""

from __future__ import annotations

import math

import pytest
import torch

from homework import cli_checks as cc


@pytest.mark.parametrize("value", ["3x", 0, -2, 1.5, True, None])
def test_a_bad_integer_names_the_flag_the_value_and_the_range(value):
    with pytest.raises(SystemExit) as error:
        cc.check_int("batch_size", value, 1)
    assert str(error.value) == f"error: --batch_size must be an integer >= 1, got {value!r}"
    assert isinstance(error.value, cc.UsageError)


def test_good_values_come_back_as_given():
    assert cc.check_int("seed", 0, 0) == 0 and cc.check_int("blocks", 6, 0, 6) == 6
    assert cc.check_number("learning_rate", 3e-3) == 3e-3 and cc.check_number("weight", 0, allow_minimum=True) == 0.0
    assert cc.check_choice("fusion", "late", ("late", "concat")) == "late"


def test_ranges_and_numbers():
    with pytest.raises(SystemExit, match=r"^error: --vision_blocks must be an integer from 0 to 6, got 7$"):
        cc.check_int("vision_blocks", 7, 0, 6)
    for bad in (0, -1.0, math.inf, math.nan, "fast", False):
        with pytest.raises(SystemExit, match=r"^error: --learning_rate must be a positive number, got "):
            cc.check_number("learning_rate", bad)
    with pytest.raises(SystemExit, match=r"^error: --weight must be a non-negative number, got -0.1$"):
        cc.check_number("weight", -0.1, allow_minimum=True)
    with pytest.raises(SystemExit, match=r"^error: --lr must be a number in \(0, 1\), got 1$"):
        cc.check_number("lr", 1, 0, 1)


def test_choices_and_split_aliases(capsys):
    with pytest.raises(SystemExit, match=r"^error: --fusion must be one of late, concat, got 'early'$"):
        cc.check_choice("fusion", "early", ("late", "concat"))
    assert cc.check_split("split", "val", ("train", "valid"), {"val": "valid"}) == "valid"
    assert "--split val is now spelled --split valid" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--split must be one of train, valid, got 'dev'"):
        cc.check_split("split", "dev", ("train", "valid"), {"val": "valid"})


def train(learning_rate: float = 0.003, lr: float | None = None) -> None:
    """A command whose --learning_rate was --lr."""


def test_a_renamed_flag_still_works_with_a_note(capsys):
    assert cc.renamed("lr", "learning_rate", None, 0.01, train) == 0.01  # only the new name
    assert capsys.readouterr().out == ""
    assert cc.renamed("lr", "learning_rate", 0.05, 0.003, train) == 0.05  # only the old name (the new at its default)
    assert "note: --lr is now --learning_rate" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="pass only --learning_rate"):
        cc.renamed("lr", "learning_rate", 0.05, 0.01, train)


def test_threads():
    before = torch.get_num_threads()
    try:
        assert cc.set_threads(0) == before  # 0: torch's default, untouched
        assert cc.set_threads(1) == 1
        with pytest.raises(SystemExit, match="--threads must be an integer >= 0, got -1"):
            cc.set_threads(-1)
    finally:
        torch.set_num_threads(before)
