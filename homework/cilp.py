"""CILP: contrastive image-LiDAR pretraining, then classify cubes and spheres from RGB alone.

    python -m homework.cilp pretrain     # RGB + LiDAR encoders (contrastive) and a LiDAR classifier
    python -m homework.cilp project      # a projector: CILP RGB embedding -> LiDAR classifier embedding
    python -m homework.cilp finetune     # RGB encoder + projector + LiDAR head, fine-tuned end to end
    python -m homework.cilp test         # RGB-only accuracy of the reference (or --checkpoint); last line `accuracy=...`

1. `pretrain` trains two encoders so that an RGB image and the LiDAR scan of the same scene land
   close together (a symmetric contrastive loss over the batch, CLIP-style, with a learnable
   logit scale), and, apart, a LiDAR-only classifier (encoder -> embedding -> head).
2. `project` freezes both and fits a projector from the CILP RGB embedding to the LiDAR
   classifier's embedding (MSE). RGB encoder + projector + the frozen LiDAR head is a classifier
   that never saw an RGB label.
3. `finetune` trains that RGB classifier end to end with labels.

Each encoder's CNN is fusion's `Embedder`: you write Embedder in homework/fusion.py; CILP reuses it.

Stages write to RUN_DIR/{pretrain,project,finetune} (or --output_dir), and read the stage before
from RUN_DIR; each folder holds `config.json` (the resolved `CILPConfig`, the stage and how it was
trained) next to its safetensors weights.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
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
    check_files,
    check_size,
    config_from_record,
    load_weights,
    open_checkpoint,
    output_folder,
    reference_dir,
    write_record,
)
from homework.cli_checks import check_int, check_ints, check_number, check_split, fail, renamed, set_threads
from homework.fusion import DOWNSAMPLES, Embedder, Normalize, random_flip
from homework.lr_schedule import warmup_cosine

REFERENCE_DIR = reference_dir("cilp")  # what load_cilp() reads and `test` scores by default
DEFAULT_RUN_DIR = "runs/cilp"
STAGES = ("pretrain", "project", "finetune")
STAGE_WEIGHTS = {"pretrain": ("cilp.safetensors", "lidar_classifier.safetensors"),  # what each stage's folder holds
                 "project": ("model.safetensors",), "finetune": ("model.safetensors",)}
EVAL_BATCH = 32  # the contrastive validation loss is reported over batches of 32


@dataclass
class CILPConfig(shapes_data.InputStats):  # with the input normalisation, rgb_mean ... lidar_std
    width: int = 8  # channels of each embedder's first block; each next block doubles them
    blocks: int = 3  # embedder blocks, each halving the resolution (64 -> 8 with 3)
    downsample: str = "stride"  # embedder downsampling: stride | maxpool
    image_size: int = 64  # input height = width
    embed_dim: int = 64  # size of the shared CILP embedding space
    lidar_embed_dim: int = 64  # size of the LiDAR classifier's embedding (the projector's target)
    projector_hidden: int = 128  # hidden units of the projector MLP
    num_classes: int = 2  # cube, sphere

    def __post_init__(self) -> None:
        if self.downsample not in DOWNSAMPLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLES}, got {self.downsample!r}")


# --------------------------------------------------------------------------- models


class Encoder(nn.Module):
    """One modality: normalise, `Embedder` CNN, mean + max pool over the map, linear -> (B, out_dim).

    `Embedder` is the CNN you write in homework/fusion.py; CILP reuses it (nothing to write here).
    """

    def __init__(self, in_channels: int, out_dim: int, config: CILPConfig, mean: list[float], std: list[float]):
        super().__init__()
        self.norm = Normalize(mean, std)
        self.embedder = Embedder(in_channels, config.width, config.blocks, config.downsample)
        self.proj = nn.Linear(2 * self.embedder.out_channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.embedder(self.norm(x))  # (B, C, h, w)
        pooled = torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)  # (B, 2C)
        return self.proj(pooled)  # (B, out_dim)


class CILP(nn.Module):
    """Two encoders into one embedding space, and the learnable temperature of their logits."""

    def __init__(self, config: CILPConfig):
        super().__init__()
        self.config = config
        self.rgb_encoder = Encoder(3, config.embed_dim, config, config.rgb_mean, config.rgb_std)
        self.lidar_encoder = Encoder(4, config.embed_dim, config, config.lidar_mean, config.lidar_std)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's init: temperature 0.07

    def encode_rgb(self, rgb: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.rgb_encoder(rgb)  # (B, D)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_lidar(self, lidar: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.lidar_encoder(lidar)  # (B, D)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, rgb: torch.Tensor, lidar: torch.Tensor):
        """-> unit RGB features (B, D), unit LiDAR features (B, D), logit scale (a scalar, at most 100)."""
        scale = self.logit_scale.clamp(max=math.log(100)).exp()  # clamped as in CLIP, so logits stay sane
        return self.encode_rgb(rgb), self.encode_lidar(lidar), scale


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over a batch of N pairs (CLIP, Radford et al. 2021, arXiv:2103.00020).

    Row i of the RGB features and row i of the LiDAR features are one scene: the positive pair;
    the other N - 1 rows are its negatives. The loss is the mean of the RGB -> LiDAR and the
    LiDAR -> RGB cross-entropies.

        >>> loss = ContrastiveLoss()(*model(rgb, lidar))
    """

    def get_logits(self, rgb_features: torch.Tensor, lidar_features: torch.Tensor, logit_scale: torch.Tensor):
        """(N, D), (N, D) unit features -> logits_per_rgb (N, N) and logits_per_lidar (N, N)."""
        # BEGIN SOLUTION (hint: scaled cosine similarities: logit_scale * rgb @ lidar.T, and its transpose)
        logits_per_rgb = logit_scale * rgb_features @ lidar_features.T  # (N, N): row i = RGB i vs every scan
        return logits_per_rgb, logits_per_rgb.T
        # END SOLUTION

    def get_ground_truth(self, n: int, device: torch.device) -> torch.Tensor:
        """The matching column of each row: (N,) = 0, 1, ..., N - 1."""
        return torch.arange(n, device=device, dtype=torch.long)

    def forward(self, rgb_features: torch.Tensor, lidar_features: torch.Tensor, logit_scale: torch.Tensor,
                reduction: str = "mean") -> torch.Tensor:
        if rgb_features.shape != lidar_features.shape:
            raise ValueError(f"feature shapes differ: {tuple(rgb_features.shape)} vs {tuple(lidar_features.shape)}")
        # BEGIN SOLUTION (hint: cross-entropy of both logit matrices against get_ground_truth; average the two)
        logits_per_rgb, logits_per_lidar = self.get_logits(rgb_features, lidar_features, logit_scale)
        labels = self.get_ground_truth(len(rgb_features), rgb_features.device)
        loss_rgb = F.cross_entropy(logits_per_rgb, labels, reduction=reduction)
        loss_lidar = F.cross_entropy(logits_per_lidar, labels, reduction=reduction)
        return (loss_rgb + loss_lidar) / 2
        # END SOLUTION


class LidarClassifier(nn.Module):
    """LiDAR only: encoder -> embedding (B, E) -> head (ReLU, linear) -> logits (B, classes)."""

    def __init__(self, config: CILPConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(4, config.lidar_embed_dim, config, config.lidar_mean, config.lidar_std)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(config.lidar_embed_dim, config.num_classes))

    def embed(self, lidar: torch.Tensor) -> torch.Tensor:
        return self.encoder(lidar)  # (B, E)

    def forward(self, lidar: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(lidar))


class Projector(nn.Module):
    """CILP RGB embedding (B, D) -> the LiDAR classifier's embedding space (B, E)."""

    def __init__(self, config: CILPConfig):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(config.embed_dim, config.projector_hidden), nn.ReLU(),
                                 nn.Linear(config.projector_hidden, config.projector_hidden), nn.ReLU(),
                                 nn.Linear(config.projector_hidden, config.lidar_embed_dim))

    def forward(self, rgb_embedding: torch.Tensor) -> torch.Tensor:
        return self.mlp(rgb_embedding)


class RGBClassifier(nn.Module):
    """RGB only: CILP RGB encoder -> unit embedding -> projector -> LiDAR classifier's head -> logits."""

    def __init__(self, config: CILPConfig):
        super().__init__()
        self.config = config
        self.rgb_encoder = Encoder(3, config.embed_dim, config, config.rgb_mean, config.rgb_std)
        self.projector = Projector(config)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(config.lidar_embed_dim, config.num_classes))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if rgb.shape[1:] != (3, size, size):
            raise ValueError(f"expected rgb (B, 3, {size}, {size}), got {tuple(rgb.shape)}")
        embedding = F.normalize(self.rgb_encoder(rgb), dim=-1)  # (B, D), as CILP was trained
        return self.head(self.projector(embedding))  # (B, classes)


@torch.no_grad()
def predict(model: RGBClassifier, rgb: np.ndarray, ranges: np.ndarray | None = None, batch_size: int = 256) -> np.ndarray:
    """Class indices (0 cube, 1 sphere) from RGB alone; `ranges` is accepted and ignored.

    Args:
        rgb: uint8 (B, H, W, 3) images as stored on disk.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"expected rgb (B, H, W, 3), got {rgb.shape}")
    rgb_t = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
    model.eval()
    return torch.cat([model(rgb_t[i:i + batch_size]).argmax(-1) for i in range(0, len(rgb_t), batch_size)]).numpy()


# --------------------------------------------------------------------------- checkpoints


def save_stage(out_dir: str | Path, stage: str, config: CILPConfig, weights: dict[str, nn.Module],
               training: dict, metrics: dict) -> Path:
    """Write NAME.safetensors per module + config.json, then check that it loads (and fits the size limit)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, module in weights.items():
        state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(state, out / f"{name}.safetensors")
    write_record(out, "cilp", {"stage": stage, "config": dataclasses.asdict(config), "files": sorted(weights),
                               "training": training, "metrics": metrics})
    read_stage(out, stage)
    return out


def stage_command(stage: str) -> str:
    """The command that writes a CILP STAGE folder (each stage has its own)."""
    return f"python -m homework.cilp {stage}"


def read_stage(path: str | Path, *stages: str) -> tuple[dict, CILPConfig]:
    """The config.json of a stage folder, checked to be a CILP checkpoint of one of `stages`, with
    that stage's weights, within the size limit."""
    path = Path(path)
    record = open_checkpoint(path, "cilp", command=stage_command(stages[0]))  # readable JSON of a CILP checkpoint
    stage = record.get("stage")
    if stage not in stages:
        fail(f"{path} is a CILP {stage!r} checkpoint; this needs {' or '.join(stages)} "
             f"(run `{stage_command(stages[0])} --output_dir {path}`)")
    check_files(path, "cilp", STAGE_WEIGHTS[stage], command=stage_command(stage))
    check_size(path, "cilp", STAGE_WEIGHTS[stage])
    return record, config_from_record(CILPConfig, record.get("config", {}), path / "config.json")


def load_model(checkpoint: str | Path) -> RGBClassifier:
    """The RGB-only classifier of a `project` or `finetune` stage folder."""
    path = Path(checkpoint)
    _, config = read_stage(path, "finetune", "project")
    return load_weights(RGBClassifier(config), path / "model.safetensors").eval()


def load_reference() -> RGBClassifier:
    """The committed reference CILP RGB-only classifier (homework/checkpoints/cilp)."""
    return load_model(REFERENCE_DIR)


# --------------------------------------------------------------------------- training


def train_loop(parameters: list[nn.Parameter], num_samples: int, batch_loss: Callable[[torch.Tensor], torch.Tensor],
               evaluate: Callable[[], tuple[float, dict]], on_best: Callable[[float, dict, int], None], epochs: int,
               batch_size: int, learning_rate: float, generator: torch.Generator, modules: list[nn.Module],
               desc: str) -> dict:
    """The one training loop of every stage, in a fixed order per step: learning rate, batch and
    forward/backward (`batch_loss` of a batch of sample indices), clip, step, log; per epoch:
    evaluate, keep the best by validation loss (`on_best`), log. Returns the best validation metrics."""
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-4)
    steps_per_epoch = math.ceil(num_samples / batch_size)
    total_steps, warmup_steps = epochs * steps_per_epoch, steps_per_epoch
    best: dict = {"val_loss": float("inf")}
    step, started = 0, time.perf_counter()
    for epoch in range(epochs):
        for module in modules:
            module.train()
        order = torch.randperm(num_samples, generator=generator)  # a fresh order each epoch
        bar = tqdm(range(0, num_samples, batch_size), desc=f"{desc} {epoch + 1}/{epochs}", leave=False)
        for start in bar:
            # 1. learning rate first, so this step already uses it: an epoch of warm-up while the
            #    BatchNorm statistics settle (overlapping the cosine, as the references were trained), then to 0
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, total_steps, learning_rate, warmup_steps, overlap=True)
            # 2. batch: these indices (batch_loss gathers and augments them); 3. forward/backward on this
            #    batch alone (zero_grad), clip so one spike cannot wreck the weights, then step
            # BEGIN SOLUTION (hint: loss = batch_loss(indices); zero_grad, backward, clip grad norm to 1.0, step)
            loss = batch_loss(order[start:start + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            # END SOLUTION
            step += 1
            # 4. log: the bar only (printing every step would drown the per-epoch lines)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        # 5. evaluate (eval mode: BatchNorm's running statistics, as at test time); 6. keep the best by
        #    validation loss, not accuracy (it saturates)
        for module in modules:
            module.eval()
        val_loss, val_metrics = evaluate()
        improved = val_loss < best["val_loss"]
        if improved:
            best = {"val_loss": round(val_loss, 6), **val_metrics, "epoch": epoch + 1}
            on_best(val_loss, val_metrics, epoch + 1)
        # 7. log, after saving, so that "*saved" is true when it is printed
        shown = " ".join(f"{k} {v:.4f}" for k, v in val_metrics.items())
        print(f"{desc} epoch {epoch + 1:2d}/{epochs} loss {loss.item():.4f} val_loss {val_loss:.4f} {shown}"
              f"{'  *saved' if improved else ''}")
    best["seconds"] = round(time.perf_counter() - started, 1)
    return best


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image (B, C, H, W) by up to max_shift pixels each way (edges replicated)."""
    if max_shift <= 0:
        return images
    _, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")  # (B, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator).tolist()
    return torch.stack([img[:, dy:dy + h, dx:dx + w] for img, (dy, dx) in zip(padded, offsets, strict=True)])


def setup(data_dir: str, subset: bool, seed: int, threads: int):
    """Threads, the seeds (torch's, for initialisation; a generator for batch order and augmentation)
    and the train and validation splits; every stage starts here."""
    set_threads(threads)
    torch.manual_seed(seed)
    train_split = shapes_data.load_split(data_dir, "train", subset, generate_seed=0)  # made if missing
    val_split = shapes_data.load_split(data_dir, "valid", subset)
    return train_split, val_split, torch.Generator().manual_seed(seed)


def stage_dir(run_dir: str, stage: str, overwrite: bool, output_dir: str = "") -> Path:
    """Where STAGE writes: OUTPUT_DIR, default RUN_DIR/STAGE; refused if it holds a checkpoint (without OVERWRITE)."""
    return output_folder(output_dir or Path(run_dir) / stage, "config.json", overwrite)


@torch.no_grad()
def contrastive_eval(model: CILP, split: shapes_data.ShapesSplit) -> tuple[float, dict]:
    """Validation contrastive loss over batches of EVAL_BATCH (the last partial batch dropped), and
    RGB -> LiDAR retrieval top-1 both within those batches and over the whole split."""
    loss_fn = ContrastiveLoss()
    rgb_f = torch.cat([model.encode_rgb(split.rgb[i:i + 256]) for i in range(0, len(split), 256)])
    lidar_f = torch.cat([model.encode_lidar(split.lidar[i:i + 256]) for i in range(0, len(split), 256)])
    scale = model.logit_scale.clamp(max=math.log(100)).exp()
    losses, hits = [], 0
    batch = min(EVAL_BATCH, len(split))  # a split smaller than a batch is one batch
    usable = len(split) // batch * batch
    for i in range(0, usable, batch):
        r, li = rgb_f[i:i + batch], lidar_f[i:i + batch]
        losses.append(loss_fn(r, li, scale).item())
        hits += (r @ li.T).argmax(1).eq(torch.arange(len(r))).sum().item()
    top1_all = (rgb_f @ lidar_f.T).argmax(1).eq(torch.arange(len(split))).float().mean().item()
    return float(np.mean(losses)), {"top1_batch32": hits / usable, "top1_all": top1_all,
                                    "logit_scale": float(scale)}


@torch.no_grad()
def classify_eval(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                  labels: torch.Tensor) -> tuple[float, dict]:
    logits = torch.cat([forward(inputs[i:i + 256]) for i in range(0, len(inputs), 256)])
    return F.cross_entropy(logits, labels).item(), {"accuracy": (logits.argmax(-1) == labels).float().mean().item()}


def pretrain(epochs: int = 6, lidar_epochs: int = 5, batch_size: int = 64, learning_rate: float = 3e-3,
             width: int = 8, embed_dim: int = 64, subset: bool = False, data_dir: str = shapes_data.DEFAULT_DATA_DIR,
             run_dir: str = DEFAULT_RUN_DIR, output_dir: str = "", overwrite: bool = False, seed: int = 0,
             threads: int = 0, lr: float | None = None) -> None:
    """Contrastive RGB + LiDAR pretraining (CILP), and a LiDAR-only classifier; writes RUN_DIR/pretrain.

    Args:
        epochs: CILP epochs.
        lidar_epochs: LiDAR classifier epochs.
        batch_size: pairs per contrastive batch (each pair's negatives are the other batch_size - 1).
        learning_rate: peak learning rate (AdamW, linear warm-up for one epoch, then cosine decay).
        width: channels of the embedders' first block.
        embed_dim: size of the shared embedding space.
        subset: use the fixed 30% subset of the data.
        data_dir: the shapes dataset (generated with seed 0 if missing).
        run_dir: where the stages go; `project` reads RUN_DIR/pretrain.
        output_dir: the stage's folder; default RUN_DIR/pretrain.
        overwrite: replace a checkpoint already in output_dir.
        seed: torch seed for initialisation, batch order and augmentation.
        threads: torch CPU threads; 0 = torch's default (every core).
        lr: old name of --learning_rate (still works, with a note).
    """
    learning_rate = renamed("lr", "learning_rate", lr, learning_rate, pretrain)
    check_ints(epochs=(epochs, 1), lidar_epochs=(lidar_epochs, 1), batch_size=(batch_size, 1), width=(width, 1),
               embed_dim=(embed_dim, 1), seed=(seed, 0))
    check_number("learning_rate", learning_rate)
    out = stage_dir(run_dir, "pretrain", overwrite, output_dir)
    train_split, val_split, generator = setup(data_dir, subset, seed, threads)
    config = CILPConfig(width=width, embed_dim=embed_dim, **shapes_data.channel_stats(data_dir))
    training = {"epochs": epochs, "lidar_epochs": lidar_epochs, "batch_size": batch_size, "lr": learning_rate,
                "subset": subset, "seed": seed, "data_dir": str(data_dir),
                "data_seed": shapes_data.dataset_seed(data_dir)}

    # the LiDAR classifier: the projector's target space and the RGB classifier's head come from it
    lidar_model = LidarClassifier(config)
    best_lidar = {"state": None}

    def lidar_loss(batch: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION (hint: cross-entropy of lidar_model on (flipped) LiDAR scans against the labels)
        _, lidar = random_flip(train_split.rgb[batch], train_split.lidar[batch], generator)
        return F.cross_entropy(lidar_model(lidar), train_split.labels[batch])
        # END SOLUTION

    lidar_metrics = train_loop(
        list(lidar_model.parameters()), len(train_split), lidar_loss,
        lambda: classify_eval(lidar_model, val_split.lidar, val_split.labels),
        lambda *_: best_lidar.update(state={k: v.clone() for k, v in lidar_model.state_dict().items()}),
        lidar_epochs, batch_size, learning_rate, generator, [lidar_model], "lidar classifier")
    lidar_model.load_state_dict(best_lidar["state"])

    model = CILP(config)
    loss_fn = ContrastiveLoss()
    best_cilp = {"state": None}

    def cilp_loss(batch: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION (hint: the same flip for both modalities of a pair; loss_fn(*model(rgb, lidar)))
        rgb, lidar = random_flip(train_split.rgb[batch], train_split.lidar[batch], generator)
        return loss_fn(*model(rgb, lidar))
        # END SOLUTION

    cilp_metrics = train_loop(
        list(model.parameters()), len(train_split), cilp_loss, lambda: contrastive_eval(model, val_split),
        lambda *_: best_cilp.update(state={k: v.clone() for k, v in model.state_dict().items()}),
        epochs, batch_size, learning_rate, generator, [model], "cilp")
    model.load_state_dict(best_cilp["state"])

    metrics = {"contrastive_val_loss_batch32": cilp_metrics["val_loss"],
               "retrieval_top1_batch32": round(cilp_metrics["top1_batch32"], 4),
               "retrieval_top1_all_val": round(cilp_metrics["top1_all"], 4),
               "logit_scale": round(cilp_metrics["logit_scale"], 3),
               "lidar_classifier_val_accuracy": round(lidar_metrics["accuracy"], 4),
               "seconds": round(cilp_metrics["seconds"] + lidar_metrics["seconds"], 1)}
    save_stage(out, "pretrain", config, {"cilp": model, "lidar_classifier": lidar_model}, training, metrics)
    print(f"saved {out}: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))


def project(epochs: int = 60, batch_size: int = 64, learning_rate: float = 2e-3,
            data_dir: str = shapes_data.DEFAULT_DATA_DIR, run_dir: str = DEFAULT_RUN_DIR, output_dir: str = "",
            overwrite: bool = False, seed: int = 0, threads: int = 0, lr: float | None = None) -> None:
    """Fit the projector from CILP RGB embeddings to LiDAR classifier embeddings (MSE); writes RUN_DIR/project.

    Both encoders stay frozen, so their embeddings are computed once. The resulting RGB classifier
    (RGB encoder -> projector -> LiDAR head) is scored before any fine-tuning.

    Args:
        epochs: projector epochs (cheap: an MLP on precomputed embeddings).
        batch_size: samples per step.
        learning_rate: peak learning rate (AdamW, linear warm-up for one epoch, then cosine decay).
        data_dir: the shapes dataset; must be the one pretrain used.
        run_dir: reads RUN_DIR/pretrain.
        output_dir: the stage's folder; default RUN_DIR/project (where `finetune` reads).
        overwrite: replace a checkpoint already in output_dir.
        seed: torch seed for the projector's initialisation and batch order.
        threads: torch CPU threads; 0 = torch's default (every core).
        lr: old name of --learning_rate (still works, with a note).
    """
    learning_rate = renamed("lr", "learning_rate", lr, learning_rate, project)
    check_ints(epochs=(epochs, 1), batch_size=(batch_size, 1), seed=(seed, 0))
    check_number("learning_rate", learning_rate)
    source = Path(run_dir) / "pretrain"
    record, config = read_stage(source, "pretrain")
    out = stage_dir(run_dir, "project", overwrite, output_dir)
    train_split, val_split, generator = setup(data_dir, record["training"]["subset"], seed, threads)
    cilp = load_weights(CILP(config), source / "cilp.safetensors").eval()
    lidar_model = load_weights(LidarClassifier(config), source / "lidar_classifier.safetensors").eval()

    with torch.no_grad():  # frozen encoders: embed everything once
        def embed(split):
            rgb = torch.cat([cilp.encode_rgb(split.rgb[i:i + 256]) for i in range(0, len(split), 256)])
            lidar = torch.cat([lidar_model.embed(split.lidar[i:i + 256]) for i in range(0, len(split), 256)])
            return rgb, lidar  # (N, D) unit, (N, E)

        train_rgb, train_target = embed(train_split)
        val_rgb, val_target = embed(val_split)
    projector = Projector(config)
    best = {"state": None}

    def projector_loss(batch: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION (hint: MSE between projector(RGB embedding) and the LiDAR classifier's embedding)
        return F.mse_loss(projector(train_rgb[batch]), train_target[batch])
        # END SOLUTION

    @torch.no_grad()
    def projector_eval() -> tuple[float, dict]:
        projected = projector(val_rgb)
        accuracy = (lidar_model.head(projected).argmax(-1) == val_split.labels).float().mean().item()
        return F.mse_loss(projected, val_target).item(), {"rgb_only_accuracy": accuracy}

    metrics = train_loop(list(projector.parameters()), len(train_split), projector_loss, projector_eval,
                         lambda *_: best.update(state={k: v.clone() for k, v in projector.state_dict().items()}),
                         epochs, batch_size, learning_rate, generator, [projector], "projector")
    projector.load_state_dict(best["state"])

    classifier = RGBClassifier(config)
    classifier.rgb_encoder.load_state_dict(cilp.rgb_encoder.state_dict())
    classifier.projector.load_state_dict(projector.state_dict())
    classifier.head.load_state_dict(lidar_model.head.state_dict())
    target_var = val_target.var(dim=0).sum().item() / val_target.shape[1]
    results = {"projector_val_mse": metrics["val_loss"], "lidar_embedding_variance": round(target_var, 6),
               "rgb_only_val_accuracy_before_finetune": round(metrics["rgb_only_accuracy"], 4),
               "seconds": metrics["seconds"], "pretrain": record["metrics"]}
    save_stage(out, "project", config, {"model": classifier},
               {**record["training"], "project_epochs": epochs, "project_lr": learning_rate}, results)
    print(f"saved {out}: projector val MSE {metrics['val_loss']:.4f} (per-dimension variance of the target "
          f"{target_var:.4f}); RGB-only val accuracy before fine-tuning {metrics['rgb_only_accuracy']:.4f}")


def finetune(epochs: int = 20, batch_size: int = 64, learning_rate: float = 3e-3, shift: int = 4,
             data_dir: str = shapes_data.DEFAULT_DATA_DIR, run_dir: str = DEFAULT_RUN_DIR, output_dir: str = "",
             overwrite: bool = False, seed: int = 0, threads: int = 0, lr: float | None = None,
             out_dir: str | None = None) -> None:
    """Fine-tune the RGB classifier (RGB encoder, projector, head) end to end on RGB labels.

    Args:
        epochs: passes over the training split.
        batch_size: samples per step.
        learning_rate: peak learning rate (AdamW, linear warm-up for one epoch, then cosine decay).
        shift: augmentation: translate each training image by up to this many pixels (0: off).
        data_dir: the shapes dataset; must be the one pretrain used.
        run_dir: reads RUN_DIR/project.
        output_dir: the stage's folder; default RUN_DIR/finetune (homework/checkpoints/cilp for the reference).
        overwrite: replace a checkpoint already in output_dir.
        seed: torch seed for batch order and augmentation.
        threads: torch CPU threads; 0 = torch's default (every core).
        lr: old name of --learning_rate (still works, with a note).
        out_dir: old name of --output_dir (still works, with a note).
    """
    learning_rate = renamed("lr", "learning_rate", lr, learning_rate, finetune)
    output_dir = renamed("out_dir", "output_dir", out_dir, output_dir, finetune)
    check_ints(epochs=(epochs, 1), batch_size=(batch_size, 1), seed=(seed, 0))
    check_number("learning_rate", learning_rate)
    check_int("shift", shift, 0, 16)
    source = Path(run_dir) / "project"
    record, config = read_stage(source, "project")
    out = stage_dir(run_dir, "finetune", overwrite, output_dir)
    train_split, val_split, generator = setup(data_dir, record["training"]["subset"], seed, threads)
    model = load_model(source)
    before = classify_eval(model, val_split.rgb, val_split.labels)[1]["accuracy"]
    training = {**record["training"], "finetune_epochs": epochs, "finetune_lr": learning_rate, "finetune_shift": shift}

    def finetune_loss(batch: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION (hint: cross-entropy of model on flipped and shifted RGB images against the labels)
        rgb, _ = random_flip(train_split.rgb[batch], train_split.lidar[batch], generator)
        return F.cross_entropy(model(random_shift(rgb, shift, generator)), train_split.labels[batch])
        # END SOLUTION

    def save(val_loss: float, val_metrics: dict, epoch: int) -> None:
        metrics = {**record["metrics"], "rgb_only_val_accuracy_before_finetune": round(before, 4),
                   "rgb_only_val_accuracy": round(val_metrics["accuracy"], 4), "finetune_val_loss": round(val_loss, 6),
                   "finetune_epoch": epoch}
        save_stage(out, "finetune", config, {"model": model}, training, metrics)

    best = train_loop(list(model.parameters()), len(train_split), finetune_loss,
                      lambda: classify_eval(model, val_split.rgb, val_split.labels), save,
                      epochs, batch_size, learning_rate, generator, [model], "finetune")
    print(f"saved {out}: RGB-only val accuracy {before:.4f} before fine-tuning, {best['accuracy']:.4f} after "
          f"(epoch {best['epoch']}, {best['seconds']}s)")


def test(checkpoint: str = str(REFERENCE_DIR), data_dir: str = shapes_data.DEFAULT_DATA_DIR, split: str = "valid",
         generate_seed: int | None = None) -> None:
    """RGB-only accuracy of a CILP classifier; the last line is `accuracy=...`.

    Args:
        checkpoint: a finetune (or project) folder; default the committed reference, homework/checkpoints/cilp
            (what load_cilp() reads). Your own run: runs/cilp/finetune.
        data_dir: the shapes dataset to test on (a held-out one: generate it with another --seed).
        split: train | valid | all ("all" for a held-out dataset; "val" still works).
        generate_seed: generate data_dir from this world seed if it is missing (without it, only the
            default data_dir is generated, with seed 0).
    """
    split = check_split("split", split, shapes_data.SPLITS, shapes_data.SPLIT_ALIASES)
    model = load_model(checkpoint)
    data = shapes_data.load_split(data_dir, split, generate_seed=generate_seed)
    loss, metrics = classify_eval(model, data.rgb, data.labels)
    errors = len(data) - round(metrics["accuracy"] * len(data))
    print(f"{checkpoint} on {data_dir} {split}: {len(data)} samples (RGB only), loss {loss:.4f}, {errors} errors")
    print(f"accuracy={metrics['accuracy']:.4f}")


if __name__ == "__main__":
    fire.Fire({"pretrain": pretrain, "project": project, "finetune": finetune, "test": test})
