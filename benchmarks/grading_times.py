"""The README's grading times and scores: bundle the reference, make the held-out sets, grade it.

    python -m benchmarks.grading_times                 # seed 12345, as the README's table
    python -m benchmarks.grading_times --seed 777      # another seed

Runs, each in a fresh process and timed: `python bundle.py homework ref`, `python -m grader
heldout --seed SEED --workers 1` into an empty cache (the held-out sets, made once per seed), then
`python -m grader ref.zip --seed SEED --workers 1 --json ...` on those sets (the five children,
one at a time). Writes OUTPUT_DIR/NAME.json (the grader's whole report, and the times) and NAME.md
(the README's two tables). Nothing is left behind but those two files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo is the package root
from benchmarks.curves import RESULTS, results_paths, write_results  # noqa: E402
from homework.cli_checks import check_int, fail  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], cwd: Path) -> float:
    """Run COMMAND in CWD (its output shown); its wall seconds, or one line if it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    print(f"\n== {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    if subprocess.run(command, cwd=cwd, env=env).returncode:
        fail(f"`{' '.join(command[1:])}` failed (its output is above)")
    return round(time.perf_counter() - started, 1)


def short(title: str) -> str:
    """An assignment's name as the README's tables write it: "VLM" of "VLM: questions about kart frames"."""
    return title.split(":")[0]


def tables(results: dict) -> str:
    """The times table and the scores table, in Markdown."""
    report, times = results["report"], results["seconds"]
    lines = ["| step | wall-clock (s) |", "|---|---|",
             f"| `python bundle.py homework ref` | {times['bundle']:.1f} |",
             f"| held-out sets, seed {results['seed']} (`python -m grader heldout`, once per seed) | {times['heldout']:.1f} |",
             f"| grading, the sets cached (`python -m grader ref.zip`), in all | {times['grade']:.1f} |"]
    for a in report["assignments"].values():
        lines.append(f"| &nbsp; {short(a['title'])}'s child | {a['seconds']:.1f} |")
    lines += ["", "| assignment | accuracy | points |", "|---|---|---|"]
    for a in report["assignments"].values():
        groups = ", ".join(f"{g['group']} {100 * g['accuracy']:.1f}%" for g in a["table"] if g["group"] != "all")
        extra = round(max(a["score"] - a["max_score"], 0), 2)  # points above the maximum: extra credit
        accuracy = "" if a["accuracy"] is None else f"{100 * a['accuracy']:.1f}%"
        lines.append(f"| {short(a['title'])} | {accuracy}{f' ({groups})' if groups else ''} | "
                     f"{a['score'] - extra:g} / {a['max_score']:g}{f', +{extra:g}' if extra else ''} |")
    return "\n".join(lines) + "\n"


def main(seed: int = 12345, output_dir: str = str(RESULTS), name: str = "grading_times", overwrite: bool = False) -> None:
    """Bundle the reference homework, make the held-out sets of SEED, grade; write OUTPUT_DIR/NAME.json and NAME.md.

    Args:
        seed: the grading seed.
        output_dir: where NAME.json and NAME.md go; default benchmarks/results.
        name: the output files' name, without extension.
        overwrite: replace NAME.json / NAME.md if they exist.
    """
    check_int("seed", seed, 0)
    paths = results_paths(output_dir, name, overwrite)
    with tempfile.TemporaryDirectory(prefix="grading_times_") as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        seconds = {"bundle": timed([sys.executable, str(ROOT / "bundle.py"), str(ROOT / "homework"), "ref"], work)}
        grader = [sys.executable, "-m", "grader"]
        common = ["--seed", str(seed), "--workers", "1", "--cache_dir", str(cache)]
        seconds["heldout"] = timed([*grader, "heldout", *common], work)
        seconds["grade"] = timed([*grader, str(work / "ref.zip"), *common, "--json", str(work / "report.json")], work)
        report = json.loads((work / "report.json").read_text())
    results = {"seed": seed, "seconds": seconds, "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1),
               "report": report}
    write_results(paths, results, tables(results))


if __name__ == "__main__":
    fire.Fire(main)
