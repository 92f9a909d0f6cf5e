"""The child process that runs a submission's code, and the walls around it.

`run_child(sandbox, ...)` starts `python -I -B grader/child.py` in SANDBOX (a temporary folder
the grader filled) and waits for it. The walls, from the outside in:

- **Linux namespaces** where unprivileged user namespaces work (`isolation="namespace"`, the
  default when available): a new network namespace (no network at all), a new PID namespace
  (other processes, and the grader's command line and environment, cannot be seen; when the
  child's init dies every process in it dies), and a new mount namespace in which every mount is
  read-only but SANDBOX and the folders in HIDDEN (the held-out data) are covered by an empty
  tmpfs. A second, nested user namespace then locks those mounts, so that the child cannot
  unmount or remount them.
- **Resource limits** (always): a wall-clock timeout that kills the whole process group, and
  RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE (largest file) and no core files, which child.py
  sets on itself before the submission's code runs (no preexec_fn: the grader may have threads).
- **A fresh environment** (always): `python -I` (no PYTHONPATH, no user site), HOME, TMPDIR and
  the caches in SANDBOX, offline flags for Hugging Face, thread counts, and nothing else of the
  grader's environment (no GRADER_SEED).
- **An audit hook** inside the child (always; see child.py), the only wall where namespaces
  are not available (`isolation="process"`): best effort, since Python code can reach around it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHILD_SCRIPT = Path(__file__).resolve().parent / "child.py"
ISOLATIONS = ("auto", "namespace", "process")
UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "--net", "--pid", "--fork", "--kill-child",
           "--mount-proc"]


@dataclass
class Limits:
    timeout_s: float  # wall clock, the whole process group is killed after it
    memory_mb: int  # RLIMIT_AS
    file_size_mb: int  # RLIMIT_FSIZE
    threads: int  # torch / OpenMP threads


@dataclass
class ChildRun:
    returncode: int | None
    timed_out: bool
    seconds: float
    signal: int | None  # the signal that ended the child, if one did
    isolation: str  # "namespace" or "process"


JAIL_FAILED = 97  # the jail script's exit code when the file system stayed writable


def _jail_script(sandbox: Path, hidden: list[Path], command: list[str]) -> str:
    """The shell script run as root of the new namespaces: hide, make read-only, check, then drop
    to a nested namespace that can no longer undo it and run COMMAND (not exec'd, so that the
    shell stays the namespace's init and the child gets ordinary signal handling)."""
    sb = shlex.quote(str(sandbox))
    escaped = shlex.quote("".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in str(sandbox)))  # as mountinfo writes it
    check = shlex.quote(str(sandbox.parent / ".grader-jail-check"))
    lines = ["set -e"]
    lines += [f"mount -t tmpfs -o ro,size=4k,mode=000 none {shlex.quote(str(folder))}" for folder in hidden]
    lines += [
        f"mount --bind {sb} {sb}",
        "while read -r _ _ _ _ m _; do",
        f"  [ \"$m\" = {escaped} ] || mount -o remount,bind,ro \"$m\" 2>/dev/null || true",
        "done < /proc/self/mountinfo",
        f"if touch {check} 2>/dev/null; then echo 'grader: the file system stayed writable' >&2; exit {JAIL_FAILED}; fi",
        f"cd {sb}",
        "unshare --user --mount -- " + " ".join(shlex.quote(c) for c in command),
    ]
    return "\n".join(lines)


_NAMESPACES_OK: bool | None = None


def namespaces_available() -> bool:
    """Whether this machine lets an unprivileged process build the namespace jail (probed once)."""
    global _NAMESPACES_OK
    if _NAMESPACES_OK is None:
        ok = False
        if sys.platform.startswith("linux") and shutil.which("unshare") and shutil.which("mount"):
            with tempfile.TemporaryDirectory(prefix="grader-probe-") as probe:
                sandbox = Path(probe).resolve() / "sandbox"
                sandbox.mkdir()
                try:
                    done = subprocess.run(UNSHARE + ["--", "sh", "-c", _jail_script(sandbox, [], ["true"])],
                                          capture_output=True, timeout=60)
                    ok = done.returncode == 0
                except (OSError, subprocess.SubprocessError):
                    ok = False
        _NAMESPACES_OK = ok
    return _NAMESPACES_OK


def resolve_isolation(isolation: str) -> str:
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    if isolation == "auto":
        return "namespace" if namespaces_available() else "process"
    if isolation == "namespace" and not namespaces_available():
        raise SystemExit("error: --isolation namespace: this machine does not allow unprivileged user namespaces "
                         "(`unshare --user --map-root-user --mount --net --pid` fails); use --isolation process")
    return isolation


def child_environment(sandbox: Path, threads: int) -> dict[str, str]:
    """The child's whole environment: nothing of the grader's but the GPU selection."""
    tmp = sandbox / "tmp"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(sandbox), "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(tmp / "cache"),
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf"),
        "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(tmp / "matplotlib"),
        "TQDM_DISABLE": "1",
    }
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def limit_values(limits: Limits) -> dict:
    """The resource limits child.py applies to itself first thing (task.json's "limits")."""
    return {"cpu_s": int(limits.timeout_s * (limits.threads + 1)) + 10,  # the wall clock should stop it first
            "memory_mb": limits.memory_mb, "file_size_mb": limits.file_size_mb}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(sandbox: Path, log: Path, limits: Limits, hidden: list[Path], isolation: str = "auto") -> ChildRun:
    """Run grader/child.py in SANDBOX under LIMITS, its output to LOG; never raises for what the
    child does."""
    isolation = resolve_isolation(isolation)
    sandbox = sandbox.resolve()
    (sandbox / "tmp").mkdir(exist_ok=True)
    (sandbox / "out").mkdir(exist_ok=True)
    command = [sys.executable, "-I", "-B", str(CHILD_SCRIPT)]
    if isolation == "namespace":
        hidden = [h.resolve() for h in hidden if h.is_dir()]
        command = UNSHARE + ["--", "sh", "-c", _jail_script(sandbox, hidden, command)]
    started = time.time()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=sandbox, env=child_environment(sandbox, limits.threads),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise
        _kill_group(proc.pid)  # whatever the child left behind in its group
        if proc.poll() is None:
            proc.kill()  # the child itself, had it left its process group (os.setsid)
        proc.wait()
    code = proc.returncode
    sig = -code if code < 0 else (code - 128 if isolation == "namespace" and 128 < code < 160 else None)
    return ChildRun(returncode=code, timed_out=timed_out, seconds=time.time() - started, signal=sig,
                    isolation=isolation)
