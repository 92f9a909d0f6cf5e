"""homework/robot.py: features, fusion operators, masks, Shapley, retrieval, anomaly thresholds,
encoders from local folders, bad inputs, and the CLI end to end on tiny data and tiny encoders."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from homework import robot
from worlds import robot as world

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # the test machine is shared; these models are tiny


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, str]:
    """Tiny CLIP vision and wav2vec 2.0 models built from configs, saved with save_pretrained: what a
    hub download or a local copy of the real ones looks like to the loading code."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Wav2Vec2Config, Wav2Vec2Model

    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=32, patch_size=16, hidden_size=16, intermediate_size=32,
                                                   num_hidden_layers=1, num_attention_heads=2, projection_dim=8)
                                  ).save_pretrained(root / "vision")
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(8, 8), conv_kernel=(10, 8), conv_stride=(5, 64), num_conv_pos_embeddings=8,
                                 num_conv_pos_embedding_groups=2, vocab_size=8)).save_pretrained(root / "audio")
    return {"vision_encoder": str(root / "vision"), "audio_encoder": str(root / "audio")}


@pytest.fixture(scope="module")
def model(encoders) -> robot.RoboticFeedbackSystem:
    torch.manual_seed(0)
    return robot.RoboticFeedbackSystem(config=robot.get_config("balanced", fusion_dim=32, **encoders)).eval()


def inputs(batch: int = 2, size: int = 224, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"camera_images": {c: torch.rand(batch, 3, size, size, generator=g) for c in ("camera1", "camera2")},
            "audio": torch.rand(batch, 48000, generator=g) * 2 - 1, "pressure": torch.rand(batch, 1000, generator=g),
            "emg": torch.randn(batch, 8, 1000, generator=g)}


def test_sensor_features_are_the_stated_statistics():
    x = torch.tensor([[1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0]])
    f = robot.sensor_features(x, windows=2)
    assert f.shape == (1, 2 * (5 + 2 * 2))
    mean, std, low, high, rms = f[0, :5].tolist()
    assert (mean, low, high) == (2.0, 1.0, 3.0) and math.isclose(rms, math.sqrt(5), rel_tol=1e-6) and math.isclose(std, x.std().item(), rel_tol=1e-6)
    assert f[0, 5:7].tolist() == [2.0, 2.0]  # the windows' means
    assert robot.sensor_features(torch.randn(3, 8, 1000)).shape == (3, 8, robot.NUM_FEATURES)


@pytest.mark.parametrize("fusion", robot.FUSIONS)
@pytest.mark.parametrize("batch,dim", [(1, 8), (3, 16)])
def test_each_fusion_operator_maps_tokens_to_one_embedding(fusion, batch, dim):
    module = {"concat": lambda: robot.ConcatFusion(dim, 5), "weighted": lambda: robot.WeightedSumFusion(dim, 5),
              "attention": lambda: robot.AttentionFusion(dim, 5, heads=4)}[fusion]().eval()
    out = module(torch.randn(batch, 5, dim), torch.ones(batch, 5))
    assert out.shape == (batch, dim) and torch.isfinite(out).all()


def test_weighted_sum_is_input_dependent_and_skips_absent_modalities():
    module = robot.WeightedSumFusion(8, 5)
    mask = torch.tensor([[1.0, 1, 0, 1, 0], [1, 1, 1, 1, 1]])
    module(torch.randn(2, 5, 8), mask)
    w = module.last_weights
    assert torch.allclose(w.sum(1), torch.ones(2)) and w[0, 2] == 0 and w[0, 4] == 0
    module(torch.randn(2, 5, 8), mask)  # other inputs, other weights: the gate reads them
    assert not torch.allclose(w[1], module.last_weights[1])


def test_masks_replace_absent_modalities_by_the_learned_token(model):
    tokens, missing = torch.randn(2, 5, 4), torch.randn(5, 4)
    mask = torch.tensor([[1.0, 0, 1, 1, 1], [0, 1, 1, 1, 0]])
    out = robot.apply_mask(tokens, mask, missing)
    assert torch.equal(out[0, 1], missing[1]) and torch.equal(out[1, 4], missing[4]) and torch.equal(out[0, 0], tokens[0, 0])
    x, y = inputs(seed=1), inputs(seed=2)
    y["camera_images"]["camera1"], y["pressure"] = x["camera_images"]["camera1"], x["pressure"]  # differ in the rest
    keep = robot.mask_for(2, ("camera1", "pressure"))
    assert torch.allclose(model(**x, mask=keep), model(**y, mask=keep), atol=1e-5)
    assert not torch.allclose(model(**x), model(**y), atol=1e-3)
    given = dict(x, audio=None)  # a modality not given is absent, as if masked
    assert torch.allclose(model(**given), model(**x, mask=robot.mask_for(2, [m for m in robot.MODALITIES if m != "audio"])),
                          atol=1e-5)
    counts = robot.random_mask(2000, torch.Generator().manual_seed(0)).sum(1)
    assert counts.min() >= 1 and (counts == 5).float().mean() > 0.4 and (counts == 1).float().mean() > 0.2


@pytest.mark.parametrize("size", [224, 64])
def test_forward_shapes_and_modality_embeddings(model, size):
    fused, per = model(**inputs(size=size), return_modality_embeddings=True)
    assert fused.shape == (2, 32) and set(per) == set(robot.MODALITIES)
    assert all(e.shape == (2, 32) for e in per.values())
    cos = robot.cosine_similarity(fused, torch.stack(list(per.values()), 1).flatten(0, 1))
    assert cos.shape == (2, 10)


def test_encoders_load_from_folders_frozen_with_clip_statistics_and_checkpointing(encoders):
    m = robot.RoboticFeedbackSystem(config=robot.get_config("lightweight", gradient_checkpointing=True, **encoders))
    assert m.config.fusion == "weighted" and m.config.fusion_dim == 256
    assert not any(p.requires_grad for p in m.vision.parameters()) and not any(p.requires_grad for p in m.audio.parameters())
    assert all(p.requires_grad for p in m.pressure_mlp.parameters())
    assert m.vision.model.is_gradient_checkpointing and m.audio.model.is_gradient_checkpointing
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    assert torch.allclose(m.vision.mean.flatten(), torch.tensor(OPENAI_CLIP_MEAN))
    assert torch.allclose(m.vision.std.flatten(), torch.tensor(OPENAI_CLIP_STD))
    assert robot.get_config("high_capacity").vision_encoder == robot.HUB_VISION
    assert robot.get_config("high_capacity").fusion == "attention"


@pytest.mark.parametrize("change,words", [
    (lambda x: x.update(audio=torch.zeros(2, 32000)), "audio must have shape (B, 48000), got (2, 32000)"),
    (lambda x: x.update(emg=torch.zeros(2, 7, 1000)), "emg must have shape (B, 8, 1000), got (2, 7, 1000)"),
    (lambda x: x["camera_images"].update(camera1=torch.full((2, 3, 224, 224), 200.0)), "camera1 values must be in [0, 1]"),
    (lambda x: x.update(audio=torch.full((2, 48000), 3.0)), "audio values must be in [-1, 1]"),
    (lambda x: x.update(pressure=torch.zeros(2, 999)), "pressure must have shape (B, 1000)"),
])
def test_bad_inputs_are_one_line_errors(model, change, words):
    x = inputs()
    change(x)
    with pytest.raises(ValueError) as e:
        model(**x)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_unknown_preset_and_missing_encoder_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'huge': expected one of lightweight, balanced, high_capacity"):
        robot.get_config("huge")
    with pytest.raises(ValueError) as e:
        robot.RoboticFeedbackSystem(config=robot.get_config(vision_encoder=str(tmp_path / "nothing")))
    assert "vision encoder" in str(e.value) and "not found" in str(e.value) and "\n" not in str(e.value)


def test_shapley_values_are_exact_on_toy_games():
    weights = np.array([0.1, 0.3, 0.6])
    assert np.allclose(robot.shapley_values(lambda s: sum(weights[i] for i in s), 3), weights)  # additive
    either = lambda s: float(bool({0, 1} & s))  # noqa: E731 - players 0 and 1 duplicate each other
    assert np.allclose(robot.shapley_values(either, 3), [0.5, 0.5, 0.0])
    assert np.allclose(robot.leave_one_out(either, 3), [0.0, 0.0, 0.0])  # leave-one-out misses both
    glove = lambda s: float({0, 1} <= s)  # noqa: E731 - both needed
    assert np.allclose(robot.shapley_values(glove, 4), [0.5, 0.5, 0, 0])
    calls = []
    robot.shapley_values(lambda s: calls.append(s) or 0.0, 5)
    assert len(calls) == 32  # each subset once


def test_cosine_similarity_is_batched():
    a, b = torch.randn(4, 6), torch.randn(3, 6)
    expected = F.cosine_similarity(a[:, None], b[None], dim=-1)
    assert torch.allclose(robot.cosine_similarity(a, b), expected, atol=1e-6)
    assert robot.cosine_similarity(a[0], b).shape == (1, 3)
    with pytest.raises(ValueError, match="one size"):
        robot.cosine_similarity(torch.randn(2, 768), torch.randn(2, 512))


def test_retrieval_finds_itself_and_survives_save_and_load(tmp_path):
    db = robot.EmbeddingRetrieval()
    emb = torch.randn(50, 12)
    db.add_to_database(emb[:30], ids=[f"ep{i}" for i in range(30)])
    db.add_to_database(emb[30:], ids=[f"ep{i}" for i in range(30, 50)])
    ids, sims = db.retrieve_similar(emb[[3, 41]] + 0.01 * torch.randn(2, 12), top_k=3)
    assert [row[0] for row in ids] == ["ep3", "ep41"] and sims.shape == (2, 3) and (sims[:, 0] > 0.99).all()
    db.save(tmp_path / "db")
    again = robot.EmbeddingRetrieval.load(tmp_path / "db")
    assert again.ids == db.ids and torch.equal(again.embeddings, db.embeddings)
    assert again.retrieve_similar(emb[7], top_k=1)[0] == [["ep7"]]
    with pytest.raises(ValueError, match="no embeddings.safetensors"):
        robot.EmbeddingRetrieval.load(tmp_path / "nothing")


def test_anomaly_threshold_sits_at_the_stated_false_positive_rate(model):
    g = torch.Generator().manual_seed(0)

    def fake(n):
        return {"camera1": torch.randn(n, model.vision.out_dim, generator=g),
                "camera2": torch.randn(n, model.vision.out_dim, generator=g),
                "audio": torch.randn(n, model.audio.out_dim, generator=g),
                "pressure": torch.randn(n, robot.NUM_FEATURES, generator=g),
                "emg": torch.randn(n, 8, robot.NUM_FEATURES, generator=g),
                "health": torch.randn(n, len(robot.HEALTH_STREAMS), generator=g)}

    valid = fake(400)
    baseline = robot.fit_anomaly_baseline(model, fake(200), valid, fpr=0.1)
    scores = robot.anomaly_scores(model, valid, baseline)
    assert abs((scores > float(baseline["threshold"])).mean() - 0.1) <= 0.01
    parts = robot.anomaly_parts(model, valid, baseline)
    assert parts.shape == (400, 5 + 8 + 12 + 2 * len(robot.SWAP_PAIRS))
    assert np.allclose(scores, (parts / baseline["scale"]).amax(1).numpy())
    assert robot.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert robot.auroc(np.array([1.0]), np.array([1.0])) == 0.5


def cli(*args, home: Path, timeout=300):
    return subprocess.run([sys.executable, "-m", "homework.robot", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/bin:/bin", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
                                                "HOME": str(home), "HF_HUB_OFFLINE": "1"})


def test_train_test_and_analysis_commands_end_to_end(tmp_path, encoders, capsys):
    data = tmp_path / "robot"
    for split, n in (("train", 24), ("valid", 12), ("test", 16)):
        world.generate(split=split, num_episodes=n, seed=world.SPLIT_SEEDS[split], data_dir=str(data))
    out = tmp_path / "ckpt"
    robot.train(epochs=2, batch_size=8, fusion_dim=32, fusion="attention", data_dir=str(data), output_dir=str(out),
                threads=1, **encoders)
    record = json.loads((out / "config.json").read_text())
    assert record["assignment"] == "robot" and record["config"]["fusion"] == "attention"
    assert (out / "model.safetensors").stat().st_size < 2**20  # the frozen encoders are not in it
    m = robot.load_model(out)
    assert math.isclose(float(m.anomaly_baseline["fpr"]), robot.ANOMALY_FPR, rel_tol=1e-6)
    other = tmp_path / "other_encoder"  # the same checkpoint, recorded as trained on another vision encoder
    shutil.copytree(out, other)
    (other / "config.json").write_text(json.dumps({**record, "encoders": {**record["encoders"], "vision": "0" * 64}}))
    with pytest.raises(SystemExit, match="trained on another vision encoder"):
        robot.load_model(other)
    with pytest.raises(SystemExit, match="--overwrite"):
        robot.train(epochs=1, data_dir=str(data), output_dir=str(out), **encoders)
    common = {"checkpoint": str(out), "data_dir": str(data), "threads": 1}
    capsys.readouterr()
    rows = robot.test(**common)
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1].startswith("material_accuracy=")
    assert set(rows) == {"all", *(f"without {m}" for m in robot.MODALITIES), *(f"only {m}" for m in robot.MODALITIES)}
    result = robot.contributions(**common, out=str(tmp_path / "a"))
    for task in robot.TASKS:  # efficiency: the values add up to v(all) - v(none)
        r = result[task]
        assert math.isclose(sum(r["shapley"].values()), r["value_all"] - r["value_empty"], abs_tol=1e-3)
    assert (tmp_path / "a" / "contributions.png").stat().st_size > 5000
    with pytest.raises(SystemExit, match="--overwrite"):
        robot.contributions(**common, out=str(tmp_path / "a"))
    recall = robot.retrieve(**common, database_size=16, queries=4, save_database=str(tmp_path / "db"))
    assert set(recall) == {"recall@1", "recall@5"}
    assert robot.EmbeddingRetrieval.load(tmp_path / "db").embeddings.shape[0] == 16
    odd = robot.anomaly(checkpoint=str(out), num=3, threads=1)
    assert {"fault", "collision", "swap"} <= set(odd) and 0 <= odd["swap"]["auroc"] <= 1
    rep = robot.report(**common, num=10, out=str(tmp_path / "r"))
    assert rep["embeddings"]["fused"]["dimension"] == 32 and set(robot.MODALITIES) <= set(rep["embeddings"])
    assert (tmp_path / "r" / "robustness.png").stat().st_size > 5000
    assert len(rep["robustness"]["curves"]["audio"]["material"]) == len(robot.NOISE_LEVELS)


@pytest.mark.parametrize("command,kwargs,words", [
    (robot.train, {"preset": "huge"}, "--preset must be one of lightweight, balanced, high_capacity, got 'huge'"),
    (robot.train, {"fusion": "sum"}, "--fusion must be one of concat, weighted, attention"),
    (robot.train, {"vision_encoder": "/nonexistent/clip", "output_dir": "/nonexistent/out"}, "vision encoder"),
    (robot.test, {"split": "../up"}, "--split must be a plain folder name"),
    (robot.test, {"checkpoint": "/nonexistent/ckpt"}, "no robot checkpoint in /nonexistent/ckpt"),
    (robot.retrieve, {"queries": 0}, "--queries must be an integer >= 1"),
    (robot.anomaly, {"num": "many"}, "--num must be an integer >= 2"),
    (robot.benchmark, {"presets": "tiny"}, "--presets must be one of"),
])
def test_bad_command_values_are_one_line_errors(command, kwargs, words):
    with pytest.raises(SystemExit) as e:
        command(**kwargs)
    message = str(e.value.code)
    assert message.startswith("error:") and words in message and "\n" not in message


def test_the_command_line_prints_one_line_not_a_traceback(tmp_path):
    proc = cli("train", "--preset", "huge", home=tmp_path, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: --preset must be one of lightweight, balanced, high_capacity, got 'huge'")
