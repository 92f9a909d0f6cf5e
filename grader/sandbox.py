"""The child process that runs a submission's code, and the walls around it.

`run_child(sandbox, ...)` starts `python -I -B child.py` (a copy the grader put in SANDBOX, so
that nothing about the child points back at the kit) and waits for it. The walls, from the
outside in:

- **Who it runs as.** A grader started as root drops, for the child, to an unprivileged user of
  its own (uid CHILD_UID_BASE + the grader's pid) where the Python runtime is readable by other
  users, else stays uid 0 without a single capability; `setpriv` does it, with no_new_privs.
- **A cgroup** where one can be made (grader/cgroups.py): memory that counts shared memory, a
  process count, and every process of the case killed at its end.
- **Linux namespaces** where the system allows them (`isolation="namespace"`, the default when
  available): no network (a new network namespace), no other process in sight (a new PID
  namespace, whose processes all die with its init), and a minimal file system: a new root holding
  only the Python runtime and the system's libraries read-only, a few devices, a /proc of its own,
  and the child's folder, a size-limited tmpfs holding a copy of the submission, the kit's public
  code and inputs read-only, and `out/`. Nothing of the kit, the grader's other folders, the
  held-out cache, other submissions or any socket is there. A nested user namespace then locks
  the mounts. When the child ends, the namespace's init kills whatever it left and copies its
  answers (bounded in size) back to the grader.
- **Resource limits** (always): a wall-clock timeout that kills everything of the case, and
  RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC and no core files, which child.py sets on
  itself before the submission's code runs (no preexec_fn: the grader may have threads).
- **A fresh environment** (always): `python -I` (no PYTHONPATH, no user site), HOME, TMPDIR and
  the caches in SANDBOX, offline flags for Hugging Face, thread counts, and nothing else of the
  grader's environment (no GRADER_SEED).
- **An audit hook** inside the child (always; see child.py), the only wall of the file system
  where namespaces are not available (`isolation="process"`): it stops pure Python, not native
  code (ctypes, a C extension), which can do whatever the child's user may.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from grader import rubric
from grader.cgroups import CaseGroup

CHILD_SCRIPT = Path(__file__).resolve().parent / "child.py"
ISOLATIONS = ("auto", "namespace", "process")
UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "--net", "--pid", "--fork", "--kill-child",
           "--mount-proc"]
CHILD_UID_BASE = 3_000_000  # a root grader's children run as CHILD_UID_BASE + its pid: no one else's uid
SYSTEM_ROOTS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")  # shared libraries and tools
SYSTEM_READABLE = SYSTEM_ROOTS + ("/etc", "/dev", "/sys", "/proc")  # what the audit hook lets a child read besides
DEVICES = ("null", "zero", "full", "random", "urandom")
RESULTS = {"answers.json": rubric.ANSWERS_MAX_MB * 2**20, "answers.npy": rubric.ANSWERS_MAX_MB * 2**20,
           "answers.npz": rubric.ANSWERS_MAX_MB * 2**20,
           "status.json": rubric.STATUS_MAX_KB * 2**10}  # what the namespace's init copies back, and its most
JAIL_FAILED = 97  # the jail script's exit code when it could not build the child's file system
LAUNCH_FAILED = 96  # the launcher's, when it could not join the case's cgroup


@dataclass
class Limits:
    timeout_s: float  # wall clock, every process of the case is killed after it
    memory_mb: int  # RLIMIT_AS, and the cgroup's memory limit
    file_size_mb: int  # RLIMIT_FSIZE
    threads: int  # torch / OpenMP threads
    tasks: int = rubric.TASKS  # processes and threads it may add
    scratch_mb: int = rubric.SCRATCH_MB  # its folder's size in namespace mode


@dataclass
class ChildRun:
    returncode: int | None
    timed_out: bool
    seconds: float
    signal: int | None  # the signal that ended the child, if one did
    isolation: str  # "namespace" or "process"
    oom_killed: bool = False  # the cgroup's memory limit killed something
    leftovers: int = 0  # processes the child left, killed at its end
    peak_mb: float | None = None  # the cgroup's peak memory, shared memory included


# ----------------------------------------------------------------------------------------------
# Who the child runs as, and what holds it
# ----------------------------------------------------------------------------------------------


def runtime_paths(package_paths: list[str]) -> list[str]:
    """The folders (and zip files) the child's Python needs: its prefixes and its import path."""
    found = []
    for p in [sys.prefix, sys.base_prefix, sys.exec_prefix, *package_paths]:
        if p and os.path.exists(p):
            for q in (os.path.abspath(p), os.path.realpath(p)):
                if q not in found:
                    found.append(q)
    return found


def readable_by_others(path: str) -> bool:
    """Whether a user other than the owner can reach and read PATH (every folder above it searchable)."""
    real = Path(os.path.realpath(path))
    try:
        for folder in [*reversed(real.parents), real]:
            mode = folder.stat().st_mode
            need = stat.S_IXOTH | (stat.S_IROTH if folder == real else 0)
            if stat.S_ISDIR(mode) and mode & need != need:
                return False
            if not stat.S_ISDIR(mode) and not mode & stat.S_IROTH:
                return False
    except OSError:
        return False
    return True


@dataclass
class Credentials:
    prefix: list[str]  # the command that drops privileges before the child's own
    uid: int | None  # the child's own uid, when it gets one
    words: str  # for the report


def child_credentials(runtime: list[str], isolation: str) -> Credentials:
    """How the child drops the grader's privileges (a root grader's only; nothing to drop otherwise).

    A root grader gives the child a user of its own where the runtime is readable by others. Else,
    in process mode, the child stays uid 0 without a capability; in namespace mode it stays root
    of its own user namespace (the kernel lets no capability-less process map uid 0 into one),
    which the minimal file system and the nested namespace hold."""
    if os.geteuid() != 0:
        return Credentials([], None, f"the grader's own user (uid {os.geteuid()})")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return Credentials([], None, "root with every capability: install util-linux's setpriv to drop them")
    drop = [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]
    if all(readable_by_others(p) for p in runtime):
        uid = CHILD_UID_BASE + os.getpid()
        return Credentials([*drop, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"], uid,
                           f"an unprivileged user of its own (uid {uid}), no capabilities")
    if isolation == "namespace":
        return Credentials([], None, "root of its own user namespace only (the Python runtime is not readable by "
                                     "other users, so no other user can run it)")
    return Credentials([*drop, "--"], None, "uid 0 without any capability (the Python runtime is not readable by "
                                            "other users, so no other user can run it)")


def _launcher(procs_files: list[Path], credentials: Credentials, command: list[str]) -> list[str]:
    """The child's command, started by a shell that first joins the case's cgroup (so that
    everything the child starts is in it) and then drops privileges."""
    script = ('while [ "$1" != -- ]; do echo $$ > "$1" || exit ' + str(LAUNCH_FAILED) + '; shift; done; shift; '
              'exec "$@"')
    return ["/bin/sh", "-c", script, "grader-launch", *map(str, procs_files), "--", *credentials.prefix, *command]


def _subreaper() -> bool:
    """Make this process the one that orphans of its children are given to (Linux), so that a
    process that left its session (setsid) can still be found and killed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, real uid) of every process in sight."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                found[int(entry)] = (int(fields["PPid"]), int(fields["Uid"].split()[0]))
            except (OSError, KeyError, ValueError):
                pass
    return found


def _descendants(processes: dict[int, tuple[int, int]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_leftovers(before: set[int], uid: int | None, group: CaseGroup | None, patience_s: float = 5.0) -> int:
    """Kill every process the case left: its cgroup's, its own uid's, and any new descendant of the
    grader (orphans come back to it, a subreaper); how many there were."""
    killed: set[int] = set()
    deadline = time.time() + patience_s
    while True:
        processes = _processes()
        left = _descendants(processes, os.getpid()) - before
        if uid is not None:
            left |= {pid for pid, (_, u) in processes.items() if u == uid}
        if group is not None:
            left |= group.pids()
        left.discard(os.getpid())
        if not left or time.time() > deadline:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed |= left
        time.sleep(0.02)
        for pid in killed:  # orphans handed to this process are its children now: reap them
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
    return len(killed)


# ----------------------------------------------------------------------------------------------
# Namespaces: the child's minimal file system
# ----------------------------------------------------------------------------------------------


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass
class Tree:
    """What the child's file system holds, besides its devices, /proc and its own folder."""

    runtime: list[str]  # bound read-only at the same paths
    hidden: list[str]  # covered by an empty tmpfs where a runtime folder holds them (the kit, the cache)
    readonly: list[str]  # entries of the sandbox bound read-only (inputs, the kit's public code)
    copied: list[str]  # entries of the sandbox copied into the child's tmpfs (its homework/)


def _system_binds(runtime: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(folders and files to bind, symlinks (path, target) to recreate) for the child's root."""
    binds, links = [], []
    for p in [*SYSTEM_ROOTS, *runtime]:
        if os.path.islink(p) and os.path.dirname(p) == "/":
            links.append((p, os.readlink(p)))
            p = os.path.realpath(p)
        if os.path.exists(p) and not any(_inside(p, b) for b in binds):
            binds = [b for b in binds if not _inside(b, p)] + [p]
    return sorted(binds), links


def _jail_script(sandbox: Path, tree: Tree, command: list[str], scratch_mb: int = rubric.SCRATCH_MB) -> str:
    """The shell script run as root of the new namespaces: build the child's root in sandbox/../root,
    enter it, run COMMAND in a nested namespace that can neither undo it nor reach the results
    folder, then kill what the child left and copy its answers back. Not exec'd, so that the shell
    stays the namespace's init."""
    q = shlex.quote
    sb = str(sandbox)
    root = str(sandbox.parent / "root")
    binds, links = _system_binds(tree.runtime)
    lines = ["set -e", f"trap 'exit {JAIL_FAILED}' EXIT", f"R={q(root)}", f"SB={q(sb)}",
             "mount -t tmpfs -o size=16m,mode=755,nosuid,nodev grader-root \"$R\"",
             "robind() { mount --bind \"$1\" \"$2\"; mount -o remount,bind,ro,nosuid,nodev \"$2\" 2>/dev/null"
             " || mount -o remount,bind,ro,nosuid,nodev,noexec \"$2\"; }"]
    for path, target in links:
        lines.append(f"ln -s {q(target)} \"$R\"{q(path)}")
    for b in binds:
        if os.path.isdir(b):
            lines.append(f"mkdir -p \"$R\"{q(b)}")
        else:
            lines.append(f"mkdir -p \"$R\"{q(os.path.dirname(b))}; : > \"$R\"{q(b)}")
        lines.append(f"robind {q(b)} \"$R\"{q(b)}")
    for h in tree.hidden:
        if any(_inside(h, b) for b in binds) and os.path.isdir(h):
            lines.append(f"mount -t tmpfs -o ro,size=4k,mode=000 grader-hidden \"$R\"{q(h)}")
    lines += ["mkdir -p \"$R/dev/shm\" \"$R/proc\" \"$R/etc\" \"$R/tmp\" \"$R/.results\"",
              "mount -t tmpfs -o size=64m,mode=1777,nosuid,nodev grader-tmp \"$R/tmp\""]
    for d in DEVICES:
        lines.append(f": > \"$R/dev/{d}\"; mount --bind /dev/{d} \"$R/dev/{d}\"")
    for gpu in sorted(p for p in os.listdir("/dev") if p.startswith("nvidia")) if os.path.isdir("/dev") else []:
        if not os.path.isdir(f"/dev/{gpu}"):
            lines.append(f": > \"$R/dev/{gpu}\"; mount --bind /dev/{gpu} \"$R/dev/{gpu}\"")
    lines += [
        "ln -s /proc/self/fd \"$R/dev/fd\"",
        f"mount -t tmpfs -o size={rubric.SHM_MB}m,mode=1777,nosuid,nodev grader-shm \"$R/dev/shm\"",
        "mount -t proc -o nosuid,nodev,noexec proc \"$R/proc\"",
        "printf 'root:x:0:0:root:/:/bin/sh\\nnobody:x:65534:65534:nobody:/:/bin/sh\\n' > \"$R/etc/passwd\"",
        "printf 'root:x:0:\\nnogroup:x:65534:\\n' > \"$R/etc/group\"",
    ]
    if os.path.isfile("/etc/ld.so.cache"):
        lines.append(": > \"$R/etc/ld.so.cache\"; robind /etc/ld.so.cache \"$R/etc/ld.so.cache\"")
    lines += ["mkdir -p \"$R$SB\"",
              f"mount -t tmpfs -o size={scratch_mb}m,mode=755,nosuid,nodev grader-scratch \"$R$SB\"",
              "mkdir \"$R$SB/out\" \"$R$SB/tmp\"",
              # out/ apart, so that a full scratch folder still leaves room for the answers and the status
              f"mount -t tmpfs -o size={rubric.ANSWERS_MAX_MB + 2}m,mode=755,nosuid,nodev grader-out \"$R$SB/out\""]
    for name in tree.copied:
        lines.append(f"cp -R \"$SB\"/{q(name)} \"$R$SB\"/{q(name)}")
    for name in tree.readonly:
        src = sandbox / name
        if src.is_dir():
            lines.append(f"mkdir -p \"$R$SB\"/{q(name)}; robind \"$SB\"/{q(name)} \"$R$SB\"/{q(name)}")
        elif src.is_file():
            lines.append(f"mkdir -p \"$R$SB\"/{q(os.path.dirname(name) or '.')}; : > \"$R$SB\"/{q(name)}; "
                         f"robind \"$SB\"/{q(name)} \"$R$SB\"/{q(name)}")
    lines += [
        "mount --bind \"$SB/out\" \"$R/.results\"",
        "cd \"$R\"; mkdir .old; pivot_root . .old; cd /; umount -l /.old; rmdir /.old",
        "mount -o remount,ro,nosuid,nodev /",
        "cd \"$SB\"",
        "set +e",
        "trap - EXIT",
    ]
    inner = "umount -l /.results && exec unshare --user --mount -- \"$@\""
    lines.append("unshare --mount -- /bin/sh -c " + q(inner) + " grader-child " + " ".join(q(c) for c in command))
    lines += [
        "rc=$?",
        "kill -9 -1 2>/dev/null",  # from the init of a PID namespace: every other process in it
        "sleep 0.05",
    ]
    for name, limit in RESULTS.items():
        lines.append(f"[ -d out ] && [ ! -L out ] && [ -f out/{name} ] && [ ! -L out/{name} ] && "
                     f"head -c {limit + 1} out/{name} > /.results/{name}")
    lines.append("exit $rc")
    return "\n".join(lines)


def _probe_script(sandbox: Path) -> str:
    """A jail with nothing of the kit in it that checks that the host's files are out of sight."""
    tree = Tree(runtime=[], hidden=[], readonly=[], copied=[])
    host = shlex.quote(str(sandbox.parent / "host-only"))
    return _jail_script(sandbox, tree, ["/bin/sh", "-c", f"! test -e {host} && ! touch /probe 2>/dev/null"])


_NAMESPACES_OK: dict[tuple, bool] = {}


def namespaces_available() -> bool:
    """Whether this machine lets the grader build the namespace jail, as the child's user (probed once)."""
    credentials = child_credentials(runtime_paths(_package_paths_for_probe()), "namespace")
    key = tuple(credentials.prefix)
    if key not in _NAMESPACES_OK:
        ok = False
        if sys.platform.startswith("linux") and all(shutil.which(t) for t in ("unshare", "mount", "pivot_root")):
            with tempfile.TemporaryDirectory(prefix="grader-probe-") as probe:
                sandbox = Path(probe).resolve() / "sandbox"
                for d in (sandbox / "out", sandbox.parent / "root", sandbox.parent / "host-only"):
                    d.mkdir(parents=True)
                _hand_over(Path(probe), sandbox, credentials.uid)
                try:
                    done = subprocess.run(credentials.prefix + UNSHARE + ["--", "/bin/sh", "-c", _probe_script(sandbox)],
                                          capture_output=True, timeout=60)
                    ok = done.returncode == 0
                except (OSError, subprocess.SubprocessError):
                    ok = False
        _NAMESPACES_OK[key] = ok
    return _NAMESPACES_OK[key]


def _package_paths_for_probe() -> list[str]:
    return [p for p in sys.path if p and os.path.isabs(p)]


def resolve_isolation(isolation: str) -> str:
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    if isolation == "auto":
        return "namespace" if namespaces_available() else "process"
    if isolation == "namespace" and not namespaces_available():
        raise SystemExit("error: --isolation namespace: this machine does not let the grader build its namespace "
                         "jail (`unshare --user --map-root-user --mount --net --pid` and pivot_root); "
                         "use --isolation process")
    return isolation


def child_environment(sandbox: Path, threads: int) -> dict[str, str]:
    """The child's whole environment: nothing of the grader's but the GPU selection."""
    tmp = sandbox / "tmp"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(sandbox), "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(tmp / "cache"), "LOGNAME": "student",
        "USER": "student", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1",
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
            "memory_mb": limits.memory_mb, "file_size_mb": limits.file_size_mb, "tasks": limits.tasks}


def _hand_over(work: Path, sandbox: Path, uid: int | None) -> None:
    """Let the child's own user work in SANDBOX: the folders above it searchable (not listable),
    the sandbox its own."""
    if uid is None:
        return
    folder = sandbox.parent
    while True:
        folder.chmod(0o711)
        if folder == work or folder == folder.parent:
            break
        folder = folder.parent
    for dirpath, dirnames, filenames in os.walk(sandbox):
        os.chown(dirpath, uid, uid)
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


def walls(isolation: str, credentials: Credentials, group: CaseGroup | None, scratch_mb: int) -> str:
    """One line on what held the child, for the report."""
    parts = [f"as {credentials.words}"]
    parts.append(group.describe() if group else "no cgroup (the system allows none here): memory is limited as "
                 "address space (shared memory not counted)" + ("" if credentials.uid or os.geteuid() else
                                                               ", and processes are not counted for root"))
    if isolation == "namespace":
        parts.append(f"a minimal file system with a {scratch_mb} MB scratch folder, no network, no other "
                     "process in sight")
    else:
        parts.append("process isolation: an audit hook stops pure Python; native code (ctypes, C extensions) can "
                     "read what the child's user may, use the network and start programs; disk use is bounded per "
                     "file only")
    return "; ".join(parts)


def run_child(sandbox: Path, log: Path, limits: Limits, tree: Tree, isolation: str = "auto",
              name: str = "case", work: Path | None = None) -> tuple[ChildRun, str]:
    """Run SANDBOX/child.py under LIMITS, its output to LOG; (how it ended, what held it, in one
    line). Never raises for what the child does."""
    isolation = resolve_isolation(isolation)
    sandbox = sandbox.resolve()
    for d in ("tmp", "out"):
        (sandbox / d).mkdir(exist_ok=True)
    credentials = child_credentials(tree.runtime, isolation)
    _hand_over(work or sandbox.parent, sandbox, credentials.uid)
    command = [sys.executable, "-I", "-B", str(sandbox / "child.py")]
    if isolation == "namespace":
        (sandbox.parent / "root").mkdir(exist_ok=True)
        if credentials.uid is not None:
            os.chown(sandbox.parent / "root", credentials.uid, credentials.uid)
        command = UNSHARE + ["--", "/bin/sh", "-c", _jail_script(sandbox, tree, command, limits.scratch_mb)]
    group = CaseGroup.make(name, limits.memory_mb, limits.tasks)
    _subreaper()
    before = _descendants(_processes(), os.getpid())
    launch = _launcher(group.procs_files if group else [], credentials, command)
    started = time.time()
    timed_out = False
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(launch, cwd=sandbox, env=child_environment(sandbox, limits.threads),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # whatever the child left behind in its group
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                leftovers = kill_leftovers(before, credentials.uid, group)
        oom = group.oom_killed() if group else False
        peak = group.peak_mb() if group else None
    finally:
        if group is not None:
            group.remove()
    code = proc.returncode
    sig = -code if code < 0 else (code - 128 if isolation == "namespace" and 128 < code < 160 else None)
    run = ChildRun(returncode=code, timed_out=timed_out, seconds=time.time() - started, signal=sig,
                   isolation=isolation, oom_killed=oom, leftovers=leftovers, peak_mb=peak)
    return run, walls(isolation, credentials, group, limits.scratch_mb)
