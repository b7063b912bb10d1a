"""The import directions of the code (README "Files"): low modules know nothing of the ones above
them. Read from the source with ``ast``, imports inside functions included, so that a lazy import
cannot hide a cycle."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT_MODULES = {path.stem for path in REPO.glob("*.py")}


def project_imports(module: str) -> set[str]:
    """The project modules that ``module``.py imports anywhere in its source."""
    tree = ast.parse((REPO / f"{module}.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & PROJECT_MODULES


@pytest.mark.parametrize(
    "module, allowed",
    [
        ("cli", set()),  # the error wrapper and generic argument types: no experiment plan
        ("paths_config", set()),
        ("io_utils", set()),
        ("run_layout", {"cli", "paths_config", "io_utils"}),  # names and paths sit below the plan
        ("sentinel2", set()),
    ],
)
def test_low_modules_import_only_lower_ones(module, allowed):
    assert project_imports(module) <= allowed


@pytest.mark.parametrize(
    "module, forbidden",
    [
        ("superresolve", {"eval_models", "make_dataset_npys", "train_utils"}),
        ("reproduce", {"bench_padding", "bench_superresolve"}),
        ("published_models", {"eval_models", "train_utils"}),
        # Evaluation and export read checkpoints and published files, not the trainer.
        ("eval_models", {"train_utils"}),
        ("export_trained_models", {"train_utils"}),
        ("checkpoints", {"train_utils"}),
        ("slurm_train", {"train_utils"}),
    ],
)
def test_no_import_points_upwards(module, forbidden):
    assert not project_imports(module) & forbidden


def test_the_helper_finds_imports():
    # The checks above must be able to fail: top-level, ``from`` and function-level imports count.
    assert project_imports("catalog") == {"checkpoints", "presets", "run_layout"}
    assert {"make_synthetic_dataset", "presets", "rvsr"} <= project_imports("bench_superresolve")
