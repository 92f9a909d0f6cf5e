"""The assignments and their cases.

An `Assignment` says what its child process is given (held-out inputs without labels), how the
grader reads the child's answers, and how it scores them; each of its cases is a method marked
`@case(threshold)` whose docstring names it and which returns the accuracy the threshold turns
into points. A case's timeout (its assignment's, from rubric.TIMEOUT_S, unless given) stops the
child that answers for it. Every metric is computed here, in the grader's process, from the
answers file alone: the child's prints and exit code score nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grader import rubric
from grader.heldout import Heldout

# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------


def case(threshold: rubric.Threshold, timeout: float | None = None):
    """Mark an Assignment method as a case worth THRESHOLD; its docstring's first line names it."""
    def mark(method):
        method.threshold = threshold
        method.timeout = timeout
        return method
    return mark


@dataclass
class Evaluation:
    """What the grader makes of one assignment's answers."""

    accuracy: float
    count: int  # answers scored
    table: list[tuple[str, int, float]]  # (group, count, accuracy): question family, template, class...
    group_name: str  # what the table's rows are ("family", "template", ...)


class AnswersError(Exception):
    """The child's answers file is missing, unreadable or malformed."""


def read_out_file(sandbox: Path, name: str, limit_bytes: int = rubric.ANSWERS_MAX_MB * 2**20) -> bytes:
    """The bytes of SANDBOX/out/NAME, if it is a plain file (no link) of at most LIMIT_BYTES."""
    try:
        out_fd = os.open(sandbox / "out", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise AnswersError("its out/ folder is gone or was replaced by a link") from None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=out_fd)
    except FileNotFoundError:
        raise AnswersError(f"it wrote no {name}") from None
    except OSError as e:
        raise AnswersError(f"its {name} cannot be opened ({e.strerror}); is it a link?") from None
    finally:
        os.close(out_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise AnswersError(f"its {name} is not a plain file")
        if info.st_size > limit_bytes:
            raise AnswersError(f"its {name} is {info.st_size / 2**20:.1f} MB, over the "
                               f"{limit_bytes / 2**20:.1f} MB this assignment's answers can take")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read(limit_bytes + 1)[:limit_bytes]
    finally:
        if fd >= 0:
            os.close(fd)


def _no_constants(name: str):
    raise ValueError(f"{name} is not standard JSON")


def read_out_json(sandbox: Path, name: str, limit_bytes: int):
    """SANDBOX/out/NAME parsed as standard JSON (no NaN or Infinity), read only if at most LIMIT_BYTES."""
    data = read_out_file(sandbox, name, limit_bytes)
    try:
        return json.loads(data, parse_constant=_no_constants)
    except (ValueError, RecursionError) as e:
        raise AnswersError(f"its {name} is not valid JSON ({printable(str(e))[:80]})") from None


def answer_list(sandbox: Path, n: int) -> list:
    """The child's answers.json: a list of N answers, each a string, an integer or null. The file's
    size is bounded by N before it is parsed, so that parsing it costs the grader little memory."""
    answers = read_out_json(sandbox, "answers.json", 1024 + n * rubric.ANSWER_MAX_BYTES)
    if not isinstance(answers, list) or len(answers) != n:
        what = f"{len(answers)} answers" if isinstance(answers, list) else f"a {type(answers).__name__}"
        raise AnswersError(f"its answers.json holds {what}, not a list of {n}")
    if not all(a is None or isinstance(a, (str, int)) for a in answers):
        raise AnswersError("its answers.json holds something other than strings, integers and nulls")
    return answers


# ----------------------------------------------------------------------------------------------
# The child's own words: what a report may quote of them
# ----------------------------------------------------------------------------------------------


def printable(text: str) -> str:
    """TEXT without control characters (terminal escapes, newlines, bidirectional overrides...)."""
    return "".join(c if c == " " or unicodedata.category(c)[0] not in "CZ" else " " for c in str(text))


def submission_words(text, limit: int = rubric.CHILD_TEXT_CHARS) -> str:
    """Text from the child, fit to quote: one line, printable, at most LIMIT characters, in quotes
    that mark it as the submission's own words."""
    line = " ".join(printable(text).split())
    if len(line) > limit:
        line = line[:limit] + "..."
    return '"' + line.replace('"', "'") + '"'


def identifier(value, default: str) -> str:
    """VALUE if it looks like a Python (dotted) name, else DEFAULT: a name from the child, checked."""
    return value if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]{0,79}", value) else default


def finite_number(value, low: float, high: float) -> float | None:
    """VALUE if it is a finite number within [LOW, HIGH], else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and low <= value <= high else None


def table_from(groups: list[str], correct: list[bool], order: list[str] | None = None) -> list[tuple[str, int, float]]:
    totals, right = Counter(groups), Counter(g for g, c in zip(groups, correct, strict=True) if c)
    names = [g for g in (order or []) if g in totals] + sorted(g for g in totals if g not in (order or []))
    return [(g, totals[g], right[g] / totals[g]) for g in names]


# ----------------------------------------------------------------------------------------------
# Assignments
# ----------------------------------------------------------------------------------------------


class Assignment:
    name = ""  # vlm, clip, fusion, cilp, simclr, robot: the `load_<name>()` of homework/__init__.py
    title = ""
    modules: tuple[str, ...] = ()  # the submission's files whose stubs mean "not implemented yet"
    predict = ""  # the function the child calls after loading, for messages
    self_check = ""  # the command a student runs to see the same number on the validation split
    input_files: tuple[str, ...] | None = None  # files of the held-out inputs the child gets (None: all)
    needs_base_vlm = False  # the child needs the kit's data/base_vlm
    kit_data: tuple[str, ...] = ()  # other committed folders of the kit's data/ the child reads (its encoders)
    batch_size = 50  # inputs per call, where the interface takes lists

    def __init__(self, heldout: Heldout):
        self.heldout = heldout

    @classmethod
    def cases(cls) -> list:
        found = [getattr(cls, n) for n in dir(cls) if hasattr(getattr(cls, n), "threshold")]
        return sorted(found, key=lambda m: (m.threshold.extra_credit, m.__code__.co_firstlineno))

    @classmethod
    def case_name(cls, method) -> str:
        return (method.__doc__ or method.__name__).strip().splitlines()[0]

    @classmethod
    def timeout(cls) -> float:
        return max(m.timeout or rubric.TIMEOUT_S[cls.name] for m in cls.cases())

    def evaluate(self, sandbox: Path) -> Evaluation:
        """Read the child's answers from SANDBOX/out and score them against the labels."""
        raise NotImplementedError


class VLM(Assignment):
    name = "vlm"
    title = "VLM: questions about kart frames"
    modules = ("finetune.py",)
    predict = "answer()"
    self_check = "python -m homework.finetune test"
    needs_base_vlm = True

    def evaluate(self, sandbox: Path) -> Evaluation:
        from generate_qa import FAMILIES
        from homework.data import normalize_answer  # the grader's own copy of the kit, not the submission's

        labels = self.heldout.labels("vlm")
        answers = answer_list(sandbox, len(labels["answers"]))
        correct = [isinstance(a, str) and normalize_answer(a) == normalize_answer(t)
                   for a, t in zip(answers, labels["answers"], strict=True)]
        return Evaluation(float(np.mean(correct)), len(correct),
                          table_from(labels["families"], correct, list(FAMILIES)), "family")

    @case(rubric.VLM)
    def accuracy(self, ev: Evaluation) -> float:
        """VLM accuracy on held-out questions"""
        return ev.accuracy

    @case(rubric.VLM_EXTRA)
    def extra_credit(self, ev: Evaluation) -> float:
        """VLM extra credit"""
        return ev.accuracy


class CLIP(Assignment):
    name = "clip"
    title = "CLIP: the true caption among five"
    modules = ("clip.py",)
    predict = "homework.clip.predict()"
    self_check = "python -m homework.clip test"
    needs_base_vlm = True

    def evaluate(self, sandbox: Path) -> Evaluation:
        from homework.generate_captions import CAPTIONS

        labels = self.heldout.labels("clip")
        answers = answer_list(sandbox, len(labels["correct"]))
        correct = [isinstance(a, int) and not isinstance(a, bool) and a == t
                   for a, t in zip(answers, labels["correct"], strict=True)]
        return Evaluation(float(np.mean(correct)), len(correct),
                          table_from(labels["templates"], correct, list(CAPTIONS)), "template")

    @case(rubric.CLIP)
    def accuracy(self, ev: Evaluation) -> float:
        """CLIP multiple-choice accuracy on held-out frames"""
        return ev.accuracy

    @case(rubric.CLIP_EXTRA)
    def extra_credit(self, ev: Evaluation) -> float:
        """CLIP extra credit"""
        return ev.accuracy


class _Shapes(Assignment):
    def evaluate(self, sandbox: Path) -> Evaluation:
        labels = self.heldout.labels(self.name)
        answers = answer_list(sandbox, len(labels["labels"]))
        correct = [isinstance(a, int) and not isinstance(a, bool) and a == t
                   for a, t in zip(answers, labels["labels"], strict=True)]
        classes = [labels["classes"][t] for t in labels["labels"]]
        return Evaluation(float(np.mean(correct)), len(correct), table_from(classes, correct, labels["classes"]),
                          "class")


class Fusion(_Shapes):
    name = "fusion"
    title = "Fusion: cubes or spheres from RGB + LiDAR"
    modules = ("fusion.py",)
    predict = "homework.fusion.predict()"
    self_check = "python -m homework.fusion test"
    input_files = ("rgb.npy", "ranges.npy")

    @case(rubric.FUSION)
    def accuracy(self, ev: Evaluation) -> float:
        """Fusion accuracy on held-out cubes and spheres"""
        return ev.accuracy


class CILP(_Shapes):
    name = "cilp"
    title = "CILP: cubes or spheres from RGB alone"
    modules = ("cilp.py",)
    predict = "homework.cilp.predict()"
    self_check = "python -m homework.cilp test"
    input_files = ("rgb.npy",)

    @case(rubric.CILP)
    def accuracy(self, ev: Evaluation) -> float:
        """CILP RGB-only accuracy on held-out cubes and spheres"""
        return ev.accuracy


class SimCLR(Assignment):
    name = "simclr"
    title = "SimCLR: a linear probe counts the balls"
    modules = ("simclr.py",)
    predict = "homework.simclr.embed()"
    self_check = "python -m homework.simclr probe"
    max_features = 65536

    def evaluate(self, sandbox: Path) -> Evaluation:
        import io

        from grader.probe import probe_predictions

        labels = self.heldout.labels("simclr")
        counts, n_train = np.array(labels["num_balls"]), labels["num_train"]
        data = read_out_file(sandbox, "answers.npy")
        try:
            features = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:  # any malformed file is the submission's
            raise AnswersError(f"its features file cannot be read as a plain .npy array ({str(e)[:80]})") from None
        if features.ndim != 2 or len(features) != len(counts) or not 1 <= features.shape[1] <= self.max_features:
            raise AnswersError(f"embed() gave features of shape {features.shape}; expected ({len(counts)}, D) "
                               f"with D at most {self.max_features}")
        if features.dtype.kind not in "fiu":
            raise AnswersError(f"embed() gave features of dtype {features.dtype}, not numbers")
        features = features.astype(np.float64)
        if not np.isfinite(features).all():
            raise AnswersError("embed() gave features with NaN or infinite values")
        predicted = probe_predictions(features[:n_train], counts[:n_train] - 1, features[n_train:])
        truth = counts[n_train:] - 1
        correct = (predicted == truth).tolist()
        groups = [f"{c} ball{'s' if c > 1 else ''}" for c in counts[n_train:]]
        return Evaluation(float(np.mean(correct)), len(correct), table_from(groups, correct, ["1 ball", "2 balls",
                                                                                              "3 balls"]),
                          "videos of")

    @case(rubric.SIMCLR)
    def probe_accuracy(self, ev: Evaluation) -> float:
        """SimCLR linear-probe accuracy on held-out videos"""
        return ev.accuracy


@dataclass
class RobotEvaluation(Evaluation):
    metrics: dict[str, float]  # every number a robot case scores


class Robot(Assignment):
    name = "robot"
    title = "Robot: material and outcome of a grasp from five sensors"
    modules = ("robot.py",)
    predict = "homework.robot.predict()"
    self_check = "python -m homework.robot test"
    kit_data = ("data/robot_encoders",)

    def evaluate(self, sandbox: Path) -> Evaluation:
        import io

        from worlds.robot import MODALITIES

        labels = self.heldout.labels("robot")
        data = read_out_file(sandbox, "answers.npz")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                answers = {k: f[k] for k in f.files}
        except Exception as e:  # any malformed file is the submission's
            raise AnswersError(f"its answers.npz cannot be read as plain arrays ({str(e)[:80]})") from None
        n, n_anomalies = len(labels["material"]), len(labels["anomaly"])

        def get(key: str, shape: tuple, kinds: str) -> np.ndarray:
            value = answers.get(key)
            if value is None or value.shape != shape or value.dtype.kind not in kinds:
                got = "nothing" if value is None else f"{value.dtype} {value.shape}"
                raise AnswersError(f"its answers.npz holds {got} for {key!r}, expected {shape}")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise AnswersError(f"its {key!r} holds NaN or infinite values")
            return value

        metrics, table = {}, []
        for task in ("material", "outcome"):
            truth = np.array(labels[task])
            for key in ("all", *(f"without_{m}" for m in MODALITIES)):
                accuracy = float((get(f"{task}_{key}", (n,), "iu") == truth).mean())
                metrics[f"{task}_{key}"] = accuracy
                table.append((f"{task}, {key.replace('_', ' ')}", n, accuracy))
            metrics[f"{task}_worst_missing"] = min(metrics[f"{task}_without_{m}"] for m in MODALITIES)
        scores = get("anomaly_scores", (n_anomalies,), "fiu").astype(np.float64)
        kinds = np.array(labels["anomaly"])
        for k, kind in enumerate(labels["kinds"][1:], 1):
            a, b = scores[kinds == k][:, None], scores[kinds == 0][None, :]
            metrics[f"auroc_{kind}"] = float((a > b).mean() + 0.5 * (a == b).mean())
            table.append((f"anomaly AUROC, {kind}", int((kinds == k).sum()), metrics[f"auroc_{kind}"]))
        database = answers.get("database")
        if database is None or database.ndim != 2 or len(database) != n or not 1 <= database.shape[1] <= 65536:
            raise AnswersError(f"its database embeddings are not ({n}, D)")
        queries = get("queries", (labels["num_queries"], database.shape[1]), "f")
        database = get("database", database.shape, "f")
        db = database / np.maximum(np.linalg.norm(database, axis=1, keepdims=True), 1e-12)
        q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        metrics["recall_at_1"] = float(((q @ db.T).argmax(1) == np.arange(len(q))).mean())
        table.append(("retrieval recall@1", len(q), metrics["recall_at_1"]))
        return RobotEvaluation(metrics["material_all"], n, table, "measure", metrics)

    @case(rubric.ROBOT_MATERIAL)
    def material(self, ev: RobotEvaluation) -> float:
        """Robot material accuracy, all five sensors"""
        return ev.metrics["material_all"]

    @case(rubric.ROBOT_OUTCOME)
    def outcome(self, ev: RobotEvaluation) -> float:
        """Robot outcome accuracy (drop, slip, success), all five sensors"""
        return ev.metrics["outcome_all"]

    @case(rubric.ROBOT_MISSING_MATERIAL)
    def material_missing(self, ev: RobotEvaluation) -> float:
        """Robot material accuracy with one sensor missing (the worst of five)"""
        return ev.metrics["material_worst_missing"]

    @case(rubric.ROBOT_MISSING_OUTCOME)
    def outcome_missing(self, ev: RobotEvaluation) -> float:
        """Robot outcome accuracy with one sensor missing (the worst of five)"""
        return ev.metrics["outcome_worst_missing"]

    @case(rubric.ROBOT_FAULTS)
    def faults(self, ev: RobotEvaluation) -> float:
        """Robot anomaly AUROC: sensor faults"""
        return ev.metrics["auroc_fault"]

    @case(rubric.ROBOT_COLLISIONS)
    def collisions(self, ev: RobotEvaluation) -> float:
        """Robot anomaly AUROC: collisions"""
        return ev.metrics["auroc_collision"]

    @case(rubric.ROBOT_SWAPS)
    def swaps(self, ev: RobotEvaluation) -> float:
        """Robot anomaly AUROC: cross-modal swaps"""
        return ev.metrics["auroc_swap"]

    @case(rubric.ROBOT_RETRIEVAL)
    def retrieval(self, ev: RobotEvaluation) -> float:
        """Robot retrieval recall@1 of re-rendered episodes"""
        return ev.metrics["recall_at_1"]


ASSIGNMENTS: dict[str, type[Assignment]] = {a.name: a for a in (VLM, CLIP, Fusion, CILP, SimCLR, Robot)}


def parse_only(only: str | None) -> list[str]:
    """`--only vlm,clip` -> ["vlm", "clip"] in the kit's order; all of them when not given."""
    if only is None or str(only).strip() == "":
        return list(ASSIGNMENTS)
    names = [n.strip().lower() for n in str(only).split(",") if n.strip()]
    unknown = [n for n in names if n not in ASSIGNMENTS]
    if unknown or not names:
        raise SystemExit(f"error: --only takes a comma-separated list of {', '.join(ASSIGNMENTS)}; "
                         f"got {only!r}")
    return [n for n in ASSIGNMENTS if n in names]


# ----------------------------------------------------------------------------------------------
# Stubs: what "not implemented" looks like in a submission
# ----------------------------------------------------------------------------------------------

_STUB = re.compile(r"^\s*raise NotImplementedError\b")


def stubs(homework: Path, modules: tuple[str, ...]) -> list[tuple[str, int]]:
    """(file, line) of each line of MODULES that still raises NotImplementedError: the starter's stubs."""
    found = []
    for module in modules:
        path = homework / module
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 2**20:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if _STUB.match(line):
                found.append((module, number))
    return found


def credit_message(threshold: rubric.Threshold, accuracy: float, points: float) -> tuple[str, str]:
    """(status, feedback) for an accuracy."""
    if points >= threshold.points:
        return "passed", f"accuracy {accuracy:.1%}: full {'extra credit' if threshold.extra_credit else 'marks'} " \
                         f"(from {threshold.high:.0%})"
    if points <= 0:
        if threshold.extra_credit:
            return "failed", f"accuracy {accuracy:.1%}; extra credit starts above {threshold.low:.0%}"
        return "failed", f"accuracy {accuracy:.1%}, at or below {threshold.low:.0%} where credit starts"
    return "partial", f"accuracy {accuracy:.1%}: credit grows from {threshold.low:.0%} to full at " \
                      f"{threshold.high:.0%}"


STAGES = ("import", "load", "predict")


def describe_failure(assignment: type[Assignment], stage: str) -> str:
    return {"import": "importing homework", "load": f"homework.load_{assignment.name}()",
            "predict": assignment.predict}.get(stage, stage)


def interpret_status(assignment: type[Assignment], status: dict, memory_mb: int) -> tuple[str, str]:
    """(status, one-line message) for a child that reported an error. Every field of STATUS is the
    child's: names are checked, its message is quoted as its own words."""
    stage = describe_failure(assignment, str(status.get("stage")) if status.get("stage") in STAGES else "?")
    error = identifier(status.get("error"), "an error")
    raw = status.get("message")
    raw = raw if isinstance(raw, str) else ""
    words = submission_words(raw)
    module = identifier(status.get("module"), "")
    if error == "ModuleNotFoundError" and module.startswith("homework."):
        file = module.split(".", 1)[1].replace(".", "/") + ".py"
        return "not_implemented", f"not implemented: homework/{file} is missing"
    if error == "AttributeError" and raw == f"homework/__init__.py has no load_{assignment.name}()":
        return "not_implemented", f"not implemented: {raw}"
    if error == "MemoryError":
        return "memory", f"ran out of memory in {stage} (the limit is {memory_mb} MB of address space)"
    if error == "NotImplementedError":
        return "not_implemented", f"not implemented: {stage} raised NotImplementedError, saying {words}"
    if error == "SystemExit":
        return "error", f"{stage} stopped, saying {submission_words(raw.removeprefix('error: '))}"
    return "error", f"{stage} raised {error}, saying {words}"
