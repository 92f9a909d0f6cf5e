"""The student starter: solution regions stubbed as tests/conftest.py's `starter_source` says,
reference checkpoints left out, the rest the same; it imports, every Fire CLI's --help works,
and the grader scores it 0 with a "not implemented" message per case and no traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grader.cases import ASSIGNMENTS

ROOT = Path(__file__).resolve().parents[1]
SEED = 4243
pytestmark = pytest.mark.skipif(not any("# BEGIN SOLUTION" in p.read_text() for p in (ROOT / "homework").glob("*.py")),
                                reason="homework/ has no solution regions: this is a starter already")


@pytest.fixture(scope="module")
def starter(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("starter") / "kit"
    proc = subprocess.run([sys.executable, "-m", "grader", "starter", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"wrote the starter to .*: \d+ solution regions stubbed", proc.stdout), proc.stdout
    return out


def test_solution_regions_are_stubbed_and_nothing_else_changes(starter):
    from conftest import starter_source

    stubbed = 0
    for path in sorted((ROOT / "homework").glob("*.py")):
        expected, n = starter_source(path)
        assert (starter / "homework" / path.name).read_text() == expected, path.name
        assert "SOLUTION" not in (starter / "homework" / path.name).read_text()
        stubbed += n
    assert stubbed >= 20
    for same in ("generate_qa.py", "bundle.py", "worlds/kart.py", "grader/rubric.py", "README.md", "pyproject.toml",
                 "data/base_vlm/config.json", "tests/conftest.py"):
        assert (starter / same).read_bytes() == (ROOT / same).read_bytes(), same
    assert not (starter / "homework" / "checkpoints").exists()
    for instructor in ("pretraining", "benchmarks", "tests/test_pretraining_base_vlm.py", "tests/test_benchmarks.py"):
        assert not (starter / instructor).exists(), instructor
    assert not (starter / "data" / "train").exists() and not (starter / "runs").exists()
    assert not list(starter.rglob("__pycache__")) and not (starter / ".git").exists()


def test_starter_refuses_a_folder_that_is_not_empty(starter, tmp_path):
    run = [sys.executable, "-m", "grader", "starter", str(starter)]
    proc = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().endswith("is not empty; pass --overwrite to write over it, "
                                                                 "or pick a new folder")
    (starter / "homework" / "stale.py").write_text("x = 1\n")
    proc = subprocess.run(run + ["--overwrite"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not (starter / "homework" / "stale.py").exists()
    proc = subprocess.run([sys.executable, "-m", "grader", "starter", str(ROOT)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "holds the kit itself" in proc.stderr


HELP_EVERY_CLI = r"""
import contextlib, io, json, re, runpy, sys, traceback
from pathlib import Path

clis = ["homework.finetune", "homework.clip", "homework.generate_captions", "homework.fusion", "homework.cilp",
        "homework.simclr", "homework.base_vlm", "homework.robot", "generate_qa"]
results = {}
for module in clis:
    source = Path(*module.split(".")).with_suffix(".py").read_text()
    commands = re.findall(r'"(\w+)": \w+', source[source.rindex("fire.Fire({"):])
    for argv in [[module, "--help"]] + [[module, c, "--help"] for c in commands]:
        out = io.StringIO()
        code = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            sys.argv = argv
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as e:
                code = e.code
            except BaseException:
                traceback.print_exc()
                code = "raised"
        results[" ".join(argv)] = [code, out.getvalue()]
for world in ["kart", "shapes", "balls", "robot"]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        from worlds.__main__ import main
        try:
            main([world, "--help"])
            code = 0
        except SystemExit as e:
            code = e.code
    results[f"worlds {world} --help"] = [code, out.getvalue()]
print(json.dumps(results))
"""


def test_starter_imports_and_every_cli_help_works(starter):
    env = {"PATH": "/usr/bin:/bin", "PAGER": "cat", "PYTHONPATH": str(starter), "HOME": str(starter),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", HELP_EVERY_CLI], cwd=starter, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) > 20
    for command, (code, output) in results.items():
        assert code in (0, None), f"{command}: exit {code}\n{output[-2000:]}"
        assert "NAME" in output or "SYNOPSIS" in output or "usage" in output.lower(), f"{command}:\n{output[-500:]}"
        assert "Traceback" not in output and "NotImplementedError" not in output, f"{command}:\n{output[-2000:]}"


def test_the_grader_scores_the_starter_zero_cleanly(starter, tmp_path):
    zip_id = tmp_path / "starter"
    subprocess.run([sys.executable, "bundle.py", str(starter / "homework"), str(zip_id)], cwd=starter, check=True,
                   capture_output=True)
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "grader", f"{zip_id}.zip", "--seed", str(SEED), "--size", "tiny",
                           "--cache_dir", str(tmp_path / "cache"), "--json", str(out)],
                          cwd=starter, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    full = sum(m.threshold.points for a in ASSIGNMENTS.values() for m in a.cases() if not m.threshold.extra_credit)
    assert proc.stdout.strip().splitlines()[-1] == f"total=0/{full:g}"
    results = json.loads(out.read_text())
    assert len(results["cases"]) == sum(len(a.cases()) for a in ASSIGNMENTS.values()) and {
        c["assignment"] for c in results["cases"]} == {"vlm", "clip", "fusion", "cilp", "simclr", "robot"}
    for c in results["cases"]:
        assert c["score"] == 0 and c["status"] == "not_implemented", c
        assert c["message"].startswith("not implemented:") and "\n" not in c["message"], c
