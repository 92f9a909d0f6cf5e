"""Question-answer pairs about kart frames, from their info files alone.

The five question families of the original assignment, answered from the boxes, the kart
names and the track of each view, so real SuperTuxKart recordings work as well as the kart
world's. A question is asked only where a careful person could read its answer off the picture.

    python generate_qa.py generate --split train
    python generate_qa.py check --info_file data/valid/00000_info.json --view_index 0
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import fire
import numpy as np
from tqdm import tqdm

from worlds.kart import (
    BOX_WIDTH,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    check_info,
    covered_fraction,
    find_ego,
    kart_rows,
)

# The question templates: the one place that spells them. Families in the original's order.
FAMILIES = ("ego", "count", "track", "relative", "relative_count")
TEMPLATES = {
    "ego": "What kart is the ego car?",
    "count": "How many karts are there in the scenario?",
    "track": "What track is this?",
    "left_right": "Is {kart} to the left or right of the ego car?",
    "front_back": "Is {kart} in front of or behind the ego car?",
    "where": "Where is {kart} relative to the ego car?",
    "count_left": "How many karts are to the left of the ego car?",
    "count_right": "How many karts are to the right of the ego car?",
    "count_front": "How many karts are in front of the ego car?",
    "count_back": "How many karts are behind the ego car?",
}
TEMPLATE_FAMILY = {
    "ego": "ego", "count": "count", "track": "track",
    "left_right": "relative", "front_back": "relative", "where": "relative",
    "count_left": "relative_count", "count_right": "relative_count",
    "count_front": "relative_count", "count_back": "relative_count",
}
_TEMPLATE_PATTERNS = {t: re.compile("^" + re.escape(q).replace(re.escape("{kart}"), ".+") + "$") for t, q in TEMPLATES.items()}

# The two labelling rules. `kit` (the default) asks only what a careful person can read off the
# picture; `original` is the course's rule, which reproduces its grading files exactly.
MIN_BOX = 5.0  # boxes narrower or shorter than this (picture pixels) don't count, under both rules
MOSTLY_HIDDEN = 0.5  # kit: fraction of a box behind nearer boxes above which a kart is not asked about

SCALE = IMAGE_WIDTH / BOX_WIDTH  # box coordinates -> picture pixels (the same across and down)


@dataclass(frozen=True)
class Rules:
    """How a view's boxes become answers.

    side_margin, depth_margin: picture pixels a kart's centre must be to the side of (above or
    below) the ego's to count as left/right (in front/behind); closer is "unclear" and not asked.
    With 0 every kart is placed: right if its centre x is greater than the ego's, else left;
    in front if its centre y is smaller, else behind.
    ego: "anchor" (the box nearest to where the camera puts the followed kart, among all kart
    boxes) or "centre" (the box nearest to the picture's centre, among the counted ones).
    truncate: scale coordinates to the picture and truncate them to integers first.
    occlusion: mark karts mostly behind nearer ones as hidden (never asked about; they stop counts).
    drop_tiny: leave boxes under MIN_BOX out entirely, rather than keep them as "tiny" (a tiny kart
    is never counted, and under the kit's rule it stops the count questions of its view).
    zero_counts: ask "how many karts are to the left ..." also where the answer is 0.
    """

    name: str
    side_margin: float
    depth_margin: float
    ego: str
    truncate: bool
    occlusion: bool
    drop_tiny: bool
    zero_counts: bool


RULES = {
    "kit": Rules("kit", side_margin=6.0, depth_margin=4.0, ego="anchor", truncate=False, occlusion=True, drop_tiny=False,
                zero_counts=True),
    "original": Rules("original", side_margin=0.0, depth_margin=0.0, ego="centre", truncate=True, occlusion=False,
                      drop_tiny=True, zero_counts=False),
}


def get_rules(rules: Rules | str) -> Rules:
    """The rules of a --rules value (or RULES itself, already Rules), or a one-line error naming the choices."""
    if isinstance(rules, Rules):
        return rules
    if str(rules) not in RULES:
        raise SystemExit(f"error: --rules must be one of {', '.join(RULES)}, got {rules!r}")
    return RULES[str(rules)]


@dataclass
class SeenKart:
    kart_id: int
    name: str
    cx: float  # centre in picture pixels
    cy: float
    tiny: bool  # under MIN_BOX: not counted
    hidden: bool  # mostly behind nearer karts: never asked about


@dataclass
class View:
    track: str
    ego: SeenKart | None
    others: list[SeenKart]  # every detected kart but the ego, tiny and hidden ones included
    rules: Rules = RULES["kit"]
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # every kart box (x0, y0, x1, y1) in picture pixels as RULES read them, dropped ones too

    def side(self, kart: SeenKart) -> str | None:
        """"left" or "right" where the kart is clearly to one side of the ego, else None."""
        dx = kart.cx - self.ego.cx
        return None if abs(dx) < self.rules.side_margin else "right" if dx > 0 else "left"

    def depth(self, kart: SeenKart) -> str | None:
        """"front" or "back" where the kart is clearly ahead of or behind the ego, else None."""
        dy = kart.cy - self.ego.cy
        return None if abs(dy) < self.rules.depth_margin else "front" if dy < 0 else "back"


def _picture_box(row: list, rules: Rules) -> tuple[float, float, float, float]:
    box = [float(c) * SCALE for c in row[2:6]]
    return tuple(int(c) for c in box) if rules.truncate else tuple(box)


def read_view(info: dict, view_index: int, rules: Rules | str = "kit") -> View:
    """The karts of one view of an info file, with what can be told about each under RULES."""
    rules = get_rules(rules)
    rows = kart_rows(info["detections"][view_index])
    boxes = tuple(_picture_box(r, rules) for r in rows)
    seen = []
    for r, box in zip(rows, boxes, strict=True):
        tiny = box[2] - box[0] < MIN_BOX or box[3] - box[1] < MIN_BOX
        if tiny and rules.drop_tiny:
            continue
        hidden = False
        if rules.occlusion:
            nearer = [tuple(o[2:6]) for o in rows if o is not r and o[5] > r[5]]  # lower bottom edge = nearer
            hidden = covered_fraction(tuple(float(c) for c in r[2:6]), nearer) > MOSTLY_HIDDEN
        seen.append(SeenKart(kart_id=int(r[1]), name=info["karts"][int(r[1])], cx=(box[0] + box[2]) / 2,
                             cy=(box[1] + box[3]) / 2, tiny=tiny, hidden=hidden))
    if rules.ego == "anchor":
        ego_id = find_ego(rows)
        ego = next((k for k in seen if k.kart_id == ego_id), None)
    else:  # the first of the boxes nearest to the picture's centre
        centre = (IMAGE_WIDTH / 2, IMAGE_HEIGHT / 2)
        ego = min(seen, key=lambda k: (k.cx - centre[0]) ** 2 + (k.cy - centre[1]) ** 2) if seen else None
    return View(track=info["track"], ego=ego, others=[k for k in seen if k is not ego], rules=rules, boxes=boxes)


def view_questions(view: View) -> list[tuple[str, str, str]]:
    """Every (template, question, answer) that can be asked of this view."""
    ego = view.ego
    if ego is None:
        return []
    qa = [("ego", TEMPLATES["ego"], ego.name), ("track", TEMPLATES["track"], view.track)]
    counted = [k for k in view.others if not k.tiny]
    all_clear = all(not k.hidden for k in counted) and not ego.hidden
    if all_clear and not any(k.tiny for k in view.others):  # a kart too small to count: say nothing
        qa.append(("count", TEMPLATES["count"], str(len(counted) + 1)))
    for k in counted:
        if k.hidden:
            continue
        lr, fb = view.side(k), view.depth(k)
        if lr:
            qa.append(("left_right", TEMPLATES["left_right"].format(kart=k.name), lr))
        if fb:
            qa.append(("front_back", TEMPLATES["front_back"].format(kart=k.name), fb))
        if lr and fb:
            qa.append(("where", TEMPLATES["where"].format(kart=k.name), f"{fb} and {lr}"))
    if all_clear:
        sides = [view.side(k) for k in counted]
        depths = [view.depth(k) for k in counted]
        for template, places, place in (("count_left", sides, "left"), ("count_right", sides, "right"),
                                        ("count_front", depths, "front"), ("count_back", depths, "back")):
            n = places.count(place)
            if all(places) and (n or view.rules.zero_counts):
                qa.append((template, TEMPLATES[template], str(n)))
    return qa


def question_template(question: str) -> str | None:
    """The template a question was made from, or None for a question of no known template."""
    for name, pattern in _TEMPLATE_PATTERNS.items():
        if pattern.match(question.strip()):
            return name
    return None


def question_family(question: str) -> str:
    """The family of a question ("ego", "count", "track", "relative", "relative_count"), or "other"."""
    template = question_template(question)
    return TEMPLATE_FAMILY[template] if template else "other"


def info_files(split_dir: Path) -> list[Path]:
    return sorted(split_dir.glob("*_info.json"))


def image_name(info_path: Path, view_index: int) -> str:
    return info_path.name.replace("_info.json", f"_{view_index:02d}_im.jpg")


def read_info(path: Path) -> dict:
    """An info file's contents, checked (known rosters, kart ids in range); one line if not."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: cannot read {path} ({getattr(e, 'strerror', None) or e}); remake or remove it") from None
    check_info(info, path)
    return info


def split_views(split_dir: Path, desc: str | None = None, rules: Rules | str = "kit"):
    """(image_file, view) for every view of a split whose picture exists, with a progress bar;
    image_file is relative to the data dir ("<split>/<frame>_<view>_im.jpg")."""
    rules = get_rules(rules)
    for path in tqdm(info_files(split_dir), desc=desc or f"reading {split_dir.name}", unit="frame", disable=desc == ""):
        info = read_info(path)
        for v in range(len(info["detections"])):
            image = image_name(path, v)
            if (split_dir / image).exists():
                yield f"{split_dir.name}/{image}", read_view(info, v, rules)


def all_questions(split_dir: Path, rules: Rules | str = "kit") -> list[dict]:
    """Every askable question of a split, unbalanced, with its template."""
    return [{"image_file": image_file, "question": question, "answer": answer, "template": template}
            for image_file, view in split_views(split_dir, desc=f"questions {split_dir.name}", rules=rules)
            for template, question, answer in view_questions(view)]


def balance(pairs: list[dict], seed: int = 0) -> list[dict]:
    """Thin out the common answers and families so that none dominates.

    Within each template, an answer keeps at most 1.5x the median answer's count (two-answer
    templates are cut to an even split). Then each family keeps at most twice the smallest
    family's count, every answer of an oversized family cut by the same factor so the
    answers stay as balanced as they were. Order is kept; what to drop is a seeded choice."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)  # (template, answer) -> pair indices
    for i, p in enumerate(pairs):
        groups[(p["template"], p["answer"])].append(i)
    keep_n: dict[tuple[str, str], int] = {}
    for template in TEMPLATES:
        sizes = {key: len(idx) for key, idx in groups.items() if key[0] == template}
        if sizes:
            cap = min(sizes.values()) if len(sizes) == 2 else math.ceil(1.5 * float(np.median(list(sizes.values()))))
            keep_n.update({key: min(n, cap) for key, n in sizes.items()})
    family_n: dict[str, int] = defaultdict(int)
    for (template, _), n in keep_n.items():
        family_n[TEMPLATE_FAMILY[template]] += n
    family_cap = 2 * min(family_n.values()) if family_n else 0
    final: list[int] = []
    for key, idx in groups.items():
        n = keep_n[key]
        total = family_n[TEMPLATE_FAMILY[key[0]]]
        if total > family_cap:
            n = int(n * family_cap / total)
        final += idx if n >= len(idx) else list(rng.choice(idx, n, replace=False))
    return [{k: pairs[i][k] for k in ("image_file", "question", "answer")} for i in sorted(final)]


def distribution(pairs: list[dict]) -> dict:
    """Counts per family and per answer within each family."""
    fams: dict[str, Counter] = defaultdict(Counter)
    for p in pairs:
        fams[question_family(p["question"])][p["answer"]] += 1
    return {f: {"total": sum(c.values()), "answers": dict(c.most_common())} for f, c in sorted(fams.items())}


def ensure_world(split: str, data_dir: str) -> Path:
    """The split's folder, rendered first if it holds no frames and the split is a known one."""
    from worlds.kart import SPLIT_SEEDS
    from worlds.kart import generate as generate_world

    split_dir = Path(data_dir) / split
    if not info_files(split_dir):
        if split not in SPLIT_SEEDS:
            raise SystemExit(
                f"error: no frames in {split_dir}; make them with "
                f"`python -m worlds kart --split {split} --seed S --data_dir {data_dir}`")
        generate_world(split=split, data_dir=data_dir)
    return split_dir


def generate(split: str = "train", data_dir: str = "data", seed: int = 0, rules: str = "kit",
             balanced: bool = True) -> None:
    """Write the split's questions: DATA_DIR/SPLIT/balanced_qa_pairs.json (or all_qa_pairs.json).

    Args:
        split: split to make questions for (train, valid and train_demo are rendered first if missing).
        data_dir: root folder of the data.
        seed: seed of the balancing's choice of what to drop.
        rules: "kit" (ask only what can clearly be seen) or "original" (the course's rule, which
            reproduces its grading files).
        balanced: thin out common answers and families (balanced_qa_pairs.json); with false, every
            question the rule asks of every view (all_qa_pairs.json).
    """
    from homework.cli_checks import check_bool
    from worlds import check_split_name

    split, data_dir, rules = check_split_name(str(split)), str(data_dir), get_rules(rules)
    balanced = check_bool("balanced", balanced)
    split_dir = ensure_world(split, data_dir)
    pairs = all_questions(split_dir, rules)
    if balanced:
        pairs = balance(pairs, seed=seed)
    else:
        pairs = [{k: p[k] for k in ("image_file", "question", "answer")} for p in pairs]
    name = "balanced" if balanced else "all"
    out = split_dir / f"{name}_qa_pairs.json"
    try:
        out.write_text(json.dumps(pairs, indent=1))
        dist = distribution(pairs)
        (split_dir / f"{name}_qa_stats.json").write_text(json.dumps(dist, indent=1))
    except OSError as e:
        raise SystemExit(f"error: cannot write {out} ({e.strerror}); pass a writable --data_dir") from None
    print(f"wrote {len(pairs)} question-answer pairs ({rules.name} rules) to {out}")
    others = [f.name for f in split_dir.glob("*_qa_pairs.json") if f != out]
    if others:
        print(f"note: {split_dir} also holds {', '.join(sorted(others)[:3])}; the datasets read every *_qa_pairs.json "
              "of a split, so remove the files you do not want read")
    for family, d in dist.items():
        top = ", ".join(f"{a}: {n}" for a, n in list(d["answers"].items())[:6])
        print(f"  {family:15s} {d['total']:7d}  ({100 * d['total'] / max(len(pairs), 1):4.1f}%)  {top}")


def load_info_view(path: Path, view_index: int) -> dict:
    """An info file's contents, after checking that it exists, can be read and has view VIEW_INDEX."""
    if not path.is_file():
        raise SystemExit(f"error: no info file at {path}; generate a split first (`python -m worlds kart --split valid`)")
    info = read_info(path)
    n = len(info["detections"])
    if not isinstance(view_index, int) or isinstance(view_index, bool) or not 0 <= view_index < n:
        raise SystemExit(f"error: --view_index {view_index!r} is out of range; {path.name} has views 0 to {n - 1}")
    return info


def check(info_file: str = "data/valid/00000_info.json", view_index: int = 0, output: str | None = None,
          rules: str = "kit") -> None:
    """Print one view's question-answer pairs and write a PNG of the view with its boxes.

    Args:
        info_file: a frame's info file.
        view_index: which view of the frame.
        output: PNG path (default: qa_check_<frame>_<view>.png in the current folder).
        rules: "kit" or "original" (see `generate`).
    """
    from PIL import Image

    from worlds.kart import draw_boxes

    rules = get_rules(rules)
    path = Path(str(info_file))
    info = load_info_view(path, view_index)
    image_path = path.parent / image_name(path, view_index)
    if not image_path.is_file():
        raise SystemExit(f"error: the view's picture {image_path} is missing")
    view = read_view(info, view_index, rules)
    print(f"{image_path}  track={view.track}  ego={view.ego.name if view.ego else None}  ({rules.name} rules)")
    for template, question, answer in view_questions(view):
        print(f"  [{TEMPLATE_FAMILY[template]}] {question} -> {answer}")
    try:
        img = Image.open(image_path).convert("RGB")
    except OSError as e:  # PIL's UnidentifiedImageError too
        raise SystemExit(f"error: cannot read the picture {image_path} ({e}); copy it again") from None
    sheet = draw_boxes(img, info["detections"][view_index], info["karts"], view.ego.kart_id if view.ego else None)
    out = Path(output) if output else Path(f"qa_check_{path.name.split('_')[0]}_{view_index:02d}.png")
    try:
        sheet.save(out)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot write {out} ({e}); pass another --output ending in .png") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    fire.Fire({"generate": generate, "check": check})
