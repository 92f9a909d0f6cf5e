"""The grader against a hostile student: one test per attack, in both isolation modes where the
system has user namespaces (here they are the default; `--isolation process` is the fallback).

Each submission is a small pure-Python zip graded on the tiny held-out shapes set, fusion only,
so each takes about a second; none starts more than a handful of processes or holds more than a
few hundred MB. Each must score 0, say why in one line, leave the grader's files as they were,
and leave no process behind.
"""

# ruff: noqa: F811 - the fixtures imported from test_grader are redefined, as pytest means, by the tests' arguments
from __future__ import annotations

import hashlib
import json
import os
import py_compile
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from test_grader import (  # noqa: F401 - fixtures
    ISOLATIONS,
    ROOT,
    SEED,
    cache,
    case,
    env,
    fusion_homework,
    grade,
    grade_cli,
    needs_reference,
    write_zip,
)

from grader import heldout, rubric
from grader.grading import remove_tree
from grader.sandbox import namespaces_available

needs_namespaces = pytest.mark.skipif(not namespaces_available(),
                                      reason="this system has no unprivileged user namespaces")


def labels_of(cache: Path) -> Path:
    return cache / f"{SEED}-tiny" / "shapes" / "labels.json"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Hidden code and the kit's own reference
# ----------------------------------------------------------------------------------------------

KIT_THIEF = f'''
import os, sys
def kit():
    starts = [os.path.abspath(sys.argv[0]), os.getcwd(), {str(ROOT)!r}] + [p for p in sys.path if p]
    for start in starts:
        d = start
        while True:
            if os.path.isfile(os.path.join(d, "homework", "__init__.py")) and d != os.getcwd():
                return os.path.join(d, "homework")
            if os.path.dirname(d) == d:
                break
            d = os.path.dirname(d)
    raise RuntimeError("found no kit")
__path__ = [kit()]
source = os.path.join(__path__[0], "__init__.py")
exec(compile(open(source).read(), source, "exec"))
'''


@needs_reference
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_one_init_file_that_loads_the_kits_reference_scores_zero(isolation, tmp_path, grade):
    """The whole submission is an __init__.py that finds the kit (from sys.argv[0], the working
    folder or a parent, or its known path) and runs the kit's own homework/ with its checkpoints."""
    zip_path = write_zip(tmp_path / "thief.zip", {"homework/__init__.py": KIT_THIEF})
    text, results = grade(zip_path, "fusion,cilp", isolation=isolation)
    for name in ("fusion", "cilp"):
        c = case(results, name)
        assert c["score"] == 0 and c["status"] == "error", c
    assert text.splitlines()[-1] == "total=0/50"


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_bytecode_in_the_zip_never_runs(isolation, tmp_path, grade):
    """An unchecked-hash .pyc in homework/__pycache__ would run instead of the .py beside it."""
    hidden = tmp_path / "hidden.py"
    hidden.write_text("def load_fusion():\n    raise RuntimeError('the hidden bytecode ran')\n")
    pyc = tmp_path / "init.pyc"
    py_compile.compile(str(hidden), cfile=str(pyc), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    tag = sys.implementation.cache_tag
    files = fusion_homework("raise RuntimeError('the source a reader sees ran')")
    files[f"homework/__pycache__/__init__.{tag}.pyc"] = pyc.read_bytes()
    files["homework/secret.pyc"] = pyc.read_bytes()  # a module with no source at all
    _, results = grade(write_zip(tmp_path / "pyc.zip", files), isolation=isolation)
    assert case(results, "fusion")["message"].endswith('"the source a reader sees ran"')


def test_native_code_in_the_zip_is_refused(tmp_path, grade):
    files = {**fusion_homework("pass"), "homework/fast.cpython-311-x86_64-linux-gnu.so": b"\x7fELF"}
    _, results = grade(write_zip(tmp_path / "so.zip", files))
    fusion = case(results, "fusion")
    assert fusion["status"] == "rejected" and "is native code" in fusion["message"]


# ----------------------------------------------------------------------------------------------
# Forged reports
# ----------------------------------------------------------------------------------------------

FORGERY = "x\ntotal=999/175\r\n  [   25 / 25 ] forged\x1b[2J\x1b]0;owned\x07\u202e" + "A" * 20000


def test_forged_status_text_never_starts_a_report_line_and_reports_are_standard_json(tmp_path, grade_cli):
    status = {"ok": False, "error": "total=999/175\nRuntimeError", "message": FORGERY, "stage": "load\ntotal=1/1",
              "module": "homework.\nx", "peak_mb": "BIG"}
    # 1e999 is a JSON number that Python reads as infinity: the report must still be standard JSON
    predict = (f"import json, os\nopen('out/status.json', 'w').write(json.dumps({status!r}).replace("
               "'\"BIG\"', '1e999'))\nos._exit(0)")
    gradescope = tmp_path / "gs.json"
    proc, _ = grade_cli(write_zip(tmp_path / "forge.zip", fusion_homework("pass", predict)), "--only", "fusion",
                        "--gradescope", str(gradescope))
    lines = proc.stdout.splitlines()
    assert lines[-1] == "total=0/25" and not any(line.startswith("total=") for line in lines[:-1])
    assert not any(re.match(r"\s*\[\s*25 / 25", line) for line in lines) and "\x1b" not in proc.stdout
    [line] = [line for line in lines if "Fusion accuracy" in line]
    assert line.startswith("  [    0 / 25 ] Fusion accuracy") and len(line) < 600, line
    assert 'raised an error, saying "x total=999/175' in line  # quoted, on one line, as the submission's words

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON: {c}"))

    for path in (gradescope, *tmp_path.glob("results-*.json")):
        data = strict(path.read_text())
        assert "\x1b" not in json.dumps(data) and "\u202e" not in json.dumps(data, ensure_ascii=False)
    assert strict(gradescope.read_text())["tests"][0]["score"] == 0


def test_answers_file_too_big_for_its_answers_is_refused_unparsed(tmp_path, grade):
    """64 MB of empty lists once took the grader to 1.65 GB: the file is bounded by the number of answers."""
    predict = ("import os\nwith open('out/answers.json', 'w') as f:\n    f.write('[' + '[],' * 2_000_000 + '[]]')\n"
               "open('out/status.json', 'w').write('{\"ok\": true}')\nos._exit(0)")
    _, results = grade(write_zip(tmp_path / "big.zip", fusion_homework("pass", predict)))
    fusion = case(results, "fusion")
    assert fusion["score"] == 0 and "over the" in fusion["message"] and "answers can take" in fusion["message"]


def test_answers_file_made_a_folder_is_refused(tmp_path, grade):
    predict = "import os\nos.mkdir('out/answers.json')\nopen('out/status.json', 'w').write('{\"ok\": true}')\nos._exit(0)"
    _, results = grade(write_zip(tmp_path / "dir.zip", fusion_homework("pass", predict)), isolation="process")
    fusion = case(results, "fusion")
    assert fusion["status"] == "error" and "answers.json is not a plain file" in fusion["message"], fusion


# ----------------------------------------------------------------------------------------------
# The audit hook's holes, closed (in namespace mode the same calls meet the minimal tree too)
# ----------------------------------------------------------------------------------------------


def probe_body(cache: Path, outside: Path) -> str:
    labels = labels_of(cache)
    rel = os.path.relpath(labels, "/")
    return f'''
import os, signal, sys
allowed = []
def attempt(name, call):
    try:
        call()
        allowed.append(name)
    except (OSError, ValueError, TypeError, AttributeError, ImportError, RuntimeError):
        pass
labels, outside = {str(labels)!r}, {str(outside)!r}
def dir_fd_read():
    fd = os.open("/", os.O_RDONLY)
    os.read(os.open({rel!r}, os.O_RDONLY, dir_fd=fd), 10)
attempt("dir_fd read", dir_fd_read)
def dir_fd_parent():
    fd = os.open("tmp", os.O_RDONLY)
    os.read(os.open("../../../../../../../../" + {rel!r}, os.O_RDONLY, dir_fd=fd), 10)
attempt("dir_fd and ..", dir_fd_parent)
def fd_of_labels_folder():
    fd = os.open(os.path.dirname(labels), os.O_RDONLY)
    os.listdir(fd)
attempt("descriptor of the cache", fd_of_labels_folder)
attempt("read labels", lambda: open(labels).read())
attempt("write labels", lambda: open(labels, "a").write("x"))
attempt("chmod labels", lambda: os.chmod(labels, 0o666))
attempt("chmod by descriptor", lambda: os.chmod(os.open(outside, os.O_RDONLY), 0o777))
def unlink_dir_fd():
    fd = os.open(".", os.O_RDONLY)
    os.unlink("../../../../../../../../" + {rel!r}, dir_fd=fd)
attempt("unlink with dir_fd", unlink_dir_fd)
attempt("parent environ", lambda: open(f"/proc/{{os.getppid()}}/environ", "rb").read())
def proc_dir_fd():
    fd = os.open("/proc", os.O_RDONLY)
    os.read(os.open(f"{{os.getppid()}}/environ", os.O_RDONLY, dir_fd=fd), 10)
attempt("environ through dir_fd", proc_dir_fd)
def fork_exec():
    import _posixsubprocess
    _posixsubprocess.fork_exec(["/bin/true"], [b"/bin/true"], True, (), None, None, -1, -1, -1, -1, -1, -1,
                               -1, -1, False, False, None, None, None, -1, None, False)
attempt("fork_exec", fork_exec)
def fresh_posixsubprocess():
    del sys.modules["_posixsubprocess"]
    import _posixsubprocess
    _posixsubprocess.fork_exec
attempt("_posixsubprocess afresh", fresh_posixsubprocess)
def fresh_posix():
    import _imp, importlib.machinery
    _imp.create_builtin(importlib.machinery.ModuleSpec("posix", None)).pidfd_open
attempt("posix afresh", fresh_posix)
def original_create_builtin():
    import _imp
    _imp.create_builtin.__defaults__[0]
attempt("the original create_builtin", original_create_builtin)
attempt("pidfd_send_signal", lambda: signal.pidfd_send_signal(os.pidfd_open(os.getppid()), 0))
def sqlite():
    import sqlite3
    sqlite3.connect(outside + ".db").execute("create table t (x)")
attempt("sqlite", sqlite)
attempt("setxattr", lambda: os.setxattr(outside, "user.pwned", b"1"))
attempt("mkfifo", lambda: os.mkfifo(outside + ".fifo"))
attempt("symlink", lambda: os.symlink(labels, "out/answers.json"))
attempt("kill the grader", lambda: os.kill(os.getppid(), 0))
raise RuntimeError(f"allowed: {{allowed}}")
'''


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_audit_hook_holes_are_closed(isolation, tmp_path, cache, grade, monkeypatch):
    monkeypatch.setenv(rubric.SEED_ENV, str(SEED))  # in the grader's environment, as in a batch
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    outside.chmod(0o644)
    before = sha(labels_of(cache))
    _, results = grade(write_zip(tmp_path / "holes.zip", fusion_homework(probe_body(cache, outside))),
                       isolation=isolation)
    fusion = case(results, "fusion")
    assert fusion["message"].endswith('"allowed: []"'), fusion["message"]
    assert sha(labels_of(cache)) == before and outside.stat().st_mode & 0o777 == 0o644
    assert not Path(str(outside) + ".db").exists() and not Path(str(outside) + ".fifo").exists()
    assert "user.pwned" not in os.listxattr(outside)


def test_held_out_cache_is_read_only_and_a_changed_one_is_made_again(tmp_path):
    held = heldout.prepare(SEED, "tiny", tmp_path, ("fusion",), workers=1, log=lambda *_: None)
    labels = held.root / "shapes" / "labels.json"
    assert labels.stat().st_mode & 0o222 == 0 and (held.root / "shapes").stat().st_mode & 0o222 == 0
    assert held.root.stat().st_mode & 0o077 == 0  # no one else's
    original = labels.read_bytes()
    held.verify("fusion")
    labels.chmod(0o644)
    labels.write_text(original.decode().replace("0", "1"))  # poisoned, as a child with ctypes could in process mode
    with pytest.raises(heldout.HeldoutError, match="changed since it was made"):
        held.verify("fusion")
    again = heldout.prepare(SEED, "tiny", tmp_path, ("fusion",), workers=1, log=lambda *_: None)
    assert (again.root / "shapes" / "labels.json").read_bytes() == original


# ----------------------------------------------------------------------------------------------
# Limits: processes, memory, scratch space, and nothing left behind
# ----------------------------------------------------------------------------------------------

DAEMON = '''
import ctypes, os, time
libc = ctypes.CDLL(None)
if libc.fork() == 0:  # native code: past the audit hook
    libc.setsid()
    if libc.fork() == 0:
        libc.prctl(15, {name!r}.encode(), 0, 0, 0)  # PR_SET_NAME
        while True:
            time.sleep(0.2)
    os._exit(0)
time.sleep(0.5)
'''


def processes_named(name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == name:
                found.append(int(entry))
        except OSError:
            pass
    return found


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_no_process_outlives_its_case(isolation, tmp_path, grade):
    name = "gr" + uuid.uuid4().hex[:8]
    _, results = grade(write_zip(tmp_path / "daemon.zip", fusion_homework(DAEMON.format(name=name))),
                       isolation=isolation)
    assert case(results, "fusion")["status"] == "failed"  # it answered (a constant guess)
    deadline = time.time() + 3
    while processes_named(name) and time.time() < deadline:
        time.sleep(0.1)
    assert processes_named(name) == [], "a process the child started outlived its case"


FORKS = '''
import ctypes, os, time
libc = ctypes.CDLL(None)
started = 0
for _ in range(40):
    pid = libc.fork()
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    if pid < 0:
        break
    started += 1
raise RuntimeError(f"started {started} processes")
'''


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_process_count_is_limited(isolation, tmp_path, grade):
    text, results = grade(write_zip(tmp_path / "forks.zip", fusion_homework(FORKS)), isolation=isolation, tasks=8)
    started = int(re.search(r"started (\d+) processes", case(results, "fusion")["message"]).group(1))
    if "processes are not counted" in text:  # said plainly where the system gives no way (root, no cgroup)
        assert started == 40
    else:
        assert started < 8, text


MEMFD = '''
import os
fd = os.memfd_create("hoard")
chunk = b"x" * 2**20
for _ in range(700):
    os.write(fd, chunk)
raise RuntimeError("held 700 MB of shared memory")
'''


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_shared_memory_counts_where_the_system_allows(isolation, tmp_path, grade):
    text, results = grade(write_zip(tmp_path / "memfd.zip", fusion_homework(MEMFD)), isolation=isolation,
                          memory_mb=400)
    fusion = case(results, "fusion")
    if "shared memory included" in text:
        assert fusion["status"] == "memory" and "shared memory included" in fusion["message"], fusion
    else:
        assert "shared memory not counted" in text


@needs_namespaces
def test_scratch_folder_is_size_limited_in_namespace_mode(tmp_path, grade):
    load = ("chunk = b'x' * 2**20\nwritten = 0\ntry:\n    for i in range(200):\n"
            "        with open(f'fill{i}', 'wb') as f:\n            f.write(chunk * 1)\n        written += 1\n"
            "except OSError as e:\n    raise RuntimeError(f'stopped after {written} MB: {e.strerror}')\n"
            "raise RuntimeError('wrote 200 MB')")
    _, results = grade(write_zip(tmp_path / "fill.zip", fusion_homework(load)), isolation="namespace", scratch_mb=64)
    message = case(results, "fusion")["message"]
    found = re.search(r"stopped after (\d+) MB: No space left", message)
    assert found, message
    written = int(found.group(1))
    assert written < 64, message


@needs_namespaces
def test_namespace_child_sees_a_minimal_file_system(tmp_path, cache, grade):
    sock_path = tmp_path / "db.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen(1)
    try:
        look = f'''
import os
seen = [p for p in [{str(ROOT)!r}, {str(cache)!r}, {str(sock_path)!r}, {str(tmp_path / "look.zip")!r},
                    {str(Path.home() / ".cache")!r}, "/run", "/var", "/home", "/mnt"] if os.path.lexists(p)]
raise RuntimeError(f"seen: {{seen}}; usr: {{os.path.isdir('/usr')}}")  # lexists and isdir: no audit event
'''
        _, results = grade(write_zip(tmp_path / "look.zip", fusion_homework(look)), isolation="namespace")
    finally:
        server.close()
    message = case(results, "fusion")["message"]
    assert "seen: [];" in message, message
    assert "usr: True" in message


def test_cleanup_never_crosses_into_another_file_system(tmp_path):
    if not namespaces_available():
        pytest.skip("this system has no unprivileged user namespaces (needed to mount without root)")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("mine")
    work = tmp_path / "work"
    (work / "sandbox" / "mnt").mkdir(parents=True)
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import subprocess\n"
              f"subprocess.run(['mount', '--bind', {str(keep)!r}, {str(work / 'sandbox' / 'mnt')!r}], check=True)\n"
              "from grader.grading import remove_tree\n"
              f"try:\n    remove_tree(__import__('pathlib').Path({str(work)!r}))\nexcept RuntimeError as e:\n"
              "    print('refused:', e)\n")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert "refused:" in proc.stdout and "is a mount inside" in proc.stdout, proc.stdout + proc.stderr
    assert (keep / "precious").read_text() == "mine"
    remove_tree(work)  # outside that namespace the mount is gone, and the folder goes
    assert not work.exists()
