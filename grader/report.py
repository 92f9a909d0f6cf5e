"""A grading report three ways: text for a person (its last line `total=<points>/<max>`), JSON
with every case, and Gradescope's `results.json`.

Every line of the text starts with the grader's own words; what a submission said (an error
message) appears only inside a line, quoted, printable and capped (grader/cases.py's
`submission_words`). The JSON outputs are standard JSON (no NaN or Infinity), written whole or
not at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from grader import rubric
from grader.grading import Report

TAGS = {"vlm": "VLM accuracy", "clip": "CLIP accuracy", "fusion": "Fusion accuracy", "cilp": "CILP accuracy",
        "simclr": "SimCLR probe accuracy"}


def points(value: float) -> str:
    """12.5 -> '12.5', 25.0 -> '25'."""
    return f"{round(value, 2):g}"


def table_lines(result) -> list[str]:
    if not result.table:
        return []
    width = max(len(result.group_name), *(len(g) for g, _, _ in result.table), 3)
    lines = [f"{result.group_name:<{width}s} {'n':>5s} {'accuracy':>9s}"]
    lines += [f"{g:<{width}s} {n:5d} {acc:9.1%}" for g, n, acc in result.table]
    lines.append(f"{'all':<{width}s} {result.count:5d} {result.accuracy:9.1%}")
    return lines


def text(report: Report) -> str:
    seed = f"the public seed {report.seed}" if report.seed == rubric.DEFAULT_SEED else "a private seed"  # students see this
    out = [f"Grading {report.submission} on {seed} ({report.size} held-out sets, isolation: {report.isolation or 'none'})"]
    if report.walls:
        out.append(f"  the child ran {report.walls}")
    if report.error:
        out.append(f"  {report.error}")
    for result in report.assignments:
        timing = ""
        if result.seconds is not None:
            timing = f"  ({result.seconds:.1f} s" + (f", {result.peak_mb / 1024:.1f} GB peak)" if result.peak_mb
                                                      else ")")
        out.append("")
        out.append(f"{result.title}{timing}")
        for c in result.cases:
            label = f"{c.name} (extra credit)" if c.extra_credit else c.name
            out.append(f"  [{points(c.score):>5s} / {points(c.max_score):<3s}] {label}: {c.message}")
        out += ["      " + line for line in table_lines(result)]
    extra = sum(c.score for c in report.cases if c.extra_credit)
    out.append("")
    out.append(f"Total: {points(report.total)} of {points(report.max_score)} points"
               + (f" (with {points(extra)} extra credit)" if extra else "") + f", in {report.seconds:.0f} s")
    out.append(f"total={points(report.total)}/{points(report.max_score)}")
    return "\n".join(out)


def as_json(report: Report) -> dict:
    return {
        "submission": report.submission, "seed": report.seed, "size": report.size, "isolation": report.isolation,
        "total": report.total, "max_score": report.max_score, "error": report.error,
        "seconds": round(report.seconds, 1), "walls": report.walls,
        "assignments": {a.name: {"title": a.title, "accuracy": a.accuracy, "count": a.count,
                                 "score": round(sum(c.score for c in a.cases), 2),
                                 "max_score": sum(c.max_score for c in a.cases if not c.extra_credit),
                                 "seconds": a.seconds, "peak_mb": a.peak_mb,
                                 "table": [{"group": g, "count": n, "accuracy": acc} for g, n, acc in a.table]}
                        for a in report.assignments},
        "cases": [asdict(c) for c in report.cases],
    }


VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")  # Gradescope's words


def as_gradescope(report: Report, visibility: str = "visible", leaderboard: bool = True) -> dict:
    """Gradescope's autograder results.json: one test per case, a leaderboard of accuracies.
    Extra-credit cases have max_score 0, so that their points come on top. VISIBILITY applies to
    the whole result and each test; the grader's own log (stdout) stays hidden from students."""
    tests = []
    for result in report.assignments:
        for i, c in enumerate(result.cases):
            output = c.message
            if i == 0 and result.table:
                output += "\n\n" + "\n".join(table_lines(result))
            tests.append({"name": f"{c.name} (extra credit, up to {points(c.max_score)})" if c.extra_credit else c.name,
                          "score": c.score, "max_score": 0 if c.extra_credit else c.max_score,
                          "status": "passed" if c.status == "passed" else "failed",
                          "output": output, "tags": [result.name], "visibility": visibility})
    results = {
        "score": report.total,
        "execution_time": round(report.seconds),
        "output": text(report),
        "visibility": visibility,
        "stdout_visibility": "hidden",
        "tests": tests,
    }
    if leaderboard:
        results["leaderboard"] = [{"name": TAGS.get(a.name, a.name), "value": round(100 * (a.accuracy or 0.0), 2),
                                   "order": "desc"} for a in report.assignments]
    return results


def output_problem(path: str | None, flag: str) -> str | None:
    """Why PATH cannot take an output file (one line), or None: it must not be a folder, and the
    nearest folder above it that exists must be a folder."""
    if not path:
        return None
    target = Path(path)
    if target.is_dir():
        return f"{flag} {path} is a folder; name a file"
    if target.exists() and not target.is_file():
        return f"{flag} {path} is not a regular file"
    for parent in target.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{flag} {path}: {parent} is a file, not a folder"
    return None


def write_atomic(path: str | Path, content: str) -> None:
    """Write CONTENT to PATH whole (a temporary file beside it, then a rename), making its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write(report: Report, json_path: str | None = None, gradescope_path: str | None = None,
          visibility: str = "visible", leaderboard: bool = True) -> None:
    if json_path:
        write_atomic(json_path, json.dumps(as_json(report), indent=1, allow_nan=False) + "\n")
    if gradescope_path:
        write_atomic(gradescope_path, json.dumps(as_gradescope(report, visibility, leaderboard), indent=1,
                                                 allow_nan=False) + "\n")
