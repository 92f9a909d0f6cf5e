"""Submissions as files: what a bundle leaves out, and the checks a zip passes before any of it
is unpacked.

A submission is one `homework/` folder, zipped by `bundle.py` or given as a directory. A zip is
read from its central directory and refused, without unpacking anything, when it holds an
absolute path, a `..`, a link or other special file, more than the one top folder, too many
entries, too many unpacked bytes, too high a compression ratio, or is over the size limit. Files
are then unpacked by streaming, counting the bytes actually written, not the sizes the zip claims.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from grader import rubric

MB = 2**20

# What a bundle leaves out (and what the grader skips in a homework/ folder given as is).
EXCLUDED_DIRS = {
    "__pycache__", ".ipynb_checkpoints", ".git", ".pytest_cache", ".ruff_cache", ".mypy_cache",
    "data", "runs", "logs", "lightning_logs", "wandb", "mlruns", "outputs",
}
EXCLUDED_DIR_PREFIXES = ("checkpoint-",)  # Hugging Face Trainer intermediates
EXCLUDED_FILES = {
    ".DS_Store", "optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "trainer_state.json",
    "training_args.bin", "last.pt",  # last.pt: homework.simclr's resumable training state
}
EXCLUDED_FILE_PREFIXES = ("rng_state", "events.out.tfevents")
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".log", ".npz", ".npy", ".zip", ".tar", ".tar.gz", ".tgz")


class SubmissionError(Exception):
    """A submission the grader refuses; the message is one line a student can act on."""


def compiled(relative: PurePosixPath) -> bool:
    """Bytecode, which a reader of the submission cannot read: dropped, so that only the .py runs."""
    return "__pycache__" in relative.parts or relative.name.endswith(rubric.COMPILED_SUFFIXES)


def check_native(relative: PurePosixPath) -> None:
    if relative.name.endswith(rubric.NATIVE_SUFFIXES) or ".so." in relative.name:
        raise SubmissionError(f"{rubric.TOP_FOLDER}/{relative.as_posix()} is native code, which the grader does "
                              "not run; a submission holds Python source and checkpoints only")


def excluded(relative: PurePosixPath) -> bool:
    """Whether a path inside homework/ is left out of a bundle (caches, trainer state, data, logs)."""
    *folders, name = relative.parts
    if any(f in EXCLUDED_DIRS or f.startswith(EXCLUDED_DIR_PREFIXES) for f in folders):
        return True
    return (name in EXCLUDED_FILES or name.startswith(EXCLUDED_FILE_PREFIXES)
            or name.endswith(EXCLUDED_SUFFIXES) or name in EXCLUDED_DIRS)


def largest(sizes: dict[str, int], n: int = 5) -> str:
    """'a (12.0 MB), b (3.1 MB)': the n largest entries, for size errors."""
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} ({size / MB:.1f} MB)" for name, size in top)


# ----------------------------------------------------------------------------------------------
# Zips
# ----------------------------------------------------------------------------------------------


@dataclass
class Member:
    info: zipfile.ZipInfo
    path: PurePosixPath  # normalised, starting with homework/
    is_dir: bool


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    if any(ord(c) < 32 for c in name):
        raise SubmissionError(f"the zip has an entry with a control character in its name: {name!r}")
    if "\\" in name:
        raise SubmissionError(f"the zip has a Windows-style path {name!r}; make it with `python bundle.py`")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise SubmissionError(f"the zip has an absolute path {name!r}; make it with `python bundle.py`")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SubmissionError(f"the zip has a path that leaves its folder: {name!r}")
    if not parts:
        raise SubmissionError(f"the zip has an entry with an empty name: {name!r}")
    long = [p for p in parts if len(os.fsencode(p)) > rubric.MAX_NAME_BYTES]
    if long or len(os.fsencode("/".join(parts))) > rubric.MAX_PATH_BYTES:
        what = f"a name over {rubric.MAX_NAME_BYTES} bytes" if long else f"a path over {rubric.MAX_PATH_BYTES} bytes"
        raise SubmissionError(f"the zip has {what}: {name[:80]!r}...; shorten it")
    return PurePosixPath(*parts)


def check_zip(path: str | Path) -> list[Member]:
    """Every check a zip must pass, from its directory alone; the members to unpack, or
    SubmissionError with one line saying what is wrong."""
    path = Path(path)
    size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except UnicodeDecodeError:
        raise SubmissionError(f"{path.name} has a file name that is not valid UTF-8 (though flagged as UTF-8); "
                              "make it with `python bundle.py homework ID`") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise SubmissionError(f"{path.name} is not a zip file ({e}); make it with `python bundle.py homework ID`") from None
    with archive:
        infos = archive.infolist()
    sizes = {info.filename: info.file_size for info in infos}
    if size > rubric.SIZE_LIMIT_MB * MB:
        raise SubmissionError(f"{path.name} is {size / MB:.1f} MB, over the {rubric.SIZE_LIMIT_MB} MB limit; "
                              f"largest files: {largest(sizes)}")
    if len(infos) > rubric.MAX_ENTRIES:
        raise SubmissionError(f"the zip has {len(infos)} entries, over the limit of {rubric.MAX_ENTRIES}")
    if not infos:
        raise SubmissionError("the zip is empty; it should hold the homework/ folder")
    members, seen, tops, folders, files = [], set(), set(), set(), set()
    for info in infos:
        rel = _member_path(info)
        if rel.parts[0] == rubric.TOP_FOLDER and len(rel.parts) == 1 and not info.is_dir():
            raise SubmissionError(f"the zip holds a file named {rubric.TOP_FOLDER}, not a folder; "
                                  "make it with `python bundle.py homework ID`")
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        is_dir = info.is_dir()
        if kind == stat.S_IFLNK:
            raise SubmissionError(f"the zip holds a link, {info.filename}; a submission may hold only files and folders")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise SubmissionError(f"the zip holds a special file, {info.filename}; only files and folders are allowed")
        if info.flag_bits & 0x1:
            raise SubmissionError(f"{info.filename} is encrypted; submit an unencrypted zip")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise SubmissionError(f"{info.filename} uses an unsupported compression; make the zip with `python bundle.py`")
        if str(rel) in seen:
            raise SubmissionError(f"the zip holds {rel} twice")
        seen.add(str(rel))
        tops.add(rel.parts[0] if (len(rel.parts) > 1 or is_dir) else str(rel))
        folders.update(str(PurePosixPath(*rel.parts[:i])) for i in range(1, len(rel.parts)))
        if not is_dir:
            files.add(str(rel))
        if not is_dir and info.file_size > MB and info.file_size > rubric.MAX_RATIO * max(info.compress_size, 1):
            raise SubmissionError(f"{info.filename} unpacks {info.file_size / max(info.compress_size, 1):.0f} times "
                                  f"larger than it is packed (the limit is {rubric.MAX_RATIO}): a zip bomb?")
        if len(rel.parts) > 1:
            check_native(PurePosixPath(*rel.parts[1:]))
        if not compiled(rel):  # bytecode is dropped, unread
            members.append(Member(info, rel, is_dir))
    clash = sorted(files & folders)
    if clash:
        raise SubmissionError(f"the zip holds {clash[0]} both as a file and as a folder")
    if tops != {rubric.TOP_FOLDER}:
        found = ", ".join(sorted(tops)[:5])
        raise SubmissionError(f"the zip must hold one top folder, {rubric.TOP_FOLDER}/, and nothing beside it; "
                              f"found: {found}")
    total = sum(m.info.file_size for m in members)
    if total > rubric.MAX_UNPACKED_MB * MB:
        raise SubmissionError(f"the zip unpacks to {total / MB:.0f} MB, over the {rubric.MAX_UNPACKED_MB} MB limit; "
                              f"largest files: {largest(sizes)}")
    if total > MB and total > rubric.MAX_RATIO * size:
        raise SubmissionError(f"the zip unpacks {total / size:.0f} times larger than it is (the limit is "
                              f"{rubric.MAX_RATIO}): a zip bomb?")
    return members


def extract_zip(path: str | Path, dest: str | Path) -> Path:
    """Check a zip, then unpack it into DEST; returns DEST/homework."""
    members = check_zip(path)
    dest = Path(dest)
    budget = rubric.MAX_UNPACKED_MB * MB
    with zipfile.ZipFile(path) as archive:
        for m in members:
            target = dest.joinpath(*m.path.parts)
            if m.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            written = 0
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(m.info) as src, open(target, "xb") as out:
                    while chunk := src.read(MB):
                        written += len(chunk)
                        if written > m.info.file_size or written > budget:
                            raise SubmissionError(f"{m.info.filename} unpacks to more than the zip says it does")
                        out.write(chunk)
            except FileExistsError:
                raise SubmissionError(f"the zip holds {m.path} twice") from None
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, ValueError) as e:
                raise SubmissionError(f"the zip is damaged: {m.info.filename} cannot be read ({e})") from None
            except OSError as e:
                raise SubmissionError(f"{m.info.filename} cannot be unpacked ({e.strerror})") from None
            budget -= written
            target.chmod(0o644)
    root = dest / rubric.TOP_FOLDER
    root.mkdir(exist_ok=True)
    return root


# ----------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------


def submission_files(folder: Path) -> list[tuple[Path, PurePosixPath]]:
    """(file, path inside the folder) of everything a bundle of FOLDER holds, sorted; links are
    refused, left-out files skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        rel_dir = PurePosixPath(here.relative_to(folder).as_posix())
        for d in list(dirnames):
            if (here / d).is_symlink():
                raise SubmissionError(f"{rubric.TOP_FOLDER}/{(rel_dir / d).as_posix()} is a link; "
                                      "a submission may hold only files and folders")
        dirnames[:] = sorted(d for d in dirnames if not excluded(rel_dir / d / "x"))  # d as a folder
        for name in sorted(filenames):
            rel = rel_dir / name
            if excluded(rel) or compiled(rel):
                continue
            check_native(rel)
            if (here / name).is_symlink():
                raise SubmissionError(f"{rubric.TOP_FOLDER}/{rel.as_posix()} is a link; "
                                      "a submission may hold only files and folders")
            if not (here / name).is_file():
                continue
            found.append((here / name, rel))
    return found


def copy_folder(folder: str | Path, dest: str | Path) -> Path:
    """Copy a homework/ folder as a bundle would hold it into DEST/homework, checking its size."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"{folder} is not a folder")
    files = submission_files(folder)
    sizes = {f"{rubric.TOP_FOLDER}/{rel}": src.stat().st_size for src, rel in files}
    total = sum(sizes.values())
    if total > rubric.SIZE_LIMIT_MB * MB:
        raise SubmissionError(f"{folder} holds {total / MB:.1f} MB, over the {rubric.SIZE_LIMIT_MB} MB limit; "
                              f"largest files: {largest(sizes)}")
    root = Path(dest) / rubric.TOP_FOLDER
    root.mkdir(parents=True)
    for src, rel in files:
        target = root.joinpath(*rel.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        except OSError as e:
            raise SubmissionError(f"{rubric.TOP_FOLDER}/{rel.as_posix()} cannot be copied ({e.strerror})") from None
    return root


def unpack(submission: str | Path, dest: str | Path) -> Path:
    """A zip or a homework/ folder, unpacked or copied into DEST; returns DEST/homework."""
    submission = Path(submission)
    if submission.is_dir():
        return copy_folder(submission, dest)
    return extract_zip(submission, dest)
