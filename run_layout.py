"""Every name and path of the run and results layout, in one module.

Training runs (``job.py``, ``slurm_train.py``)::

    runs/{preset}_s{seed}/                         one run folder (or its preset's older
                                                   compat name, e.g. runs/zero_el50_s3)
        train_history.csv, test_history.csv        step,loss,learning_rate / step,test_loss
        {step:08d}/                                one checkpoint (see ``checkpoints``)
        .partial-{step:08d}-{hex}/                 a checkpoint being written (never read)
        exception.json                             why training stopped: {"kind", "step", "message"}
        exception.txt                              the same message as one line of text
        test_images/                               sample PNGs
    runs/slurm_jobs.json, runs/slurm_logs/         ``slurm_train.py`` bookkeeping

Published models (``export_trained_models.py``; the input of every evaluation)::

    results/trained_models/{preset}_s{seed}.eqx                 weights (see ``rvsr.py``)
    results/trained_models/{preset}_s{seed}.eqx.json            {"preset", "seed"} of the weights
    results/trained_models/{preset}_s{seed}_train_loss.parquet  step int32, train_loss float16
    results/trained_models/{preset}_s{seed}_test_loss.parquet   step int32, test_loss float16

Evaluation results (nothing pickled; written to a temporary name and renamed into place)::

    results/output_crop_sumsqs/{preset}_s{seed}.npy   float64 (11, N_test)      eval_mse.py
    results/timing.json                               {key: {preset: ...}}      eval_*_time.py
    results/layer_nmse.json                           {train_preset: {padding: {seed: [11]}}}

``{preset}_s{seed}`` is the *model stem*: built by :func:`model_stem` and parsed by
:func:`parse_model_stem` only. Folder roots (``runs``, ``results``, ...) are the caller's:
command-line scripts take them from ``paths_config`` or their options.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cli import UserError
from io_utils import atomic_path, atomic_write_json, atomic_write_text

_MODEL_STEM = re.compile(r"^(?P<preset>.+)_s(?P<seed>\d+)$")
_CHECKPOINT_FOLDER = re.compile(r"^\d{8}$")

WEIGHTS_SUFFIX = ".eqx"
MODEL_METADATA_SUFFIX = ".json"  # appended to the weights file's name
LOSS_HISTORY_KINDS = ("train", "test")
OUTPUT_CROP_SUMSQS_FOLDER = "output_crop_sumsqs"
TIMING_FILENAME = "timing.json"
LAYER_NMSE_FILENAME = "layer_nmse.json"

TRAIN_HISTORY_FILENAME = "train_history.csv"
TEST_HISTORY_FILENAME = "test_history.csv"
RUN_HISTORY_FILENAMES = {"train": TRAIN_HISTORY_FILENAME, "test": TEST_HISTORY_FILENAME}
TEST_IMAGES_FOLDER = "test_images"
SAMPLE_TEST_IMAGES = (2, 7, 24, 36, 38, 52, 53)
"""The test images whose input, target and predictions a run saves in ``test_images/``."""
OUTCOME_FILENAME = "exception.json"
EXCEPTION_FILENAME = "exception.txt"
PARTIAL_CHECKPOINT_PREFIX = ".partial-"
REPLACED_CHECKPOINT_PREFIX = ".replaced-"
SLURM_JOB_MAP_FILENAME = "slurm_jobs.json"
SLURM_LOGS_FOLDER = "slurm_logs"


class LayoutError(UserError, ValueError):
    """A folder or file of the layout is missing or unreadable (a ``cli.UserError``: one line,
    exit status 1)."""


# ----------------------------------------------------------------------------------------------
# Model stems


def model_stem(preset: str, seed: int) -> str:
    """``{preset}_s{seed}``: the name of a run folder, a published model and its results."""
    return f"{preset}_s{seed}"


def parse_model_stem(stem: str) -> tuple[str, int] | None:
    """``(preset, seed)`` of a ``{preset}_s{seed}`` stem (the preset not checked), or None."""
    match = _MODEL_STEM.match(stem)
    return None if match is None else (match["preset"], int(match["seed"]))


# ----------------------------------------------------------------------------------------------
# Run folders


def run_folder(runs_folder: str | os.PathLike, preset: str, seed: int) -> Path:
    """``{runs_folder}/{preset}_s{seed}``: where a new run of ``preset`` and ``seed`` trains."""
    return Path(runs_folder) / model_stem(preset, seed)


def history_csv_path(folder: str | os.PathLike, kind: str) -> Path:
    """``{folder}/train_history.csv`` or ``{folder}/test_history.csv`` (``kind`` "train"/"test")."""
    if kind not in RUN_HISTORY_FILENAMES:
        raise ValueError(f"history kind must be one of {tuple(RUN_HISTORY_FILENAMES)}, got {kind!r}")
    return Path(folder) / RUN_HISTORY_FILENAMES[kind]


def sample_image_path(folder: str | os.PathLike, index: int, kind: str, step: int | None = None) -> Path:
    """A sample PNG of test image ``index`` in ``{folder}/test_images/``: the low-res input
    and the target once (``test{index:03d}_{kind}.png``), the prediction per step
    (``{step:08d}_test{index:03d}_prediction.png``)."""
    name = f"test{index:03d}_{kind}.png" if step is None else f"{step:08d}_test{index:03d}_{kind}.png"
    return Path(folder) / TEST_IMAGES_FOLDER / name


def slurm_job_map_path(runs_folder: str | os.PathLike) -> Path:
    return Path(runs_folder) / SLURM_JOB_MAP_FILENAME


def slurm_logs_folder(runs_folder: str | os.PathLike) -> Path:
    return Path(runs_folder) / SLURM_LOGS_FOLDER


# ----------------------------------------------------------------------------------------------
# Checkpoint folders


def checkpoint_folder(folder: str | os.PathLike, step: int) -> Path:
    """``{folder}/{step:08d}``: the checkpoint of ``step`` in run folder ``folder``."""
    return Path(folder) / f"{step:08d}"


def is_checkpoint_folder_name(name: str) -> bool:
    return bool(_CHECKPOINT_FOLDER.match(name))


def partial_checkpoint_folder(folder: str | os.PathLike, step: int, token: str) -> Path:
    """A temporary folder a checkpoint is written into before it is renamed into place."""
    return Path(folder) / f"{PARTIAL_CHECKPOINT_PREFIX}{step:08d}-{token}"


def replaced_checkpoint_folder(folder: str | os.PathLike, step: int, token: str) -> Path:
    """Where an existing checkpoint of the same step waits while its new copy moves in."""
    return Path(folder) / f"{REPLACED_CHECKPOINT_PREFIX}{step:08d}-{token}"


def is_temporary_checkpoint_name(name: str) -> bool:
    return name.startswith((PARTIAL_CHECKPOINT_PREFIX, REPLACED_CHECKPOINT_PREFIX))


# ----------------------------------------------------------------------------------------------
# A run's outcome


OUTCOME_KINDS = ("diverged", "failed")
"""``diverged``: the loss became NaN or too large (a result of the experiment, shown in the
success table); ``failed``: anything else stopped training (an error to look at and rerun)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Why training stopped early, as the trainer recorded it in ``{folder}/exception.json``."""

    kind: str
    step: int
    message: str


def outcome_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / OUTCOME_FILENAME


def write_outcome(folder: str | os.PathLike, outcome: Outcome) -> None:
    """Record ``outcome`` as ``exception.json`` and its message as ``exception.txt``."""
    if outcome.kind not in OUTCOME_KINDS:
        raise ValueError(f"outcome kind must be one of {OUTCOME_KINDS}, got {outcome.kind!r}")
    atomic_write_json(outcome_path(folder), dataclasses.asdict(outcome))
    atomic_write_text(Path(folder) / EXCEPTION_FILENAME, outcome.message + "\n")


def clear_outcome(folder: str | os.PathLike) -> None:
    """Forget an earlier outcome (a run that starts again writes its own)."""
    for path in (outcome_path(folder), Path(folder) / EXCEPTION_FILENAME):
        path.unlink(missing_ok=True)


def read_outcome(folder: str | os.PathLike) -> Outcome | None:
    """The recorded outcome of run folder ``folder``: None when training has not stopped
    early. A run folder from before ``exception.json`` existed with only ``exception.txt``
    counts as ``failed`` with that message (its wording is not parsed)."""
    path = outcome_path(folder)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return Outcome(str(data["kind"]), int(data["step"]), str(data["message"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            return Outcome("failed", -1, f"unreadable {path} ({e})")
    text_path = Path(folder) / EXCEPTION_FILENAME
    if text_path.is_file():
        lines = text_path.read_text(errors="replace").strip().splitlines()
        return Outcome("failed", -1, lines[0].strip() if lines else "")
    return None


# ----------------------------------------------------------------------------------------------
# Published models


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """One published model: ``{folder}/{preset}_s{seed}.eqx`` and its loss histories."""

    preset: str
    seed: int
    folder: Path

    @property
    def name(self) -> str:
        return model_stem(self.preset, self.seed)

    @property
    def weights_path(self) -> Path:
        return self.folder / f"{self.name}{WEIGHTS_SUFFIX}"

    @property
    def metadata_path(self) -> Path:
        return model_metadata_path(self.weights_path)

    def history_path(self, kind: str) -> Path:
        """``kind`` "train" or "test": ``{name}_{kind}_loss.parquet``."""
        return loss_history_path(self.folder, self.preset, self.seed, kind)


def model_metadata_path(weights_path: str | os.PathLike) -> Path:
    """``{weights file name}.json``, e.g. ``lp2x3_s0.eqx.json``: what the weights are, beside
    them, since the weights format holds arrays only and a file name can be changed."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.name + MODEL_METADATA_SUFFIX)


def write_model_metadata(weights_path: str | os.PathLike, preset: str, seed: int) -> None:
    """Record the preset and seed of the weights ``weights_path`` beside them, atomically."""
    atomic_write_json(model_metadata_path(weights_path), {"preset": preset, "seed": seed})


def read_model_metadata(weights_path: str | os.PathLike) -> dict | None:
    """``{"preset", "seed"}`` recorded beside the weights ``weights_path``, or None where
    nothing is (e.g. the paper's published files); :class:`LayoutError` when unreadable."""
    path = model_metadata_path(weights_path)
    if not path.is_file():
        return None
    fix = "remove it or export the model again"
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LayoutError(f"{path}: unreadable model metadata ({e}); {fix}") from None
    if not (isinstance(metadata, dict) and isinstance(metadata.get("preset"), str)):
        raise LayoutError(f"{path}: model metadata without a preset; {fix}")
    return metadata


def loss_history_path(folder: str | os.PathLike, preset: str, seed: int, kind: str) -> Path:
    """``{folder}/{preset}_s{seed}_{kind}_loss.parquet`` (``kind`` "train" or "test")."""
    if kind not in LOSS_HISTORY_KINDS:
        raise ValueError(f"loss history kind must be one of {LOSS_HISTORY_KINDS}, got {kind!r}")
    return Path(folder) / f"{model_stem(preset, seed)}_{kind}_loss.parquet"


def write_loss_history(path: str | os.PathLike, kind: str, steps: Sequence[int], losses: Sequence[float]) -> None:
    """Write a published loss history: columns ``step`` int32 and ``{kind}_loss`` float16
    (``kind`` "train" or "test"), brotli-compressed Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "step": pa.array(np.asarray(steps, dtype=np.int32)),
            f"{kind}_loss": pa.array(np.asarray(losses, dtype=np.float16)),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="brotli")


def read_loss_history(path: str | os.PathLike, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps int32 (n,), losses float16 (n,))`` of a published loss history file."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        return table.column("step").to_numpy(), table.column(f"{kind}_loss").to_numpy()
    except (OSError, KeyError, ValueError) as e:  # pyarrow's errors derive from these
        raise LayoutError(f"{path}: not a {kind} loss history ({e})") from e


# ----------------------------------------------------------------------------------------------
# Evaluation results


def output_crop_sumsqs_folder(results_folder: str | os.PathLike) -> Path:
    return Path(results_folder) / OUTPUT_CROP_SUMSQS_FOLDER


def output_crop_sumsqs_path(results_folder: str | os.PathLike, preset: str, seed: int) -> Path:
    """``{results}/output_crop_sumsqs/{preset}_s{seed}.npy`` (eval_mse.py)."""
    return output_crop_sumsqs_folder(results_folder) / f"{model_stem(preset, seed)}.npy"


def output_crop_sumsqs_metadata_path(results_folder: str | os.PathLike, preset: str, seed: int) -> Path:
    """``{results}/output_crop_sumsqs/{preset}_s{seed}.json``: the geometry beside the array."""
    return output_crop_sumsqs_path(results_folder, preset, seed).with_suffix(".json")


def timing_path(results_folder: str | os.PathLike) -> Path:
    """``{results}/timing.json`` (eval_train_time.py, eval_inference_time.py; batch_size=max)."""
    return Path(results_folder) / TIMING_FILENAME


def layer_nmse_path(results_folder: str | os.PathLike) -> Path:
    """``{results}/layer_nmse.json`` (eval_layer_nmse.py)."""
    return Path(results_folder) / LAYER_NMSE_FILENAME
