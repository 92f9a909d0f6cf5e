"""The base VLM: tokenizer, model, answer(), save/load, fingerprints, SmolVLM-family loading, pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from homework import base_vlm as bv

DEMO = Path(__file__).resolve().parents[1] / "data" / "train_demo"


def test_tokenizer_covers_the_kit_vocabulary():
    from generate_qa import TEMPLATES
    from worlds.kart import KARTS, TRACKS

    tok = bv.build_tokenizer()
    for text in [*TEMPLATES.values(), *KARTS, *TRACKS, "front and left", "3"]:
        ids = tok.encode(text.replace("{kart}", "sara_the_racer"), add_special_tokens=False)
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids).replace(" ?", "?") == text.lower().replace("{kart}", "sara_the_racer")


def test_forward_shapes_and_loss_only_on_the_answer(random_base):
    vlm = bv.BaseVLM(str(random_base), device="cpu")
    ids, mask, labels = bv.text_batch(vlm.tokenizer, ["What track is this?"] * 2, ["abyss", "front and left"])
    assert (labels[0] != -100).sum() == 2 and (labels[1] != -100).sum() == 4  # answer words + [EOS]
    pixels = bv.pixel_values([DEMO / "00000_00_im.jpg", DEMO / "00000_01_im.jpg"])
    assert pixels.shape == (2, 3, 100, 150)
    out = vlm.model(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, vlm.model.num_image_tokens + ids.shape[1], len(vlm.tokenizer))
    assert torch.isfinite(out.loss)


def test_a_few_steps_lower_the_loss(random_base):
    vlm = bv.BaseVLM(str(random_base), device="cpu")
    model = vlm.model.train()
    ids, mask, labels = bv.text_batch(vlm.tokenizer, [bv.DESCRIBE_PROMPT] * 4, ["track abyss . ego tux . 3 karts"] * 4)
    pixels = bv.pixel_values([DEMO / f"00000_0{i}_im.jpg" for i in range(4)])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss = model(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_batched_answers_match_one_at_a_time(random_base):
    vlm = bv.BaseVLM(str(random_base), device="cpu")
    images = [DEMO / "00001_00_im.jpg", DEMO / "00002_03_im.jpg", DEMO / "00003_05_im.jpg"]
    questions = ["What track is this?", "Is tux in front of or behind the ego car?", "How many karts are there in the scenario?"]
    batched = vlm.answer(images, questions)
    assert batched == [vlm.answer([i], [q])[0] for i, q in zip(images, questions, strict=True)]
    assert all(isinstance(a, str) for a in batched)


def test_save_and_load_give_identical_answers(random_base, tmp_path):
    vlm = bv.BaseVLM(str(random_base), device="cpu")
    vlm.model.save_pretrained(tmp_path)
    vlm.tokenizer.save_pretrained(tmp_path)
    again = bv.BaseVLM(str(tmp_path), device="cpu")
    images, questions = [DEMO / "00004_02_im.jpg"] * 2, ["What kart is the ego car?", "What track is this?"]
    assert again.answer(images, questions) == vlm.answer(images, questions)
    assert bv.weights_fingerprint(again.model) == (random_base / bv.FINGERPRINT_FILE).read_text()


def test_the_committed_base_matches_its_fingerprint():
    assert (bv.TINY_BASE_DIR / "model.safetensors").stat().st_size < 25 * 2**20
    vlm = bv.BaseVLM("tiny", device="cpu")
    assert bv.weights_fingerprint(vlm.model) == (bv.TINY_BASE_DIR / bv.FINGERPRINT_FILE).read_text().strip()


def test_unreadable_image_is_a_clear_error(random_base, tmp_path):
    bad = tmp_path / "x_im.jpg"
    bad.write_text("not a picture")
    with pytest.raises(ValueError, match="cannot read image"):
        bv.BaseVLM(str(random_base), device="cpu").answer([bad], ["What track is this?"])


def _tiny_idefics3(out: Path) -> None:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    tok = bv.build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<global-img>", "<fake_token_around_image>", "<image>",
                                                          "<end_of_utterance>"]
                            + [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]})
    template = ("{% for m in messages %}User:{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
                "{% else %} {{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
                "{% if add_generation_prompt %}Assistant:{% endif %}")
    images = Idefics3ImageProcessor(do_resize=True, size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                                    do_image_splitting=False)
    processor = Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=4, chat_template=template)
    config = Idefics3Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        text_config={"model_type": "llama", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
                     "pad_token_id": tok.pad_token_id},
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)


def test_a_smolvlm_family_model_from_a_local_directory(tmp_path):
    _tiny_idefics3(tmp_path)
    vlm = bv.BaseVLM(str(tmp_path), device="cpu")
    assert vlm.kind == "idefics3"
    answers = vlm.answer([DEMO / "00000_00_im.jpg", DEMO / "00001_01_im.jpg"], ["What track is this?", "How many?"])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_a_hub_name_offline_fails_in_one_line():
    with pytest.raises(SystemExit) as e:
        bv.BaseVLM("HuggingFaceTB/SmolVLM-256M-Instruct", device="cpu")
    assert "offline" in str(e.value) and "\n" not in str(e.value)


def test_pretrain_is_deterministic_across_processes(run_cli, kart_data, tmp_path):
    outs = []
    for name in ("a", "b"):
        r = run_cli("-m", "homework.base_vlm", "pretrain", "--output_dir", str(tmp_path / name), "--split", "tiny",
                    "--data_dir", str(kart_data), "--vision_steps", "2", "--max_steps", "3", "--batch_size", "4",
                    "--run_dir", str(tmp_path / f"run_{name}"), timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append((tmp_path / name / "model.safetensors").read_bytes())
    assert outs[0] == outs[1]
    assert json.loads((tmp_path / "a" / "pretrain_config.json").read_text())["max_steps"] == 3
    r = run_cli("-m", "homework.base_vlm", "pretrain", "--output_dir", str(tmp_path / "a"), "--split", "tiny",
                "--data_dir", str(kart_data), "--max_steps", "3")
    assert r.returncode != 0 and "--overwrite" in r.stderr and "Traceback" not in r.stderr


def test_a_longer_description_stage_resumes_the_vision_stage_and_gives_the_same_base(run_cli, kart_data, tmp_path):
    common = ["-m", "homework.base_vlm", "pretrain", "--split", "tiny", "--data_dir", str(kart_data),
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
    clauses = bv.describe(read_view(info, 0))
    assert clauses[0] == f"track {info['track']}" and clauses[1] == f"ego {info['karts'][info['ego'][0]]}"
    assert not any("?" in c for c in clauses)


def test_vision_facts_agree_with_the_descriptions(kart_data):
    from generate_qa import depth, side, split_views
    from worlds.kart import KARTS, TRACKS

    checked = placed = 0
    for _, view in split_views(kart_data / "tiny"):
        facts, places = bv.view_facts(view)
        clauses = bv.describe(view)
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
                assert where[0] == (bv.SIDES.index(side(k, view.ego)) if side(k, view.ego) else -100)
                assert where[1] == (bv.DEPTHS.index(depth(k, view.ego)) if depth(k, view.ego) else -100)
                placed += 1
        if facts["karts"] >= 0:
            assert f"{facts['karts']} karts" in clauses
        if facts["left"] >= 0:
            assert f"left {facts['left']} right {facts['right']}" in clauses
        checked += 1
    assert checked > 0 and placed > 0


def test_facts_loss_ignores_unknown_facts_and_is_zero_when_certain():
    logits = {name: torch.full((2, n), -50.0) for name, n in bv.FACT_CLASSES.items()}
    targets = {name: torch.tensor([1, -100]) for name in bv.FACT_CLASSES}
    for name in bv.FACT_CLASSES:
        logits[name][0, 1] = 50.0  # certain and right on the first picture; the second's facts are unknown
    places = torch.tensor([[[0, 0], [2, 3], [-100, -100]], [[1, 1], [-100, 2], [0, 0]]])  # (B=2, karts=3, 2)
    place_logits = torch.full((2, 3, 2, 4), -50.0).scatter(-1, places.clamp(min=0)[..., None], 50.0)
    loss = bv.facts_loss(logits, place_logits, targets, places)
    assert float(loss) < 1e-6
    wrong = bv.facts_loss(logits, place_logits, {n: torch.tensor([0, -100]) for n in bv.FACT_CLASSES}, places)
    assert float(wrong) > 50 * len(bv.FACT_CLASSES) - 1
    # One certain but wrong place among the 9 known ones costs 100 / 9 in the places' mean.
    flipped = place_logits.clone()
    flipped[0, 1, 0] = flipped[0, 1, 0].flip(-1)
    assert float(bv.facts_loss(logits, flipped, targets, places)) == pytest.approx(100 / 9, rel=1e-4)


def test_kart_maps_put_each_seen_kart_on_its_nearest_token(kart_data):
    from generate_qa import split_views
    from worlds.kart import KARTS

    grid = (7, 10)
    seen = 0
    for _, view in split_views(kart_data / "tiny"):
        target, offset = bv.view_map(view, grid)
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
            assert (c + offset[i, 0]) * bv.CELL == pytest.approx(k.cx, abs=1e-3) or c in (0, grid[1] - 1)
            assert (r + offset[i, 1]) * bv.CELL == pytest.approx(k.cy, abs=1e-3) or r in (0, grid[0] - 1)
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
    assert float(bv.map_loss(out, target, offset)) < 1e-6
    # A kart missed costs 50 (its positive logit is -50), and an offset 0.5 off costs 0.5,
    # each divided by the two karts seen.
    missed = out.clone()
    missed[1, 2, 0, 0] = -50.0
    assert float(bv.map_loss(missed, target, offset)) == pytest.approx(25.0, rel=1e-4)
    shifted = out.clone()
    shifted[0, 1, 1, 1] = 0.75
    assert float(bv.map_loss(shifted, target, offset)) == pytest.approx(0.25, rel=1e-4)


def test_cli_help(run_cli):
    for command in ("pretrain", "test", "benchmark"):
        assert "--" in run_cli("-m", "homework.base_vlm", command, "--help").output
