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

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from homework.cli_checks import fail

CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"  # homework/checkpoints/<assignment>: load_*() reads


@dataclass(frozen=True)
class Kind:
    name: str  # "fine-tuned VLM": how messages name it
    max_mb: float  # the weights files and the record together
    record: str  # the JSON record's file name
    command: str  # the command that writes such a folder (it takes --output_dir)
    shrink: str  # how to make one smaller

    @property
    def what(self) -> str:
        return f"a {self.name}"


LIMITS = {
    "vlm": Kind("fine-tuned VLM", 10, "training_config.json", "python -m homework.finetune train", "lower --lora_rank"),
    "clip": Kind("CLIP", 10, "training_config.json", "python -m homework.clip train",
                 "lower --lora_rank or --embed_dim"),
    "fusion": Kind("fusion", 5, "config.json", "python -m homework.fusion train", "try a smaller --width"),
    "cilp": Kind("CILP", 5, "config.json", "python -m homework.cilp finetune", "try a smaller --width"),
    "simclr": Kind("SimCLR", 10, "config.json", "python -m homework.simclr train",
                   "use a smaller --width (16 saves about 3 MB)"),
    "robot": Kind("robot", 16, "config.json", "python -m homework.robot train", "lower --fusion_dim (128 gives 3 MB)"),
}


def reference_dir(assignment: str) -> Path:
    """Where `homework.load_<assignment>()` reads, and the default of every `test --checkpoint`."""
    return CHECKPOINTS_DIR / assignment


def make_command(assignment: str, path: str | Path, command: str | None = None) -> str:
    """The command that writes a checkpoint of ASSIGNMENT at PATH (COMMAND: another than the usual one)."""
    return f"{command or LIMITS[assignment].command} --output_dir {path}"


def check_size(path: str | Path, assignment: str, files: tuple[str, ...]) -> float:
    """The size in MB of FILES of the folder PATH and its record, if it fits ASSIGNMENT's limit;
    else one line that says how to make it smaller. Resume states and logs beside them do not count."""
    kind = LIMITS[assignment]
    size = sum((Path(path) / f).stat().st_size for f in {*files, kind.record} if (Path(path) / f).is_file()) / 2**20
    if size > kind.max_mb:
        fail(f"{path} weighs {size:.1f} MB, over the {kind.max_mb:g} MB limit of {kind.what} checkpoint; {kind.shrink}")
    return size


def check_files(path: str | Path, assignment: str, files: tuple[str, ...], command: str | None = None) -> None:
    """One line naming the first of FILES missing from the folder PATH, and the command that writes them."""
    for name in files:
        if not (Path(path) / name).is_file():
            fail(f"no {name} in {path}, so it is not {LIMITS[assignment].what} checkpoint; train one with "
                 f"`{make_command(assignment, path, command)} --overwrite`")


def output_folder(path: str | Path, marker: str, overwrite: bool, holds: str = "a checkpoint") -> Path:
    """PATH as the folder a command is about to write; one line if it already holds MARKER (a file or
    folder name that says it HOLDS something) and OVERWRITE was not given: nothing made is replaced unasked."""
    path = Path(path)
    if (path / marker).exists() and not overwrite:
        fail(f"{path} already holds {holds}; pass --overwrite to replace it, or another --output_dir")
    return path


def weights_fingerprint(model) -> str:
    """sha256 over the names, shapes and bytes of every tensor of a model's state dict: which weights
    a checkpoint was made on (a base, a frozen encoder)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def write_record(out: str | Path, assignment: str, record: dict) -> Path:
    """OUT/<record file> with the assignment's name first, then RECORD (config, settings, metrics)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LIMITS[assignment].record
    path.write_text(json.dumps({"assignment": assignment, **record}, indent=1) + "\n")
    return path


def open_checkpoint(path: str | Path, assignment: str, required: tuple[str, ...] = (),
                    command: str | None = None) -> dict:
    """The record of the checkpoint folder at PATH, after checking that it and its REQUIRED files
    (the weights) are there, that the record is JSON of ASSIGNMENT, and that they fit the size limit.
    Messages name COMMAND (default: the assignment's) as the one that writes such a folder.
    A record without an "assignment" key (made before the key existed) counts as ASSIGNMENT's."""
    path, kind = Path(path), LIMITS[assignment]
    if not path.is_dir():
        fail(f"no {kind.name} checkpoint in {path}; train one with `{make_command(assignment, path, command)}`")
    found = recorded_assignment(path)  # first: another assignment's folder is not to be trained over
    if found not in (None, assignment):
        fail(f"{path} holds a {found!r} checkpoint, not {kind.what} one; pass a checkpoint made by `{kind.command}`")
    check_files(path, assignment, (*required, kind.record), command)
    try:
        record = json.loads((path / kind.record).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"{path}/{kind.record} is not valid JSON ({e}); train the checkpoint again")
    if not isinstance(record, dict):
        fail(f"{path}/{kind.record} holds no settings; train the checkpoint again")
    check_size(path, assignment, required)
    return record


def recorded_assignment(path: Path) -> str | None:
    """The assignment named by any kit record in the folder PATH (None if none names one)."""
    for name in sorted({k.record for k in LIMITS.values()}):
        try:
            found = json.loads((path / name).read_text()).get("assignment")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):  # absent, or not a record: checked later
            continue
        if found:
            return str(found)
    return None


def config_from_record(config_class, values: dict, path: str | Path):
    """CONFIG_CLASS (a dataclass) built from a record's resolved config VALUES; one line naming the
    record at PATH if it holds fields this code does not know or values the class refuses."""
    unknown = set(values) - {f.name for f in dataclasses.fields(config_class)}
    if unknown:
        fail(f"{path} has unknown config fields {sorted(unknown)}; it was made by another version of the kit")
    try:
        return config_class(**values)
    except (TypeError, ValueError) as e:
        fail(f"{path}: {e}")


def load_weights(module, path: str | Path, state: dict | None = None, ignore_missing: str | tuple[str, ...] = ""):
    """MODULE with the tensors of the safetensors file PATH (or STATE, read from PATH); one line if they
    do not fit its config. Missing keys under IGNORE_MISSING (a prefix or several: weights held
    elsewhere) are allowed."""
    from safetensors.torch import load_file

    if state is None:
        try:
            state = load_file(path)
        except Exception as e:  # safetensors' own error type, and OSError: a truncated or damaged file
            damaged(path, e)
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (ignore_missing and k.startswith(ignore_missing))]
    if missing or unexpected:
        fail(f"{path} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]}); "
             "it was made by another version of this model: train it again")
    return module


def load_adapter(model, folder: str | Path):
    """MODEL wrapped by the LoRA adapter saved in FOLDER (peft's `PeftModel`), after checking that its
    weights file can be read: one line for a truncated or damaged one, not a traceback from deep
    inside safetensors."""
    from peft import PeftModel
    from safetensors import safe_open

    weights = Path(folder) / "adapter_model.safetensors"
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():  # reads every tensor: a file cut short fails here
                f.get_tensor(key)
    except Exception as e:  # safetensors' own error type, and OSError
        damaged(weights, e)
    return PeftModel.from_pretrained(model, folder)


def load_torch_state(path: str | Path) -> dict:
    """A plain state dict saved with torch.save (weights only); one line if the file is damaged."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, or not a torch file
        damaged(path, e)


def damaged(path: str | Path, error: Exception) -> NoReturn:
    """One line for a weights file that safetensors cannot read: truncated (a copy or an upload cut
    short) or not a safetensors file at all."""
    detail = " ".join(str(error).split())[:120]
    fail(f"{path} cannot be read as safetensors ({detail}): it is truncated or damaged; copy it again, or "
         "train and save the checkpoint again")


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
