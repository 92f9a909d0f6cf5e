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
