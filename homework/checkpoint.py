"""Checkpoint folders, the one way every assignment writes and opens them.

A checkpoint is a folder: the weights (safetensors, or a peft adapter), and a JSON record that
holds the resolved config, the assignment's name and, for models on the kit's base VLM, the
base's fingerprint. Opening one checks, in this order, that the folder and its files are there,
that the record is readable JSON of this assignment, that the folder fits the assignment's size
limit, and (`check_base`) that it was trained on the base it is about to be loaded on. Every
failure is one line (`UsageError`) that says what to do, and a missing checkpoint names the exact
command that writes that path.

`LIMITS` is the one table of what each assignment's checkpoint may weigh; the grader's limit on
a whole submission is `grader.rubric.SIZE_LIMIT_MB`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from homework.cli_checks import fail

CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"  # homework/checkpoints/<assignment>: load_*() reads


@dataclass(frozen=True)
class Kind:
    name: str  # "fine-tuned VLM": how messages name it
    what: str  # "a fine-tuned VLM"
    max_mb: float  # the weights files and the record together
    record: str  # the JSON record's file name
    command: str  # the command that writes such a folder (it takes --output_dir)


LIMITS = {
    "vlm": Kind("fine-tuned VLM", "a fine-tuned VLM", 10, "training_config.json", "python -m homework.finetune train"),
    "clip": Kind("CLIP", "a CLIP", 10, "training_config.json", "python -m homework.clip train"),
    "fusion": Kind("fusion", "a fusion", 5, "config.json", "python -m homework.fusion train"),
    "cilp": Kind("CILP", "a CILP", 5, "config.json", "python -m homework.cilp finetune"),
    "simclr": Kind("SimCLR", "a SimCLR", 10, "config.json", "python -m homework.simclr train"),
}


def reference_dir(assignment: str) -> Path:
    """Where `homework.load_<assignment>()` reads, and the default of every `test --checkpoint`."""
    return CHECKPOINTS_DIR / assignment


def make_command(assignment: str, path: str | Path) -> str:
    """The command that writes a checkpoint of ASSIGNMENT at PATH."""
    return f"{LIMITS[assignment].command} --output_dir {path}"


def check_size(path: str | Path, assignment: str, files: tuple[str, ...], hint: str = "") -> float:
    """The size in MB of FILES of the folder PATH and its record, if it fits ASSIGNMENT's limit;
    else one line (with HINT: how to make it smaller). Resume states and logs beside them do not count."""
    kind = LIMITS[assignment]
    size = sum((Path(path) / f).stat().st_size for f in {*files, kind.record} if (Path(path) / f).is_file()) / 2**20
    if size > kind.max_mb:
        fail(f"{path} weighs {size:.1f} MB, over the {kind.max_mb:g} MB limit of {kind.what} checkpoint"
             + (f"; {hint}" if hint else ""))
    return size


def write_record(out: str | Path, assignment: str, record: dict) -> Path:
    """OUT/<record file> with the assignment's name first, then RECORD (config, settings, metrics)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LIMITS[assignment].record
    path.write_text(json.dumps({"assignment": assignment, **record}, indent=1) + "\n")
    return path


def open_checkpoint(path: str | Path, assignment: str, required: tuple[str, ...] = (), size_hint: str = "") -> dict:
    """The record of the checkpoint folder at PATH, after checking that it and its REQUIRED files
    (the weights) are there, that the record is JSON of ASSIGNMENT, and that they fit the size limit
    (SIZE_HINT: how to make a checkpoint smaller).
    A record without an "assignment" key (made before the key existed) counts as ASSIGNMENT's."""
    path, kind = Path(path), LIMITS[assignment]
    if not path.is_dir():
        fail(f"no {kind.name} checkpoint in {path}; train one with `{make_command(assignment, path)}`")
    for name in (*required, kind.record):
        if not (path / name).is_file():
            fail(f"no {name} in {path}, so it is not {kind.what} checkpoint; train one with "
                 f"`{make_command(assignment, path)} --overwrite`")
    try:
        record = json.loads((path / kind.record).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"{path}/{kind.record} is not valid JSON ({e}); train the checkpoint again")
    if not isinstance(record, dict):
        fail(f"{path}/{kind.record} holds no settings; train the checkpoint again")
    found = record.get("assignment", assignment)
    if found != assignment:
        fail(f"{path} holds a {found!r} checkpoint, not {kind.what} one; pass a checkpoint made by `{kind.command}`")
    check_size(path, assignment, required, size_hint)
    return record


def check_base(path: str | Path, record: dict, fingerprint: str, verb: str = "trained") -> None:
    """One line unless the checkpoint's RECORD names the base FINGERPRINT it is being loaded on."""
    if record.get("base_fingerprint") != fingerprint:
        fail(f"{path} was {verb} on a base with fingerprint {str(record.get('base_fingerprint'))[:12]}, but base "
             f"{record.get('base', 'tiny')!r} here has {fingerprint[:12]}; train it again on this base")


def save_adapter(model, out: str | Path) -> None:
    """A peft model's adapter (adapter_config.json, adapter_model.safetensors) into OUT, without
    the model card peft writes beside it: it describes a hub model, not this checkpoint."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)
