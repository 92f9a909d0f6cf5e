"""The student starter: the kit with every solution region of homework/ stubbed out.

    python -m grader starter OUT_DIR

In `homework/*.py` the parts students write sit between a line `# BEGIN SOLUTION (hint: ...)`
and a line `# END SOLUTION`. The starter replaces each region by one line, at the marker's
indentation, `raise NotImplementedError('<the hint>')`, leaves out the reference checkpoints
(`homework/checkpoints/`), the kit's own model making and measurements (`pretraining/`,
`benchmarks/` and their tests) and
everything generated (data but the committed base and demo split, runs, caches, bundles), and
copies everything else as it is.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path, PurePosixPath

KIT_ROOT = Path(__file__).resolve().parents[1]
SOLUTION = re.compile(r"^( *)# BEGIN SOLUTION \(hint: ([^\n]*)\)\n.*?^ *# END SOLUTION\n", re.S | re.M)
BEGIN = re.compile(r"^\s*# BEGIN SOLUTION\b")
END = re.compile(r"^\s*# END SOLUTION\b")

# Left out anywhere in the tree.
SKIPPED_NAMES = {".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".benchmarks",
                 ".ipynb_checkpoints", ".DS_Store"}
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
# Left out at these paths (relative to the kit root); data/ keeps only what is committed.
SKIPPED_PATHS = {"runs", "outputs", ".whl", ".gl", "grades.csv", "homework/checkpoints",
                 # the kit's own model making and measurements, and their tests: not the student's
                 "pretraining", "benchmarks", "tests/test_pretraining_base_vlm.py", "tests/test_benchmarks.py"}
KEPT_DATA = {"base_vlm", "base_vlm_stk", "train_demo", "robot_encoders"}


class StarterError(Exception):
    pass


def stub_source(text: str) -> tuple[str, int]:
    """TEXT with each solution region replaced by `raise NotImplementedError(hint)`, and how many."""
    return SOLUTION.subn(lambda m: f"{m.group(1)}raise NotImplementedError({m.group(2)!r})\n", text)


def check_markers(name: str, text: str) -> None:
    """Every BEGIN has its END, with no nesting; a one-line error naming the line otherwise."""
    open_at = None
    for number, line in enumerate(text.splitlines(), 1):
        if BEGIN.match(line):
            if open_at is not None:
                raise StarterError(f"{name}:{number}: a BEGIN SOLUTION inside the region opened at line {open_at}")
            if not re.match(r"^ *# BEGIN SOLUTION \(hint: [^\n]*\)$", line):
                raise StarterError(f"{name}:{number}: write the marker as `# BEGIN SOLUTION (hint: ...)`")
            open_at = number
        elif END.match(line):
            if open_at is None:
                raise StarterError(f"{name}:{number}: END SOLUTION without a BEGIN SOLUTION")
            open_at = None
    if open_at is not None:
        raise StarterError(f"{name}:{open_at}: BEGIN SOLUTION without an END SOLUTION")


def skipped(rel: PurePosixPath) -> bool:
    if any(part in SKIPPED_NAMES or part.endswith(SKIPPED_SUFFIXES) for part in rel.parts):
        return True
    if str(rel) in SKIPPED_PATHS or (len(rel.parts) == 1 and rel.suffix == ".zip"):
        return True
    return rel.parts[0] == "data" and len(rel.parts) > 1 and rel.parts[1] not in KEPT_DATA


def kit_files(kit: Path, out: Path) -> list[PurePosixPath]:
    """Every file of the kit that the starter copies, relative to the kit, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(kit):
        here = Path(dirpath)
        rel_dir = PurePosixPath(here.relative_to(kit).as_posix())
        dirnames[:] = [d for d in dirnames if not skipped(rel_dir / d) and (here / d).resolve() != out
                       and not (here / d).is_symlink()]
        for name in filenames:
            rel = rel_dir / name
            if not skipped(rel) and (here / name).is_file() and not (here / name).is_symlink():
                found.append(rel)
    return sorted(found)


def write_starter(out_dir: str | Path, overwrite: bool = False, kit: Path = KIT_ROOT) -> dict[str, int]:
    """Write the starter into OUT_DIR; returns the number of regions stubbed per file."""
    out, kit = Path(out_dir).resolve(), kit.resolve()
    if out == kit or out in kit.parents:
        raise StarterError(f"{out_dir} holds the kit itself; write the starter to a new folder")
    if out.exists() and not out.is_dir():
        raise StarterError(f"{out_dir} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise StarterError(f"{out_dir} is not empty; pass --overwrite to write over it, or pick a new folder")
    files = kit_files(kit, out)
    stubbed: dict[str, int] = {}
    sources: dict[PurePosixPath, str] = {}
    for rel in files:  # check everything before writing anything
        if rel.parts[0] == "homework" and rel.suffix == ".py":
            text = (kit / rel).read_text()
            check_markers(str(rel), text)
            new, n = stub_source(text)
            if BEGIN.search(new) or any(END.match(line) for line in new.splitlines()):
                raise StarterError(f"{rel}: a solution marker is left after stubbing; check its format")
            try:
                compile(new, str(rel), "exec")
            except SyntaxError as e:
                raise StarterError(f"{rel}:{e.lineno}: the stubbed file does not compile ({e.msg})") from None
            sources[rel] = new
            if n:
                stubbed[str(rel)] = n
    if overwrite and (out / "homework").is_dir():
        shutil.rmtree(out / "homework")  # generated; stale files there would mislead
    for rel in files:
        target = out.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in sources:
            target.write_text(sources[rel])
            shutil.copymode(kit / rel, target)
        else:
            shutil.copy2(kit / rel, target)
    return stubbed
