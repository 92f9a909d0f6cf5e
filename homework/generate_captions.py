"""Captions and multiple-choice caption sets for kart frames, for the CLIP assignment.

Captions use the original assignment's templates and the same rules as the question-answer
pairs (see generate_qa.py): `--rules kit` (the default) says only what can be seen, and its
distractors are of the true caption's own template (the opposite relation first); `--rules
original` is the course's rule, whose distractors mix templates (other tracks, other egos, other
counts), as in the course's `valid_grader/all_mc_qas.json`.

    python -m homework.generate_captions generate --split train
    python -m homework.generate_captions generate --split valid --rules original
    python -m homework.generate_captions check --info_file data/valid/00000_info.json --view_index 0
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import fire
import numpy as np

from generate_qa import View, ensure_world, get_rules, image_name, load_info_view, read_view, split_views
from worlds.kart import KARTS, TRACKS

# The caption templates: the one place that spells them.
CAPTIONS = {
    "ego": "{kart} is the ego car.",
    "count": "There are {n} karts in the scene.",
    "track": "The track is {track}.",
    "front": "{kart} is in front of the ego car.",
    "back": "{kart} is behind the ego car.",
    "left": "{kart} is left of the ego car.",
    "right": "{kart} is right of the ego car.",
}
_CAPTION_PATTERNS = {t: re.compile("^" + re.escape(c).replace(re.escape("{kart}"), r"\S+")
                                    .replace(re.escape("{n}"), r"\d+").replace(re.escape("{track}"), r"\S+") + "$")
                     for t, c in CAPTIONS.items()}
RELATIONS = ("front", "back", "left", "right")
OPPOSITE = {"front": "back", "back": "front", "left": "right", "right": "left"}
NUM_CANDIDATES = 5


def caption_template(caption: str) -> str:
    """The template a caption was made from ("ego", "count", ..., "right"), or "other"."""
    return next((t for t, pattern in _CAPTION_PATTERNS.items() if pattern.match(caption.strip())), "other")


def view_captions(view: View) -> list[tuple[str, str]]:
    """Every true (template, caption) of a view."""
    ego = view.ego
    if ego is None:
        return []
    out = [("ego", CAPTIONS["ego"].format(kart=ego.name)), ("track", CAPTIONS["track"].format(track=view.track))]
    counted = [k for k in view.others if not k.tiny]
    if not ego.hidden and not any(k.hidden or k.tiny for k in view.others):
        out.append(("count", CAPTIONS["count"].format(n=len(counted) + 1)))
    for k in counted:
        if k.hidden:
            continue
        for rel in (view.depth(k), view.side(k)):
            if rel:
                out.append((rel, CAPTIONS[rel].format(kart=k.name)))
    return out


def _false_captions(view: View, template: str, true_caption: str, rng: np.random.Generator) -> list[str]:
    """Four captions of the same template that are false for this view."""
    ego = view.ego
    present = {k.name for k in view.others} | {ego.name}
    absent = [name for name in KARTS if name not in present]
    if template == "ego":
        pool = [CAPTIONS["ego"].format(kart=n) for n in KARTS if n != ego.name]
    elif template == "track":
        pool = [CAPTIONS["track"].format(track=t) for t in TRACKS if t != view.track]
    elif template == "count":
        n = int(true_caption.split()[2])
        nearest = sorted((m for m in range(1, n + 8) if m != n), key=lambda m: (abs(m - n), m))[:4]
        return [CAPTIONS["count"].format(n=m) for m in nearest]
    else:  # a relation: the opposite relation of the same kart, or any relation of an absent kart
        kart = true_caption.split(" is ")[0]
        seen = next(k for k in view.others if k.name == kart)
        true_rels = [r for r in (view.depth(seen), view.side(seen)) if r]  # a list: set order changes run to run
        pool = [CAPTIONS[OPPOSITE[r]].format(kart=kart) for r in true_rels]
        pool += [CAPTIONS[r].format(kart=n) for n in absent for r in RELATIONS]
    pool = [c for c in dict.fromkeys(pool) if c != true_caption]
    first = pool[:1] if template in RELATIONS else []  # keep the hardest distractor, the opposite
    rest = [pool[i] for i in rng.permutation(len(pool)) if pool[i] not in first]
    return (first + rest)[:NUM_CANDIDATES - 1]


MIXED_TEMPLATES = ("track", "ego", "count")  # what the course's distractors are made of
MAX_COUNT = 10  # the course's count distractors run from 0 to this


def _mixed_false_captions(view: View, true_captions: set[str], rng: np.random.Generator) -> list[str]:
    """Four false captions in the course's style: each of a template drawn at random among the
    track, the ego and the count, with a value drawn at random; never a caption true of the view."""
    out: list[str] = []
    while len(out) < NUM_CANDIDATES - 1:
        template = MIXED_TEMPLATES[int(rng.integers(len(MIXED_TEMPLATES)))]
        if template == "track":
            caption = CAPTIONS["track"].format(track=list(TRACKS)[int(rng.integers(len(TRACKS)))])
        elif template == "ego":
            caption = CAPTIONS["ego"].format(kart=list(KARTS)[int(rng.integers(len(KARTS)))])
        else:
            caption = CAPTIONS["count"].format(n=int(rng.integers(MAX_COUNT + 1)))
        if caption not in true_captions and caption not in out:
            out.append(caption)
    return out


def view_multiple_choice(view: View, rng: np.random.Generator) -> tuple[str, list[str], int] | None:
    """One multiple-choice set for a view: (template, candidates, index of the true one)."""
    captions = view_captions(view)
    if not captions:
        return None
    # Pick the template first, so each template gets its share whatever its caption count.
    templates = sorted({t for t, _ in captions}, key=list(CAPTIONS).index)
    template = templates[int(rng.integers(len(templates)))]
    options = [c for t, c in captions if t == template]
    true_caption = options[int(rng.integers(len(options)))]
    if view.rules.name == "original":
        false = _mixed_false_captions(view, {c for _, c in captions}, rng)
    else:
        false = _false_captions(view, template, true_caption, rng)
    candidates = [true_caption] + false
    order = rng.permutation(len(candidates))
    candidates = [candidates[i] for i in order]
    return template, candidates, int(np.flatnonzero(order == 0)[0])


def generate(split: str = "train", data_dir: str = "data", seed: int = 0, rules: str = "kit") -> None:
    """Write DATA_DIR/SPLIT/all_captions.json (every true caption of every view) and
    all_mc_qas.json (one multiple-choice set per view) from the split's info files.

    Args:
        split: split to caption (train, valid and train_demo are rendered first if missing).
        data_dir: root folder of the data.
        seed: seed of the multiple-choice sets' choices.
        rules: "kit" (say only what can clearly be seen) or "original" (the course's rule).
    """
    from worlds import check_split_name

    split, data_dir, rules = check_split_name(str(split)), str(data_dir), get_rules(rules)
    split_dir = ensure_world(split, data_dir)
    rng = np.random.default_rng(seed)
    captions, mcqs = [], []
    for image_file, view in split_views(split_dir, desc=f"captions {split}", rules=rules):
        captions += [{"image_file": image_file, "caption": c} for _, c in view_captions(view)]
        mc = view_multiple_choice(view, rng)
        if mc:
            mcqs.append({"image_file": image_file, "candidates": mc[1], "correct_index": mc[2], "template": mc[0]})
    try:
        (split_dir / "all_captions.json").write_text(json.dumps(captions, indent=1))
        (split_dir / "all_mc_qas.json").write_text(json.dumps(mcqs, indent=1))
    except OSError as e:
        raise SystemExit(f"error: cannot write to {split_dir} ({e.strerror}); pass a writable --data_dir") from None
    print(f"wrote {len(captions)} captions and {len(mcqs)} multiple-choice sets ({rules.name} rules) to {split_dir}")


def check(info_file: str = "data/valid/00000_info.json", view_index: int = 0, rules: str = "kit") -> None:
    """Print one view's true captions and a multiple-choice set.

    Args:
        info_file: a frame's info file.
        view_index: which view of the frame.
        rules: "kit" or "original" (see `generate`).
    """
    path = Path(str(info_file))
    view = read_view(load_info_view(path, view_index), view_index, get_rules(rules))
    print(f"{image_name(path, view_index)}: true captions")
    for template, caption in view_captions(view):
        print(f"  [{template}] {caption}")
    mc = view_multiple_choice(view, np.random.default_rng(view_index))
    if mc:
        print("multiple choice:")
        for i, c in enumerate(mc[1]):
            print(f"  {'*' if i == mc[2] else ' '} {c}")


if __name__ == "__main__":
    fire.Fire({"check": check, "generate": generate})
