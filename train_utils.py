"""The trainer of the paper's RVSR runs (Niemitalo et al. 2025, arXiv:2502.12300): jitted
training steps, test loss, histories, sample images, timing.

``run_job(hpars)`` is what ``job.py`` calls; it trains (``train``) or, with
``inference_steps`` set, times the inference-form model (``time_inference``). The pieces:

- ``make_inputs_and_targets(batch, hpars, key=None)`` (random crops with a key, else center)
- ``make_train_step(hpars, optimizer)``, ``make_eval_step(hpars)``, ``compiled_steps(hpars)``
  (both, cached per configuration), ``evaluate_test_loss(model, state, test_data, hpars)``

The state it steps and how step 0 is built are ``train_state``'s; checkpoints (their format,
verification and which one a run resumes from) are ``checkpoints``'s; the model applied to a
batch is ``rvsr.predict``.

SIGUSR1 or SIGTERM during training writes a checkpoint of the current step and raises
``TrainingInterrupted`` (job.py exits with 128 + the signal number).

A run folder (names in ``run_layout``) holds ``train_history.csv`` (step, loss,
learning_rate), ``test_history.csv`` (step, test_loss), ``test_images/`` (sample PNGs),
``exception.json`` and ``exception.txt`` (why training stopped, if it did) and one checkpoint
folder ``{step:08d}/`` per saved step (``checkpoints``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import checkpoints
import data_utils
import paths_config
import run_layout
import rvsr
from checkpoints import CheckpointError
from cli import UserError, one_line
from io_utils import atomic_write_json, atomic_write_text, fsync_file
from run_layout import SAMPLE_TEST_IMAGES, TEST_IMAGES_FOLDER
from train_state import TrainState, build_model, init_train_state, make_optimizer, trainable

MAX_LOSS_AFTER_WARMUP = 1e6
WARMUP_STEPS = 100
# Losses are fetched from the device every this many steps, so that the host can prepare the
# next batches while the device computes; a NaN is therefore noticed up to this many steps late
# (but always before a checkpoint is written).
LOG_EVERY_STEPS = 10


class JobError(UserError):
    """An expected failure that job.py reports as one line (bad data, existing folder, ...)."""


class DataError(JobError):
    """A data file is missing or has the wrong shape."""


class RunFolderExistsError(JobError):
    """The run folder exists and ``protect_existing`` forbids overwriting it."""


class TrainingDivergedError(JobError):
    """The training loss became NaN, or exceeded 1e6 after the warm-up."""


class TrainingInterrupted(Exception):
    """SIGUSR1 or SIGTERM stopped training after a checkpoint of the current step was written
    (so a Slurm job near its time limit or preempted resumes where it stopped)."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step


# ----------------------------------------------------------------------------------------------
# Hyperparameters, model and optimizer


def validate_hpars(hpars: dict) -> None:
    """Raise ``JobError`` naming the first hyperparameter with an unusable value."""

    def require(ok: bool, message: str) -> None:
        if not ok:
            raise JobError(f"bad hyperparameter: {message}")

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    require(hpars.get("model_type") == "RVSR", f"model_type must be 'RVSR', got {hpars.get('model_type')!r}")
    sr = hpars["sr_rate"]
    require(is_int(sr) and sr >= 1, f"sr_rate must be a positive int, got {sr!r}")
    shape = hpars["image_shape"]
    require(
        len(shape) == 3 and all(is_int(n) for n in shape) and shape[0] == 3,
        f"image_shape must be [3, height, width], got {shape!r}",
    )
    require(
        all(n > 0 and n % sr == 0 for n in shape[1:]),
        f"image_shape height and width must be positive multiples of sr_rate {sr}, got {shape!r}",
    )
    require(
        is_int(hpars["batch_size"]) and hpars["batch_size"] >= 1,
        f"batch_size must be >= 1, got {hpars['batch_size']!r}",
    )
    require(is_int(hpars["train_steps"]) and hpars["train_steps"] >= 0, "train_steps must be an int >= 0")
    require(is_int(hpars["seed"]) and hpars["seed"] >= 0, "seed must be an int >= 0")
    require(all(is_int(s) and s >= 0 for s in hpars["checkpoint_steps"]), "checkpoint_steps must be ints >= 0")
    require(
        is_int(hpars["test_image_save_interval"]) and hpars["test_image_save_interval"] >= 0,
        "test_image_save_interval must be an int >= 0",
    )
    require(hpars["train_image_save_interval"] == 0, "train_image_save_interval other than 0 is not supported")
    resume = hpars["resume_checkpoint"]
    require(resume is None or (is_int(resume) and resume >= -1), "resume_checkpoint must be None, -1 or a step")
    require(hpars["save"] is False or bool(hpars["folder"]), "folder must be set when save is True")


# ----------------------------------------------------------------------------------------------
# Steps


def crop_shells(images: jax.Array, n: int) -> jax.Array:
    """``images`` ``(..., h, w)`` without ``n`` pixels on each side: ``(..., h - 2n, w - 2n)``."""
    return images if n == 0 else images[..., n:-n, n:-n]


def make_inputs_and_targets(batch: jax.Array, hpars: dict, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Low-resolution inputs ``(B, 3, h / sr, w / sr)`` and targets ``(B, 3, h - 2 sr oc,
    w - 2 sr oc)`` from full images ``(B, 3, H, W)``; random crops with ``key``, else center crops.

    The targets lose the ``sr * oc`` pixels per side that a model with output crop ``oc``
    does not predict, so the loss covers exactly the predicted region.
    """
    _, height, width = hpars["image_shape"]
    sr = hpars["sr_rate"]
    inputs, targets = data_utils.preprocess_batch_for_superresolution_task(
        batch, height, width, sr, random_crop=key is not None, key=key
    )
    return inputs, crop_shells(targets, sr * hpars["model_hpars"]["output_crop"])


def make_train_step(hpars: dict, optimizer: optax.GradientTransformation) -> Callable:
    """A jitted ``step(model, state, opt_state, batch, key) -> (model, state, opt_state, key,
    loss, learning_rate)`` on a batch of full images ``(B, 3, H, W)``.

    Keys in the paper's code's order: ``key, k1 = split(key)`` for the random crop, ``key, k2 = split(key)``
    for the model call; the returned ``key`` is the running key. ``learning_rate`` is the one
    this update used.
    """

    @eqx.filter_jit
    def train_step(model, state, opt_state, batch, key):
        key, crop_key = jax.random.split(key)
        key, model_key = jax.random.split(key)
        inputs, targets = make_inputs_and_targets(batch, hpars, crop_key)

        def loss_fn(model):
            predictions = rvsr.predict(model, state, inputs, model_key)
            return jnp.mean((predictions - targets) ** 2)

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, opt_state = optimizer.update(grads, opt_state, trainable(model))
        model = eqx.apply_updates(model, updates)
        return model, state, opt_state, key, loss, opt_state.hyperparams["learning_rate"]

    return train_step


def make_eval_step(hpars: dict) -> Callable:
    """A jitted ``step(model, state, batch) -> (mse, inputs, targets, predictions)`` on center
    crops of a batch of full images ``(B, 3, H, W)``."""

    @eqx.filter_jit
    def eval_step(model, state, batch):
        inputs, targets = make_inputs_and_targets(batch, hpars)
        predictions = rvsr.predict(model, state, inputs)
        return jnp.mean((predictions - targets) ** 2), inputs, targets, predictions

    return eval_step


def evaluate_test_loss(
    model: eqx.Module,
    state: eqx.nn.State,
    test_data: np.ndarray,
    hpars: dict,
    eval_step: Callable | None = None,
    sample_indices: Iterable[int] = (),
) -> tuple[float, dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Test loss: the mean of per-batch MSEs over the first ``floor(N / batch_size)`` full
    batches of ``test_data`` ``(N, 3, H, W)``, center crops, in order from image 0.

    Also returns ``{index: (input, target, prediction)}`` for those ``sample_indices`` that are
    in the evaluated batches (arrays ``(3, h, w)``).
    """
    eval_step = make_eval_step(hpars) if eval_step is None else eval_step
    batch_size = hpars["batch_size"]
    num_batches = len(test_data) // batch_size
    if num_batches == 0:
        raise DataError(f"test data has {len(test_data)} images, fewer than one batch of {batch_size}")
    wanted = set(sample_indices)
    losses, samples = [], {}
    for b in range(num_batches):
        start = b * batch_size
        loss, inputs, targets, predictions = eval_step(model, state, np.asarray(test_data[start : start + batch_size]))
        losses.append(loss)
        for i in sorted(wanted & set(range(start, start + batch_size))):
            samples[i] = tuple(np.asarray(a[i - start]) for a in (inputs, targets, predictions))
    return float(np.mean(np.asarray(jax.device_get(losses), dtype=np.float64))), samples


# Hyperparameters that determine the compiled step functions.
STEP_HPARS = ("sr_rate", "model_hpars", "image_shape", "optimizer", "learning_rate_schedule")


def compiled_steps(hpars: dict) -> tuple[Callable, Callable]:
    """``(train_step, eval_step)`` for ``hpars``, shared by all runs in this process with the
    same model, image shape and optimizer, so that repeated runs (resumed runs, tests,
    evaluations) compile once."""
    return _compiled_steps(json.dumps({name: hpars[name] for name in STEP_HPARS}, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _compiled_steps(step_hpars_json: str) -> tuple[Callable, Callable]:
    step_hpars = json.loads(step_hpars_json)
    return make_train_step(step_hpars, make_optimizer(step_hpars)), make_eval_step(step_hpars)


# ----------------------------------------------------------------------------------------------
# Run folder, histories, images


class CsvHistory:
    """An append-only CSV history file whose length a checkpoint records."""

    def __init__(self, path: Path, header: str, enabled: bool):
        self.path, self.header, self.enabled = path, header, enabled
        self.rows = 0

    def start(self, keep_rows: int) -> None:
        """Create the file, or cut it back to its first ``keep_rows`` rows (on resume: rows
        after the checkpoint will be produced again)."""
        self.rows = keep_rows
        if not self.enabled:
            return
        lines = []
        if keep_rows:
            lines = self.path.read_text().splitlines()[1:] if self.path.exists() else []
            if len(lines) < keep_rows:
                raise CheckpointError(f"{self.path} has {len(lines)} rows, the checkpoint expects {keep_rows}")
        atomic_write_text(self.path, "".join(line + "\n" for line in [self.header, *lines[:keep_rows]]))

    def append(self, rows: list[tuple]) -> None:
        self.rows += len(rows)
        if self.enabled and rows:
            with open(self.path, "a") as f:
                f.writelines(",".join(repr(v) for v in row) + "\n" for row in rows)

    def sync(self) -> None:
        """Flush the file to disk: a checkpoint that counts its rows must not outlive them."""
        if self.enabled and self.path.exists():
            fsync_file(self.path)


def _clear_run_folder(folder: Path) -> None:
    """Remove what a previous run wrote into ``folder`` (and nothing else)."""
    for name in (*run_layout.RUN_HISTORY_FILENAMES.values(),):
        (folder / name).unlink(missing_ok=True)
    run_layout.clear_outcome(folder)
    for path in folder.iterdir():
        if path.is_dir() and (
            run_layout.is_checkpoint_folder_name(path.name)
            or run_layout.is_temporary_checkpoint_name(path.name)
            or path.name == run_layout.TEST_IMAGES_FOLDER
        ):
            shutil.rmtree(path)


def _srgb_image(x: np.ndarray) -> np.ndarray:
    """An image ``(3, h, w)`` in the paper's units as sRGB ``(h, w, 3)`` uint8."""
    return data_utils.np_linear_to_srgb(np.moveaxis(np.asarray(x, dtype=np.float64), 0, -1) * 0.5 + 0.5)


def save_sample_images(folder: Path, step: int, samples: dict[int, tuple[np.ndarray, ...]]) -> None:
    """PNGs in ``{folder}/test_images/``: low-res input and target once per test image, the
    prediction per step (names: ``run_layout.sample_image_path``)."""
    from PIL import Image  # only needed when images are written

    (folder / TEST_IMAGES_FOLDER).mkdir(exist_ok=True)
    for index, (inputs, targets, prediction) in samples.items():
        for name, image in (("input", inputs), ("target", targets)):
            path = run_layout.sample_image_path(folder, index, name)
            if not path.exists():
                Image.fromarray(_srgb_image(image)).save(path)
        Image.fromarray(_srgb_image(prediction)).save(run_layout.sample_image_path(folder, index, "prediction", step))


# ----------------------------------------------------------------------------------------------
# Training


def require_data_file(path: str | None, name: str) -> None:
    """``DataError`` unless the ``name`` ("train", "test", ...) data file exists."""
    if not path or not os.path.isfile(path):
        raise DataError(
            f"{name} data file not found: {path} (make it with make_dataset_npys.py or set {name}_data_path=...)"
        )


def load_image_data(
    path: str, name: str, shape: tuple[int, int, int], sr_rate: int, min_images: int, *, check_finite: bool = False
) -> np.ndarray:
    """The images ``(N, 3, H, W)`` float32 of a .npy file (memory-mapped); ``DataError`` in
    one line if missing, of another shape or dtype, or (``check_finite``) holding a NaN or
    infinity, naming the first such image: caught here, before a training run spends hours
    on it, rather than as a NaN loss later. The finite check reads the whole file once per
    version of it (``data_utils.first_non_finite_image_of_file``), not at every resume."""
    require_data_file(path, name)
    try:
        # Memory-mapped: the full training set is 28 GB; the OS caches what is read.
        data = data_utils.load_data_array(path, name, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"{name} data file {path} is not a readable .npy array ({one_line(e)})") from e
    channels, height, width = shape
    crop = (height + 2 * sr_rate, width + 2 * sr_rate)
    if data.ndim != 4 or data.shape[1] != channels or data.shape[2] < crop[0] or data.shape[3] < crop[1]:
        expected = f"(N, {channels}, >={crop[0]}, >={crop[1]})"
        raise DataError(f"{name} data {path} has shape {data.shape}; expected {expected}")
    if data.dtype != np.float32:
        raise DataError(f"{name} data {path} has dtype {data.dtype}; expected float32 (as make_dataset_npys.py writes)")
    if len(data) < min_images:
        raise DataError(f"{name} data {path} has {len(data)} images, fewer than the batch size {min_images}")
    if check_finite:
        bad = data_utils.first_non_finite_image_of_file(path, data)
        if bad is not None:
            raise DataError(
                f"{name} data {path}: image {bad} holds NaN or infinite values; remake the file with make_dataset_npys.py"
            )
    return data


def _resolve_batch_size(hpars: dict) -> dict:
    """``batch_size="max"``: the largest batch size found by the timing evaluations, read from
    ``{results_folder}/timing.json``."""
    if hpars["batch_size"] != "max":
        return hpars
    inference = bool(hpars.get("inference_steps"))
    key = "largest_inference_batch_sizes" if inference else "largest_train_batch_sizes"
    timing_path = run_layout.timing_path(hpars.get("results_folder") or paths_config.default_paths()["results_folder"])
    try:
        with open(timing_path) as f:
            size = json.load(f)[key][hpars["preset"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise JobError(f"batch_size=max: no {key}[{hpars['preset']!r}] in {timing_path} ({e!r})") from e
    return {**hpars, "batch_size": int(size)}


def _prepare_fresh_folder(hpars: dict) -> None:
    """Create the run folder; an existing non-empty one is cleared only when allowed:
    ``protect_existing=False``, or ``resume_checkpoint=-1`` with no checkpoint in it (a run
    killed before its first checkpoint)."""
    folder = Path(hpars["folder"])
    if folder.exists() and any(folder.iterdir()):
        has_checkpoints = bool(checkpoints.list_checkpoints(folder))
        if hpars["protect_existing"] and (hpars["resume_checkpoint"] is None or has_checkpoints):
            raise RunFolderExistsError(
                f"run folder {folder} exists; resume with resume_checkpoint=-1 or overwrite with protect_existing=False"
            )
        _clear_run_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)


def _record_outcome(hpars: dict, kind: str, step: int, message: str) -> None:
    """Write why training stopped into the run folder (best effort: on a full disk this may
    fail too, and must not hide the original error)."""
    if not hpars["save"]:
        return
    try:
        run_layout.write_outcome(hpars["folder"], run_layout.Outcome(kind, step, message))
    except OSError as e:
        print(f"warning: could not record the outcome in {hpars['folder']} ({e})", file=sys.stderr)


def _stop_training(hpars: dict, step: int, message: str) -> None:
    """Raise ``TrainingDivergedError(message)`` after recording it (kind "diverged")."""
    _record_outcome(hpars, "diverged", step, message)
    raise TrainingDivergedError(message)


def _check_losses(hpars: dict, rows: list[tuple[int, float, float]]) -> None:
    for step, loss, _ in rows:
        if math.isnan(loss):
            _stop_training(hpars, step, f"training loss is NaN at step {step}")
        if step > WARMUP_STEPS and loss > MAX_LOSS_AFTER_WARMUP:
            _stop_training(hpars, step, f"training loss {loss:.4g} exceeds {MAX_LOSS_AFTER_WARMUP:g} at step {step}")


def _sleep_cooldown(hpars: dict) -> None:
    if hpars.get("cooldown"):
        print(f"Cooling down for {hpars['cooldown']} s")
        time.sleep(hpars["cooldown"])


def _start_run(hpars: dict) -> tuple[TrainState, dict[str, CsvHistory]]:
    """The state to continue from (a checkpoint per ``resume_checkpoint``, else step 0) and
    the histories cut back to that state. Everything that can refuse the run is read and
    checked before the run folder is touched."""
    if hpars["save"] and hpars["folder"] and hpars["resume_checkpoint"] is not None:
        checkpoints.restore_replaced_checkpoints(Path(hpars["folder"]))  # a repair: the same data, back in place
    resume = checkpoints.select_resume_checkpoint(hpars)
    if resume is None:
        ts, history_rows = init_train_state(hpars, make_optimizer(hpars)), {"train": 0, "test": 0}
        if hpars["save"]:
            _prepare_fresh_folder(hpars)
    else:
        ts, history_rows = resume.train_state, resume.info["history_rows"]
        if hpars["save"]:
            checkpoints.remove_partial_checkpoints(Path(hpars["folder"]))
            run_layout.clear_outcome(hpars["folder"])  # this session records its own
        print(f"Resuming from {resume.path}")
    folder, save = Path(hpars["folder"] or "."), hpars["save"]
    histories = {
        kind: CsvHistory(run_layout.history_csv_path(folder, kind), header, save)
        for kind, header in (("train", "step,loss,learning_rate"), ("test", "step,test_loss"))
    }
    for name, history in histories.items():
        history.start(history_rows[name])
    return ts, histories


@contextmanager
def _stop_signals_caught() -> Iterator[list[int]]:
    """While active, SIGUSR1 and SIGTERM are appended to the yielded list instead of killing
    the process, so that training can stop cleanly between steps."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be set from the main thread
        return
    signums = [signal.SIGTERM] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in signums}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _merged(config: dict, options: dict | None) -> dict:
    """One dict of the experiment config and the run options (``presets.split_hpars``'s
    inverse); a single full dict passes through."""
    if options is None:
        return config
    overlap = set(config) & set(options)
    if overlap:
        raise JobError(f"bad hyperparameters: {sorted(overlap)} given both as config and as run options")
    return {**config, **options}


def train(config: dict, options: dict | None = None) -> TrainState:
    """Train the experiment ``config`` with run ``options`` (``presets.split_hpars``; or one
    full dict from ``presets.get_preset_hpars`` plus overrides as ``config``) and return the
    final state. With ``save`` the run folder gets histories, sample images and checkpoints;
    with ``timing_filename`` the time of every step is written there."""
    from tqdm import tqdm

    hpars = _resolve_batch_size(_merged(config, options))
    validate_hpars(hpars)
    shape, sr, batch_size = tuple(hpars["image_shape"]), hpars["sr_rate"], hpars["batch_size"]
    save, folder = hpars["save"], Path(hpars["folder"]) if hpars["folder"] else None
    # Without saving there is nowhere to put a test loss, so it is not computed (fast dry
    # runs and timing).
    # The data is checked before the run folder is touched. Runs that save results also get
    # every value checked for NaN / infinity (a minute or more for the full 28 GB; once per
    # version of each file, recorded beside it, so resumes and requeues skip it); dry runs
    # and timing runs (save=False) skip that.
    train_data = load_image_data(hpars["train_data_path"], "train", shape, sr, batch_size, check_finite=save)
    test_path = hpars["test_data_path"]
    test_data = load_image_data(test_path, "test", shape, sr, batch_size, check_finite=True) if save else None
    ts, histories = _start_run(hpars)
    batcher = data_utils.ImageBatcher(batch_size, hpars["shuffle_train_data"], rng=ts.rng)
    if not hpars["shuffle_train_data"]:
        batcher.position = (ts.step * batch_size) % len(train_data)
    train_step, eval_step = compiled_steps(hpars)

    last_step = hpars["train_steps"]
    checkpoint_steps = {s for s in hpars["checkpoint_steps"] if 1 <= s <= last_step} | ({last_step} - {0})
    interval = hpars["test_image_save_interval"]
    timing = hpars["timing_filename"] is not None
    step_times: list[float] = []
    pending: list[tuple[int, jax.Array, jax.Array]] = []
    last_test_loss = math.nan

    def flush() -> None:
        """Fetch pending losses, check them, log them."""
        rows = [(step, float(loss), float(lr)) for step, loss, lr in jax.device_get(pending)]
        pending.clear()
        histories["train"].append(rows)
        if rows:
            progress.set_postfix(loss=f"{rows[-1][1]:.5g}", lr=f"{rows[-1][2]:.3g}", test_loss=f"{last_test_loss:.5g}")
        _check_losses(hpars, rows)

    def test(step: int) -> None:
        nonlocal last_test_loss
        with_images = step in checkpoint_steps or step == 0
        last_test_loss, samples = evaluate_test_loss(
            ts.model, ts.model_state, test_data, hpars, eval_step, SAMPLE_TEST_IMAGES if with_images else ()
        )
        histories["test"].append([(step, last_test_loss)])
        if samples:
            save_sample_images(folder, step, samples)

    _sleep_cooldown(hpars)
    # In a log file (no terminal) redraw the bar once a minute rather than every second.
    progress = tqdm(
        total=last_step,
        initial=ts.step,
        desc=hpars.get("preset") or "train",
        mininterval=1.0 if sys.stderr.isatty() else 60.0,
    )
    try:
        with _stop_signals_caught() as stop_signals:
            if save and ts.step == 0:
                test(0)
            while ts.step < last_step:
                start_time = time.perf_counter()
                step = ts.step + 1
                batch = batcher(train_data)
                ts.model, ts.model_state, ts.opt_state, ts.key, loss, lr = train_step(
                    ts.model, ts.model_state, ts.opt_state, batch, ts.key
                )
                ts.step = step
                pending.append((step, loss, lr))
                if timing:
                    loss.block_until_ready()
                    step_times.append(time.perf_counter() - start_time)
                progress.update()
                stopping = bool(stop_signals)  # checkpoint now, then stop
                is_checkpoint = step in checkpoint_steps
                is_test = is_checkpoint or (interval > 0 and step % interval == 0)
                if is_test or stopping or step % LOG_EVERY_STEPS == 0 or step == last_step:
                    flush()
                if save and is_test:
                    test(step)
                if save and (is_checkpoint or stopping):
                    for history in histories.values():
                        history.sync()
                    checkpoints.save_checkpoint(folder, ts, hpars, {name: h.rows for name, h in histories.items()})
                if stopping:
                    raise TrainingInterrupted(stop_signals[0], step)
    except (TrainingDivergedError, TrainingInterrupted):
        raise
    except Exception as e:
        # Record why the run stopped, for the status and success tables; the error propagates.
        _record_outcome(hpars, "failed", ts.step, f"training failed at step {ts.step}: {one_line(e)}")
        if isinstance(e, OSError):  # a full disk or I/O error writing histories or images
            raise JobError(
                f"training stopped at step {ts.step}: {one_line(e)}; the checkpoints are intact: fix the cause "
                "and rerun with resume_checkpoint=-1"
            ) from e
        raise
    finally:
        progress.close()
    if timing:
        write_timing(hpars, "train", step_times)
    return ts


# ----------------------------------------------------------------------------------------------
# Timing


def write_timing(hpars: dict, mode: str, step_times: list[float]) -> None:
    """Write per-step times (seconds, first step included) to ``hpars["timing_filename"]``."""
    atomic_write_json(
        hpars["timing_filename"],
        {
            "mode": mode,
            "preset": hpars.get("preset"),
            "seed": hpars["seed"],
            "batch_size": hpars["batch_size"],
            "image_shape": list(hpars["image_shape"]),
            "output_crop": hpars["model_hpars"]["output_crop"],
            "step_times": step_times,
        },
    )


def time_inference(config: dict, options: dict | None = None) -> list[float]:
    """Time ``inference_steps`` forward passes of the inference-form model on batches
    ``(batch_size, 3, h / sr, w / sr)``: uniform random inputs in [-1, 1], or low-res center
    crops of ``inference_data_path`` when set. Only the model call is timed. Returns the
    times (seconds) and writes them to ``timing_filename`` when set."""
    hpars = _resolve_batch_size(_merged(config, options))
    validate_hpars(hpars)
    _, height, width = hpars["image_shape"]
    sr, batch_size, num_steps = hpars["sr_rate"], hpars["batch_size"], hpars["inference_steps"]
    input_shape = (batch_size, 3, height // sr, width // sr)
    key = jax.random.PRNGKey(hpars["seed"])
    key, model_key = jax.random.split(key)
    model, state = build_model(hpars, model_key, inference=True)
    forward = eqx.filter_jit(rvsr.predict)

    if hpars.get("inference_data_path"):
        data = load_image_data(hpars["inference_data_path"], "inference", tuple(hpars["image_shape"]), sr, batch_size)
        batcher = data_utils.ImageBatcher(batch_size, False)
        to_inputs = eqx.filter_jit(lambda batch: make_inputs_and_targets(batch, hpars)[0])

        def next_inputs(i: int) -> jax.Array:
            return to_inputs(batcher(data))
    else:
        uniform = jax.jit(lambda k: jax.random.uniform(k, input_shape, minval=-1.0, maxval=1.0))

        def next_inputs(i: int) -> jax.Array:
            return uniform(jax.random.fold_in(key, i))

    _sleep_cooldown(hpars)
    step_times = []
    for i in range(num_steps):
        inputs = next_inputs(i).block_until_ready()
        start_time = time.perf_counter()
        forward(model, state, inputs).block_until_ready()
        step_times.append(time.perf_counter() - start_time)
    if hpars["timing_filename"] is not None:
        write_timing(hpars, "inference", step_times)
    return step_times


def run_job(config: dict, options: dict | None = None) -> TrainState | list[float]:
    """What ``python job.py`` does: ``time_inference`` when ``inference_steps`` is set, else
    ``train`` (arguments as ``train``)."""
    hpars = _merged(config, options)
    if hpars.get("inference_steps"):
        return time_inference(hpars)
    return train(hpars)
