"""Shared fixtures: a small kart split rendered once per test session."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kart_data(tmp_path_factory) -> Path:
    """A data dir with a 'tiny' split (6 frames x 4 views, seed 7) and its QA pairs and captions."""
    from generate_qa import generate as generate_qa
    from homework.generate_captions import generate as generate_captions
    from worlds.kart import generate as generate_world

    data_dir = tmp_path_factory.mktemp("kart_data")
    generate_world(split="tiny", num_frames=6, seed=7, data_dir=str(data_dir), num_views=4, workers=1)
    generate_qa(split="tiny", data_dir=str(data_dir))
    generate_captions(split="tiny", data_dir=str(data_dir))
    return data_dir


def _run_cli(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PAGER": "cat", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    proc.output = proc.stdout + proc.stderr  # Fire writes --help to stderr when not on a terminal
    return proc


def last_accuracy(proc: subprocess.CompletedProcess) -> float:
    """The accuracy a `test` or `probe` command printed as its last line, `accuracy=...`, once it ran cleanly."""
    assert proc.returncode == 0, proc.output[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"accuracy=[01]\.\d{4}", last), proc.stdout[-1000:]
    return float(last.split("=")[1])


@pytest.fixture
def run_cli():
    """`run_cli("-m", "worlds", "kart", "--help").output`: run python from the repo root, output captured
    (`.stdout`, `.stderr`, and both in `.output`), no pager."""
    return _run_cli


@pytest.fixture(scope="session")
def random_base(tmp_path_factory) -> Path:
    """A randomly initialised kart_vlm base, saved like the committed one (weights, tokenizer, fingerprint)."""
    import torch

    from homework.base_vlm import FINGERPRINT_FILE, weights_fingerprint
    from homework.modeling_kart_vlm import KartVLMForConditionalGeneration, build_tokenizer, tiny_config

    out = tmp_path_factory.mktemp("random_base")
    torch.manual_seed(0)
    tok = build_tokenizer()
    model = KartVLMForConditionalGeneration(tiny_config(len(tok)))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / FINGERPRINT_FILE).write_text(weights_fingerprint(model))
    return out


SOLUTION_REGION = re.compile(r"^( *)# BEGIN SOLUTION \(hint: ([^\n]*)\)\n.*?^ *# END SOLUTION\n", re.S | re.M)


def starter_source(path: Path) -> tuple[str, int]:
    """A homework file with each solution region replaced by `raise NotImplementedError(hint)`,
    as the student starter will have it, and the number of regions replaced."""
    return SOLUTION_REGION.subn(lambda m: f"{m.group(1)}raise NotImplementedError({m.group(2)!r})\n", path.read_text())
