"""The course's real SuperTuxKart files: every quirk of their info files, the course's labelling
rule, its file conventions and grading on an instructor's folder.

The fixtures here are written by the tests, with the quirks of the real recordings: rows of
other classes (the track, pickups, ...) whose second column is no kart id, integer coordinates,
10 karts listed per frame, 3-vector velocities, no `ego` key, and the real rosters' names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import generate_qa as qa
from homework import generate_captions as gc
from homework.data import (
    CaptionDataset,
    MultiChoiceQADataset,
    VQADataset,
    benchmark,
    course_match,
    set_template,
)
from worlds import kart

REAL_KARTS = ["adiumy", "amanda", "beastie", "emule", "gavroche", "gnu", "hexley", "kiki", "konqi", "nolok",
              "pidgin", "puffy", "sara_the_racer", "sara_the_wizard", "suzanne", "tux", "wilber", "xue"]
REAL_TRACKS = ["abyss", "black_forest", "candela_city", "cocoa_temple", "cornfield_crossing", "fortmagma",
               "gran_paradiso_island", "hacienda", "lighthouse", "minigolf", "olivermath", "overworld",
               "ravenbridge_mansion", "sandtrack", "scotland", "snowmountain", "snowtuxpeak", "tutorial",
               "volcano_island", "xr591", "zengarden"]
NAMES = ["gnu", "sara_the_wizard", "konqi", "xue", "beastie", "suzanne", "amanda", "pidgin", "tux", "adiumy"]

# One hand-checked view (600x400 box coordinates; the picture is 150x100, a quarter of that):
#   ego gnu       [252,146,346,239] -> (63,36,86,59), centre (74.5, 47.5): nearest the centre (75, 50)
#   konqi         [383,162,422,193] -> (95,40,105,48): right, in front
#   xue           [200,170,250,230] -> (50,42,62,57), centre (56, 49.5): left, behind
#   beastie       [282,100,316,130] -> (70,25,79,32), centre (74.5, 28.5): cx ties the ego's -> left; in front
#   suzanne       [103,150,122,190] -> (25,37,30,47): 5 px wide truncated (4.75 px unscaled): counted
#                                       by the course's rule, too small for the kit's; left, in front
#   sara_the_wizard [100,300,119,340] -> (25,75,29,85): 4 px wide, dropped by both
#   tux (cy ties) [480,146,520,239] -> (120,36,130,59), centre (125, 47.5): right; cy ties -> behind
HAND_VIEW = [
    [1, 0, 252, 146, 346, 239], [1, 2, 383, 162, 422, 193], [1, 3, 200, 170, 250, 230],
    [1, 4, 282, 100, 316, 130], [1, 5, 103, 150, 122, 190], [1, 1, 100, 300, 119, 340],
    [1, 8, 480, 146, 520, 239],
    [2, 0, 0, 155, 599, 399], [3, 97, 0, 0, 599, 399], [3, 245, 0, 0, 205, 149], [8, 255, 10, 10, 30, 30],
]


def real_info(views: list[list[list]], track: str = "xr591") -> dict:
    """An info file as the real recordings write it: no `ego`, ints, 3-vector velocities."""
    return {"track": track, "karts": NAMES, "detections": views,
            "distance_down_track": [float(100 + i) for i in range(len(NAMES))],
            "velocity": [[-5.5, 0.05, -16.1] for _ in NAMES]}


def write_split(folder: Path, infos: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f, info in enumerate(infos):
        (folder / f"{f:05x}_info.json").write_text(json.dumps(info))
        for v in range(len(info["detections"])):
            colour = tuple(int(c) for c in np.random.default_rng([f, v]).integers(0, 255, 3))
            Image.new("RGB", (150, 100), colour).save(folder / f"{f:05x}_{v:02d}_im.jpg")
    return folder


@pytest.fixture
def real_data(tmp_path) -> Path:
    """A data dir whose `valid` split has two real-style frames of three views each."""
    other = [[1, 6, 280, 150, 330, 240], [1, 7, 100, 120, 140, 150], [3, 50, 0, 0, 599, 399], [4, 12, 5, 5, 9, 9]]
    lonely = [[1, 9, 270, 160, 330, 230], [2, 0, 0, 155, 599, 399]]
    write_split(tmp_path / "valid", [real_info([HAND_VIEW, other, lonely]), real_info([other, lonely, []], "tutorial")])
    return tmp_path


def test_the_rosters_hold_every_real_kart_and_track():
    assert set(REAL_KARTS) <= set(kart.KARTS) and set(REAL_TRACKS) <= set(kart.TRACKS)
    from homework.modeling_kart_vlm import build_tokenizer

    tok = build_tokenizer()
    unk = tok.convert_tokens_to_ids("[UNK]")
    for name in REAL_KARTS + REAL_TRACKS:
        assert unk not in tok(f"{name} is the ego car .", add_special_tokens=False)["input_ids"], name
    looks = [(look.body, look.shape, look.mark) for look in kart.KARTS.values()]
    assert len(set(looks)) == len(looks)  # each kart has a look of its own


def test_the_original_rules_on_a_hand_checked_view():
    got = {(q, a) for _, q, a in qa.view_questions(qa.read_view(real_info([HAND_VIEW]), 0, "original"))}
    expected = {("What kart is the ego car?", "gnu"), ("What track is this?", "xr591"),
                ("How many karts are there in the scenario?", "6")}
    for name, lr, fb in [("konqi", "right", "front"), ("xue", "left", "back"), ("beastie", "left", "front"),
                         ("suzanne", "left", "front"), ("tux", "right", "back")]:
        expected |= {(f"Is {name} to the left or right of the ego car?", lr),
                     (f"Is {name} in front of or behind the ego car?", fb),
                     (f"Where is {name} relative to the ego car?", f"{fb} and {lr}")}
    expected |= {("How many karts are to the left of the ego car?", "3"),
                 ("How many karts are to the right of the ego car?", "2"),
                 ("How many karts are in front of the ego car?", "3"),
                 ("How many karts are behind the ego car?", "2")}
    assert got == expected


def test_the_original_rules_never_ask_a_count_of_zero_and_the_kit_rules_still_do():
    view = [[1, 0, 252, 146, 346, 239], [1, 2, 383, 162, 422, 193]]  # one kart, right and in front
    original = {t: a for t, _, a in qa.view_questions(qa.read_view(real_info([view]), 0, "original"))}
    assert original["count_right"] == "1" and original["count_front"] == "1"
    assert "count_left" not in original and "count_back" not in original
    kit = {t: a for t, _, a in qa.view_questions(qa.read_view(real_info([view]), 0, "kit"))}
    assert kit.get("count_left") == "0"


def test_the_kit_rules_ignore_other_classes_and_keep_their_margins():
    view = qa.read_view(real_info([HAND_VIEW]), 0, "kit")
    assert view.ego.name == "gnu" and view.rules.name == "kit"
    assert {k.name for k in view.others} == {"konqi", "xue", "beastie", "suzanne", "sara_the_wizard", "tux"}
    by_name = {k.name: k for k in view.others}
    assert by_name["suzanne"].tiny and by_name["sara_the_wizard"].tiny
    assert view.side(by_name["beastie"]) is None  # level with the ego: not asked under the kit's rule
    # a pickup's box nearer the camera's anchor than any kart's is no kart
    assert kart.find_ego([[1, 2, 383, 162, 422, 193], [4, 5, 250, 230, 350, 340]]) == 2


def test_check_gallery_and_generate_run_on_real_style_files(real_data, tmp_path, capsys):
    info = real_data / "valid" / "00000_info.json"
    for rules in ("kit", "original"):
        qa.check(info_file=str(info), view_index=0, output=str(tmp_path / f"check_{rules}.png"), rules=rules)
        assert Image.open(tmp_path / f"check_{rules}.png").size == (600, 400)
    assert "[ego] What kart is the ego car? -> gnu" in capsys.readouterr().out
    kart.gallery(split="valid", data_dir=str(real_data), num_frames=2, num_views=3, output=str(tmp_path / "g.png"))
    assert Image.open(tmp_path / "g.png").size[0] == 3 * 150 * 3

    qa.generate(split="valid", data_dir=str(real_data), rules="original", balanced="false")
    pairs = json.loads((real_data / "valid" / "all_qa_pairs.json").read_text())
    hand = {(p["question"], p["answer"]) for p in pairs if p["image_file"] == "valid/00000_00_im.jpg"}
    assert hand == {(q, a) for _, q, a in qa.view_questions(qa.read_view(real_info([HAND_VIEW]), 0, "original"))}
    assert not any(p["image_file"].endswith("00001_02_im.jpg") for p in pairs)  # a view without karts asks nothing

    gc.generate(split="valid", data_dir=str(real_data), rules="original")
    captions = {c["caption"] for c in json.loads((real_data / "valid" / "all_captions.json").read_text())
                if c["image_file"] == "valid/00000_00_im.jpg"}
    assert {"gnu is the ego car.", "There are 6 karts in the scene.", "The track is xr591.",
            "beastie is left of the ego car.", "beastie is in front of the ego car.",
            "tux is behind the ego car.", "suzanne is in front of the ego car."} <= captions
    assert not any("sara_the_wizard" in c for c in captions)  # under 5 px: dropped


def test_original_multiple_choice_sets_mix_templates_and_hold_one_true_caption(real_data):
    rng = np.random.default_rng(0)
    view = qa.read_view(real_info([HAND_VIEW]), 0, "original")
    true = {c for _, c in gc.view_captions(view)}
    kinds = set()
    for _ in range(200):
        template, candidates, right = gc.view_multiple_choice(view, rng)
        assert len(candidates) == gc.NUM_CANDIDATES == len(set(candidates))
        assert [c in true for c in candidates].count(True) == 1 and candidates[right] in true
        assert gc.caption_template(candidates[right]) == template
        kinds |= {gc.caption_template(c) for i, c in enumerate(candidates) if i != right}
    assert kinds == {"track", "ego", "count"}


@pytest.mark.parametrize("change, message", [
    (lambda i: i.update(track="rainbow_road"), "track 'rainbow_road', which the kit does not know"),
    (lambda i: i["karts"].__setitem__(3, "mario"), "kart 'mario', which the kit does not know"),
    (lambda i: i["detections"][0].append([1, 10, 0, 0, 50, 50]), "names kart id 10, but the file lists 10 karts"),
    (lambda i: i.pop("detections"), "is not a kart info file"),
])
def test_bad_info_files_stop_with_one_line(real_data, capsys, change, message):
    path = real_data / "valid" / "00000_info.json"
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))
    for command in (lambda: qa.check(info_file=str(path), view_index=0, output=str(real_data / "x.png")),
                    lambda: qa.generate(split="valid", data_dir=str(real_data)),
                    lambda: kart.gallery(split="valid", data_dir=str(real_data), output=str(real_data / "g.png"))):
        with pytest.raises(SystemExit) as e:
            command()
        assert message in str(e.value) and "\n" not in str(e.value)


def test_split_names_are_plain_folder_names(tmp_path):
    for bad in ("../homework", "/abs", "a/b", ".."):
        with pytest.raises(SystemExit, match="--split must be a plain folder name"):
            kart.generate(split=bad, num_frames=1, data_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_the_loaders_read_the_course_file_conventions(real_data):
    """Per-frame *_qa_pairs.json and *_captions.json, example_captions.json, a valid_grader folder
    naming valid's pictures; a record in two files is read once."""
    valid = real_data / "valid"
    one = {"image_file": "valid/00000_00_im.jpg", "question": "What track is this?", "answer": "xr591"}
    two = {"image_file": "valid/00001_01_im.jpg", "question": "What track is this?", "answer": "tutorial"}
    (valid / "00000_qa_pairs.json").write_text(json.dumps([one]))
    (valid / "00001_qa_pairs.json").write_text(json.dumps([two, one]))
    assert [r["answer"] for r in VQADataset("valid", data_dir=str(real_data)).records] == ["xr591", "tutorial"]

    (valid / "example_captions.json").write_text(json.dumps([{"image_file": one["image_file"], "caption": "gnu is the ego car."}]))
    (valid / "00000_captions.json").write_text(json.dumps([{"image_file": two["image_file"], "caption": "The track is tutorial."}]))
    captions = CaptionDataset("valid", data_dir=str(real_data))
    assert len(captions) == 2 and not (valid / "all_captions.json").exists()  # read, not made

    grader_dir = real_data / "valid_grader"
    grader_dir.mkdir()
    (grader_dir / "balanced_qa_pairs.json").write_text(json.dumps([one, two]))
    sets = [{"image_file": one["image_file"], "candidates": ["The track is abyss.", "gnu is the ego car.",
                                                             "There are 0 karts in the scene."], "correct_index": 1}]
    (grader_dir / "all_mc_qas.json").write_text(json.dumps(sets))
    assert VQADataset("valid_grader", data_dir=str(real_data))[0]["image_path"] == str(valid / "00000_00_im.jpg")
    assert MultiChoiceQADataset("valid_grader", data_dir=str(real_data))[0]["template"] == "ego"
    assert set_template({"template": "left", **sets[0]}) == "left"

    (valid / "00000_00_im.jpg").unlink()
    with pytest.raises(SystemExit, match=r"1 of the 2 pictures named by balanced_qa_pairs.json are missing") as e:
        VQADataset("valid_grader", data_dir=str(real_data))
    assert "\n" not in str(e.value)


def test_spread_takes_evenly_spaced_records(real_data):
    qa.generate(split="valid", data_dir=str(real_data), rules="original", balanced=False)
    everything = VQADataset("valid", data_dir=str(real_data)).records
    spread = VQADataset("valid", data_dir=str(real_data), max_samples=3, spread=True).records
    assert spread == [everything[i * len(everything) // 3] for i in range(3)]
    assert VQADataset("valid", data_dir=str(real_data), max_samples=3).records == everything[:3]


def test_the_course_matching_is_a_prefix_match():
    assert course_match("3 karts", "3") and course_match(" Front and left", "front and left")
    assert not course_match("three", "3") and not course_match("left", "front and left")

    class Echo:
        def answer(self, images, questions):
            return ["xr591 it is" if "track" in q else "nope" for q in questions]

    records = [{"image_path": "x", "question": "What track is this?", "answer": "xr591"},
               {"image_path": "x", "question": "What kart is the ego car?", "answer": "gnu"}]
    result = benchmark(Echo(), records, progress=False)
    assert result.accuracy == 0.0 and result.course_accuracy == 0.5
    assert result.course_per_family == {"ego": 0.0, "track": 1.0}
    assert "course" in result.table()


def test_the_grader_grades_on_an_instructors_folder(real_data, tmp_path):
    """`--kart_data DIR`: the VLM and CLIP inputs come from DIR's files, the labels stay apart."""
    from grader import heldout

    qa.generate(split="valid", data_dir=str(real_data), rules="original", balanced=False)
    gc.generate(split="valid", data_dir=str(real_data), rules="original")
    held = heldout.prepare(7, "tiny", tmp_path / "cache", ("vlm", "clip"), log=lambda *_: None,
                           kart_data=real_data / "valid")
    labels, inputs = held.labels("vlm"), held.inputs("vlm")
    questions = json.loads((inputs / "questions.json").read_text())
    assert len(questions) == len(labels["answers"]) == 30  # sampled down to the tiny size's 30
    assert all(set(q) == {"image", "question"} and (inputs / q["image"]).is_file() for q in questions)
    assert not list(inputs.rglob("labels.json"))
    sets = json.loads((held.inputs("clip") / "sets.json").read_text())
    assert len(sets) == len(held.labels("clip")["correct"]) == 5  # every view with a kart, fewer than 20
    assert set(held.labels("clip")["templates"]) <= set(gc.CAPTIONS)
    assert not (tmp_path / "cache" / "7-tiny" / "kart").exists()  # nothing was rendered
    heldout.export(held, tmp_path / "exported", ("vlm", "clip"))  # what the Gradescope zip carries
    exported = heldout.open_folder(tmp_path / "exported", ("vlm", "clip"))
    assert exported.labels("vlm") == labels and exported.labels("clip") == held.labels("clip")

    with pytest.raises(SystemExit, match=r"has no \*_mc_qas.json for the clip part"):
        (real_data / "valid" / "all_mc_qas.json").unlink()
        heldout.prepare(7, "tiny", tmp_path / "cache", ("vlm", "clip"), kart_data=real_data / "valid")
    with pytest.raises(SystemExit, match="is not a folder"):
        heldout.prepare(7, "tiny", tmp_path / "cache", ("vlm",), kart_data=real_data / "nothing")


def test_the_real_data_references_stand_on_the_real_data_base(real_data):
    """homework/checkpoints/vlm_stk and clip_stk: fine-tuned on the tiny_stk base, within their size
    limits, and they load and answer (their accuracy on the course's data is benchmarks/real_stk.py's)."""
    from homework import base_vlm as bv
    from homework.checkpoint import LIMITS
    from homework.clip import load_model, predict
    from homework.finetune import load_finetuned

    fingerprint = (bv.BASES["tiny_stk"][0] / bv.FINGERPRINT_FILE).read_text().strip()
    assert fingerprint != (bv.TINY_BASE_DIR / bv.FINGERPRINT_FILE).read_text().strip()
    assert (bv.BASES["tiny_stk"][0] / "model.safetensors").stat().st_size < 10 * 2**20
    picture = real_data / "valid" / "00000_00_im.jpg"
    for name, kind in (("vlm_stk", "vlm"), ("clip_stk", "clip")):
        folder = bv.KIT_ROOT / "homework" / "checkpoints" / name
        record = json.loads((folder / "training_config.json").read_text())
        assert record["base"] == "tiny_stk" and record["base_fingerprint"] == fingerprint
        assert (folder / "adapter_model.safetensors").stat().st_size < LIMITS[kind].max_mb * 2**20
    answers = load_finetuned(bv.KIT_ROOT / "homework" / "checkpoints" / "vlm_stk").answer([picture], ["What track is this?"])
    assert answers[0] in kart.TRACKS
    pick = predict(load_model(bv.KIT_ROOT / "homework" / "checkpoints" / "clip_stk"), [picture],
                   [["The track is xr591.", "The track is abyss."]])
    assert pick[0] in (0, 1)
