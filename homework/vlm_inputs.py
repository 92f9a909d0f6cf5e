"""What goes into the kit's VLM: pictures as normalised tensors, prompts and answers as padded
token ids, and the caches that let training skip the frozen part of the vision encoder.

    pixel_values(images)                  (B, 3, 100, 150) normalised pictures
    prompt_ids(tokenizer, question)       [BOS] question answer :
    text_batch(tokenizer, prompts, targets)   ids, mask, labels for teacher forcing, right-padded
    caption_batch(tokenizer, captions)    ids, mask of "[BOS] caption [EOS]", right-padded
    PictureCache(paths)                   every picture of a split decoded once, uint8
    frozen_features(model, pictures, k)   the output of the vision encoder's first k (frozen) blocks
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from homework.modeling_kart_vlm import IMAGE_SIZE, PROMPT_END

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)


def load_image(image) -> Image.Image:
    """A path or a PIL image -> an RGB PIL image; one clear error for an unreadable file."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {image}: {e}") from None


def _resized(image) -> Image.Image:
    img = load_image(image)
    if img.size != (IMAGE_SIZE[1], IMAGE_SIZE[0]):
        img = img.resize((IMAGE_SIZE[1], IMAGE_SIZE[0]), Image.BILINEAR)
    return img


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) pictures in [0, 1] -> the model's normalised input."""
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def pixel_values(images) -> torch.Tensor:
    """Pictures (paths or PIL images) -> (B, 3, 100, 150) normalised tensor (resized if they are another size)."""
    arrays = [np.asarray(_resized(image), dtype=np.uint8) for image in images]
    return normalize(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0)  # (B, 3, H, W)


def prompt_ids(tokenizer, question: str) -> list[int]:
    """[BOS] question answer :"""
    return [tokenizer.bos_token_id] + tokenizer.encode(f"{question} {PROMPT_END}", add_special_tokens=False)


def pad(rows: list[list[int]], value: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths -> (B, T) ids padded with VALUE on SIDE, and the (B, T) mask of
    real entries (1) and padding (0). Training pads on the right; generation pads the prompts on
    the left, so that every row's next token is in the last column."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, cols], mask[i, cols] = torch.tensor(r, dtype=torch.long), 1
    return ids, mask


def text_batch(tokenizer, prompts: list[str], targets: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels (B, T) for "[BOS] prompt answer : target [EOS]";
    only the target and [EOS] are predicted (the rest of the labels is -100)."""
    rows, labels = [], []
    for prompt, target in zip(prompts, targets, strict=True):
        p = prompt_ids(tokenizer, prompt)
        t = tokenizer.encode(target, add_special_tokens=False) + [tokenizer.eos_token_id]
        rows.append(p + t)
        labels.append([-100] * len(p) + t)
    ids, mask = pad(rows, tokenizer.pad_token_id)
    return ids, mask, pad(labels, -100)[0]


def caption_batch(tokenizer, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids of "[BOS] caption [EOS]" (B, T) and their attention mask (B, T)."""
    rows = [[tokenizer.bos_token_id] + tokenizer.encode(c, add_special_tokens=False) + [tokenizer.eos_token_id]
            for c in captions]
    return pad(rows, tokenizer.pad_token_id)


class PictureCache:
    """Every picture of a list of files decoded once into one uint8 tensor (N, 3, H, W)."""

    def __init__(self, paths: list[str], desc: str = "pictures"):
        from tqdm import tqdm

        self.index = {p: i for i, p in enumerate(paths)}
        self.pixels = torch.empty((len(paths), 3, *IMAGE_SIZE), dtype=torch.uint8)
        for i, p in enumerate(tqdm(paths, desc=f"loading {desc}", unit="img", mininterval=1)):
            self.pixels[i] = torch.from_numpy(np.array(_resized(p))).permute(2, 0, 1)

    def batch(self, paths: list[str]) -> torch.Tensor:
        """(B, 3, H, W) normalised float pictures."""
        return normalize(self.pixels[[self.index[p] for p in paths]].float() / 255.0)


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

