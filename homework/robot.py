"""Robot sensor fusion: two cameras, audio, pressure and EMG of a grasp, fused three ways.

    python -m homework.robot train                       # -> runs/robot/balanced (about 3 min on 2 cores)
    python -m homework.robot test                        # the committed reference on the unseen-object split
    python -m homework.robot contributions               # Shapley values of the modalities, beside leave-one-out
    python -m homework.robot retrieve                    # re-rendered episodes among 1,000: recall@k
    python -m homework.robot anomaly                     # AUROC for faults, collisions and swaps
    python -m homework.robot report                      # embeddings report (JSON) + robustness curves (PNG)
    python -m homework.robot benchmark                   # parameters, memory, ms/batch per preset

`RoboticFeedbackSystem(fusion_dim=512)` takes `camera_images={'camera1': (B, 3, H, W), 'camera2': ...}`
in [0, 1] (224 x 224, or the world's 64 x 64), `audio` (B, 48000) at 16 kHz in [-1, 1], `pressure`
(B, 1000) and `emg` (B, 8, 1000), and returns a fused (B, fusion_dim) embedding; with
`return_modality_embeddings=True` also each modality's own, projected to the same size.

    camera1, camera2   one CLIP vision tower (CLIPVisionModelWithProjection), frozen, each camera
                       encoded on its own with CLIP's normalisation, then its own projection
    audio              a Wav2Vec2Model, frozen; mean and max over its frames, then a projection
    pressure, emg      statistical features (mean, std, min, max, RMS over the whole second, mean
                       and std over 8 windows of 125 ms, and the same of the first difference),
                       an MLP for pressure and one per EMG channel (256-d together), trainable
    fusion             concat (+ MLP, the default) | weighted (an input-dependent gate per modality)
                       | attention (a CLS token attends over the modality tokens)
    masks              (B, 5) in MODALITIES order, 1 = present; a missing modality's token is a
                       learned "missing" embedding, never zeros
    heads              material (5) and outcome (drop, slip, success), from the fused embedding

The encoders default to the kit's tiny ones (data/robot_encoders/, pretrained with
self-supervision on the robot world's pretrain split: `python -m pretraining.robot_encoders`).
`--vision_encoder openai/clip-vit-base-patch32 --audio_encoder facebook/wav2vec2-base` (a cached
hub name or a local folder saved with save_pretrained) loads the real ones through the same code.

You write: the sensor features and MLPs, the three fusion operators, the masking, the training
step, the Shapley values, and the retrieval and anomaly scores. The rest is given.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import fire
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from homework.checkpoint import (
    check_size,
    config_from_record,
    load_weights,
    open_checkpoint,
    output_folder,
    reference_dir,
    weights_fingerprint,
    write_record,
)
from homework.cli_checks import check_choice, check_int, check_ints, check_number, fail, set_threads
from worlds import check_split_name
from worlds import robot as world

MODALITIES = world.MODALITIES  # camera1, camera2, audio, pressure, emg: the order of every mask
MATERIALS, OUTCOMES, TASKS = world.MATERIALS, world.OUTCOMES, ("material", "outcome")
FUSIONS = ("concat", "weighted", "attention")
KIT_ENCODERS_DIR = Path(__file__).resolve().parents[1] / "data" / "robot_encoders"
HUB_VISION, HUB_AUDIO = "openai/clip-vit-base-patch32", "facebook/wav2vec2-base"
REFERENCE_DIR = reference_dir("robot")  # what load_robot() reads and every command uses by default
DEFAULT_RUNS = "runs/robot"
WEIGHTS = "model.safetensors"
BASELINE = "anomaly_baseline.safetensors"
FEATURE_WINDOWS = 8
NUM_FEATURES = 2 * (5 + 2 * FEATURE_WINDOWS)  # of the signal and of its first difference
ANOMALY_FPR = 0.05  # the anomaly threshold is the validation normals' (1 - FPR) quantile
COSINE_RULE = 0.85  # the seed's rule: anomalous when cosine to the baseline is below this


@dataclass
class RobotConfig:
    fusion_dim: int = 512  # size of every modality's projection and of the fused embedding
    fusion: str = "concat"  # concat | weighted | attention
    vision_encoder: str = "kit"  # kit | a local folder | a cached hub name (CLIPVisionModelWithProjection)
    audio_encoder: str = "kit"  # kit | a local folder | a cached hub name (Wav2Vec2Model)
    freeze_encoders: bool = True  # the transformer encoders stay as loaded
    gradient_checkpointing: bool = False  # recompute encoder activations in backward (unfrozen training)
    sensor_hidden: int = 128  # hidden units of the pressure MLP (EMG: half, per channel)
    sensor_dim: int = 256  # pressure embedding, and the 8 EMG channels' together
    heads: int = 4  # attention heads (attention fusion)
    head_hidden: int = 128  # hidden units of the task heads
    dropout: float = 0.1
    batch_size: int = 8  # the preset's batch size (benchmark); training takes --batch_size

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.fusion_dim % self.heads:
            raise ValueError(f"fusion_dim ({self.fusion_dim}) must be divisible by heads ({self.heads})")


PRESETS = {
    "lightweight": dict(fusion_dim=256, fusion="weighted", batch_size=4),
    "balanced": dict(fusion_dim=512, fusion="concat", batch_size=8),
    "high_capacity": dict(fusion_dim=768, fusion="attention", batch_size=16, heads=8, vision_encoder=HUB_VISION,
                          audio_encoder=HUB_AUDIO, sensor_hidden=256, head_hidden=256),
}


def get_config(preset: str = "balanced", **overrides) -> RobotConfig:
    """The RobotConfig of a preset (lightweight | balanced | high_capacity), with OVERRIDES applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    return RobotConfig(**{**PRESETS[preset], **overrides})


# --------------------------------------------------------------------------- the encoders


def kit_vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(image_size=64, patch_size=8, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, projection_dim=64)


def kit_audio_config():
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                          conv_dim=(16, 32, 32, 32), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4),
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm="group",
                          mask_time_prob=0.0, vocab_size=8)


def _encoder_path(name: str, kind: str) -> str:
    return str(KIT_ENCODERS_DIR / kind) if name == "kit" else name


def load_pretrained(model_class, name: str, kind: str):
    """MODEL_CLASS from `kit`, a local folder or a cached hub name, offline; one line if it is not there."""
    path = _encoder_path(name, kind)
    try:
        return model_class.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        hint = ("remake it with `python -m pretraining.robot_encoders`" if name == "kit" else
                "give a folder saved with save_pretrained, or a hub name already in the local cache")
        raise ValueError(f"{kind} encoder {name!r} not found: expected a {model_class.__name__} at {path}; {hint} "
                         f"({type(e).__name__})") from None


def check_tensor(name: str, x, shape: tuple, low: float, high: float, hint: str = "") -> torch.Tensor:
    """X as a float tensor if its shape (None = any size) and range fit; else one line naming both."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape, strict=True)):
        want = "(" + ", ".join("B" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}{hint}")
    x = x.float()
    if x.numel() and (x.min() < low - 1e-3 or x.max() > high + 1e-3):
        extra = " (an image in 0-255? divide by 255)" if high == 1 and x.max() > 1.5 and low == 0 else ""
        raise ValueError(f"{name} values must be in [{low:g}, {high:g}], got [{x.min():.3g}, {x.max():.3g}]{extra}")
    return x


class VisionEncoder(nn.Module):
    """A CLIP vision tower: (B, 3, H, W) in [0, 1] -> (B, projection_dim + hidden_size) (the projected
    CLS embedding and the mean patch token). Pictures are resized to the tower's size, then
    normalised with OpenAI CLIP's pixel statistics (transformers' OPENAI_CLIP_MEAN / _STD, not ImageNet's)."""

    def __init__(self, model):
        super().__init__()
        from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        self.model = model
        self.image_size = model.config.image_size
        self.out_dim = model.config.projection_dim + model.config.hidden_size
        self.register_buffer("mean", torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   antialias=True, align_corners=False)
        out = self.model(pixel_values=(images - self.mean) / self.std)
        return torch.cat([out.image_embeds, out.last_hidden_state[:, 1:].mean(1)], dim=-1)


class AudioEncoder(nn.Module):
    """A Wav2Vec2Model: (B, 48000) in [-1, 1] -> (B, 2 hidden): the mean and max over its frames.
    Each clip is normalised to zero mean and unit variance first, as wav2vec 2.0 expects."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.out_dim = 2 * model.config.hidden_size

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        audio = (audio - audio.mean(-1, keepdim=True)) / torch.sqrt(audio.var(-1, keepdim=True) + 1e-7)
        frames = self.model(audio).last_hidden_state  # (B, T, H), T = 149 for 3 s at 16 kHz
        return torch.cat([frames.mean(1), frames.amax(1)], dim=-1)


# --------------------------------------------------------------------------- the sensor features


def sensor_features(x: torch.Tensor, windows: int = FEATURE_WINDOWS) -> torch.Tensor:
    """Statistical features of signals x (..., T): of x and of its first difference, each the
    mean, std, min, max and RMS over all of T, then the mean and std over WINDOWS equal windows.

    Returns (..., NUM_FEATURES) = (..., 2 * (5 + 2 * windows)). T must be divisible by WINDOWS.
    """
    # BEGIN SOLUTION (hint: for s in (x, F.pad(x.diff(dim=-1), (1, 0))): [mean, std, min, max, sqrt(mean(s**2))] over T, then s.view(..., windows, T // windows) mean and std; torch.cat the lot on the last dim)
    feats = []
    for s in (x, F.pad(x.diff(dim=-1), (1, 0))):
        feats += [s.mean(-1, keepdim=True), s.std(-1, keepdim=True), s.amin(-1, keepdim=True),
                  s.amax(-1, keepdim=True), s.pow(2).mean(-1, keepdim=True).sqrt()]
        w = s.reshape(*s.shape[:-1], windows, s.shape[-1] // windows)  # (..., windows, T / windows)
        feats += [w.mean(-1), w.std(-1)]
    return torch.cat(feats, dim=-1)
    # END SOLUTION


HEALTH_STREAMS = ("camera1", "camera2", "audio", "pressure", *(f"emg{c}" for c in range(world.EMG_CHANNELS)))


def quietest_stretch(x: torch.Tensor, windows: int = FEATURE_WINDOWS) -> torch.Tensor:
    """log of the smallest std of the first difference over WINDOWS stretches of x (B, T) -> (B,).
    Every live sensor has noise: a dead, stuck, saturated, dropped or frozen one has a stretch
    without any (log(1e-6) = -13.8, where live ones sit near -4)."""
    d = x.diff(dim=-1)
    d = d[:, : d.shape[1] // windows * windows].reshape(len(x), windows, -1)  # (B, windows, T / windows)
    return torch.log(d.std(-1).amin(-1) + 1e-6)


def signal_health(camera1, camera2, audio, pressure, emg) -> torch.Tensor:
    """quietest_stretch of each of HEALTH_STREAMS, (B, 12): each picture's rows in 8 bands, the
    audio, the pressure and each EMG channel."""
    streams = [c.mean(1).flatten(1) for c in (camera1, camera2)] + [audio, pressure]  # pictures: grey, row by row
    streams += [emg[:, c] for c in range(emg.shape[1])]
    return torch.stack([quietest_stretch(s.float()) for s in streams], dim=1)


class SensorMLP(nn.Module):
    """Features (B, NUM_FEATURES) -> (B, out_dim): BatchNorm (the features' scales differ by
    orders of magnitude), then Linear, GELU, Linear."""

    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        # BEGIN SOLUTION (hint: nn.Sequential(nn.BatchNorm1d(NUM_FEATURES), nn.Linear(NUM_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, out_dim)))
        self.net = nn.Sequential(nn.BatchNorm1d(NUM_FEATURES), nn.Linear(NUM_FEATURES, hidden), nn.GELU(),
                                 nn.Linear(hidden, out_dim))
        # END SOLUTION

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION (hint: run self.net)
        return self.net(features)
        # END SOLUTION


class EMGEncoder(nn.Module):
    """Per-channel features (B, 8, NUM_FEATURES) -> (B, out_dim): one SensorMLP per channel,
    each giving out_dim / 8, concatenated in channel order."""

    def __init__(self, hidden: int, out_dim: int, channels: int = world.EMG_CHANNELS):
        super().__init__()
        if out_dim % channels:
            raise ValueError(f"the EMG embedding ({out_dim}) must be divisible by the channels ({channels})")
        # BEGIN SOLUTION (hint: nn.ModuleList of `channels` SensorMLP(hidden, out_dim // channels))
        self.channels = nn.ModuleList(SensorMLP(hidden, out_dim // channels) for _ in range(channels))
        # END SOLUTION

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION (hint: the c-th MLP on features[:, c]; torch.cat along the last dim)
        return torch.cat([mlp(features[:, c]) for c, mlp in enumerate(self.channels)], dim=-1)
        # END SOLUTION


# --------------------------------------------------------------------------- fusion


class ConcatFusion(nn.Module):
    """Tokens (B, M, D) -> (B, D): concatenated (B, M * D), then Linear, GELU, Linear, LayerNorm."""

    def __init__(self, dim: int, modalities: int, dropout: float = 0.1):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(modalities * dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim),
                                 nn.LayerNorm(dim))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION (hint: self.mlp(tokens.flatten(1)); the mask is already in the tokens)
        return self.mlp(tokens.flatten(1))  # (B, M * D) -> (B, D)
        # END SOLUTION


class WeightedSumFusion(nn.Module):
    """An input-dependent weighted sum: a gate network reads all tokens and gives each modality a
    weight (softmax over the present ones); fused = LayerNorm(sum_m w_m token_m)."""

    def __init__(self, dim: int, modalities: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(modalities * dim, dim // 4), nn.GELU(), nn.Linear(dim // 4, modalities))
        self.norm = nn.LayerNorm(dim)
        self.last_weights: torch.Tensor | None = None  # (B, M), kept for inspection

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION (hint: logits = self.gate(tokens.flatten(1)), -inf where mask is 0 (unless all are), softmax over M; sum of weights[..., None] * tokens over M; self.norm)
        logits = self.gate(tokens.flatten(1))  # (B, M)
        present = mask.bool() | ~mask.bool().any(1, keepdim=True)  # nothing present: weigh the missing tokens
        weights = logits.masked_fill(~present, float("-inf")).softmax(-1)
        self.last_weights = weights.detach()
        return self.norm((weights.unsqueeze(-1) * tokens).sum(1))  # (B, D)
        # END SOLUTION


class AttentionFusion(nn.Module):
    """Multi-head attention over the modality tokens: a learned CLS token joins them, with a type
    embedding per modality, through one pre-norm transformer layer; the CLS output is the fusion."""

    def __init__(self, dim: int, modalities: int, heads: int, dropout: float = 0.1):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.type_embedding = nn.Parameter(torch.randn(1, modalities, dim) * 0.02)
        self.layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True,
                                                activation="gelu")
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION (hint: x = cat(cls expanded to (B, 1, D), tokens + type_embedding) on dim 1; self.layer(x); self.norm of x[:, 0])
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens + self.type_embedding], dim=1)  # (B, 1 + M, D)
        return self.norm(self.layer(x)[:, 0])
        # END SOLUTION


def apply_mask(tokens: torch.Tensor, mask: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """Tokens (B, M, D) with each absent modality (mask (B, M) == 0) replaced by its learned
    missing embedding (missing (M, D)): what the fusion sees of a modality that is not there."""
    # BEGIN SOLUTION (hint: torch.where(mask[..., None].bool(), tokens, missing[None]))
    return torch.where(mask[..., None].bool(), tokens, missing[None].to(tokens.dtype))
    # END SOLUTION


def random_mask(batch: int, generator: torch.Generator, modalities: int = len(MODALITIES)) -> torch.Tensor:
    """A training mask (batch, M) of 0/1: per row, with probability 0.4 every modality, 0.2 all but
    one, 0.2 exactly one, 0.2 each kept with probability 0.5 (at least one). Training on missing
    modalities is what lets the model answer with any subset (and gives Shapley values meaning)."""
    # BEGIN SOLUTION (hint: draw u = torch.rand(batch); build each row's mask for the four cases with torch.randint / torch.rand using `generator`)
    u = torch.rand(batch, generator=generator)
    pick = torch.randint(modalities, (batch,), generator=generator)
    one_hot = F.one_hot(pick, modalities).float()
    random_rows = (torch.rand(batch, modalities, generator=generator) < 0.5).float()
    random_rows = torch.where(random_rows.sum(1, keepdim=True) > 0, random_rows, one_hot)
    mask = torch.ones(batch, modalities)
    mask = torch.where((u >= 0.4)[:, None] & (u < 0.6)[:, None], 1 - one_hot, mask)
    mask = torch.where((u >= 0.6)[:, None] & (u < 0.8)[:, None], one_hot, mask)
    return torch.where((u >= 0.8)[:, None], random_rows, mask)
    # END SOLUTION


def mask_for(batch: int, present: tuple[str, ...] | list[str] | None = None) -> torch.Tensor:
    """The mask (batch, 5) with only the modalities PRESENT (default: all)."""
    present = MODALITIES if present is None else present
    unknown = [m for m in present if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}: expected some of {', '.join(MODALITIES)}")
    return torch.tensor([[float(m in present) for m in MODALITIES]]).expand(batch, -1).clone()


# --------------------------------------------------------------------------- the system


class RoboticFeedbackSystem(nn.Module):
    """Five sensors of a grasp -> one fused embedding (B, fusion_dim), and the material and
    outcome heads that read it.

    `forward` takes raw signals; `encode` turns them into the encoders' outputs (frozen towers'
    features and the sensors' statistical features) and `fuse` does the rest, so that training
    with frozen encoders encodes each episode once.
    """

    def __init__(self, fusion_dim: int = 512, device: str | torch.device = "cpu", config: RobotConfig | None = None,
                 vision_model=None, audio_model=None, **overrides):
        """FUSION_DIM and OVERRIDES change the balanced preset; CONFIG replaces it. VISION_MODEL and
        AUDIO_MODEL: transformers models to use instead of loading config's encoders."""
        super().__init__()
        from transformers import CLIPVisionModelWithProjection, Wav2Vec2Model

        config = config or get_config("balanced", fusion_dim=fusion_dim, **overrides)
        self.config = config
        self.vision = VisionEncoder(vision_model or load_pretrained(CLIPVisionModelWithProjection,
                                                                    config.vision_encoder, "vision"))
        self.audio = AudioEncoder(audio_model or load_pretrained(Wav2Vec2Model, config.audio_encoder, "audio"))
        for encoder in (self.vision, self.audio):
            encoder.requires_grad_(not config.freeze_encoders)
            if config.gradient_checkpointing:
                encoder.model.gradient_checkpointing_enable()
        d = config.fusion_dim
        self.pressure_mlp = SensorMLP(config.sensor_hidden, config.sensor_dim)
        self.emg_encoder = EMGEncoder(config.sensor_hidden // 2, config.sensor_dim)
        widths = {"camera1": self.vision.out_dim, "camera2": self.vision.out_dim, "audio": self.audio.out_dim,
                  "pressure": config.sensor_dim, "emg": config.sensor_dim}
        self.projections = nn.ModuleDict({m: nn.Sequential(nn.Linear(widths[m], d), nn.LayerNorm(d))
                                          for m in MODALITIES})
        self.missing = nn.Parameter(torch.randn(len(MODALITIES), d) * 0.02)  # the learned missing-modality tokens
        if config.fusion == "concat":
            self.fusion = ConcatFusion(d, len(MODALITIES), config.dropout)
        elif config.fusion == "weighted":
            self.fusion = WeightedSumFusion(d, len(MODALITIES))
        else:
            self.fusion = AttentionFusion(d, len(MODALITIES), config.heads, config.dropout)
        self.material_head = nn.Sequential(nn.Linear(d, config.head_hidden), nn.GELU(), nn.Dropout(config.dropout),
                                           nn.Linear(config.head_hidden, len(MATERIALS)))
        self.outcome_head = nn.Sequential(nn.Linear(d, config.head_hidden), nn.GELU(), nn.Dropout(config.dropout),
                                          nn.Linear(config.head_hidden, len(OUTCOMES)))
        self.anomaly_baseline: dict | None = None  # fitted after training (fit_anomaly_baseline)
        self.to(device)

    @property
    def device(self) -> torch.device:
        return self.missing.device

    def encode(self, camera_images: dict | None = None, audio=None, pressure=None, emg=None) -> dict:
        """Raw signals -> {modality: encoder output}; a modality given as None is left out.

        camera_images: {'camera1': (B, 3, H, W), 'camera2': ...} in [0, 1]; audio (B, 48000) in [-1, 1];
        pressure (B, 1000); emg (B, 8, 1000). Outputs: cameras (B, vision.out_dim), audio
        (B, audio.out_dim), pressure (B, NUM_FEATURES), emg (B, 8, NUM_FEATURES).
        """
        camera_images = camera_images or {}
        unknown = set(camera_images) - {"camera1", "camera2"}
        if unknown:
            raise ValueError(f"camera_images keys must be camera1 and camera2, got {sorted(camera_images)}")
        out = {}
        for name in ("camera1", "camera2"):
            if camera_images.get(name) is not None:
                x = check_tensor(name, camera_images[name], (None, 3, None, None), 0, 1).to(self.device)
                if x.shape[-1] != x.shape[-2]:
                    raise ValueError(f"{name} must be square (B, 3, 224, 224), got {tuple(x.shape)}")
                out[name] = self.vision(x)
        if audio is not None:
            out["audio"] = self.audio(check_tensor("audio", audio, (None, world.AUDIO_SAMPLES), -1, 1,
                                                   " (3 s at 16 kHz)").to(self.device))
        if pressure is not None:
            x = check_tensor("pressure", pressure, (None, world.SENSOR_SAMPLES), -math.inf, math.inf, " (1 s at 1 kHz)")
            out["pressure"] = sensor_features(x.to(self.device))
        if emg is not None:
            x = check_tensor("emg", emg, (None, world.EMG_CHANNELS, world.SENSOR_SAMPLES), -math.inf, math.inf,
                             " (8 channels, 1 s at 1 kHz)")
            out["emg"] = sensor_features(x.to(self.device))
        sizes = {len(v) for v in out.values()}
        if len(sizes) > 1:
            raise ValueError(f"every modality needs the same batch size, got {sorted(sizes)}")
        if len(out) == len(MODALITIES):  # every stream: how quiet its quietest stretch is (anomaly scores)
            out["health"] = signal_health(camera_images["camera1"], camera_images["camera2"], audio, pressure, emg)
        return out

    def modality_tokens(self, encoded: dict, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs -> projected tokens (B, M, D) with absent modalities replaced, and the mask (B, M)."""
        batch = len(next(iter(encoded.values())))
        given = mask_for(batch, [m for m in MODALITIES if m in encoded]).to(self.device)
        mask = given if mask is None else mask.to(self.device).float() * given
        tokens = []
        for m in MODALITIES:
            if m not in encoded:
                tokens.append(torch.zeros(batch, self.config.fusion_dim, device=self.device))
                continue
            x = encoded[m]
            if m == "pressure":
                x = self.pressure_mlp(x)
            elif m == "emg":
                x = self.emg_encoder(x)
            tokens.append(self.projections[m](x))
        tokens = torch.stack(tokens, dim=1)  # (B, M, D)
        return apply_mask(tokens, mask, self.missing), mask

    def fuse(self, encoded: dict, mask: torch.Tensor | None = None, return_modality_embeddings: bool = False):
        tokens, mask = self.modality_tokens(encoded, mask)
        fused = self.fusion(tokens, mask)  # (B, D)
        if return_modality_embeddings:
            return fused, {m: tokens[:, i] for i, m in enumerate(MODALITIES)}
        return fused

    def forward(self, camera_images: dict | None = None, audio=None, pressure=None, emg=None,
                return_modality_embeddings: bool = False, mask: torch.Tensor | None = None):
        """The fused embedding (B, fusion_dim); with return_modality_embeddings also {modality: (B, fusion_dim)}.
        MASK (B, 5), 1 = present, hides modalities that were given; a modality not given is absent."""
        return self.fuse(self.encode(camera_images, audio, pressure, emg), mask, return_modality_embeddings)

    def logits(self, encoded: dict, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        fused = self.fuse(encoded, mask)
        return {"material": self.material_head(fused), "outcome": self.outcome_head(fused)}


# --------------------------------------------------------------------------- episodes as tensors


def episode_inputs(data: dict, index=slice(None)) -> dict:
    """The model's inputs from a split's stored arrays (world.load_split): floats in their ranges."""
    def images(a):  # (N, 64, 64, 3) uint8 -> (N, 3, 64, 64) in [0, 1]
        return torch.from_numpy(np.ascontiguousarray(a[index])).permute(0, 3, 1, 2).float() / 255

    return {"camera_images": {"camera1": images(data["camera1"]), "camera2": images(data["camera2"])},
            "audio": torch.from_numpy(data["audio"][index].astype(np.float32) / 32767),
            "pressure": torch.from_numpy(data["pressure"][index].astype(np.float32)),
            "emg": torch.from_numpy(data["emg"][index].astype(np.float32))}


@torch.no_grad()
def encode(model: RoboticFeedbackSystem, data: dict, batch_size: int = 64, desc: str = "encoding") -> dict:
    """Every episode of DATA (stored arrays) through the encoders, batched: {modality: (N, ...)}."""
    model.eval()
    n = len(data["audio"])
    parts: dict[str, list] = {}
    for start in tqdm(range(0, n, batch_size), desc=desc, leave=False, disable=n <= batch_size):
        for m, v in model.encode(**episode_inputs(data, slice(start, start + batch_size))).items():
            parts.setdefault(m, []).append(v.cpu())
    return {m: torch.cat(v) for m, v in parts.items()}


def _rows(encoded: dict, index) -> dict:
    return {m: v[index] for m, v in encoded.items()}


@torch.no_grad()
def predict(model: RoboticFeedbackSystem, encoded: dict, missing: str | None = None,
            present: tuple[str, ...] | None = None, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Class indices {'material': (N,), 'outcome': (N,)} from encoded episodes, with MISSING left out
    (or only PRESENT kept)."""
    model.eval()
    if missing is not None:
        present = tuple(m for m in MODALITIES if m != missing)
    n = len(next(iter(encoded.values())))
    out: dict[str, list] = {t: [] for t in TASKS}
    for start in range(0, n, batch_size):
        rows = _rows(encoded, slice(start, start + batch_size))
        logits = model.logits(rows, mask_for(len(next(iter(rows.values()))), present))
        for t in TASKS:
            out[t].append(logits[t].argmax(-1).cpu())
    return {t: torch.cat(v).numpy() for t, v in out.items()}


@torch.no_grad()
def probabilities(model: RoboticFeedbackSystem, encoded: dict, present: tuple[str, ...], task: str = "material",
                  batch_size: int = 512) -> torch.Tensor:
    model.eval()
    n = len(next(iter(encoded.values())))
    parts = [model.logits(_rows(encoded, slice(s, s + batch_size)), mask_for(min(batch_size, n - s), present))[task]
             .softmax(-1) for s in range(0, n, batch_size)]
    return torch.cat(parts)


# --------------------------------------------------------------------------- analysis


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched cosine similarity: a (N, D), b (K, D) -> (N, K); a single vector (D,) counts as (1, D)."""
    # BEGIN SOLUTION (hint: F.normalize both on the last dim (after making 1-d inputs 2-d), then a @ b.T)
    a, b = torch.atleast_2d(a).float(), torch.atleast_2d(b).float()
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"cosine similarity needs embeddings of one size, got {a.shape[-1]} and {b.shape[-1]}")
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    # END SOLUTION


def shapley_values(value, players: int) -> np.ndarray:
    """Exact Shapley values of a cooperative game over PLAYERS players, from VALUE(frozenset of
    player indices) -> float, evaluated once on each of the 2**players subsets:

        phi_i = sum over S not holding i of |S|! (n - |S| - 1)! / n! * (v(S + {i}) - v(S))
    """
    # BEGIN SOLUTION (hint: cache v over all subsets (itertools.combinations), then the weighted sum of marginal gains above for each i)
    n = players
    v = {frozenset(s): float(value(frozenset(s))) for k in range(n + 1) for s in combinations(range(n), k)}
    phi = np.zeros(n)
    for i in range(n):
        for subset, worth in v.items():
            if i in subset:
                continue
            weight = math.factorial(len(subset)) * math.factorial(n - len(subset) - 1) / math.factorial(n)
            phi[i] += weight * (v[subset | {i}] - worth)
    return phi
    # END SOLUTION


def leave_one_out(value, players: int) -> np.ndarray:
    """v(all) - v(all but i): what each player adds last (understates a player another duplicates)."""
    everyone = frozenset(range(players))
    return np.array([value(everyone) - value(everyone - {i}) for i in range(players)])


class EmbeddingAnalysis:
    """Cosine similarity and modality contributions measured through the model's masks."""

    cosine_similarity = staticmethod(cosine_similarity)

    @staticmethod
    def modality_contribution(model: RoboticFeedbackSystem, encoded: dict, labels: dict[str, np.ndarray],
                              task: str = "material") -> dict:
        """Exact Shapley values (on the task's accuracy, over the 2**5 subsets of present modalities)
        and leave-one-out, per modality; `value_empty` is the accuracy with nothing present."""
        cache: dict = {}

        def accuracy(subset: frozenset) -> float:
            if subset not in cache:
                present = tuple(MODALITIES[i] for i in sorted(subset))
                cache[subset] = float((predict(model, encoded, present=present)[task] == labels[task]).mean())
            return cache[subset]

        phi = shapley_values(accuracy, len(MODALITIES))
        loo = leave_one_out(accuracy, len(MODALITIES))
        return {"task": task, "shapley": dict(zip(MODALITIES, phi.round(4).tolist(), strict=True)),
                "leave_one_out": dict(zip(MODALITIES, loo.round(4).tolist(), strict=True)),
                "value_all": accuracy(frozenset(range(len(MODALITIES)))), "value_empty": accuracy(frozenset())}


class EmbeddingRetrieval:
    """A database of L2-normalised embeddings and the IDs of what they embed; cosine top-k search."""

    def __init__(self):
        self.embeddings = torch.zeros(0, 0)
        self.ids: list = []

    def add_to_database(self, embeddings: torch.Tensor, ids: list | None = None) -> None:
        embeddings = torch.atleast_2d(torch.as_tensor(embeddings)).float()
        ids = list(range(len(self.ids), len(self.ids) + len(embeddings))) if ids is None else list(ids)
        if len(ids) != len(embeddings):
            raise ValueError(f"{len(embeddings)} embeddings but {len(ids)} ids")
        if len(self.ids) and embeddings.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"the database holds {self.embeddings.shape[1]}-d embeddings, got {embeddings.shape[1]}-d")
        normed = F.normalize(embeddings, dim=-1)
        self.embeddings = normed if not len(self.ids) else torch.cat([self.embeddings, normed])
        self.ids += ids

    def retrieve_similar(self, query: torch.Tensor, top_k: int = 5) -> tuple[list[list], torch.Tensor]:
        """The IDs (Q lists of top_k) and cosine similarities (Q, top_k) of each query's nearest entries."""
        if not self.ids:
            raise ValueError("the database is empty; add_to_database first")
        top_k = min(top_k, len(self.ids))
        # BEGIN SOLUTION (hint: cosine_similarity(query, self.embeddings), then .topk(top_k, dim=-1); map indices to self.ids)
        sims, index = cosine_similarity(torch.as_tensor(query), self.embeddings).topk(top_k, dim=-1)
        return [[self.ids[j] for j in row] for row in index.tolist()], sims
        # END SOLUTION

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self.embeddings.contiguous()}, path / "embeddings.safetensors")
        (path / "ids.json").write_text(json.dumps(self.ids))

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingRetrieval:
        path = Path(path)
        for name in ("embeddings.safetensors", "ids.json"):
            if not (path / name).is_file():
                raise ValueError(f"no {name} in {path}: expected a database written by EmbeddingRetrieval.save")
        db = cls()
        db.embeddings = load_file(path / "embeddings.safetensors")["embeddings"]
        db.ids = json.loads((path / "ids.json").read_text())
        return db


@torch.no_grad()
def embed(model: RoboticFeedbackSystem, encoded: dict, batch_size: int = 512) -> torch.Tensor:
    """Retrieval embeddings (N, 6 D): the fused embedding and every modality's, each L2-normalised."""
    model.eval()
    n, parts = len(next(iter(encoded.values()))), []
    for start in range(0, n, batch_size):
        fused, per = model.fuse(_rows(encoded, slice(start, start + batch_size)), return_modality_embeddings=True)
        # BEGIN SOLUTION (hint: torch.cat of F.normalize(fused) and of F.normalize(per[m]) for m in MODALITIES, on dim -1)
        parts.append(torch.cat([F.normalize(fused, dim=-1)] + [F.normalize(per[m], dim=-1) for m in MODALITIES], -1))
        # END SOLUTION
    return torch.cat(parts)


# --------------------------------------------------------------------------- anomaly scores

SWAP_PAIRS = (("camera1", "camera2"), ("camera1", "audio"), ("camera2", "audio"), ("camera1", "pressure"),
              ("audio", "pressure"))


@torch.no_grad()
def anomaly_parts(model: RoboticFeedbackSystem, encoded: dict, baseline: dict) -> torch.Tensor:
    """Raw anomaly evidence (N, 5 + 8 + 12 + 2 len(SWAP_PAIRS)), larger = stranger:

    - per modality: 1 - the cosine similarity of its embedding to the nearest baseline (normal,
      training) embedding of that modality (a fault or a collision makes a signal unlike any normal one);
    - per EMG channel, the same with that channel's own MLP output (one dead channel of eight
      moves the EMG embedding little);
    - per stream (HEALTH_STREAMS), how far its quietest stretch (encoded['health']) sits below the
      normal median, in units of the normal median - 1% quantile (a dead or stuck sensor is silent);
    - per pair (a, b) of modalities: how much their single-modality material predictions disagree,
      1 - sum_k sqrt(p_a(k) p_b(k)), and how far b's embedding is from what a's predicts (a ridge
      map fitted on normal episodes, baseline['map_a_b']: 1 - cosine). A swap makes each signal
      normal alone, but not together: another object's size, another grip's force.
    """
    _, per = model.fuse(encoded, return_modality_embeddings=True)
    channels = emg_channel_embeddings(model, encoded)  # (N, 8, sensor_dim / 8)
    # BEGIN SOLUTION (hint: for m: 1 - cosine_similarity(per[m], baseline[m]).amax(1); the same for each channels[:, c] against baseline['emg_channels'][:, c]; (baseline['health_median'] - encoded['health']) / (median - baseline['health_low']) per stream; for (a, b): 1 - (sqrt(p_a * p_b)).sum(1) with p from probabilities(model, encoded, (a,)), then 1 - cosine of cross_predict(per[a], baseline[f'map_{a}_{b}']) with per[b]; torch.stack the parts on dim 1)
    parts = [1 - cosine_similarity(per[m], baseline[m]).amax(1) for m in MODALITIES]
    parts += [1 - cosine_similarity(channels[:, c], baseline["emg_channels"][:, c]).amax(1)
              for c in range(channels.shape[1])]
    spread = (baseline["health_median"] - baseline["health_low"]).clamp_min(1e-3)
    parts += list(((baseline["health_median"] - encoded["health"]) / spread).unbind(1))
    probs = {m: probabilities(model, encoded, (m,)) for m in {m for pair in SWAP_PAIRS for m in pair}}
    parts += [1 - (probs[a] * probs[b]).sqrt().sum(1) for a, b in SWAP_PAIRS]
    parts += [1 - F.cosine_similarity(cross_predict(per[a], baseline[f"map_{a}_{b}"]), per[b], dim=-1)
              for a, b in SWAP_PAIRS]
    return torch.stack(parts, dim=1)
    # END SOLUTION


def cross_predict(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A ridge map (D + 1, D'): x (N, D) -> (N, D')."""
    return x @ weights[:-1] + weights[-1]


def fit_ridge(x: torch.Tensor, y: torch.Tensor, penalty: float = 10.0) -> torch.Tensor:
    """The ridge regression (D + 1, D') from x (N, D) to y (N, D'), its bias in the last row."""
    x1 = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    eye = torch.eye(x1.shape[1], dtype=torch.float64)
    eye[-1, -1] = 0  # the bias is not penalised
    return torch.linalg.solve(x1.T @ x1 + penalty * eye, x1.T @ y.double()).float()


@torch.no_grad()
def emg_channel_embeddings(model: RoboticFeedbackSystem, encoded: dict) -> torch.Tensor:
    """Each EMG channel's own MLP output, (N, 8, sensor_dim / 8)."""
    model.eval()
    out = model.emg_encoder(encoded["emg"])  # (N, sensor_dim), the channels' outputs side by side
    return out.view(len(out), world.EMG_CHANNELS, -1)


def anomaly_scores(model: RoboticFeedbackSystem, encoded: dict, baseline: dict | None = None) -> np.ndarray:
    """One score per episode (N,): the largest of its anomaly parts, each divided by its scale on
    validation normals (baseline['scale'], the parts' 95th percentiles there)."""
    baseline = baseline or model.anomaly_baseline
    parts = anomaly_parts(model, encoded, baseline)
    # BEGIN SOLUTION (hint: (parts / baseline['scale']).amax(1) as numpy)
    return (parts / baseline["scale"]).amax(1).numpy()
    # END SOLUTION


@torch.no_grad()
def fit_anomaly_baseline(model: RoboticFeedbackSystem, train_encoded: dict, valid_encoded: dict,
                         bank_size: int = 500, fpr: float = ANOMALY_FPR) -> dict:
    """The normal baseline: each modality's embeddings of up to BANK_SIZE training episodes, the
    parts' scales and the score threshold at FPR on the validation episodes (all normal), and the
    mean fused embedding (the cosine rule's baseline)."""
    rows = _rows(train_encoded, slice(0, bank_size))
    fused, per = model.fuse(rows, return_modality_embeddings=True)
    baseline = {m: per[m].clone() for m in MODALITIES}
    baseline["emg_channels"] = emg_channel_embeddings(model, rows)
    baseline["health_median"] = rows["health"].median(0).values
    baseline["health_low"] = torch.quantile(rows["health"], 0.01, dim=0)
    for a, b in SWAP_PAIRS:
        baseline[f"map_{a}_{b}"] = fit_ridge(per[a], per[b])
    baseline["mean_fused"] = fused.mean(0)
    parts = anomaly_parts(model, valid_encoded, baseline)
    baseline["scale"] = torch.quantile(parts, 0.95, dim=0).clamp_min(1e-6)
    scores = torch.from_numpy(anomaly_scores(model, valid_encoded, baseline))
    baseline["threshold"] = torch.quantile(scores, 1 - fpr).reshape(1)
    baseline["fpr"] = torch.tensor([fpr])
    return baseline


@torch.no_grad()
def cosine_rule(model: RoboticFeedbackSystem, encoded: dict, baseline: dict) -> np.ndarray:
    """The seed's rule, for comparison: anomalous when the fused embedding's cosine to the mean normal one < 0.85."""
    fused = model.fuse(encoded)
    return (cosine_similarity(fused, baseline["mean_fused"]).squeeze(1) < COSINE_RULE).numpy()


def auroc(scores_normal: np.ndarray, scores_anomalous: np.ndarray) -> float:
    """The probability that an anomalous episode scores above a normal one (ties count half)."""
    a, b = np.asarray(scores_anomalous, float)[:, None], np.asarray(scores_normal, float)[None, :]
    return float((a > b).mean() + 0.5 * (a == b).mean())


# --------------------------------------------------------------------------- checkpoints


def trainable_state(model: RoboticFeedbackSystem) -> dict:
    """The state to save: everything but the frozen encoders (they stay in data/robot_encoders)."""
    skip = ("vision.", "audio.") if model.config.freeze_encoders else ()
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith(skip)}


def encoder_fingerprints(model: RoboticFeedbackSystem) -> dict[str, str]:
    """{'vision': ..., 'audio': ...}: which encoders a checkpoint was trained on (checked on load)."""
    return {"vision": weights_fingerprint(model.vision), "audio": weights_fingerprint(model.audio)}


def save_model(model: RoboticFeedbackSystem, out_dir: str | Path, training: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), out / WEIGHTS)
    baseline = getattr(model, "anomaly_baseline", None)
    if baseline is not None:
        save_file({k: v.contiguous() for k, v in baseline.items()}, out / BASELINE)
    write_record(out, "robot", {"config": dataclasses.asdict(model.config), "training": training,
                                "encoders": encoder_fingerprints(model)})
    return out


def load_model(checkpoint: str | Path = REFERENCE_DIR, device: str = "cpu") -> RoboticFeedbackSystem:
    """A checkpoint folder: model.safetensors, config.json and (after training) the anomaly baseline."""
    path = Path(checkpoint)
    record = open_checkpoint(path, "robot", (WEIGHTS,))
    check_size(path, "robot", (WEIGHTS, BASELINE))  # the anomaly baseline counts too
    config = config_from_record(RobotConfig, record.get("config", {}), path / "config.json")
    model = _build(config)
    if config.freeze_encoders:  # the encoders are not in the checkpoint: they must be the ones it was trained on
        for kind, found in encoder_fingerprints(model).items():
            if record.get("encoders", {}).get(kind) != found:
                fail(f"{path} was trained on another {kind} encoder than {getattr(config, kind + '_encoder')!r} "
                     "here; train it again on this one")
    load_weights(model, path / WEIGHTS, ignore_missing=("vision.", "audio.") if config.freeze_encoders else "")
    model.anomaly_baseline = load_file(path / BASELINE) if (path / BASELINE).is_file() else None
    return model.to(device).eval()


def load_reference() -> RoboticFeedbackSystem:
    """The committed reference (homework/checkpoints/robot)."""
    return load_model(REFERENCE_DIR)


# --------------------------------------------------------------------------- training


def labels_of(data: dict) -> dict[str, torch.Tensor]:
    return {t: torch.from_numpy(data[t].astype(np.int64)) for t in TASKS}


def accuracies(model: RoboticFeedbackSystem, encoded: dict, labels: dict, missing: str | None = None,
               present: tuple[str, ...] | None = None) -> dict[str, float]:
    pred = predict(model, encoded, missing=missing, present=present)
    return {t: float((pred[t] == np.asarray(labels[t])).mean()) for t in TASKS}


@torch.no_grad()
def evaluate(model: RoboticFeedbackSystem, encoded: dict, labels: dict) -> tuple[float, dict]:
    """Mean of the two tasks' cross-entropies with every modality present, and their accuracies."""
    model.eval()
    logits = model.logits(encoded)
    loss = sum(F.cross_entropy(logits[t], labels[t]).item() for t in TASKS) / 2
    return loss, {t: float((logits[t].argmax(-1) == labels[t]).float().mean()) for t in TASKS}


def load_encoded(model: RoboticFeedbackSystem, data_dir: str, split: str) -> tuple[dict, dict]:
    """A split (rendered first if missing) through the frozen encoders, and its labels."""
    world.ensure(data_dir, split)
    data = world.load_split(data_dir, split)
    return encode(model, data, desc=f"encoding {split}"), labels_of(data)


def train(preset: str = "balanced", fusion: str = "", fusion_dim: int = 128, epochs: int = 40, batch_size: int = 64,
          learning_rate: float = 2e-3, weight_decay: float = 1e-4, vision_encoder: str = "kit",
          audio_encoder: str = "kit", data_dir: str = world.DEFAULT_DIR, output_dir: str = "",
          overwrite: bool = False, seed: int = 0, threads: int = 0) -> None:
    """Train the fusion, the sensor MLPs and the heads (encoders frozen) on the robot world's train
    split with random modality masks; keep the lowest validation loss; then fit the anomaly baseline.

    Args:
        preset: lightweight | balanced | high_capacity (get_config), the starting config.
        fusion: concat | weighted | attention, to override the preset's.
        fusion_dim: the embedding size, overriding the preset's (0: the preset's own, 512 for balanced);
            128 keeps the checkpoint near 1.5 MB and trains in a few minutes on 2 cores.
        epochs: passes over the training split (each episode is encoded once, before the first).
        batch_size: episodes per step.
        learning_rate: peak learning rate (AdamW; linear warm-up over the first epoch, cosine to 0).
        weight_decay: AdamW weight decay.
        vision_encoder: kit | a folder | a cached hub name of a CLIPVisionModelWithProjection.
        audio_encoder: kit | a folder | a cached hub name of a Wav2Vec2Model.
        data_dir: the robot world's splits (train and valid are rendered if missing).
        output_dir: the checkpoint folder; default runs/robot/PRESET.
        overwrite: replace a checkpoint already in output_dir.
        seed: torch seed for the initialisation, batch order and masks.
        threads: torch CPU threads; 0 = torch's default (every core).
    """
    from homework.lr_schedule import warmup_cosine

    config = _config_from_flags(preset, fusion, fusion_dim, vision_encoder, audio_encoder)
    check_ints(epochs=(epochs, 1), batch_size=(batch_size, 2), seed=(seed, 0))
    check_number("learning_rate", learning_rate)
    check_number("weight_decay", weight_decay, allow_minimum=True)
    out = output_folder(output_dir or f"{DEFAULT_RUNS}/{preset}", WEIGHTS, overwrite)
    threads = set_threads(threads)
    started = time.time()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = _build(config)
    train_enc, train_labels = load_encoded(model, data_dir, "train")
    valid_enc, valid_labels = load_encoded(model, data_dir, "valid")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    n = len(train_labels["material"])
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    print(f"robot preset={preset} fusion={config.fusion} fusion_dim={config.fusion_dim}: "
          f"{sum(p.numel() for p in params):,} trainable parameters, {n} train / "
          f"{len(valid_labels['material'])} valid episodes, {epochs} epochs")
    best, step = {"val_loss": float("inf")}, 0
    for epoch in range(epochs):
        model.train()
        model.vision.eval()  # frozen towers: no dropout in them
        model.audio.eval()
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - 1, batch_size):
            # 1. learning rate first: a warm-up epoch while BatchNorm's statistics settle, then cosine to 0
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, total, learning_rate, steps_per_epoch)
            batch = order[start:start + batch_size]
            rows, labels = _rows(train_enc, batch), {t: v[batch] for t, v in train_labels.items()}
            # 2. a random subset of modalities per episode, so that the model answers with any of them
            mask = random_mask(len(batch), generator)
            # 3. forward both heads on the masked batch, the mean of the two cross-entropies; zero_grad,
            #    backward, clip (one bad batch cannot wreck the weights), step
            # BEGIN SOLUTION (hint: logits = model.logits(rows, mask); loss = mean of F.cross_entropy(logits[t], labels[t]) over TASKS; zero_grad, backward, clip_grad_norm_(params, 1.0), step)
            logits = model.logits(rows, mask)
            loss = sum(F.cross_entropy(logits[t], labels[t]) for t in TASKS) / len(TASKS)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            # END SOLUTION
            step += 1
        # 4. evaluate with every modality present; 5. keep the best by validation loss
        val_loss, acc = evaluate(model, valid_enc, valid_labels)
        improved = val_loss < best["val_loss"]
        if improved:
            best = {"val_loss": round(val_loss, 5), "epoch": epoch + 1,
                    **{f"val_{t}_accuracy": round(a, 4) for t, a in acc.items()}}
            best_state = {k: v.clone() for k, v in trainable_state(model).items()}
        print(f"epoch {epoch + 1:2d}/{epochs} loss {loss.item():.4f} val_loss {val_loss:.4f} "
              f"material {acc['material']:.3f} outcome {acc['outcome']:.3f}{'  *best' if improved else ''}")
    model.load_state_dict(best_state, strict=False)
    model.eval()
    model.anomaly_baseline = fit_anomaly_baseline(model, train_enc, valid_enc)
    training = {"preset": preset, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                "weight_decay": weight_decay, "seed": seed, "threads": threads, "data_dir": str(data_dir),
                "seconds": round(time.time() - started, 1), **best}
    save_model(model, out, training)
    load_model(out)  # the folder loads (and fits the size limit)
    print(f"best epoch {best['epoch']}: val material {best['val_material_accuracy']:.4f} outcome "
          f"{best['val_outcome_accuracy']:.4f}; {training['seconds']:.0f}s; saved {out}")


def _config_from_flags(preset, fusion="", fusion_dim=0, vision_encoder="kit", audio_encoder="kit") -> RobotConfig:
    check_choice("preset", preset, PRESETS)
    if fusion:
        check_choice("fusion", fusion, FUSIONS)
    check_int("fusion_dim", fusion_dim, 0)
    overrides = {"fusion": fusion} if fusion else {}
    if fusion_dim:
        overrides["fusion_dim"] = fusion_dim
    if vision_encoder != "kit" or preset != "high_capacity":
        overrides["vision_encoder"] = str(vision_encoder)
    if audio_encoder != "kit" or preset != "high_capacity":
        overrides["audio_encoder"] = str(audio_encoder)
    try:
        return get_config(preset, **overrides)
    except ValueError as e:
        fail(str(e))


def _build(config: RobotConfig) -> RoboticFeedbackSystem:
    try:
        return RoboticFeedbackSystem(config=config)
    except ValueError as e:  # an encoder that is not there
        fail(str(e))


# --------------------------------------------------------------------------- the other commands


def _open(checkpoint: str, threads: int) -> RoboticFeedbackSystem:
    set_threads(threads)
    return load_model(checkpoint)


def _split_flag(split) -> str:
    split = str(split) if isinstance(split, int) else split
    try:
        return check_split_name(split)
    except SystemExit as e:
        fail(str(e.code).removeprefix("error: "))


def test(checkpoint: str = str(REFERENCE_DIR), split: str = "test", data_dir: str = world.DEFAULT_DIR,
         threads: int = 0) -> dict:
    """Accuracy per task with every modality, with each one missing, and with each one alone.

    Args:
        checkpoint: a checkpoint folder; default the committed reference (what load_robot() reads).
        split: a split of the robot world (test: unseen objects and operator; rendered if missing).
        data_dir: the robot world's splits.
        threads: torch CPU threads; 0 = torch's default.
    """
    split = _split_flag(split)
    model = _open(checkpoint, threads)
    encoded, labels = load_encoded(model, data_dir, split)
    rows = {"all": accuracies(model, encoded, labels)}
    for m in MODALITIES:
        rows[f"without {m}"] = accuracies(model, encoded, labels, missing=m)
    for m in MODALITIES:
        rows[f"only {m}"] = accuracies(model, encoded, labels, present=(m,))
    print(f"{checkpoint} on {data_dir}/{split} ({len(labels['material'])} episodes)")
    print(f"{'modalities':22s} material  outcome")
    for name, acc in rows.items():
        print(f"{name:22s} {acc['material']:.4f}    {acc['outcome']:.4f}")
    best_single = {t: max(rows[f"only {m}"][t] for m in MODALITIES) for t in TASKS}
    worst_missing = {t: min(rows[f"without {m}"][t] for m in MODALITIES) for t in TASKS}
    print(f"best single modality: material {best_single['material']:.4f} outcome {best_single['outcome']:.4f}; "
          f"worst with one missing: material {worst_missing['material']:.4f} outcome {worst_missing['outcome']:.4f}")
    print(f"material_accuracy={rows['all']['material']:.4f} outcome_accuracy={rows['all']['outcome']:.4f}")
    return rows


def contributions(checkpoint: str = str(REFERENCE_DIR), split: str = "test", data_dir: str = world.DEFAULT_DIR,
                  out: str = "", overwrite: bool = False, threads: int = 0) -> dict:
    """Each modality's contribution per task: exact Shapley values over the 2**5 subsets (by masks)
    on accuracy, beside leave-one-out; writes contributions.json and contributions.png.

    Args:
        checkpoint: a checkpoint folder; default the committed reference.
        split: the robot world's split to measure on (rendered if missing).
        data_dir: the robot world's splits.
        out: the folder for the JSON and PNG; default CHECKPOINT/analysis.
        overwrite: replace files already there.
        threads: torch CPU threads; 0 = torch's default.
    """
    split = _split_flag(split)
    model = _open(checkpoint, threads)
    target = _out_folder(out or Path(checkpoint) / "analysis", ["contributions.json", "contributions.png"], overwrite)
    encoded, labels = load_encoded(model, data_dir, split)
    results = {t: EmbeddingAnalysis.modality_contribution(model, encoded, {k: v.numpy() for k, v in labels.items()}, t)
               for t in TASKS}
    for t, r in results.items():
        print(f"{t}: accuracy all {r['value_all']:.4f}, none {r['value_empty']:.4f}")
        for m in MODALITIES:
            print(f"  {m:9s} shapley {r['shapley'][m]:+.4f}  leave-one-out {r['leave_one_out'][m]:+.4f}")
    (target / "contributions.json").write_text(json.dumps(results, indent=1) + "\n")
    _bar_chart(results, target / "contributions.png")
    print(f"wrote {target}/contributions.json and contributions.png")
    return results


def _out_folder(folder, names: list[str], overwrite: bool) -> Path:
    folder = Path(folder)
    for name in names:
        if (folder / name).exists() and not overwrite:
            fail(f"{folder / name} exists; pass --overwrite or another --out")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _bar_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.2))
    x = np.arange(len(MODALITIES))
    for ax, (task, r) in zip(np.atleast_1d(axes), results.items(), strict=True):
        ax.bar(x - 0.2, [r["shapley"][m] for m in MODALITIES], 0.4, label="Shapley")
        ax.bar(x + 0.2, [r["leave_one_out"][m] for m in MODALITIES], 0.4, label="leave-one-out")
        ax.set_xticks(x, MODALITIES, fontsize=8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{task}: accuracy points per modality", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def retrieval_recall(model: RoboticFeedbackSystem, db: EmbeddingRetrieval, queries: dict, ks=(1, 5)) -> dict[str, float]:
    """Recall@k of re-rendered episodes: query i (new noise) must find database entry i of DB."""
    found, _ = db.retrieve_similar(embed(model, encode(model, queries, desc="encoding queries")), max(ks))
    return {f"recall@{k}": float(np.mean([i in row[:k] for i, row in enumerate(found)])) for k in ks}


def retrieve(checkpoint: str = str(REFERENCE_DIR), split: str = "test", database_size: int = 1000,
             queries: int = 200, data_dir: str = world.DEFAULT_DIR, save_database: str = "", threads: int = 0) -> dict:
    """Find re-rendered episodes (the same causes, new sensor noise) among DATABASE_SIZE: recall@1 and @5.

    Args:
        checkpoint: a checkpoint folder; default the committed reference.
        split: the robot world's split whose first DATABASE_SIZE episodes are the database.
        database_size: episodes in the database.
        queries: the first QUERIES of them, re-rendered with new noise, are the queries.
        data_dir: the robot world's splits.
        save_database: a folder to save the database in (EmbeddingRetrieval.save); none if empty.
        threads: torch CPU threads; 0 = torch's default.
    """
    split = _split_flag(split)
    check_ints(database_size=(database_size, 1), queries=(queries, 1))
    if queries > database_size:
        fail(f"--queries ({queries}) must be at most --database_size ({database_size})")
    model = _open(checkpoint, threads)
    seed = json.loads((world.ensure(data_dir, split, num_episodes=max(database_size, 1000)) / "meta.json")
                      .read_text())["seed"]
    data = world.load_split(data_dir, split)
    if len(data["audio"]) < database_size:
        fail(f"{data_dir}/{split} holds {len(data['audio'])} episodes, fewer than --database_size {database_size}")
    database = {k: v[:database_size] for k, v in data.items()}
    again = world.render_split(seed, queries, split, noise=1, desc="re-rendering queries")
    db = EmbeddingRetrieval()
    db.add_to_database(embed(model, encode(model, database, desc="encoding database")))
    recall = retrieval_recall(model, db, again)
    if save_database:
        db.save(save_database)
        print(f"saved the database to {save_database}")
    print(" ".join(f"{k}={v:.4f}" for k, v in recall.items()) + f" ({queries} queries among {database_size})")
    return recall


def anomaly_auroc(model: RoboticFeedbackSystem, anomalies: dict) -> dict:
    """AUROC of each anomaly kind against the normal episodes, detection rates at the validation
    threshold, and the cosine rule's rates beside them."""
    encoded = encode(model, anomalies, desc="encoding anomalies")
    scores = anomaly_scores(model, encoded)
    rule = cosine_rule(model, encoded, model.anomaly_baseline)
    kinds, threshold = anomalies["anomaly"], float(model.anomaly_baseline["threshold"])
    normal = kinds == 0
    result = {"threshold": round(threshold, 4), "fpr_target": float(model.anomaly_baseline["fpr"]),
              "fpr": round(float((scores[normal] > threshold).mean()), 4),
              "cosine_rule_fpr": round(float(rule[normal].mean()), 4)}
    for k, kind in enumerate(world.ANOMALIES[1:], 1):
        result[kind] = {"auroc": round(auroc(scores[normal], scores[kinds == k]), 4),
                        "detected": round(float((scores[kinds == k] > threshold).mean()), 4),
                        "cosine_rule_detected": round(float(rule[kinds == k].mean()), 4)}
    return result


def anomaly(checkpoint: str = str(REFERENCE_DIR), num: int = 150, seed: int = 4242, threads: int = 0) -> dict:
    """Anomaly detection on NUM normal episodes and NUM of each anomaly (unseen objects and operator):
    AUROC per kind, the detection rate at the threshold fixed on validation (5% false positives),
    and the cosine < 0.85 rule's rates beside them.

    Args:
        checkpoint: a checkpoint folder; default the committed reference.
        num: episodes of each kind (normal, fault, collision, swap).
        seed: the world seed of the anomaly set (never a training seed).
        threads: torch CPU threads; 0 = torch's default.
    """
    check_ints(num=(num, 2), seed=(seed, 0))
    model = _open(checkpoint, threads)
    if model.anomaly_baseline is None:
        fail(f"{checkpoint} has no {BASELINE}; train it again")
    result = anomaly_auroc(model, world.anomaly_set(seed, num))
    print(f"threshold {result['threshold']:.3f} (validation FPR {result['fpr_target']:.0%}); here FPR "
          f"{result['fpr']:.3f}, cosine<{COSINE_RULE} rule FPR {result['cosine_rule_fpr']:.3f}")
    for kind in world.ANOMALIES[1:]:
        r = result[kind]
        print(f"{kind:10s} AUROC {r['auroc']:.4f}  detected {r['detected']:.3f}  "
              f"(cosine rule {r['cosine_rule_detected']:.3f})")
    return result


def create_embeddings_report(model: RoboticFeedbackSystem, encoded: dict, path: str | Path) -> dict:
    """Per modality (and fused): dimension, mean L2 norm, sparsity (share of |x| < 1e-3), to JSON."""
    fused, per = model.fuse(encoded, return_modality_embeddings=True)
    report = {}
    for name, e in {**per, "fused": fused}.items():
        e = e.detach()
        report[name] = {"dimension": int(e.shape[1]), "mean_norm": round(float(e.norm(dim=1).mean()), 4),
                        "sparsity": round(float((e.abs() < 1e-3).float().mean()), 4)}
    Path(path).write_text(json.dumps(report, indent=1) + "\n")
    return report


NOISE_LEVELS = (0.0, 0.25, 0.5, 1.0, 2.0)  # noise std, in units of each modality's own std


@torch.no_grad()
def robustness_curves(model: RoboticFeedbackSystem, data: dict, seed: int = 0) -> dict:
    """Accuracy per task when one modality gets Gaussian noise (std = level x its own std), per
    level; the others clean. Also MultiBench's relative robustness (area under the curve over the
    clean accuracy)."""
    clean = encode(model, data)
    labels = labels_of(data)
    curves: dict = {}
    generator = torch.Generator().manual_seed(seed)
    inputs = episode_inputs(data)  # the clean signals, as floats; every noisy copy is a new tensor
    for m in tqdm(MODALITIES, desc="robustness", leave=False):
        curves[m] = {t: [] for t in TASKS}
        x = inputs["camera_images"][m] if m.startswith("camera") else inputs[m]
        for level in NOISE_LEVELS:
            noisy = x + level * x.std() * torch.randn(x.shape, generator=generator)
            if m.startswith("camera"):
                noisy = noisy.clamp(0, 1)
            elif m == "audio":
                noisy = noisy.clamp(-1, 1)
            kwargs = {m: noisy} if not m.startswith("camera") else {"camera_images": {m: noisy}}
            encoded = dict(clean)
            encoded.update(_encode_batched(model, kwargs))
            for t, a in accuracies(model, encoded, labels).items():
                curves[m][t].append(round(a, 4))
        for t in TASKS:
            curves[m][f"{t}_relative_robustness"] = round(float(np.mean(curves[m][t]) / max(curves[m][t][0], 1e-9)), 4)
    return {"levels": list(NOISE_LEVELS), "curves": curves}


def _encode_batched(model, kwargs: dict, batch_size: int = 64) -> dict:
    (key, value), = kwargs.items()
    n = len(next(iter(value.values()))) if isinstance(value, dict) else len(value)
    parts: dict[str, list] = {}
    for s in range(0, n, batch_size):
        piece = {k: v[s:s + batch_size] for k, v in value.items()} if isinstance(value, dict) else value[s:s + batch_size]
        for m, e in model.encode(**{key: piece}).items():
            parts.setdefault(m, []).append(e)
    return {m: torch.cat(v) for m, v in parts.items()}


def report(checkpoint: str = str(REFERENCE_DIR), split: str = "test", num: int = 300,
           data_dir: str = world.DEFAULT_DIR, out: str = "", overwrite: bool = False, threads: int = 0) -> dict:
    """The embeddings report (per modality: dimension, norm, sparsity: embeddings_report.json) and
    robustness curves under noise per modality (robustness.json, robustness.png).

    Args:
        checkpoint: a checkpoint folder; default the committed reference.
        split: the robot world's split (rendered if missing).
        num: its first NUM episodes are used.
        data_dir: the robot world's splits.
        out: the folder to write in; default CHECKPOINT/analysis.
        overwrite: replace files already there.
        threads: torch CPU threads; 0 = torch's default.
    """
    split = _split_flag(split)
    check_int("num", num, 10)
    model = _open(checkpoint, threads)
    names = ["embeddings_report.json", "robustness.json", "robustness.png"]
    target = _out_folder(out or Path(checkpoint) / "analysis", names, overwrite)
    world.ensure(data_dir, split)
    data = {k: v[:num] for k, v in world.load_split(data_dir, split).items()}
    emb = create_embeddings_report(model, encode(model, data), target / names[0])
    for name, r in emb.items():
        print(f"{name:9s} dimension {r['dimension']}  mean norm {r['mean_norm']:.3f}  sparsity {r['sparsity']:.3f}")
    curves = robustness_curves(model, data)
    (target / names[1]).write_text(json.dumps(curves, indent=1) + "\n")
    _robustness_png(curves, target / names[2])
    print(f"wrote {target}/" + ", ".join(names))
    return {"embeddings": emb, "robustness": curves}


def _robustness_png(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, t in zip(axes, TASKS, strict=True):
        for m in MODALITIES:
            ax.plot(curves["levels"], curves["curves"][m][t], marker="o", label=m)
        ax.set_xlabel("noise std / signal std")
        ax.set_ylabel(f"{t} accuracy")
        ax.set_title(f"{t}: one noisy modality, the rest clean", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def benchmark(presets: str = "lightweight,balanced,high_capacity", repeats: int = 3,
              out: str = "benchmarks/results/robot_presets.json", overwrite: bool = False, threads: int = 0) -> None:
    """Parameters, peak memory and milliseconds per batch (forward, inference) of each preset on this
    machine, at the preset's batch size with 224 x 224 pictures. The high_capacity preset is built
    from ViT-B/32 and wav2vec2-base configs (random weights) when the real ones are not cached.

    Args:
        presets: comma-separated preset names.
        repeats: timed batches per preset, after one warm-up (the median is reported).
        out: the JSON to write (a Markdown table beside it).
        overwrite: replace it.
        threads: torch CPU threads; 0 = torch's default.
    """
    import multiprocessing

    names = [p.strip() for p in str(presets).split(",") if p.strip()]
    for name in names:
        check_choice("presets", name, PRESETS)
    check_int("repeats", repeats, 1)
    path = Path(out)
    if path.exists() and not overwrite:
        fail(f"{path} exists; pass --overwrite or another --out")
    threads = set_threads(threads)
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for name in tqdm(names, desc="presets"):
        with ctx.Pool(1) as pool:  # its own process, so that its peak memory is its own
            rows.append(pool.apply(_benchmark_one, (name, repeats, threads)))
        print(json.dumps(rows[-1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"threads": threads, "rows": rows}, indent=1) + "\n")
    lines = ["| preset | fusion | dim | encoders | batch | parameters | trainable | peak memory MB | ms / batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['preset']} | {r['fusion']} | {r['fusion_dim']} | {r['encoders']} | {r['batch_size']} | "
              f"{r['parameters']:,} | {r['trainable']:,} | {r['peak_mb']:.0f} | {r['ms_per_batch']:.0f} |" for r in rows]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB; 0 where /proc is not there."""
    try:
        with open("/proc/self/status") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")), 0.0)
    except OSError:
        return 0.0


def _benchmark_one(preset: str, repeats: int, threads: int) -> dict:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Wav2Vec2Config, Wav2Vec2Model

    torch.set_num_threads(threads)
    config = get_config(preset)
    encoders = "kit"
    if preset == "high_capacity":
        try:
            model = RoboticFeedbackSystem(config=config)
            encoders = "hub"
        except ValueError:  # not cached: the same architectures from their configs (defaults = ViT-B/32, base)
            model = RoboticFeedbackSystem(config=config, vision_model=CLIPVisionModelWithProjection(CLIPVisionConfig()),
                                          audio_model=Wav2Vec2Model(Wav2Vec2Config()))
            encoders = "ViT-B/32 + wav2vec2-base (random init)"
    else:
        model = RoboticFeedbackSystem(config=config)
    model.eval()
    b = config.batch_size
    g = torch.Generator().manual_seed(0)
    inputs = {"camera_images": {c: torch.rand(b, 3, 224, 224, generator=g) for c in ("camera1", "camera2")},
              "audio": torch.rand(b, world.AUDIO_SAMPLES, generator=g) * 2 - 1,
              "pressure": torch.rand(b, world.SENSOR_SAMPLES, generator=g),
              "emg": torch.randn(b, world.EMG_CHANNELS, world.SENSOR_SAMPLES, generator=g)}
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            started = time.perf_counter()
            model(**inputs)
            if i:
                times.append(time.perf_counter() - started)
    return {"preset": preset, "fusion": config.fusion, "fusion_dim": config.fusion_dim, "encoders": encoders,
            "batch_size": b, "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "peak_mb": _peak_rss_mb(),
            "ms_per_batch": round(1000 * float(np.median(times)), 1), "threads": torch.get_num_threads()}


def _printing_only(command):
    """COMMAND for the command line: what it returns (for callers in Python) is not printed again by Fire."""
    @functools.wraps(command)
    def run(*args, **kwargs) -> None:
        command(*args, **kwargs)
    return run


if __name__ == "__main__":
    fire.Fire({"train": _printing_only(train), "test": _printing_only(test), "retrieve": _printing_only(retrieve),
               "anomaly": _printing_only(anomaly), "contributions": _printing_only(contributions),
               "report": _printing_only(report), "benchmark": _printing_only(benchmark)})
