"""SimCLR on bouncing-ball videos: contrastive pretraining, then a linear probe that counts balls.

    python -m homework.simclr train                       # about 7 minutes on a busy 2-core CPU
    python -m homework.simclr probe runs/simclr           # linear probe vs a random encoder
    python -m homework.simclr probe                       # the same for the reference
    torchrun --nproc_per_node 2 -m homework.simclr train  # distributed data parallel

A grader needs only `load_encoder(dir)` (or `load_reference()`) and `embed(encoder, videos)`:
uint8 videos (N, T, 64, 64, 3) in, frozen (N, D) features out.

SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations", https://arxiv.org/abs/2002.05709): two augmented views of each clip go through
one encoder and a projection head; the NT-Xent loss pulls the two views of a clip together and
pushes the other clips of the batch away. Nothing in training sees a label. The frozen encoder is
then judged by a linear classifier that tells videos of 1, 2 and 3 balls apart.

Shapes: B clips, T frames per clip, C=3 colour channels, S pixels a side, D feature dimensions.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import fire
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock
from torchvision.transforms import v2
from tqdm import tqdm

from homework.checkpoint import (
    LIMITS,
    config_from_record,
    damaged,
    load_weights,
    open_checkpoint,
    reference_dir,
    write_record,
)
from homework.cli_checks import check_choice, check_ints, check_number, fail, renamed, set_threads
from homework.lr_schedule import warmup_cosine
from homework.run_state import SettingsMismatch, load_state, save_state

REFERENCE_DIR = reference_dir("simclr")  # what load_reference() and `probe` read by default
ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = LIMITS["simclr"].record  # config.json: the resolved run config
TRAINING_STATE_FILE = "last.pt"
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25  # roughly the balls world's pixel statistics


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


STEM_STRIDE = 4  # the ViViT's convolutional stem halves a frame twice


@dataclass
class EncoderConfig:
    """Everything needed to rebuild an encoder; saved with every checkpoint and checked on load."""

    encoder: str = "resnet18"  # a key of ENCODERS: "resnet18" (frames, mean over time) or "vivit"
    image_size: int = 64  # frames are resized to S x S before the encoder
    clip_frames: int = 2  # frames per training view (and per clip the vivit encoder sees at once)
    embed_frames: int = 8  # evenly spaced frames of a whole video when embedding it (vivit: in clips of clip_frames)
    width: int = 16  # resnet18: channels of its first stage (64 is torchvision's stock ResNet-18)
    vivit_dim: int = 96  # vivit: token width
    vivit_depth: int = 2  # vivit: transformer layers
    vivit_heads: int = 4  # vivit: attention heads
    vivit_patch: int = 2  # vivit: a tubelet's side, in pixels of the stem's output (of the frame if vivit_stem=0)
    vivit_tubelet: int = 2  # vivit: frames in one tubelet
    vivit_stem: int = 16  # vivit: channels of a two-layer stride-2 convolutional stem before the tubelets (0: none)

    def validate(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose one of: {', '.join(ENCODERS)}")
        if self.image_size < 16 or self.clip_frames < 1 or self.embed_frames < 1 or self.width < 1:
            raise ValueError(f"bad encoder config: {self}")
        if self.encoder == "vivit":
            shrink = STEM_STRIDE if self.vivit_stem else 1
            if self.image_size % (shrink * self.vivit_patch) or self.clip_frames % self.vivit_tubelet:
                raise ValueError(
                    f"vivit needs image_size ({self.image_size}, over {STEM_STRIDE} with a stem) divisible by vivit_patch"
                    f" ({self.vivit_patch}) and clip_frames ({self.clip_frames}) divisible by vivit_tubelet"
                    f" ({self.vivit_tubelet})"
                )
            if self.embed_frames % self.clip_frames:
                raise ValueError(f"vivit embeds in clips: embed_frames ({self.embed_frames}) must be a multiple of "
                                 f"clip_frames ({self.clip_frames})")
            if self.vivit_dim % self.vivit_heads:
                raise ValueError(f"vivit_dim ({self.vivit_dim}) must be divisible by vivit_heads ({self.vivit_heads})")


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


class NTXentLoss(nn.Module):
    """NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR (Chen et al. 2020).

    For a batch of n clips with projections z1 (view 1) and z2 (view 2), each of the 2n embeddings
    is a query whose positive is the other view of its clip and whose 2n - 2 negatives are the
    views of the other clips; the loss is the cross-entropy of picking the positive among the
    2n - 1 candidates from cosine similarities divided by the temperature.

        loss_fn = NTXentLoss(temperature=0.5)
        loss = loss_fn(z1, z2)  # z1, z2: (n, d) projections of two views of the same n clips

    When all 2n embeddings are equal, every candidate is equally likely: loss = log(2n - 1).
    """

    def __init__(self, temperature: float = 0.5, reduction: str = "mean"):
        super().__init__()
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.temperature = float(temperature)
        self.reduction = reduction

    def get_logits(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities of all 2n embeddings, self-similarity masked out. (2n, 2n)"""
        if z1.shape != z2.shape or z1.dim() != 2:
            raise ValueError(f"expected two (n, d) views of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
        # BEGIN SOLUTION (hint: L2-normalise both views, stack them to (2n, d), take all dot products / temperature, mask the diagonal with -inf)
        z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2n, d), unit length
        # i, j: embeddings (2n each); d: feature dimension
        logits = torch.einsum("id,jd->ij", z, z) / self.temperature  # (2n, 2n)
        self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
        return logits.masked_fill(self_mask, float("-inf"))  # an embedding is never its own candidate
        # END SOLUTION

    def get_labels(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Index of each embedding's positive: row i (view 1) pairs with i + n (view 2). (2n,)"""
        # BEGIN SOLUTION (hint: rows 0..n-1 point to n..2n-1 and rows n..2n-1 point back to 0..n-1)
        index = torch.arange(n, device=device)
        return torch.cat([index + n, index])
        # END SOLUTION

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        logits = self.get_logits(z1, z2)  # (2n, 2n)
        labels = self.get_labels(len(z1), z1.device)  # (2n,)
        return F.cross_entropy(logits, labels, reduction=self.reduction)


# ----------------------------------------------------------------------------------------------
# Encoders: (B, T, C, S, S) normalised frames -> (B, D) features
# ----------------------------------------------------------------------------------------------


def resnet18_trunk(width: int = 64) -> nn.Module:
    """torchvision's ResNet-18 (BasicBlock, [2, 2, 2, 2]), no pretrained weights, classifier removed.

    width=64 is the stock model (11 M parameters); a narrower first stage keeps the same layout,
    rebuilt with torchvision's own block builder, at about (width / 64)^2 of the size and compute.
    """
    net = torchvision.models.resnet18(weights=None)
    if width != 64:
        net.inplanes = width
        net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        net.bn1 = nn.BatchNorm2d(width)
        net.layer1 = net._make_layer(BasicBlock, width, 2)
        net.layer2 = net._make_layer(BasicBlock, 2 * width, 2, stride=2)
        net.layer3 = net._make_layer(BasicBlock, 4 * width, 2, stride=2)
        net.layer4 = net._make_layer(BasicBlock, 8 * width, 2, stride=2)
        for m in net.modules():  # the same initialisation torchvision gives the stock model
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    net.fc = nn.Identity()
    return net


class ResNetVideoEncoder(nn.Module):
    """A ResNet-18 applied to every frame, its features averaged over time."""

    sees_order = False  # a mean over time: any number of frames, in any order, in one pass

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.trunk = resnet18_trunk(config.width)
        self.feature_dim = 8 * config.width

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        B, T, C, S, _ = videos.shape
        # BEGIN SOLUTION (hint: fold time into the batch, run the ResNet trunk on every frame, unfold, mean over time)
        frames = videos.reshape(B * T, C, S, S)  # (B*T, C, S, S): every frame is an image
        features = self.trunk(frames)  # (B*T, D)
        return features.reshape(B, T, -1).mean(dim=1)  # (B, D): average over time
        # END SOLUTION


class TokenBatchNorm(nn.Module):
    """BatchNorm1d over the channels of (B, N, D) tokens: one mean and variance per channel, taken
    over every token of every clip in the batch."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(tokens.transpose(1, 2)).transpose(1, 2)  # (B, N, D): BatchNorm1d wants (B, D, N)


class ViViTBlock(nn.Module):
    """A pre-norm transformer block (attention, then a GELU MLP, each added to its input) whose
    two norms are batch norms over tokens instead of layer norms, and whose two branches start at
    zero, so that a new block is the identity.

    A layer norm rescales every token to the same size, so how much of a feature a token holds
    (how much ball it covers) is lost before attention; a batch norm keeps the tokens' sizes
    relative to each other. A block that starts as the identity makes the new encoder a stem and a
    mean over its tokens, which starts learning at once, as the ResNet does; the attention then
    grows in (as a ResNet block's last norm starts at zero in Goyal et al. 2017, and DiT's
    adaLN-Zero). Without it the loss sat still for the first three epochs. What each choice is worth
    on the balls' held-out split is measured in the README's ViViT paragraph.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1, self.norm2 = TokenBatchNorm(dim), TokenBatchNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        for last in (self.attention.out_proj, self.mlp[-1]):  # each branch's last layer: the block starts as x -> x
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)  # (B, N, D)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViViTEncoder(nn.Module):
    """A small ViViT-style spatio-temporal transformer (Arnab et al. 2021, tubelet embedding).

    A two-layer convolutional stem (stride 2 each, as in hybrid vision transformers; Xiao et al.
    2021 show that such early convolutions make ViTs train far more stably) turns every frame
    into a 16x16 feature map at 64x64; non-overlapping tubelets of vivit_tubelet frames x
    vivit_patch^2 of its cells become tokens, with a learned position embedding over (time,
    space); pre-norm blocks with batch norms (ViViTBlock) attend jointly over all of them, and
    the mean of the final layer-normed tokens is the clip's feature. vivit_stem=0 makes tubelets
    of raw pixels instead.
    """

    sees_order = True  # tubelets span frames: it takes clips of exactly clip_frames, and their order matters

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        dim, p, tube, stem = config.vivit_dim, config.vivit_patch, config.vivit_tubelet, config.vivit_stem
        self.stem = nn.Sequential(  # (B*T, 3, S, S) -> (B*T, stem, S/4, S/4)
            nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(stem), nn.GELU(),
            nn.Conv2d(stem, stem, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(stem), nn.GELU(),
        ) if stem else nn.Identity()
        grid = config.image_size // (STEM_STRIDE if stem else 1)
        self.num_tokens = (config.clip_frames // tube) * (grid // p) ** 2
        self.to_tokens = nn.Conv3d(stem or 3, dim, kernel_size=(tube, p, p), stride=(tube, p, p))
        self.position = nn.Parameter(torch.randn(1, self.num_tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViViTBlock(dim, config.vivit_heads) for _ in range(config.vivit_depth)])
        self.norm = nn.LayerNorm(dim)
        self.feature_dim = dim

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        B, T, C, S, _ = videos.shape
        if T != self.config.clip_frames or S != self.config.image_size:
            raise ValueError(
                f"vivit expects (B, {self.config.clip_frames}, 3, {self.config.image_size}, "
                f"{self.config.image_size}) clips, got {tuple(videos.shape)}"
            )
        # BEGIN SOLUTION (hint: stem on every frame, Conv3d tubelets -> (B, N, dim) tokens + position, the blocks, layer norm, mean over tokens)
        maps = self.stem(videos.reshape(B * T, C, S, S))  # (B*T, c, s, s): every frame through the stem
        maps = maps.reshape(B, T, *maps.shape[1:])  # (B, T, c, s, s)
        x = self.to_tokens(maps.transpose(1, 2))  # (B, dim, T/tube, s/p, s/p)
        x = x.flatten(2).transpose(1, 2) + self.position  # (B, N, dim)
        x = self.norm(self.blocks(x))  # (B, N, dim)
        return x.mean(dim=1)  # (B, dim)
        # END SOLUTION


ENCODERS = {"resnet18": ResNetVideoEncoder, "vivit": ViViTEncoder}
# train's defaults per encoder (the ResNet's made the reference). The ViViT's blocks start as the identity,
# so it takes the ResNet's step size and epochs (in the ResNet's time: its blocks are few); it keeps a
# transformer's stronger weight decay, and sees a video in clips of clip_frames, where averaging more of them
# (16 frames, in 8 clips) gives it a steadier feature (about 2 points over 8 frames; the README).
RECIPES = {"resnet18": {"epochs": 10, "learning_rate": 2e-3, "weight_decay": 1e-4, "embed_frames": 8},
           "vivit": {"epochs": 10, "learning_rate": 2e-3, "weight_decay": 0.05, "embed_frames": 16}}


def create_encoder(config: EncoderConfig) -> nn.Module:
    config.validate()
    return ENCODERS[config.encoder](config)


class SimCLR(nn.Module):
    """An encoder and the projection head that the contrastive loss sees (dropped after training)."""

    def __init__(self, config: EncoderConfig, projection_dim: int = 64):
        super().__init__()
        self.encoder = create_encoder(config)
        D = self.encoder.feature_dim
        self.head = nn.Sequential(nn.Linear(D, D), nn.BatchNorm1d(D), nn.ReLU(inplace=True), nn.Linear(D, projection_dim))

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two (B, T, C, S, S) views of the same clips -> two (B, projection_dim) projections."""
        B = view1.shape[0]
        z = self.head(self.encoder(torch.cat([view1, view2])))  # (2B, projection_dim), one pass for both
        return z[:B], z[B:]


# ----------------------------------------------------------------------------------------------
# Data: uint8 videos (N, T, S, S, 3) from worlds.balls -> augmented, normalised float clips
# ----------------------------------------------------------------------------------------------


def make_augmentation(image_size: int) -> v2.Transform:
    """One random augmentation for a whole clip: v2 draws its parameters once per call, so every
    frame of a (T, C, S, S) clip gets the same crop, flip and colour change."""
    # BEGIN SOLUTION (hint: v2.Compose of RandomResizedCrop, RandomHorizontalFlip, RandomApply(ColorJitter), RandomGrayscale, then ToDtype + Normalize)
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.9, 1.0), ratio=(0.9, 1.1), antialias=True),  # mild: never crop a ball away
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(brightness=0.6, contrast=0.6, saturation=0.6, hue=0.5)], p=0.8),  # any hue
        v2.RandomGrayscale(p=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([PIXEL_MEAN] * 3, [PIXEL_STD] * 3),
    ])
    # END SOLUTION


def sample_view(video: torch.Tensor, clip_frames: int, augment: v2.Transform, in_order: bool = False) -> torch.Tensor:
    """A random set of clip_frames frames in a random order (in time order if IN_ORDER), augmented as one clip.

    Two views see different moments. In time order, a spatio-temporal encoder matches two views
    of a video by the way its balls move, a shortcut that says nothing about how many there are
    (the ViViT learned exactly that, and probed worse than its random initialisation). The ResNet
    averages its frames, so order means nothing to it; its views are sorted only so that the
    reference's run repeats to the bit.

    (T, S, S, 3) uint8 -> (clip_frames, 3, image_size, image_size) float
    """
    frame_ids = torch.randperm(video.shape[0])[:clip_frames]  # distinct frames, in random order
    if in_order:
        frame_ids = frame_ids.sort().values
    clip = video[frame_ids].permute(0, 3, 1, 2)  # (t, 3, S, S)
    return augment(clip)


class ViewPairs(torch.utils.data.Dataset):
    """Video i -> two independently augmented views of it, each (clip_frames, 3, S, S)."""

    def __init__(self, videos: torch.Tensor, clip_frames: int, augment: v2.Transform, in_order: bool = False):
        self.videos, self.clip_frames, self.augment = videos, clip_frames, augment  # videos: (N, T, S, S, 3)
        self.in_order = in_order

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        video = self.videos[i]
        return tuple(sample_view(video, self.clip_frames, self.augment, self.in_order) for _ in range(2))


def preprocess(videos: np.ndarray | torch.Tensor, clip_frames: int, image_size: int) -> torch.Tensor:
    """Evenly spaced frames, resized and normalised, for embedding (no randomness).

    (N, T, S, S, 3) uint8 -> (N, clip_frames, 3, image_size, image_size) float
    """
    videos = torch.as_tensor(videos)
    if videos.dim() != 5 or videos.shape[-1] != 3 or videos.dtype != torch.uint8:
        raise ValueError(f"expected (N, T, H, W, 3) uint8 videos, got {tuple(videos.shape)} {videos.dtype}")
    N, T = videos.shape[:2]
    frame_ids = torch.linspace(0, T - 1, clip_frames).round().long()
    clips = videos[:, frame_ids].permute(0, 1, 4, 2, 3).float() / 255  # (N, t, 3, H, W)
    if clips.shape[-1] != image_size or clips.shape[-2] != image_size:
        flat = clips.flatten(0, 1)  # (N*t, 3, H, W)
        flat = F.interpolate(flat, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        clips = flat.reshape(N, clip_frames, 3, image_size, image_size)
    return (clips - PIXEL_MEAN) / PIXEL_STD


@torch.no_grad()
def embed(encoder: nn.Module, videos: np.ndarray | torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Frozen features of raw videos: (N, T, H, W, 3) uint8 -> (N, D) float32.

    This is all a grader needs from an encoder: it fits its own probe on the features.
    """
    config = encoder.config
    # An encoder that sees order takes clips of clip_frames, whose features are averaged; the others take all at once.
    clip = config.clip_frames if encoder.sees_order else config.embed_frames
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    out = []
    for start in range(0, len(videos), batch_size):
        frames = preprocess(videos[start : start + batch_size], config.embed_frames, config.image_size).to(device)
        clips = [encoder(frames[:, i : i + clip]) for i in range(0, config.embed_frames, clip)]  # (b, D) each
        out.append(torch.stack(clips).mean(0).float().cpu())  # (b, D)
    encoder.train(was_training)
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------


def save_encoder(encoder: nn.Module, run_config: dict, out_dir: str | Path) -> Path:
    """Write encoder.safetensors + config.json, then check that they load (and fit the size limit)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    path = out_dir / ENCODER_FILE
    save_file(state, path, metadata={"encoder_config": json.dumps(asdict(encoder.config))})
    path.chmod(0o644)  # safetensors writes owner-only files; a checkpoint is meant to be shared
    write_record(out_dir, "simclr", run_config)
    load_encoder(out_dir)  # fails loudly now rather than at grading time
    return path


def load_encoder(path: str | Path, expect: EncoderConfig | None = None) -> nn.Module:
    """Rebuild an encoder from a directory (or its encoder.safetensors), checking its config.

    A missing, oversized or mismatched checkpoint is one line (a SystemExit) that says what to do.
    expect: if given, the checkpoint must be this encoder variant, or a clear error says how not.
    """
    from safetensors import safe_open

    path = Path(path)
    weights = path if path.is_file() else path / ENCODER_FILE
    record = open_checkpoint(weights.parent, "simclr", (weights.name,))  # exists, is SimCLR's, fits the limit
    try:
        with safe_open(str(weights), framework="pt") as f:
            saved = (f.metadata() or {}).get("encoder_config")
    except Exception as e:  # safetensors' own error type: a truncated or damaged file
        damaged(weights, e)
    if saved is None:
        fail(f"{weights} has no encoder_config in its metadata; save it with save_encoder()")
    config = config_from_record(EncoderConfig, json.loads(saved), weights)
    try:
        config.validate()
    except ValueError as e:
        fail(f"{weights}: {e}")
    recorded = record.get("encoder")
    if recorded is not None:  # a field added since the record was made takes its default, as in the metadata
        recorded = {**asdict(EncoderConfig()), **recorded}
    if recorded is not None and recorded != asdict(config):
        fail(f"{weights.parent / CONFIG_FILE} disagrees with {weights}: {recorded} vs {asdict(config)}")
    if expect is not None and asdict(expect) != asdict(config):
        diff = {k: (v, getattr(config, k)) for k, v in asdict(expect).items() if getattr(config, k) != v}
        fail(f"{weights} is a different encoder variant; expected vs saved: {diff}")
    return load_weights(create_encoder(config), weights).eval()


def load_reference() -> nn.Module:
    """The committed reference encoder (eval mode); `embed(encoder, videos)` gives its features."""
    return load_encoder(REFERENCE_DIR)


# ----------------------------------------------------------------------------------------------
# Distributed helpers (torchrun sets RANK / WORLD_SIZE / LOCAL_RANK)
# ----------------------------------------------------------------------------------------------


def _setup_distributed() -> tuple[int, int, torch.device]:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def resume_settings(run_config: dict) -> dict:
    """What a resumed run must share with the saved one: the run config but its length, so a run
    can be continued with more --epochs. Flat, so a mismatch names the setting that differs."""
    return {"encoder": run_config["encoder"], **{k: v for k, v in run_config["train"].items() if k != "epochs"}}


def save_training_state(path: Path, model: SimCLR, optimizer: torch.optim.Optimizer, epoch: int, run_config: dict) -> None:
    """Everything --resume needs (atomic; loadable with torch.load(weights_only=True))."""
    save_state(path, resume_settings(run_config), model=model.state_dict(), optimizer=optimizer.state_dict(),
               epoch=epoch)


def train(
    encoder: str = "resnet18",
    epochs: int | None = None,
    batch_size: int = 64,
    learning_rate: float | None = None,
    temperature: float = 0.5,
    weight_decay: float | None = None,
    num_videos: int = 2000,
    clip_frames: int = 2,
    embed_frames: int | None = None,
    image_size: int = 64,
    width: int = 16,
    projection_dim: int = 64,
    seed: int = 0,
    threads: int = 0,
    workers: int = 1,
    data_dir: str = "data/balls",
    output_dir: str = "runs/simclr",
    resume: bool = False,
    overwrite: bool = False,
    out_dir: str | None = None,
    lr: float | None = None,
) -> None:
    """Contrastive pretraining on the train split; checkpoints every epoch; --resume continues.

    Under `torchrun --nproc_per_node N` each process takes 1/N of every epoch's clips at the same
    per-process batch size, and the learning rate is scaled by N (the linear scaling rule).
    The reference was trained with `--threads 1`; pass it to reproduce the reference's weights exactly.

    Args:
        encoder: resnet18 (frames through a ResNet-18, averaged over time) or vivit (a small ViViT).
        epochs: passes over the training videos (default: the encoder's in RECIPES, 10 for both).
        batch_size: clips per step per process (each gives 2 views; the loss has 2*batch_size - 2 negatives).
        learning_rate: peak AdamW learning rate for one process (multiplied by the number of processes;
            default: the encoder's in RECIPES, 2e-3 for both).
        temperature: the NT-Xent temperature.
        weight_decay: AdamW weight decay (default: the encoder's in RECIPES, 1e-4 for resnet18, 0.05 for vivit).
        num_videos: training videos (the train split is generated if missing).
        clip_frames: frames sampled per clip (per view).
        embed_frames: evenly spaced frames of a whole video when it is embedded after training (default: the
            encoder's in RECIPES, 8 for resnet18 and 16 for vivit, which sees them in clips of clip_frames).
        image_size: frames are cropped and resized to this many pixels a side.
        width: ResNet-18 first-stage channels (16 saves ~3 MB; 64, the stock model, is over the size limit).
        projection_dim: output size of the projection head the loss sees.
        seed: seed for initialisation, shuffling and augmentation.
        threads: torch CPU threads per process (0: the machine's cores divided by the processes).
        workers: data-loader processes that augment clips in parallel with training (0: in the main process).
        data_dir: where worlds.balls splits live.
        output_dir: where last.pt (resume state), encoder.safetensors and config.json go.
        resume: continue the run saved in output_dir.
        overwrite: start afresh even if output_dir holds a run.
        out_dir: the old name of --output_dir (still works, with a note).
        lr: the old name of --learning_rate (still works, with a note).
    """
    output_dir = renamed("out_dir", "output_dir", out_dir, output_dir, train)
    learning_rate = renamed("lr", "learning_rate", lr, learning_rate, train)
    check_choice("encoder", encoder, ENCODERS)
    epochs = RECIPES[encoder]["epochs"] if epochs is None else epochs
    learning_rate = RECIPES[encoder]["learning_rate"] if learning_rate is None else learning_rate
    weight_decay = RECIPES[encoder]["weight_decay"] if weight_decay is None else weight_decay
    embed_frames = RECIPES[encoder]["embed_frames"] if embed_frames is None else embed_frames
    check_ints(epochs=(epochs, 1), batch_size=(batch_size, 2), num_videos=(num_videos, 2), clip_frames=(clip_frames, 1),
               embed_frames=(embed_frames, 1),
               image_size=(image_size, 16), width=(width, 1), projection_dim=(projection_dim, 1), seed=(seed, 0),
               threads=(threads, 0), workers=(workers, 0))
    check_number("learning_rate", learning_rate, 0.0, 1.0)
    check_number("temperature", temperature)
    check_number("weight_decay", weight_decay, 0.0, 1.0, allow_minimum=True)
    if resume and overwrite:
        fail("pass either --resume or --overwrite, not both")
    out = Path(output_dir)
    state_path = out / TRAINING_STATE_FILE
    if resume and not state_path.exists():
        fail(f"--resume given but {state_path} does not exist; drop --resume to start a run")
    if not resume and not overwrite and (state_path.exists() or (out / ENCODER_FILE).exists()):
        fail(f"{out} already holds a run; pass --resume to continue it or --overwrite to restart")
    model_config = EncoderConfig(encoder=encoder, image_size=image_size, clip_frames=clip_frames,
                                 embed_frames=embed_frames, width=width)
    try:
        model_config.validate()
    except ValueError as e:
        fail(str(e))

    rank, world_size, device = _setup_distributed()
    set_threads(threads or max(1, (os.cpu_count() or 1) // world_size))
    run_config = {  # saved in config.json with the encoder; "lr" keeps the key the reference's record has
        "encoder": asdict(model_config),
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": learning_rate, "temperature": temperature,
                  "weight_decay": weight_decay, "num_videos": num_videos, "projection_dim": projection_dim,
                  "seed": seed, "world_size": world_size, "data_seed": None},
    }

    # Data: rank 0 makes a missing split while the others wait, then every rank loads it.
    from worlds import balls

    if rank == 0:
        balls.ensure_split("train", data_dir, num_videos=num_videos)
    _barrier(world_size)
    data = balls.load_split("train", data_dir)
    meta = json.loads((Path(data_dir) / "train" / "meta.json").read_text())
    run_config["train"]["data_seed"] = meta.get("seed")
    if len(data["videos"]) < num_videos:
        fail(f"{data_dir}/train has {len(data['videos'])} videos, fewer than --num_videos {num_videos}; "
             f"run: python -m worlds balls --split train --num_videos {num_videos} --overwrite")
    videos = torch.from_numpy(data["videos"][:num_videos])  # (N, T, S, S, 3) uint8; labels stay unused

    torch.manual_seed(seed)  # the same initial weights on every rank
    model = SimCLR(model_config, projection_dim).to(device)
    encoder_mb = sum(t.numel() * t.element_size() for t in model.encoder.state_dict().values()) / 2**20
    kind = LIMITS["simclr"]
    if encoder_mb > kind.max_mb:  # say so now, not after training
        fail(f"this encoder would save {encoder_mb:.0f} MB, over the {kind.max_mb:g} MB limit; {kind.shrink}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate * world_size, weight_decay=weight_decay)
    start_epoch = 0
    if resume:
        try:
            state = load_state(state_path, resume_settings(run_config))
        except SettingsMismatch as e:
            fail(f"{e}; use the same flags")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
        if rank == 0:
            print(f"resuming {out} after epoch {start_epoch}")
    ddp_model = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    criterion = NTXentLoss(temperature)
    augment = make_augmentation(image_size)

    steps_per_epoch = len(videos) // (batch_size * world_size)
    if steps_per_epoch < 1:
        fail(f"{len(videos)} videos cannot fill one batch of {batch_size} x {world_size} processes")
    total_steps, warmup_steps = epochs * steps_per_epoch, max(1, steps_per_epoch // 2)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        print(f"SimCLR {encoder}: {sum(p.numel() for p in model.encoder.parameters()) / 1e6:.2f} M encoder parameters,"
              f" {len(videos)} videos, {world_size} process(es) x batch {batch_size}, {steps_per_epoch} steps/epoch")
    pairs = ViewPairs(videos, clip_frames, augment, in_order=not ENCODERS[encoder].sees_order)  # see sample_view
    started = time.time()
    for epoch in range(start_epoch, epochs):
        # Shuffling and augmentation are seeded by (seed, epoch): a resumed run replays the same epochs,
        # and all ranks agree on the permutation, each taking its own slice of every global batch.
        order = torch.randperm(len(videos), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        mine = order[: steps_per_epoch * batch_size * world_size].view(steps_per_epoch, world_size, batch_size)[:, rank]
        torch.manual_seed(seed * 100003 + epoch * 1009 + rank + 1)  # augmentation when workers=0
        loader = torch.utils.data.DataLoader(  # workers augment the next batches while this one trains
            pairs, batch_size=batch_size, sampler=mine.flatten().tolist(), num_workers=workers,
            generator=torch.Generator().manual_seed(seed * 100003 + epoch * 1009 + rank + 1),
        )
        ddp_model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=rank != 0)
        # Every step runs 1-4 in this order; the loader has already drawn the step's augmented views
        # (in a worker, or here with the seeded global RNG), and nothing below draws random numbers.
        for i, (view1, view2) in enumerate(bar):  # (B, t, 3, s, s) each: two augmented views of B clips
            step = epoch * steps_per_epoch + i
            # 1. learning rate for this step, before the update that uses it
            #    (warm-up then cosine: large early steps on a random net diverge)
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, total_steps, learning_rate * world_size, warmup_steps)
            # 2. this rank's share of the global batch, onto the device the model lives on
            view1, view2 = view1.to(device), view2.to(device)
            # 3. forward, backward, step (DDP averages the gradients across ranks during backward)
            # BEGIN SOLUTION (hint: project both views with ddp_model, NT-Xent loss, zero_grad, backward, optimizer step)
            z1, z2 = ddp_model(view1, view2)  # (B, projection_dim) each
            loss = criterion(z1, z2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # END SOLUTION
            # 4. log the update just made (its loss and learning rate); last, as loss.item() waits for the device
            if rank == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
        # 5. checkpoint every epoch, after its last step, so an interrupted run loses at most one epoch
        #    and --resume starts the next epoch from exactly these weights and optimizer moments
        if rank == 0:
            save_training_state(state_path, model, optimizer, epoch + 1, run_config)
        _barrier(world_size)  # no rank starts the next epoch (or exits) before the checkpoint is written
    if rank == 0:
        run_config["train"]["wall_seconds"] = round(time.time() - started, 1)
        path = save_encoder(model.encoder, run_config, out)
        print(f"saved {path} ({path.stat().st_size / 2**20:.1f} MB) after {time.time() - started:.0f} s")
    if world_size > 1:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# Linear probe
# ----------------------------------------------------------------------------------------------


def fit_linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
    num_classes: int = 3, weight_decay: float = 1e-4, steps: int = 500,
) -> float:
    """Multinomial logistic regression on frozen features; returns test accuracy in [0, 1].

    Features are standardised with the training set's statistics; full-batch L-BFGS fits the
    weights (the problem is convex, so no learning-rate tuning is needed).
    """
    # BEGIN SOLUTION (hint: standardise with train mean/std, fit nn.Linear with cross-entropy + L2 by LBFGS, argmax accuracy on test)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std  # (N, D) each
    linear = nn.Linear(train_x.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(train_x), train_y) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (linear(test_x).argmax(1) == test_y).float().mean().item()
    # END SOLUTION


def probe(
    checkpoint: str = str(REFERENCE_DIR),
    train_split: str = "train",
    split: str = "test",
    num_train: int = 2000,
    num_test: int = 500,
    seed: int = 0,
    threads: int = 0,
    data_dir: str = "data/balls",
    test_split: str | None = None,
) -> None:
    """Linear probe on frozen features (how many balls: 1, 2 or 3), beside a random encoder's.

    The probe is fit on the train split's labels and scored on --split, a split made from its
    own seed that training never saw. The last line printed is `accuracy=...`.

    Args:
        checkpoint: a directory with encoder.safetensors and config.json (default: the reference,
            the one load_simclr() reads).
        train_split: split whose labelled videos fit the probe (generated if missing).
        split: the held-out split that scores it (generated if missing).
        num_train: training videos for the probe.
        num_test: held-out videos to score.
        seed: seed of the random encoder of the baseline.
        threads: torch CPU threads per process (0: the machine's cores divided by the processes).
        data_dir: where worlds.balls splits live.
        test_split: the old name of --split (still works, with a note).
    """
    split = renamed("test_split", "split", test_split, split, probe)
    check_ints(num_train=(num_train, 3), num_test=(num_test, 1), seed=(seed, 0), threads=(threads, 0))
    if train_split == split:
        fail(f"--split must differ from --train_split ({train_split!r})")
    encoder = load_encoder(checkpoint)
    set_threads(threads or os.cpu_count() or 1)  # one process: 0 is every core
    from worlds import balls

    train_data = balls.ensure_split(train_split, data_dir, num_videos=num_train)
    test_data = balls.ensure_split(split, data_dir, num_videos=num_test)
    if (train_data["num_balls"] < 1).any() or (test_data["num_balls"] < 1).any():
        fail("the probe needs ball counts; a split without labels (num_balls=-1) cannot be used")
    train_videos, train_y = train_data["videos"][:num_train], torch.from_numpy(train_data["num_balls"][:num_train] - 1)
    test_videos, test_y = test_data["videos"][:num_test], torch.from_numpy(test_data["num_balls"][:num_test] - 1)

    torch.manual_seed(seed)
    random_encoder = create_encoder(encoder.config).eval()
    results = {}
    for name, model in (("random encoder", random_encoder), ("trained encoder", encoder)):
        started = time.time()
        results[name] = probe_accuracy(model, train_videos, train_y, test_videos, test_y)
        print(f"{name:16s} probe accuracy {results[name]:.4f}  ({len(train_y)} train / {len(test_y)} "
              f"{split} videos, {time.time() - started:.0f} s)")
    print(f"accuracy={results['trained encoder']:.4f}")


def probe_accuracy(encoder: nn.Module, train_videos: np.ndarray, train_y: torch.Tensor,
                   test_videos: np.ndarray, test_y: torch.Tensor) -> float:
    """Embed both sets with the frozen encoder and score a linear probe fit on the first."""
    train_x, test_x = embed(encoder, train_videos), embed(encoder, test_videos)  # (N, D) each
    return fit_linear_probe(train_x, train_y, test_x, test_y)


if __name__ == "__main__":
    fire.Fire({"train": train, "probe": probe})
