"""homework/cilp.py: the contrastive loss's exact values, training lowers each loss, the stages, CLI."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from homework import cilp, shapes_data
from homework.checkpoint import LIMITS
from worlds import shapes

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # the test machine is shared; these models are tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cilp") / "data"
    shapes.generate(num_samples=10, seed=4, data_dir=str(root), workers=1, quiet=True)
    return root


def reference_loss(rgb: torch.Tensor, lidar: torch.Tensor, scale: float) -> float:
    """The symmetric InfoNCE written out with loops, as a tiny reference."""
    n = len(rgb)
    sims = [[scale * float(rgb[i] @ lidar[j]) for j in range(n)] for i in range(n)]
    rows = [-sims[i][i] + math.log(sum(math.exp(s) for s in sims[i])) for i in range(n)]
    cols = [-sims[j][j] + math.log(sum(math.exp(sims[i][j]) for i in range(n))) for j in range(n)]
    return (sum(rows) / n + sum(cols) / n) / 2


@pytest.mark.parametrize("n", [2, 5, 16])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.07])
def test_loss_exact_value_on_matched_pairs(n, scale):
    """Orthonormal features, RGB i == LiDAR i: every row's logits are (scale, 0, ..., 0), so the
    loss is exactly log(1 + (n - 1) exp(-scale)), in both directions."""
    features = torch.eye(n, dtype=torch.float64)
    loss = cilp.ContrastiveLoss()(features, features, torch.tensor(scale, dtype=torch.float64))
    assert loss.item() == pytest.approx(math.log(1 + (n - 1) * math.exp(-scale)), rel=1e-9)


@pytest.mark.parametrize("n,d", [(3, 4), (8, 16)])
def test_loss_matches_the_reference_and_is_symmetric(n, d):
    torch.manual_seed(n)
    rgb = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=-1)
    lidar = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=-1)
    loss_fn = cilp.ContrastiveLoss()
    scale = torch.tensor(2.5, dtype=torch.float64)
    assert loss_fn(rgb, lidar, scale).item() == pytest.approx(reference_loss(rgb, lidar, 2.5), rel=1e-9)
    assert loss_fn(rgb, lidar, scale).item() == pytest.approx(loss_fn(lidar, rgb, scale).item(), rel=1e-12)
    logits_rgb, logits_lidar = loss_fn.get_logits(rgb, lidar, scale)
    assert logits_rgb.shape == (n, n) and torch.equal(logits_lidar, logits_rgb.T)
    assert loss_fn.get_ground_truth(n, rgb.device).tolist() == list(range(n))
    assert loss_fn(rgb, lidar, scale, reduction="none").shape == (n,)
    with pytest.raises(ValueError, match="feature shapes differ"):
        loss_fn(rgb, lidar[:-1], scale)


def test_chance_level_at_batch_32():
    """Identical features for every pair: the loss is log(32), the number the 3.2 bar sits under."""
    features = F.normalize(torch.ones(32, 8), dim=-1)
    loss = cilp.ContrastiveLoss()(features, features, torch.tensor(10.0))
    assert loss.item() == pytest.approx(math.log(32), rel=1e-6)


def test_model_owns_a_clamped_logit_scale():
    model = cilp.CILP(cilp.CILPConfig(width=4, embed_dim=8))
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    rgb_f, lidar_f, scale = model(torch.rand(2, 3, 64, 64), torch.rand(2, 4, 64, 64))
    assert rgb_f.shape == lidar_f.shape == (2, 8)
    assert torch.allclose(rgb_f.norm(dim=-1), torch.ones(2), atol=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model(torch.rand(2, 3, 64, 64), torch.rand(2, 4, 64, 64))[2].item() == pytest.approx(100.0)


def test_random_shift_translates_within_bounds():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    generator = torch.Generator().manual_seed(0)
    shifted = cilp.random_shift(images, 2, generator)
    assert shifted.shape == images.shape
    assert torch.equal(cilp.random_shift(images, 0, generator), images)
    # each output is a 6x6 window of the edge-replicated image: its centre 2x2 stays inside the original
    for img, out in zip(images, shifted, strict=True):
        assert any(torch.equal(out[0, 2:4, 2:4], img[0, y:y + 2, x:x + 2]) for y in range(5) for x in range(5))


def steps(loss_fn, parameters, n=12, lr=3e-3) -> list[float]:
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    losses = []
    for _ in range(n):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_a_few_steps_lower_each_loss():
    torch.manual_seed(0)
    config = cilp.CILPConfig(width=4, embed_dim=16, lidar_embed_dim=16, projector_hidden=32)
    rgb, lidar, labels = torch.rand(8, 3, 64, 64), torch.randn(8, 4, 64, 64), torch.tensor([0, 1] * 4)
    model, loss_fn = cilp.CILP(config), cilp.ContrastiveLoss()
    contrastive = steps(lambda: loss_fn(*model(rgb, lidar)), list(model.parameters()))
    assert contrastive[-1] < 0.7 * contrastive[0]
    projector, target = cilp.Projector(config), torch.randn(8, 16)
    embedding = F.normalize(torch.randn(8, 16), dim=-1)
    projection = steps(lambda: F.mse_loss(projector(embedding), target), list(projector.parameters()))
    assert projection[-1] < 0.9 * projection[0]
    classifier = cilp.RGBClassifier(config)
    finetune = steps(lambda: F.cross_entropy(classifier(rgb), labels), list(classifier.parameters()), n=20)
    assert finetune[-1] < 0.8 * finetune[0]


def test_stages_end_to_end_and_checkpoint_checks(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    common = {"data_dir": str(tiny), "run_dir": str(run), "threads": 1}
    cilp.pretrain(epochs=1, lidar_epochs=1, batch_size=8, width=4, embed_dim=8, **common)
    record = json.loads((run / "pretrain" / "config.json").read_text())
    assert record["assignment"] == "cilp" and record["stage"] == "pretrain"
    assert {"contrastive_val_loss_batch32", "retrieval_top1_all_val"} <= set(record["metrics"])
    cilp.project(epochs=2, batch_size=8, **common)
    cilp.finetune(epochs=1, batch_size=8, **common)
    final = json.loads((run / "finetune" / "config.json").read_text())
    assert {"rgb_only_val_accuracy_before_finetune", "rgb_only_val_accuracy", "projector_val_mse"} <= set(
        final["metrics"]) or "rgb_only_val_accuracy" in final["metrics"]
    capsys.readouterr()
    cilp.test(checkpoint=str(run / "finetune"), data_dir=str(tiny))
    assert re.fullmatch(r"accuracy=[01]\.\d{4}", capsys.readouterr().out.strip().splitlines()[-1])
    model = cilp.load_model(run / "finetune")
    rgb = np.stack([shapes.load_pair(tiny, "cubes/0000")[0], shapes.load_pair(tiny, "spheres/0000")[0]])
    assert cilp.predict(model, rgb).shape == (2,)

    with pytest.raises(SystemExit, match="'pretrain' checkpoint; this needs finetune or project"):
        cilp.test(checkpoint=str(run / "pretrain"), data_dir=str(tiny))
    with pytest.raises(SystemExit, match="already holds a checkpoint"):
        cilp.pretrain(epochs=1, **common)
    empty = tmp_path / "empty" / "pretrain"
    with pytest.raises(SystemExit, match=re.escape(
            f"no CILP checkpoint in {empty}; train one with `python -m homework.cilp pretrain --output_dir {empty}`")):
        cilp.project(data_dir=str(tiny), run_dir=str(tmp_path / "empty"))
    (tmp_path / "fusion_ckpt").mkdir()
    (tmp_path / "fusion_ckpt" / "config.json").write_text(json.dumps({"assignment": "fusion", "config": {}}))
    with pytest.raises(SystemExit, match="'fusion' checkpoint, not a CILP one"):
        cilp.test(checkpoint=str(tmp_path / "fusion_ckpt"), data_dir=str(tiny))
    with pytest.raises(SystemExit, match="--split must be one of"):
        cilp.test(checkpoint=str(run / "finetune"), split="holdout")
    (run / "finetune" / "model.safetensors").unlink()
    with pytest.raises(SystemExit, match=re.escape("python -m homework.cilp finetune --output_dir")):
        cilp.test(checkpoint=str(run / "finetune"))


def test_deprecated_flags_still_work_with_a_note(tiny, tmp_path, capsys):
    """--lr and --out_dir are the old names of --learning_rate and --output_dir: one note each."""
    common = {"data_dir": str(tiny), "run_dir": str(tmp_path / "run"), "threads": 1}
    cilp.pretrain(epochs=1, lidar_epochs=1, batch_size=8, width=4, embed_dim=8, lr=1e-3, **common)
    cilp.project(epochs=1, batch_size=8, lr=1e-3, **common)
    capsys.readouterr()
    cilp.finetune(epochs=1, batch_size=8, lr=1e-3, out_dir=str(tmp_path / "old"), **common)
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: --lr is now --learning_rate; the old name goes in the next release",
                     "note: --out_dir is now --output_dir; the old name goes in the next release"]
    cilp.finetune(epochs=1, batch_size=8, learning_rate=1e-3, output_dir=str(tmp_path / "new"), **common)
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    record = json.loads((tmp_path / "old" / "config.json").read_text())
    assert record["training"]["lr"] == record["training"]["project_lr"] == record["training"]["finetune_lr"] == 1e-3
    assert (tmp_path / "old" / "model.safetensors").read_bytes() == (tmp_path / "new" / "model.safetensors").read_bytes()


def test_reference_checkpoint_loads():
    if not (cilp.REFERENCE_DIR / "config.json").exists():
        pytest.skip("no reference checkpoint committed yet")
    from homework import load_cilp

    assert isinstance(load_cilp(), cilp.RGBClassifier)
    size = sum(p.stat().st_size for p in cilp.REFERENCE_DIR.iterdir())
    assert size < LIMITS["cilp"].max_mb * 2**20


def test_test_without_arguments_scores_the_reference(run_cli):
    """`python -m homework.cilp test` scores what load_cilp() loads (makes data/ with seed 0 if missing)."""
    if not (cilp.REFERENCE_DIR / "config.json").exists():
        pytest.skip("no reference checkpoint committed yet")
    from conftest import last_accuracy

    from homework import load_cilp

    printed = last_accuracy(run_cli("-m", "homework.cilp", "test", timeout=600))
    split = shapes_data.load_split(str(ROOT / shapes_data.DEFAULT_DATA_DIR), "valid")
    _, metrics = cilp.classify_eval(load_cilp(), split.rgb, split.labels)
    assert printed == round(metrics["accuracy"], 4)


def test_starter_regions_still_import():
    """The starter replaces each solution region by `raise NotImplementedError`: the file must still compile."""
    from conftest import starter_source

    starter, regions = starter_source(ROOT / "homework" / "cilp.py")
    assert regions >= 6
    compile(starter, "cilp_starter.py", "exec")


HELP_SCRIPT = """
import sys, fire
from homework import cilp
for command in ("pretrain", "project", "finetune", "test"):
    try:
        fire.Fire({command: getattr(cilp, command)}, command=[command, "--help"], name=command)
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
    for command in ("pretrain", "project", "finetune", "test"):
        assert f"== {command}" in text
    assert text.count("--data_dir") >= 4 and "--lidar_epochs" in text
    entry = subprocess.run([sys.executable, "-m", "homework.cilp", "test", "--help"], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, "PAGER": "cat"}, timeout=120)
    assert entry.returncode == 0 and "--checkpoint" in entry.stdout + entry.stderr
    for command in ("pretrain", "project", "finetune"):
        section = text.split(f"== {command}")[0].rsplit("==", 1)[-1]  # this command's --help
        for flag in ("--output_dir", "--learning_rate", "--seed", "--threads", "--overwrite"):
            assert flag in section, (command, flag)
