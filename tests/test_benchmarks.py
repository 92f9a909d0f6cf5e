"""benchmarks/: the kit's own measurements (not in the student starter) answer --help."""

from __future__ import annotations

from pathlib import Path

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
    assert "| pretrain base | 2000 | 3000 | this run |" in table and "| train vlm | ? |  | from its record |" in table
    real_stk._plot(results, tmp_path / "real.png")
    assert (tmp_path / "real.png").stat().st_size > 1000
