"""Fault injection: what a killed, requeued or starved training run or evaluation keeps.

Real subprocesses (``python job.py``, ``python eval_mse.py``) and real signals on tiny
shapes: 16x16 targets, batch 2, a few steps. The subprocesses share a persistent JAX
compilation cache, so only the first one of each configuration compiles. Each test compares
against an uninterrupted run: byte-identical arrays and histories, or a folder whose every
file hashes the same before and after.

The "What survives what" table of docs/training.md cites these tests.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import numpy as np
import pytest

import catalog
import checkpoints
import run_layout
import train_utils

pytestmark = pytest.mark.slow  # every test here runs for tens of seconds or more

REPO = Path(__file__).resolve().parent.parent
PRESET = "zero-repl"  # the cheapest preset to compile
TRAIN_STEPS = 24
CHECKPOINT_STEPS = [4, 8, 12, 16, 20]
ARRAY_FILES = ("model.eqx", "model_state.eqx", "opt_state.eqx")


@pytest.fixture(scope="module")
def data(tmp_path_factory, write_tiny_images) -> dict[str, Path]:
    """Train (6) and test (4) images (N, 3, 32, 32), float32 in [-1, 1]."""
    return write_tiny_images(tmp_path_factory.mktemp("data"), {"train": 6, "test": 4}, 32, seed=1)


def job_args(folder: Path, data: dict[str, Path], train_steps: int = TRAIN_STEPS, **extra: str) -> list[str]:
    args = {
        "preset": PRESET,
        "folder": str(folder),
        "train_data_path": str(data["train"]),
        "test_data_path": str(data["test"]),
        "image_shape": "[3,16,16]",
        "batch_size": "2",
        "train_steps": str(train_steps),
        "checkpoint_steps": json.dumps(CHECKPOINT_STEPS).replace(" ", ""),
        "test_image_save_interval": "0",
        "resume_checkpoint": "-1",
        **extra,
    }
    return [sys.executable, str(REPO / "job.py"), *(f"{k}={v}" for k, v in args.items())]


def run_job(folder: Path, data: dict[str, Path], env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(job_args(folder, data, **kwargs), env=env, capture_output=True, text=True, timeout=600)


def folder_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` by relative path (also catches added files)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_same_run(folder: Path, reference: Path, step: int = TRAIN_STEPS) -> None:
    """The final checkpoint's arrays and both histories are byte-identical."""
    for name in ("train_history.csv", "test_history.csv"):
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    for name in ARRAY_FILES:
        got = run_layout.checkpoint_folder(folder, step) / name
        assert got.read_bytes() == (run_layout.checkpoint_folder(reference, step) / name).read_bytes(), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data, subprocess_env) -> Path:
    """The reference: one uninterrupted run to TRAIN_STEPS."""
    folder = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = run_job(folder, data, subprocess_env)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


def garble_json(checkpoint: Path) -> None:
    (checkpoint / "checkpoint.json").write_text('{"format_version": 2, "step": ')


def truncate_arrays(checkpoint: Path) -> None:
    path = checkpoint / "opt_state.eqx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_bit(checkpoint: Path) -> None:
    """Same size, one bit different deep in the model's arrays: only the checksum sees it."""
    path = checkpoint / "model.eqx"
    data = bytearray(path.read_bytes())
    data[len(data) - 7] ^= 0x10
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------------------------
# (a) every checkpoint unusable: stop, say why, change nothing


@pytest.mark.parametrize("damage", [garble_json, truncate_arrays, flip_a_bit])
def test_all_checkpoints_unusable_changes_nothing(tmp_path, data, subprocess_env, damage):
    folder = tmp_path / "run"
    assert run_job(folder, data, subprocess_env, train_steps=8).returncode == 0
    steps = checkpoints.list_checkpoints(folder)
    assert steps == [4, 8]
    for step in steps:
        damage(run_layout.checkpoint_folder(folder, step))
    before = folder_hashes(folder)

    done = run_job(folder, data, subprocess_env)

    assert done.returncode == 1
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("job.py: error:")]
    assert len(error_lines) == 1, done.stderr[-2000:]
    assert str(folder) in error_lines[0] and "none is usable" in error_lines[0]
    assert "step 4:" in error_lines[0] and "step 8:" in error_lines[0] and "protect_existing=False" in error_lines[0]
    assert folder_hashes(folder) == before


def test_protect_existing_false_starts_over(tmp_path, data, subprocess_env, uninterrupted):
    folder = tmp_path / "run"
    assert run_job(folder, data, subprocess_env, train_steps=8).returncode == 0
    for step in checkpoints.list_checkpoints(folder):
        garble_json(run_layout.checkpoint_folder(folder, step))
    done = run_job(folder, data, subprocess_env, protect_existing="False")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "starting over" in done.stdout
    assert_same_run(folder, uninterrupted)


# ----------------------------------------------------------------------------------------------
# (b) the newest checkpoint damaged: resume from the one before, same result


@pytest.mark.parametrize("damage", [truncate_arrays, flip_a_bit, garble_json])
def test_damaged_newest_checkpoint_resumes_from_previous(tmp_path, data, subprocess_env, uninterrupted, damage):
    folder = tmp_path / "run"
    assert run_job(folder, data, subprocess_env, train_steps=12).returncode == 0
    damage(run_layout.checkpoint_folder(folder, 12))

    done = run_job(folder, data, subprocess_env)

    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipping checkpoint of step 12" in done.stdout and "resuming from step 8" in done.stdout
    assert_same_run(folder, uninterrupted)
    checkpoints.load_checkpoint(run_layout.checkpoint_folder(folder, 12))  # rewritten, verifies


def test_format_1_checkpoint_still_resumes(tmp_path, data, subprocess_env, uninterrupted):
    """A checkpoint written before checksums existed (format 1: "hpars", no "files")."""
    folder = tmp_path / "run"
    assert run_job(folder, data, subprocess_env, train_steps=12).returncode == 0
    for step in (4, 8, 12):
        path = run_layout.checkpoint_folder(folder, step) / "checkpoint.json"
        info = json.loads(path.read_text())
        old = {k: v for k, v in info.items() if k not in ("config", "options", "files", "json_sha256")}
        path.write_text(json.dumps({**old, "format_version": 1, "hpars": {**info["config"], **info["options"]}}))
    truncate_arrays(run_layout.checkpoint_folder(folder, 12))  # caught without checksums too

    done = run_job(folder, data, subprocess_env)

    assert done.returncode == 0, done.stderr[-2000:]
    assert "format 1 (no checksums)" in done.stdout and "skipping checkpoint of step 12" in done.stdout
    assert_same_run(folder, uninterrupted)


# ----------------------------------------------------------------------------------------------
# (c) SIGKILL at random moments, resumed each time


KILL_TEST_STEPS = 160
KILL_TEST_CHECKPOINTS = "[" + ",".join(str(s) for s in range(10, KILL_TEST_STEPS, 10)) + "]"


def history_rows(folder: Path) -> int:
    path = folder / "train_history.csv"
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except OSError:
        return 0


def test_sigkill_at_random_moments_then_resume(tmp_path, data, subprocess_env):
    """Kills at seeded random moments: one during start-up, the others at a random point of
    training (a random number of logged steps, then a random fraction of a second, so they
    land anywhere: in a step, a test, a history append, a checkpoint write)."""
    reference = tmp_path / "reference"
    done = run_job(reference, data, subprocess_env, train_steps=KILL_TEST_STEPS, checkpoint_steps=KILL_TEST_CHECKPOINTS)
    assert done.returncode == 0, done.stderr[-2000:]

    folder = tmp_path / "run"
    moments = random.Random(20250217)
    checkpoints_at_kills = []
    # Logged steps at which to kill, ascending: a resumed run logs again from its checkpoint.
    targets = [None, *sorted(moments.sample(range(5, KILL_TEST_STEPS - 5), 4))]
    for target in targets:
        command = job_args(folder, data, train_steps=KILL_TEST_STEPS, checkpoint_steps=KILL_TEST_CHECKPOINTS)
        process = subprocess.Popen(command, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if target is None:
            time.sleep(moments.uniform(0.5, 3.0))
        else:
            deadline = time.monotonic() + 300
            while history_rows(folder) < target and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(moments.uniform(0.0, 0.5))
        if process.poll() is not None:
            break  # finished before this kill
        process.send_signal(signal.SIGKILL)
        process.wait()
        checkpoints_at_kills.append(checkpoints.list_checkpoints(folder))
    assert len(checkpoints_at_kills) >= 3 and any(checkpoints_at_kills), checkpoints_at_kills
    done = run_job(folder, data, subprocess_env, train_steps=KILL_TEST_STEPS, checkpoint_steps=KILL_TEST_CHECKPOINTS)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_run(folder, reference, KILL_TEST_STEPS)
    assert not [p for p in folder.iterdir() if run_layout.is_temporary_checkpoint_name(p.name)]
    print("checkpoints at each kill:", checkpoints_at_kills)


def test_kill_between_checkpoint_renames_is_repaired(tmp_path, data, subprocess_env, uninterrupted):
    """A kill after an existing checkpoint moved aside and before its copy moved in."""
    folder = tmp_path / "run"
    assert run_job(folder, data, subprocess_env, train_steps=12).returncode == 0
    os.rename(run_layout.checkpoint_folder(folder, 12), run_layout.replaced_checkpoint_folder(folder, 12, "dead"))
    (run_layout.partial_checkpoint_folder(folder, 12, "beef")).mkdir()  # its half-written copy
    done = run_job(folder, data, subprocess_env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Resuming from" in done.stdout and "00000012" in done.stdout
    assert_same_run(folder, uninterrupted)


# ----------------------------------------------------------------------------------------------
# (d) the disk fills up while a checkpoint is written


def tiny_hpars(folder: Path, data: dict[str, Path], **overrides) -> dict:
    import presets

    hpars = presets.get_preset_hpars(PRESET, 0)
    hpars.update(
        folder=str(folder), train_data_path=str(data["train"]), test_data_path=str(data["test"]),
        image_shape=[3, 16, 16], batch_size=2, train_steps=TRAIN_STEPS, checkpoint_steps=CHECKPOINT_STEPS,
        test_image_save_interval=0, resume_checkpoint=-1,
    )  # fmt: skip
    hpars.update(overrides)
    return hpars


def test_full_disk_during_checkpoint_keeps_earlier_ones(tmp_path, data, monkeypatch, uninterrupted):
    folder = tmp_path / "run"
    serialise = eqx.tree_serialise_leaves
    written = []

    def fill_disk_at_step_12(path, tree):
        if Path(path).parent.name.startswith(".partial-00000012") and Path(path).name == "opt_state.eqx":
            Path(path).write_bytes(b"\x93NUMPY partial")  # as far as the disk let it get
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written.append(path)
        return serialise(path, tree)

    monkeypatch.setattr(eqx, "tree_serialise_leaves", fill_disk_at_step_12)
    with pytest.raises(checkpoints.CheckpointWriteError, match="No space left on device") as error:
        train_utils.train(tiny_hpars(folder, data))
    assert "step 12" in str(error.value) and "resume_checkpoint=-1" in str(error.value)
    assert checkpoints.list_checkpoints(folder) == [4, 8]
    assert not [p for p in folder.iterdir() if run_layout.is_temporary_checkpoint_name(p.name)]
    for step in (4, 8):
        checkpoints.load_checkpoint(run_layout.checkpoint_folder(folder, step))  # intact: checksums hold
    assert json.loads((folder / "exception.json").read_text())["kind"] == "failed"

    monkeypatch.setattr(eqx, "tree_serialise_leaves", serialise)  # space freed
    train_utils.train(tiny_hpars(folder, data))
    assert_same_run(folder, uninterrupted)
    assert not (folder / "exception.json").exists()


# ----------------------------------------------------------------------------------------------
# (e) SIGKILL in the middle of eval_mse.py


@pytest.fixture(scope="module")
def published(tmp_path_factory, write_tiny_models) -> Path:
    """Four tiny published models (4 hidden channels) of two presets."""
    folder = tmp_path_factory.mktemp("trained_models")
    write_tiny_models(folder, [("repl", 0), ("repl", 1), ("zero-repl", 0), ("zero-repl", 1)], key_offset=10)
    return folder


def eval_mse_command(models: Path, results: Path, test_data: Path) -> list[str]:
    return [sys.executable, str(REPO / "eval_mse.py"), "--models-folder", str(models), "--results-folder", str(results),
            "--test-data", str(test_data), "--batch-size", "2"]  # fmt: skip


def test_sigkill_during_eval_mse_then_rerun(tmp_path, published, data, subprocess_env):
    whole = tmp_path / "whole"
    done = subprocess.run(
        eval_mse_command(published, whole, data["test"]), env=subprocess_env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = catalog.find_output_crop_sumsqs(whole)
    assert len(expected) == 4

    parts = tmp_path / "parts"
    process = subprocess.Popen(eval_mse_command(published, parts, data["test"]), env=subprocess_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not catalog.find_output_crop_sumsqs(parts) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stored_at_kill = len(catalog.find_output_crop_sumsqs(parts))
    assert 1 <= stored_at_kill < 4, "killed too late to test anything"

    done = subprocess.run(
        eval_mse_command(published, parts, data["test"]), env=subprocess_env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = catalog.find_output_crop_sumsqs(parts)
    assert sorted(got) == sorted(expected)
    for run, path in expected.items():
        np.testing.assert_array_equal(np.load(got[run]), np.load(path))
    assert not list((parts / run_layout.OUTPUT_CROP_SUMSQS_FOLDER).glob("*.partial-*"))


def test_full_disk_while_appending_history_is_one_clear_error(tmp_path, data, monkeypatch, uninterrupted):
    folder = tmp_path / "run"
    append = train_utils.CsvHistory.append

    def fill_disk_after_step_14(self, rows):
        if rows and rows[-1][0] > 14:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return append(self, rows)

    monkeypatch.setattr(train_utils.CsvHistory, "append", fill_disk_after_step_14)
    with pytest.raises(train_utils.JobError, match="No space left on device.*checkpoints are intact"):
        train_utils.train(tiny_hpars(folder, data))
    assert checkpoints.list_checkpoints(folder) == [4, 8, 12]
    monkeypatch.setattr(train_utils.CsvHistory, "append", append)
    train_utils.train(tiny_hpars(folder, data))
    assert_same_run(folder, uninterrupted)
