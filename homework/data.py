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
    """The records of one JSON file of a split, made on the spot (world, then text) if missing."""

    file_name = ""  # the split's JSON file
    maker = ""  # the module whose generate(split=, data_dir=) writes it
    default_split = "train"

    def __init__(self, split: str | None = None, data_dir: str = "data", max_samples: int | None = None):
        self.data_dir = Path(data_dir)
        split = self.default_split if split is None else str(split)
        path = self.data_dir / split / self.file_name
        if not path.is_file():
            ensure_world(split, str(data_dir))
            # imported late: the makers import this module's users
            importlib.import_module(self.maker).generate(split=split, data_dir=str(data_dir))
        try:
            self.records = json.loads(path.read_text())[:max_samples]
        except json.JSONDecodeError as e:
            fail(f"{path} is not valid JSON ({e.msg}); delete it to have it made again")

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, record: dict) -> str:
        return str(self.data_dir / record["image_file"])


class VQADataset(SplitRecords):
    """Question-answer pairs of a split: `{"image_path", "question", "answer"}` items."""

    file_name, maker = "balanced_qa_pairs.json", "generate_qa"

    def __getitem__(self, i: int) -> dict:
        p = self.records[i]
        return {"image_path": self.image_path(p), "question": p["question"], "answer": p["answer"]}


class CaptionDataset(SplitRecords):
    """True captions of a split: `{"image_path", "caption"}` items."""

    file_name, maker = "all_captions.json", "homework.generate_captions"

    def __getitem__(self, i: int) -> dict:
        c = self.records[i]
        return {"image_path": self.image_path(c), "caption": c["caption"]}


class MultiChoiceQADataset(SplitRecords):
    """Multiple-choice caption sets: `{"image_path", "candidates", "correct_index", "template"}` items."""

    file_name, maker, default_split = "all_mc_qas.json", "homework.generate_captions", "valid"

    def __getitem__(self, i: int) -> dict:
        s = self.records[i]
        return {"image_path": self.image_path(s), "candidates": s["candidates"],
                "correct_index": int(s["correct_index"]), "template": s.get("template", "other")}


@dataclass
class BenchmarkResult:
    accuracy: float
    per_family: dict[str, float]  # accuracy per question family
    counts: dict[str, int]  # questions per family
    answers: list[dict] = field(default_factory=list)  # question, answer, prediction, correct

    def table(self) -> str:
        lines = [f"{'family':16s} {'n':>6s} {'accuracy':>9s}"]
        for f, acc in self.per_family.items():
            lines.append(f"{f:16s} {self.counts[f]:6d} {acc:9.4f}")
        lines.append(f"{'all':16s} {sum(self.counts.values()):6d} {self.accuracy:9.4f}")
        return "\n".join(lines)


def benchmark(model, dataset: VQADataset, max_samples: int | None = None, batch_size: int = 32,
              progress: bool = True) -> BenchmarkResult:
    """Ask `model.answer(images, questions)` every question of `dataset` (or the first
    `max_samples`) and score the answers after normalisation."""
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    answers = []
    for start in tqdm(range(0, n, batch_size), desc="benchmark", unit="batch", disable=not progress):
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        preds = model.answer([it["image_path"] for it in items], [it["question"] for it in items])
        for it, pred in zip(items, preds, strict=True):
            answers.append({"question": it["question"], "answer": it["answer"], "prediction": pred,
                            "correct": normalize_answer(pred) == normalize_answer(it["answer"])})
    totals, right = defaultdict(int), defaultdict(int)
    for a in answers:
        fam = question_family(a["question"])
        totals[fam] += 1
        right[fam] += a["correct"]
    order = [*FAMILIES, "other"]  # question_family's answer for a question of no template
    per_family = {f: right[f] / totals[f] for f in order if totals[f]}
    accuracy = sum(right.values()) / max(len(answers), 1)
    return BenchmarkResult(accuracy, per_family, {f: totals[f] for f in per_family}, answers)
