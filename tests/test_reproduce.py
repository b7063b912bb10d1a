"""Tests of reproduce.py: the plan of commands, skipping finished work, bad command lines.

The workflow itself runs in CI through .ci/smoke.sh (reproduce.py --smoke --fast).
"""

import json
import os
from pathlib import Path

import pytest

import cli
import reproduce
import run_layout


def dry_run(capsys, *args: str) -> str:
    assert reproduce.main(["--dry-run", *args]) == 0
    return capsys.readouterr().out


def commands(output: str) -> list[str]:
    return [line[2:] for line in output.splitlines() if line.startswith("$ ")]


def test_smoke_plan_runs_every_step_in_its_own_folder(tmp_path, capsys):
    root = tmp_path / "smoke"
    out = dry_run(capsys, "--smoke", "--smoke-root", str(root))
    assert [line[4:].split(" (")[0] for line in out.splitlines() if line.startswith("=== ")] == list(reproduce.STEPS)
    lines = commands(out)
    scripts = [Path(line.split()[1]).name for line in lines]
    assert scripts[0] == "download_dataset.py" and "--metax-url" in lines[0]
    assert scripts.count("job.py") == 12  # six presets, two seeds
    assert scripts[-1] == "-m" and "nbconvert" in lines[-1] and str(root / "plots") in lines[-1]
    for name in (
        "export_trained_models.py",
        "eval_mse.py",
        "eval_train_time.py",
        "eval_inference_time.py",
        "eval_layer_nmse.py",
        "bilinear_test.py",
    ):
        assert name in scripts
    job = next(line for line in lines if "job.py" in line)
    assert "preset=lp1x1cs seed=0 resume_checkpoint=-1 train_steps=30" in job and "batch_size=4" in job
    layer_nmse = next(line for line in lines if "eval_layer_nmse.py" in line)
    assert "--presets lp2x3_oc5 --seeds 0 1" in layer_nmse
    assert not root.exists()  # a dry run makes nothing
    assert "LPPAD_RESULTS_FOLDER" not in os.environ  # the process environment is never changed


def test_fast_smoke_and_step_selection(tmp_path, capsys):
    out = dry_run(
        capsys,
        "--smoke",
        "--fast",
        "--smoke-root",
        str(tmp_path),
        "--skip",
        "download,export",
        "--only",
        "train,export,notebook",
    )
    assert "steps: train, notebook" in out
    lines = commands(out)
    assert [line.split()[2] for line in lines[:2]] == ["preset=zero-repl", "preset=lp2x3_oc5"]
    assert len(lines) == 3 and "train_steps=10" in lines[0]


def test_paper_plan_and_job_arguments(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LPPAD_TRAIN_RUNS_FOLDER", str(tmp_path / "runs"))
    monkeypatch.setenv("LPPAD_RESULTS_FOLDER", str(tmp_path / "results"))
    out = dry_run(
        capsys,
        "--only",
        "train",
        "--presets",
        "lp6x7,repl",
        "--seeds",
        "0-1",
        "--train-steps",
        "1000",
        "--",
        "batch_size=32",
    )
    lines = commands(out)
    assert len(lines) == 4
    assert lines[0].endswith("job.py preset=lp6x7 seed=0 resume_checkpoint=-1 train_steps=1000 batch_size=32")
    # Without --seeds, the paper's plan: seeds 0..11, but 0..2 for lp6x7.
    out = dry_run(capsys, "--only", "train", "--presets", "lp6x7,repl")
    assert len(commands(out)) == 15 and "train_steps=1500000" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--presets", "nope"], "unknown preset 'nope'"),
        (["--seeds", "3-1"], "bad --seeds range"),
        (["--only", "train,plot"], "unknown step(s) plot"),
        (["--fast"], "--fast needs --smoke"),
        (["--train-steps", "0"], "argument --train-steps: expected an integer >= 1"),
        (["--", "seed=3"], "reproduce.py sets"),
        (["--", "batch_size=big"], "after --: batch_size"),
        (["--", "nonsense=1"], "unknown name 'nonsense'"),
        (["--no-such-option"], "unrecognized arguments"),
    ],
)
def test_bad_command_lines(capsys, args, message):
    assert reproduce.main(args) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("reproduce.py: error: ") and message in err and err.count("\n") == 1


def write_checkpoint(run_folder: Path, step: int) -> None:
    folder = run_folder / f"{step:08d}"
    folder.mkdir(parents=True)
    (folder / "checkpoint.json").write_text("{}")


def test_training_skips_finished_exported_and_diverged_runs(tmp_path, capsys):
    workflow, _ = reproduce.parse_command_line(["--smoke", "--smoke-root", str(tmp_path)])
    runs = tmp_path / "runs"
    write_checkpoint(runs / "lp2x3_s0", 30)  # finished
    write_checkpoint(runs / "lp2x3_s1", 20)  # unfinished: resume
    write_checkpoint(runs / "zero_el1_s0", 30)  # finished under the preset's older name
    (runs / "repl_s0").mkdir(parents=True)
    run_layout.write_outcome(runs / "repl_s0", run_layout.Outcome("diverged", 12, "training loss is NaN at step 12"))
    (runs / "repl_s1").mkdir(parents=True)
    (runs / "repl_s1" / "exception.txt").write_text(
        "training loss is NaN, or so it says\n"
    )  # text only: not parsed, retried
    (runs / "lp1x1cs_s0").mkdir(parents=True)
    run_layout.write_outcome(runs / "lp1x1cs_s0", run_layout.Outcome("failed", 3, "training failed at step 3: boom"))
    models = tmp_path / "results" / "trained_models"
    models.mkdir(parents=True)
    (models / "lp1x1cs_s1.eqx").write_bytes(b"")
    reasons = {run: reproduce.training_skip_reason(workflow, *run) for run in workflow.runs}
    assert reasons[("lp2x3", 0)] == "finished" and reasons[("zero_oc1", 0)] == "finished"
    assert reasons[("lp1x1cs", 1)] == "exported model exists"
    assert reasons[("repl", 0)].startswith("diverged earlier")
    assert reasons[("lp2x3", 1)] is None and reasons[("repl", 1)] is None and reasons[("lp1x1cs", 0)] is None
    workflow.dry_run = True
    reproduce.step_train(workflow)
    out = capsys.readouterr().out
    assert "lp2x3 seed 0: skipped, finished" in out and out.count("$ ") == 8


def test_notebook_skips(tmp_path):
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "outputs": [{"output_type": "stream", "text": ["font: x\n", "skipped tiled outputs: no\n"]}],
            },
            {
                "cell_type": "code",
                "outputs": [{"output_type": "stream", "text": "main table: wrote a\nskipped b: c\n"}],
            },
            {"cell_type": "markdown", "source": "skipped"},
        ]
    }
    path = tmp_path / "executed.ipynb"
    path.write_text(json.dumps(notebook))
    assert reproduce.notebook_skips(path) == ["skipped tiled outputs: no", "skipped b: c"]


@pytest.fixture
def paper_folders(tmp_path, monkeypatch) -> Path:
    """Every folder of the full-scale workflow under ``tmp_path``; commands are recorded, not run."""
    for key in (
        "dataset_folder",
        "train_runs_folder",
        "results_folder",
        "trained_models_folder",
        "graphs_folder",
        "temp_folder",
    ):
        monkeypatch.setenv(f"LPPAD_{key.upper()}", str(tmp_path / key))
    return tmp_path


def record_commands(monkeypatch) -> list[list[str]]:
    ran = []
    monkeypatch.setattr(reproduce, "run_command", lambda workflow, args: ran.append([str(a) for a in args]) or 0)
    return ran


class Terminal:
    """A stdin at a terminal that answers ``answer`` (or, with None, is no terminal at all)."""

    def __init__(self, answer: str | None):
        self.answer = answer

    def isatty(self) -> bool:
        return self.answer is not None

    def readline(self) -> str:
        return self.answer + "\n"


def test_full_scale_run_says_what_it_will_do_and_needs_yes(paper_folders, monkeypatch, capsys):
    ran = record_commands(monkeypatch)
    monkeypatch.setattr("sys.stdin", Terminal(None))  # e.g. a batch job: nobody to ask
    assert reproduce.main(["--only", "download,train", "--presets", "lp2x3,repl", "--seeds", "0-1"]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert "download the paper's dataset from Metax (about 30 GB)" in out and "train 4 runs (2 presets)" in out
    assert "--yes" in err and err.count("\n") == 1 and ran == []
    assert not (paper_folders / "dataset_folder").exists()
    assert reproduce.main(["--only", "download,train", "--presets", "lp2x3,repl", "--seeds", "0-1", "--yes"]) == 0
    assert [Path(args[1]).name for args in ran] == ["download_dataset.py", "job.py", "job.py", "job.py", "job.py"]


@pytest.mark.parametrize("answer, status", [("y", 0), ("n", cli.EXIT_USAGE), ("", cli.EXIT_USAGE)])
def test_full_scale_run_asks_at_a_terminal(paper_folders, monkeypatch, capsys, answer, status):
    ran = record_commands(monkeypatch)
    monkeypatch.setattr("sys.stdin", Terminal(answer))
    assert reproduce.main(["--only", "train", "--presets", "repl", "--seeds", "0"]) == status
    assert "Go ahead? [y/N]" in capsys.readouterr().out
    assert len(ran) == (1 if status == 0 else 0)


def test_nothing_to_confirm_for_finished_work_and_dry_runs(paper_folders, monkeypatch, capsys):
    ran = record_commands(monkeypatch)
    monkeypatch.setattr("sys.stdin", Terminal(None))
    write_checkpoint(paper_folders / "train_runs_folder" / "repl_s0", 1_500_000)
    for name in ("train_data.npy", "test_data.npy"):
        (paper_folders / "dataset_folder").mkdir(exist_ok=True)
        (paper_folders / "dataset_folder" / name).write_bytes(b"")
    assert reproduce.main(["--only", "download,train", "--presets", "repl", "--seeds", "0"]) == 0
    assert ran == [] and "about to" not in capsys.readouterr().out
    assert reproduce.main(["--dry-run", "--only", "train", "--presets", "lp2x3", "--seeds", "0"]) == 0


def test_notebook_skip_reasons_reach_the_console(tmp_path, monkeypatch, capsys):
    workflow, _ = reproduce.parse_command_line(["--only", "notebook"])
    workflow.env["LPPAD_GRAPHS_FOLDER"] = str(tmp_path)
    executed = {
        "cells": [
            {
                "cell_type": "code",
                "outputs": [
                    {
                        "output_type": "stream",
                        "text": "main table: wrote t.csv\nskipped layer NMSE: no results/layer_nmse.json\n",
                    }
                ],
            }
        ]
    }
    monkeypatch.setattr(
        reproduce,
        "run_command",
        lambda workflow, args: (tmp_path / reproduce.NOTEBOOK.name).write_text(json.dumps(executed)) and 0,
    )
    reproduce.step_notebook(workflow)
    out = capsys.readouterr().out
    assert "notebook: skipped layer NMSE: no results/layer_nmse.json" in out and "1 skipped" in out
