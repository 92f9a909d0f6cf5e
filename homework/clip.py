"""CLIP from the VLM's two towers: pick the true caption of a kart frame among five.

    python -m homework.clip train                     # default settings, on data/train -> runs/clip-<date>-<time>/
    python -m homework.clip test                      # the committed reference, on valid's multiple-choice sets
    python -m homework.clip test runs/clip-... --split holdout

The image tower is the base VLM's convolutional vision encoder, its 70 tokens pooled (attention
pooling with a few learned queries, or their mean); the text tower is the base's Llama decoder
read at the caption's last token, [EOS]. Each tower ends in a linear projection into one shared
space, and the model owns a learnable `logit_scale` (CLIP, Radford et al. 2021, arXiv:2103.00020).
LoRA (peft) adapts both towers: the decoder's attention and MLP projections, and the convolutions
of the vision encoder's last stages. The earlier stages stay frozen, so their output for each
picture is computed once before training: on a CPU that is most of the work.

A checkpoint directory holds the LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`),
`additional_weights.pt` (the pooling, the projections and the logit scale: a plain state dict
that loads with `torch.load(..., weights_only=True)`), `training_config.json` (the resolved
`ClipConfig`, the settings and the fingerprint of the base it was trained on), `history.json` and
`training_curve.png`. The grader's interface is `load_model(checkpoint)` / `load_reference()` and
`predict(model, images, candidates)`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import fire
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from homework.base_vlm import BaseVLM
from homework.checkpoint import (
    check_base,
    check_size,
    config_from_record,
    load_adapter,
    load_torch_state,
    load_weights,
    open_checkpoint,
    reference_dir,
    save_adapter,
    write_record,
)
from homework.cli_checks import check_int, check_ints, check_number, fail, set_threads
from homework.lr_schedule import warmup_cosine
from homework.training_log import TrainingLog
from homework.vlm_inputs import PictureCache, caption_batch, frozen_features, pixel_values

REFERENCE_DIR = reference_dir("clip")  # what homework.load_clip() reads
ADDITIONAL_WEIGHTS = "additional_weights.pt"
WEIGHTS = ("adapter_config.json", "adapter_model.safetensors", ADDITIONAL_WEIGHTS)  # a checkpoint's files besides its record
TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
POOLS = ("flat", "attention", "mean")
TEXT_POOLS = ("mean", "last")


@dataclass
class ClipConfig:
    embed_dim: int = 128  # size of the shared image-text space
    pool: str = "flat"  # how the image tower pools its tokens: flat | attention | mean
    flat_channels: int = 32  # flat pooling: channels kept per token
    pool_queries: int = 8  # attention pooling: learned queries, each free to look at its own part of the picture
    pool_heads: int = 4  # attention pooling: heads
    text_pool: str = "mean"  # how the text tower pools its tokens: mean | last (the [EOS] token)
    vision_lora_stages: int = 4  # LoRA on the convolutions of the vision encoder's last N stages (0: frozen)
    lora_rank: int = 8  # LoRA rank r of both towers (alpha = 2r)

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.text_pool not in TEXT_POOLS:
            raise ValueError(f"text_pool must be one of {TEXT_POOLS}, got {self.text_pool!r}")
        for name in ("embed_dim", "flat_channels", "pool_queries", "pool_heads", "lora_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.vision_lora_stages, int) or not 0 <= self.vision_lora_stages <= 6:
            raise ValueError(f"vision_lora_stages must be an integer from 0 to 6, got {self.vision_lora_stages!r}")


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------


class FlatPool(nn.Module):
    """Every token, reduced to a few channels, side by side: the projection that follows sees
    *where* everything is (the ego always sits low in the middle; "left of the ego" is a place).
    (B, N, C) -> (B, N * c)."""

    def __init__(self, width: int, num_tokens: int, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.reduce = nn.Linear(width, channels)
        self.out_dim = num_tokens * channels

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.norm(tokens)).flatten(1)  # (B, N * c)


class AttentionPool(nn.Module):
    """Q learned queries attend over the image tokens; their Q outputs, side by side, are the
    picture's feature. Several queries keep *where* things are (a mean would lose it): one can
    look at the ego, another at the karts to its left. (B, N, C) -> (B, Q * C)."""

    def __init__(self, width: int, num_tokens: int, queries: int, heads: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, queries, width) * width**-0.5)
        self.position = nn.Parameter(torch.zeros(1, num_tokens, width))  # on top of the encoder's own
        self.norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.out_dim = queries * width

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens + self.position)  # (B, N, C)
        q = self.queries.expand(len(x), -1, -1)  # (B, Q, C)
        pooled, _ = self.attention(q, x, x, need_weights=False)  # (B, Q, C)
        return pooled.flatten(1)  # (B, Q * C)


class MeanPool(nn.Module):
    """The mean of the image tokens, normalised. (B, N, C) -> (B, C)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.out_dim = width

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(tokens.mean(dim=1))


class KartCLIP(nn.Module):
    """Image and text towers over one (peft-wrapped) base VLM, projected into a shared space.

    `vlm` is the base `KartVLMForConditionalGeneration`, usually wrapped by `add_lora`; its vision
    encoder is the image tower, its `language_model.model` (the Llama decoder without its output
    layer) the text tower. `tokenizer` is the base's."""

    def __init__(self, vlm: nn.Module, tokenizer, config: ClipConfig):
        super().__init__()
        self.config = config
        self.vlm = vlm
        self.tokenizer = tokenizer
        inner = self.inner()
        width, text_width = inner.config.vision_channels[-1], inner.language_model.config.hidden_size
        if config.pool == "flat":
            self.image_pool = FlatPool(width, inner.num_image_tokens, config.flat_channels)
        elif config.pool == "attention":
            self.image_pool = AttentionPool(width, inner.num_image_tokens, config.pool_queries, config.pool_heads)
        else:
            self.image_pool = MeanPool(width)
        self.image_proj = nn.Linear(self.image_pool.out_dim, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(text_width, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's init: temperature 0.07
        # The vision stages before `frozen_stages` carry no LoRA: their output can be computed once.
        self.frozen_stages = len(inner.vision.stages) - config.vision_lora_stages

    def inner(self) -> nn.Module:
        """The KartVLMForConditionalGeneration under the peft wrapper (LoRA layers in place)."""
        return self.vlm.get_base_model() if hasattr(self.vlm, "get_base_model") else self.vlm

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def vision_prefix(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pictures -> the output of the frozen vision stages (B, C', h', w')."""
        return self.inner().vision.stages[: self.frozen_stages](pixel_values)

    def encode_image(self, pixel_values: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
                     normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) pictures, or their `vision_prefix` computed earlier -> (B, D) image features."""
        vision = self.inner().vision
        if prefix is None:
            prefix = self.vision_prefix(pixel_values)
        # BEGIN SOLUTION (hint: the remaining vision stages, one token per cell plus the encoder's position, pool, project)
        tokens = vision(prefix.to(self.logit_scale.dtype), start=self.frozen_stages)  # (B, N, C), with positions
        features = self.image_proj(self.image_pool(tokens))  # (B, D)
        # END SOLUTION
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, T) right-padded "[BOS] caption [EOS]" ids and their mask -> (B, D) text features."""
        # BEGIN SOLUTION (hint: the decoder's hidden states at each caption's last real token, then project)
        hidden = self.inner().language_model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.text_pool == "mean":
            weights = attention_mask[..., None].to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)  # (B, C)
        else:
            last = attention_mask.sum(dim=1) - 1  # (B,) index of [EOS]
            pooled = hidden[torch.arange(len(hidden), device=hidden.device), last]  # (B, C)
        features = self.text_proj(pooled)  # (B, D)
        # END SOLUTION
        return F.normalize(features, dim=-1) if normalize else features

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at 100 as in CLIP so that the logits stay sane."""
        return self.logit_scale.clamp(max=math.log(100)).exp()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor | None = None,
                prefix: torch.Tensor | None = None):
        """(M, T) captions and N pictures (or their prefix) -> unit image features (N, D), unit text
        features (M, D), logit scale (a scalar)."""
        return self.encode_image(pixel_values, prefix), self.encode_text(input_ids, attention_mask), self.scale()

    def additional_state_dict(self) -> dict[str, torch.Tensor]:
        """What the adapter does not hold: the pooling, the projections and the logit scale."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("vlm.")}


class ClipLoss(nn.Module):
    """Symmetric InfoNCE between N pictures and M captions (CLIP, Radford et al. 2021, arXiv:2103.00020).

    Without `positives`, row i of the image features and row i of the text features are one pair
    (N = M): each picture's positive is its own caption and the other N - 1 captions are its
    negatives, and the other way round; the loss is the mean of the image -> text and the
    text -> image cross-entropies. That is CLIP's loss.

    A caption can be true of several pictures ("The track is hacienda." is true of every frame on
    that track) and a picture has several true captions. Pass `positives` (N, M), True where
    caption j is true of picture i, and every true pair is a positive whose softmax (over its
    row, and over its column) leaves the *other* true pairs out instead of pushing them apart, as
    in UniCL (Yang et al. 2022, arXiv:2204.03610). With the identity matrix it is CLIP's loss.

        >>> loss = ClipLoss()(*model(input_ids, attention_mask, pixel_values))
    """

    def get_logits(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor):
        """(N, D), (M, D) unit features -> logits_per_image (N, M) and logits_per_text (M, N)."""
        # BEGIN SOLUTION (hint: scaled cosine similarities: logit_scale * image @ text.T, and its transpose)
        logits_per_image = logit_scale * image_features @ text_features.T  # (N, M): row i = picture i vs every caption
        return logits_per_image, logits_per_image.T
        # END SOLUTION

    def get_ground_truth(self, n: int, m: int, device: torch.device, positives: torch.Tensor | None = None):
        """The true pairs: (N, M) bool, the identity when `positives` is not given."""
        if positives is None:
            if n != m:
                raise ValueError(f"without positives, pictures and captions pair up one to one; got {n} and {m}")
            return torch.eye(n, dtype=torch.bool, device=device)
        if positives.shape != (n, m):
            raise ValueError(f"positives must be ({n}, {m}), got {tuple(positives.shape)}")
        return positives.to(device=device, dtype=torch.bool)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                positives: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        if image_features.shape[1:] != text_features.shape[1:]:
            raise ValueError(f"feature widths differ: {tuple(image_features.shape)} vs {tuple(text_features.shape)}")
        truth = self.get_ground_truth(len(image_features), len(text_features), image_features.device, positives)
        # BEGIN SOLUTION (hint: one cross-entropy row per true pair, over its picture's row and over its caption's column, the other true pairs masked to -inf; average the two)
        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)
        rows, cols = truth.nonzero(as_tuple=True)  # (P,) pictures and captions of the P true pairs
        ones = torch.arange(len(rows), device=truth.device)
        # For pair p: its picture's row, with the picture's other true captions left out ...
        others = truth[rows].clone()  # (P, M)
        others[ones, cols] = False
        loss_image = F.cross_entropy(logits_per_image[rows].masked_fill(others, float("-inf")), cols, reduction=reduction)
        # ... and its caption's column, with the caption's other true pictures left out.
        others = truth.T[cols].clone()  # (P, N)
        others[ones, rows] = False
        loss_text = F.cross_entropy(logits_per_text[cols].masked_fill(others, float("-inf")), rows, reduction=reduction)
        return (loss_image + loss_text) / 2
        # END SOLUTION


def add_lora(vlm: nn.Module, config: ClipConfig):
    """Wrap a base VLM with LoRA on the decoder's projections and on the convolutions of the
    vision encoder's last `config.vision_lora_stages` stages; everything else is frozen."""
    from peft import LoraConfig, get_peft_model

    stages = vlm.vision.stages
    convs = [f"vision.stages.{name}" for name, m in stages.named_modules()
             if isinstance(m, nn.Conv2d) and int(name.split(".")[0]) >= len(stages) - config.vision_lora_stages]
    # The token embeddings are trained in full (peft's modules_to_save): the base never had to
    # tell the kart names apart, so their embeddings start nearly alike (cosine about 0.77).
    lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, lora_dropout=0.0,
                      target_modules=TEXT_LORA_TARGETS + convs, modules_to_save=["embed_tokens"])
    return get_peft_model(vlm, lora)


# ----------------------------------------------------------------------------------------
# Checkpoints: the contract with the grader
# ----------------------------------------------------------------------------------------


def save_model(model: KartCLIP, out: Path, record: dict) -> None:
    """Write the adapter, the additional weights and training_config.json; check the size."""
    save_adapter(model.vlm, out)
    torch.save(model.additional_state_dict(), out / ADDITIONAL_WEIGHTS)
    write_record(out, "clip", {"config": dataclasses.asdict(model.config), **record})
    check_size(out, "clip", WEIGHTS)


def load_model(checkpoint: str | Path, device: str | None = None) -> KartCLIP:
    """A trained CLIP from its checkpoint directory; one clear error for a missing or incomplete
    checkpoint, one over the size limit, or one trained on another base."""
    path = Path(checkpoint)
    record = open_checkpoint(path, "clip", WEIGHTS)
    config = config_from_record(ClipConfig, record.get("config", {}), path / "training_config.json")
    vlm = BaseVLM(record.get("base", "tiny"), device=device)
    check_base(path, record, vlm.fingerprint)
    model = KartCLIP(load_adapter(vlm.model, path), vlm.tokenizer, config)
    state = load_torch_state(path / ADDITIONAL_WEIGHTS)
    load_weights(model, path / ADDITIONAL_WEIGHTS, state, ignore_missing="vlm.")  # the adapter holds vlm.*
    return model.to(vlm.device).eval()


def load_reference() -> KartCLIP:
    """The committed reference checkpoint (homework/checkpoints/clip)."""
    return load_model(REFERENCE_DIR)


# ----------------------------------------------------------------------------------------
# Inference: the grader's interface, and the scores
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def image_features(model: KartCLIP, images: list, batch_size: int = 64) -> torch.Tensor:
    """Paths or PIL images -> (N, D) unit image features."""
    model.eval()
    chunks = [model.encode_image(pixel_values(images[i:i + batch_size]).to(model.device))
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, model.config.embed_dim)


@torch.no_grad()
def text_features(model: KartCLIP, captions: list[str], batch_size: int = 256) -> torch.Tensor:
    """Captions -> (N, D) unit text features."""
    model.eval()
    chunks = []
    for i in range(0, len(captions), batch_size):
        ids, mask = caption_batch(model.tokenizer, captions[i:i + batch_size])
        chunks.append(model.encode_text(ids.to(model.device), mask.to(model.device)))
    return torch.cat(chunks) if chunks else torch.empty(0, model.config.embed_dim)


def pick(images: torch.Tensor, candidates: list[list[str]], captions: dict[str, torch.Tensor]) -> list[int]:
    """Index of the most similar candidate for each row of (N, D) image features."""
    return [int(torch.stack([captions[c] for c in cands]).mv(image).argmax())
            for image, cands in zip(images, candidates, strict=True)]


@torch.no_grad()
def predict(model: KartCLIP, images: list, candidates: list[list[str]], batch_size: int = 64) -> list[int]:
    """For each picture (a path or a PIL image), the index of its best caption among its candidates.

    Args:
        images: N pictures.
        candidates: N lists of captions (any number each, at least one).
        batch_size: pictures per forward pass.
    """
    if len(images) != len(candidates):
        raise ValueError(f"got {len(images)} images but {len(candidates)} candidate lists")
    if any(len(c) == 0 for c in candidates):
        raise ValueError("every picture needs at least one candidate caption")
    unique = sorted({c for cands in candidates for c in cands})
    captions = dict(zip(unique, text_features(model, unique), strict=True))
    return pick(image_features(model, images, batch_size), candidates, captions)


@dataclass
class ClipResult:
    accuracy: float  # multiple-choice accuracy
    per_template: dict[str, float]  # multiple-choice accuracy per caption template
    counts: dict[str, int]  # sets per template
    recall_at_1: float | None = None  # image -> caption retrieval over the split's distinct captions
    recall_at_5: float | None = None

    def table(self) -> str:
        lines = [f"{'template':10s} {'n':>6s} {'accuracy':>9s}"]
        for t, acc in self.per_template.items():
            lines.append(f"{t:10s} {self.counts[t]:6d} {acc:9.4f}")
        lines.append(f"{'all':10s} {sum(self.counts.values()):6d} {self.accuracy:9.4f}")
        if self.recall_at_1 is not None:
            lines.append(f"image -> caption recall@1 {self.recall_at_1:.4f}, recall@5 {self.recall_at_5:.4f}")
        return "\n".join(lines)


def score(images: torch.Tensor, sets: list[dict], captions: dict[str, torch.Tensor],
          true_captions: list[set[str]] | None = None) -> ClipResult:
    """Multiple-choice accuracy (per template) of (N, D) image features, one row per set; with each
    picture's `true_captions`, also image -> caption recall@1 and @5 over every caption in `captions`."""
    from homework.generate_captions import CAPTIONS

    picks = pick(images, [s["candidates"] for s in sets], captions)
    totals, right = defaultdict(int), defaultdict(int)
    for s, p in zip(sets, picks, strict=True):
        totals[s["template"]] += 1
        right[s["template"]] += int(p == s["correct_index"])
    order = [t for t in CAPTIONS if totals[t]] + sorted(t for t in totals if t not in CAPTIONS)
    result = ClipResult(sum(right.values()) / max(len(sets), 1), {t: right[t] / totals[t] for t in order},
                        {t: totals[t] for t in order})
    if true_captions is not None:
        names = list(captions)
        ranked = (images @ torch.stack(list(captions.values())).T).topk(min(5, len(names)), dim=1).indices  # (N, 5)
        hits = [[names[j] in truth for j in row] for row, truth in zip(ranked.tolist(), true_captions, strict=True)]
        result.recall_at_1 = float(np.mean([h[0] for h in hits]))
        result.recall_at_5 = float(np.mean([any(h) for h in hits]))
    return result


def caption_index(split: str, data_dir: str) -> dict[str, set[str]]:
    """Every true caption of each picture of a split (made on the spot if missing)."""
    from homework.data import CaptionDataset

    captions = CaptionDataset(split, data_dir=data_dir)
    truth = defaultdict(set)
    for c in captions.records:
        truth[captions.image_path(c)].add(c["caption"])
    return dict(truth)


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------


def uniformity(features: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log of the mean Gaussian potential between distinct unit features (Wang & Isola 2020,
    arXiv:2005.10242): lowest when they spread evenly over the sphere. (M, D) -> a scalar <= 0."""
    distances = torch.pdist(features).pow(2)  # (M (M - 1) / 2,)
    return torch.logsumexp(-t * distances, dim=0) - math.log(len(distances))


def caption_vocabulary(max_count: int = 20) -> list[str]:
    """Every caption the templates can make (every kart, track and count from 0 to `max_count`;
    0 is never true, but the course's distractors offer it): the text side of every training step,
    so that no caption the grader may offer goes untrained."""
    from homework.generate_captions import CAPTIONS
    from worlds.kart import KARTS, TRACKS

    out = []
    for template, text in CAPTIONS.items():
        if "{kart}" in text:
            out += [text.format(kart=k) for k in KARTS]
        elif "{track}" in text:
            out += [text.format(track=t) for t in TRACKS]
        elif "{n}" in text:
            out += [text.format(n=n) for n in range(max_count + 1)]
        else:
            raise ValueError(f"caption template {template!r} has no field this CLIP knows")
    return out


@torch.no_grad()
def prefix_features(model: KartCLIP, prefix: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model.encode_image(prefix=prefix[i:i + batch_size]) for i in range(0, len(prefix), batch_size)])


def train(
    output_dir: str | None = None,
    base: str = "tiny",
    data_dir: str = "data",
    train_split: str = "train",
    valid_split: str = "valid",
    max_steps: int = 1500,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    uniformity_weight: float = 0.3,
    max_train_images: int = 20000,
    embed_dim: int = 128,
    pool: str = "flat",
    flat_channels: int = 32,
    pool_queries: int = 8,
    text_pool: str = "mean",
    vision_lora_stages: int = 4,
    lora_rank: int = 8,
    seed: int = 0,
    eval_every: int = 100,
    eval_samples: int = 500,
    threads: int = 0,
    overwrite: bool = False,
) -> None:
    """Train a CLIP over BASE's two towers on TRAIN_SPLIT's captioned pictures; keep the best
    checkpoint by multiple-choice accuracy on VALID_SPLIT.

    Each step scores BATCH_SIZE pictures against every caption the templates can make (about 120)
    with the contrastive loss, each picture's true captions its positives.

    Args:
        output_dir: checkpoint directory (default: runs/clip-<date>-<time>).
        base: "tiny" (the kit's base), "tiny_stk" (the kit's base pretrained on real frames), or a local
            directory holding a kart_vlm base.
        data_dir: root folder of the data (missing splits and captions are made on the spot).
        train_split: split whose all_captions.json is trained on.
        valid_split: split whose all_mc_qas.json is scored while training.
        max_steps: optimisation steps.
        batch_size: pictures per step.
        learning_rate: peak AdamW learning rate (warm-up, then cosine to a tenth).
        uniformity_weight: weight of the uniformity term that keeps the captions' features apart
            (0: the contrastive loss alone; see the README for why it is needed).
        max_train_images: train on this many pictures of the split (a seeded random subset; the
            output of their frozen vision stages is computed once, before training).
        embed_dim: size of the shared image-text space.
        pool: image pooling: flat (every token, reduced, side by side), attention (learned queries) or mean.
        flat_channels: channels kept per token by the flat pooling.
        pool_queries: learned queries of the attention pooling.
        text_pool: text pooling: mean (over the caption's tokens) or last (its [EOS] token).
        vision_lora_stages: LoRA on the last N of the vision encoder's 6 stages (0 to 6; the
            others stay frozen and are computed once per picture; more is slower per step).
        lora_rank: LoRA rank r of both towers (alpha = 2r).
        seed: seed of the heads' and the adapters' initialisation, of the subset and of the batches.
        eval_every: steps between evaluations.
        eval_samples: valid multiple-choice sets per evaluation.
        threads: torch CPU threads (0: torch's default).
        overwrite: replace an existing checkpoint in OUTPUT_DIR.
    """
    from tqdm import tqdm

    from homework.data import MultiChoiceQADataset

    # Fire types values by their look: check every one before any work.
    check_ints(max_steps=(max_steps, 1), batch_size=(batch_size, 2), max_train_images=(max_train_images, 2),
               seed=(seed, 0), eval_every=(eval_every, 1), eval_samples=(eval_samples, 1))
    learning_rate = check_number("learning_rate", learning_rate)
    uniformity_weight = check_number("uniformity_weight", uniformity_weight, allow_minimum=True)
    set_threads(threads)
    try:
        config = ClipConfig(embed_dim=embed_dim, pool=pool, flat_channels=flat_channels, pool_queries=pool_queries,
                            text_pool=text_pool,
                            vision_lora_stages=vision_lora_stages, lora_rank=lora_rank)
    except ValueError as e:
        fail(f"--{e}")
    out = Path(output_dir) if output_dir else Path("runs") / time.strftime("clip-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()) and not overwrite:
        fail(f"{out} already exists and is not empty; pass --overwrite to replace its checkpoint, or another --output_dir")

    start = time.time()
    torch.manual_seed(seed)
    truth = caption_index(str(train_split), str(data_dir))
    paths = sorted(truth)
    paths = sorted(paths[i] for i in np.random.default_rng(seed).permutation(len(paths))[:max_train_images])
    vocabulary = sorted(set(caption_vocabulary()).union(*(truth[p] for p in paths)))
    column = {c: j for j, c in enumerate(vocabulary)}
    positives = torch.zeros(len(paths), len(vocabulary), dtype=torch.bool)  # (N, V): caption j is true of picture i
    for i, p in enumerate(paths):
        positives[i, [column[c] for c in truth[p]]] = True
    valid_sets = MultiChoiceQADataset(str(valid_split), data_dir=str(data_dir), max_samples=eval_samples,
                                      spread=True)
    valid_sets = [valid_sets[i] for i in range(len(valid_sets))]

    vlm = BaseVLM(str(base), device="cpu")
    if vlm.kind != "kart_vlm":
        fail("this CLIP is built on the kit's kart_vlm base (--base tiny or a directory made by `python -m pretraining.base_vlm pretrain`)")
    model = KartCLIP(add_lora(vlm.model, config), vlm.tokenizer, config)
    ids, mask = caption_batch(vlm.tokenizer, vocabulary)  # (V, T): the text side of every step
    # The frozen vision stages' output for each picture, computed once: on a CPU that is most of a step's work.
    train_prefix = frozen_features(model.inner(), PictureCache(paths, desc=str(train_split)), model.frozen_stages,
                                   str(train_split))
    valid_pictures = PictureCache(sorted({s["image_path"] for s in valid_sets}), desc=str(valid_split))
    valid_prefix = frozen_features(model.inner(), valid_pictures, model.frozen_stages, str(valid_split))
    valid_rows = [valid_pictures.index[s["image_path"]] for s in valid_sets]
    valid_captions = sorted({c for s in valid_sets for c in s["candidates"]})

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    loss_fn = ClipLoss()
    settings = {"base": str(base), "base_fingerprint": vlm.fingerprint, "train_split": str(train_split),
                "valid_split": str(valid_split), "data_dir": str(data_dir), "max_steps": max_steps,
                "batch_size": batch_size, "learning_rate": learning_rate, "uniformity_weight": uniformity_weight,
                "max_train_images": max_train_images, "train_images": len(paths), "captions": len(vocabulary),
                "seed": seed, "eval_every": eval_every, "eval_samples": len(valid_sets),
                "threads": torch.get_num_threads(), "trainable_parameters": sum(p.numel() for p in params),
                "setup_seconds": round(time.time() - start, 1)}
    print(f"training {settings['trainable_parameters']:,} parameters on {len(paths)} pictures x {len(vocabulary)} "
          f"captions for {max_steps} steps -> {out}")

    log = TrainingLog("per_template", "valid multiple-choice accuracy", chance=0.2,
                      losses={"contrastive": "contrastive", "with uniformity": "loss"})
    bar = tqdm(range(max_steps), desc="clip", unit="step")
    for step in bar:
        # 1. learning rate first, so this step already uses it: a short warm-up (the heads start
        #    random), then cosine to a tenth
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, max_steps, learning_rate, min(50, max_steps // 10 + 1), final=0.1)
        # 2. batch: it depends only on (seed, step), so a run can be repeated exactly
        rows = np.random.default_rng([seed, step]).choice(len(paths), min(batch_size, len(paths)), replace=False)
        model.train()
        # 3. forward/backward on this batch alone (zero_grad), clip so one spike cannot wreck the weights, then step
        # BEGIN SOLUTION (hint: model(ids, mask, prefix=...) on the batch's rows, loss_fn with its positives, plus the weighted uniformity of the text features; backward, clip, step)
        images, texts, scale = model(ids, mask, prefix=train_prefix[rows])  # (B, D), (V, D), ()
        contrastive = loss_fn(images, texts, scale, positives=positives[rows])
        # Without this term the text tower can make captions that differ by one kart name alike
        # (cosine 0.999) faster than the image tower learns to tell those karts apart.
        loss = contrastive + uniformity_weight * uniformity(texts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        # END SOLUTION
        # 4. log: the bar, and every 20 steps the mean of the last 20 losses (and the logit scale) in the history
        log.step(step, max_steps, loss=loss.item(), contrastive=contrastive.item(),
                 extra={"logit_scale": round(model.scale().item(), 3)})
        bar.set_postfix(loss=f"{log.mean():.3f}", best=f"{max(log.best, 0):.3f}")
        # 5. evaluate every EVAL_EVERY steps; 6. keep the checkpoint if it is the best so far; 7. log
        if (step + 1) % eval_every == 0 or step + 1 == max_steps:
            images = prefix_features(model, valid_prefix)[valid_rows]
            result = score(images, valid_sets, dict(zip(valid_captions, text_features(model, valid_captions), strict=True)))
            if log.evaluation(step, result.accuracy, result.per_template):
                save_model(model, out, {**settings, "best_step": step + 1, "best_valid_accuracy": log.best,
                                        "train_seconds": log.seconds()})
            log.write(out)
            tqdm.write(f"step {step + 1} ({log.seconds():.0f} s): valid accuracy {result.accuracy:.4f} "
                       + " ".join(f"{t}={a:.2f}" for t, a in result.per_template.items()))
    print(f"best valid accuracy {log.best:.4f}; checkpoint in {out} ({settings['setup_seconds']:.0f} s of setup, "
          f"{log.seconds():.0f} s of training)")


def evaluate(model: KartCLIP, split: str, data_dir: str = "data", max_samples: int | None = None,
             batch_size: int = 64) -> ClipResult:
    """A split's multiple-choice accuracy (per template), and image -> caption recall where the split
    has its true captions."""
    from homework.data import MultiChoiceQADataset

    dataset = MultiChoiceQADataset(str(split), data_dir=str(data_dir), max_samples=max_samples)
    sets = [dataset[i] for i in range(len(dataset))]
    split_dir = Path(str(data_dir)) / str(split)
    # Recall needs every true caption of each picture; a grading folder such as the course's
    # valid_grader/ holds only its multiple-choice sets (and no frames to caption).
    has_captions = any(split_dir.glob("*_captions.json")) or any(split_dir.glob("*_info.json"))
    truth = caption_index(str(split), str(data_dir)) if has_captions else {}
    all_captions = sorted({c for s in sets for c in s["candidates"]} | {c for t in truth.values() for c in t})
    try:
        images = image_features(model, [s["image_path"] for s in sets], batch_size)
    except ValueError as e:  # an unreadable picture
        fail(str(e))
    captions = dict(zip(all_captions, text_features(model, all_captions), strict=True))
    return score(images, sets, captions, [truth.get(s["image_path"], set()) for s in sets] if truth else None)


def test(checkpoint: str = str(REFERENCE_DIR), split: str = "valid", data_dir: str = "data",
         max_samples: int | None = None, batch_size: int = 64) -> None:
    """Multiple-choice accuracy of a CLIP checkpoint per caption template, and image -> caption
    recall@1 and @5 over the split's distinct captions; the last line is `accuracy=...`.

    Args:
        checkpoint: checkpoint directory (default: the committed reference).
        split: split whose *_mc_qas.json (and *_captions.json, for recall, where it has them) is scored.
        data_dir: root folder of the data.
        max_samples: score only the first N multiple-choice sets.
        batch_size: pictures per forward pass.
    """
    if max_samples is not None:
        max_samples = check_int("max_samples", max_samples, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    result = evaluate(load_model(str(checkpoint)), str(split), str(data_dir), max_samples, batch_size)
    print(result.table())
    print(f"accuracy={result.accuracy:.4f}")


if __name__ == "__main__":
    fire.Fire({"train": train, "test": test})
