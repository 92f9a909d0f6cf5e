"""The base vision-language model: the kit's own small VLM, or a SmolVLM-family model.

`BaseVLM(base)` answers questions about pictures with one batched method, `answer()`.

- `base="tiny"` (the default) is the kit's own pretrained model (homework/modeling_kart_vlm.py),
  committed in `data/base_vlm/` with a fingerprint of its weights. It was pretrained to
  *describe* kart scenes of the kit's world (`python -m pretraining.base_vlm pretrain`), never on
  the assignment's questions.
- `base="tiny_stk"` is the same model pretrained the same way on the course's real SuperTuxKart
  training frames, under the course's labelling rule (`data/base_vlm_stk/`).
- Any other value is a SmolVLM-family model (`Idefics3ForConditionalGeneration`), by local
  directory or hub name, e.g. `HuggingFaceTB/SmolVLM-256M-Instruct`.

    python -m homework.base_vlm test                # the base's accuracy on valid (before fine-tuning)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import fire
import torch
from transformers import PreTrainedTokenizerFast

from homework.checkpoint import weights_fingerprint  # noqa: F401 (the bases' fingerprint, imported from here too)
from homework.cli_checks import check_int, fail
from homework.modeling_kart_vlm import KartVLMForConditionalGeneration
from homework.vlm_inputs import load_image, pad, pixel_values, prompt_ids

KIT_ROOT = Path(__file__).resolve().parents[1]
TINY_BASE_DIR = KIT_ROOT / "data" / "base_vlm"
# The kit's own bases, by name: (folder, the command that makes it). The one place that names them.
BASES = {
    "tiny": (TINY_BASE_DIR, "python -m pretraining.base_vlm pretrain --vision_steps 10000 --max_steps 10000 --threads 2"),
    "tiny_stk": (KIT_ROOT / "data" / "base_vlm_stk",
                 "python -m pretraining.base_vlm pretrain --split train --data_dir DIR --rules original "
                 "--output_dir data/base_vlm_stk --run_dir runs/pretrain_stk --threads 2"),
}
FINGERPRINT_FILE = "fingerprint.txt"


class BaseVLM:
    """A vision-language model with one batched method, `answer(images, questions)`.

    Args:
        base: "tiny" or "tiny_stk" (the kit's own models, see BASES), a local directory, or a hub name of
            a SmolVLM-family model.
        device: "cpu", "cuda", ... (default: cuda when available).
    """

    def __init__(self, base: str = "tiny", device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.base = str(base)
        path = BASES[self.base][0] if self.base in BASES else Path(self.base)
        if path.is_dir() and (path / "config.json").is_file():
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
        elif self.base in BASES:
            fail(f"the kit's base {self.base!r} is missing from {path}; restore it with "
                 f"`git checkout {path.relative_to(KIT_ROOT)}` or remake it with `{BASES[self.base][1]}`")
        else:
            model_type = "hub"
        if model_type == "kart_vlm":
            self.kind = "kart_vlm"
            self.model = KartVLMForConditionalGeneration.from_pretrained(path)
            self.tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
            self.processor = None
            expected = path / FINGERPRINT_FILE
            self.fingerprint = expected.read_text().strip() if expected.is_file() else weights_fingerprint(self.model)
        else:
            self.kind = "idefics3"
            self._load_idefics3(self.base)
            self.fingerprint = weights_fingerprint(self.model)
        self.model.to(self.device).eval()

    def _load_idefics3(self, name: str) -> None:
        from transformers import AutoProcessor, Idefics3ForConditionalGeneration

        local = Path(name).is_dir()
        try:
            self.processor = AutoProcessor.from_pretrained(name, local_files_only=not local and _offline())
            self.model = Idefics3ForConditionalGeneration.from_pretrained(name, local_files_only=not local and _offline())
        except OSError as e:
            fail(f"cannot load base model {name!r} ({str(e).splitlines()[0][:120]}); this kit works offline: "
                 f"pass --base tiny, or a local directory holding a SmolVLM-family model")
        self.tokenizer = self.processor.tokenizer

    @torch.no_grad()
    def answer(self, images, questions: list[str], max_new_tokens: int = 6) -> list[str]:
        """Greedy short answers, one per (image, question) pair."""
        if len(images) != len(questions):
            raise ValueError(f"got {len(images)} images but {len(questions)} questions")
        if not questions:
            return []
        if self.kind == "idefics3":
            return self._answer_idefics3(images, questions, max_new_tokens)
        model, tok = self.model, self.tokenizer
        pixels = pixel_values(images).to(self.device)
        # Left-pad the prompts so that every sequence's next token is in the last column.
        ids, mask = pad([prompt_ids(tok, q) for q in questions], tok.pad_token_id, side="left")
        ids, mask = ids.to(self.device), mask.to(self.device)
        n = model.num_image_tokens
        # Image tokens come before the padding; mark the padding as not attended to.
        full_mask = torch.cat([mask.new_ones(len(questions), n), mask], dim=1)
        positions = (full_mask.cumsum(1) - 1).clamp(min=0)
        embeds = model.embed(pixels, ids)
        out = model.language_model(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions, use_cache=True)
        past, generated = out.past_key_values, []
        done = torch.zeros(len(questions), dtype=torch.bool, device=self.device)
        next_pos = positions[:, -1:] + 1
        for _ in range(max_new_tokens):
            token = out.logits[:, -1].argmax(-1)  # (B,)
            token = torch.where(done, torch.full_like(token, tok.pad_token_id), token)
            generated.append(token)
            done |= token == tok.eos_token_id
            if done.all():
                break
            full_mask = torch.cat([full_mask, (~done).long()[:, None]], dim=1)
            out = model.language_model(input_ids=token[:, None], attention_mask=full_mask, position_ids=next_pos,
                                        past_key_values=past, use_cache=True)
            past, next_pos = out.past_key_values, next_pos + 1
        tokens = torch.stack(generated, 1).tolist()
        answers = []
        for row in tokens:
            row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
            answers.append(tok.decode([t for t in row if t != tok.pad_token_id], skip_special_tokens=True).strip())
        return answers

    def _answer_idefics3(self, images, questions, max_new_tokens):
        proc, tok = self.processor, self.tokenizer
        texts = []
        for q in questions:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
            texts.append(proc.apply_chat_template(messages, add_generation_prompt=True))
        pics = [[load_image(i)] for i in images]
        old_side, tok.padding_side = tok.padding_side, "left"
        try:
            inputs = proc(text=texts, images=pics, return_tensors="pt", padding=True).to(self.device)
        finally:
            tok.padding_side = old_side
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "1") != "0"



def test(base: str = "tiny", split: str = "valid", data_dir: str = "data", max_samples: int = 1000) -> None:
    """The base's accuracy on a split's questions, before any fine-tuning.

    Args:
        base: "tiny", "tiny_stk", a local directory or a hub name.
        split: split whose balanced_qa_pairs.json is asked.
        data_dir: root folder of the data.
        max_samples: questions to ask.
    """
    from homework.data import VQADataset, benchmark

    max_samples = check_int("max_samples", max_samples, 1)
    try:
        result = benchmark(BaseVLM(base), VQADataset(str(split), data_dir=str(data_dir)), max_samples=max_samples)
    except ValueError as e:  # an unreadable picture
        fail(str(e))
    print(result.table())
    print(f"accuracy={result.accuracy:.4f}")


if __name__ == "__main__":
    fire.Fire({"test": test})
