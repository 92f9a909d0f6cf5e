"""The student's package as a whole: it holds what a student edits and runs, and its modules
meet through public names only."""

from __future__ import annotations

import ast
from pathlib import Path

HOMEWORK = Path(__file__).resolve().parents[1] / "homework"


def modules() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text()) for p in sorted(HOMEWORK.glob("*.py"))}


def test_no_module_imports_another_modules_private_names():
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("homework", ""):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__future__"]
                assert not private, f"{name} imports {private} from {node.module}"


def test_the_student_package_holds_no_instructor_machinery():
    """The base's pretraining lives in pretraining/, the fusion ablation and memory profiling in benchmarks/."""
    assert len((HOMEWORK / "base_vlm.py").read_text().splitlines()) < 400
    for name, tree in modules().items():
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & {"FactsHead", "KartMapHead", "map_loss", "facts_loss", "ablation", "step_cpu_ms",
                              "peak_memory_mb", "reset_peak_memory"}, name
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"subprocess", "resource", "pretraining", "benchmarks", "grader"}, name
