"""bundle.py: one top folder, what it leaves out, the size limit, refusing to overwrite."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from bundle import bundle
from grader import rubric
from grader.archive import check_zip

ROOT = Path(__file__).resolve().parents[1]


def make_homework(root: Path) -> Path:
    hw = root / "homework"
    files = {
        "__init__.py": "",
        "fusion.py": "x = 1\n",
        "checkpoints/fusion/model.safetensors": b"\0" * 100,
        "checkpoints/fusion/config.json": "{}",
        "checkpoints/vlm/adapter_model.safetensors": b"\1" * 100,
        # all of these are left out
        "__pycache__/fusion.cpython-311.pyc": b"\0",
        ".ipynb_checkpoints/notes-checkpoint.ipynb": "{}",
        "runs/finetune/checkpoint-500/adapter_model.safetensors": b"\0",
        "checkpoints/vlm/checkpoint-100/optimizer.pt": b"\0",
        "checkpoints/vlm/optimizer.pt": b"\0",
        "checkpoints/vlm/scheduler.pt": b"\0",
        "checkpoints/vlm/rng_state.pth": b"\0",
        "checkpoints/vlm/training_args.bin": b"\0",
        "checkpoints/simclr/last.pt": b"\0",
        "data/train/00000_info.json": "{}",
        "train.log": "step 1",
        "logs/events.out.tfevents.1": b"\0",
        "features.npy": b"\0",
    }
    for name, content in files.items():
        path = hw / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return hw


def test_bundle_holds_one_top_folder_and_leaves_out_the_rest(tmp_path):
    hw = make_homework(tmp_path / "src")
    out = bundle(hw, str(tmp_path / "alice"))
    assert out == tmp_path / "alice.zip"
    with zipfile.ZipFile(out) as z:
        names = sorted(z.namelist())
    assert names == ["homework/__init__.py", "homework/checkpoints/fusion/config.json",
                     "homework/checkpoints/fusion/model.safetensors",
                     "homework/checkpoints/vlm/adapter_model.safetensors", "homework/fusion.py"]
    assert sorted(m.path.as_posix() for m in check_zip(out)) == names  # what the grader accepts


def test_bundle_is_byte_for_byte_reproducible(tmp_path):
    hw = make_homework(tmp_path / "src")
    a = bundle(hw, str(tmp_path / "a")).read_bytes()
    os.utime(hw / "fusion.py", (1, 1))
    assert bundle(hw, str(tmp_path / "b")).read_bytes() == a


def test_bundle_refuses_to_overwrite(tmp_path):
    hw = make_homework(tmp_path / "src")
    bundle(hw, str(tmp_path / "id"))
    with pytest.raises(SystemExit, match="already exists; pass --overwrite"):
        bundle(hw, str(tmp_path / "id"))
    (hw / "new.py").write_text("y = 2\n")
    out = bundle(hw, str(tmp_path / "id.zip"), overwrite=True)
    assert "homework/new.py" in zipfile.ZipFile(out).namelist()


def test_bundle_refuses_over_the_size_limit_and_names_the_largest_files(tmp_path):
    hw = make_homework(tmp_path / "src")
    big = hw / "checkpoints" / "vlm" / "huge.safetensors"
    big.write_bytes(os.urandom((rubric.SIZE_LIMIT_MB + 1) * 2**20))  # random bytes do not compress
    with pytest.raises(SystemExit, match=r"over the 50 MB limit; nothing written.*huge\.safetensors \(51\.0 MB\)"):
        bundle(hw, str(tmp_path / "id"))
    assert not (tmp_path / "id.zip").exists()
    assert not list(tmp_path.glob(".id.zip*"))  # no temporary file left behind


def test_bundle_refuses_links_and_bad_folders(tmp_path):
    hw = make_homework(tmp_path / "src")
    (hw / "link.py").symlink_to(hw / "fusion.py")
    with pytest.raises(SystemExit, match="link.py is a link"):
        bundle(hw, str(tmp_path / "id"))
    with pytest.raises(SystemExit, match="is not a folder"):
        bundle(tmp_path / "nowhere", str(tmp_path / "id"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(SystemExit, match="no __init__.py"):
        bundle(tmp_path / "plain", str(tmp_path / "id"))


def test_bundle_cli_on_the_kit(tmp_path, run_cli):
    proc = run_cli("bundle.py", "homework", str(tmp_path / "ref"))
    assert proc.returncode == 0, proc.output
    assert "wrote" in proc.stdout and "checkpoints:" in proc.stdout
    members = check_zip(tmp_path / "ref.zip")
    assert {m.path.parts[0] for m in members} == {"homework"}
    assert not any("__pycache__" in m.path.parts for m in members)
    again = run_cli("bundle.py", "homework", str(tmp_path / "ref"))
    assert again.returncode == 2 and again.stderr.strip().startswith("error:") and "--overwrite" in again.stderr
