"""Pretraining the robot assignment's tiny encoders with self-supervision: `data/robot_encoders/`.

    python -m pretraining.robot_encoders pretrain --overwrite --threads 1   # remake data/robot_encoders

A tiny CLIP vision tower (CLIPVisionModelWithProjection, 64 x 64 pictures) and a tiny Wav2Vec2Model
learn, on the robot world's own `pretrain` split (never the assignment's train split) and with no
label at all, which signals belong to the same episode: an InfoNCE loss over every pair of the
top camera, the side camera, the audio and a throwaway MLP over the pressure and EMG features,
plus one between each picture and a re-lit, noisier copy of itself (SimCLR-style).
What the sensors share (the material's look, ring and stiffness; the force in the whine and the
pressure; the object's size in both pictures) is what the encoders learn to keep. The audio is
cropped to a random second around the contact (the loud part) to keep the steps cheap.
"""

from __future__ import annotations

import json
import time
from itertools import combinations

import fire
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from homework import robot
from homework.checkpoint import output_folder
from homework.cli_checks import check_ints, check_number, set_threads
from worlds import robot as world

CROP = world.SAMPLE_RATE  # one second of audio per step


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: row i of A and row i of B are the positives, every other row a negative."""
    logits = logit_scale.exp() * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (B, B)
    target = torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class Pretrainer(nn.Module):
    def __init__(self, dim: int = 64):
        super().__init__()
        from transformers import CLIPVisionModelWithProjection, Wav2Vec2Model

        self.vision = robot.VisionEncoder(CLIPVisionModelWithProjection(robot.kit_vision_config()))
        self.audio = robot.AudioEncoder(Wav2Vec2Model(robot.kit_audio_config()))
        sensor_in = robot.NUM_FEATURES * (1 + world.EMG_CHANNELS)
        self.sensor = nn.Sequential(nn.BatchNorm1d(sensor_in), nn.Linear(sensor_in, 128), nn.GELU(), nn.Linear(128, dim))
        self.heads = nn.ModuleDict({"camera1": nn.Linear(self.vision.out_dim, dim),
                                    "camera2": nn.Linear(self.vision.out_dim, dim),
                                    "audio": nn.Linear(self.audio.out_dim, dim)})
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def loss(self, inputs: dict, crop_start: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cams = inputs["camera_images"]
        z = {c: self.heads[c](self.vision(cams[c])) for c in ("camera1", "camera2")}
        # each picture against a re-lit, noisier copy of itself: keeps what no other sensor shares
        # (the side camera's grasp height), which the cross-modal pairs alone would let go
        views = {c: self.heads[c](self.vision(jitter(cams[c], generator))) for c in ("camera1", "camera2")}
        clips = torch.stack([a[s:s + CROP] for a, s in zip(inputs["audio"], crop_start.tolist(), strict=True)])
        z["audio"] = self.heads["audio"](self.audio(clips))
        feats = torch.cat([robot.sensor_features(inputs["pressure"]),
                           robot.sensor_features(inputs["emg"]).flatten(1)], dim=1)
        z["sensors"] = self.sensor(feats)
        pairs = list(combinations(z, 2))
        cross = sum(info_nce(z[a], z[b], self.logit_scale) for a, b in pairs) / len(pairs)
        return cross + sum(info_nce(z[c], views[c], self.logit_scale) for c in views) / len(views)


def jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Another exposure of the same pictures: brightness x U(0.85, 1.15) and Gaussian noise (std 0.03)."""
    gain = 0.85 + 0.3 * torch.rand(len(images), 1, 1, 1, generator=generator)
    return (images * gain + 0.03 * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def pretrain(steps: int = 300, batch_size: int = 48, learning_rate: float = 1e-3, seed: int = 0,
             data_dir: str = world.DEFAULT_DIR, output_dir: str = str(robot.KIT_ENCODERS_DIR),
             overwrite: bool = False, threads: int = 0) -> None:
    """Pretrain the kit's robot encoders and save them (save_pretrained) in OUTPUT_DIR/vision and /audio.

    Args:
        steps: optimisation steps.
        batch_size: episodes per step (each the others' negatives).
        learning_rate: AdamW peak learning rate (cosine to 0).
        seed: torch seed (initialisation, batches, crops).
        data_dir: the robot world's folder; its pretrain split is rendered if missing.
        output_dir: where the encoders go.
        overwrite: replace encoders already there.
        threads: torch CPU threads; 0 = torch's default.
    """
    check_ints(steps=(steps, 1), batch_size=(batch_size, 2), seed=(seed, 0))
    check_number("learning_rate", learning_rate)
    out = output_folder(output_dir, "vision", overwrite, holds="encoders")
    threads = set_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    world.ensure(data_dir, "pretrain")
    data = world.load_split(data_dir, "pretrain")
    n = len(data["audio"])
    model = Pretrainer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps, pct_start=0.05)
    started = time.time()
    window = (world.AUDIO_SECONDS - 1) * world.SAMPLE_RATE  # the sensor window starts here; contact soon after
    bar = tqdm(range(steps), desc="pretraining robot encoders")
    for _ in bar:
        batch = torch.randperm(n, generator=generator)[:batch_size].numpy()
        inputs = robot.episode_inputs(data, np.sort(batch))
        crop = window - 1000 + torch.randint(0, 1001, (batch_size,), generator=generator)
        loss = model.loss(inputs, crop, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    out.mkdir(parents=True, exist_ok=True)
    model.vision.model.save_pretrained(out / "vision")
    model.audio.model.save_pretrained(out / "audio")
    record = {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
              "threads": threads, "split": "pretrain", "final_loss": round(loss.item(), 4),
              "seconds": round(time.time() - started, 1),
              **{f"{k}_fingerprint": v for k, v in robot.encoder_fingerprints(model).items()}}
    (out / "pretraining.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"saved {out}/vision and {out}/audio after {steps} steps (loss {loss.item():.3f}, {record['seconds']:.0f}s)")


if __name__ == "__main__":
    fire.Fire({"pretrain": pretrain})
