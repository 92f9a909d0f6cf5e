"""Held-out sets: generated from the grading seed with the kit's own worlds, cached by seed.

    CACHE/<seed>/             (CACHE/<seed>-<size>/ for the quick and tiny sizes)
      kart/world/heldout/     kart frames, info files, QA pairs and caption sets (labels!)
      kart/vlm/inputs/        questions.json + images/        what the VLM child sees
      kart/vlm/labels.json    the answers and question families
      kart/clip/inputs/       sets.json (image, candidates) + images/
      kart/clip/labels.json   the index of the true caption, and its template
      shapes/world/           the cubes-and-spheres dataset (its folders name the classes)
      shapes/inputs/          rgb.npy, ranges.npy in a shuffled order
      shapes/labels.json      0 cube, 1 sphere, in that order
      balls/world/            probe_train/ and probe_test/ ball videos with their counts
      balls/inputs/videos.npy probe-train videos, then probe-test videos
      balls/labels.json       ball counts and how many videos are probe-train
      robot/inputs/           episodes.npz (signals only), queries.npz (the first episodes re-rendered
                              with new noise), anomalies.npz (normal, fault, collision, swap, shuffled)
      robot/labels.json       material and outcome per episode, anomaly kind per anomaly episode

With `--kart_data DIR` the VLM and CLIP parts come instead from a folder the instructor gives
(the course's `valid_grader/`, or any real held-out split): its `*_qa_pairs.json` and
`*_mc_qas.json`, whose `image_file`s are relative to DIR's parent, as in the course's data:

      CACHE/folders/<digest>/vlm/ and clip/   the same inputs and labels, made from DIR's files

Each part is made once per seed and size, under a lock, and marked complete by `done.json`
only when it is whole; a part without it is made again. The world seeds are derived from the
grading seed by hashing, and are never one of the seeds the kit trains on.

The cache is the grader's alone: made read-only once written (and, for a root grader, owned by
a uid no process runs as, so that not even a capability-less root child can open it), and
`done.json` records a digest of what grading reads (each part's inputs and labels), checked
before each assignment is graded and again after its child has run. `export()` copies those
files, without the seed, to a folder that `open_folder()` grades from (the Gradescope zip's).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from grader import rubric

VERSION = 1
PARTS = {"vlm": "kart", "clip": "kart", "fusion": "shapes", "cilp": "shapes", "simclr": "balls", "robot": "robot"}
GRADED = {"kart": ("vlm", "clip"), "shapes": ("inputs", "labels.json"), "balls": ("inputs", "labels.json"),
          "robot": ("inputs", "labels.json")}
CACHE_OWNER_UID = 2_999_999  # a root grader's cache belongs to this uid, which no process runs as
KART_VIEWS = 10  # views per frame, as in the kit's training splits
KART_SPLIT = "heldout"


def training_seeds() -> set[int]:
    """Every world seed the kit's own splits use; a held-out seed is never one of them."""
    from worlds import balls, kart, robot

    return set(kart.SPLIT_SEEDS.values()) | set(balls.SPLIT_SEEDS.values()) | set(robot.SPLIT_SEEDS.values()) | {0}


def derived_seed(seed: int, name: str) -> int:
    """A world seed for one part of the held-out data, from the grading seed."""
    avoid = training_seeds()
    salt = 0
    while True:
        digest = hashlib.sha256(f"kart-kit-grader/{seed}/{name}/{salt}".encode()).digest()
        value = int.from_bytes(digest[:4], "big") % 2_000_000_000
        if value not in avoid:
            return value
        salt += 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kart-kit-grader"


def parse_seed(value) -> int:
    """A grading seed from --seed or GRADER_SEED: a non-negative integer below 2**63."""
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) >= 2**63:
        shown = repr(value) if len(str(value)) <= 40 else repr(str(value)[:40]) + "..."
        raise SystemExit(f"error: the grading seed must be a non-negative integer below 2**63, got {shown}")
    return int(text)


class HeldoutError(Exception):
    """The held-out sets are missing, damaged or changed; one line saying which."""


def digest(part: Path) -> str:
    """sha256 of every file grading reads in PART (names, sizes and bytes), in a fixed order."""
    h = hashlib.sha256()
    files = []
    for entry in GRADED[part.name]:
        top = part / entry
        files += [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
    if not files:
        raise HeldoutError(f"the held-out {part.name} set has none of its files")
    for f in files:
        rel = f.relative_to(part).as_posix()
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as src:
            while chunk := src.read(2**20):
                h.update(chunk)
    return h.hexdigest()


def _seal(path: Path) -> None:
    """Make PATH and everything under it read-only (files 0444, folders 0555)."""
    for dirpath, _dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444, follow_symlinks=False)
        os.chmod(dirpath, 0o555)


def _unseal_and_remove(path: Path) -> None:
    if not path.exists():
        return
    for dirpath, _, _ in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path)


def _protect(folder: Path) -> None:
    """The cache's seed folder: private to the grader, and for a root grader owned by a uid that
    no child has, since a child that is uid 0 without capabilities would still be its owner."""
    folder.chmod(0o700)
    if os.geteuid() == 0:
        os.chown(folder, CACHE_OWNER_UID, CACHE_OWNER_UID)


@dataclass
class Heldout:
    """One seed's held-out sets on disk."""

    root: Path
    seed: int | None  # None for sets opened from an exported folder: the seed stays with the instructor
    size: str
    kart_root: Path | None = None  # the VLM and CLIP sets made from an instructor's folder, if one was given

    def __post_init__(self) -> None:
        self._labels: dict[str, dict] = {}
        self._digests: dict[str, str] = {}  # read once: a child that rewrote done.json changes nothing here

    @property
    def sizes(self) -> rubric.HeldoutSizes:
        return rubric.HELDOUT_SIZES[self.size]

    def part(self, assignment: str) -> Path:
        if PARTS[assignment] == "kart" and self.kart_root is not None:
            return self.kart_root
        return self.root / PARTS[assignment]

    def inputs(self, assignment: str) -> Path:
        """The folder whose copy the assignment's child gets: inputs, never labels."""
        part = self.part(assignment)
        return part / assignment / "inputs" if PARTS[assignment] == "kart" else part / "inputs"

    def labels(self, assignment: str) -> dict:
        """The assignment's labels, read once (before its child runs) and kept in memory."""
        if assignment not in self._labels:
            part = self.part(assignment)
            path = part / assignment / "labels.json" if PARTS[assignment] == "kart" else part / "labels.json"
            self._labels[assignment] = json.loads(path.read_text())
        return self._labels[assignment]

    def expected_digest(self, assignment: str) -> str:
        part = PARTS[assignment]
        if part not in self._digests:
            try:
                self._digests[part] = str(json.loads((self.part(assignment) / "done.json").read_text())["digest"])
            except (OSError, ValueError, KeyError, TypeError):
                raise HeldoutError(f"the held-out {part} set has no valid done.json; make it again "
                                   "(`python -m grader heldout`)") from None
        return self._digests[part]

    def verify(self, assignment: str) -> None:
        """HeldoutError unless the assignment's inputs and labels are what was generated."""
        expected = self.expected_digest(assignment)
        try:
            actual = digest(self.part(assignment))
        except OSError as e:
            raise HeldoutError(f"the held-out {PARTS[assignment]} set cannot be read ({e.strerror})") from None
        if actual != expected:
            raise HeldoutError(f"the held-out {PARTS[assignment]} set changed since it was made (its digest differs)")


# ----------------------------------------------------------------------------------------------
# Generation: one function per world, each runnable in its own process
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Swallow the worlds' prints and progress bars (they go to stdout and stderr)."""
    if not enabled:
        yield
        return
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def _make_kart(part: str, seed: int, frames: int, quiet: bool) -> None:
    from generate_qa import generate as generate_qa
    from homework.generate_captions import generate as generate_captions
    from worlds.kart import generate as generate_world

    world = str(Path(part) / "world")
    with _quiet(quiet):
        generate_world(split=KART_SPLIT, num_frames=frames, seed=derived_seed(seed, "kart"), data_dir=world,
                       num_views=KART_VIEWS, workers=1, overwrite=True)
        generate_qa(split=KART_SPLIT, data_dir=world, seed=derived_seed(seed, "kart-balance"))
        generate_captions(split=KART_SPLIT, data_dir=world, seed=derived_seed(seed, "kart-captions"))


def _make_shapes(part: str, seed: int, per_class: int, quiet: bool) -> None:
    from worlds.shapes import make_dataset

    with _quiet(quiet):
        make_dataset(num_samples=per_class, seed=derived_seed(seed, "shapes"), data_dir=str(Path(part) / "world"),
                     workers=1, overwrite=True, quiet=True)


def _make_balls(part: str, seed: int, split: str, num_videos: int, quiet: bool) -> None:
    from worlds.balls import generate

    with _quiet(quiet):
        generate(split=split, num_videos=num_videos, seed=derived_seed(seed, f"balls-{split}"),
                 data_dir=str(Path(part) / "world"), overwrite=True)


def _copy_images(world: Path, files: list[str], inputs: Path) -> list[str]:
    """Copy the pictures into INPUTS/images; their names inside the inputs."""
    (inputs / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for f in files:
        name = f"images/{Path(f).name}"
        if not (inputs / name).exists():
            shutil.copyfile(world / f, inputs / name)
        names.append(name)
    return names


def _finish_kart(part: Path, seed: int, sizes: rubric.HeldoutSizes, world: Path | None = None,
                 pairs: list[dict] | None = None, sets: list[dict] | None = None) -> None:
    """The VLM's and CLIP's inputs and labels, sampled from PAIRS and SETS (by default the rendered
    world's files) with pictures relative to WORLD."""
    from generate_qa import question_family

    world = world or part / "world"
    if pairs is None:
        pairs = json.loads((world / KART_SPLIT / "balanced_qa_pairs.json").read_text())
        sets = json.loads((world / KART_SPLIT / "all_mc_qas.json").read_text())
    if pairs:
        _finish_vlm(part, seed, sizes, world, pairs, question_family)
    if sets:
        _finish_clip(part, seed, sizes, world, sets)


def _finish_vlm(part: Path, seed: int, sizes: rubric.HeldoutSizes, world: Path, pairs: list[dict],
                question_family) -> None:
    rng = np.random.default_rng(derived_seed(seed, "vlm-sample"))
    pick = sorted(rng.choice(len(pairs), min(sizes.vlm_questions, len(pairs)), replace=False).tolist())
    pairs = [pairs[i] for i in pick]
    inputs = part / "vlm" / "inputs"
    images = _copy_images(world, [p["image_file"] for p in pairs], inputs)
    (inputs / "questions.json").write_text(json.dumps(
        [{"image": im, "question": p["question"]} for im, p in zip(images, pairs, strict=True)], indent=1))
    (part / "vlm" / "labels.json").write_text(json.dumps(
        {"answers": [p["answer"] for p in pairs], "families": [question_family(p["question"]) for p in pairs],
         "questions": [p["question"] for p in pairs]}, indent=1))


def _finish_clip(part: Path, seed: int, sizes: rubric.HeldoutSizes, world: Path, sets: list[dict]) -> None:
    from homework.data import set_template

    rng = np.random.default_rng(derived_seed(seed, "clip-sample"))
    pick = sorted(rng.choice(len(sets), min(sizes.clip_sets, len(sets)), replace=False).tolist())
    sets = [sets[i] for i in pick]
    inputs = part / "clip" / "inputs"
    images = _copy_images(world, [s["image_file"] for s in sets], inputs)
    (inputs / "sets.json").write_text(json.dumps(
        [{"image": im, "candidates": s["candidates"]} for im, s in zip(images, sets, strict=True)], indent=1))
    (part / "clip" / "labels.json").write_text(json.dumps(
        {"correct": [int(s["correct_index"]) for s in sets], "templates": [set_template(s) for s in sets]},
        indent=1))


def _finish_shapes(part: Path, seed: int) -> None:
    from worlds import shapes

    world = part / "world"
    ids = json.loads((world / "splits.json").read_text())
    ids = sorted(ids["train"] + ids["val"])
    order = np.random.default_rng(derived_seed(seed, "shapes-order")).permutation(len(ids))
    pairs = [shapes.load_pair(world, ids[i]) for i in order]
    inputs = part / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    np.save(inputs / "rgb.npy", np.stack([p[0] for p in pairs]).astype(np.uint8), allow_pickle=False)
    np.save(inputs / "ranges.npy", np.stack([p[1] for p in pairs]).astype(np.float32), allow_pickle=False)
    labels = [shapes.CLASSES.index(ids[i].split("/")[0]) for i in order]
    (part / "labels.json").write_text(json.dumps({"labels": labels, "classes": list(shapes.CLASSES)}))


def _finish_balls(part: Path) -> None:
    from worlds import balls

    train = balls.load_split("probe_train", str(part / "world"))
    test = balls.load_split("probe_test", str(part / "world"))
    inputs = part / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    np.save(inputs / "videos.npy", np.concatenate([train["videos"], test["videos"]]).astype(np.uint8),
            allow_pickle=False)
    counts = np.concatenate([train["num_balls"], test["num_balls"]]).astype(int).tolist()
    (part / "labels.json").write_text(json.dumps({"num_balls": counts, "num_train": len(train["num_balls"])}))


def _make_robot(part: str, seed: int, sizes: rubric.HeldoutSizes, quiet: bool) -> None:
    """The robot set: episodes of unseen objects and an unseen operator (split "heldout"), the first
    of them re-rendered with new noise, and an anomaly set shuffled; signals in inputs/, labels apart."""
    from worlds import robot

    with _quiet(quiet):
        episodes = robot.render_split(derived_seed(seed, "robot"), sizes.robot_episodes, "heldout")
        queries = robot.render_split(derived_seed(seed, "robot"), sizes.robot_queries, "heldout", noise=1)
        anomalies = robot.anomaly_set(derived_seed(seed, "robot-anomalies"), sizes.robot_anomalies)
    order = np.random.default_rng(derived_seed(seed, "robot-order")).permutation(len(anomalies["anomaly"]))
    inputs = Path(part) / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for name, data, index in (("episodes", episodes, slice(None)), ("queries", queries, slice(None)),
                              ("anomalies", anomalies, order)):
        np.savez(inputs / f"{name}.npz", **{k: data[k][index] for k in robot.SIGNALS})
    labels = {"material": episodes["material"].tolist(), "outcome": episodes["outcome"].tolist(),
              "anomaly": anomalies["anomaly"][order].tolist(), "anomaly_detail": anomalies["anomaly_detail"][order].tolist(),
              "kinds": list(robot.ANOMALIES), "num_queries": sizes.robot_queries}
    (Path(part) / "labels.json").write_text(json.dumps(labels))


def _record(seed: int, size: str, part: str) -> dict:
    names = {"kart": ["kart", "kart-balance", "kart-captions", "vlm-sample", "clip-sample"],
             "shapes": ["shapes", "shapes-order"], "balls": ["balls-probe_train", "balls-probe_test"],
             "robot": ["robot", "robot-anomalies", "robot-order"]}[part]
    return {"version": VERSION, "seed": seed, "size": size, "sizes": asdict(rubric.HELDOUT_SIZES[size]),
            "world_seeds": {n: derived_seed(seed, n) for n in names}}


def _folder_records(folder: Path, assignments: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """The questions and multiple-choice sets of an instructor's folder, read by the kit's own
    loaders (every *_qa_pairs.json and *_mc_qas.json); one line if they or their pictures are not there."""
    from homework.data import MultiChoiceQADataset, VQADataset

    if not folder.is_dir():
        raise SystemExit(f"error: --kart_data {folder} is not a folder; give a split folder such as data/valid_grader")
    out = {"vlm": [], "clip": []}
    for name, dataset in (("vlm", VQADataset), ("clip", MultiChoiceQADataset)):
        if name not in assignments:
            continue
        if not dataset.files(dataset, folder):
            raise SystemExit(f"error: --kart_data {folder} has no {dataset.pattern} for the {name} part; add one, "
                             f"or grade --only the other parts")
        out[name] = dataset(folder.name, data_dir=str(folder.parent)).records
    return out["vlm"], out["clip"]


def prepare_folder(folder: str | Path, seed: int, size: str, root: Path, assignments: tuple[str, ...], log=print) -> Path:
    """The VLM and CLIP held-out inputs and labels made from an instructor's folder (sampled down
    to the size's counts with the grading seed where it holds more), cached by the digest of its
    records and sealed like a generated part; returns the part (its vlm/ and clip/)."""
    folder = Path(folder).resolve()
    pairs, sets = _folder_records(folder, assignments)
    key = hashlib.sha256(json.dumps([VERSION, seed, size, str(folder), pairs, sets], sort_keys=True).encode())
    (root / "folders").mkdir(exist_ok=True)
    _protect(root / "folders")  # the labels are here: not for other users of the machine, nor for any child
    part = root / "folders" / key.hexdigest()[:24] / "kart"  # named "kart": what grading reads of it is a kart part's
    record = {"version": VERSION, "folder": str(folder), "seed": seed, "size": size, "questions": len(pairs),
              "sets": len(sets)}
    if not _is_done(part, record):
        _unseal_and_remove(part.parent)
        part.mkdir(parents=True)
        _finish_kart(part, seed, rubric.HELDOUT_SIZES[size], world=folder.parent, pairs=pairs, sets=sets)
        for name in GRADED["kart"]:  # a part graded --only vlm has no clip/: the digest reads what is there
            (part / name).mkdir(exist_ok=True)
        (part / "done.json").write_text(json.dumps({**record, "digest": digest(part)}, indent=1))
        _seal(part)
    log(f"VLM and CLIP graded on {folder} ({len(pairs)} questions, {len(sets)} multiple-choice sets in it)")
    return part


def prepare(seed: int, size: str = "full", cache_dir: str | Path | None = None,
            assignments: tuple[str, ...] = tuple(PARTS), workers: int | None = None, verbose: bool = False,
            log=print, kart_data: str | Path | None = None) -> Heldout:
    """The held-out sets of ASSIGNMENTS for SEED, generated (in up to WORKERS processes) if they
    are not cached yet; with KART_DATA, the VLM's and CLIP's come from that folder instead."""
    if size not in rubric.HELDOUT_SIZES:
        raise SystemExit(f"error: --size must be one of {', '.join(rubric.HELDOUT_SIZES)}, got {size!r}")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    check_cache_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    here = root / (str(seed) if size == "full" else f"{seed}-{size}")
    here.mkdir(exist_ok=True)
    _protect(here)  # the labels are here: not for other users of the machine, nor for any child
    heldout = Heldout(here, seed, size)
    if kart_data is not None and {"vlm", "clip"} & set(assignments):
        with open(root / ".folders.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            heldout.kart_root = prepare_folder(kart_data, seed, size, root, assignments, log)
        assignments = tuple(a for a in assignments if PARTS[a] != "kart")
    parts = sorted({PARTS[a] for a in assignments})
    with open(root / f".{here.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = []
        for part in parts:
            if _is_done(here / part, _record(seed, size, part)):
                continue
            _unseal_and_remove(here / part)
            (here / part).mkdir()
            todo.append(part)
        if todo:
            _generate(heldout, todo, workers, verbose, log)
    return heldout


def check_cache_dir(root: Path) -> None:
    """One line unless ROOT can be the cache: a folder, or a path whose first existing ancestor is one."""
    if root.exists() and not root.is_dir():
        raise SystemExit(f"error: --cache_dir {root} is a file; name a folder for the held-out sets")
    for parent in root.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SystemExit(f"error: --cache_dir {root}: {parent} is a file, not a folder")
            break


def _is_done(part: Path, record: dict) -> bool:
    """Whether PART is whole, of this record, and undamaged."""
    try:
        done = json.loads((part / "done.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(done, dict) or {k: v for k, v in done.items() if k != "digest"} != record:
        return False
    try:
        return done.get("digest") == digest(part)
    except (OSError, HeldoutError):
        return False


def export(held: Heldout, dest: Path, assignments: tuple[str, ...]) -> None:
    """Copy what grading reads of ASSIGNMENTS' parts into DEST, with a done.json that names no seed."""
    for assignment in {PARTS[a]: a for a in assignments}.values():  # one assignment of each part
        part, src = PARTS[assignment], held.part(assignment)  # an instructor's kart folder, where one was given
        for entry in GRADED[part]:
            if (src / entry).is_dir():
                shutil.copytree(src / entry, dest / part / entry)
            else:
                (dest / part).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / entry, dest / part / entry)
        record = {"version": VERSION, "size": held.size, "sizes": asdict(rubric.HELDOUT_SIZES[held.size]),
                  "digest": digest(dest / part)}
        (dest / part / "done.json").write_text(json.dumps(record, indent=1))


def open_folder(folder: str | Path, assignments: tuple[str, ...]) -> Heldout:
    """Held-out sets exported ahead (`export()`), checked; HeldoutError with one line otherwise."""
    folder = Path(folder)
    size = None
    for part in sorted({PARTS[a] for a in assignments}):
        try:
            done = json.loads((folder / part / "done.json").read_text())
            size = done["size"]
        except (OSError, ValueError, KeyError, TypeError):
            raise HeldoutError(f"{folder} holds no exported {part} set (no valid {part}/done.json)") from None
        if size not in rubric.HELDOUT_SIZES or done.get("version") != VERSION:
            raise HeldoutError(f"{folder}/{part} was exported by another version of the grader; export it again")
    held = Heldout(folder, None, size or "full")
    for a in assignments:
        held.verify(a)
    return held


def _generate(heldout: Heldout, parts: list[str], workers: int | None, verbose: bool, log) -> None:
    seed, sizes, started = heldout.seed, heldout.sizes, time.time()
    log(f"generating held-out data for seed {seed} ({', '.join(parts)}; {heldout.size} size, first time "
        f"only) in {heldout.root}")
    jobs = []  # slowest first, so that two workers finish together
    if "balls" in parts:
        part = str(heldout.root / "balls")
        jobs += [(_make_balls, part, seed, "probe_train", sizes.balls_train, not verbose),
                 (_make_balls, part, seed, "probe_test", sizes.balls_test, not verbose)]
    if "kart" in parts:
        jobs.append((_make_kart, str(heldout.root / "kart"), seed, sizes.kart_frames, not verbose))
    if "shapes" in parts:
        jobs.append((_make_shapes, str(heldout.root / "shapes"), seed, sizes.shapes_per_class, not verbose))
    if "robot" in parts:
        jobs.append((_make_robot, str(heldout.root / "robot"), seed, sizes, not verbose))
    if workers is None:  # separate processes pay for their start-up only on the larger sets
        workers = 1 if heldout.size == "tiny" else min(2, os.cpu_count() or 1)
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        for fn, *args in jobs:
            fn(*args)
    else:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in [pool.submit(fn, *args) for fn, *args in jobs]:
                future.result()
    if "kart" in parts:
        _finish_kart(heldout.root / "kart", seed, sizes)
    if "shapes" in parts:
        _finish_shapes(heldout.root / "shapes", seed)
    if "balls" in parts:
        _finish_balls(heldout.root / "balls")
    for part in parts:
        record = {**_record(seed, heldout.size, part), "digest": digest(heldout.root / part)}
        (heldout.root / part / "done.json").write_text(json.dumps(record, indent=1))
        _seal(heldout.root / part)
    log(f"held-out data ready in {time.time() - started:.0f} s")
