"""The grader: rubric arithmetic, archive checks, and a suite of hostile submissions.

Every hostile submission is a small zip built here and graded on a tiny held-out set (made once
per module), by `grader.grading.grade()` in this process (the submission's code runs only in the
child it starts) or by `python -m grader`. Most are pure Python (no torch in the child), so each
takes about a second; the two that need torch grade fusion, and CILP beside it, only.
Each must end with a clear message, 0 for what it touches, full marks for what it does not,
nothing written outside the grader's temporary folder, and the grader finishing (exit code 0).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path

import pytest

from grader import grading, heldout, report, rubric
from grader.archive import SubmissionError, check_zip
from grader.grading import GradeOptions
from grader.sandbox import namespaces_available

ROOT = Path(__file__).resolve().parents[1]
SEED = 4242  # the tests' grading seed
REFERENCE = ROOT / "homework" / "checkpoints"
needs_reference = pytest.mark.skipif(not (REFERENCE / "fusion").is_dir() or not (REFERENCE / "cilp").is_dir(),
                                     reason="needs the reference checkpoints (the instructor's kit, not the starter)")
ISOLATIONS = ["namespace", "process"] if namespaces_available() else ["process"]


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def write_zip(path: Path, files: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            z.writestr(name, content)
    return path


def fusion_homework(load_body: str, predict_body: str = "return [0] * len(rgb)") -> dict[str, str]:
    """A pure-Python homework/ whose load_fusion() runs LOAD_BODY and whose predict() runs
    PREDICT_BODY (by default a constant guess: 50%, so 0 points)."""
    load = "\n".join("    " + line for line in load_body.strip().splitlines())
    predict = "\n".join("    " + line for line in predict_body.strip().splitlines())
    return {
        "homework/__init__.py": f"def load_fusion():\n{load}\n    return 'model'\n",
        "homework/fusion.py": f"def predict(model, rgb, ranges):\n{predict}\n",
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A tiny held-out set of the shapes world, made once."""
    root = tmp_path_factory.mktemp("grader_cache")
    heldout.prepare(SEED, "tiny", root, ("fusion", "cilp"), workers=1, log=lambda *_: None)
    return root


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """The grader's environment: its own TMPDIR (where its work folder goes) and HOME."""
    (tmp_path / "grader_tmp").mkdir()
    (tmp_path / "home").mkdir()
    return {**os.environ, "TMPDIR": str(tmp_path / "grader_tmp"), "HOME": str(tmp_path / "home"),
            "PYTHONPATH": str(ROOT)}


@pytest.fixture
def grade(tmp_path, cache, monkeypatch):
    """grade(zip, only="fusion", ...) -> (report text with the grader's log, results JSON), in this
    process; checks the last line and that the grader left its temporary folder empty."""
    grader_tmp = tmp_path / "grader_tmp"
    grader_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(grader_tmp))  # where grade() makes its work folder

    def run(submission: Path, only: str = "fusion", **options):
        options.setdefault("timeout_s", 30)
        logged = []
        result = grading.grade(submission, GradeOptions(seed=SEED, size="tiny", only=only.split(","),
                                                        cache_dir=str(cache), **options), log=logged.append)
        text = report.text(result)
        assert re.fullmatch(r"total=[\d.]+/[\d.]+", text.splitlines()[-1]), text
        assert "Traceback" not in text, text
        assert list(grader_tmp.iterdir()) == [], "the grader left files in its temporary folder"
        return "\n".join(logged) + "\n" + text, report.as_json(result)

    return run


@pytest.fixture
def grade_cli(tmp_path, cache, env):
    """The same through `python -m grader`, which must exit 0 and print the total last."""

    def run(submission: Path, *args: str, timeout: float = 120):
        out = tmp_path / f"results-{uuid.uuid4().hex[:6]}.json"
        proc = subprocess.run([sys.executable, "-m", "grader", str(submission), "--seed", str(SEED), "--size", "tiny",
                               "--cache_dir", str(cache), "--json", str(out), *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.fullmatch(r"total=[\d.]+/[\d.]+", proc.stdout.strip().splitlines()[-1]), proc.stdout
        assert "Traceback" not in proc.stdout + proc.stderr
        assert list((tmp_path / "grader_tmp").iterdir()) == [], "the grader left files in its temporary folder"
        return proc, json.loads(out.read_text())

    return run


def case(results: dict, assignment: str) -> dict:
    return next(c for c in results["cases"] if c["assignment"] == assignment and not c["extra_credit"])


# ----------------------------------------------------------------------------------------------
# The rubric
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("threshold", "points", "low", "high"), [
    (rubric.VLM, 50, 0.0, 0.70), (rubric.VLM_EXTRA, 5, 0.80, 0.85), (rubric.CLIP, 50, 0.20, 0.70),
    (rubric.CLIP_EXTRA, 5, 0.80, 0.85), (rubric.FUSION, 25, 0.50, 0.95), (rubric.CILP, 25, 0.50, 0.95),
    (rubric.SIMCLR, 25, 0.33, 0.90)])
def test_thresholds_are_linear_between_their_ends(threshold, points, low, high):
    assert (threshold.points, threshold.low, threshold.high) == (points, low, high)
    assert threshold.credit(low) == 0 and threshold.credit(low - 0.1) == 0
    assert threshold.credit(high) == points and threshold.credit(1.0) == points
    assert threshold.credit((low + high) / 2) == pytest.approx(points / 2, abs=0.01)


def test_held_out_seeds_are_derived_and_never_the_training_seeds(cache):
    seeds = {heldout.derived_seed(SEED, name) for name in ("kart", "shapes", "balls-probe_train")}
    assert len(seeds) == 3 and not seeds & heldout.training_seeds()
    assert heldout.derived_seed(SEED, "kart") != heldout.derived_seed(SEED + 1, "kart")
    held = heldout.Heldout(cache / f"{SEED}-tiny", SEED, "tiny")
    labels = held.labels("fusion")["labels"]
    assert len(labels) == 2 * rubric.HELDOUT_SIZES["tiny"].shapes_per_class
    assert sorted(p.name for p in held.inputs("fusion").iterdir()) == ["ranges.npy", "rgb.npy"]  # no labels


def test_kit_loads_weights_only_through_safe_loaders():
    for path in sorted((ROOT / "homework").glob("*.py")):
        for call in re.findall(r"torch\.load\(([^)]*)\)", path.read_text()):
            assert "weights_only=True" in call, f"{path.name}: torch.load({call}) without weights_only=True"


# ----------------------------------------------------------------------------------------------
# Archives refused before anything is unpacked
# ----------------------------------------------------------------------------------------------


def link_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("homework/__init__.py", "")
        info = zipfile.ZipInfo("homework/secrets")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    return path


def bomb_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("homework/__init__.py", "")
        with z.open("homework/checkpoints/fusion/model.safetensors", "w") as f:
            for _ in range(40):
                f.write(bytes(2**20))  # 40 MB of zeros, about 40 KB packed
    return path


def big_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("homework/__init__.py", "")
        z.writestr("homework/checkpoints/vlm/adapter_model.safetensors", os.urandom((rubric.SIZE_LIMIT_MB + 1) * 2**20))
    return path


REFUSED = {
    "path traversal": (lambda p: write_zip(p, {"homework/__init__.py": "", "homework/../../evil.py": "x"}),
                       "leaves its folder"),
    "absolute path": (lambda p: write_zip(p, {"homework/__init__.py": "", "/tmp/evil.py": "x"}), "absolute path"),
    "symlink": (link_zip, "holds a link"),
    "zip bomb": (bomb_zip, "zip bomb"),
    "over 50 MB": (big_zip, r"over the 50 MB limit; largest files: homework/checkpoints/vlm/adapter_model"),
    "several top folders": (lambda p: write_zip(p, {"homework/__init__.py": "", "notes/x.txt": "x"}),
                            "one top folder, homework/"),
    "not a zip": (lambda p: p.write_bytes(b"not a zip at all") and p, "is not a zip file"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_unsafe_archives_are_refused_before_unpacking(name, tmp_path):
    make, message = REFUSED[name]
    path = make(tmp_path / "bad.zip")
    with pytest.raises(SubmissionError, match=message):
        check_zip(path)


@pytest.mark.parametrize("name", ["path traversal", "over 50 MB", "not a zip"])
def test_refused_archives_score_zero_with_the_reason(name, tmp_path, grade_cli):
    make, message = REFUSED[name]
    proc, results = grade_cli(make(tmp_path / "bad.zip"), "--only", "fusion,cilp")
    assert results["total"] == 0 and results["max_score"] == 50
    for c in results["cases"]:
        assert c["status"] == "rejected" and re.search(message, c["message"])
    assert not (tmp_path.parent / "evil.py").exists() and not Path("/tmp/evil.py").exists()
    assert proc.stdout.strip().splitlines()[-1] == "total=0/50"


# ----------------------------------------------------------------------------------------------
# Hostile code: each scores 0 with a clear message, and the grader goes on
# ----------------------------------------------------------------------------------------------


HOSTILE = {
    # name: (load_fusion body, predict body or None, expected status, expected message pattern, extra args)
    "loops forever": ("while True:\n    pass", None, "timeout", r"stopped after 3 s, its time limit", {"timeout_s": 3}),
    "allocates without bound": ("hoard = []\nwhile True:\n    hoard.append(bytearray(64 * 2**20))", None, "memory",
                                r"ran out of memory in homework.load_fusion\(\) \(the limit is 1024 MB", {"memory_mb": 1024}),
    "calls os._exit(0)": ("import os\nos._exit(0)", None, "error", r"ended \(exit code 0\) before it answered", {}),
    "calls sys.exit(3)": ("import sys\nsys.exit(3)", None, "error", r'stopped, saying "the code called sys.exit\(3\)"', {}),
    "prints a fake score": ("print('total=175/175')\nprint('[ 25 / 25 ] Fusion accuracy: full marks')", None,
                            "failed", r"accuracy 50.0%, at or below 50%", {}),
    "returns garbage": ("pass", "return 'all spheres, trust me'", "error",
                        r'predict\(\) raised TypeError, saying ".*returned a str, not a list"', {}),
    "returns the wrong number of answers": ("pass", "return [1, 0, 1]", "error", r"returned 3 answers for 40 inputs", {}),
    "forges its answers file": ("pass", "import os\nopen('out/answers.json', 'w').write('{{{')\n"
                                "open('out/status.json', 'w').write('{\"ok\": true}')\nos._exit(0)",
                                "error", r"answers are unusable: its answers.json is not valid JSON", {}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_code_scores_zero_and_the_grader_goes_on(name, tmp_path, grade):
    load, predict, status, message, options = HOSTILE[name]
    files = fusion_homework(load, predict or "return [0] * len(rgb)")
    files["homework/__init__.py"] += "\ndef load_cilp():\n    return 'model'\n"
    files["homework/cilp.py"] = "def predict(model, rgb):\n    return [1] * len(rgb)\n"
    then_cilp = name in ("loops forever", "allocates without bound", "calls os._exit(0)")  # the rest: fusion only, faster
    only = "fusion,cilp" if then_cilp else "fusion"
    text, results = grade(write_zip(tmp_path / "hostile.zip", files), only, **options)
    fusion = case(results, "fusion")
    assert fusion["score"] == 0 and fusion["status"] == status, fusion
    assert re.search(message, fusion["message"]), fusion["message"]
    assert "\n" not in fusion["message"]
    if then_cilp:  # the next assignment was graded as usual
        cilp = case(results, "cilp")
        assert cilp["status"] == "failed" and "accuracy 50.0%" in cilp["message"]
    assert text.splitlines()[-1] == f"total=0/{25 * len(only.split(','))}"  # not the fake one


def canaries(tmp_path: Path) -> list[Path]:
    token = uuid.uuid4().hex[:8]
    return [tmp_path / "outside" / "pwned", ROOT / f"pwned-{token}", Path("/tmp") / f"pwned-{token}",
            tmp_path / "home" / "pwned"]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_writes_outside_the_sandbox_are_refused(isolation, tmp_path, grade):
    (tmp_path / "outside").mkdir()
    (tmp_path / "home").mkdir()
    targets = canaries(tmp_path) + [REFERENCE / "fusion" / "model.safetensors"]
    before = hashlib.sha256(targets[-1].read_bytes()).hexdigest() if targets[-1].exists() else None
    load = (f"targets = {[str(t) for t in targets]!r}\nrefused = 0\nfor t in targets:\n"
            "    try:\n        open(t, 'ab').close()\n    except OSError:\n        refused += 1\n"
            "open('inside.txt', 'w').write('mine')  # its own folder is fine\n"
            "raise RuntimeError(f'refused {refused} of {len(targets)} writes')")
    _, results = grade(write_zip(tmp_path / "w.zip", fusion_homework(load)), isolation=isolation)
    assert f"refused {len(targets)} of {len(targets)} writes" in case(results, "fusion")["message"]
    assert not any(t.exists() for t in targets[:-1])
    if before:
        assert hashlib.sha256(targets[-1].read_bytes()).hexdigest() == before


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_held_out_labels_and_the_seed_stay_hidden(isolation, tmp_path, cache, grade):
    labels = cache / f"{SEED}-tiny" / "shapes" / "labels.json"
    assert labels.is_file()
    load = f"""
import glob, os
leaks = []
for path in [{str(labels)!r}, {str(cache / f"{SEED}-tiny" / "shapes" / "world" / "splits.json")!r}]:
    try:
        leaks.append(open(path).read()[:30])
    except OSError:
        pass
try:
    leaks += os.listdir({str(cache)!r})
except OSError:
    pass
try:
    leaks += glob.glob({str(cache)!r} + "/**/labels.json", recursive=True)
except OSError:
    pass
if {str(SEED)!r} in str(os.environ):
    leaks.append("the seed in the environment")
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        try:
            if b"--seed" in open(f"/proc/{{pid}}/cmdline", "rb").read():
                leaks.append(f"the seed in /proc/{{pid}}/cmdline")
        except OSError:
            pass
raise RuntimeError(f"leaked: {{leaks}}" if leaks else "nothing leaked")
"""
    _, results = grade(write_zip(tmp_path / "peek.zip", fusion_homework(load)), isolation=isolation)
    fusion = case(results, "fusion")
    assert fusion["score"] == 0 and fusion["message"].endswith('RuntimeError, saying "nothing leaked"'), fusion["message"]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_network_and_other_processes_are_off_limits(isolation, tmp_path, grade):
    load = """
import os, signal, socket, subprocess
blocked = []
try:
    socket.create_connection(("127.0.0.1", 9), timeout=2)
except OSError as e:
    blocked.append("socket")
try:
    subprocess.run(["true"])
except OSError:
    blocked.append("subprocess")
try:
    os.kill(os.getppid() or 1, signal.SIGTERM)
except OSError:
    blocked.append("kill")
raise RuntimeError(f"blocked: {' '.join(blocked)}")
"""
    _, results = grade(write_zip(tmp_path / "net.zip", fusion_homework(load)), isolation=isolation)
    assert case(results, "fusion")["message"].endswith('"blocked: socket subprocess kill"')


def test_answers_file_that_is_a_link_to_the_labels_is_refused(tmp_path, cache, grade):
    labels = cache / f"{SEED}-tiny" / "shapes" / "labels.json"
    # os.symlink is refused by the audit hook; native code (ctypes) gets past it, and the grader's reader
    # must still refuse the link.
    predict = (f"import ctypes, os\ntry:\n    os.symlink({str(labels)!r}, 'out/answers.json')\n"
               "    raise SystemExit('os.symlink was allowed')\nexcept PermissionError:\n    pass\n"
               f"ctypes.CDLL(None).symlink({str(labels).encode()!r}, b'out/answers.json')\n"
               "open('out/status.json', 'w').write('{\"ok\": true}')\nos._exit(0)")
    _, results = grade(write_zip(tmp_path / "link.zip", fusion_homework("pass", predict)), isolation="process")
    fusion = case(results, "fusion")
    assert fusion["score"] == 0 and "answers are unusable" in fusion["message"] and "link" in fusion["message"]


class Payload:
    """A pickle that runs code when plain torch.load unpickles it."""

    def __reduce__(self):
        return print, ("PICKLE PAYLOAD RAN",)


def test_pickle_in_additional_weights_does_not_run(tmp_path, grade):
    files = fusion_homework("import torch\n"
                            "torch.load('homework/checkpoints/clip/additional_weights.pt', weights_only=True)")
    files["homework/checkpoints/clip/additional_weights.pt"] = pickle.dumps({"logit_scale": Payload()})
    text, results = grade(write_zip(tmp_path / "pickle.zip", files), verbose=True)
    fusion = case(results, "fusion")
    assert fusion["score"] == 0 and "UnpicklingError" in fusion["message"], fusion["message"]
    assert "--- fusion: the child's output" in text and "PICKLE PAYLOAD RAN" not in text


@needs_reference
def test_missing_checkpoint_scores_zero_and_untouched_assignments_keep_full_marks(tmp_path, grade):
    from bundle import bundle

    src = tmp_path / "src" / "homework"
    shutil.copytree(ROOT / "homework", src, ignore=shutil.ignore_patterns("__pycache__", "fusion"))
    assert not (src / "checkpoints" / "fusion").exists() and (src / "checkpoints" / "cilp").is_dir()
    text, results = grade(bundle(src, str(tmp_path / "nofusion")), "fusion,cilp", timeout_s=None)
    fusion, cilp = case(results, "fusion"), case(results, "cilp")
    assert fusion["score"] == 0 and fusion["status"] == "error"
    assert fusion["message"].startswith('homework.load_fusion() stopped, saying "no fusion checkpoint in homework/checkpoints')
    assert cilp["score"] == 25 and cilp["status"] == "passed", cilp
    assert text.splitlines()[-1] == "total=25/50"


# ----------------------------------------------------------------------------------------------
# The command line, outputs and batches
# ----------------------------------------------------------------------------------------------


def test_bad_input_gets_a_one_line_error(tmp_path, env):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "grader", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)

    missing = run(str(tmp_path / "nope.zip"), "--json", str(tmp_path / "r.json"))
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: no such file or folder: {tmp_path / 'nope.zip'}"
    assert json.loads((tmp_path / "r.json").read_text())["total"] == 0  # results are written even so
    bad_only = run(str(tmp_path), "--only", "vlm,nlp")
    assert bad_only.returncode == 2 and bad_only.stderr.startswith("error: --only takes") and "\n" not in bad_only.stderr.strip()
    bad_seed = run(str(tmp_path), "--seed", "-3")
    assert bad_seed.returncode == 2 and "seed must be a non-negative integer" in bad_seed.stderr


def test_gradescope_output_and_homework_folder(tmp_path, cache, env):
    src = tmp_path / "homework"
    for name, content in fusion_homework("pass").items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "grader", str(src), "--seed", str(SEED), "--size", "tiny",
                           "--cache_dir", str(cache), "--only", "fusion", "--gradescope", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert results["score"] == 0 and results["output"].endswith("total=0/25")
    assert "a private seed" in results["output"] and str(SEED) not in results["output"]  # students see this
    [test] = results["tests"]
    assert set(test) >= {"name", "score", "max_score", "output", "status"}
    assert test["max_score"] == 25 and test["name"] == "Fusion accuracy on held-out cubes and spheres"
    assert results["leaderboard"] == [{"name": "Fusion accuracy", "value": 50.0, "order": "desc"}]


def test_batch_grades_every_zip_and_one_bad_one_stops_nothing(tmp_path, cache, env):
    folder = tmp_path / "submissions"
    folder.mkdir()
    write_zip(folder / "alice.zip", fusion_homework("pass", "return [1] * len(rgb)"))
    write_zip(folder / "bob.zip", {"homework/../../x.py": "x"})
    (folder / "carol.zip").write_bytes(b"garbage")
    grades = tmp_path / "grades.csv"
    proc = subprocess.run([sys.executable, "-m", "grader", "batch", str(folder), "--workers", "2", "--csv", str(grades),
                           "--seed", str(SEED), "--size", "tiny", "--cache_dir", str(cache), "--only", "fusion"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["id"]: r for r in csv.DictReader(grades.open())}
    assert sorted(rows) == ["alice", "bob", "carol"]
    assert rows["alice"]["status"] == "ok" and float(rows["alice"]["max_score"]) == 25
    assert float(rows["alice"]["fusion"]) == 0  # a constant guess
    assert rows["bob"]["status"] == "rejected" and "leaves its folder" in rows["bob"]["message"]
    assert rows["carol"]["status"] == "rejected" and "not a zip" in rows["carol"]["message"]
    assert (tmp_path / "grades_reports" / "alice.txt").read_text().strip().endswith("total=0/25")


@pytest.mark.skipif(not (REFERENCE / "robot").is_dir(), reason="needs the robot reference (the instructor's kit)")
def test_the_robot_reference_gets_full_marks(tmp_path, grade):
    """The robot child gets the kit's encoders, answers every set, and the committed reference
    scores full marks (on the tiny sets; the README gives its scores on the full ones)."""
    submission = tmp_path / "homework"
    shutil.copytree(ROOT / "homework", submission, ignore=shutil.ignore_patterns("__pycache__", "vlm*", "clip*",
                                                                                  "simclr", "cilp", "fusion"))
    text, results = grade(submission, only="robot", timeout_s=300)
    cases = [c for c in results["cases"] if c["assignment"] == "robot"]
    assert len(cases) == 8 and all(c["status"] == "passed" for c in cases), text
    assert text.splitlines()[-1] == "total=50/50"
