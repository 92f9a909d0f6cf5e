"""Datasets over the kart data, and the benchmark that scores a model on them.

Training code reads data only through this module. A split that is missing is made on the
spot (world, then questions or captions) with a progress bar.
"""

from __future__ import annotations

import importlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset
from tqdm import tqdm

from generate_qa import FAMILIES, ensure_world, question_family
from homework.cli_checks import fail

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
}


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, single spaces, number words as digits ("Three." -> "3")."""
    words = re.sub(r"[^\w\s]", " ", str(text).lower().replace("_", " ")).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words)


class SplitRecords(Dataset):
    """The records of a split's JSON files, made on the spot (world, then text) if there are none.

    A split's records are those of every file matching `pattern` (sorted by name; a record that
    two files give is kept once), so the course's own files work beside the kit's: `balanced_qa_pairs.json`
    and `all_qa_pairs.json` (`generate_qa.py`), one `<frame>_qa_pairs.json` per frame, the
    course's `valid_grader/` files (whose pictures are those of `valid/`), `example_captions.json`."""

    pattern = ""  # the split's JSON files
    maker = ""  # the module whose generate(split=, data_dir=) writes it
    default_split = "train"

    def __init__(self, split: str | None = None, data_dir: str = "data", max_samples: int | None = None,
                 spread: bool = False):
        """MAX_SAMPLES records: the first ones, or with SPREAD evenly spaced over the split (so that a
        small evaluation set sees every part of it: the files are in frame order)."""
        self.data_dir = Path(data_dir)
        split = self.default_split if split is None else str(split)
        folder = self.data_dir / split
        files = self.files(folder)
        if not files:
            ensure_world(split, str(data_dir))
            # imported late: the makers import this module's users
            importlib.import_module(self.maker).generate(split=split, data_dir=str(data_dir))
            files = self.files(folder)
        records = self.read(files[0])
        if len(files) > 1:  # the same record in two files (all_ and balanced_, say) is read once
            seen = {json.dumps(r, sort_keys=True) for r in records}
            for path in files[1:]:
                for r in self.read(path):
                    key = json.dumps(r, sort_keys=True)
                    if key not in seen:
                        seen.add(key)
                        records.append(r)
        if spread and max_samples is not None and 0 < max_samples < len(records):
            records = [records[i * len(records) // max_samples] for i in range(max_samples)]
        self.records = records[:max_samples]
        self.check_pictures(files)

    def files(self, folder: Path) -> list[Path]:
        return sorted(p for p in folder.glob(self.pattern) if p.is_file())

    def read(self, path: Path) -> list[dict]:
        try:
            records = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            fail(f"{path} is not valid JSON ({getattr(e, 'msg', e)}); delete it to have it made again")
        if not isinstance(records, list) or not all(isinstance(r, dict) and "image_file" in r for r in records):
            fail(f"{path} is not a list of records with an image_file each; delete or fix it")
        return records

    def check_pictures(self, files: list[Path]) -> None:
        """One line if pictures the records name are missing (the course's valid_grader names valid's)."""
        pictures = {r["image_file"] for r in self.records}
        missing = sorted(p for p in pictures if not (self.data_dir / p).is_file())
        if missing:
            fail(f"{len(missing)} of the {len(pictures)} pictures named by {', '.join(f.name for f in files)} are "
                 f"missing, e.g. {self.data_dir / missing[0]}; put those pictures under {self.data_dir} "
                 f"(valid_grader's questions name pictures of valid/)")

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, record: dict) -> str:
        return str(self.data_dir / record["image_file"])


class VQADataset(SplitRecords):
    """Question-answer pairs of a split: `{"image_path", "question", "answer"}` items."""

    pattern, maker = "*_qa_pairs.json", "generate_qa"

    def __getitem__(self, i: int) -> dict:
        p = self.records[i]
        return {"image_path": self.image_path(p), "question": p["question"], "answer": p["answer"]}


class CaptionDataset(SplitRecords):
    """True captions of a split: `{"image_path", "caption"}` items."""

    pattern, maker = "*_captions.json", "homework.generate_captions"

    def __getitem__(self, i: int) -> dict:
        c = self.records[i]
        return {"image_path": self.image_path(c), "caption": c["caption"]}


class MultiChoiceQADataset(SplitRecords):
    """Multiple-choice caption sets: `{"image_path", "candidates", "correct_index", "template"}` items."""

    pattern, maker, default_split = "*_mc_qas.json", "homework.generate_captions", "valid"

    def __getitem__(self, i: int) -> dict:
        s = self.records[i]
        return {"image_path": self.image_path(s), "candidates": s["candidates"],
                "correct_index": int(s["correct_index"]), "template": set_template(s)}


def course_match(prediction: str, answer: str) -> bool:
    """The course's matching: right when the prediction starts with the label (both stripped and
    lower-cased). More lenient than the kit's `normalize_answer` equality: "3 karts" counts for "3"."""
    return str(prediction).strip().lower().startswith(str(answer).strip().lower())


def set_template(mc_set: dict) -> str:
    """A multiple-choice set's template: as written, or (the course's sets name none) read off its true caption."""
    from homework.generate_captions import caption_template  # late: generate_captions imports generate_qa

    if "template" in mc_set:
        return mc_set["template"]
    return caption_template(mc_set["candidates"][int(mc_set["correct_index"])])


@dataclass
class BenchmarkResult:
    accuracy: float
    per_family: dict[str, float]  # accuracy per question family
    counts: dict[str, int]  # questions per family
    answers: list[dict] = field(default_factory=list)  # question, answer, prediction, correct, course_correct
    course_accuracy: float = 0.0  # under the course's matching (course_match)
    course_per_family: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        lines = [f"{'family':16s} {'n':>6s} {'accuracy':>9s} {'course':>7s}"]
        for f, acc in self.per_family.items():
            lines.append(f"{f:16s} {self.counts[f]:6d} {acc:9.4f} {self.course_per_family[f]:7.4f}")
        lines.append(f"{'all':16s} {sum(self.counts.values()):6d} {self.accuracy:9.4f} {self.course_accuracy:7.4f}")
        return "\n".join(lines)


def benchmark(model, dataset: VQADataset, max_samples: int | None = None, batch_size: int = 32,
              progress: bool = True) -> BenchmarkResult:
    """Ask `model.answer(images, questions)` every question of `dataset` (or the first
    `max_samples`) and score the answers after normalisation (and by the course's matching)."""
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    answers = []
    for start in tqdm(range(0, n, batch_size), desc="benchmark", unit="batch", disable=not progress):
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        preds = model.answer([it["image_path"] for it in items], [it["question"] for it in items])
        for it, pred in zip(items, preds, strict=True):
            answers.append({"question": it["question"], "answer": it["answer"], "prediction": pred,
                            "correct": normalize_answer(pred) == normalize_answer(it["answer"]),
                            "course_correct": course_match(pred, it["answer"])})
    totals, right, course_right = defaultdict(int), defaultdict(int), defaultdict(int)
    for a in answers:
        fam = question_family(a["question"])
        totals[fam] += 1
        right[fam] += a["correct"]
        course_right[fam] += a["course_correct"]
    order = [*FAMILIES, "other"]  # question_family's answer for a question of no template
    families = [f for f in order if totals[f]]
    n_answers = max(len(answers), 1)
    return BenchmarkResult(
        accuracy=sum(right.values()) / n_answers,
        per_family={f: right[f] / totals[f] for f in families},
        counts={f: totals[f] for f in families},
        answers=answers,
        course_accuracy=sum(course_right.values()) / n_answers,
        course_per_family={f: course_right[f] / totals[f] for f in families},
    )
