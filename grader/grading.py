"""Grading one submission: unpack and check it, make sure the held-out sets exist, then for each
assignment fill a sandbox, run the child, and score what it answered.

    report = grade("ID.zip", GradeOptions(seed=12345, only=["fusion"]))

Nothing a submission does stops the grading of the next assignment: every failure becomes a
0 with a one-line reason on the cases it touches.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from grader import archive, heldout, rubric
from grader.cases import (
    ASSIGNMENTS,
    AnswersError,
    Assignment,
    credit_message,
    finite_number,
    interpret_status,
    printable,
    read_out_json,
    stubs,
)
from grader.sandbox import (
    CHILD_SCRIPT,
    JAIL_FAILED,
    LAUNCH_FAILED,
    SYSTEM_READABLE,
    Limits,
    Tree,
    limit_values,
    resolve_isolation,
    run_child,
    runtime_paths,
)

KIT_ROOT = Path(__file__).resolve().parents[1]
KIT_CODE = ("generate_qa.py", "worlds")  # the kit's code a submission's homework/ may import
BASE_VLM_PATTERN = "data/base_vlm*"  # the kit's base models (homework.base_vlm.BASES' folders), copied as they lie


@dataclass
class GradeOptions:
    seed: int | None = rubric.DEFAULT_SEED  # None: sets exported ahead (heldout_dir), whose seed stays private
    size: str = "full"  # a key of rubric.HELDOUT_SIZES
    only: list[str] = field(default_factory=lambda: list(ASSIGNMENTS))
    cache_dir: str | None = None  # default ~/.cache/kart-kit-grader
    timeout_s: float | None = None  # every child's wall-clock limit (default: each assignment's own)
    memory_mb: int = rubric.MEMORY_MB
    threads: int = rubric.THREADS
    isolation: str = "auto"  # auto | namespace | process
    workers: int | None = None  # processes generating held-out data the first time
    kart_data: str | None = None  # grade VLM and CLIP on this folder's questions and sets instead
    verbose: bool = False  # print each child's log
    keep: bool = False  # keep the temporary folder (printed) for a look
    heldout_dir: str | None = None  # held-out sets exported ahead (the Gradescope zip's), instead of the seed's
    tasks: int = rubric.TASKS  # processes and threads a child may add (the tests make it small)
    scratch_mb: int = rubric.SCRATCH_MB  # the child's folder in namespace mode


@dataclass
class CaseResult:
    assignment: str
    case: str  # the method's name
    name: str  # its docstring's first line
    score: float
    max_score: float
    extra_credit: bool
    status: str  # passed | partial | failed | not_implemented | error | timeout | memory | ... | rejected
    message: str


@dataclass
class AssignmentResult:
    name: str
    title: str
    cases: list[CaseResult]
    accuracy: float | None = None
    count: int = 0
    table: list = field(default_factory=list)  # (group, count, accuracy)
    group_name: str = ""
    seconds: float | None = None
    peak_mb: float | None = None
    log: str = ""  # the end of the child's output
    walls: str = ""  # what held its child


@dataclass
class Report:
    submission: str
    seed: int | None
    size: str
    isolation: str
    assignments: list[AssignmentResult]
    error: str | None = None  # why nothing could be graded, if so
    seconds: float = 0.0
    walls: str = ""  # what held the child, in one line

    @property
    def cases(self) -> list[CaseResult]:
        return [c for a in self.assignments for c in a.cases]

    @property
    def total(self) -> float:
        return round(sum(c.score for c in self.cases), 2)

    @property
    def max_score(self) -> float:
        return round(sum(c.max_score for c in self.cases if not c.extra_credit), 2)


def zero_results(assignment: type[Assignment], status: str, message: str) -> list[CaseResult]:
    return [CaseResult(assignment.name, m.__name__, assignment.case_name(m), 0.0, m.threshold.points,
                       m.threshold.extra_credit, status, message) for m in assignment.cases()]


def failed_report(submission: str, options: GradeOptions, status: str, message: str, isolation: str = "") -> Report:
    return Report(submission, options.seed, options.size, isolation,
                  [AssignmentResult(a, ASSIGNMENTS[a].title, zero_results(ASSIGNMENTS[a], status, message))
                   for a in options.only], error=message)


def remove_tree(path: Path) -> None:
    """Delete a folder a child may have left read-only."""
    def retry(function, target, _exc) -> None:
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            function(target)
        except OSError:
            pass

    if path.is_dir() and not path.is_symlink():
        mounted = _mount_points_under(path)  # never into another file system, nor a bind mount a child made
        if mounted:
            raise RuntimeError(f"{mounted[0]} is a mount inside the grader's folder; the folder is left in place")
        shutil.rmtree(path, onerror=retry)


def _mount_points_under(path: Path) -> list[str]:
    """Mount points strictly inside PATH: from /proc/self/mountinfo (which shows bind mounts of the
    same file system too), else by device numbers."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].replace("\\040", " ") for line in f if len(line.split()) > 4]
        return sorted(p for p in points if p.startswith(real.rstrip("/") + "/"))
    except OSError:
        device = os.lstat(real).st_dev
        return sorted(os.path.join(d, n) for d, names, _ in os.walk(real) for n in names
                      if not os.path.islink(os.path.join(d, n)) and os.lstat(os.path.join(d, n)).st_dev != device)


def _log_tail(log: Path, limit: int = 20000) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - limit))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _fill_sandbox(sandbox: Path, homework: Path, assignment: Assignment) -> list[str]:
    """Copy what the child needs into SANDBOX; the entries it may only read."""
    sandbox.mkdir(parents=True)
    shutil.copytree(homework, sandbox / "homework", symlinks=True)
    shutil.copyfile(CHILD_SCRIPT, sandbox / "child.py")  # run from here: nothing about the child names the kit
    for name in KIT_CODE:
        src = KIT_ROOT / name
        if src.is_dir():
            shutil.copytree(src, sandbox / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(src, sandbox / name)
    readonly = ["child.py", "task.json", "inputs", *KIT_CODE]
    if assignment.needs_base_vlm:
        for base in sorted(KIT_ROOT.glob(BASE_VLM_PATTERN)):  # every kit base: a checkpoint names its own
            if base.is_dir():
                rel = base.relative_to(KIT_ROOT)
                shutil.copytree(base, sandbox / rel)
                readonly.append(str(rel))
    for rel in assignment.kit_data:  # committed kit folders the child reads as they lie
        shutil.copytree(KIT_ROOT / rel, sandbox / rel)
        readonly.append(rel)
    inputs = assignment.heldout.inputs(assignment.name)
    if assignment.input_files is None:
        shutil.copytree(inputs, sandbox / "inputs")
    else:
        (sandbox / "inputs").mkdir()
        for name in assignment.input_files:
            shutil.copyfile(inputs / name, sandbox / "inputs" / name)
    (sandbox / "out").mkdir()
    return readonly


def _package_paths() -> list[str]:
    """The grader's own import path, without the kit's folders and the working folder: the child finds its
    packages where the grader does (a virtual environment, a user site) and the submission's
    homework/ before anything else."""
    prefixes = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}

    def kit_own(path: Path) -> bool:  # the kit's folders (its tests, say), but not a virtual environment inside it
        inside_kit = path == KIT_ROOT or KIT_ROOT in path.parents
        return inside_kit and not any(path == p or p in path.parents for p in prefixes)

    cwd = Path.cwd().resolve()
    return [p for p in sys.path if p and Path(p).resolve() != cwd and not kit_own(Path(p).resolve())]


def _hidden(held: heldout.Heldout, work: Path) -> list[str]:
    """What the child may never read, even where a folder it may read holds it: the held-out cache,
    the kit itself and the grader's work folder (but for the child's own, which it may)."""
    return [str(p.resolve()) for p in (held.root.parent, KIT_ROOT, work)]


def _read_status(sandbox: Path) -> dict | None:
    """The child's out/status.json, if it wrote a sensible one."""
    try:
        status = read_out_json(sandbox, "status.json", rubric.STATUS_MAX_KB * 2**10)
    except AnswersError:
        return None
    return status if isinstance(status, dict) else None


def _child_failure(assignment: type[Assignment], run, status: dict | None, sandbox: Path,
                   options: GradeOptions, timeout: float) -> tuple[str, str] | None:
    """(status, message) when the child did not answer; None when it says it did."""
    if status is not None and status.get("ok") is True:
        return None
    if status is None and run.isolation == "namespace" and run.returncode == JAIL_FAILED:
        return "grader_error", "the grader could not build the child's file system; try --isolation process"
    if status is None and run.returncode == LAUNCH_FAILED:
        return "grader_error", "the grader could not put the child in its cgroup"
    if run.oom_killed:
        return "memory", (f"killed for using more than {options.memory_mb} MB of memory (shared memory included), "
                          "its limit")
    if run.timed_out:
        return "timeout", (f"stopped after {timeout:.0f} s, its time limit: does loading or answering take too "
                           f"long, or loop forever? (`{assignment.self_check}` times yours)")
    if run.signal == signal.SIGXCPU:
        return "timeout", "stopped for using more CPU time than its limit"
    if run.signal == signal.SIGXFSZ:
        return "error", f"stopped for writing a file larger than {rubric.FILE_SIZE_MB} MB (prints included)"
    if status is not None:
        kind, message = interpret_status(assignment, status, options.memory_mb)
        return kind, message.replace(f"{sandbox.resolve()}/", "").replace(str(sandbox.resolve()), ".")
    if run.signal == signal.SIGKILL:
        return "memory", "killed by the system (SIGKILL): out of memory?"
    if run.signal:
        name = signal.Signals(run.signal).name if run.signal in signal.Signals._value2member_map_ else run.signal
        return "error", f"the child process crashed ({name})"
    return "error", (f"the child process ended (exit code {run.returncode}) before it answered: does the code "
                     "call os._exit() or sys.exit() where it should return?")


def grade_assignment(assignment: Assignment, homework: Path, work: Path, options: GradeOptions,
                     log=print) -> AssignmentResult:
    kind = type(assignment)
    result = AssignmentResult(kind.name, kind.title, [])
    timeout = options.timeout_s or kind.timeout()
    sandbox = work / kind.name / "sandbox"
    child_log = work / kind.name / "child.log"
    held = assignment.heldout
    held.verify(kind.name)  # HeldoutError: a grader fault, the caller says so
    held.labels(kind.name)  # read now, before any of the submission's code runs
    readonly = _fill_sandbox(sandbox, homework, assignment)
    limits = Limits(timeout_s=timeout, memory_mb=options.memory_mb, file_size_mb=rubric.FILE_SIZE_MB,
                    threads=options.threads, tasks=options.tasks, scratch_mb=options.scratch_mb)
    package_paths = _package_paths()
    runtime = runtime_paths(package_paths)
    hidden = _hidden(held, work)
    task = {"assignment": kind.name, "threads": options.threads, "batch_size": kind.batch_size,
            "hidden": hidden, "readable": [*runtime, *SYSTEM_READABLE], "sys_path": package_paths,
            "limits": limit_values(limits)}
    (sandbox / "task.json").write_text(json.dumps(task))
    tree = Tree(runtime=runtime, hidden=hidden, readonly=readonly, copied=["homework"])
    run, walls = run_child(sandbox, child_log, limits, tree, options.isolation, name=kind.name, work=work)
    result.walls = walls
    result.seconds = round(run.seconds, 1)
    result.log = _log_tail(child_log)
    if options.verbose:
        log(f"--- {kind.name}: the child's output ({run.seconds:.1f} s, exit code {run.returncode}) ---")
        log("\n".join("    | " + printable(line) for line in result.log.rstrip().splitlines()))
    try:
        held.verify(kind.name)
    except heldout.HeldoutError as e:
        result.cases = zero_results(kind, "rejected", f"not scored: {e} while this submission's code ran")
        return result
    status = _read_status(sandbox)
    if status is not None:
        result.peak_mb = finite_number(status.get("peak_mb"), 0, 2**24)
    if run.peak_mb:
        result.peak_mb = round(run.peak_mb)
    failure = _child_failure(kind, run, status, sandbox, options, timeout)
    evaluation = None
    if failure is None:
        try:
            evaluation = assignment.evaluate(sandbox)
        except AnswersError as e:
            failure = ("error", f"the child's answers are unusable: {e}")
    if failure is not None:
        status, message = failure
        left = stubs(homework, kind.modules)
        if left and status != "not_implemented":
            file, line = left[0]
            status, message = "not_implemented", (f"not implemented: {len(left)} stub{'s' if len(left) > 1 else ''} "
                                                   f"left in homework/{file} (first at line {line}); then {message}")
        result.cases = zero_results(kind, status, message)
        return result
    result.accuracy, result.count = evaluation.accuracy, evaluation.count
    result.table, result.group_name = evaluation.table, evaluation.group_name
    for method in kind.cases():
        value = method(assignment, evaluation)
        points = method.threshold.credit(value)
        status, message = credit_message(method.threshold, value, points)
        if status != "passed" and not method.threshold.extra_credit:
            message += f"; `{kind.self_check}` shows yours on the validation split"
        result.cases.append(CaseResult(kind.name, method.__name__, kind.case_name(method), points,
                                       method.threshold.points, method.threshold.extra_credit, status, message))
    return result


def _import_scoring_modules() -> None:
    """Import what scoring the VLM and SimCLR needs (torch, mostly) in a background thread."""
    try:
        import torch  # noqa: F401 - the SimCLR probe

        import homework.data  # noqa: F401 - the kit's normalize_answer
    except Exception:  # tried again, for real, where it is needed
        pass


def _scrub(text: str, work: Path) -> str:
    """TEXT without the grader's temporary paths."""
    for path in {str(work.resolve()), str(work)}:
        text = text.replace(path + "/submission/", "").replace(path + "/", "").replace(path, "<the grader's folder>")
    return text


def check_submission_path(path: Path) -> str | None:
    """Why PATH cannot be a submission (one line), or None: it must be a regular file or a folder."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"no such file or folder: {path}"
    except OSError as e:
        return f"{path} cannot be read ({e.strerror})"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return f"{path} is not a regular file or a folder; give the zip made by `python bundle.py homework ID`"
    return None


def open_heldout(options: GradeOptions, log=print) -> heldout.Heldout:
    """The held-out sets to grade on: exported ahead (`heldout_dir`), or made from the seed and cached."""
    if options.heldout_dir:
        return heldout.open_folder(options.heldout_dir, tuple(options.only))
    return heldout.prepare(options.seed, options.size, options.cache_dir, tuple(options.only), options.workers,
                           options.verbose, log, kart_data=options.kart_data)


def grade(submission: str | Path, options: GradeOptions, log=print) -> Report:
    """Grade one zip or homework/ folder; never raises for anything the submission does."""
    started = time.time()
    submission = Path(submission)
    name = printable(submission.name)
    isolation = resolve_isolation(options.isolation)
    refused = check_submission_path(submission)
    if refused:
        return failed_report(name, options, "rejected", f"submission refused: {refused}", isolation)
    work = Path(tempfile.mkdtemp(prefix="grader-"))
    try:
        try:
            homework = archive.unpack(submission, work / "submission")
        except archive.SubmissionError as e:
            return failed_report(name, options, "rejected", _scrub(f"submission refused: {e}", work), isolation)
        try:
            held = open_heldout(options, log)
        except heldout.HeldoutError as e:
            return failed_report(name, options, "grader_error", f"grader error: {e}", isolation)
        except SystemExit:  # the instructor's own input (an unusable --kart_data): one line, not a grade
            raise
        except Exception as e:  # a grader fault, reported as such
            traceback.print_exc()
            return failed_report(name, options, "grader_error", f"grader error while making held-out data: {e}",
                                 isolation)
        if {"vlm", "simclr"} & set(options.only):  # their scoring needs torch: import it while a child runs
            threading.Thread(target=_import_scoring_modules, daemon=True).start()
        results = []
        for assignment_name in options.only:
            kind = ASSIGNMENTS[assignment_name]
            try:
                results.append(grade_assignment(kind(held), homework, work, options, log))
            except heldout.HeldoutError as e:
                results.append(AssignmentResult(kind.name, kind.title,
                                                zero_results(kind, "grader_error", f"grader error: {e}")))
            except Exception as e:  # a grader fault: this assignment gets 0, the rest goes on
                traceback.print_exc()
                results.append(AssignmentResult(kind.name, kind.title,
                                                zero_results(kind, "grader_error", f"grader error: {e}")))
            finally:
                if not options.keep:
                    _remove_work(work / assignment_name, log)
        for result in results:
            for c in result.cases:
                c.message = _scrub(c.message, work)
        walls = next((r.walls for r in results if r.walls), "")
        return Report(name, options.seed, options.size, isolation, results, seconds=time.time() - started,
                      walls=walls)
    finally:
        if options.keep:
            log(f"kept the grader's work folder: {work}")
        else:
            _remove_work(work, log)


def _remove_work(path: Path, log) -> None:
    try:
        remove_tree(path)
    except (RuntimeError, OSError) as e:
        log(f"warning: {e}")
