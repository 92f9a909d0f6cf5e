"""Zip a homework/ folder for submission: `python bundle.py homework ID` writes ID.zip.

The zip holds one top folder, `homework/`, and leaves out caches (`__pycache__`, notebooks'
checkpoints), trainer intermediates (`checkpoint-*`, optimizer, scheduler and RNG states, the
SimCLR `last.pt`), data and logs. A zip over the submission limit (50 MB) is not written; the
largest files are listed instead. The same files always give the same zip, byte for byte.

    python bundle.py homework ID               # -> ID.zip
    python bundle.py homework ID --overwrite   # replace an existing ID.zip
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

from grader import rubric
from grader.archive import MB, SubmissionError, largest, submission_files

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip timestamps: the same files give the same bytes
# Stored, not deflated: weights and pictures barely compress, and deflating them is most of the time.
STORED_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".png", ".jpg", ".jpeg")


def bundle(homework: str | Path, ident: str, overwrite: bool = False) -> Path:
    """Write IDENT.zip from the HOMEWORK folder; returns its path. SystemExit with one line on error."""
    homework = Path(homework)
    if not homework.is_dir():
        raise SystemExit(f"error: {homework} is not a folder; pass the path of your homework/ folder")
    if not (homework / "__init__.py").is_file():
        raise SystemExit(f"error: {homework} has no __init__.py; pass the homework/ package folder")
    ident = str(ident)
    if not ident.strip() or ident.endswith(("/", os.sep)):
        raise SystemExit(f"error: ID must name a file, got {ident!r}")
    out = Path(ident if ident.endswith(".zip") else ident + ".zip")
    if out.exists() and not overwrite:
        raise SystemExit(f"error: {out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise SystemExit(f"error: the folder {out.parent} does not exist")
    try:
        files = submission_files(homework)
    except SubmissionError as e:
        raise SystemExit(f"error: {e}") from None
    sizes = {f"{rubric.TOP_FOLDER}/{rel}": src.stat().st_size for src, rel in files}
    if sum(sizes.values()) > rubric.MAX_UNPACKED_MB * MB:
        raise SystemExit(f"error: {homework} holds {sum(sizes.values()) / MB:.0f} MB to bundle, over the grader's "
                         f"{rubric.MAX_UNPACKED_MB} MB limit; nothing written. Largest files: {largest(sizes, 10)}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for src, rel in files:
                info = zipfile.ZipInfo(f"{rubric.TOP_FOLDER}/{rel.as_posix()}", date_time=FIXED_TIME)
                info.compress_type = zipfile.ZIP_STORED if src.name.endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with open(src, "rb") as f, archive.open(info, "w", force_zip64=True) as dst:
                    while chunk := f.read(MB):
                        dst.write(chunk)
        size = tmp.stat().st_size
        if size > rubric.SIZE_LIMIT_MB * MB:
            raise SystemExit(f"error: the zip would be {size / MB:.1f} MB, over the {rubric.SIZE_LIMIT_MB} MB limit; "
                             f"nothing written. Largest files: {largest(sizes, 10)}")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python bundle.py", description=__doc__.strip().splitlines()[0])
    parser.add_argument("homework", help="the homework/ folder to submit")
    parser.add_argument("id", help="the zip's name, without .zip (your student ID, say)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing ID.zip")
    args = parser.parse_args(argv)
    try:
        out = bundle(args.homework, args.id, args.overwrite)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise
    with zipfile.ZipFile(out) as archive:
        infos = archive.infolist()
    checkpoints = sorted({i.filename.split("/")[2] for i in infos
                          if i.filename.startswith(f"{rubric.TOP_FOLDER}/checkpoints/") and i.filename.count("/") >= 3})
    print(f"wrote {out} ({len(infos)} files, {out.stat().st_size / MB:.2f} MB of {rubric.SIZE_LIMIT_MB} MB); "
          f"checkpoints: {', '.join(checkpoints) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
