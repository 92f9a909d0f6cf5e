"""The course's real SuperTuxKart data, end to end: questions and captions under the course's
rule, the base pretrained on real frames, the VLM and the CLIP fine-tuned on it, and their scores
on the course's grading set and on all of real valid.

    python -m benchmarks.real_stk --data_dir DIR          # DIR holds train/, valid/, valid_grader/

DIR is the course's `data/` folder (the public repository letspairup/adl_hw4 holds it); it is
never part of this kit. Each step runs only if its output is missing, as its own process
(its wall time and peak memory recorded), in the order:

1. the questions (`generate_qa.py generate --rules original --balanced false`) and the captions
   (`homework.generate_captions generate --rules original`) of train and valid, written beside
   their frames in DIR;
2. the base (`--base_dir`, by default the kit's `data/base_vlm_stk`, the `tiny_stk` base):
   `python -m pretraining.base_vlm pretrain` on real train under the original rule;
3. the VLM (`--vlm_dir`) and the CLIP (`--clip_dir`) fine-tuned on real train with the settings
   below, evaluated on real valid while they train.

With `--vlm_dir homework/checkpoints/vlm_stk --clip_dir homework/checkpoints/clip_stk` it makes the
committed references, and rescoring them is the same command. A step whose output exists is
reported with the time its own record holds. Then it scores both models on `valid_grader` and on
every question and multiple-choice set of valid, under the kit's answer matching and the course's
(an answer is right when it starts with the label), per family and template, and writes
`benchmarks/results/real_stk.{json,md,png}`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import fire

from benchmarks.curves import RESULTS, run_peak_rss_mib

KIT = Path(__file__).resolve().parents[1]
# The reference settings on real frames: the one place that writes them.
VLM_ARGS = ["--max_steps", "3000", "--learning_rate", "1.5e-3", "--seed", "0"]
CLIP_ARGS = ["--max_steps", "3000", "--seed", "0"]
# What the course's students report for SmolVLM-256M fine-tuned for hours (valid_grader).
STUDENTS_SMOLVLM = {"vlm": (0.708, 0.742), "clip": (0.635, 0.795)}


def _run(name: str, command: list[str], steps: dict, log) -> None:
    """Run COMMAND as its own process, recording its wall seconds and peak memory under NAME."""
    log(f"[{name}] {' '.join(command)}")
    start = time.time()
    try:
        peak = run_peak_rss_mib([sys.executable, *command], cwd=KIT)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"error: step {name} failed (exit code {e.returncode}); its output is above") from None
    steps[name] = {"seconds": round(time.time() - start, 1), "peak_rss_mib": round(peak), "ran": True}


def _recorded(name: str, steps: dict, record: Path | None = None, key: str = "") -> None:
    """A step done before: its seconds as its own RECORD holds them under KEY (unknown without one)."""
    data = json.loads(record.read_text()) if record is not None and record.is_file() else {}
    steps[name] = {"seconds": data.get(key), "peak_rss_mib": None, "ran": False,
                   "record": str(record) if record else None}


def _score_vlm(checkpoint: Path, data_dir: Path) -> dict:
    from homework.data import VQADataset, benchmark
    from homework.finetune import load_finetuned

    vlm = load_finetuned(checkpoint)
    out = {}
    for split in ("valid_grader", "valid"):
        start = time.time()
        r = benchmark(vlm, VQADataset(split, data_dir=str(data_dir)), batch_size=100)
        out[split] = {"n": sum(r.counts.values()), "accuracy": round(r.accuracy, 4),
                      "course_accuracy": round(r.course_accuracy, 4),
                      "per_family": {f: round(a, 4) for f, a in r.per_family.items()},
                      "course_per_family": {f: round(a, 4) for f, a in r.course_per_family.items()},
                      "counts": r.counts, "seconds": round(time.time() - start, 1)}
    return out


def _score_clip(checkpoint: Path, data_dir: Path) -> dict:
    from homework.clip import evaluate, load_model

    model = load_model(checkpoint)
    out = {}
    for split in ("valid_grader", "valid"):
        start = time.time()
        r = evaluate(model, split, str(data_dir))
        out[split] = {"n": sum(r.counts.values()), "accuracy": round(r.accuracy, 4),
                      "per_template": {t: round(a, 4) for t, a in r.per_template.items()}, "counts": r.counts,
                      "seconds": round(time.time() - start, 1)}
    return out


def _grade(vlm_dir: Path, clip_dir: Path, data: Path, log) -> dict:
    """The two references graded as a submission is, on valid_grader through `--kart_data`: a copy
    of homework/ whose vlm and clip checkpoints are these, bundled, then `python -m grader`."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="real-stk-grade-") as tmp:
        homework = Path(tmp) / "homework"
        shutil.copytree(KIT / "homework", homework, ignore=shutil.ignore_patterns("__pycache__", "checkpoints"))
        for name, folder in (("vlm", vlm_dir), ("clip", clip_dir)):
            shutil.copytree(folder, homework / "checkpoints" / name)
        zip_path = Path(tmp) / "reference"
        report = Path(tmp) / "report.json"
        for command in (["bundle.py", str(homework), str(zip_path)],
                        ["-m", "grader", f"{zip_path}.zip", "--only", "vlm,clip", "--kart_data",
                         str(data / "valid_grader"), "--json", str(report)]):
            log(f"[grade] {' '.join(command)}")
            if subprocess.run([sys.executable, *command], cwd=KIT).returncode != 0:
                raise SystemExit(f"error: `{' '.join(command)}` failed; its output is above")
        return json.loads(report.read_text())


def _table(results: dict) -> str:
    vlm, clip, steps = results["vlm"], results["clip"], results["steps"]
    lines = ["| | valid_grader (kit matching) | valid_grader (course matching) | all of valid (kit) | all of valid (course) |",
             "|---|---|---|---|---|"]
    families = list(vlm["valid"]["per_family"])
    for f in families:
        cells = [f"{vlm[s][k].get(f, float('nan')):.1%}" for s in ("valid_grader", "valid")
                 for k in ("per_family", "course_per_family")]
        lines.append(f"| VLM {f} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    lines.append(f"| **VLM, all** ({vlm['valid_grader']['n']} / {vlm['valid']['n']} questions) | "
                 f"**{vlm['valid_grader']['accuracy']:.1%}** | {vlm['valid_grader']['course_accuracy']:.1%} | "
                 f"{vlm['valid']['accuracy']:.1%} | {vlm['valid']['course_accuracy']:.1%} |")
    lines.append(f"| **CLIP** ({clip['valid_grader']['n']} / {clip['valid']['n']} sets) | "
                 f"**{clip['valid_grader']['accuracy']:.1%}** | | {clip['valid']['accuracy']:.1%} | |")
    low, high = STUDENTS_SMOLVLM["vlm"]
    lines.append(f"| students' SmolVLM-256M, VLM | {low:.1%}-{high:.1%} | | | |")
    low, high = STUDENTS_SMOLVLM["clip"]
    lines.append(f"| students' SmolVLM-256M, CLIP | {low:.1%}-{high:.1%} | | | |")
    if "grader" in results:
        g = results["grader"]
        lines += ["", f"Graded as a submission on valid_grader (`python -m grader ... --kart_data`): "
                      f"{g['total']:g} of {g['max_score']:g} points."]
    lines += ["", "| step | seconds | peak memory (MiB) | |", "|---|---|---|---|"]
    for name, s in steps.items():
        seconds = f"{s['seconds']:.0f}" if s["seconds"] is not None else ""
        peak = f"{s['peak_rss_mib']}" if s["peak_rss_mib"] is not None else ""
        source = "this run" if s["ran"] else "from its record" if s["seconds"] is not None else "made earlier, not timed"
        lines.append(f"| {name} | {seconds} | {peak} | {source} |")
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    vlm = results["vlm"]
    families = list(vlm["valid"]["per_family"])
    bars = [("valid_grader, kit", vlm["valid_grader"]["per_family"]),
            ("valid_grader, course", vlm["valid_grader"]["course_per_family"]),
            ("all of valid, kit", vlm["valid"]["per_family"]), ("all of valid, course", vlm["valid"]["course_per_family"])]
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(families) + 1)
    for i, (label, per) in enumerate(bars):
        values = [per.get(f, 0.0) for f in families]
        ax.bar(x[:-1] + (i - 1.5) * 0.2, values, 0.2, label=label)
    for i, split in enumerate(("valid_grader", "valid")):
        ax.bar(x[-1] + (i - 0.5) * 0.3, results["clip"][split]["accuracy"], 0.3, color=f"C{4 + i}",
               label=f"CLIP, {'valid_grader' if i == 0 else 'all of valid'}")
    ax.axhline(0.7, color="grey", ls="--", lw=0.8)
    ax.set_xticks(x, [*families, "CLIP"], fontsize=8)
    ax.set(ylim=(0, 1.02), ylabel="accuracy", title="Real SuperTuxKart frames: the tiny_stk references")
    ax.legend(fontsize=7, ncol=3, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(data_dir: str, base_dir: str = "data/base_vlm_stk", vlm_dir: str = "runs/real_stk/vlm",
         clip_dir: str = "runs/real_stk/clip", threads: int = 2, name: str = "real_stk", grade: bool = True,
         paste: float = 0.0) -> None:
    """Run the real-data pipeline's missing steps, then score and write the results.

    Args:
        data_dir: the course's data folder (train/, valid/ and valid_grader/ inside).
        base_dir: the base to fine-tune on (pretrained there first if missing); the default is the
            kit's tiny_stk base.
        vlm_dir: the fine-tuned VLM (trained there first if missing).
        clip_dir: the CLIP (trained there first if missing).
        threads: torch CPU threads of every step.
        name: the results' file name in benchmarks/results/.
        grade: also grade both models as a submission, on valid_grader (`python -m grader --kart_data`).
        paste: the base's `--paste`, used only when the base is made here; 0, the default, is how
            the committed tiny_stk was made.
    """
    from homework.base_vlm import BASES
    from homework.cli_checks import check_bool, check_number

    grade = check_bool("grade", grade)
    paste = check_number("paste", paste, allow_minimum=True)

    data = Path(str(data_dir)).resolve()
    for split in ("train", "valid", "valid_grader"):
        if not (data / split).is_dir():
            raise SystemExit(f"error: {data} has no {split}/ folder; pass the course's data folder as --data_dir")
    base = Path(base_dir).resolve()
    base_name = next((n for n, (d, _) in BASES.items() if d.resolve() == base), str(base))
    common = ["--data_dir", str(data), "--threads", str(threads)]
    steps: dict[str, dict] = {}
    log = print
    for split in ("train", "valid"):
        if (data / split / "all_qa_pairs.json").is_file():
            _recorded(f"questions {split}", steps)
        else:
            _run(f"questions {split}", ["generate_qa.py", "generate", "--split", split, "--data_dir", str(data),
                                        "--rules", "original", "--balanced", "false"], steps, log)
        if (data / split / "all_captions.json").is_file():
            _recorded(f"captions {split}", steps)
        else:
            _run(f"captions {split}", ["-m", "homework.generate_captions", "generate", "--split", split,
                                       "--data_dir", str(data), "--rules", "original"], steps, log)
    if (base / "config.json").is_file():
        _recorded("pretrain base", steps, base / "pretrain_config.json", "seconds_this_run")
    else:
        _run("pretrain base", ["-m", "pretraining.base_vlm", "pretrain", "--split", "train", "--rules", "original",
                               "--output_dir", str(base), "--run_dir", f"runs/pretrain_{base.name}", *common,
                               *(["--paste", str(paste)] if paste else [])],
             steps, log)
    for part, folder, module, args, key in (("vlm", vlm_dir, "homework.finetune", VLM_ARGS, "seconds"),
                                            ("clip", clip_dir, "homework.clip", CLIP_ARGS, "train_seconds")):
        folder = Path(folder)
        if (folder / "training_config.json").is_file():
            _recorded(f"train {part}", steps, folder / "training_config.json", key)
        else:
            _run(f"train {part}", ["-m", module, "train", "--base", base_name, "--output_dir", str(folder),
                                   *common, *args], steps, log)
    made_with = json.loads((base / "pretrain_config.json").read_text()) if (base / "pretrain_config.json").is_file() else {}
    results = {"data_dir": str(data), "base": base_name, "paste": made_with.get("paste", 0.0), "vlm_checkpoint": str(vlm_dir),
               "clip_checkpoint": str(clip_dir), "threads": threads, "steps": steps,
               "vlm": _score_vlm(Path(vlm_dir), data), "clip": _score_clip(Path(clip_dir), data),
               "students_smolvlm": STUDENTS_SMOLVLM}
    if grade and base_name not in BASES:  # a submission names one of the kit's bases; the grader loads no other
        log(f"not grading: {base} is not one of the kit's bases ({', '.join(BASES)}), which a submission must name")
    elif grade:
        results["grader"] = _grade(Path(vlm_dir), Path(clip_dir), data, log)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    table = _table(results)
    (RESULTS / f"{name}.md").write_text(table + "\n")
    _plot(results, RESULTS / f"{name}.png")
    print(table)
    print(f"wrote {RESULTS / name}.json, .md and .png")


if __name__ == "__main__":
    fire.Fire(main)
