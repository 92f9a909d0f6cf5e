"""The base vision-language model: the kit's own small VLM, or a SmolVLM-family model.

`BaseVLM(base)` answers questions about pictures with one batched method, `answer()`.

- `base="tiny"` (the default) is the kit's own pretrained model, committed in `data/base_vlm/`
  with a fingerprint of its weights. It lives inside transformers (`save_pretrained`,
  `from_pretrained`, peft's LoRA): a convolutional vision encoder whose 7x10 feature map becomes
  70 image tokens, a linear connector, and a small Llama decoder, with a word-level tokenizer
  built by `tokenizers` from the kit's vocabulary. It was pretrained to *describe* kart scenes
  (`python -m homework.base_vlm pretrain`), never on the assignment's questions.
- Any other value is a SmolVLM-family model (`Idefics3ForConditionalGeneration`), by local
  directory or hub name, e.g. `HuggingFaceTB/SmolVLM-256M-Instruct`.

    python -m homework.base_vlm pretrain            # remake data/base_vlm from scratch
    python -m homework.base_vlm test                # the base's accuracy on valid (before fine-tuning)
    python -m homework.base_vlm benchmark           # answers per second and peak memory
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import fire
import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from worlds.kart import KARTS, TRACKS

KIT_ROOT = Path(__file__).resolve().parents[1]
TINY_BASE_DIR = KIT_ROOT / "data" / "base_vlm"
FINGERPRINT_FILE = "fingerprint.txt"
IMAGE_SIZE = (100, 150)  # (height, width) of the kart pictures
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)
PROMPT_END = "answer :"  # the prompt is "<image tokens> question answer :" and the answer follows
DESCRIBE_PROMPT = "describe the scene ."

# ----------------------------------------------------------------------------------------
# Tokenizer: word level, from the kit's own vocabulary
# ----------------------------------------------------------------------------------------

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def kit_vocabulary() -> list[str]:
    """Every word the kit's questions, answers, captions and descriptions use, sorted."""
    import re

    from generate_qa import TEMPLATES
    from homework.generate_captions import CAPTIONS
    from worlds.kart import KARTS, TRACKS

    text = " ".join(TEMPLATES.values()) + " " + " ".join(CAPTIONS.values())
    text += f" {PROMPT_END} {DESCRIBE_PROMPT} ego track karts front back left right and scene"
    words = set(re.findall(r"\w+|[^\w\s]+", text.lower().replace("{kart}", " ").replace("{n}", " ").replace("{track}", " ")))
    words |= set(KARTS) | set(TRACKS) | {str(i) for i in range(21)}
    words |= {"yes", "no", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
    return sorted(words)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the kit's vocabulary (lower case, words and punctuation)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + kit_vocabulary())}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]", unk_token="[UNK]")


# ----------------------------------------------------------------------------------------
# The kit's model: convolutional vision encoder -> connector -> Llama decoder
# ----------------------------------------------------------------------------------------


class KartVLMConfig(PretrainedConfig):
    """Configuration of the kit's small VLM.

    Args:
        image_size: (height, width) of input pictures.
        vision_channels: channels of the four stride-2 stages of the vision encoder.
        text_config: a LlamaConfig dict for the decoder.
    """

    model_type = "kart_vlm"

    def __init__(self, image_size=IMAGE_SIZE, vision_channels=(24, 48, 96, 128), text_config: dict | None = None,
                 **kwargs):
        self.image_size = list(image_size)
        self.vision_channels = list(vision_channels)
        self.text_config = text_config or {}
        super().__init__(**kwargs)


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(8, cout), nn.GELU())


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv_block(c, c, 1), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.GroupNorm(8, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x + self.body(x))


class ConvVisionEncoder(nn.Module):
    """Four stride-2 stages (100x150 -> 7x10), then one token per cell with a learned position.

    The first stage is a single cheap convolution, so no heavy work runs at full resolution."""

    def __init__(self, config: KartVLMConfig):
        super().__init__()
        c1, c2, c3, c4 = config.vision_channels
        self.stages = nn.Sequential(
            _conv_block(3, c1, 2),  # (B, c1, 50, 75)
            _conv_block(c1, c2, 2),  # (B, c2, 25, 38)
            _conv_block(c2, c3, 2), ResidualBlock(c3),  # (B, c3, 13, 19)
            _conv_block(c3, c4, 2), ResidualBlock(c4),  # (B, c4, 7, 10)
        )
        h, w = config.image_size
        for _ in range(4):
            h, w = (h + 1) // 2, (w + 1) // 2
        self.grid = (h, w)
        self.position = nn.Parameter(torch.zeros(1, h * w, c4))

    def forward(self, pixel_values: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, 3, H, W) pictures -> (B, h*w, C) tokens. With `start` > 0, the input is instead the
        activation entering block `start` of `stages` (fine-tuning caches the frozen blocks' output)."""
        x = self.stages[start:](pixel_values)  # (B, C, h, w)
        if tuple(x.shape[-2:]) != self.grid:
            raise ValueError(f"pictures must be {tuple(self.grid)} cells after the encoder, got {tuple(x.shape[-2:])}; "
                             f"resize them to {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]}")
        return x.flatten(2).transpose(1, 2) + self.position  # (B, h*w, C)


class KartVLMForConditionalGeneration(PreTrainedModel):
    """Image tokens from the vision encoder, projected into the decoder's embedding space and
    placed before the text; the decoder predicts the text."""

    config_class = KartVLMConfig
    base_model_prefix = "kart_vlm"
    _no_split_modules = ["LlamaDecoderLayer"]

    def __init__(self, config: KartVLMConfig):
        super().__init__(config)
        self.vision = ConvVisionEncoder(config)
        text_config = LlamaConfig(**config.text_config)
        self.connector = nn.Sequential(nn.Linear(config.vision_channels[-1], text_config.hidden_size), nn.GELU(),
                                       nn.Linear(text_config.hidden_size, text_config.hidden_size))
        self.language_model = LlamaForCausalLM(text_config)
        self.num_image_tokens = self.vision.grid[0] * self.vision.grid[1]
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ConvVisionEncoder):
            nn.init.normal_(module.position, std=0.02)
        elif hasattr(module, "weight") and module.__class__.__name__.endswith("RMSNorm"):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pictures -> (B, N, D) image tokens in the decoder's embedding space."""
        return self.connector(self.vision(pixel_values))

    def embed(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pictures and (B, T) token ids -> (B, N + T, D) input embeddings."""
        return self.join(self.image_tokens(pixel_values), input_ids)

    def join(self, image_tokens: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, N, D) image tokens before the (B, T) text's embeddings -> (B, N + T, D)."""
        text = self.get_input_embeddings()(input_ids)  # (B, T, D)
        if image_tokens.shape[1] != self.num_image_tokens or image_tokens.shape[2] != text.shape[2]:
            raise ValueError(f"expected image tokens of shape (B, {self.num_image_tokens}, {text.shape[2]}), "
                             f"got {tuple(image_tokens.shape)}")
        return torch.cat([image_tokens.to(text.dtype), text], dim=1)

    def forward(self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                vision_features: torch.Tensor | None = None, **kwargs):
        """Pass `pixel_values`, or the vision encoder's output `vision_features` computed earlier
        (fine-tuning with a frozen vision encoder computes them once). `attention_mask` and
        `labels` cover the text only; the image tokens are always attended to and never predicted."""
        if vision_features is None:
            vision_features = self.vision(pixel_values)
        image_tokens = self.connector(vision_features.to(self.vision.position.dtype))  # (B, N, D)
        b, n = input_ids.shape[0], self.num_image_tokens
        embeds = self.join(image_tokens, input_ids)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
        if labels is not None:
            labels = torch.cat([labels.new_full((b, n), -100), labels], dim=1)
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)


def tiny_config(vocab_size: int) -> KartVLMConfig:
    """The default base's architecture (about 1.3M parameters)."""
    text = LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=192,
                       bos_token_id=2, eos_token_id=3, pad_token_id=0, tie_word_embeddings=False)
    return KartVLMConfig(text_config=text.to_dict())


# ----------------------------------------------------------------------------------------
# Pictures and prompts
# ----------------------------------------------------------------------------------------


def load_image(image) -> Image.Image:
    """A path or a PIL image -> an RGB PIL image; one clear error for an unreadable file."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {image}: {e}") from None


def pixel_values(images) -> torch.Tensor:
    """Pictures -> (B, 3, 100, 150) normalised tensor (resized if they are another size)."""
    arrays = []
    for image in images:
        img = load_image(image)
        if img.size != (IMAGE_SIZE[1], IMAGE_SIZE[0]):
            img = img.resize((IMAGE_SIZE[1], IMAGE_SIZE[0]), Image.BILINEAR)
        arrays.append(np.asarray(img, dtype=np.uint8))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def prompt_ids(tokenizer, question: str) -> list[int]:
    """[BOS] question answer :"""
    return [tokenizer.bos_token_id] + tokenizer.encode(f"{question} {PROMPT_END}", add_special_tokens=False)


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over the names, shapes and bytes of every tensor of a model's state dict."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------
# BaseVLM
# ----------------------------------------------------------------------------------------


class BaseVLM:
    """A vision-language model with one batched method, `answer(images, questions)`.

    Args:
        base: "tiny" (the kit's own model), a local directory, or a hub name of a SmolVLM-family model.
        device: "cpu", "cuda", ... (default: cuda when available).
    """

    def __init__(self, base: str = "tiny", device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.base = str(base)
        path = TINY_BASE_DIR if self.base == "tiny" else Path(self.base)
        if path.is_dir() and (path / "config.json").is_file():
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
        elif self.base == "tiny":
            raise SystemExit(f"error: the kit's base model is missing from {TINY_BASE_DIR}; "
                             "restore it with `git checkout data/base_vlm` or remake it with `python -m homework.base_vlm pretrain`")
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
            raise SystemExit(f"error: cannot load base model {name!r} ({str(e).splitlines()[0][:120]}); this kit works offline: "
                             f"pass --base tiny, or a local directory holding a SmolVLM-family model") from None
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
        prompts = [prompt_ids(tok, q) for q in questions]
        # Left-pad the prompts so that every sequence's next token is in the last column.
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        n = model.num_image_tokens
        # Image tokens come before the padding; mark the padding as not attended to.
        full_mask = torch.cat([mask.new_ones(len(prompts), n), mask], dim=1)
        positions = (full_mask.cumsum(1) - 1).clamp(min=0)
        embeds = model.embed(pixels, ids)
        out = model.language_model(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions, use_cache=True)
        past, generated = out.past_key_values, []
        done = torch.zeros(len(prompts), dtype=torch.bool, device=self.device)
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


# ----------------------------------------------------------------------------------------
# Pretraining the tiny base: describing scenes, never answering the assignment's questions
# ----------------------------------------------------------------------------------------


def describe(view) -> list[str]:
    """Statements about a view that a careful person could read off it (the same visibility
    rules as the questions): the track, the ego, the number of karts, where each clearly placed
    kart is, and how many karts are on each side. Statements, not questions."""
    from generate_qa import depth, side

    ego = view.ego
    if ego is None:
        return [f"track {view.track}"]
    clauses = [f"track {view.track}", f"ego {ego.name}"]
    counted = [k for k in view.others if not k.tiny]
    clear = not ego.hidden and not any(k.hidden or k.tiny for k in view.others)
    if clear:
        clauses.append(f"{len(counted) + 1} karts")
    for k in counted:
        if not k.hidden:
            where = " ".join(w for w in (depth(k, ego), side(k, ego)) if w)
            if where:
                clauses.append(f"{k.name} {where}")
    if clear:
        sides, depths = [side(k, ego) for k in counted], [depth(k, ego) for k in counted]
        if all(sides):
            clauses.append(f"left {sides.count('left')} right {sides.count('right')}")
        if all(depths):
            clauses.append(f"front {depths.count('front')} back {depths.count('back')}")
    return clauses


class PictureCache:
    """Every picture of a list of files decoded once into one uint8 tensor (N, 3, H, W)."""

    def __init__(self, paths: list[str], desc: str = "pictures"):
        from tqdm import tqdm

        self.index = {p: i for i, p in enumerate(paths)}
        self.pixels = torch.empty((len(paths), 3, *IMAGE_SIZE), dtype=torch.uint8)
        for i, p in enumerate(tqdm(paths, desc=f"loading {desc}", unit="img", mininterval=1)):
            img = load_image(p)
            if img.size != (IMAGE_SIZE[1], IMAGE_SIZE[0]):
                img = img.resize((IMAGE_SIZE[1], IMAGE_SIZE[0]), Image.BILINEAR)
            self.pixels[i] = torch.from_numpy(np.array(img)).permute(2, 0, 1)

    def batch(self, paths: list[str]) -> torch.Tensor:
        """(B, 3, H, W) normalised float pictures."""
        x = self.pixels[[self.index[p] for p in paths]].float() / 255.0
        mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
        return (x - mean) / std


def text_batch(tokenizer, prompts: list[str], targets: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels for "[BOS] prompt answer : target [EOS]";
    only the target and [EOS] are predicted."""
    rows, labels = [], []
    for prompt, target in zip(prompts, targets, strict=True):
        p = prompt_ids(tokenizer, prompt)
        t = tokenizer.encode(target, add_special_tokens=False) + [tokenizer.eos_token_id]
        rows.append(p + t)
        labels.append([-100] * len(p) + t)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, :len(r)], lab[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), torch.tensor(lb), 1
    return ids, mask, lab


def cosine_lr(step: int, max_steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, max_steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _fail(message: str) -> None:
    raise SystemExit(f"error: {message}")


def _check_int(name: str, value, minimum: int = 1) -> int:
    """VALUE as given on the command line (Fire types values by their look), or one clear line."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(f"--{name} must be an integer >= {minimum}, got {value!r}")
    return value


@torch.no_grad()
def frozen_features(model: nn.Module, pictures: PictureCache, start: int, desc: str = "pictures",
                    batch_size: int = 128, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """The activations of every cached picture entering block `start` of `model.vision` (N, C, h, w),
    by default in float16 to halve the memory, for training whose first vision blocks are frozen:
    computed once instead of at every step. The blocks before `start` must be frozen."""
    from tqdm import tqdm

    frozen = model.vision.stages[:start]
    trained = [n for n, p in frozen.named_parameters() if p.requires_grad]
    if trained:
        raise ValueError(f"vision block {trained[0]} is being trained, so its output cannot be cached")
    was_training = frozen.training
    frozen.eval()
    paths = list(pictures.index)
    out = None  # filled in place: a list of chunks and their concatenation would need twice the memory
    for i in tqdm(range(0, len(paths), batch_size), desc=f"vision features {desc}", unit="batch", mininterval=1):
        chunk = frozen(pictures.batch(paths[i:i + batch_size])).to(dtype)
        if out is None:
            out = torch.empty((len(paths), *chunk.shape[1:]), dtype=dtype)
        out[i:i + len(chunk)] = chunk
    frozen.train(was_training)
    return out


def open_checkpoint(path: Path, required: tuple[str, ...], assignment: str, what: str, command: str) -> dict:
    """A checkpoint directory's training_config.json, after checking that the directory and its
    REQUIRED files are there and that it belongs to ASSIGNMENT ("vlm", "clip"); one clear line
    otherwise. WHAT names the kind ("a CLIP"), COMMAND the one that makes it."""
    if not path.is_dir():
        _fail(f"no checkpoint directory at {path}; train one with `{command}`")
    for name in (*required, "training_config.json"):
        if not (path / name).is_file():
            _fail(f"{path} is not {what} checkpoint: {name} is missing")
    try:
        record = json.loads((path / "training_config.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(f"{path}/training_config.json is not valid JSON ({e}); train the checkpoint again")
    if not isinstance(record, dict):
        _fail(f"{path}/training_config.json holds no settings; train the checkpoint again")
    found = record.get("assignment", "vlm")  # VLM checkpoints made before the key existed are the VLM's
    if found != assignment:
        _fail(f"{path} holds a {found!r} checkpoint, not {what} one; pass a checkpoint made by `{command}`")
    return record


def save_adapter(model, out: Path) -> None:
    """A peft model's adapter (adapter_config.json, adapter_model.safetensors) into OUT, without
    the model card peft writes beside it: it describes a hub model, not this checkpoint."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)


def base_of(record: dict, path: Path, device: str | None = None, trained: str = "trained",
            again: str = "train again") -> BaseVLM:
    """The base a checkpoint's RECORD names, if its weights are the ones the checkpoint was
    trained on (by fingerprint); one clear line otherwise ("PATH was TRAINED on ...; AGAIN")."""
    vlm = BaseVLM(record.get("base", "tiny"), device=device)
    if record.get("base_fingerprint") != vlm.fingerprint:
        _fail(f"{path} was {trained} on a base with fingerprint {str(record.get('base_fingerprint'))[:12]}, but base "
              f"{record.get('base', 'tiny')!r} here has {vlm.fingerprint[:12]}; {again} on this base")
    return vlm


def plot_training_curve(history: list[dict], out: Path, breakdown: str, ylabel: str,
                        losses: dict[str, str] | None = None, yscale: str = "linear",
                        chance: float | None = None) -> None:
    """Two panels: the training losses (LOSSES: label -> history key) against steps, and the
    validation accuracy, overall and per BREAKDOWN key (a family, a template), against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    logged = [h for h in history if "loss" in h]
    for label, key in (losses or {"loss": "loss"}).items():
        a.plot([h["step"] for h in logged], [h[key] for h in logged], label=label)
    a.set(xlabel="step", ylabel="training loss (mean of last 20)", yscale=yscale)
    if len(losses or {}) > 1:
        a.legend(fontsize=7)
    evals = [h for h in history if "accuracy" in h]
    b.plot([h["step"] for h in evals], [h["accuracy"] for h in evals], marker="o", color="k", label="all")
    for name in evals[-1][breakdown] if evals else []:
        b.plot([h["step"] for h in evals], [h[breakdown].get(name, np.nan) for h in evals], alpha=0.6, label=name)
    if chance is not None:
        b.axhline(chance, color="grey", linestyle=":", label="chance")
    b.set(xlabel="step", ylabel=ylabel, ylim=(0, 1.02))
    b.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# The vision tower is pretrained first, on its own, as a SigLIP tower is before a SmolVLM is
# assembled: here on facts a picture shows (which kart is the ego, the track, which karts are there,
# how many on each side). Pretrained only through the decoder's descriptions, it never learned to
# tell karts apart (measured: the ego named right at chance after 2,500 steps, while the encoder
# alone learns it in 300). Two heads, thrown away after this stage: one linear layer over all
# tokens for the picture's facts, and KartMapHead, which says for every token which kart's centre
# is there. With the facts alone, the tower knew which karts a picture held but not which one was
# where (a linear probe put a named kart on the right side of the ego 31% of the time after 6,000
# steps); the map makes each token carry the identity of the kart it shows.
KART_INDEX = {name: i for i, name in enumerate(KARTS)}  # a kart's row in the heads' outputs
FACT_CLASSES = {"ego": len(KARTS), "track": len(TRACKS), "karts": 10, "left": 10, "right": 10, "front": 10, "back": 10}


SIDES = ("absent", "ego", "left", "right")  # where each kart is across the picture, from the ego
DEPTHS = ("absent", "ego", "front", "back")  # and along the track


def view_facts(view) -> tuple[dict[str, int], list[tuple[int, int]]]:
    """A view's facts as class indices (-100 where the picture does not show it clearly), and for
    each kart of KARTS its place: (index in SIDES, index in DEPTHS), -100 where unclear (a hidden
    or tiny kart, or one level with the ego)."""
    from generate_qa import depth, side

    facts = dict.fromkeys(FACT_CLASSES, -100)
    facts["track"] = list(TRACKS).index(view.track)
    places = [(0, 0)] * len(KARTS)
    for k in view.others:
        places[KART_INDEX[k.name]] = (-100, -100)
    ego = view.ego
    if ego is None:
        return facts, places
    counted = [k for k in view.others if not k.tiny]
    relations = [(side(k, ego), depth(k, ego)) for k in counted]
    facts["ego"] = KART_INDEX[ego.name]
    places[facts["ego"]] = (1, 1)
    for k, (where, ahead) in zip(counted, relations, strict=True):
        if not k.hidden:
            places[KART_INDEX[k.name]] = (SIDES.index(where) if where else -100, DEPTHS.index(ahead) if ahead else -100)
    if not ego.hidden and not any(k.hidden or k.tiny for k in view.others):
        top = FACT_CLASSES["karts"] - 1
        facts["karts"] = min(len(counted) + 1, top)
        sides, depths = [r[0] for r in relations], [r[1] for r in relations]
        if all(sides):
            facts["left"], facts["right"] = min(sides.count("left"), top), min(sides.count("right"), top)
        if all(depths):
            facts["front"], facts["back"] = min(depths.count("front"), top), min(depths.count("back"), top)
    return facts, places


class FactsHead(nn.Module):
    """One linear layer from all image tokens to every fact's logits, and to each kart's place
    (its SIDES and DEPTHS logits): naming *which* kart is where makes the tower keep both."""

    def __init__(self, num_tokens: int, channels: int, num_karts: int = 17):
        super().__init__()
        self.num_karts = num_karts
        self.place_logits = 2 * len(SIDES)
        self.linear = nn.Linear(num_tokens * channels, sum(FACT_CLASSES.values()) + num_karts * self.place_logits)

    def forward(self, tokens: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(B, N, C) tokens -> {fact: (B, classes)} and place logits (B, karts, 2, 4)."""
        out = self.linear(tokens.flatten(1))  # (B, N*C) -> (B, classes)
        facts, places = out.split([sum(FACT_CLASSES.values()), self.num_karts * self.place_logits], dim=1)
        logits = dict(zip(FACT_CLASSES, facts.split(list(FACT_CLASSES.values()), dim=1), strict=True))
        return logits, places.reshape(len(out), self.num_karts, 2, len(SIDES))


CELL = 16  # picture pixels between neighbouring vision tokens (four stride-2 stages); token (i, j) sits at (16i, 16j)


def view_map(view, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Where each kart of KARTS is on the vision tokens' grid (h, w): targets (karts, h, w), 1 at
    the cell nearest a clearly seen kart's centre, -1 (ignored) at that of a hidden or tiny one,
    0 elsewhere; and (karts, 2) the centre's offset from its cell, in cells (x, y), -0.5 to 0.5."""
    h, w = grid
    target = np.zeros((len(KARTS), h, w), np.int8)
    offset = np.zeros((len(KARTS), 2), np.float32)
    for k in ([view.ego] if view.ego else []) + list(view.others):
        x, y = k.cx / CELL, k.cy / CELL
        j, i = min(max(round(x), 0), w - 1), min(max(round(y), 0), h - 1)
        target[KART_INDEX[k.name], i, j] = -1 if (k.hidden or k.tiny) else 1
        offset[KART_INDEX[k.name]] = (x - j, y - i)
    return target, offset


class KartMapHead(nn.Module):
    """Per vision token and per kart: is this kart's centre here (a logit), and where in the cell
    (x, y offsets). Naming which kart sits in which token makes each token carry its kart's
    identity, which a question about that kart can then find by attention."""

    def __init__(self, channels: int, num_karts: int = 17):
        super().__init__()
        self.num_karts = num_karts
        self.linear = nn.Linear(channels, num_karts * 3)
        with torch.no_grad():  # start from "no kart here" (about 2%), so early steps aren't all negatives
            self.linear.bias.view(num_karts, 3)[:, 0] = -4.0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens -> (B, N, karts, 3): logit, x offset, y offset."""
        return self.linear(tokens).unflatten(-1, (self.num_karts, 3))


def map_loss(out: torch.Tensor, target: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of every (token, kart) logit (ignored ones left out) plus the L1 error of
    the offsets at each kart's own cell, both summed and divided by the number of karts seen.
    out (B, N, karts, 3), target (B, karts, h, w) in {-1, 0, 1}, offset (B, karts, 2)."""
    from torch.nn.functional import binary_cross_entropy_with_logits

    t = target.flatten(2).transpose(1, 2).float()  # (B, N, karts)
    keep, here = t >= 0, t > 0
    num = here.sum().clamp(min=1)
    loss = binary_cross_entropy_with_logits(out[..., 0][keep], t[keep], reduction="sum") / num
    shift = offset[:, None].expand(-1, t.shape[1], -1, -1)  # (B, N, karts, 2)
    return loss + (out[..., 1:][here] - shift[here]).abs().sum() / num


def facts_loss(logits: dict[str, torch.Tensor], place_logits: torch.Tensor, facts: dict[str, torch.Tensor],
               places: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per fact and per kart's side and depth (unknown ones, -100, ignored).
    place_logits (B, karts, 2, 4), places (B, karts, 2)."""
    from torch.nn.functional import cross_entropy

    loss = cross_entropy(place_logits.reshape(-1, place_logits.shape[-1]), places.reshape(-1), ignore_index=-100)
    for name, target in facts.items():
        if (target >= 0).any():
            loss = loss + cross_entropy(logits[name], target, ignore_index=-100)
    return loss


def _save_state(path: Path, **state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def _load_state(path: Path, settings: dict, resume: bool) -> dict | None:
    """The state saved at PATH if it was made with the same SETTINGS."""
    if not (resume and path.exists()):
        return None
    state = torch.load(path, weights_only=True)
    if state["settings"] != json.loads(json.dumps(settings)):
        print(f"not resuming: {path} was made with other settings")
        return None
    print(f"resuming from {path} at step {int(state['step'])}")
    return state


def pretrain(
    output_dir: str = str(TINY_BASE_DIR),
    split: str = "pretrain",
    data_dir: str = "data",
    vision_steps: int = 6000,
    max_steps: int = 5000,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
    run_dir: str = "runs/pretrain",
    resume: bool = True,
    overwrite: bool = False,
    threads: int | None = None,
) -> None:
    """Pretrain the kit's tiny base from scratch to describe kart scenes, deterministically.

    Two stages: the vision tower alone learns the facts a picture shows and where each kart is
    on its grid of tokens (VISION_STEPS), then,
    with the tower frozen, the connector and the decoder learn to describe the picture in words
    (MAX_STEPS). Resumable: a state is saved in RUN_DIR every 200 steps, and a new run with the
    same settings continues from it. The finished model, its tokenizer, its fingerprint and its
    pretraining config go to OUTPUT_DIR.

    Args:
        output_dir: where the finished base goes (default: the kit's data/base_vlm).
        split: the kart split to describe (its own seed; never the assignment's train split).
        data_dir: root folder of the data.
        vision_steps: optimisation steps of the vision tower's own stage.
        max_steps: optimisation steps of the description stage.
        batch_size: views per step.
        learning_rate: peak AdamW learning rate of both stages (warm-up, then cosine to a tenth).
        seed: seed of the weights, the batches and the order of statements.
        run_dir: where resumable states are kept.
        resume: continue from RUN_DIR's states if their settings match.
        overwrite: replace an existing OUTPUT_DIR.
        threads: CPU threads (default: torch's choice). Bytes are identical run to run for the
            same thread count; another count changes the float rounding.
    """
    from tqdm import tqdm

    from generate_qa import ensure_world, split_views

    if threads is not None:
        torch.set_num_threads(_check_int("threads", threads))
    for name, value, minimum in (("vision_steps", vision_steps, 0), ("max_steps", max_steps, 1),
                                 ("batch_size", batch_size, 1), ("seed", seed, 0)):
        _check_int(name, value, minimum)
    if not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
        _fail(f"--learning_rate must be a positive number, got {learning_rate!r}")
    out = Path(output_dir)
    if (out / "config.json").exists() and not overwrite:
        _fail(f"{out} already holds a model; pass --overwrite to replace it, or another --output_dir")

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    split_dir = ensure_world(str(split), str(data_dir))
    views = [(str(Path(data_dir) / image_file), view) for image_file, view in split_views(split_dir)]
    if not views:
        _fail(f"no pictures in {split_dir}")
    paths = [p for p, _ in views]
    pictures = PictureCache(paths, desc=str(split))
    tokenizer = build_tokenizer()
    model = KartVLMForConditionalGeneration(tiny_config(len(tokenizer)))
    settings = {"split": str(split), "num_samples": len(views), "vision_steps": vision_steps, "max_steps": max_steps,
                "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                "threads": torch.get_num_threads(), "vision_targets": "facts and kart maps"}
    # The vision stage does not depend on the description stage's length: a longer second stage reuses it.
    vision_settings = {k: v for k, v in settings.items() if k != "max_steps"}
    run, start = Path(run_dir), time.time()

    # Stage 1: the vision tower and a throwaway linear head learn the pictures' facts.
    facts = [view_facts(v) for _, v in views]
    fact_targets = {name: torch.tensor([f[name] for f, _ in facts]) for name in FACT_CLASSES}  # (N,) each
    places = torch.tensor([p for _, p in facts])  # (N, karts, 2): each kart's side and depth class
    maps = [view_map(v, model.vision.grid) for _, v in views]
    map_targets = torch.from_numpy(np.stack([m for m, _ in maps]))  # (N, karts, h, w) int8
    map_offsets = torch.from_numpy(np.stack([o for _, o in maps]))  # (N, karts, 2)
    del maps
    head = FactsHead(model.num_image_tokens, model.config.vision_channels[-1], len(KARTS))
    map_head = KartMapHead(model.config.vision_channels[-1], len(KARTS))
    vision_params = list(model.vision.parameters()) + list(head.parameters()) + list(map_head.parameters())
    opt = torch.optim.AdamW(vision_params, lr=learning_rate, weight_decay=0.01)
    step, losses = 0, []
    state = _load_state(run / "vision.pt", vision_settings, resume)
    if state:
        model.vision.load_state_dict(state["vision"])
        head.load_state_dict(state["head"])
        map_head.load_state_dict(state["map_head"])
        opt.load_state_dict(state["optimizer"])
        step, losses = int(state["step"]), list(state["losses"])
    bar = tqdm(total=vision_steps, initial=step, desc="pretrain vision", unit="step")
    model.vision.train()
    while step < vision_steps:
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, vision_steps, learning_rate, warmup=min(100, vision_steps // 10 + 1))
        rows = np.random.default_rng([seed, 1, step]).choice(len(views), batch_size, replace=False)
        tokens = model.vision(pictures.batch([paths[i] for i in rows]))
        logits, place_logits = head(tokens)
        loss = facts_loss(logits, place_logits, {n: t[rows] for n, t in fact_targets.items()}, places[rows])
        loss = loss + map_loss(map_head(tokens), map_targets[rows], map_offsets[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vision_params, 1.0)
        opt.step()
        losses.append(float(loss))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if step % 200 == 0 or step == vision_steps:
            _save_state(run / "vision.pt", vision=model.vision.state_dict(), head=head.state_dict(),
                        map_head=map_head.state_dict(),
                        optimizer=opt.state_dict(), step=step, losses=losses, settings=vision_settings)
    bar.close()
    vision_loss = float(np.mean(losses[-100:])) if losses else None

    # Stage 2: the tower's convolutions are frozen, so their output for each picture is computed
    # once; the connector and the decoder learn to describe it, and the tower's position embedding
    # learns where each token is (without it, the decoder could not tell which kart is the ego:
    # measured, the ego named at chance after 400 steps while the track was right 98% of the time).
    model.vision.stages.requires_grad_(False)
    model.vision.eval()
    after = len(model.vision.stages)  # model.vision(x, start=after) adds only the position embedding
    features = frozen_features(model, pictures, after, str(split), batch_size=256, dtype=torch.float32)
    statements = [describe(v) for _, v in views]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    step, losses = 0, []
    state = _load_state(run / "describe.pt", settings, resume)
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, losses = int(state["step"]), list(state["losses"])
    model.train()
    bar = tqdm(total=max_steps, initial=step, desc="pretrain descriptions", unit="step")
    while step < max_steps:
        # The batch and the statement order depend only on (seed, step): resuming repeats nothing.
        rng = np.random.default_rng([seed, step])
        rows = rng.choice(len(views), batch_size, replace=False)
        targets = [" . ".join(statements[i][j] for j in rng.permutation(len(statements[i]))) for i in rows]
        ids, mask, labels = text_batch(tokenizer, [DESCRIBE_PROMPT] * batch_size, targets)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, max_steps, learning_rate, warmup=200)
        vision = model.vision(features[rows], start=after)  # (B, N, C)
        loss = model(vision_features=vision, input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # early steps of a fresh model spike
        opt.step()
        losses.append(float(loss))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if step % 200 == 0 or step == max_steps:
            _save_state(run / "describe.pt", model=model.state_dict(), optimizer=opt.state_dict(), step=step, losses=losses,
                        settings=settings)
    bar.close()

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    fingerprint = weights_fingerprint(model)
    (out / FINGERPRINT_FILE).write_text(fingerprint + "\n")
    (out / "pretrain_config.json").write_text(json.dumps(
        {**settings, "final_vision_loss": vision_loss, "final_loss": float(np.mean(losses[-100:])),
         "seconds_this_run": round(time.time() - start, 1)}, indent=1))
    print(f"wrote the base to {out} (fingerprint {fingerprint[:12]}, loss {np.mean(losses[-100:]):.4f})")


def test(base: str = "tiny", split: str = "valid", data_dir: str = "data", max_samples: int = 1000) -> None:
    """The base's accuracy on a split's questions, before any fine-tuning.

    Args:
        base: "tiny", a local directory or a hub name.
        split: split whose balanced_qa_pairs.json is asked.
        data_dir: root folder of the data.
        max_samples: questions to ask.
    """
    from homework.data import VQADataset, benchmark

    try:
        result = benchmark(BaseVLM(base), VQADataset(str(split), data_dir=str(data_dir)), max_samples=max_samples)
    except ValueError as e:  # an unreadable picture
        _fail(str(e))
    print(result.table())
    print(f"accuracy={result.accuracy:.4f}")


def benchmark(base: str = "tiny", split: str = "valid", data_dir: str = "data", num_questions: int = 512,
              batch_size: int = 64, device: str | None = None) -> None:
    """Inference throughput (answers per second) and peak memory of a base.

    Args:
        base: "tiny", a local directory or a hub name.
        split: split whose questions are asked.
        data_dir: root folder of the data.
        num_questions: questions to time.
        batch_size: questions per call of answer().
        device: cpu or cuda (default: cuda when available).
    """
    import resource

    from homework.data import VQADataset

    ds = VQADataset(str(split), data_dir=str(data_dir), max_samples=num_questions)
    vlm = BaseVLM(base, device=device)
    items = [ds[i] for i in range(len(ds))]
    vlm.answer([items[0]["image_path"]], [items[0]["question"]])  # warm up
    start = time.perf_counter()
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        vlm.answer([c["image_path"] for c in chunk], [c["question"] for c in chunk])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f", GPU peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if vlm.device.type == "cuda" else ""
    print(f"{len(items)} answers in {seconds:.2f} s on {vlm.device}: {len(items) / seconds:.1f} answers/s; "
          f"peak RSS {peak:.0f} MiB{gpu}")


if __name__ == "__main__":
    fire.Fire({"pretrain": pretrain, "test": test, "benchmark": benchmark})
