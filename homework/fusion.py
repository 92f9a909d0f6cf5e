"""RGB + LiDAR fusion: tell cubes from spheres, with late or intermediate fusion.

    python -m homework.fusion train --fusion late --downsample stride    # -> runs/fusion/late_stride
    python -m homework.fusion test --checkpoint runs/fusion/late_stride
    python -m homework.fusion test             # the committed reference, homework/checkpoints/fusion

You write `Embedder` here; `homework.cilp` reuses it as the CNN inside its encoders. (The kit's
grid of every fusion x downsampling is `python -m benchmarks.fusion_ablation`.)

Each modality has its own `Embedder` (a small CNN whose downsampling is a switch: strided
convolution or max pooling) that turns its 64x64 input into an 8x8 feature map, i.e. 64 tokens
of C channels. Then:

    late       a head per modality; the two heads' logits are averaged at the decision
    concat     tokens concatenated channel-wise, mixed by an MLP, then one head
    weighted   a learned weighted sum: per-token gates (softmax over the two modalities)
    attention  cross-attention: RGB tokens attend to LiDAR tokens and LiDAR tokens to RGB

The checkpoint folder holds `model.safetensors` and `config.json` (the resolved `FusionConfig`
plus how it was trained); `load_model` checks that the config matches the weights, and
`homework.checkpoint` that the folder is there, is a fusion checkpoint and fits the size limit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import fire
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from homework import shapes_data
from homework.checkpoint import (
    config_from_record,
    load_weights,
    open_checkpoint,
    output_folder,
    reference_dir,
    write_record,
)
from homework.cli_checks import (
    check_choice,
    check_ints,
    check_number,
    check_split,
    fail,
    renamed,
    set_threads,
)
from homework.lr_schedule import warmup_cosine

FUSIONS = ("late", "concat", "weighted", "attention")
DOWNSAMPLES = ("stride", "maxpool")
REFERENCE_DIR = reference_dir("fusion")  # what load_fusion() reads and `test` scores by default
DEFAULT_RUNS = "runs/fusion"
WEIGHTS = "model.safetensors"


@dataclass
class FusionConfig(shapes_data.InputStats):  # with the input normalisation, rgb_mean ... lidar_std
    fusion: str = "late"  # where the modalities meet: late | concat | weighted | attention
    downsample: str = "stride"  # how the embedder halves resolution: stride (conv) | maxpool
    width: int = 8  # channels of the embedder's first block; each next block doubles them
    blocks: int = 3  # embedder blocks, each halving the resolution (64 -> 8 with 3)
    image_size: int = 64  # input height = width, pixels / beams
    heads: int = 4  # attention heads (attention fusion only)
    hidden: int = 64  # hidden units of the classifier head
    num_classes: int = 2  # cube, sphere

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.downsample not in DOWNSAMPLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLES}, got {self.downsample!r}")

    @property
    def channels(self) -> int:
        return self.width * 2 ** (self.blocks - 1)

    @property
    def tokens(self) -> int:
        return (self.image_size // 2**self.blocks) ** 2


# --------------------------------------------------------------------------- the model


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the statistics stored as buffers."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Embedder(nn.Module):
    """A CNN: `blocks` x (3x3 conv, BN, ReLU, then downsampling by 2), channels width, 2 width, ...

    downsample="stride": a learned 3x3 convolution with stride 2 (+ BN, ReLU) halves the map.
    downsample="maxpool": a 2x2 max pooling halves it (no parameters).
    """

    def __init__(self, in_channels: int, width: int = 16, blocks: int = 3, downsample: str = "stride"):
        super().__init__()
        if downsample not in DOWNSAMPLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLES}, got {downsample!r}")
        self.out_channels = width * 2 ** (blocks - 1)
        # BEGIN SOLUTION (hint: per block: Conv2d(3x3, padding 1) + BatchNorm2d + ReLU, then a stride-2 conv block or MaxPool2d(2))
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(blocks):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            if downsample == "stride":
                layers += [nn.Conv2d(c_out, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                           nn.ReLU(inplace=True)]
            else:
                layers += [nn.MaxPool2d(2)]
            c_in = c_out
        self.net = nn.Sequential(*layers)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H / 2**blocks, W / 2**blocks)."""
        # BEGIN SOLUTION (hint: run the layers built in __init__)
        return self.net(x)
        # END SOLUTION


def to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C): one token per cell of the feature map."""
    return feature_map.flatten(2).transpose(1, 2)


class ClassifierHead(nn.Module):
    """Tokens (B, N, C) -> logits (B, num_classes): mean and max over tokens, then an MLP."""

    def __init__(self, channels: int, hidden: int, num_classes: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([tokens.mean(dim=1), tokens.amax(dim=1)], dim=-1)  # (B, 2C)
        return self.mlp(pooled)


class ConcatFusion(nn.Module):
    """Concatenate the two modalities' tokens channel-wise and mix them with a per-token MLP."""

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels))

    def forward(self, rgb: torch.Tensor, lidar: torch.Tensor) -> torch.Tensor:
        """rgb, lidar: (B, N, C) -> fused (B, N, C)."""
        # BEGIN SOLUTION (hint: torch.cat along the channel dim, then self.mlp)
        return self.mlp(torch.cat([rgb, lidar], dim=-1))  # (B, N, 2C) -> (B, N, C)
        # END SOLUTION


class WeightedSumFusion(nn.Module):
    """A learned weighted sum: each token gets two gates (softmax over the modalities), computed
    from both modalities' features; the fused token is gate_rgb * rgb + gate_lidar * lidar."""

    def __init__(self, channels: int):
        super().__init__()
        self.gate = nn.Linear(2 * channels, 2)
        self.last_gates: torch.Tensor | None = None  # (B, N, 2), kept for inspection

    def forward(self, rgb: torch.Tensor, lidar: torch.Tensor) -> torch.Tensor:
        """rgb, lidar: (B, N, C) -> fused (B, N, C)."""
        # BEGIN SOLUTION (hint: gates = softmax(self.gate(cat(rgb, lidar)), dim=-1); weight each modality by its gate)
        gates = self.gate(torch.cat([rgb, lidar], dim=-1)).softmax(dim=-1)  # (B, N, 2)
        self.last_gates = gates.detach()
        return gates[..., :1] * rgb + gates[..., 1:] * lidar
        # END SOLUTION


class CrossAttentionFusion(nn.Module):
    """Cross-attention both ways, with a learned position embedding (the two maps are aligned):

        fused = LN(rgb + Attn(q=rgb, k=lidar, v=lidar)) + LN(lidar + Attn(q=lidar, k=rgb, v=rgb))
    """

    def __init__(self, channels: int, heads: int, tokens: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.position = nn.Parameter(torch.zeros(1, tokens, channels))
        nn.init.normal_(self.position, std=0.02)
        self.rgb_from_lidar = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.lidar_from_rgb = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm_rgb = nn.LayerNorm(channels)
        self.norm_lidar = nn.LayerNorm(channels)

    def forward(self, rgb: torch.Tensor, lidar: torch.Tensor) -> torch.Tensor:
        """rgb, lidar: (B, N, C) -> fused (B, N, C)."""
        # BEGIN SOLUTION (hint: add self.position to queries and keys; attend each way; residual + LayerNorm; sum)
        q_rgb, q_lidar = rgb + self.position, lidar + self.position  # (B, N, C)
        rgb_ctx, _ = self.rgb_from_lidar(q_rgb, q_lidar, lidar, need_weights=False)  # RGB asks LiDAR
        lidar_ctx, _ = self.lidar_from_rgb(q_lidar, q_rgb, rgb, need_weights=False)  # LiDAR asks RGB
        return self.norm_rgb(rgb + rgb_ctx) + self.norm_lidar(lidar + lidar_ctx)
        # END SOLUTION


class FusionClassifier(nn.Module):
    """rgb (B, 3, H, W) in [0, 1] and lidar (B, 4, H, W) (x, y, z, valid) -> logits (B, num_classes)."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.rgb_norm = Normalize(config.rgb_mean, config.rgb_std)
        self.lidar_norm = Normalize(config.lidar_mean, config.lidar_std)
        self.rgb_embedder = Embedder(3, config.width, config.blocks, config.downsample)
        self.lidar_embedder = Embedder(4, config.width, config.blocks, config.downsample)
        if config.fusion == "late":
            self.rgb_head = ClassifierHead(c, config.hidden, config.num_classes)
            self.lidar_head = ClassifierHead(c, config.hidden, config.num_classes)
        else:
            if config.fusion == "concat":
                self.fuse = ConcatFusion(c)
            elif config.fusion == "weighted":
                self.fuse = WeightedSumFusion(c)
            else:
                self.fuse = CrossAttentionFusion(c, config.heads, config.tokens)
            self.head = ClassifierHead(c, config.hidden, config.num_classes)

    def forward(self, rgb: torch.Tensor, lidar: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if rgb.shape[1:] != (3, size, size) or lidar.shape[1:] != (4, size, size) or len(rgb) != len(lidar):
            raise ValueError(f"expected rgb (B, 3, {size}, {size}) and lidar (B, 4, {size}, {size}), "
                             f"got {tuple(rgb.shape)} and {tuple(lidar.shape)}")
        rgb_tokens = to_tokens(self.rgb_embedder(self.rgb_norm(rgb)))  # (B, N, C)
        lidar_tokens = to_tokens(self.lidar_embedder(self.lidar_norm(lidar)))  # (B, N, C)
        if self.config.fusion == "late":
            # BEGIN SOLUTION (hint: each modality's head gives logits; average the two)
            return (self.rgb_head(rgb_tokens) + self.lidar_head(lidar_tokens)) / 2
            # END SOLUTION
        return self.head(self.fuse(rgb_tokens, lidar_tokens))  # (B, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def predict(model: FusionClassifier, rgb: np.ndarray, ranges: np.ndarray, azimuth: np.ndarray | None = None,
            zenith: np.ndarray | None = None, batch_size: int = 256) -> np.ndarray:
    """Class indices (0 cube, 1 sphere) for raw samples as stored on disk.

    Args:
        rgb: uint8 (B, H, W, 3). ranges: float32 (B, H, W), 0 for no return.
        azimuth, zenith: the dataset's beam angles (azimuth.npy, zenith.npy); default the world's own.
    """
    rgb_t, lidar_t = shapes_data.to_model_inputs(rgb, ranges, azimuth, zenith)
    model.eval()
    out = [model(rgb_t[i:i + batch_size], lidar_t[i:i + batch_size]).argmax(-1)
           for i in range(0, len(rgb_t), batch_size)]
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------- checkpoints


def save_model(model: FusionClassifier, out_dir: str | Path, training: dict) -> Path:
    """Write model.safetensors + config.json, then check that the folder loads (and fits the size limit)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / WEIGHTS)
    write_record(out, "fusion", {"config": dataclasses.asdict(model.config), "training": training})
    load_model(out)
    return out


def load_model(checkpoint: str | Path, fusion: str = "", downsample: str = "") -> FusionClassifier:
    """Load a checkpoint folder; if `fusion` / `downsample` are given, it must be that variant."""
    path = Path(checkpoint)
    record = open_checkpoint(path, "fusion", (WEIGHTS,))  # there, a fusion one, within the size limit
    config = config_from_record(FusionConfig, record.get("config", {}), path / "config.json")
    for name, wanted in (("fusion", fusion), ("downsample", downsample)):
        if wanted and getattr(config, name) != wanted:
            fail(f"{path} is a {name}={getattr(config, name)} checkpoint, not {name}={wanted}; "
                 f"pass --{name} {getattr(config, name)} or another --checkpoint")
    return load_weights(FusionClassifier(config), path / WEIGHTS).eval()


def load_reference() -> FusionClassifier:
    """The committed reference fusion classifier (homework/checkpoints/fusion)."""
    return load_model(REFERENCE_DIR)


# --------------------------------------------------------------------------- training


def random_flip(rgb: torch.Tensor, lidar: torch.Tensor, generator: torch.Generator):
    """Mirror half the batch left-right; for the LiDAR that also negates y (the beams are symmetric)."""
    flip = torch.rand(len(rgb), generator=generator) < 0.5
    rgb, lidar = rgb.clone(), lidar.clone()
    rgb[flip] = rgb[flip].flip(-1)
    mirrored = lidar[flip].flip(-1)
    mirrored[:, 1] = -mirrored[:, 1]
    lidar[flip] = mirrored
    return rgb, lidar


@torch.no_grad()
def evaluate(model: FusionClassifier, split: shapes_data.ShapesSplit, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(split), batch_size):
        logits = model(split.rgb[i:i + batch_size], split.lidar[i:i + batch_size])
        labels = split.labels[i:i + batch_size]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(-1) == labels).sum().item()
    return loss_sum / len(split), correct / len(split)


def train(fusion: str = "late", downsample: str = "stride", epochs: int = 8, batch_size: int = 64,
          learning_rate: float = 3e-3, weight_decay: float = 1e-4, width: int = 8, subset: bool = False,
          data_dir: str = shapes_data.DEFAULT_DATA_DIR, output_dir: str = "", overwrite: bool = False,
          seed: int = 0, threads: int = 0, lr: float | None = None, out_dir: str | None = None) -> None:
    """Train a fusion classifier; keep the checkpoint with the lowest validation loss.

    Args:
        fusion: late | concat | weighted | attention.
        downsample: stride (strided convolution) | maxpool (max pooling) in the embedders.
        epochs: passes over the training split.
        batch_size: samples per step.
        learning_rate: peak learning rate (AdamW, linear warm-up for one epoch, then cosine decay).
        weight_decay: AdamW weight decay.
        width: channels of the embedders' first block (then 2x, 4x).
        subset: train and validate on the fixed 30% subset (splits.json) instead of everything.
        data_dir: the shapes dataset (generated with seed 0 if missing).
        output_dir: the checkpoint folder; default runs/fusion/FUSION_DOWNSAMPLE.
        overwrite: replace a checkpoint already in output_dir.
        seed: torch seed for initialisation, batch order and augmentation.
        threads: torch CPU threads; 0 = torch's default (every core).
        lr: old name of --learning_rate (still works, with a note).
        out_dir: old name of --output_dir (still works, with a note).
    """
    learning_rate = renamed("lr", "learning_rate", lr, learning_rate, train)
    output_dir = renamed("out_dir", "output_dir", out_dir, output_dir, train)
    check_choice("fusion", fusion, FUSIONS)
    check_choice("downsample", downsample, DOWNSAMPLES)
    check_ints(epochs=(epochs, 1), batch_size=(batch_size, 1), width=(width, 1), seed=(seed, 0))
    check_number("learning_rate", learning_rate)
    check_number("weight_decay", weight_decay, allow_minimum=True)
    out = output_folder(output_dir or f"{DEFAULT_RUNS}/{fusion}_{downsample}", WEIGHTS, overwrite)
    threads = set_threads(threads)
    torch.manual_seed(seed)  # the model's initialisation
    generator = torch.Generator().manual_seed(seed)  # batch order and flips, apart from the initialisation

    train_split = shapes_data.load_split(data_dir, "train", subset, generate_seed=0)  # made if missing
    val_split = shapes_data.load_split(data_dir, "valid", subset)
    config = FusionConfig(fusion=fusion, downsample=downsample, width=width, **shapes_data.channel_stats(data_dir))
    model = FusionClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_split) / batch_size)
    total_steps, warmup_steps = epochs * steps_per_epoch, steps_per_epoch
    print(f"fusion={fusion} downsample={downsample}: {count_parameters(model):,} parameters, "
          f"{len(train_split)} train / {len(val_split)} val samples, {epochs} epochs")

    best = {"val_loss": float("inf")}
    epoch_seconds: list[float] = []
    step = 0
    for epoch in range(epochs):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(train_split), generator=generator)  # a fresh order each epoch
        bar = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for start in bar:
            # 1. learning rate first, so this step already uses it: an epoch of warm-up while the
            #    BatchNorm statistics settle (overlapping the cosine, as the reference was trained), then to 0
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, total_steps, learning_rate, warmup_steps, overlap=True)
            # 2. batch: flip half of it, the same flip for both modalities (they must stay aligned)
            batch = order[start:start + batch_size]
            rgb, lidar = random_flip(train_split.rgb[batch], train_split.lidar[batch], generator)
            labels = train_split.labels[batch]
            # 3. forward/backward on this batch alone (zero_grad), clip so one spike cannot wreck the
            #    weights, then step
            # BEGIN SOLUTION (hint: cross-entropy of model(rgb, lidar) against labels; zero_grad, backward, clip to 1.0, step)
            loss = F.cross_entropy(model(rgb, lidar), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # attention fusion can spike early
            optimizer.step()
            # END SOLUTION
            step += 1
            # 4. log: the bar only (printing every step would drown the per-epoch lines)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        epoch_seconds.append(time.perf_counter() - started)  # training steps only, not the evaluation
        # 5. evaluate; 6. keep the best: lowest validation loss, not accuracy (it saturates at 100%)
        val_loss, val_acc = evaluate(model, val_split)
        improved = val_loss < best["val_loss"]
        if improved:
            best = {"val_loss": round(val_loss, 6), "val_accuracy": round(val_acc, 6), "epoch": epoch + 1}
            training = {"epochs": epochs, "batch_size": batch_size, "lr": learning_rate, "weight_decay": weight_decay,
                        "subset": subset, "seed": seed, "data_dir": str(data_dir),
                        "data_seed": shapes_data.dataset_seed(data_dir), **best}
            save_model(model, out, training)
        # 7. log, after saving, so that "*saved" is true when it is printed
        print(f"epoch {epoch + 1:2d}/{epochs} loss {loss.item():.4f} val_loss {val_loss:.4f} "
              f"val_acc {val_acc:.4f}{'  *saved' if improved else ''}")

    metrics = {"fusion": fusion, "downsample": downsample, "parameters": count_parameters(model),
               # the median epoch: a shared CPU makes some epochs slow for reasons of its own
               "seconds_per_epoch": round(float(np.median(epoch_seconds)), 2),
               "threads": threads, **best}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(f"best epoch {best['epoch']}: val_loss {best['val_loss']:.4f} val_acc {best['val_accuracy']:.4f}; "
          f"{metrics['seconds_per_epoch']}s/epoch; saved {out}")


def test(checkpoint: str = str(REFERENCE_DIR), fusion: str = "", downsample: str = "",
         data_dir: str = shapes_data.DEFAULT_DATA_DIR, split: str = "valid", generate_seed: int | None = None) -> None:
    """Accuracy of a checkpoint on a split; the last line is `accuracy=...`.

    Args:
        checkpoint: a checkpoint folder; default the committed reference, homework/checkpoints/fusion
            (what load_fusion() reads).
        fusion: if given, the checkpoint must be this fusion kind.
        downsample: if given, the checkpoint must use this downsampling.
        data_dir: the shapes dataset to test on (a held-out one: generate it with another --seed).
        split: train | valid | all ("all" for a held-out dataset; "val" still works).
        generate_seed: generate data_dir from this world seed if it is missing (without it, only the
            default data_dir is generated, with seed 0).
    """
    if fusion:
        check_choice("fusion", fusion, FUSIONS)
    if downsample:
        check_choice("downsample", downsample, DOWNSAMPLES)
    split = check_split("split", split, shapes_data.SPLITS, shapes_data.SPLIT_ALIASES)
    model = load_model(checkpoint, fusion, downsample)
    data = shapes_data.load_split(data_dir, split, generate_seed=generate_seed)
    loss, accuracy = evaluate(model, data)
    errors = len(data) - round(accuracy * len(data))
    print(f"{checkpoint} (fusion={model.config.fusion}, downsample={model.config.downsample}) on {data_dir} {split}: "
          f"{len(data)} samples, loss {loss:.4f}, {errors} errors")
    print(f"accuracy={accuracy:.4f}")


if __name__ == "__main__":
    fire.Fire({"train": train, "test": test})
