"""The base's pretraining (pretraining/base_vlm.py): deterministic, resumable, its targets and losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pretraining import base_vlm as pt


def test_pretrain_is_deterministic_across_processes(run_cli, kart_data, tmp_path):
    outs = []
    for name in ("a", "b"):
        r = run_cli("-m", "pretraining.base_vlm", "pretrain", "--output_dir", str(tmp_path / name), "--split", "tiny",
                    "--data_dir", str(kart_data), "--vision_steps", "2", "--max_steps", "3", "--batch_size", "4",
                    "--run_dir", str(tmp_path / f"run_{name}"), timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append((tmp_path / name / "model.safetensors").read_bytes())
    assert outs[0] == outs[1]
    assert json.loads((tmp_path / "a" / "pretrain_config.json").read_text())["max_steps"] == 3
    r = run_cli("-m", "pretraining.base_vlm", "pretrain", "--output_dir", str(tmp_path / "a"), "--split", "tiny",
                "--data_dir", str(kart_data), "--max_steps", "3")
    assert r.returncode != 0 and "--overwrite" in r.stderr and "Traceback" not in r.stderr


def test_a_longer_description_stage_resumes_the_vision_stage_and_gives_the_same_base(run_cli, kart_data, tmp_path):
    common = ["-m", "pretraining.base_vlm", "pretrain", "--split", "tiny", "--data_dir", str(kart_data),
              "--vision_steps", "2", "--batch_size", "4", "--threads", "1"]
    r = run_cli(*common, "--max_steps", "2", "--output_dir", str(tmp_path / "short"), "--run_dir", str(tmp_path / "run"),
                timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    # Only the description stage's length changes: the vision stage is taken from the run's state.
    r = run_cli(*common, "--max_steps", "4", "--output_dir", str(tmp_path / "resumed"), "--run_dir", str(tmp_path / "run"),
                timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.output and "vision.pt at step 2" in r.output
    assert "describe.pt was made with other settings" in r.output
    r = run_cli(*common, "--max_steps", "4", "--output_dir", str(tmp_path / "fresh"), "--run_dir", str(tmp_path / "run2"),
                timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == (tmp_path / "fresh" / "model.safetensors").read_bytes()


def test_describe_states_facts_not_questions(kart_data):
    from generate_qa import read_view

    info = json.loads((kart_data / "tiny" / "00000_info.json").read_text())
    clauses = pt.describe(read_view(info, 0))
    assert clauses[0] == f"track {info['track']}" and clauses[1] == f"ego {info['karts'][info['ego'][0]]}"
    assert not any("?" in c for c in clauses)


def test_vision_facts_agree_with_the_descriptions(kart_data):
    from generate_qa import split_views
    from worlds.kart import KARTS, TRACKS

    checked = placed = 0
    for _, view in split_views(kart_data / "tiny"):
        facts, places = pt.view_facts(view)
        clauses = pt.describe(view)
        assert clauses[0] == f"track {list(TRACKS)[facts['track']]}" and len(places) == len(KARTS)
        in_view = {k.name for k in view.others} | ({view.ego.name} if view.ego else set())
        assert all(places[i] == (0, 0) for i, name in enumerate(KARTS) if name not in in_view)  # absent
        if view.ego is None:
            assert facts["ego"] == -100
            continue
        assert clauses[1] == f"ego {list(KARTS)[facts['ego']]}" and places[facts["ego"]] == (1, 1)
        for k in view.others:
            where = places[list(KARTS).index(k.name)]
            if k.hidden or k.tiny:
                assert where == (-100, -100)
            else:
                assert where[0] == (pt.SIDES.index(view.side(k)) if view.side(k) else -100)
                assert where[1] == (pt.DEPTHS.index(view.depth(k)) if view.depth(k) else -100)
                placed += 1
        if facts["karts"] >= 0:
            assert f"{facts['karts']} karts" in clauses
        if facts["left"] >= 0:
            assert f"left {facts['left']} right {facts['right']}" in clauses
        checked += 1
    assert checked > 0 and placed > 0


def test_facts_loss_ignores_unknown_facts_and_is_zero_when_certain():
    logits = {name: torch.full((2, n), -50.0) for name, n in pt.FACT_CLASSES.items()}
    targets = {name: torch.tensor([1, -100]) for name in pt.FACT_CLASSES}
    for name in pt.FACT_CLASSES:
        logits[name][0, 1] = 50.0  # certain and right on the first picture; the second's facts are unknown
    places = torch.tensor([[[0, 0], [2, 3], [-100, -100]], [[1, 1], [-100, 2], [0, 0]]])  # (B=2, karts=3, 2)
    place_logits = torch.full((2, 3, 2, 4), -50.0).scatter(-1, places.clamp(min=0)[..., None], 50.0)
    loss = pt.facts_loss(logits, place_logits, targets, places)
    assert float(loss) < 1e-6
    wrong = pt.facts_loss(logits, place_logits, {n: torch.tensor([0, -100]) for n in pt.FACT_CLASSES}, places)
    assert float(wrong) > 50 * len(pt.FACT_CLASSES) - 1
    # One certain but wrong place among the 9 known ones costs 100 / 9 in the places' mean.
    flipped = place_logits.clone()
    flipped[0, 1, 0] = flipped[0, 1, 0].flip(-1)
    assert float(pt.facts_loss(logits, flipped, targets, places)) == pytest.approx(100 / 9, rel=1e-4)


def test_kart_maps_put_each_seen_kart_on_its_nearest_token(kart_data):
    from generate_qa import split_views
    from worlds.kart import KARTS

    grid = (7, 10)
    seen = 0
    for _, view in split_views(kart_data / "tiny"):
        target, offset = pt.view_map(view, grid)
        assert target.shape == (len(KARTS), *grid) and offset.shape == (len(KARTS), 2)
        karts = ([view.ego] if view.ego else []) + list(view.others)
        for name in set(KARTS) - {k.name for k in karts}:  # absent karts are nowhere
            assert (target[list(KARTS).index(name)] == 0).all()
        for k in karts:
            i = list(KARTS).index(k.name)
            assert np.abs(target[i]).sum() == 1  # exactly one cell: the kart's own, known or ignored
            r, c = map(int, np.argwhere(target[i] != 0)[0])
            assert target[i, r, c] == (-1 if (k.hidden or k.tiny) else 1)
            # The cell plus the offset gives back the kart's centre (inside the picture's grid).
            assert (c + offset[i, 0]) * pt.CELL == pytest.approx(k.cx, abs=1e-3) or c in (0, grid[1] - 1)
            assert (r + offset[i, 1]) * pt.CELL == pytest.approx(k.cy, abs=1e-3) or r in (0, grid[0] - 1)
            seen += target[i, r, c] == 1
    assert seen > 0


def test_map_loss_ignores_hidden_karts_and_is_zero_when_certain():
    target = torch.zeros(2, 3, 2, 2, dtype=torch.int8)  # (B, karts, h, w)
    target[0, 1, 0, 1] = 1  # picture 0: kart 1 at cell (0, 1); kart 2 hidden at cell (1, 1)
    target[0, 2, 1, 1] = -1
    target[1, 0, 1, 0] = 1  # picture 1: kart 0 at cell (1, 0)
    offset = torch.zeros(2, 3, 2)
    offset[0, 1] = torch.tensor([0.25, -0.5])
    out = torch.zeros(2, 4, 3, 3)  # (B, N, karts, 3)
    out[..., 0] = -50.0
    out[0, 1, 1] = torch.tensor([50.0, 0.25, -0.5])
    out[1, 2, 0, 0] = 50.0
    out[0, 3, 2, 0] = 50.0  # the hidden kart's cell: whatever is said there is not counted
    assert float(pt.map_loss(out, target, offset)) < 1e-6
    # A kart missed costs 50 (its positive logit is -50), and an offset 0.5 off costs 0.5,
    # each divided by the two karts seen.
    missed = out.clone()
    missed[1, 2, 0, 0] = -50.0
    assert float(pt.map_loss(missed, target, offset)) == pytest.approx(25.0, rel=1e-4)
    shifted = out.clone()
    shifted[0, 1, 1, 1] = 0.75
    assert float(pt.map_loss(shifted, target, offset)) == pytest.approx(0.25, rel=1e-4)


def _view(track, boxes):
    from generate_qa import View

    return View(track=track, ego=None, others=[], boxes=tuple(boxes))


def test_kart_mask_covers_every_box_widened_by_the_margin():
    mask = pt.kart_mask(_view("abyss", [(10.2, 20.5, 30.0, 40.9), (148.0, 0.0, 150.0, 3.0)]), margin=2)
    assert mask.shape == (100, 150)
    assert mask[20 - 2:41 + 2, 10 - 2:30 + 2].all()  # floor/ceil of the box, then the margin
    assert not mask[20 - 3, 15] and not mask[43, 15] and not mask[30, 10 - 3] and not mask[30, 32]
    assert mask[0:5, 146:150].all()  # clipped at the picture's edge, not wrapped around
    assert not mask[43:].any()


def test_paste_backgrounds_takes_only_backgrounds_of_other_tracks_with_no_kart_left_in_sight():
    big = (40.0, 40.0, 110.0, 95.0)
    views = [_view("abyss", [big]),  # 0: the picture whose karts travel
             _view("abyss", []),  # 1: same track: never a background
             _view("lighthouse", [(0.0, 0.0, 20.0, 20.0)]),  # 2: its kart would stay in sight
             _view("hacienda", [(50.0, 50.0, 90.0, 90.0)]),  # 3: its kart is under 0's box
             _view("minigolf", [])]  # 4: no karts at all
    chosen = set()
    for step in range(200):
        for i, b, mask in pt.paste_backgrounds(views, [0], np.random.default_rng([0, step]), probability=1.0):
            assert i == 0 and b in (3, 4) and mask.sum() == pt.kart_mask(views[0]).sum()
            chosen.add(b)
    assert chosen == {3, 4}
    assert pt.paste_backgrounds(views, [0], np.random.default_rng(0), probability=0.0) == []
    a = pt.paste_backgrounds(views, [0, 0, 0], np.random.default_rng(5), probability=0.5)
    b = pt.paste_backgrounds(views, [0, 0, 0], np.random.default_rng(5), probability=0.5)
    assert [(i, j) for i, j, _ in a] == [(i, j) for i, j, _ in b]


def test_pretrain_with_paste_runs_and_records_it(run_cli, kart_data, tmp_path):
    r = run_cli("-m", "pretraining.base_vlm", "pretrain", "--output_dir", str(tmp_path / "p"), "--split", "tiny",
                "--data_dir", str(kart_data), "--vision_steps", "2", "--max_steps", "1", "--batch_size", "4",
                "--paste", "1.0", "--run_dir", str(tmp_path / "run"), "--threads", "1", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "p" / "pretrain_config.json").read_text())["paste"] == 1.0
    r = run_cli("-m", "pretraining.base_vlm", "pretrain", "--output_dir", str(tmp_path / "q"), "--split", "tiny",
                "--data_dir", str(kart_data), "--paste", "1.5")
    assert r.returncode != 0 and "--paste" in r.stderr and "Traceback" not in r.stderr


def test_cli_help(run_cli):
    """The base's commands in their homes: pretraining (the kit's), test (the student's), throughput (a benchmark)."""
    pretrain = run_cli("-m", "pretraining.base_vlm", "pretrain", "--help").output
    for flag in ("--output_dir", "--learning_rate", "--seed", "--threads", "--overwrite"):
        assert flag in pretrain, flag
    assert "--split" in run_cli("-m", "homework.base_vlm", "test", "--help").output
    assert "--num_questions" in run_cli("-m", "benchmarks.vlm_throughput", "--help").output
