"""benchmarks/: the kit's own measurements (not in the student starter) answer --help."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from benchmarks import cilp_stages, fiftyone_app, fresh_split, fusion_ablation, grading_times, shapes_times
from homework import cilp, fusion, shapes_data
from worlds import shapes

ROOT = Path(__file__).resolve().parents[1]


def test_ablation_cli_help(run_cli):
    """The kit's ablation lives outside homework/: benchmarks/fusion_ablation.py."""
    proc = run_cli("-m", "benchmarks.fusion_ablation", "--help")
    assert proc.returncode == 0, proc.output
    assert "--data_dir" in proc.output and "--heldout_seed" in proc.output and "--output_dir" in proc.output
    assert "ablation" not in (ROOT / "homework" / "fusion.py").read_text().split('if __name__ == "__main__":')[1]


def test_vlm_throughput_cli_help(run_cli):
    proc = run_cli("-m", "benchmarks.vlm_throughput", "--help")
    assert proc.returncode == 0 and "--num_questions" in proc.output and "--device" in proc.output


def test_real_stk_benchmark_needs_the_course_folder(run_cli, tmp_path):
    """The real-data benchmark takes the course's data folder from the command line; a missing one is one line."""
    proc = run_cli("-m", "benchmarks.real_stk", "--data_dir", str(tmp_path))
    assert proc.returncode == 1 and proc.output.strip().splitlines()[-1].startswith("error: ")
    assert "has no train/ folder" in proc.output and "Traceback" not in proc.output


def test_real_stk_benchmark_tables_its_results(tmp_path):
    from benchmarks import real_stk

    per = {"ego": 0.9, "count": 0.8}
    vlm = {s: {"n": 10, "accuracy": 0.85, "course_accuracy": 0.9, "per_family": per, "course_per_family": per}
           for s in ("valid_grader", "valid")}
    clip = {s: {"n": 5, "accuracy": 0.8} for s in ("valid_grader", "valid")}
    steps = {"pretrain base": {"seconds": 2000.0, "peak_rss_mib": 3000, "ran": True},
             "train vlm": {"seconds": None, "peak_rss_mib": None, "ran": False}}
    results = {"vlm": vlm, "clip": clip, "steps": steps}
    table = real_stk._table(results)
    assert "| VLM count | 80.0% | 80.0% | 80.0% | 80.0% |" in table and "| **CLIP** (5 / 5 sets) | **80.0%**" in table
    assert "| pretrain base | 2000 | 3000 | this run |" in table and "| train vlm |  |  | made earlier, not timed |" in table
    real_stk._plot(results, tmp_path / "real.png")
    assert (tmp_path / "real.png").stat().st_size > 1000


def test_fusion_ablation_rescores_a_kept_checkpoint(tmp_path, capsys):
    """`python -m benchmarks.fusion_ablation rescore` scores kept checkpoints again without training: one here,
    the committed reference copied as the late / stride run, on tiny validation and held-out sets."""
    kept = tmp_path / "kept"
    with pytest.raises(SystemExit, match="holds no checkpoints"):
        fusion_ablation.rescore(checkpoints_dir=str(kept), output_dir=str(tmp_path))
    shutil.copytree(fusion.REFERENCE_DIR, kept / "late_stride")
    shapes.generate(num_samples=5, seed=5, data_dir=str(tmp_path / "train"), workers=1, quiet=True)
    shapes.generate(num_samples=5, seed=6, data_dir=str(tmp_path / "heldout"), workers=1, quiet=True)
    args = {"checkpoints_dir": str(kept), "data_dir": str(tmp_path / "train"), "heldout_dir": str(tmp_path / "heldout"),
            "heldout_seed": 6, "output_dir": str(tmp_path), "threads": 1}
    fusion_ablation.rescore(**args)
    with (tmp_path / "fusion_ablation_rescore.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["fusion"], r["downsample"]) for r in rows] == [("late", "stride")]
    model = fusion.load_model(kept / "late_stride")
    _, heldout_acc = fusion.evaluate(model, shapes_data.load_split(str(tmp_path / "heldout"), "all"))
    assert float(rows[0]["heldout_accuracy"]) == round(heldout_acc, 6) and int(rows[0]["parameters"]) == 45_244
    assert "| late | stride |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--overwrite"):
        fusion_ablation.rescore(**args)
    with pytest.raises(SystemExit, match="training data's seed"):
        fusion_ablation.rescore(**{**args, "heldout_seed": 5, "overwrite": True})


def test_cilp_stages_tables_a_finished_checkpoint(tmp_path):
    """The CILP stages table from what a finetune checkpoint recorded (the committed reference's record)."""
    record = json.loads((cilp.REFERENCE_DIR / "config.json").read_text())
    results = {"training": record["training"], "metrics": record["metrics"], "val_samples": 400,
               "heldout": {90210: {"data_dir": "data/shapes_heldout", "n": 2000, "accuracy": 0.994}}}
    table = cilp_stages.table(results)
    assert "| pretrain (6 epochs) | contrastive validation loss, batches of 32 | 0.487 (chance 3.47; bar < 3.2) |" in table
    assert "| finetune (20 epochs, flips + up to 4-pixel shifts) | RGB-only validation accuracy | 99.00% |" in table
    assert "| test | RGB-only accuracy, `data/shapes_heldout` (seed 90210, 2,000) | 99.40% |" in table
    with pytest.raises(SystemExit, match="not a CILP finetune checkpoint"):
        cilp_stages.main(checkpoint=str(tmp_path), output_dir=str(tmp_path))


def test_grading_times_tables():
    report = {"assignments": {"fusion": {"title": "Fusion: cubes or spheres", "seconds": 3.1, "accuracy": 0.999,
                                         "score": 25, "max_score": 25, "table": [{"group": "cubes", "accuracy": 1.0}]},
                              "vlm": {"title": "VLM: questions", "seconds": 8.9, "accuracy": 0.93, "score": 55,
                                      "max_score": 50, "table": []}}}
    md = grading_times.tables({"seed": 12345, "seconds": {"bundle": 0.4, "heldout": 14.0, "grade": 27.0},
                               "report": report})
    assert "| held-out sets, seed 12345 (`python -m grader heldout`, once per seed) | 14.0 |" in md
    assert "| Fusion | 99.9% (cubes 100.0%) | 25 / 25 |" in md and "| VLM | 93.0% | 50 / 50, +5 |" in md
    assert "| &nbsp; Fusion's child | 3.1 |" in md


def test_fiftyone_app_needs_a_chromium():
    with pytest.raises(SystemExit, match="no Chromium found"):
        fiftyone_app.find_chromium("no-such-browser-here")


def test_fresh_split_tables_and_refuses_a_training_seed(tmp_path):
    results = {m: {"accuracy": 0.9, "per_group": {"ego": 1.0, "count": 0.8}, "counts": {"ego": 5, "count": 5}}
               for m in ("vlm", "clip")}
    md = fresh_split.tables(results)
    assert "| family | n | accuracy |" in md and "| template | n | accuracy |" in md
    assert md.count("| count | 5 | 80.0% |") == 2 and md.count("| all | 10 | 90.0% |") == 2
    with pytest.raises(SystemExit, match="seed of a split the kit trains"):
        fresh_split.main(seed=1000, output_dir=str(tmp_path))
    with pytest.raises(SystemExit, match="no fine-tuned VLM checkpoint in .*missing"):
        fresh_split.main(output_dir=str(tmp_path), vlm=str(tmp_path / "missing"))


def test_shapes_times_table_and_its_commands(tmp_path):
    rows = [{"command": "`python -m worlds shapes`", "wall_seconds": 3.9, "cpu_seconds": 7.2, "load_average_before": 1.5},
            {"command": "`python -m homework.cilp pretrain`", "wall_seconds": 311.0, "cpu_seconds": 191.4,
             "load_average_before": 6.2}]
    md = shapes_times.table({"rows": rows})
    assert "| `python -m worlds shapes` | 3.9 s | 7.2 s | 1.5 |" in md
    assert "| `python -m homework.cilp pretrain` | 5 min 11 s | 3 min 11 s | 6.2 |" in md
    commands = shapes_times.commands(tmp_path, 1)
    assert [args[1] for _, args in commands] == ["worlds", "homework.fusion", "homework.cilp", "homework.cilp",
                                                 "homework.cilp", "pytest"]
    assert all(str(tmp_path) in " ".join(args) for _, args in commands[:5])  # nothing of the user's is written


def test_tower_probe_scores_a_runs_stage_one_heads(kart_data, tmp_path):
    """The probe reads a pretraining run's vision.pt and scores its facts head on a split: every
    known fact counted once per view, the count's confusion adding up to its accuracy."""
    import torch

    from benchmarks import tower_probe
    from homework.modeling_kart_vlm import KartVLMForConditionalGeneration, build_tokenizer, tiny_config
    from homework.run_state import save_state
    from pretraining.base_vlm import FactsHead, KartMapHead
    from worlds.kart import KARTS

    with pytest.raises(SystemExit, match="vision.pt does not exist; pass the --run_dir"):
        tower_probe.main(run_dir=str(tmp_path / "none"), data_dir=str(kart_data), output_dir=str(tmp_path))
    torch.manual_seed(0)
    model = KartVLMForConditionalGeneration(tiny_config(len(build_tokenizer())))
    channels = model.config.vision_channels[-1]
    head = FactsHead(model.num_image_tokens, channels, len(KARTS))
    save_state(tmp_path / "run" / "vision.pt", {"rules": "kit"}, vision=model.vision.state_dict(), head=head.state_dict(),
               map_head=KartMapHead(channels, len(KARTS)).state_dict(), step=3, losses=[])
    tower_probe.main(run_dir=str(tmp_path / "run"), splits="tiny", data_dir=str(kart_data), num_views=10,
                     output_dir=str(tmp_path), name="probe")
    results = json.loads((tmp_path / "probe.json").read_text())
    tiny = results["splits"]["tiny"]
    assert results["step"] == 3 and tiny["views"] == 10
    assert tiny["counts"]["track"] == 10 and 0 <= tiny["accuracy"]["ego"] <= 1 and tiny["counts"]["side"] > 0
    confusion = tiny["count_confusion"]
    assert sum(sum(row.values()) for row in confusion.values()) == tiny["counts"]["karts"]
    diagonal = sum(row.get(true, 0) for true, row in confusion.items())
    assert tiny["accuracy"]["karts"] == round(diagonal / tiny["counts"]["karts"], 4)
    assert (tmp_path / "probe.png").stat().st_size > 0 and "| karts |" in (tmp_path / "probe.md").read_text()
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        tower_probe.main(run_dir=str(tmp_path / "run"), splits="tiny", data_dir=str(kart_data), output_dir=str(tmp_path),
                         name="probe")
