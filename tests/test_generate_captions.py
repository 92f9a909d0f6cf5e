"""Captions and multiple-choice sets: true captions are true, each set has exactly one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from generate_qa import read_view
from homework import generate_captions as gc


def test_captions_use_the_templates(kart_data):
    captions = json.loads((kart_data / "tiny" / "all_captions.json").read_text())
    assert captions
    for c in captions:
        assert set(c) == {"image_file", "caption"} and c["image_file"].startswith("tiny/")
        assert any(_matches(c["caption"], t) for t in gc.CAPTIONS.values()), c["caption"]


def _matches(caption: str, template: str) -> bool:
    head, _, tail = template.partition("{")
    tail = tail.split("}", 1)[1]
    return caption.startswith(head) and caption.endswith(tail)


def test_each_multiple_choice_set_has_exactly_one_true_caption(kart_data):
    sets = json.loads((kart_data / "tiny" / "all_mc_qas.json").read_text())
    assert len(sets) == 6 * 4  # one per view
    for s in sets:
        frame, view = s["image_file"].split("/")[1].split("_")[:2]
        info = json.loads((kart_data / "tiny" / f"{frame}_info.json").read_text())
        true = {c for _, c in gc.view_captions(read_view(info, int(view)))}
        assert len(s["candidates"]) == gc.NUM_CANDIDATES == len(set(s["candidates"]))
        flags = [c in true for c in s["candidates"]]
        assert flags.count(True) == 1 and flags.index(True) == s["correct_index"]
        templates = {_template(c) for c in s["candidates"]}
        assert len(templates) == 1 or templates <= set(gc.RELATIONS), "distractors share the true caption's template"


def _template(caption: str) -> str:
    return next(t for t, tpl in gc.CAPTIONS.items() if _matches(caption, tpl))


def test_relation_distractors_are_false_for_the_view(kart_data):
    info = json.loads((kart_data / "tiny" / "00002_info.json").read_text())
    rng = np.random.default_rng(0)
    for v in range(4):
        view = read_view(info, v)
        true = {c for _, c in gc.view_captions(view)}
        for _ in range(5):
            template, candidates, idx = gc.view_multiple_choice(view, rng)
            assert [c in true for c in candidates].count(True) == 1


def test_cli(run_cli, kart_data):
    r = run_cli("-m", "homework.generate_captions", "check", "--info_file", str(kart_data / "tiny" / "00000_info.json"))
    assert r.returncode == 0 and "is the ego car." in r.stdout
    assert "--split" in run_cli("-m", "homework.generate_captions", "generate", "--help").output


def test_multiple_choice_sets_are_the_same_in_every_process(tmp_path):
    """String hashing differs between processes; the sets must not depend on it (the demo split's
    80 views include relation sets with two true relations, where a set's order once leaked in)."""
    import os
    import shutil
    import subprocess
    import sys

    outputs = []
    demo = Path(__file__).resolve().parents[1] / "data" / "train_demo"
    for hash_seed in ("1", "2", "3"):
        data = tmp_path / hash_seed
        shutil.copytree(demo, data / "train_demo")
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        subprocess.run([sys.executable, "-m", "homework.generate_captions", "generate", "--split", "train_demo",
                        "--data_dir", str(data)], env=env, check=True, capture_output=True)
        outputs.append((data / "train_demo" / "all_mc_qas.json").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
