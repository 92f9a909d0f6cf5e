"""Pretraining the kit's tiny base VLM from scratch, deterministically: `data/base_vlm/`.

    python -m pretraining.base_vlm pretrain --vision_steps 10000 --max_steps 10000 --overwrite --threads 2   # remake data/base_vlm

The defaults (6,000 and 5,000 steps) are the real-data base's, which must fit in an hour with its fine-tuning.

Two stages, on a kart split of its own (`pretrain`, never the assignment's train split), and never
on the assignment's questions:

1. The vision tower alone learns the facts a picture shows, and where each kart sits on its grid
   of tokens (two throwaway heads: `FactsHead`, `KartMapHead`).
2. With the tower frozen, the connector and the decoder learn to *describe* the picture in
   words (`describe`): the track, the ego, the number of karts, where each kart is.

The finished model, its tokenizer, its fingerprint and its pretraining config are written to
`--output_dir`. Resumable: a state is saved every 200 steps in `--run_dir`, and a new run with the
same settings continues from it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import fire
import numpy as np
import torch
from torch import nn

from homework.base_vlm import FINGERPRINT_FILE, TINY_BASE_DIR, weights_fingerprint
from homework.checkpoint import output_folder
from homework.cli_checks import check_ints, check_number, fail, set_threads
from homework.lr_schedule import warmup_cosine
from homework.modeling_kart_vlm import (
    DESCRIBE_PROMPT,
    IMAGE_SIZE,
    KartVLMForConditionalGeneration,
    build_tokenizer,
    tiny_config,
)
from homework.run_state import SettingsMismatch, load_state, save_state
from homework.vlm_inputs import PictureCache, frozen_features, text_batch
from worlds.kart import KARTS, TRACKS

# ----------------------------------------------------------------------------------------
# Stage 2's text: describing scenes, never answering the assignment's questions
# ----------------------------------------------------------------------------------------


def describe(view) -> list[str]:
    """Statements about a view that a careful person could read off it (the same visibility
    rules as the questions): the track, the ego, the number of karts, where each clearly placed
    kart is, and how many karts are on each side. Statements, not questions."""
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
            where = " ".join(w for w in (view.depth(k), view.side(k)) if w)
            if where:
                clauses.append(f"{k.name} {where}")
    if clear:
        sides, depths = [view.side(k) for k in counted], [view.depth(k) for k in counted]
        if all(sides):
            clauses.append(f"left {sides.count('left')} right {sides.count('right')}")
        if all(depths):
            clauses.append(f"front {depths.count('front')} back {depths.count('back')}")
    return clauses



# ----------------------------------------------------------------------------------------
# Stage 1's targets: the facts a picture shows, and where each kart is on the token grid
# ----------------------------------------------------------------------------------------


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
    facts = dict.fromkeys(FACT_CLASSES, -100)
    facts["track"] = list(TRACKS).index(view.track)
    places = [(0, 0)] * len(KARTS)
    for k in view.others:
        places[KART_INDEX[k.name]] = (-100, -100)
    ego = view.ego
    if ego is None:
        return facts, places
    counted = [k for k in view.others if not k.tiny]
    relations = [(view.side(k), view.depth(k)) for k in counted]
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

    def __init__(self, num_tokens: int, channels: int, num_karts: int = len(KARTS)):
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

    def __init__(self, channels: int, num_karts: int = len(KARTS)):
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


# ----------------------------------------------------------------------------------------
# Stage 1's augmentation for recordings: every kart of a picture pasted onto another track
# ----------------------------------------------------------------------------------------


# The course's real training frames hold one race per track, so which ten karts a picture can
# show follows from its track: a tower trained on them learns the track as a shortcut to the karts
# (measured: stage 1's heads named the ego right in 98.6% of training views and 65.9% of real
# valid's, whose races put other karts on each track). Pasting a picture's karts onto a picture of
# another track breaks that link (simple copy-paste, Ghiasi et al. 2021, arXiv:2012.07177).
PASTE_MARGIN = 2  # picture pixels around each kart box that travel with it
PASTE_TRIES = 30  # backgrounds drawn for a picture before it is left as it is


def _pixels(box, margin: int = 0) -> tuple[slice, slice]:
    """The rows and columns of a picture that a box (x0, y0, x1, y1, picture pixels) touches, widened by MARGIN."""
    x0, y0, x1, y1 = box
    return (slice(max(0, math.floor(y0) - margin), max(0, math.ceil(y1) + margin)),
            slice(max(0, math.floor(x0) - margin), max(0, math.ceil(x1) + margin)))


def kart_mask(view, margin: int = PASTE_MARGIN) -> np.ndarray:
    """(H, W) bool, True on the view's kart boxes (every one, dropped ones too) widened by MARGIN pixels."""
    mask = np.zeros(IMAGE_SIZE, dtype=bool)
    for box in view.boxes:
        mask[_pixels(box, margin)] = True
    return mask


def _covers(mask: np.ndarray, boxes) -> bool:
    """Whether MASK is True over every one of BOXES (picture pixels)."""
    return all(mask[_pixels(box)].all() for box in boxes)


def paste_backgrounds(views: list, rows, rng: np.random.Generator, probability: float) -> list[tuple[int, int, np.ndarray]]:
    """Which pictures of a batch get their karts pasted onto another picture: (i, b, mask) for
    rows[i] drawn with PROBABILITY, where view b is of another track and every kart box of b lies
    under rows[i]'s mask (so no kart of b is left in sight). Pictures with no such b in
    PASTE_TRIES draws stay as they are. Depends only on the views, ROWS and RNG."""
    out = []
    for i, a in enumerate(rows):
        draws = rng.integers(0, len(views), PASTE_TRIES)
        if rng.random() >= probability:
            continue
        mask = kart_mask(views[a])
        for b in draws:
            if views[b].track != views[a].track and _covers(mask, views[b].boxes):
                out.append((i, int(b), mask))
                break
    return out


def _resume(path: Path, settings: dict, resume: bool) -> dict | None:
    """The state saved at PATH if RESUME and it was made with the same SETTINGS; else None (start afresh)."""
    if not resume:
        return None
    try:
        state = load_state(path, settings)
    except SettingsMismatch:
        print(f"not resuming: {path} was made with other settings")
        return None
    if state is not None:
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
    rules: str = "kit",
    paste: float = 0.0,
    run_dir: str = "runs/pretrain",
    resume: bool = True,
    overwrite: bool = False,
    threads: int = 0,
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
        rules: the labelling rules the statements follow ("kit" or "original", see generate_qa.py);
            they come from the info files alone, so a split of real recordings works as it is.
        paste: the fraction of stage 1's pictures whose karts are pasted onto a picture of another
            track, labelled with that track; 0 turns it off. For recordings of one race per track,
            where the track gives away the karts (the rendered world draws its karts at random).
        run_dir: where resumable states are kept.
        resume: continue from RUN_DIR's states if their settings match.
        overwrite: replace an existing OUTPUT_DIR.
        threads: torch CPU threads (0: torch's default). Bytes are identical run to run for the
            same thread count; another count changes the float rounding.
    """
    from tqdm import tqdm

    from generate_qa import ensure_world, get_rules, split_views

    set_threads(threads)
    check_ints(vision_steps=(vision_steps, 0), max_steps=(max_steps, 1), batch_size=(batch_size, 1), seed=(seed, 0))
    check_number("learning_rate", learning_rate)
    paste = check_number("paste", paste, allow_minimum=True)
    if paste > 1:
        fail(f"--paste is a fraction of the pictures, from 0 to 1; got {paste}")
    rules = get_rules(rules)
    out = output_folder(output_dir, "config.json", overwrite, holds="a model")

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    split_dir = ensure_world(str(split), str(data_dir))
    views = [(str(Path(data_dir) / image_file), view) for image_file, view in split_views(split_dir, rules=rules)]
    if not views:
        fail(f"no pictures in {split_dir}")
    paths = [p for p, _ in views]
    pictures = PictureCache(paths, desc=str(split))
    tokenizer = build_tokenizer()
    model = KartVLMForConditionalGeneration(tiny_config(len(tokenizer)))
    settings = {"split": str(split), "rules": rules.name, "num_samples": len(views), "vision_steps": vision_steps, "max_steps": max_steps,
                "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                "threads": torch.get_num_threads(), "vision_targets": "facts and kart maps"}
    if paste:  # only when on, so that the settings of earlier runs still match theirs
        settings["paste"] = paste
    # The vision stage does not depend on the description stage's length: a longer second stage reuses it.
    vision_settings = {k: v for k, v in settings.items() if k != "max_steps"}
    run, start = Path(run_dir), time.time()

    # Stage 1: the vision tower and a throwaway linear head learn the pictures' facts.
    plain_views = [v for _, v in views]
    facts = [view_facts(v) for v in plain_views]
    fact_targets = {name: torch.tensor([f[name] for f, _ in facts]) for name in FACT_CLASSES}  # (N,) each
    places = torch.tensor([p for _, p in facts])  # (N, karts, 2): each kart's side and depth class
    maps = [view_map(v, model.vision.grid) for v in plain_views]
    map_targets = torch.from_numpy(np.stack([m for m, _ in maps]))  # (N, karts, h, w) int8
    map_offsets = torch.from_numpy(np.stack([o for _, o in maps]))  # (N, karts, 2)
    del maps
    head = FactsHead(model.num_image_tokens, model.config.vision_channels[-1], len(KARTS))
    map_head = KartMapHead(model.config.vision_channels[-1], len(KARTS))
    vision_params = list(model.vision.parameters()) + list(head.parameters()) + list(map_head.parameters())
    opt = torch.optim.AdamW(vision_params, lr=learning_rate, weight_decay=0.01)
    step, losses = 0, []
    state = _resume(run / "vision.pt", vision_settings, resume)
    if state:
        model.vision.load_state_dict(state["vision"])
        head.load_state_dict(state["head"])
        map_head.load_state_dict(state["map_head"])
        opt.load_state_dict(state["optimizer"])
        step, losses = int(state["step"]), list(state["losses"])
    bar = tqdm(total=vision_steps, initial=step, desc="pretrain vision", unit="step")
    model.vision.train()
    while step < vision_steps:
        # One step, in the order of every training loop of the kit: learning rate, batch,
        # forward/backward, clip, step, log, checkpoint.
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, vision_steps, learning_rate, min(100, vision_steps // 10 + 1), final=0.1)
        # The batch depends only on (seed, step): a resumed run repeats nothing and skips nothing.
        rows = np.random.default_rng([seed, 1, step]).choice(len(views), batch_size, replace=False)
        batch, targets = pictures.batch([paths[i] for i in rows]), {n: t[rows] for n, t in fact_targets.items()}
        pasted = paste_backgrounds(plain_views, rows, np.random.default_rng([seed, 2, step]), paste) if paste else []
        if pasted:
            backgrounds = pictures.batch([paths[b] for _, b, _ in pasted])
            for (i, b, mask), background in zip(pasted, backgrounds, strict=True):
                batch[i] = torch.where(torch.from_numpy(mask), batch[i], background)
                targets["track"][i] = fact_targets["track"][b]
        tokens = model.vision(batch)
        logits, place_logits = head(tokens)
        loss = facts_loss(logits, place_logits, targets, places[rows])
        loss = loss + map_loss(map_head(tokens), map_targets[rows], map_offsets[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vision_params, 1.0)  # early steps of a fresh network spike
        opt.step()
        losses.append(float(loss))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if step % 200 == 0 or step == vision_steps:  # at most 200 steps are lost to an interruption
            save_state(run / "vision.pt", vision_settings, vision=model.vision.state_dict(), head=head.state_dict(),
                       map_head=map_head.state_dict(), optimizer=opt.state_dict(), step=step, losses=losses)
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
    state = _resume(run / "describe.pt", settings, resume)
    if state:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, losses = int(state["step"]), list(state["losses"])
    model.train()
    bar = tqdm(total=max_steps, initial=step, desc="pretrain descriptions", unit="step")
    while step < max_steps:
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, max_steps, learning_rate, 200, final=0.1)
        # The batch and the statement order depend only on (seed, step): resuming repeats nothing.
        rng = np.random.default_rng([seed, step])
        rows = rng.choice(len(views), batch_size, replace=False)
        targets = [" . ".join(statements[i][j] for j in rng.permutation(len(statements[i]))) for i in rows]
        ids, mask, labels = text_batch(tokenizer, [DESCRIBE_PROMPT] * batch_size, targets)
        vision = model.vision(features[rows], start=after)  # (B, N, C)
        loss = model(vision_features=vision, input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if step % 200 == 0 or step == max_steps:
            save_state(run / "describe.pt", settings, model=model.state_dict(), optimizer=opt.state_dict(), step=step,
                       losses=losses)
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




if __name__ == "__main__":
    fire.Fire({"pretrain": pretrain})
