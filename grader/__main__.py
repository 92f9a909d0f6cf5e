"""`python -m grader`: grade a submission, a folder of them, or write the student starter.

    python -m grader ID.zip                        # or a homework/ folder; --seed S for a private set
    python -m grader ID.zip --only vlm,clip -v     # some assignments, with the child's output
    python -m grader ID.zip --json r.json --gradescope results.json
    python -m grader batch submissions/ --workers 2 --csv grades.csv
    python -m grader starter ../starter            # the student version of this kit
    python -m grader heldout --seed S              # make (and cache) the held-out sets ahead of time
    python -m grader gradescope autograder.zip     # Gradescope's autograder, held-out sets built in
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from grader import rubric

COMMANDS = ("grade", "batch", "starter", "heldout", "gradescope")


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (not the usage block, then the error)."""

    def error(self, message: str):
        raise SystemExit(f"error: {message} (see `{self.prog} --help`)")


def _positive_int(most: int):
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or len(text) > 12 or not 1 <= int(text) <= most:
            raise argparse.ArgumentTypeError(f"must be an integer from 1 to {most}, got {text[:40]!r}")
        return int(text)
    return parse


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= rubric.MAX_TIMEOUT_S:  # NaN and inf fail this too
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0 and at most {rubric.MAX_TIMEOUT_S}, "
                                         f"got {text[:40]!r}")
    return value


def _grading_options(parser: argparse.ArgumentParser, batch: bool = False) -> None:
    g = parser.add_argument_group("grading")
    g.add_argument("--seed", help=f"grading seed (default: ${rubric.SEED_ENV}, else the public {rubric.DEFAULT_SEED})")
    from grader.cases import ASSIGNMENTS

    g.add_argument("--only", help=f"comma-separated assignments to grade: {','.join(ASSIGNMENTS)} (default: all)")
    g.add_argument("--size", default="full", choices=list(rubric.HELDOUT_SIZES),
                   help="held-out set size: full (what grades count), quick (a faster, noisier self-check), "
                        "tiny (the kit's tests)")
    g.add_argument("--cache_dir", help="where held-out sets are cached (default: ~/.cache/kart-kit-grader)")
    g.add_argument("--kart_data", metavar="DIR",
                   help="grade VLM and CLIP on the *_qa_pairs.json and *_mc_qas.json of this folder (e.g. the "
                        "course's data/valid_grader; pictures relative to its parent) instead of rendered frames")
    g.add_argument("--timeout", type=_timeout,
                   help="wall-clock seconds per assignment (default: each assignment's own, see grader/rubric.py)")
    g.add_argument("--memory_mb", type=_positive_int(rubric.MAX_MEMORY_MB), default=rubric.MEMORY_MB,
                   help=f"address-space limit of each child process (default {rubric.MEMORY_MB})")
    g.add_argument("--threads", type=_positive_int(rubric.MAX_THREADS), default=rubric.THREADS,
                   help=f"torch threads in each child process (default {rubric.THREADS})")
    g.add_argument("--isolation", default="auto", choices=["auto", "namespace", "process"],
                   help="auto: Linux namespaces where the system allows them, else process limits only")
    if batch:
        g.add_argument("--workers", type=_positive_int(rubric.MAX_WORKERS), default=1,
                       help="submissions graded at once, and processes that generate held-out data (default 1)")
    else:
        g.add_argument("--workers", type=_positive_int(rubric.MAX_WORKERS),
                       help="processes that generate held-out data (default: up to 2)")
    g.add_argument("--heldout_dir", help="grade on held-out sets exported ahead (a Gradescope zip's heldout/) "
                                         "instead of making them from the seed")
    g.add_argument("-v", "--verbose", action="store_true", help="show each child's output and the data generation")


def _options(args: argparse.Namespace):
    from grader.cases import parse_only
    from grader.grading import GradeOptions
    from grader.heldout import check_cache_dir, parse_seed

    seed = args.seed if args.seed is not None else os.environ.get(rubric.SEED_ENV, rubric.DEFAULT_SEED)
    if args.cache_dir:
        check_cache_dir(Path(args.cache_dir))
    heldout_dir = getattr(args, "heldout_dir", None)
    if heldout_dir and not Path(heldout_dir).is_dir():
        raise SystemExit(f"error: --heldout_dir {heldout_dir} is not a folder")
    return GradeOptions(seed=parse_seed(seed), size=args.size, only=parse_only(args.only), cache_dir=args.cache_dir,
                        timeout_s=args.timeout, memory_mb=args.memory_mb, threads=args.threads,
                        isolation=args.isolation, workers=args.workers, verbose=args.verbose,
                        kart_data=args.kart_data, keep=getattr(args, "keep", False), heldout_dir=heldout_dir)


def _check_outputs(*pairs: tuple[str | None, str]) -> None:
    """One line, before any grading, unless every output path can take its file."""
    from grader.report import output_problem

    for path, flag in pairs:
        problem = output_problem(path, flag)
        if problem:
            raise SystemExit(f"error: {problem}")


def grade_command(argv: list[str]) -> int:
    parser = Parser(prog="python -m grader", description="Grade one submission: a zip made by "
                                     "`python bundle.py homework ID`, or a homework/ folder. Exit code 0 whenever "
                                     "grading ran, whatever the score; the last line is total=<points>/<max>.")
    parser.add_argument("submission", help="ID.zip, or a homework/ folder")
    parser.add_argument("--json", help="write every case's score, max, status and message here")
    parser.add_argument("--gradescope", help="write Gradescope's results.json here")
    parser.add_argument("--visibility", default="visible", choices=["visible", "hidden", "after_due_date",
                                                                     "after_published"],
                        help="Gradescope's visibility of the results and each test (default visible)")
    parser.add_argument("--no_leaderboard", action="store_true", help="no leaderboard in Gradescope's results")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder, for a look")
    _grading_options(parser)
    args = parser.parse_args(argv)

    from grader import report
    from grader.cases import printable
    from grader.grading import check_submission_path, failed_report, grade

    _check_outputs((args.json, "--json"), (args.gradescope, "--gradescope"))
    options = _options(args)
    path = Path(args.submission)

    def write(result) -> None:
        report.write(result, args.json, args.gradescope, args.visibility, not args.no_leaderboard)

    problem = check_submission_path(path)
    if problem:
        write(failed_report(printable(path.name), options, "rejected", problem))
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        result = grade(path, options)
    except (KeyboardInterrupt, SystemExit):  # SystemExit: the grader's own one-line error about its input
        raise
    except BaseException as e:  # noqa: B036 - a grader fault: still write the results, then say so
        traceback.print_exc()
        result = failed_report(printable(path.name), options, "grader_error", f"grader error: {e}")
        write(result)
        print(report.text(result))
        return 1
    write(result)
    print(report.text(result))
    return 0


def batch_command(argv: list[str]) -> int:
    parser = Parser(prog="python -m grader batch",
                                     description="Grade every .zip in a folder, in parallel processes.")
    parser.add_argument("folder", help="a folder of ID.zip files")
    parser.add_argument("--csv", default="grades.csv", help="the grades, one row per zip (default grades.csv)")
    parser.add_argument("--reports_dir", help="each zip's report and JSON (default: <csv name>_reports/ beside it)")
    _grading_options(parser, batch=True)
    args = parser.parse_args(argv)

    from grader.batch import grade_folder

    _check_outputs((args.csv, "--csv"))
    if args.reports_dir and Path(args.reports_dir).exists() and not Path(args.reports_dir).is_dir():
        raise SystemExit(f"error: --reports_dir {args.reports_dir} is a file; name a folder")
    options = _options(args)
    grade_folder(args.folder, args.csv, options, workers=args.workers, reports_dir=args.reports_dir)
    return 0


def starter_command(argv: list[str]) -> int:
    parser = Parser(prog="python -m grader starter",
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
    parser = Parser(prog="python -m grader heldout",
                                     description="Make and cache the held-out sets of a seed ahead of grading.")
    _grading_options(parser)
    args = parser.parse_args(argv)

    from grader.heldout import prepare

    options = _options(args)
    held = prepare(options.seed, options.size, options.cache_dir, tuple(options.only), options.workers,
                   options.verbose, kart_data=options.kart_data)
    print(f"held-out sets for seed {options.seed} ({options.size}) are in {held.root}")
    return 0


def gradescope_command(argv: list[str]) -> int:
    parser = Parser(prog="python -m grader gradescope",
                                     description="Write the autograder zip a Gradescope assignment takes: setup.sh, "
                                                 "run_autograder, the grader, the kit's public code and base model, "
                                                 "and the held-out sets built ahead from your private seed (which "
                                                 "does not ship).")
    parser.add_argument("out", help="the zip to write, e.g. autograder.zip")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing zip")
    parser.add_argument("--visibility", default="after_published",
                        choices=["visible", "hidden", "after_due_date", "after_published"],
                        help="when students see their results and tests (default after_published)")
    parser.add_argument("--no_leaderboard", action="store_true", help="no leaderboard of accuracies")
    _grading_options(parser)
    args = parser.parse_args(argv)

    from grader.gradescope import write_autograder

    _check_outputs((args.out, "OUT"))
    if Path(args.out).exists() and not args.overwrite:
        raise SystemExit(f"error: {args.out} already exists; pass --overwrite to replace it")
    options = _options(args)
    out = write_autograder(args.out, options, visibility=args.visibility, leaderboard=not args.no_leaderboard)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB): upload it as the assignment's autograder; "
          f"held-out sets: {', '.join(options.only)} ({options.size}), made from "
          f"{'the public seed' if options.seed == rubric.DEFAULT_SEED else 'your seed, which it does not hold'}")
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
    run = {"grade": grade_command, "batch": batch_command, "starter": starter_command, "heldout": heldout_command,
           "gradescope": gradescope_command}
    try:
        return run[command](rest)
    except SystemExit as e:  # our one-line errors: print them plainly
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
