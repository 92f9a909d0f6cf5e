"""Grading a folder of submissions: `python -m grader batch DIR --workers N --csv grades.csv`.

The held-out sets are made once, first; then each zip is graded by its own `python -m grader`
process, N at a time, so that nothing one submission does (nor a fault of the grader on it)
touches another. Each one's report and JSON land in a reports folder beside the CSV.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from grader import heldout, rubric
from grader.cases import ASSIGNMENTS
from grader.grading import KIT_ROOT, GradeOptions, open_heldout
from grader.sandbox import resolve_isolation


def _command(submission: Path, json_path: Path, options: GradeOptions, cache_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "grader", "grade", str(submission), "--json", str(json_path),
               "--size", options.size, "--only", ",".join(options.only), "--cache_dir", str(cache_dir),
               "--memory_mb", str(options.memory_mb), "--threads", str(options.threads),
               "--isolation", options.isolation]
    if options.timeout_s:
        command += ["--timeout", str(options.timeout_s)]
    if options.heldout_dir:
        command += ["--heldout_dir", str(options.heldout_dir)]
    return command


def grade_one(submission: Path, reports: Path, options: GradeOptions, cache_dir: Path) -> dict:
    """Grade one zip in its own process; a row for the CSV whatever happens."""
    ident = submission.stem
    json_path, text_path = reports / f"{ident}.json", reports / f"{ident}.txt"
    json_path.unlink(missing_ok=True)
    budget = sum((options.timeout_s or ASSIGNMENTS[a].timeout()) + 60 for a in options.only) + 120
    env = {**os.environ, "PYTHONPATH": str(KIT_ROOT), rubric.SEED_ENV: str(options.seed)}  # not in argv
    started = time.time()
    row = {"id": ident, "total": 0.0, "max_score": 0.0, **{a: 0.0 for a in options.only}, "status": "ok",
           "message": "", "seconds": 0.0}
    try:
        with open(text_path, "w") as out:
            subprocess.run(_command(submission, json_path, options, cache_dir), cwd=KIT_ROOT, env=env,
                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=budget)
    except subprocess.TimeoutExpired:
        row.update(status="grader_error", message=f"grading took over {budget} s and was stopped")
    row["seconds"] = round(time.time() - started, 1)
    try:
        result = json.loads(json_path.read_text())
        row.update(total=float(result["total"]), max_score=float(result["max_score"]))
        for name, a in result["assignments"].items():
            if name in options.only:
                row[name] = float(a["score"])
        error = result.get("error")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        if row["status"] == "ok":
            row.update(status="grader_error", message=f"the grader wrote no results; see {text_path}")
        return row
    if error:
        row.update(status="rejected" if "refused" in str(error) else "grader_error", message=str(error))
    return row


def _cell(value):
    """A CSV cell a spreadsheet will not run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(rows: list[dict], csv_path: Path, columns: list[str]) -> None:
    import io

    from grader.report import write_atomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in sorted(rows, key=lambda r: r["id"]))
    write_atomic(csv_path, buffer.getvalue())


def grade_folder(folder: str | Path, csv_path: str | Path, options: GradeOptions, workers: int = 1,
                 reports_dir: str | Path | None = None, log=print) -> list[dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder")
    zips = sorted(p for p in folder.glob("*.zip") if p.is_file())
    if not zips:
        raise SystemExit(f"error: no .zip files in {folder}")
    csv_path = Path(csv_path)
    reports = Path(reports_dir) if reports_dir else csv_path.parent / f"{csv_path.stem}_reports"
    reports.mkdir(parents=True, exist_ok=True)
    options.isolation = resolve_isolation(options.isolation)
    try:
        held = open_heldout(options, log)
    except heldout.HeldoutError as e:
        raise SystemExit(f"error: {e}") from None
    cache_dir = held.root.parent
    log(f"grading {len(zips)} submissions from {folder}, {workers} at a time; reports in {reports}")
    columns = ["id", "total", "max_score", *options.only, "status", "message", "seconds"]
    rows = []
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            futures = {pool.submit(grade_one, z, reports, options, cache_dir): z for z in zips}
            for i, future in enumerate(as_completed(futures), 1):
                submission = futures[future]
                try:
                    row = future.result()
                except Exception as e:  # a grader fault on this one: its row says so, the rest go on
                    row = {"id": submission.stem, "total": 0.0, "max_score": 0.0, **{a: 0.0 for a in options.only},
                           "status": "grader_error", "message": f"grader error: {e}", "seconds": 0.0}
                rows.append(row)
                note = f"  ({row['status']}: {row['message']})" if row["status"] != "ok" else ""
                log(f"[{i}/{len(zips)}] {submission.name}: total={row['total']:g}/{row['max_score']:g} "
                    f"in {row['seconds']:.0f} s{note}")
    finally:  # whatever happened, the grades so far are written
        write_csv(rows, csv_path, columns)
        log(f"wrote {csv_path} ({len(rows)} of {len(zips)} submissions)")
    return rows
