"""SimCLR: the NT-Xent loss, encoders, augmentation, checkpoints, resume, distributed run, CLI."""

from __future__ import annotations

import dataclasses
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
from torchvision.transforms import v2

from homework import checkpoint, simclr
from worlds import balls

REPO = Path(__file__).resolve().parents[1]
TINY = {"num_videos": 8, "batch_size": 4, "image_size": 16, "width": 4, "projection_dim": 8, "clip_frames": 2}


def _reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """NT-Xent written out with loops, straight from the SimCLR paper's definition."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        positive = (i + n2 // 2) % n2
        sims = {k: float(z[i] @ z[k]) / temperature for k in range(n2) if k != i}
        total += -math.log(math.exp(sims[positive]) / sum(math.exp(s) for s in sims.values()))
    return total / n2


@pytest.mark.parametrize("n", [1, 2, 3, 8])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_hand_computed_reference(n, temperature):
    g = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(n, 5, generator=g, dtype=torch.float64)
    loss = simclr.NTXentLoss(temperature)(z1, z2)
    assert loss.item() == pytest.approx(_reference_nt_xent(z1, z2, temperature), rel=1e-5)
    per_sample = simclr.NTXentLoss(temperature, reduction="none")(z1, z2)
    assert per_sample.shape == (2 * n,)
    assert per_sample.sum().item() == pytest.approx(simclr.NTXentLoss(temperature, reduction="sum")(z1, z2).item())


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_nt_xent_exact_values_for_identical_views(n):
    # All 2n embeddings equal: every candidate is equally likely, loss = -log(1 / (2n - 1)).
    same = torch.ones(n, 4)
    assert simclr.NTXentLoss(0.5)(same, same).item() == pytest.approx(-math.log(1 / (2 * n - 1)), rel=1e-6)
    # Identical views of orthogonal clips: cosine 1 to the positive, 0 to the 2n - 2 negatives.
    eye = torch.eye(n, 2 * n)
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2))
    assert simclr.NTXentLoss(t)(eye, eye).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_logits_and_labels():
    loss_fn = simclr.NTXentLoss(0.5)
    logits = loss_fn.get_logits(torch.randn(3, 4), torch.randn(3, 4))
    assert logits.shape == (6, 6) and torch.isinf(logits.diagonal()).all()
    assert loss_fn.get_labels(3).tolist() == [3, 4, 5, 0, 1, 2]
    with pytest.raises(ValueError, match="views"):
        loss_fn(torch.randn(3, 4), torch.randn(2, 4))


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), "0.5"])
def test_nt_xent_rejects_a_bad_temperature(bad):
    with pytest.raises(ValueError, match="temperature"):
        simclr.NTXentLoss(bad)


def test_augmentation_is_consistent_across_a_clips_frames():
    torch.manual_seed(0)
    frame = torch.from_numpy(balls.make_video(1, 0, num_frames=1, size=32)["videos"][0])  # (S, S, 3)
    still = frame[None].repeat(6, 1, 1, 1)  # (6, S, S, 3): a video that never moves
    augment = simclr.make_augmentation(16)
    views = [simclr.sample_view(still, 3, augment) for _ in range(4)]  # each (3, 3, 16, 16)
    for view in views:
        assert view.shape == (3, 3, 16, 16) and view.dtype == torch.float32
        torch.testing.assert_close(view[0], view[1])  # same crop, flip and colour on every frame
        torch.testing.assert_close(view[0], view[2])
    assert not torch.allclose(views[0], views[1]), "two draws should differ"


@pytest.mark.parametrize("encoder", ["resnet18", "vivit"])
def test_encoders_embed_and_train(encoder):
    torch.manual_seed(0)
    config = simclr.EncoderConfig(encoder=encoder, image_size=16, clip_frames=2, width=4, vivit_dim=16,
                                  vivit_depth=1, vivit_heads=2, vivit_patch=4)
    model = simclr.SimCLR(config, projection_dim=8)
    view1, view2 = torch.randn(4, 2, 3, 16, 16), torch.randn(4, 2, 3, 16, 16)
    z1, z2 = model(view1, view2)
    assert z1.shape == z2.shape == (4, 8)
    loss = simclr.NTXentLoss(0.5)(z1, z2)
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    videos = np.random.default_rng(0).integers(0, 256, (3, 10, 32, 32, 3), dtype=np.uint8)
    features = simclr.embed(model.encoder, videos, batch_size=2)
    assert features.shape == (3, model.encoder.feature_dim)
    torch.testing.assert_close(features, simclr.embed(model.encoder, videos))  # no randomness at eval


def test_vivit_tokens_and_a_few_steps_lower_its_loss():
    """The stem halves each frame twice, tubelets tile what is left; a few steps on one batch fit it."""
    torch.manual_seed(0)
    config = simclr.EncoderConfig(encoder="vivit", image_size=32, clip_frames=4, embed_frames=8, vivit_dim=32,
                                  vivit_depth=2, vivit_heads=2, vivit_patch=2, vivit_tubelet=2, vivit_stem=8)
    model = simclr.SimCLR(config, projection_dim=16)
    assert model.encoder.num_tokens == (4 // 2) * (32 // 4 // 2) ** 2  # (time, space) tubelets
    assert model.encoder(torch.randn(3, 4, 3, 32, 32)).shape == (3, 32)
    with pytest.raises(ValueError, match="vivit expects"):
        model.encoder(torch.randn(3, 2, 3, 32, 32))
    videos = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (8, 6, 32, 32, 3), dtype=np.uint8))
    augment = simclr.make_augmentation(32)
    views = [torch.stack([simclr.sample_view(v, 4, augment) for v in videos]) for _ in range(2)]  # (8, 4, 3, 32, 32) each
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion, losses = simclr.NTXentLoss(0.5), []
    for _ in range(8):
        loss = criterion(*model(*views))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    assert simclr.embed(model.encoder, videos.numpy()).shape == (8, 32)  # two clips of 4 frames, averaged
    with pytest.raises(ValueError, match="multiple of"):
        simclr.EncoderConfig(encoder="vivit", clip_frames=4, embed_frames=6).validate()


def test_vivit_blocks_norm_over_the_batch_and_keep_token_sizes():
    """ViViTBlock's norms are batch norms over every token: a token twice another's size stays
    distinct (a layer norm would make the two identical), and each channel ends with mean 0, variance 1.
    A new block is the identity (both branches start at zero), and one step moves it away from it."""
    torch.manual_seed(0)
    block = simclr.ViViTBlock(dim=8, heads=2)
    x = torch.randn(3, 5, 8)
    x[:, 1] = 2 * x[:, 0]
    normed = block.norm1(x)  # (3, 5, 8), training mode: this batch's statistics
    flat = normed.reshape(-1, 8)
    torch.testing.assert_close(flat.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.var(0, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    assert not torch.allclose(normed[:, 0], normed[:, 1], atol=1e-3)
    layer_normed = torch.nn.LayerNorm(8)(x)
    torch.testing.assert_close(layer_normed[:, 0], layer_normed[:, 1], atol=1e-4, rtol=0)  # what it would lose
    torch.testing.assert_close(block(x), x)  # starts as the identity
    optimizer = torch.optim.SGD(block.parameters(), lr=0.1)
    (block(x) - x.flip(1)).square().mean().backward()
    optimizer.step()
    assert (block(x) - x).abs().max() > 1e-3  # the zeroed layers get a gradient and grow in


def test_views_are_in_random_order_unless_asked():
    video = torch.arange(20, dtype=torch.uint8)[:, None, None, None].expand(20, 4, 4, 3).contiguous()
    keep = v2.Lambda(lambda clip: clip[:, 0, 0, 0].float())  # a view's frame numbers, in the order drawn
    torch.manual_seed(0)
    drawn = [simclr.sample_view(video, 5, keep) for _ in range(20)]
    assert any((d.diff() < 0).any() for d in drawn), "some views should not be in time order"
    assert all(len(set(d.tolist())) == 5 for d in drawn)  # distinct frames
    assert all((simclr.sample_view(video, 5, keep, in_order=True).diff() > 0).all() for _ in range(5))


def test_stock_width_is_torchvisions_resnet18():
    import torchvision

    ours = sum(p.numel() for p in simclr.resnet18_trunk(64).parameters())
    stock = torchvision.models.resnet18(weights=None)
    assert ours == sum(p.numel() for p in stock.parameters()) - sum(p.numel() for p in stock.fc.parameters())


def test_save_and_load_check_the_config(tmp_path):
    config = simclr.EncoderConfig(width=4, image_size=16)
    encoder = simclr.create_encoder(config)
    simclr.save_encoder(encoder, {"encoder": config.__dict__}, tmp_path)
    loaded = simclr.load_encoder(tmp_path)
    for a, b in zip(encoder.state_dict().values(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert json.loads((tmp_path / "config.json").read_text())["assignment"] == "simclr"
    with pytest.raises(SystemExit, match="different encoder variant"):
        simclr.load_encoder(tmp_path, expect=simclr.EncoderConfig(encoder="vivit", image_size=16))
    (tmp_path / "config.json").write_text(json.dumps({"encoder": {**config.__dict__, "width": 8}}))
    with pytest.raises(SystemExit, match="disagrees"):
        simclr.load_encoder(tmp_path)
    with pytest.raises(SystemExit, match="train one"):
        simclr.load_encoder(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"assignment": "fusion"}))
    with pytest.raises(SystemExit, match="not a SimCLR one"):
        simclr.load_encoder(tmp_path)


def test_an_oversized_checkpoint_is_one_line_naming_the_limit(tmp_path, monkeypatch):
    config = simclr.EncoderConfig(width=4, image_size=16)
    monkeypatch.setitem(checkpoint.LIMITS, "simclr", dataclasses.replace(checkpoint.LIMITS["simclr"], max_mb=0.001))
    with pytest.raises(SystemExit, match="over the 0.001 MB limit of a SimCLR checkpoint; use a smaller --width"):
        simclr.save_encoder(simclr.create_encoder(config), {"encoder": config.__dict__}, tmp_path)
    with pytest.raises(SystemExit, match="over the 0.001 MB limit"):
        simclr.load_encoder(tmp_path)


def _tiny_data(data_dir: Path) -> None:
    balls.generate(split="train", num_videos=8, seed=1, num_frames=6, size=32, data_dir=str(data_dir))
    balls.generate(split="test", num_videos=6, seed=2, num_frames=6, size=32, data_dir=str(data_dir))


def test_resume_continues_where_it_stopped(tmp_path, monkeypatch, capsys):
    _tiny_data(tmp_path / "data")
    flags = {**TINY, "epochs": 2, "data_dir": str(tmp_path / "data")}
    simclr.train(**flags, output_dir=str(tmp_path / "straight"))

    saves = []
    real_save = simclr.save_training_state

    def save_then_crash(*args):  # the run is killed right after its first epoch's checkpoint
        real_save(*args)
        saves.append(args[3])
        raise KeyboardInterrupt

    monkeypatch.setattr(simclr, "save_training_state", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        simclr.train(**flags, output_dir=str(tmp_path / "resumed"))
    monkeypatch.setattr(simclr, "save_training_state", real_save)
    assert saves == [1]  # stopped after epoch 1 of 2
    assert not (tmp_path / "resumed" / "encoder.safetensors").exists()
    with pytest.raises(SystemExit, match="--resume"):
        simclr.train(**flags, output_dir=str(tmp_path / "resumed"))
    simclr.train(**flags, output_dir=str(tmp_path / "resumed"), resume=True)
    assert "after epoch 1" in capsys.readouterr().out

    straight = simclr.load_encoder(tmp_path / "straight").state_dict()
    resumed = simclr.load_encoder(tmp_path / "resumed").state_dict()
    for key in straight:
        torch.testing.assert_close(straight[key], resumed[key], msg=key)
    with pytest.raises(SystemExit, match="other settings .*'lr': \\(0.002, 0.01\\)"):
        simclr.train(**{**flags, "learning_rate": 0.01}, output_dir=str(tmp_path / "resumed"), resume=True)
    simclr.train(**{**flags, "epochs": 3}, output_dir=str(tmp_path / "resumed"), resume=True)  # longer: allowed
    assert "after epoch 2" in capsys.readouterr().out

    # the probe prints the random baseline, the trained encoder and a last line accuracy=...
    simclr.probe(str(tmp_path / "straight"), num_train=8, num_test=6, data_dir=str(tmp_path / "data"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("accuracy=") and 0.0 <= float(lines[-1].split("=")[1]) <= 1.0
    assert any(line.startswith("random encoder") for line in lines)


def test_two_process_gloo_run(tmp_path):
    _tiny_data(tmp_path / "data")
    env = {**os.environ, "PAGER": "cat", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "homework.simclr", "train", "--epochs", "2", "--data_dir", str(tmp_path / "data"),
               "--output_dir", str(tmp_path / "ddp"), *[f"--{k}={v}" for k, v in TINY.items() if k != "batch_size"],
               "--batch_size", "2"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["train"]["world_size"] == 2
    state = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    simclr.load_encoder(tmp_path / "ddp")


def test_reference_checkpoint_loads_and_is_small():
    if not (simclr.REFERENCE_DIR / simclr.ENCODER_FILE).exists():
        pytest.skip("no committed reference checkpoint yet")
    encoder = simclr.load_reference()
    assert (simclr.REFERENCE_DIR / simclr.ENCODER_FILE).stat().st_size < checkpoint.LIMITS["simclr"].max_mb * 2**20
    video = balls.make_video(99, 0)["videos"][None]  # (1, T, S, S, 3)
    assert simclr.embed(encoder, video).shape == (1, encoder.feature_dim)


def test_vivit_reference_is_the_documented_commands_and_small():
    """homework/checkpoints/simclr_vivit: made by `train --encoder vivit` with its defaults (the encoder's
    config and RECIPES' settings), within the size limit, and it embeds a video."""
    folder = simclr.REFERENCE_DIR.parent / "simclr_vivit"
    config = json.loads((folder / simclr.CONFIG_FILE).read_text())
    assert config["encoder"] == dataclasses.asdict(
        simclr.EncoderConfig(encoder="vivit", embed_frames=simclr.RECIPES["vivit"]["embed_frames"]))
    recipe = simclr.RECIPES["vivit"]
    assert (config["train"]["epochs"], config["train"]["lr"], config["train"]["weight_decay"], config["train"]["seed"]) == (
        recipe["epochs"], recipe["learning_rate"], recipe["weight_decay"], 0)
    encoder = simclr.load_encoder(folder)
    assert (folder / simclr.ENCODER_FILE).stat().st_size < checkpoint.LIMITS["simclr"].max_mb * 2**20
    video = balls.make_video(99, 0)["videos"][None]  # (1, T, S, S, 3)
    assert simclr.embed(encoder, video).shape == (1, encoder.feature_dim)


def test_cli_help_and_a_bad_value_in_one_line(tmp_path):
    env = {**os.environ, "PAGER": "cat"}
    commands = [["train", "--help"], ["probe", "--help"],
                ["train", "--temperature", "0", "--output_dir", str(tmp_path)],
                ["train", "--lr", "0", "--out_dir", str(tmp_path)]]
    running = [subprocess.Popen([sys.executable, "-m", "homework.simclr", *c], cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]  # in parallel
    results = [(*p.communicate(timeout=180), p.returncode) for p in running]
    for (out, err, code), flag in zip(results[:2], ["--temperature", "--split"], strict=True):
        assert code == 0, err
        assert flag in out + err and "--data_dir" in out + err
    train_help, probe_help = results[0][0] + results[0][1], results[1][0] + results[1][1]
    for flag in ("--output_dir", "--learning_rate", "--seed", "--threads", "--overwrite", "--resume"):
        assert flag in train_help, flag
    for flag in ("--checkpoint", "--split", "--threads"):
        assert flag in probe_help, flag
    _, err, code = results[2]
    assert code != 0 and "error: --temperature" in err and "Traceback" not in err
    out, err, code = results[3]  # the old names still work (with a note) and a bad value names the new one
    assert "note: --lr is now --learning_rate" in out and "note: --out_dir is now --output_dir" in out
    assert code != 0 and "error: --learning_rate" in err and "Traceback" not in err


def test_probe_without_a_checkpoint_says_how_to_make_one(tmp_path):
    missing = tmp_path / "nothing_here"
    with pytest.raises(SystemExit, match=re.escape(f"no SimCLR checkpoint in {missing}; train one with "
                                                   f"`python -m homework.simclr train --output_dir {missing}`")):
        simclr.probe(str(missing), data_dir=str(tmp_path))
    missing.mkdir()
    with pytest.raises(SystemExit, match=re.escape(f"no encoder.safetensors in {missing}, so it is not a SimCLR "
                                                   f"checkpoint; train one with `python -m homework.simclr train "
                                                   f"--output_dir {missing} --overwrite`")):
        simclr.probe(str(missing), data_dir=str(tmp_path))


def test_probe_defaults_to_the_reference_that_load_simclr_reads(tmp_path, capsys):
    # `python -m homework.simclr probe` with no arguments takes about 2 minutes on a cold 2-core CPU
    # (most of it generating 2,500 videos), so this calls probe() with its default checkpoint on tiny splits.
    import inspect

    import homework

    if not (simclr.REFERENCE_DIR / simclr.ENCODER_FILE).exists():
        pytest.skip("no reference checkpoint committed yet")  # the student starter ships none
    defaults = inspect.signature(simclr.probe).parameters
    assert Path(defaults["checkpoint"].default) == checkpoint.reference_dir("simclr") == simclr.REFERENCE_DIR
    assert defaults["split"].default == "test" and defaults["threads"].default == 0
    reference = homework.load_simclr().state_dict()
    for key, value in simclr.load_encoder(defaults["checkpoint"].default).state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0, msg=key)
    _tiny_data(tmp_path / "data")
    simclr.probe(num_train=8, num_test=6, data_dir=str(tmp_path / "data"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("accuracy=") and "(8 train / 6 test videos" in lines[-2]
    # the old --test_split still works, with a note
    simclr.probe(num_train=8, num_test=6, data_dir=str(tmp_path / "data"), test_split="test")
    assert "note: --test_split is now --split" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--split must differ from --train_split"):
        simclr.probe(split="train", data_dir=str(tmp_path / "data"))


def test_the_learning_rate_is_the_reference_runs_to_the_bit():
    from homework.lr_schedule import warmup_cosine

    peak, warmup, total = 2e-3, 15, 310  # the reference run: 31 steps/epoch, 10 epochs
    for step in range(total):  # warm-up, then cosine to zero: the schedule the reference was trained with
        progress = min(1.0, (step - warmup) / (total - warmup))
        expected = peak * (step + 1) / warmup if step < warmup else peak * 0.5 * (1 + math.cos(math.pi * progress))
        assert warmup_cosine(step, total, peak, warmup) == expected, step


def test_probe_with_no_arguments_scores_the_committed_reference(run_cli):
    """`python -m homework.simclr probe` as a student types it: the reference's probe accuracy
    (98.6%; a random encoder's is about 68%). Makes data/balls/train and test if missing (2 minutes)."""
    if not (simclr.REFERENCE_DIR / simclr.ENCODER_FILE).exists():
        pytest.skip("no reference checkpoint committed yet")  # the student starter ships none
    from conftest import last_accuracy

    assert last_accuracy(run_cli("-m", "homework.simclr", "probe", timeout=900)) > 0.9
