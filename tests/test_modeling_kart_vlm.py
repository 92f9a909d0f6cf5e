"""The kit's VLM model file: its tokenizer covers the kit's words, the forward pass's shapes and loss, training lowers it."""

from __future__ import annotations

from pathlib import Path

import torch

from homework import base_vlm as bv
from homework import modeling_kart_vlm as mk
from homework import vlm_inputs as vi

DEMO = Path(__file__).resolve().parents[1] / "data" / "train_demo"


def test_tokenizer_covers_the_kit_vocabulary():
    from generate_qa import TEMPLATES
    from worlds.kart import KARTS, TRACKS

    tok = mk.build_tokenizer()
    for text in [*TEMPLATES.values(), *KARTS, *TRACKS, "front and left", "3"]:
        ids = tok.encode(text.replace("{kart}", "sara_the_racer"), add_special_tokens=False)
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids).replace(" ?", "?") == text.lower().replace("{kart}", "sara_the_racer")


def test_forward_shapes_and_loss_only_on_the_answer(random_base):
    vlm = bv.BaseVLM(str(random_base), device="cpu")
    ids, mask, labels = vi.text_batch(vlm.tokenizer, ["What track is this?"] * 2, ["abyss", "front and left"])
    assert (labels[0] != -100).sum() == 2 and (labels[1] != -100).sum() == 4  # answer words + [EOS]
    pixels = vi.pixel_values([DEMO / "00000_00_im.jpg", DEMO / "00000_01_im.jpg"])
    assert pixels.shape == (2, 3, 100, 150)
    out = vlm.model(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, vlm.model.num_image_tokens + ids.shape[1], len(vlm.tokenizer))
    assert torch.isfinite(out.loss)


def test_a_few_steps_lower_the_loss(random_base):
    vlm = bv.BaseVLM(str(random_base), device="cpu")
    model = vlm.model.train()
    ids, mask, labels = vi.text_batch(vlm.tokenizer, [mk.DESCRIBE_PROMPT] * 4, ["track abyss . ego tux . 3 karts"] * 4)
    pixels = vi.pixel_values([DEMO / f"00000_0{i}_im.jpg" for i in range(4)])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss = model(pixel_values=pixels, input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_the_tokenizer_is_the_committed_bases():
    """One source of truth for the words: the vocabulary built from the kit's templates, rosters
    and number words is exactly the one each committed base was pretrained with."""
    from transformers import PreTrainedTokenizerFast

    for name, (folder, _) in bv.BASES.items():
        committed = PreTrainedTokenizerFast.from_pretrained(folder)
        assert mk.build_tokenizer().get_vocab() == committed.get_vocab(), name
