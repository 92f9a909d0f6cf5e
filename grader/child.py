"""What runs inside the grader's child process: a submission's model answers held-out inputs.

The grader starts this file with a fresh `python -I` in a temporary folder (its sandbox) that
holds a copy of the submission's `homework/`, the kit's `worlds/`, `generate_qa.py` and, for the
VLM and CLIP, `data/base_vlm/`, the held-out inputs without their labels (`inputs/`) and
`task.json`. It writes `out/answers.json` (or `out/answers.npy`) and `out/status.json`; the
grader reads only those two files, checks them, and computes every score itself.

This file imports nothing of the grader and nothing but the standard library before it has set
its resource limits (from task.json: CPU time, address space, file size) and installed its
guard: a Python audit hook that refuses network access, starting programs, signalling other
processes, writing outside the sandbox and reading the folders the grader names in task.json
(its held-out data). The hook is a second line of defence; the first is the process itself
(the grader's wall-clock timeout, and Linux namespaces where the system allows them).
"""

import json
import os
import sys
import time

SANDBOX = os.path.realpath(os.getcwd())
OUT = os.path.join(SANDBOX, "out")


def install_guard(hidden: list[str]) -> None:
    """Refuse, from now on and for good, what a submission has no business doing."""
    realpath, sep, fsdecode = os.path.realpath, os.sep, os.fsdecode
    sandbox = SANDBOX
    hidden_roots = tuple(realpath(h) for h in hidden)
    own_pid = os.getpid()
    writable_devices = ("/dev/null",)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    blocked = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.forkpty", "pty.spawn", "os.startfile")
    # event -> which of its arguments are paths it writes to
    writes = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.replace": (0, 1),
              "os.symlink": (1,), "os.link": (0, 1), "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,),
              "os.utime": (0,), "os.chflags": (0,), "os.lchflags": (0,), "os.mkfifo": (0,), "os.mknod": (0,),
              "shutil.rmtree": (0,)}

    def inside(path: str, root: str) -> bool:
        return path == root or path.startswith(root + sep)

    def check_read(path) -> None:
        real = realpath(fsdecode(path))
        for root in hidden_roots:
            if inside(real, root):
                raise PermissionError(f"{fsdecode(path)}: the grader's held-out data is off limits")
        if real.startswith("/proc/"):
            pid = real.split("/")[2]
            if pid.isdigit() and int(pid) != own_pid:
                raise PermissionError(f"{fsdecode(path)}: other processes are off limits in the grader")

    def check_write(path) -> None:
        real = realpath(fsdecode(path))
        if not (inside(real, sandbox) or real in writable_devices):
            raise PermissionError(f"{fsdecode(path)}: the grader lets a submission write only in its own folder")

    def guard(event: str, args: tuple) -> None:
        if event == "open":
            path, _mode, flags = args
            if path is None or isinstance(path, int):
                return
            if flags is not None and flags & write_flags:
                check_write(path)
            check_read(path)
        elif event.startswith("socket."):
            raise PermissionError("network access is blocked in the grader")
        elif event in blocked or event.startswith(("os.exec", "os.spawn", "os.posix_spawn")):
            raise PermissionError(f"the grader does not let a submission start programs or processes ({event})")
        elif event in ("os.kill", "os.killpg"):
            if args and args[0] not in (own_pid, 0):
                raise PermissionError("the grader does not let a submission signal other processes")
        elif event in writes:
            for i in writes[event]:
                if i < len(args) and isinstance(args[i], (str, bytes, os.PathLike)):
                    check_write(args[i])
                    check_read(args[i])
        elif event in ("os.listdir", "os.scandir", "os.chdir", "glob.glob", "os.walk"):
            if args and isinstance(args[0], (str, bytes, os.PathLike)):
                check_read(args[0])

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


ANSWER = {"vlm": answer_vlm, "clip": answer_clip, "fusion": answer_shapes, "cilp": answer_shapes,
          "simclr": answer_simclr}


def apply_limits(limits: dict) -> None:
    """Resource limits, soft = hard, before any of the submission's code runs."""
    import resource

    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * 2**20,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_mb"] * 2**20,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main() -> None:
    with open(os.path.join(SANDBOX, "task.json")) as f:
        task = json.load(f)
    apply_limits(task["limits"])
    install_guard(task["hidden"])
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
