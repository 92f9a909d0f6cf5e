"""The grader on odd inputs and command lines: each a refusal or a one-line error, no traceback, no
temporary path shown, nothing written where it should not be, and batch's CSV written whatever a
row did; and Gradescope: the autograder zip's layout, and run_autograder in a fake /autograder."""

# ruff: noqa: F811 - the fixtures imported from test_grader are redefined, as pytest means, by the tests' arguments
from __future__ import annotations

import csv
import json
import os
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_grader import (  # noqa: F401 - fixtures
    ROOT,
    SEED,
    cache,
    case,
    env,
    fusion_homework,
    grade,
    needs_reference,
    write_zip,
)
from test_grader_attacks import KIT_THIEF

from grader import batch, rubric
from grader.grading import GradeOptions

# ----------------------------------------------------------------------------------------------
# Odd zips
# ----------------------------------------------------------------------------------------------


def bad_deflate(path: Path) -> Path:
    write_zip(path, {"homework/__init__.py": "".join(f"x{i} = {i * i}\n" for i in range(400))})
    data = bytearray(path.read_bytes())
    start = data.index(b"homework/__init__.py") + len("homework/__init__.py")
    for i in range(start + 4, start + 24):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def bad_utf8_name(path: Path) -> Path:
    write_zip(path, {"homework/__init__.py": "", "homework/AAAA.py": "x"})
    data = bytearray(path.read_bytes().replace(b"AAAA", b"\xff\xfeAA"))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # flag every name as UTF-8
        at = data.find(signature)
        while at >= 0:
            struct.pack_into("<H", data, at + offset, struct.unpack_from("<H", data, at + offset)[0] | 0x800)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    return path


ODD_ZIPS = {
    "an invalid deflate stream": (bad_deflate, "the zip is damaged: homework/__init__.py cannot be read"),
    "a name that is not UTF-8": (bad_utf8_name, "not valid UTF-8"),
    "a file named homework": (lambda p: write_zip(p, {"homework": "x"}), "a file named homework, not a folder"),
    "a file and a folder of one name": (lambda p: write_zip(p, {"homework/__init__.py": "", "homework/a": "x",
                                                                "homework/a/b.py": "y"}),
                                        "homework/a both as a file and as a folder"),
    "a name over the system's limit": (lambda p: write_zip(p, {"homework/__init__.py": "", "homework/" + "x" * 300: "y"}),
                                       "a name over 255 bytes"),
}


@pytest.mark.parametrize("name", list(ODD_ZIPS))
def test_odd_zips_are_refused_in_one_line(name, tmp_path, grade):
    make, message = ODD_ZIPS[name]
    text, results = grade(make(tmp_path / "odd.zip"))
    fusion = case(results, "fusion")
    assert fusion["status"] == "rejected" and message in fusion["message"], fusion
    assert "grader-" not in fusion["message"] and "\n" not in fusion["message"]  # no temporary path


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------


def run_grader(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_command_line_mistakes_get_one_line_errors_and_write_nothing(tmp_path, cache, env):
    sub = write_zip(tmp_path / "ok.zip", fusion_homework("pass"))
    folder = tmp_path / "a_folder"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    fifo = tmp_path / "fifo.zip"
    os.mkfifo(fifo)
    cases = {
        "--timeout inf": ([str(sub), "--timeout", "inf"], "--timeout: must be a number of seconds"),
        "--timeout 1e300": ([str(sub), "--timeout", "1e300"], "at most 86400"),
        "--timeout nan": ([str(sub), "--timeout", "nan"], "--timeout"),
        "--memory_mb huge": ([str(sub), "--memory_mb", "9" * 30], "--memory_mb: must be an integer from 1 to"),
        "--threads ²": ([str(sub), "--threads", "²"], "--threads: must be an integer"),
        "--seed ²": ([str(sub), "--seed", "²"], "seed must be a non-negative integer"),
        "--json a folder": ([str(sub), "--json", str(folder)], f"--json {folder} is a folder; name a file"),
        "--json under a file": ([str(sub), "--json", str(a_file / "r.json")], f"{a_file} is a file, not a folder"),
        "--gradescope a folder": ([str(sub), "--gradescope", str(folder)], "is a folder; name a file"),
        "--cache_dir a file": ([str(sub), "--cache_dir", str(a_file)], f"--cache_dir {a_file} is a file"),
        "batch --csv a folder": (["batch", str(tmp_path), "--csv", str(folder)], f"--csv {folder} is a folder"),
        "a FIFO as the submission": ([str(fifo), "--json", str(tmp_path / "fifo.json")], "is not a regular file"),
    }
    for what, (args, message) in cases.items():
        extra = ["--seed", str(SEED), "--size", "tiny", "--only", "fusion"]
        if "--cache_dir" not in args:
            extra += ["--cache_dir", str(cache)]
        command = ["batch", *extra, *args[1:]] if args[0] == "batch" else [*extra, *args]  # the case's value last
        proc = run_grader(env, *command)
        assert proc.returncode == 2, f"{what}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
        err = proc.stderr.strip()
        assert "\n" not in err and err.startswith("error") and message in err, f"{what}: {err}"
        assert "Traceback" not in proc.stdout + proc.stderr, what
    assert list(folder.iterdir()) == [] and a_file.read_text() == "mine"
    assert json.loads((tmp_path / "fifo.json").read_text())["cases"][0]["status"] == "rejected"
    assert list((tmp_path / "grader_tmp").iterdir()) == []  # no temporary folder left (the FIFO never hung)


def test_batch_writes_its_csv_whatever_a_row_did(tmp_path, cache, monkeypatch):
    folder = tmp_path / "subs"
    folder.mkdir()
    for ident in ("alice", "bob", "=cmd"):
        write_zip(folder / f"{ident}.zip", fusion_homework("pass"))

    def grade_one(submission, reports, options, cache_dir):
        if submission.stem == "bob":
            raise RuntimeError("the grader tripped on bob")
        return {"id": submission.stem, "total": 1.0, "max_score": 25.0, "fusion": 1.0, "status": "ok", "message": "",
                "seconds": 0.1}

    monkeypatch.setattr(batch, "grade_one", grade_one)
    grades = tmp_path / "grades.csv"
    options = GradeOptions(seed=SEED, size="tiny", only=["fusion"], cache_dir=str(cache), isolation="process")
    batch.grade_folder(folder, grades, options, log=lambda *_: None)
    rows = {r["id"]: r for r in csv.DictReader(grades.open())}
    assert sorted(rows) == ["'=cmd", "alice", "bob"]  # a name a spreadsheet would run is quoted
    assert rows["bob"]["status"] == "grader_error" and "tripped on bob" in rows["bob"]["message"]
    assert rows["alice"]["total"] == "1.0"


# ----------------------------------------------------------------------------------------------
# Gradescope
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def autograder(tmp_path_factory) -> Path:
    """`python -m grader gradescope` for fusion and CILP on the tiny sets, once."""
    out = tmp_path_factory.mktemp("gradescope") / "autograder.zip"
    cache_dir = tmp_path_factory.mktemp("gradescope_cache")
    env = {**os.environ, "PYTHONPATH": str(ROOT), rubric.SEED_ENV: str(SEED)}
    proc = subprocess.run([sys.executable, "-m", "grader", "gradescope", str(out), "--size", "tiny", "--only",
                           "fusion,cilp", "--cache_dir", str(cache_dir), "--visibility", "visible"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith(f"wrote {out}")
    return out


def test_autograder_zip_has_gradescopes_layout_and_no_seed(autograder):
    with zipfile.ZipFile(autograder) as z:
        names = set(z.namelist())
        infos = {i.filename: i for i in z.infolist()}
        config = json.loads(z.read("gradescope.json"))
        text = b"".join(z.read(n) for n in names if n.startswith("heldout/") and n.endswith(".json"))
        shipped = b"".join(z.read(n) for n in names if n.startswith("homework/"))
    assert {"setup.sh", "run_autograder", "requirements.txt", "grader/child.py", "grader/gradescope.py",
            "generate_qa.py", "worlds/shapes.py", "data/base_vlm/config.json", "homework/data.py",
            "heldout/shapes/labels.json", "heldout/shapes/inputs/rgb.npy", "heldout/shapes/done.json"} <= names
    for script in ("setup.sh", "run_autograder"):
        assert (infos[script].external_attr >> 16) & stat.S_IXUSR, script
    assert not any(n.startswith("homework/checkpoints") for n in names), "a reference checkpoint ships"
    assert b"# BEGIN SOLUTION" not in shipped, "a solution region ships"
    assert config["only"] == ["fusion", "cilp"] and config["visibility"] == "visible" and not config["public_seed"]
    assert str(SEED).encode() not in text and b"seed" not in text  # no seed ships, nor the world seeds


def check_results_schema(results: dict) -> None:
    """Gradescope's results.json, as its autograder documentation specifies it."""
    assert isinstance(results["score"], (int, float)) and isinstance(results["tests"], list)
    assert results["visibility"] in ("visible", "hidden", "after_due_date", "after_published")
    assert results.get("stdout_visibility", "hidden") in ("visible", "hidden", "after_due_date", "after_published")
    assert isinstance(results.get("output", ""), str) and isinstance(results.get("execution_time", 0), (int, float))
    for test in results["tests"]:
        assert set(test) <= {"score", "max_score", "status", "name", "name_format", "number", "output",
                             "output_format", "tags", "visibility", "extra_data"}, test
        assert isinstance(test["score"], (int, float)) and isinstance(test["max_score"], (int, float))
        assert test["status"] in ("passed", "failed") and isinstance(test["name"], str)
    for entry in results.get("leaderboard", []):
        assert set(entry) <= {"name", "value", "order"} and entry.get("order", "desc") in ("asc", "desc")


def run_autograder(autograder: Path, root: Path, files: dict[str, bytes | str]) -> dict:
    for sub in ("source", "submission", "results"):
        (root / sub).mkdir(parents=True)
    with zipfile.ZipFile(autograder) as z:
        z.extractall(root / "source")
    (root / "source" / "run_autograder").chmod(0o755)
    for name, content in files.items():
        (root / "submission" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "submission" / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    env = {"PATH": os.environ["PATH"], "HOME": str(root), "TMPDIR": str(root), "GRADER_AUTOGRADER_ROOT": str(root),
           "GRADER_PYTHON": sys.executable}
    proc = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    results = json.loads((root / "results" / "results.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-standard JSON: {c}"))
    check_results_schema(results)
    return results


@needs_reference
def test_run_autograder_grades_the_reference_to_full_marks(autograder, tmp_path):
    from bundle import bundle

    zip_path = bundle(ROOT / "homework", str(tmp_path / "ref"))
    results = run_autograder(autograder, tmp_path / "autograder", {"ref.zip": zip_path.read_bytes()})
    assert results["score"] == 50 and [t["status"] for t in results["tests"]] == ["passed", "passed"], results
    assert results["output"].endswith("total=50/50") and "a private seed" in results["output"]
    assert [e["name"] for e in results["leaderboard"]] == ["Fusion accuracy", "CILP accuracy"]


def test_run_autograder_gives_a_hostile_submission_nothing(autograder, tmp_path):
    results = run_autograder(autograder, tmp_path / "autograder", {"homework/__init__.py": KIT_THIEF})
    assert results["score"] == 0 and all(t["score"] == 0 for t in results["tests"]), results
    assert results["output"].endswith("total=0/50")


# ----------------------------------------------------------------------------------------------
# The kit's own commands on the same kinds of input (a truncated checkpoint, a --data_dir that cannot be one)
# ----------------------------------------------------------------------------------------------


def truncated_copy(src: Path, dest: Path, name: str) -> Path:
    import shutil

    shutil.copytree(src, dest)
    data = (dest / name).read_bytes()
    (dest / name).write_bytes(data[: len(data) // 2])
    return dest


@needs_reference
def test_truncated_safetensors_in_a_checkpoint_is_one_line(tmp_path):
    from homework import fusion, simclr
    from homework.checkpoint import load_weights

    folder = truncated_copy(ROOT / "homework" / "checkpoints" / "fusion", tmp_path / "fusion", "model.safetensors")
    with pytest.raises(SystemExit, match=r"model.safetensors cannot be read as safetensors .*truncated or damaged"):
        load_weights(__import__("torch").nn.Linear(2, 2), folder / "model.safetensors")
    with pytest.raises(SystemExit, match="truncated or damaged"):
        fusion.load_model(folder)  # what `fusion test --checkpoint` loads
    folder = truncated_copy(ROOT / "homework" / "checkpoints" / "simclr", tmp_path / "simclr", "encoder.safetensors")
    with pytest.raises(SystemExit, match=r"encoder.safetensors cannot be read as safetensors .*truncated or damaged"):
        simclr.load_encoder(folder)


def test_a_data_dir_that_cannot_be_one_is_one_line(tmp_path, run_cli):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    for args, message in ((["-m", "worlds", "shapes", "--data_dir", str(a_file), "--num_samples", "5"],
                           f"error: --data_dir {a_file} is a file, not a folder"),
                          (["-m", "homework.fusion", "train", "--data_dir", "/proc/x", "--epochs", "1"],
                           "error: --data_dir /proc/x cannot be made")):
        proc = run_cli(*args)
        assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith(message), proc.output
        assert "Traceback" not in proc.output
    assert a_file.read_text() == "mine"
