"""BaseVLM: batched answer(), save/load, fingerprints, SmolVLM-family loading, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from homework import base_vlm as bv
from homework import modeling_kart_vlm as mk

DEMO = Path(__file__).resolve().parents[1] / "data" / "train_demo"


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

    tok = mk.build_tokenizer()
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
