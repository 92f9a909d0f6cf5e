"""Grading on Gradescope: `python -m grader gradescope autograder.zip` writes the zip an assignment's
autograder takes, and `run_autograder` inside it grades each submission.

    autograder.zip
      setup.sh            run once when Gradescope builds the image: Python, util-linux, the requirements
      run_autograder      run per submission: grades /autograder/submission/, writes
                          /autograder/results/results.json
      gradescope.json     what to grade and how Gradescope shows it (visibility, leaderboard)
      requirements.txt    the kit's runtime packages
      grader/  worlds/  generate_qa.py  data/base_vlm*/ (every kit base), data/robot_encoders/
      homework/           only the kit's public modules the grader's scoring imports (no solution, no checkpoint)
      heldout/            the held-out inputs and labels, built here from the instructor's seed; no seed ships

`run_autograder` makes /autograder/source private to root before grading, so that a child
running as its own user cannot read the grader's files even through native code.
On Gradescope the submission folder holds what the student uploaded: the zip `bundle.py` made
(graded as is), or its unpacked `homework/` folder, or that folder's files.

    GRADER_AUTOGRADER_ROOT=/tmp/fake/autograder GRADER_PYTHON=python ./run_autograder   # a local run
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

from grader import heldout, report, rubric
from grader.cases import ASSIGNMENTS
from grader.grading import BASE_VLM_PATTERN, KIT_ROOT, GradeOptions, failed_report, grade

CONFIG = "gradescope.json"
ROOT_ENV = "GRADER_AUTOGRADER_ROOT"  # where run_autograder finds source/, submission/, results/ (default /autograder)
SCORING_MODULES = ("data.py", "generate_captions.py")  # what the grader's own process imports of homework/
FIXED_TIME = (1980, 1, 1, 0, 0, 0)

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
set -euo pipefail
cd /autograder/source
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-pip python3-venv util-linux
# CPU wheels of torch: the autograder needs no GPU, and they are a fraction of the size.
python3 -m pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt
python3 -c "import grader.gradescope"  # the grader imports here
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: it grades /autograder/submission/ and writes
# /autograder/results/results.json. GRADER_AUTOGRADER_ROOT moves /autograder (for a local run).
set -u
ROOT="${GRADER_AUTOGRADER_ROOT:-/autograder}"
cd "$ROOT/source"
if [ "$(id -u)" = 0 ]; then chmod 700 "$ROOT/source"; fi  # the grader's files are no child's to read
exec "${GRADER_PYTHON:-python3}" -m grader.gradescope "$ROOT"
"""


def _homework_modules() -> list[str]:
    """The kit's homework/ modules the grader's scoring imports, with what they import of homework/."""
    todo, found = list(SCORING_MODULES), []
    while todo:
        name = todo.pop()
        if name in found:
            continue
        text = (KIT_ROOT / "homework" / name).read_text()
        if "# BEGIN SOLUTION" in text:
            raise SystemExit(f"error: homework/{name}, which the grader's scoring imports, holds solution regions; "
                             "the autograder zip would carry them")
        found.append(name)
        todo += [f"{m}.py" for m in re.findall(r"^\s*(?:from|import) homework\.(\w+)", text, re.M)]
    return sorted(found)


def _kit_files() -> list[tuple[Path, str]]:
    """(file, name in the zip) of the kit's part of the autograder."""
    files = [(KIT_ROOT / "requirements.txt", "requirements.txt"), (KIT_ROOT / "generate_qa.py", "generate_qa.py")]
    for folder in ("grader", "worlds"):
        files += [(p, f"{folder}/{p.name}") for p in sorted((KIT_ROOT / folder).glob("*.py"))]
    files += [(KIT_ROOT / "homework" / m, f"homework/{m}") for m in _homework_modules()]
    kit_data = sorted({KIT_ROOT / rel for a in ASSIGNMENTS.values() for rel in a.kit_data})  # the robot's encoders
    for base in sorted(KIT_ROOT.glob(BASE_VLM_PATTERN)) + kit_data:  # every kit base: a checkpoint names its own
        files += [(p, p.relative_to(KIT_ROOT).as_posix()) for p in sorted(base.rglob("*"))
                  if p.is_file() and "__pycache__" not in p.parts]
    return files


def write_autograder(out: str | Path, options: GradeOptions, visibility: str = "after_published",
                     leaderboard: bool = True, log=print) -> Path:
    """Write the autograder zip OUT for OPTIONS (its seed, size and assignments); returns its path."""
    if visibility not in report.VISIBILITIES:
        raise SystemExit(f"error: --visibility must be one of {', '.join(report.VISIBILITIES)}, got {visibility!r}")
    out = Path(out)
    held = heldout.prepare(options.seed, options.size, options.cache_dir, tuple(options.only), options.workers,
                           options.verbose, log, kart_data=options.kart_data)
    config = {"only": list(options.only), "size": options.size, "visibility": visibility, "leaderboard": leaderboard,
              "public_seed": options.seed == rubric.DEFAULT_SEED, "timeout_s": options.timeout_s,
              "memory_mb": options.memory_mb, "threads": options.threads}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(prefix="grader-gradescope-") as stage:
            exported = Path(stage) / "heldout"
            heldout.export(held, exported, tuple(options.only))
            with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_DEFLATED) as z:
                def add(name: str, data: bytes, mode: int = 0o644) -> None:
                    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                    info.external_attr = (0o100000 | mode) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    z.writestr(info, data)

                add("setup.sh", SETUP_SH.encode(), 0o755)
                add("run_autograder", RUN_AUTOGRADER.encode(), 0o755)
                add(CONFIG, (json.dumps(config, indent=1) + "\n").encode())
                add("homework/__init__.py", b'"""The grader\'s copy of the kit\'s homework/: only the modules '
                                            b'its scoring imports."""\n')
                for src, name in _kit_files():
                    add(name, src.read_bytes())
                for src in sorted(exported.rglob("*")):
                    if src.is_file():
                        add(f"heldout/{src.relative_to(exported).as_posix()}", src.read_bytes())
        os.replace(tmp_name, out)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return out


# ----------------------------------------------------------------------------------------------
# Inside the autograder: one submission
# ----------------------------------------------------------------------------------------------


def find_submission(folder: Path) -> Path | str:
    """The zip or homework/ folder a student uploaded into FOLDER, or why there is none (one line)."""
    if not folder.is_dir():
        return f"no submission folder at {folder}"
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    zips = [p for p in entries if p.suffix == ".zip" and p.is_file()]
    if len(zips) == 1:
        return zips[0]
    if len(zips) > 1:
        return f"the submission holds {len(zips)} zips; upload the one zip `python bundle.py homework ID` made"
    if (folder / rubric.TOP_FOLDER).is_dir():
        return folder / rubric.TOP_FOLDER
    if (folder / "__init__.py").is_file():
        return folder
    return "the submission holds no zip and no homework/ folder; upload the zip `python bundle.py homework ID` made"


def run(root: Path) -> int:
    """Grade ROOT/submission on ROOT/source/heldout and write ROOT/results/results.json."""
    source = root / "source"
    config = json.loads((source / CONFIG).read_text())
    options = GradeOptions(seed=rubric.DEFAULT_SEED if config["public_seed"] else None, size=config["size"],
                           only=list(config["only"]), timeout_s=config["timeout_s"], memory_mb=config["memory_mb"],
                           threads=config["threads"], heldout_dir=str(source / "heldout"))
    results = root / "results" / "results.json"
    found = find_submission(root / "submission")
    if isinstance(found, str):
        result = failed_report("submission", options, "rejected", f"submission refused: {found}")
    else:
        try:
            result = grade(found, options)
        except Exception as e:  # a grader fault: still a results file, saying so
            import traceback

            traceback.print_exc()
            result = failed_report(found.name, options, "grader_error", f"grader error: {e}")
    report.write(result, gradescope_path=str(results), visibility=config["visibility"],
                 leaderboard=config["leaderboard"])
    print(report.text(result))
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get(ROOT_ENV, "/autograder"))))
