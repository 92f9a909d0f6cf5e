"""homework/fusion.py: embedder and fusion shapes, training lowers the loss, checkpoints, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from homework import fusion, shapes_data
from homework.checkpoint import LIMITS
from worlds import shapes

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # the test machine is shared; these models are tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fusion") / "data"
    shapes.generate(num_samples=10, seed=3, data_dir=str(root), workers=1, quiet=True)
    return root


@pytest.mark.parametrize("downsample", fusion.DOWNSAMPLES)
@pytest.mark.parametrize("blocks", [2, 3])
def test_embedder_shapes(downsample, blocks):
    embedder = fusion.Embedder(4, width=4, blocks=blocks, downsample=downsample)
    out = embedder(torch.randn(2, 4, 32, 32))
    assert out.shape == (2, 4 * 2 ** (blocks - 1), 32 // 2**blocks, 32 // 2**blocks)
    has_pool = any(isinstance(m, torch.nn.MaxPool2d) for m in embedder.modules())
    assert has_pool == (downsample == "maxpool")


@pytest.mark.parametrize("operator", ["concat", "weighted", "attention"])
@pytest.mark.parametrize("batch,tokens,channels", [(1, 4, 8), (3, 16, 32)])
def test_fusion_operator_shapes(operator, batch, tokens, channels):
    module = {"concat": lambda: fusion.ConcatFusion(channels), "weighted": lambda: fusion.WeightedSumFusion(channels),
              "attention": lambda: fusion.CrossAttentionFusion(channels, heads=4, tokens=tokens)}[operator]()
    rgb, lidar = torch.randn(batch, tokens, channels), torch.randn(batch, tokens, channels)
    assert module(rgb, lidar).shape == (batch, tokens, channels)


def test_weighted_sum_gates_are_a_convex_combination():
    module = fusion.WeightedSumFusion(8)
    rgb, lidar = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    out = module(rgb, lidar)
    gates = module.last_gates
    assert gates.shape == (2, 5, 2) and torch.allclose(gates.sum(-1), torch.ones(2, 5))
    assert torch.allclose(out, gates[..., :1] * rgb + gates[..., 1:] * lidar, atol=1e-6)


def test_late_fusion_averages_the_two_heads():
    model = fusion.FusionClassifier(fusion.FusionConfig(fusion="late", width=4)).eval()
    rgb, lidar = torch.rand(2, 3, 64, 64), torch.rand(2, 4, 64, 64)
    rgb_logits = model.rgb_head(fusion.to_tokens(model.rgb_embedder(model.rgb_norm(rgb))))
    lidar_logits = model.lidar_head(fusion.to_tokens(model.lidar_embedder(model.lidar_norm(lidar))))
    assert torch.allclose(model(rgb, lidar), (rgb_logits + lidar_logits) / 2, atol=1e-6)


@pytest.mark.parametrize("kind", fusion.FUSIONS)
def test_a_few_steps_lower_the_loss(kind):
    torch.manual_seed(0)
    model = fusion.FusionClassifier(fusion.FusionConfig(fusion=kind, width=4))
    rgb, lidar = torch.rand(8, 3, 64, 64), torch.randn(8, 4, 64, 64)
    labels = torch.tensor([0, 1] * 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(model(rgb, lidar), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_wrong_input_shape_is_refused():
    model = fusion.FusionClassifier(fusion.FusionConfig(width=4))
    with pytest.raises(ValueError, match="expected rgb"):
        model(torch.rand(2, 3, 32, 32), torch.rand(2, 4, 32, 32))


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="fusion must be one of"):
        fusion.FusionConfig(fusion="early")


def test_train_test_and_checkpoint_checks(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    fusion.train(fusion="concat", downsample="maxpool", epochs=2, batch_size=8, width=4, data_dir=str(tiny),
                 output_dir=str(out), threads=1)
    record = json.loads((out / "config.json").read_text())
    assert record["assignment"] == "fusion" and record["config"]["fusion"] == "concat"
    assert record["training"]["epochs"] == 2 and record["config"]["rgb_mean"] == json.loads(
        (tiny / "stats.json").read_text())["rgb_mean"]
    assert (out / "model.safetensors").stat().st_size < LIMITS["fusion"].max_mb * 2**20
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["parameters"] > 0 and metrics["seconds_per_epoch"] > 0
    assert metrics["threads"] == 1 and not any("memory" in key for key in metrics)  # measured by the ablation
    capsys.readouterr()
    fusion.test(checkpoint=str(out), data_dir=str(tiny), split="val")
    printed = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"accuracy=[01]\.\d{4}", printed[-1])
    assert printed[0] == "note: --split val is now spelled --split valid; the old name goes in the next release"
    fusion.test(checkpoint=str(out), data_dir=str(tiny), split="valid")
    assert capsys.readouterr().out.strip().splitlines()[-1] == printed[-1]
    with pytest.raises(SystemExit, match="fusion=concat checkpoint, not fusion=late"):
        fusion.test(checkpoint=str(out), fusion="late", data_dir=str(tiny))
    with pytest.raises(SystemExit, match="downsample=maxpool checkpoint, not downsample=stride"):
        fusion.load_model(out, downsample="stride")
    with pytest.raises(SystemExit, match="already holds a checkpoint"):
        fusion.train(fusion="concat", downsample="maxpool", epochs=1, data_dir=str(tiny), output_dir=str(out))
    with pytest.raises(SystemExit, match="no shapes dataset in .*--generate_seed"):
        fusion.test(checkpoint=str(out), data_dir=str(tmp_path / "mistyped_heldout"))
    nothing = tmp_path / "nothing"
    with pytest.raises(SystemExit, match=re.escape(
            f"no fusion checkpoint in {nothing}; train one with `python -m homework.fusion train --output_dir {nothing}`")):
        fusion.test(checkpoint=str(nothing), data_dir=str(tiny))
    with pytest.raises(SystemExit, match="--fusion must be one of"):
        fusion.train(fusion="early", data_dir=str(tiny))
    with pytest.raises(SystemExit, match="--epochs must be an integer >= 1"):
        fusion.train(epochs=0, data_dir=str(tiny))
    with pytest.raises(SystemExit, match="--split must be one of train, valid, all"):
        fusion.test(checkpoint=str(out), split="holdout")


def test_deprecated_flags_still_work_with_a_note(tiny, tmp_path, capsys):
    """--lr and --out_dir are the old names of --learning_rate and --output_dir: same run, one note each."""
    old, new = tmp_path / "old", tmp_path / "new"
    common = {"fusion": "late", "epochs": 1, "batch_size": 8, "width": 4, "data_dir": str(tiny), "threads": 1}
    fusion.train(lr=1e-3, out_dir=str(old), **common)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: --lr is now --learning_rate; the old name goes in the next release",
                     "note: --out_dir is now --output_dir; the old name goes in the next release"]
    fusion.train(learning_rate=1e-3, output_dir=str(new), **common)
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert json.loads((old / "config.json").read_text())["training"]["lr"] == 1e-3
    assert (old / "model.safetensors").read_bytes() == (new / "model.safetensors").read_bytes()  # same run
    with pytest.raises(SystemExit, match="--lr is the old name of --learning_rate; pass only --learning_rate"):
        fusion.train(lr=1e-3, learning_rate=2e-3, output_dir=str(tmp_path / "both"), **common)


def test_a_folder_that_is_not_a_dataset_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(SystemExit, match="no shapes dataset in"):
        shapes_data.load_split(str(tmp_path), "val")
    with pytest.raises(SystemExit, match="already holds other files"):
        shapes_data.load_split(str(tmp_path), "val", generate_seed=0)


def test_predict_on_raw_arrays(tiny):
    model = fusion.FusionClassifier(fusion.FusionConfig(width=4))
    rgb, ranges = zip(*(shapes.load_pair(tiny, sid) for sid in ["cubes/0000", "spheres/0001"]), strict=True)
    import numpy as np

    labels = fusion.predict(model, np.stack(rgb), np.stack(ranges))
    assert labels.shape == (2,) and set(labels.tolist()) <= {0, 1}


def test_reference_checkpoint_loads():
    if not (fusion.REFERENCE_DIR / "config.json").exists():
        pytest.skip("no reference checkpoint committed yet")
    from homework import load_fusion

    model = load_fusion()
    assert isinstance(model, fusion.FusionClassifier)
    size = sum(p.stat().st_size for p in fusion.REFERENCE_DIR.iterdir())
    assert size < LIMITS["fusion"].max_mb * 2**20


def test_test_without_arguments_scores_the_reference(run_cli):
    """`python -m homework.fusion test` scores what load_fusion() loads (makes data/ with seed 0 if missing)."""
    if not (fusion.REFERENCE_DIR / "config.json").exists():
        pytest.skip("no reference checkpoint committed yet")
    from conftest import last_accuracy

    from homework import load_fusion

    printed = last_accuracy(run_cli("-m", "homework.fusion", "test", timeout=600))
    _, accuracy = fusion.evaluate(load_fusion(), shapes_data.load_split(str(ROOT / shapes_data.DEFAULT_DATA_DIR), "valid"))
    assert printed == round(accuracy, 4)


def test_starter_regions_still_import():
    """The starter replaces each solution region by `raise NotImplementedError`: the file must still compile."""
    from conftest import starter_source

    starter, regions = starter_source(ROOT / "homework" / "fusion.py")
    assert regions >= 6
    compile(starter, "fusion_starter.py", "exec")


HELP_SCRIPT = """
import sys, fire
from homework import fusion
for command in ("train", "test"):
    try:
        fire.Fire({command: getattr(fusion, command)}, command=[command, "--help"], name=command)
    except SystemExit as exit:
        assert not exit.code, exit.code
    print("==", command, file=sys.stderr)
"""


def test_cli_help():
    """`--help` of every command, from one fresh interpreter (importing torch is slow on a busy CPU)."""
    result = subprocess.run([sys.executable, "-c", HELP_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PAGER": "cat"}, timeout=120)
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    for command in ("train", "test"):
        assert f"== {command}" in text
    assert text.count("--data_dir") >= 2
    entry = subprocess.run([sys.executable, "-m", "homework.fusion", "train", "--help"], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, "PAGER": "cat"}, timeout=120)
    assert entry.returncode == 0 and "--downsample" in entry.stdout + entry.stderr
    for flag in ("--output_dir", "--learning_rate", "--seed", "--threads", "--overwrite"):
        assert flag in entry.stdout + entry.stderr, flag
