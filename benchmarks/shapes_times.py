"""The README's times of the shapes world, fusion and CILP commands: wall-clock and CPU time of each.

    python -m benchmarks.shapes_times                 # --threads 1, every command into a scratch folder
    python -m benchmarks.shapes_times --threads 0     # torch's default threads (every core)

Runs each command of the table in a fresh process, into SCRATCH (replaced), and measures its
wall-clock time, its CPU time (user + system, its own and its children's, as the kernel counted
them) and its peak resident memory; the load average before each says how busy the machine was.
Writes OUTPUT_DIR/NAME.json and NAME.md (default benchmarks/results/shapes_times.{json,md}).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo is the package root
from benchmarks.curves import RESULTS, results_paths, write_results  # noqa: E402
from homework.cli_checks import check_int, fail  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_FILES = ("tests/test_worlds_shapes.py", "tests/test_fusion.py", "tests/test_cilp.py")


def commands(scratch: Path, threads: int) -> list[tuple[str, list[str]]]:
    """(what the README calls it, the command) for each row, in the order they must run."""
    data, run = str(scratch / "assessment"), str(scratch / "cilp")
    t = ["--threads", str(threads)]
    return [
        ("`python -m worlds shapes` (2 x 1,000 samples, 2 workers)",
         ["-m", "worlds", "shapes", "--data_dir", data, "--workers", "2", "--quiet"]),
        ("`python -m homework.fusion train` (defaults: late, stride, 8 epochs)",
         ["-m", "homework.fusion", "train", "--data_dir", data, "--output_dir", str(scratch / "fusion"), *t]),
        ("`python -m homework.cilp pretrain` (defaults)", ["-m", "homework.cilp", "pretrain", "--data_dir", data,
                                                          "--run_dir", run, *t]),
        ("`python -m homework.cilp project`", ["-m", "homework.cilp", "project", "--data_dir", data, "--run_dir", run, *t]),
        ("`python -m homework.cilp finetune` (20 epochs)", ["-m", "homework.cilp", "finetune", "--data_dir", data,
                                                           "--run_dir", run, *t]),
        (f"the three test files (`pytest {' '.join(TEST_FILES)}`)", ["-m", "pytest", "-q", "-p", "no:cacheprovider",
                                                                     *TEST_FILES]),
    ]


def measure(args: list[str], env: dict) -> dict:
    """Run `python ARGS` from the repository root to its end: wall and CPU seconds, peak memory (MiB)."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env)
    _, status, usage = os.wait4(child.pid, 0)  # the child's own rusage, its children included once reaped
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        fail(f"`python {' '.join(args)}` failed with exit code {child.returncode} (its output is above)")
    return {"wall_seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "load_average_before": round(load, 1)}


def minutes(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def table(results: dict) -> str:
    lines = ["| command | wall-clock | CPU time (user + system) | load average before |", "|---|---|---|---|"]
    lines += [f"| {r['command']} | {minutes(r['wall_seconds'])} | {minutes(r['cpu_seconds'])} | {r['load_average_before']} |"
              for r in results["rows"]]
    return "\n".join(lines) + "\n"


def main(threads: int = 1, scratch: str = "runs/shapes_times", output_dir: str = str(RESULTS), name: str = "shapes_times",
         overwrite: bool = False) -> None:
    """Time every command of the table; write OUTPUT_DIR/NAME.json and NAME.md.

    Args:
        threads: torch CPU threads of the training commands; 0 = torch's default (every core).
        scratch: the folder the commands write into (replaced: it holds only what this makes).
        output_dir: where NAME.json and NAME.md go; default benchmarks/results.
        name: the output files' name, without extension.
        overwrite: replace NAME.json / NAME.md if they exist.
    """
    check_int("threads", threads, 0)
    paths = results_paths(output_dir, name, overwrite)
    scratch_dir = Path(scratch)
    if scratch_dir.exists() and any(scratch_dir.iterdir()) and not (scratch_dir / "assessment").exists():
        fail(f"{scratch_dir} holds files this did not make; choose another --scratch")
    shutil.rmtree(scratch_dir, ignore_errors=True)
    scratch_dir.mkdir(parents=True)
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    rows = []
    for label, args in commands(scratch_dir.resolve(), threads):
        print(f"\n== python {' '.join(args)}", flush=True)
        rows.append({"command": label, "args": args[:2] + ["..."], **measure(args, env)})
        print(f"-> {rows[-1]}")
    results = {"threads": threads, "cpus": os.cpu_count(), "rows": rows}
    write_results(paths, results, table(results))


if __name__ == "__main__":
    fire.Fire(main)
