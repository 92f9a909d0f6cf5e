"""What runs inside the grader's child process: a submission's model answers held-out inputs.

The grader starts this file with a fresh `python -I` in a temporary folder (its sandbox) that
holds a copy of the submission's `homework/`, the kit's `worlds/`, `generate_qa.py` and, for the
VLM and CLIP, `data/base_vlm/`, the held-out inputs without their labels (`inputs/`) and
`task.json`. It writes `out/answers.json` (or `out/answers.npy`) and `out/status.json`; the
grader reads only those two files, checks them, and computes every score itself.

This file is a copy the grader put in the sandbox (so nothing about the child names the kit). It
imports nothing of the grader and nothing but the standard library before it has set its
resource limits (from task.json: CPU time, address space, file size, processes) and installed its
guard: a Python audit hook that lets it read only what task.json lists as readable (never what
it lists as hidden: the cache, the kit), write only in the sandbox, and refuses network access,
starting programs, signalling other processes and bytecode from the sandbox. The hook is a second
line of defence against pure Python only; the first is the process itself (its user, its cgroup,
the wall-clock timeout, and Linux namespaces where the system allows them).
"""

import json
import os
import sys
import time

SANDBOX = os.path.realpath(os.getcwd())
OUT = os.path.join(SANDBOX, "out")


def install_guard(task: dict) -> None:
    """Refuse, from now on and for good, what a submission has no business doing.

    Reads are allowed only under the roots the grader lists (the sandbox, the Python runtime, the
    system's libraries) and never under its hidden ones (the held-out cache, the kit itself);
    writes only inside the sandbox. A path relative to a directory descriptor is resolved through
    /proc/self/fd, and descriptors of directories outside the sandbox are never handed out, so
    `dir_fd=` and integer descriptors lead nowhere new. Functions that start processes or signal
    them without an audit event of their own are replaced, and cannot be imported afresh.
    """
    realpath, sep, fsdecode, isdir, readlink = os.path.realpath, os.sep, os.fsdecode, os.path.isdir, os.readlink
    join, isabs, normpath = os.path.join, os.path.isabs, os.path.normpath
    sandbox = SANDBOX
    hidden_roots = tuple(realpath(h) for h in task["hidden"])
    readable_roots = tuple(realpath(r) for r in task["readable"]) + (sandbox,)
    own_pid = os.getpid()
    writable_devices = ("/dev/null",)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    blocked = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.forkpty", "pty.spawn", "os.startfile", "sqlite3.connect", "sqlite3.connect/handle",
               "os.symlink", "gc.get_referrers", "gc.get_referents", "gc.get_objects")
    # event -> (which arguments are paths it writes to, which are their dir_fd, whether a descriptor may stand
    # for the path): a descriptor is refused where the call changes the file whatever the descriptor's mode
    writes = {"os.remove": ((0,), (1,), False), "os.rmdir": ((0,), (1,), False), "os.mkdir": ((0,), (2,), False),
              "os.rename": ((0, 1), (2, 3), False), "os.link": ((1,), (2, 3), False),
              "os.chmod": ((0,), (2,), False), "os.chown": ((0,), (3,), False), "os.utime": ((0,), (3,), False),
              "os.truncate": ((0,), (), True), "os.chflags": ((0,), (), False), "os.lchflags": ((0,), (), False),
              "os.setxattr": ((0,), (), False), "os.removexattr": ((0,), (), False),
              "shutil.rmtree": ((0,), (), False)}
    reimport = {"_posixsubprocess", "posix", "_signal", "signal", "_imp"}  # modules whose functions are replaced

    def inside(path: str, root: str) -> bool:
        return path == root or path.startswith(root.rstrip(sep) + sep)

    def resolve(path, dir_fd=None) -> str:
        if isinstance(path, int):
            path = f"/proc/self/fd/{path}"
        path = fsdecode(path)
        if not isabs(path):
            if normpath(path).split(sep)[0] == "..":
                raise PermissionError(f"{path}: the grader does not let a submission climb out of a folder with '..'")
            if dir_fd is not None:
                try:
                    path = join(readlink(f"/proc/self/fd/{dir_fd}"), path)
                except OSError:
                    raise PermissionError(f"{path}: dir_fd={dir_fd} is not a folder the grader knows") from None
        return realpath(path)

    def check_read(path, dir_fd=None) -> str:
        real = resolve(path, dir_fd)
        for root in hidden_roots:
            if inside(real, root) and not inside(real, sandbox):
                raise PermissionError(f"{fsdecode(path)}: the grader's own files are off limits")
        if real.startswith("/proc/"):
            pid = real.split("/")[2]
            if pid.isdigit() and int(pid) != own_pid:
                raise PermissionError(f"{fsdecode(path)}: other processes are off limits in the grader")
        elif not any(inside(real, root) for root in readable_roots):
            raise PermissionError(f"{fsdecode(path)}: outside what the grader lets a submission read (its own folder "
                                  "and the Python runtime)")
        return real

    def check_write(path, dir_fd=None) -> None:
        real = resolve(path, dir_fd)
        if not (inside(real, sandbox) or real in writable_devices):
            raise PermissionError(f"{fsdecode(path)}: the grader lets a submission write only in its own folder")

    def guard(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return  # a descriptor this process opened, through this very check
            writing = (flags is not None and flags & write_flags) or (isinstance(mode, str) and set(mode) & set("wax+"))
            if writing:
                check_write(path)
            real = check_read(path)
            if not inside(real, sandbox):
                if isdir(real) and mode is None:
                    raise PermissionError(f"{fsdecode(path)}: the grader does not hand out descriptors of folders "
                                          "outside the submission's own")
            elif real.endswith((".pyc", ".pyo")):
                raise PermissionError(f"{fsdecode(path)}: the grader runs only a submission's .py files, no bytecode")
        elif event.startswith("socket."):
            raise PermissionError("network access is blocked in the grader")
        elif event in blocked or event.startswith(("os.exec", "os.spawn", "os.posix_spawn")):
            raise PermissionError(f"the grader does not let a submission do this ({event})")
        elif event in ("os.kill", "os.killpg"):
            if args and args[0] not in (own_pid, 0):
                raise PermissionError("the grader does not let a submission signal other processes")
        elif event in writes:
            paths, dir_fds, descriptor_ok = writes[event]
            for i, d in zip(paths, dir_fds + (None,) * len(paths), strict=False):
                if i >= len(args):
                    continue
                path = args[i]
                dir_fd = args[d] if d is not None and d < len(args) and args[d] not in (None, -1) else None
                if isinstance(path, int) and not descriptor_ok:
                    raise PermissionError(f"the grader does not let a submission change a file by its descriptor ({event})")
                if isinstance(path, (str, bytes, os.PathLike, int)):
                    check_write(path, dir_fd)
                    check_read(path, dir_fd)
            if event == "os.link":  # the file linked to must be one it may read
                dir_fd = args[2] if len(args) > 2 and args[2] not in (None, -1) else None
                check_read(args[0], dir_fd)
        elif event in ("os.listdir", "os.scandir", "os.chdir", "glob.glob", "os.walk", "os.fwalk"):
            if args and isinstance(args[0], (str, bytes, os.PathLike)):
                check_read(args[0])
        elif event == "import" and args and args[0] in reimport:
            raise PermissionError(f"the grader does not let a submission import {args[0]} afresh")
        elif event == "object.__getattr__" and args and any(args[0] is g for g in guarded_functions):
            raise PermissionError("the grader's own functions are off limits")

    def refused(name: str):
        def stub(*_args, **_kwargs):
            raise PermissionError(f"the grader does not let a submission call {name}")
        stub.__name__ = name.rsplit(".", 1)[-1]
        return stub

    # Process starts and signals with no audit event of their own: replaced where they live, before
    # the hook refuses making those modules again (the originals are then unreachable).
    import _imp
    import _posixsubprocess
    import _signal
    import posix
    import signal

    for module, names in ((_posixsubprocess, ("fork_exec",)), (posix, ("pidfd_open", "mkfifo", "mknod")),
                          (os, ("pidfd_open", "mkfifo", "mknod")), (_signal, ("pidfd_send_signal",)),
                          (signal, ("pidfd_send_signal",))):
        for name in names:
            if hasattr(module, name):
                setattr(module, name, refused(f"{module.__name__}.{name}"))
    # _imp.create_builtin makes a builtin module afresh without an audit event: it refuses those
    # names now. The original waits in a default argument, which the hook keeps out of reach.
    def create_builtin(spec, _original=_imp.create_builtin):
        if getattr(spec, "name", None) in reimport:
            raise PermissionError(f"the grader does not let a submission import {spec.name} afresh")
        return _original(spec)

    guarded_functions = (create_builtin,)
    _imp.create_builtin = create_builtin
    sys.addaudithook(guard)


def write_json(name: str, value) -> None:
    tmp = os.path.join(OUT, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, os.path.join(OUT, name))


def one_line(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        code = error.code
        text = code if isinstance(code, str) else f"the code called sys.exit({code!r})"
    else:
        text = str(error) or type(error).__name__
    text = " ".join(str(text).split())
    return text[:400]


def peak_memory_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def check_list(values, n: int, what: str) -> list:
    if hasattr(values, "tolist"):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{what} returned a {type(values).__name__}, not a list")
    if len(values) != n:
        raise ValueError(f"{what} returned {len(values)} answers for {n} inputs")
    return list(values)


def as_int(value):
    """An integer answer as JSON can hold it; anything else becomes None (a wrong answer)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def answer_vlm(model, task: dict) -> None:
    items = json.load(open(os.path.join(SANDBOX, "inputs", "questions.json")))
    answers, started = [], time.time()
    for lo, hi in batches(len(items), task["batch_size"]):
        images = [os.path.join(SANDBOX, "inputs", it["image"]) for it in items[lo:hi]]
        out = check_list(model.answer(images, [it["question"] for it in items[lo:hi]]), hi - lo, "answer()")
        answers += [a[:200] if isinstance(a, str) else None for a in out]
        print(f"[grader] answered {hi}/{len(items)} questions ({time.time() - started:.1f} s)", flush=True)
    write_json("answers.json", answers)


def answer_clip(model, task: dict) -> None:
    import homework.clip

    items = json.load(open(os.path.join(SANDBOX, "inputs", "sets.json")))
    answers, started = [], time.time()
    for lo, hi in batches(len(items), task["batch_size"]):
        images = [os.path.join(SANDBOX, "inputs", it["image"]) for it in items[lo:hi]]
        out = check_list(homework.clip.predict(model, images, [it["candidates"] for it in items[lo:hi]]),
                         hi - lo, "homework.clip.predict()")
        answers += [as_int(a) for a in out]
        print(f"[grader] chose captions for {hi}/{len(items)} images ({time.time() - started:.1f} s)", flush=True)
    write_json("answers.json", answers)


def answer_shapes(model, task: dict) -> None:
    import numpy as np

    rgb = np.load(os.path.join(SANDBOX, "inputs", "rgb.npy"), allow_pickle=False)
    if task["assignment"] == "fusion":
        import homework.fusion

        ranges = np.load(os.path.join(SANDBOX, "inputs", "ranges.npy"), allow_pickle=False)
        out = homework.fusion.predict(model, rgb, ranges)
        what = "homework.fusion.predict()"
    else:
        import homework.cilp

        out = homework.cilp.predict(model, rgb)
        what = "homework.cilp.predict()"
    write_json("answers.json", [as_int(a) for a in check_list(out, len(rgb), what)])


def answer_simclr(model, task: dict) -> None:
    import numpy as np

    import homework.simclr

    videos = np.load(os.path.join(SANDBOX, "inputs", "videos.npy"), allow_pickle=False)
    features = homework.simclr.embed(model, videos)
    if hasattr(features, "detach"):
        features = features.detach().cpu().float().numpy()
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(videos):
        raise ValueError(f"homework.simclr.embed() returned shape {features.shape}; expected ({len(videos)}, D)")
    tmp = os.path.join(OUT, "answers.npy.tmp")
    with open(tmp, "wb") as f:
        np.save(f, features, allow_pickle=False)
    os.replace(tmp, os.path.join(OUT, "answers.npy"))


def answer_robot(model, task: dict) -> None:
    import numpy as np

    import homework.robot as robot

    def load(name: str) -> dict:
        with np.load(os.path.join(SANDBOX, "inputs", name), allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    started = time.time()
    encoded = robot.encode(model, load("episodes.npz"))
    answers = {}
    for missing in (None, *robot.MODALITIES):
        predicted = robot.predict(model, encoded, missing=missing)
        for t in ("material", "outcome"):
            answers[f"{t}_{'all' if missing is None else 'without_' + missing}"] = np.asarray(predicted[t], np.int64)
    print(f"[grader] predicted {len(answers['material_all'])} episodes ({time.time() - started:.1f} s)", flush=True)

    def floats(x) -> np.ndarray:
        return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)

    answers["database"] = floats(robot.embed(model, encoded))
    answers["queries"] = floats(robot.embed(model, robot.encode(model, load("queries.npz"))))
    answers["anomaly_scores"] = floats(robot.anomaly_scores(model, robot.encode(model, load("anomalies.npz"))))
    print(f"[grader] embedded and scored anomalies ({time.time() - started:.1f} s)", flush=True)
    tmp = os.path.join(OUT, "answers.npz.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **answers)
    os.replace(tmp, os.path.join(OUT, "answers.npz"))


ANSWER = {"vlm": answer_vlm, "clip": answer_clip, "fusion": answer_shapes, "cilp": answer_shapes,
          "simclr": answer_simclr, "robot": answer_robot}


def tasks_of_my_user() -> int:
    """Processes and threads running now under this process's real user id (what RLIMIT_NPROC counts)."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            pass
    return count


def apply_limits(limits: dict) -> None:
    """Resource limits, soft = hard, before any of the submission's code runs."""
    import resource

    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * 2**20,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_mb"] * 2**20,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.getuid() != 0:  # the kernel never applies RLIMIT_NPROC to root: the grader's pids cgroup does then
        tasks = tasks_of_my_user() + limits["tasks"]
        resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))


def main() -> None:
    with open(os.path.join(SANDBOX, "task.json")) as f:
        task = json.load(f)
    apply_limits(task["limits"])
    install_guard(task)
    sys.path[:] = [SANDBOX] + sys.path + [p for p in task["sys_path"] if p not in sys.path]
    name, stage, times = task["assignment"], "import", {}
    status = {"ok": False}
    started = time.time()
    try:
        import homework

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(task["threads"])
        stage = "load"
        loader = getattr(homework, f"load_{name}", None)
        if loader is None:
            raise AttributeError(f"homework/__init__.py has no load_{name}()")
        model = loader()
        times["load_s"] = round(time.time() - started, 1)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(task["threads"])
        stage = "predict"
        ANSWER[name](model, task)
        status = {"ok": True}
    except BaseException as error:  # noqa: B036 - everything a submission raises, SystemExit included
        import traceback

        traceback.print_exc()
        # A SystemExit of any kind (the kit's UsageError is one) is a deliberate stop with a message.
        kind = "SystemExit" if isinstance(error, SystemExit) else type(error).__name__
        status = {"ok": False, "error": kind, "message": one_line(error),
                  "module": getattr(error, "name", None) if isinstance(error, ImportError) else None}
    status.update(stage=stage, seconds=round(time.time() - started, 1), peak_mb=round(peak_memory_mb()), **times)
    try:
        write_json("status.json", status)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # no waiting on threads or atexit handlers a submission may have left


if __name__ == "__main__":
    main()
