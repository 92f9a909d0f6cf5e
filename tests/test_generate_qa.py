"""Question-answer pairs: a hand-checked frame, agreement with the world, balance, the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

import generate_qa as qa
from worlds import kart

EGO_X, EGO_Y = kart.EGO_ANCHOR


def box(cx: float, cy: float, w: float, h: float) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def hand_frame() -> dict:
    """Ego (tux) in the middle; gnu clearly ahead and left; kiki clearly behind and right;
    amanda level with the ego on its right; puffy mostly hidden behind kiki."""
    return {
        "track": "lighthouse",
        "karts": ["tux", "gnu", "kiki", "amanda", "puffy"],
        "detections": [[
            [1, 0, *box(EGO_X, EGO_Y, 86, 72)],
            [1, 1, *box(EGO_X - 120, EGO_Y - 80, 40, 34)],
            [1, 2, *box(EGO_X + 150, EGO_Y + 50, 120, 100)],
            [1, 3, *box(EGO_X + 200, EGO_Y + 4, 86, 72)],
            [1, 4, *box(EGO_X + 150, EGO_Y + 40, 60, 50)],
        ]],
        "distance_down_track": [0, 0, 0, 0, 0],
        "velocity": [[0, 0, 0]] * 5,
    }


def test_hand_checked_frame():
    view = qa.read_view(hand_frame(), 0)
    got = {(t, q, a) for t, q, a in qa.view_questions(view)}
    assert ("ego", "What kart is the ego car?", "tux") in got
    assert ("track", "What track is this?", "lighthouse") in got
    assert ("left_right", "Is gnu to the left or right of the ego car?", "left") in got
    assert ("front_back", "Is gnu in front of or behind the ego car?", "front") in got
    assert ("where", "Where is gnu relative to the ego car?", "front and left") in got
    assert ("where", "Where is kiki relative to the ego car?", "back and right") in got
    assert ("left_right", "Is amanda to the left or right of the ego car?", "right") in got
    # amanda is level with the ego: no front/behind question about her, and no front/behind counts
    assert not any("amanda" in q and t in ("front_back", "where") for t, q, _ in got)
    assert not any(t in ("count_front", "count_back") for t, _, _ in got)
    # puffy is mostly hidden: never asked about, and the scene's count is not asked either
    assert not any("puffy" in q for _, q, _ in got)
    assert not any(t in ("count", "count_left", "count_right") for t, _, _ in got)


def test_counts_when_everything_is_visible():
    info = hand_frame()
    info["detections"][0] = info["detections"][0][:3]  # ego, gnu, kiki
    got = {t: a for t, _, a in qa.view_questions(qa.read_view(info, 0))}
    assert got["count"] == "3"
    assert (got["count_left"], got["count_right"], got["count_front"], got["count_back"]) == ("1", "1", "1", "1")


def test_tiny_kart_is_not_counted_and_blocks_the_count():
    info = hand_frame()
    info["detections"][0] = info["detections"][0][:2] + [[1, 2, *box(EGO_X + 40, EGO_Y - 120, 12, 10)]]
    got = {t: a for t, _, a in qa.view_questions(qa.read_view(info, 0))}
    assert "count" not in got
    assert not any("kiki" in q for _, q, _ in qa.view_questions(qa.read_view(info, 0)))


def test_every_answer_agrees_with_the_world(kart_data):
    """Ego and counts against the world's own record; front/back against distance down the track."""
    pairs = json.loads((kart_data / "tiny" / "balanced_qa_pairs.json").read_text())
    assert pairs
    for p in pairs:
        frame, view = p["image_file"].split("/")[1].split("_")[:2]
        info = json.loads((kart_data / "tiny" / f"{frame}_info.json").read_text())
        ego = info["ego"][int(view)]
        s = info["distance_down_track"]
        template = qa.question_template(p["question"])
        if template == "ego":
            assert p["answer"] == info["karts"][ego]
        elif template == "count":
            assert int(p["answer"]) == len(info["detections"][int(view)])
        elif template == "track":
            assert p["answer"] == info["track"]
        elif template in ("front_back", "where"):
            name = re.match(r"(?:Is|Where is) (\S+) ", p["question"]).group(1)
            other = info["karts"].index(name)
            assert p["answer"].startswith("front") == (s[other] > s[ego])


def test_balance_on_a_real_split(tmp_path):
    kart.generate(split="bal", num_frames=40, seed=21, data_dir=str(tmp_path), num_views=10, workers=2)
    qa.generate(split="bal", data_dir=str(tmp_path))
    pairs = json.loads((tmp_path / "bal" / "balanced_qa_pairs.json").read_text())
    families = Counter(qa.question_family(p["question"]) for p in pairs)
    assert set(families) == set(qa.FAMILIES)
    assert max(families.values()) <= 2 * min(families.values())
    for template in ("left_right", "front_back"):  # two-answer templates are split evenly
        answers = Counter(p["answer"] for p in pairs if qa.question_template(p["question"]) == template)
        assert len(answers) == 2 and len(set(answers.values())) == 1
    for family in ("ego", "track", "count"):
        answers = Counter(p["answer"] for p in pairs if qa.question_family(p["question"]) == family)
        assert max(answers.values()) / sum(answers.values()) < 0.35
    assert json.loads((tmp_path / "bal" / "balanced_qa_stats.json").read_text())["ego"]["total"] == families["ego"]


@pytest.mark.parametrize("template", list(qa.TEMPLATES))
def test_question_family_recognises_every_template(template):
    question = qa.TEMPLATES[template].format(kart="sara_the_racer")
    assert qa.question_template(question) == template
    assert qa.question_family(question) == qa.TEMPLATE_FAMILY[template]


def test_unknown_question_is_other():
    assert qa.question_family("What colour is the sky?") == "other"


def test_check_cli(run_cli, kart_data, tmp_path):
    out = tmp_path / "check.png"
    r = run_cli("generate_qa.py", "check", "--info_file", str(kart_data / "tiny" / "00001_info.json"),
                "--view_index", "2", "--output", str(out))
    assert r.returncode == 0, r.stderr
    assert "What kart is the ego car?" in r.stdout and out.stat().st_size > 0
    r = run_cli("generate_qa.py", "check", "--info_file", str(kart_data / "tiny" / "00001_info.json"), "--view_index", "9")
    assert r.returncode != 0 and "out of range" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("generate_qa.py", "check", "--info_file", str(tmp_path / "nope_info.json"))
    assert r.returncode != 0 and "no info file" in r.stderr and "Traceback" not in r.stderr
    assert "--split" in run_cli("generate_qa.py", "generate", "--help").output


def test_unknown_split_without_data_says_how_to_make_it(tmp_path):
    with pytest.raises(SystemExit, match="python -m worlds kart --split mystery --seed"):
        qa.generate(split="mystery", data_dir=str(tmp_path))
