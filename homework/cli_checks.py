"""Checking command-line values, the one way every command does it.

Fire types a value by its look: `--seed 001` arrives as the int 1, `--learning_rate 1e-3` as a
float, `--split 2` as an int, and a typo such as `--batch_size 3x` as the string "3x". So every
command checks its values first thing, before any work, and a bad one stops it with one line
that names the flag, the value given and what is allowed:

    error: --batch_size must be an integer >= 1, got '3x'

`UsageError` is that line. It is a `SystemExit`, so a command ends with exit code 1 and no
traceback, and the grader reports it as the submission's own words. Checkpoint checks
(`homework.checkpoint`) raise it too.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import NoReturn


class UsageError(SystemExit):
    """Something the user must fix (a flag's value, a missing or mismatched file), as one line."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


def fail(message: str) -> NoReturn:
    raise UsageError(message)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """VALUE if it is an integer from MINIMUM to MAXIMUM; else one line naming --NAME."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        allowed = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        fail(f"--{name} must be an integer {allowed}, got {value!r}")
    return value


def check_ints(**values: tuple[object, int]) -> None:
    """Several integers at once, each NAME=(value, minimum): `check_ints(seed=(seed, 0), max_steps=(steps, 1))`."""
    for name, (value, minimum) in values.items():
        check_int(name, value, minimum)


def check_number(name: str, value, minimum: float = 0.0, maximum: float = math.inf,
                 allow_minimum: bool = False) -> float:
    """VALUE as a float if it is a finite number above MINIMUM (or equal to it, with
    ALLOW_MINIMUM) and below MAXIMUM; else one line naming --NAME. The default: positive."""
    low_ok = _is_number(value) and (value >= minimum if allow_minimum else value > minimum)
    if not low_ok or value >= maximum:
        if minimum == 0 and maximum == math.inf:
            allowed = "a non-negative number" if allow_minimum else "a positive number"
        else:
            allowed = f"a number in {'[' if allow_minimum else '('}{minimum:g}, {maximum:g})"
        fail(f"--{name} must be {allowed}, got {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """VALUE as a bool: Fire passes `--flag`, `--flag=False` and `--noflag` as bools, but
    `--flag false` as the string "false", so the words true/false/yes/no/1/0 count too."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if str(value).strip().lower() in words:
        return words[str(value).strip().lower()]
    fail(f"--{name} must be true or false, got {value!r}")


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """VALUE if it is one of CHOICES; else one line naming --NAME and listing them."""
    choices = tuple(choices)
    if value not in choices:
        fail(f"--{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_split(name: str, value, splits: Iterable[str], aliases: dict[str, str] | None = None) -> str:
    """A split name, with old spellings (ALIASES: old -> new) accepted and noted once."""
    if aliases and value in aliases:
        print(f"note: --{name} {value} is now spelled --{name} {aliases[value]}; the old name goes in the next release")
        value = aliases[value]
    return check_choice(name, value, splits)


def renamed(old: str, new: str, old_value, new_value, command: Callable):
    """The value of COMMAND's flag renamed from --OLD to --NEW: the old spelling still works for one
    release, with a one-line note; giving both is an error (--NEW away from its default in COMMAND's
    signature, the one place that default is written)."""
    if old_value is None:
        return new_value
    default = inspect.signature(command).parameters[new].default
    if new_value != default and new_value != old_value:
        fail(f"--{old} is the old name of --{new}; pass only --{new}")
    print(f"note: --{old} is now --{new}; the old name goes in the next release")
    return old_value


def set_threads(threads) -> int:
    """Apply --threads (0: torch's default, every core) and return the count in use."""
    import torch

    if check_int("threads", threads, 0):
        torch.set_num_threads(threads)
    return torch.get_num_threads()
