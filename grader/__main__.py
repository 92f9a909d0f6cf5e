"""`python -m grader`: grade a submission, a folder of them, or write the student starter.

    python -m grader ID.zip                        # or a homework/ folder; --seed S for a private set
    python -m grader ID.zip --only vlm,clip -v     # some assignments, with the child's output
    python -m grader ID.zip --json r.json --gradescope results.json
    python -m grader batch submissions/ --workers 2 --csv grades.csv
    python -m grader starter ../starter            # the student version of this kit
    python -m grader heldout --seed S              # make (and cache) the held-out sets ahead of time
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from grader import rubric

COMMANDS = ("grade", "batch", "starter", "heldout")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _grading_options(parser: argparse.ArgumentParser, batch: bool = False) -> None:
    g = parser.add_argument_group("grading")
    g.add_argument("--seed", help=f"grading seed (default: ${rubric.SEED_ENV}, else the public {rubric.DEFAULT_SEED})")
    g.add_argument("--only", help="comma-separated assignments to grade: vlm,clip,fusion,cilp,simclr (default: all)")
    g.add_argument("--size", default="full", choices=list(rubric.HELDOUT_SIZES),
                   help="held-out set size: full (what grades count), quick (a faster, noisier self-check), "
                        "tiny (the kit's tests)")
    g.add_argument("--cache_dir", help="where held-out sets are cached (default: ~/.cache/kart-kit-grader)")
    g.add_argument("--kart_data", metavar="DIR",
                   help="grade VLM and CLIP on the *_qa_pairs.json and *_mc_qas.json of this folder (e.g. the "
                        "course's data/valid_grader; pictures relative to its parent) instead of rendered frames")
    g.add_argument("--timeout", type=_positive_float,
                   help="wall-clock seconds per assignment (default: each assignment's own, see grader/rubric.py)")
    g.add_argument("--memory_mb", type=_positive_int, default=rubric.MEMORY_MB,
                   help=f"address-space limit of each child process (default {rubric.MEMORY_MB})")
    g.add_argument("--threads", type=_positive_int, default=rubric.THREADS,
                   help=f"torch threads in each child process (default {rubric.THREADS})")
    g.add_argument("--isolation", default="auto", choices=["auto", "namespace", "process"],
                   help="auto: Linux namespaces where the system allows them, else process limits only")
    if batch:
        g.add_argument("--workers", type=_positive_int, default=1,
                       help="submissions graded at once, and processes that generate held-out data (default 1)")
    else:
        g.add_argument("--workers", type=_positive_int, help="processes that generate held-out data (default: up to 2)")
    g.add_argument("-v", "--verbose", action="store_true", help="show each child's output and the data generation")


def _options(args: argparse.Namespace):
    from grader.cases import parse_only
    from grader.grading import GradeOptions
    from grader.heldout import parse_seed

    seed = args.seed if args.seed is not None else os.environ.get(rubric.SEED_ENV, rubric.DEFAULT_SEED)
    return GradeOptions(seed=parse_seed(seed), size=args.size, only=parse_only(args.only), cache_dir=args.cache_dir,
                        timeout_s=args.timeout, memory_mb=args.memory_mb, threads=args.threads,
                        isolation=args.isolation, workers=args.workers, verbose=args.verbose,
                        kart_data=args.kart_data,
                        keep=getattr(args, "keep", False))


def grade_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader", description="Grade one submission: a zip made by "
                                     "`python bundle.py homework ID`, or a homework/ folder. Exit code 0 whenever "
                                     "grading ran, whatever the score; the last line is total=<points>/<max>.")
    parser.add_argument("submission", help="ID.zip, or a homework/ folder")
    parser.add_argument("--json", help="write every case's score, max, status and message here")
    parser.add_argument("--gradescope", help="write Gradescope's results.json here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder, for a look")
    _grading_options(parser)
    args = parser.parse_args(argv)

    from grader import report
    from grader.grading import failed_report, grade

    options = _options(args)
    path = Path(args.submission)
    if not path.exists():
        message = f"no such file or folder: {path}"
        report.write(failed_report(path.name, options, "rejected", message), args.json, args.gradescope)
        print(f"error: {message}", file=sys.stderr)
        return 2
    try:
        result = grade(path, options)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: B036 - a grader fault: still write the results, then say so
        traceback.print_exc()
        result = failed_report(path.name, options, "grader_error", f"grader error: {e}")
        report.write(result, args.json, args.gradescope)
        print(report.text(result))
        return 1
    report.write(result, args.json, args.gradescope)
    print(report.text(result))
    return 0


def batch_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader batch",
                                     description="Grade every .zip in a folder, in parallel processes.")
    parser.add_argument("folder", help="a folder of ID.zip files")
    parser.add_argument("--csv", default="grades.csv", help="the grades, one row per zip (default grades.csv)")
    parser.add_argument("--reports_dir", help="each zip's report and JSON (default: <csv name>_reports/ beside it)")
    _grading_options(parser, batch=True)
    args = parser.parse_args(argv)

    from grader.batch import grade_folder

    options = _options(args)
    grade_folder(args.folder, args.csv, options, workers=args.workers, reports_dir=args.reports_dir)
    return 0


def starter_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader starter",
                                     description="Write the student starter: solution regions of homework/*.py "
                                                 "stubbed, reference checkpoints left out, the rest as it is.")
    parser.add_argument("out_dir", help="a new (or empty) folder")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    args = parser.parse_args(argv)

    from grader.starter import StarterError, write_starter

    try:
        stubbed = write_starter(args.out_dir, overwrite=args.overwrite)
    except StarterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    regions = ", ".join(f"{Path(f).name} ({n})" for f, n in sorted(stubbed.items()))
    print(f"wrote the starter to {args.out_dir}: {sum(stubbed.values())} solution regions stubbed ({regions}); "
          "reference checkpoints left out")
    return 0


def heldout_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader heldout",
                                     description="Make and cache the held-out sets of a seed ahead of grading.")
    _grading_options(parser)
    args = parser.parse_args(argv)

    from grader.heldout import prepare

    options = _options(args)
    held = prepare(options.seed, options.size, options.cache_dir, tuple(options.only), options.workers,
                   options.verbose, kart_data=options.kart_data)
    print(f"held-out sets for seed {options.seed} ({options.size}) are in {held.root}")
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\ncommands: {', '.join(COMMANDS)}; `python -m grader COMMAND --help` for each")
        return 0
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    command, rest = (argv[0], argv[1:]) if argv[0] in COMMANDS else ("grade", argv)
    run = {"grade": grade_command, "batch": batch_command, "starter": starter_command, "heldout": heldout_command}
    try:
        return run[command](rest)
    except SystemExit as e:  # our one-line errors: print them plainly
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
