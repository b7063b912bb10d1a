"""Tests of the trainer on tiny data: histories, checkpoints, exact resume, failures.

Compiling RVSR is slow on CPU, so every test uses the same tiny model configuration
(4 hidden channels, 16x16 targets, batch 2) and one of three presets; ``train_utils`` caches
the compiled steps per configuration, so each preset compiles once per session.
"""

import json
import os
import signal
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest

import checkpoints
import data_utils
import presets
import train_state
import train_utils


@pytest.fixture(scope="module")
def data_paths(tmp_path_factory, write_tiny_images) -> dict[str, str]:
    """Train (6 images) and test (5 images) .npy files of shape (N, 3, 208, 208) in [-1, 1]."""
    paths = write_tiny_images(tmp_path_factory.mktemp("data"), {"train": 6, "test": 5}, 208)
    return {name: str(path) for name, path in paths.items()}


def read_csv(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def model_leaves(model) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))]


@pytest.mark.slow
def test_run_folder_contents(tmp_path, data_paths, tiny_hpars):
    hpars = tiny_hpars("lp1x1cs", tmp_path / "run", data_paths)
    ts = train_utils.train(hpars)
    run = tmp_path / "run"
    assert ts.step == 3
    assert checkpoints.list_checkpoints(run) == [2, 3]

    train_rows = read_csv(run / "train_history.csv")
    assert train_rows[0] == ["step", "loss", "learning_rate"]
    assert [int(r[0]) for r in train_rows[1:]] == [1, 2, 3]
    # The learning rate logged for step s is the one used by that update: schedule(s - 1).
    schedule = train_state.make_schedule(hpars)
    for step, loss, lr in train_rows[1:]:
        assert np.isfinite(float(loss))
        assert float(lr) == pytest.approx(float(schedule(int(step) - 1)), rel=1e-6)

    test_rows = read_csv(run / "test_history.csv")
    assert test_rows[0] == ["step", "test_loss"]
    assert [int(r[0]) for r in test_rows[1:]] == [0, 2, 3]  # step 0, checkpoints, last step

    # Of the sample images only test image 2 is in the 2 full test batches of 5 images.
    images = sorted(p.name for p in (run / "test_images").iterdir())
    assert "test002_input.png" in images and "test002_target.png" in images
    assert "00000003_test002_prediction.png" in images
    assert not any("test007" in name for name in images)


@pytest.mark.slow
def test_checkpoint_holds_no_pickle(tmp_path, data_paths, tiny_hpars):
    hpars = tiny_hpars("lp1x1cs", tmp_path / "run", data_paths, train_steps=1)
    ts = train_utils.train(hpars)
    checkpoint = tmp_path / "run" / "00000001"
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted(checkpoints.CHECKPOINT_FILES)
    info = json.loads((checkpoint / "checkpoint.json").read_text())
    assert info["step"] == 1 and info["config"]["preset"] == "lp1x1cs" and info["options"]["train_steps"] == 1
    assert set(info["config"]) == set(presets.CONFIG_KEYS) and "folder" not in info["config"]
    assert info["history_rows"] == {"train": 1, "test": 2}
    assert sorted(info["files"]) == ["model.eqx", "model_state.eqx", "opt_state.eqx"]
    # The .eqx files are plain consecutive .npy records: readable without pickle, nothing more.
    with open(checkpoint / "model.eqx", "rb") as f:
        records = []
        while f.peek(1):
            records.append(np.load(f, allow_pickle=False))
    assert [r.shape for r in records] == [leaf.shape for leaf in model_leaves(ts.model)]

    loaded, _ = checkpoints.load_checkpoint(checkpoint)
    for a, b in zip(model_leaves(loaded.model), model_leaves(ts.model)):
        np.testing.assert_array_equal(a, b)
    assert loaded.rng.bit_generator.state == ts.rng.bit_generator.state
    np.testing.assert_array_equal(np.asarray(loaded.key), np.asarray(ts.key))


def test_resume_equals_uninterrupted_run(tmp_path, data_paths, tiny_hpars):
    whole = train_utils.train(tiny_hpars("lp1x1cs", tmp_path / "whole", data_paths, train_steps=4))

    # Interrupted after step 3, resumed from the checkpoint at 2: rows after it are redone.
    train_utils.train(tiny_hpars("lp1x1cs", tmp_path / "parts", data_paths, train_steps=3))
    resumed = train_utils.train(
        tiny_hpars("lp1x1cs", tmp_path / "parts", data_paths, train_steps=4, resume_checkpoint=2)
    )

    for a, b in zip(model_leaves(resumed.model), model_leaves(whole.model)):
        np.testing.assert_array_equal(a, b)
    for name in ("train_history.csv", "test_history.csv"):
        assert (tmp_path / "parts" / name).read_text() == (tmp_path / "whole" / name).read_text()
    for name in ("model.eqx", "opt_state.eqx"):
        assert (tmp_path / "parts/00000004" / name).read_bytes() == (tmp_path / "whole/00000004" / name).read_bytes()

    # resume_checkpoint=-1 picks the newest checkpoint; the run is complete, so nothing changes.
    again = train_utils.train(
        tiny_hpars("lp1x1cs", tmp_path / "parts", data_paths, train_steps=4, resume_checkpoint=-1)
    )
    assert again.step == 4
    assert (tmp_path / "parts/train_history.csv").read_text() == (tmp_path / "whole/train_history.csv").read_text()


def test_config_and_options_apart_equal_one_dict(tmp_path, data_paths, tiny_hpars):
    whole = train_utils.train(tiny_hpars("lp1x1cs", tmp_path / "one", data_paths))
    config, options = presets.split_hpars(tiny_hpars("lp1x1cs", tmp_path / "two", data_paths))
    assert "folder" in options and "train_steps" in options and "model_hpars" in config and "folder" not in config
    apart = train_utils.train(config, options)
    for a, b in zip(model_leaves(apart.model), model_leaves(whole.model)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(train_utils.JobError, match="both as config and as run options"):
        train_utils.train(config, {**options, "seed": 1})


def test_resume_rejects_other_hyperparameters(tmp_path, data_paths, tiny_hpars):
    train_utils.train(tiny_hpars("lp1x1cs", tmp_path / "run", data_paths, train_steps=2))
    other = tiny_hpars("lp1x1cs", tmp_path / "run", data_paths, train_steps=3, resume_checkpoint=-1, batch_size=3)
    with pytest.raises(checkpoints.CheckpointError, match="batch_size"):
        train_utils.train(other)
    with pytest.raises(checkpoints.CheckpointError, match="00000001"):
        train_utils.train(tiny_hpars("lp1x1cs", tmp_path / "run", data_paths, resume_checkpoint=1))


def test_stop_signal_writes_checkpoint_then_stops(tmp_path, data_paths, monkeypatch, tiny_hpars):
    draw = data_utils.ImageBatcher.__call__
    calls = []

    def draw_then_signal(self, data):
        calls.append(1)
        if len(calls) == 2:  # as Slurm's time-limit warning arriving during step 2
            os.kill(os.getpid(), signal.SIGUSR1)
        return draw(self, data)

    monkeypatch.setattr(data_utils.ImageBatcher, "__call__", draw_then_signal)
    with pytest.raises(train_utils.TrainingInterrupted) as stopped:
        train_utils.train(tiny_hpars("lp1x1cs", tmp_path / "run", data_paths, train_steps=5, checkpoint_steps=[]))
    assert (stopped.value.signum, stopped.value.step) == (signal.SIGUSR1, 2)
    assert checkpoints.list_checkpoints(tmp_path / "run") == [2]
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handler restored


def test_latest_checkpoint_skips_partial_and_incomplete(tmp_path):
    (tmp_path / ".partial-00000009-abcd").mkdir()
    (tmp_path / "00000005").mkdir()  # incomplete: no files
    assert checkpoints.list_checkpoints(tmp_path) == [5]
    assert checkpoints.latest_checkpoint(tmp_path) is None
    assert checkpoints.latest_checkpoint(tmp_path / "missing") is None


def test_resume_latest_without_checkpoint_starts_fresh(tmp_path, data_paths, tiny_hpars):
    ts = train_utils.train(tiny_hpars("lp1x1cs", tmp_path / "run", data_paths, train_steps=1, resume_checkpoint=-1))
    assert ts.step == 1


def test_protect_existing(tmp_path, data_paths, tiny_hpars):
    run = tmp_path / "run"
    train_utils.train(tiny_hpars("lp1x1cs", run, data_paths, train_steps=2, checkpoint_steps=[1]))
    (run / "notes.txt").write_text("not written by the trainer")
    with pytest.raises(train_utils.RunFolderExistsError, match="protect_existing=False"):
        train_utils.train(tiny_hpars("lp1x1cs", run, data_paths, train_steps=1))
    assert checkpoints.list_checkpoints(run) == [1, 2]

    train_utils.train(tiny_hpars("lp1x1cs", run, data_paths, train_steps=1, protect_existing=False))
    assert checkpoints.list_checkpoints(run) == [1]  # the old run's checkpoints are gone
    assert (run / "notes.txt").exists()  # files the trainer did not write stay
    assert len(read_csv(run / "train_history.csv")) == 2


def test_save_false_writes_only_timing(tmp_path, data_paths, tiny_hpars):
    timing = tmp_path / "timing.json"
    hpars = tiny_hpars("lp1x1cs", tmp_path / "run", data_paths, save=False, timing_filename=str(timing))
    train_utils.train(hpars)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timing.json"]
    result = json.loads(timing.read_text())
    assert result["mode"] == "train" and result["batch_size"] == 2 and len(result["step_times"]) == 3


@pytest.mark.slow
def test_output_crop_preset_trains_on_cropped_targets(tmp_path, data_paths, tiny_hpars):
    hpars = tiny_hpars("zero_oc1", tmp_path / "run", data_paths)
    batch = np.load(data_paths["test"])[:2]
    inputs, targets = train_utils.make_inputs_and_targets(batch, hpars)
    assert inputs.shape == (2, 3, 4, 4)
    assert targets.shape == (2, 3, 8, 8)  # 16 minus sr_rate * oc = 4 per side
    ts = train_utils.train(hpars)
    loss, _ = train_utils.evaluate_test_loss(ts.model, ts.model_state, np.load(data_paths["test"]), hpars)
    assert np.isfinite(loss)
    last_test_loss = float(read_csv(tmp_path / "run" / "test_history.csv")[-1][1])
    assert loss == pytest.approx(last_test_loss, rel=1e-6)


@pytest.mark.slow
def test_nan_loss_stops_with_exception_file(tmp_path, data_paths, monkeypatch, tiny_hpars):
    # Finite data that the model turns into a NaN loss: a NaN learning rate.
    monkeypatch.setattr(train_utils, "_compiled_steps", train_utils._compiled_steps.__wrapped__)
    hpars = tiny_hpars("lp1x1cs", tmp_path / "run", data_paths)
    hpars["learning_rate_schedule"] = {**hpars["learning_rate_schedule"], "init_value": float("nan")}
    with pytest.raises(train_utils.TrainingDivergedError, match="NaN at step 2"):
        train_utils.train(hpars)
    assert "NaN at step 2" in (tmp_path / "run" / "exception.txt").read_text()
    outcome = json.loads((tmp_path / "run" / "exception.json").read_text())
    assert outcome == {"kind": "diverged", "step": 2, "message": "training loss is NaN at step 2"}
    assert checkpoints.list_checkpoints(tmp_path / "run") == []


def test_huge_loss_stops_only_after_warmup(tmp_path):
    hpars = {"save": True, "folder": str(tmp_path)}
    train_utils._check_losses(hpars, [(100, 1e9, 0.01)])  # still warming up
    with pytest.raises(train_utils.TrainingDivergedError, match="exceeds"):
        train_utils._check_losses(hpars, [(101, 1e9, 0.01)])
    assert "step 101" in (tmp_path / "exception.txt").read_text()
    assert json.loads((tmp_path / "exception.json").read_text())["kind"] == "diverged"


def test_missing_data_is_a_clear_error(tmp_path, data_paths, tiny_hpars):
    hpars = tiny_hpars("lp1x1cs", tmp_path / "run", data_paths, train_data_path=str(tmp_path / "none.npy"))
    with pytest.raises(train_utils.DataError, match="train data file not found"):
        train_utils.train(hpars)
    assert not (tmp_path / "run").exists()


def test_inference_timing(tmp_path, data_paths, tiny_hpars):
    timing = tmp_path / "inference.json"
    hpars = tiny_hpars("zero-repl", tmp_path / "run", data_paths, inference_steps=3, timing_filename=str(timing))
    times = train_utils.run_job(hpars)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert json.loads(timing.read_text())["mode"] == "inference"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "name, array, message",
    [
        ("nan_in_image_4", None, "train data {path}: image 4 holds NaN or infinite values"),
        ("float64", np.zeros((4, 3, 208, 208), np.float64), "has dtype float64; expected float32"),
        ("uint16", np.zeros((4, 3, 208, 208), np.uint16), "has dtype uint16; expected float32"),
        ("too_small", np.zeros((4, 3, 20, 208), np.float32), "has shape (4, 3, 20, 208); expected (N, 3, >=24, >=24)"),
        ("no_channels", np.zeros((4, 208, 208), np.float32), "has shape (4, 208, 208)"),
    ],
)
def test_bad_training_data_is_refused_before_the_run_folder_is_touched(
    tmp_path, data_paths, name, array, message, tiny_hpars
):
    path = tmp_path / f"{name}.npy"
    if array is None:
        array = np.load(data_paths["train"]).copy()
        array[4, 1, 100, 7] = np.inf if "inf" in name else np.nan
    np.save(path, array)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("kept")
    with pytest.raises(train_utils.DataError) as error:
        train_utils.train(tiny_hpars("lp1x1cs", run, data_paths, train_data_path=str(path), protect_existing=False))
    assert message.format(path=path) in str(error.value) and "\n" not in str(error.value)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_resumed_run_does_not_read_the_data_again_but_a_changed_file_is(tmp_path, data_paths, monkeypatch, tiny_hpars):
    # The finite-values check reads a data file once per version of it (a stamp beside it),
    # not at every resume or Slurm requeue; a file rewritten since is read, and refused, again.
    train = tmp_path / "train.npy"
    train.write_bytes(Path(data_paths["train"]).read_bytes())
    hpars = tiny_hpars("lp1x1cs", tmp_path / "run", data_paths, train_data_path=str(train), train_steps=1,
                       checkpoint_steps=[1])  # fmt: skip
    train_utils.train(hpars)

    def no_scan(data):
        raise AssertionError("the data was read again")

    with monkeypatch.context() as patch:
        patch.setattr(data_utils, "first_non_finite_image", no_scan)
        assert train_utils.train({**hpars, "train_steps": 2, "resume_checkpoint": -1}).step == 2
    images = np.load(train)
    images[1, 0, 5, 5] = np.nan
    np.save(train, images)
    with pytest.raises(train_utils.DataError, match="image 1 holds NaN or infinite"):
        train_utils.train({**hpars, "train_steps": 3, "resume_checkpoint": -1})
    assert checkpoints.list_checkpoints(tmp_path / "run") == [1, 2]


def test_non_finite_test_data_is_refused_too(tmp_path, data_paths, tiny_hpars):
    array = np.load(data_paths["test"]).copy()
    array[0, 0, 0, 0] = -np.inf
    np.save(tmp_path / "test.npy", array)
    with pytest.raises(train_utils.DataError, match="test data .*: image 0 holds NaN or infinite"):
        train_utils.train(
            tiny_hpars("lp1x1cs", tmp_path / "run", data_paths, test_data_path=str(tmp_path / "test.npy"))
        )
    assert not (tmp_path / "run").exists()
