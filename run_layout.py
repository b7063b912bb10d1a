"""Every name and path of the run and results layout, in one module.

Training runs (``job.py``, ``slurm_train.py``)::

    runs/{preset}_s{seed}/                         one run folder (or its preset's older
                                                   compat name, e.g. runs/zero_el50_s3)

Published models (``export_trained_models.py``; the input of every evaluation)::

    results/trained_models/{preset}_s{seed}.eqx                 weights (see ``rvsr.py``)
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
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from io_utils import atomic_path

_MODEL_STEM = re.compile(r"^(?P<preset>.+)_s(?P<seed>\d+)$")

WEIGHTS_SUFFIX = ".eqx"
LOSS_HISTORY_KINDS = ("train", "test")
OUTPUT_CROP_SUMSQS_FOLDER = "output_crop_sumsqs"
TIMING_FILENAME = "timing.json"
LAYER_NMSE_FILENAME = "layer_nmse.json"


class LayoutError(ValueError):
    """A folder or file of the layout is missing or unreadable (reported as one line)."""


def _presets():
    # presets builds run folders with model_stem, so it imports this module; importing it
    # back here only when a function needs the preset table avoids the import cycle.
    import presets

    return presets


# ----------------------------------------------------------------------------------------------
# Model stems


def model_stem(preset: str, seed: int) -> str:
    """``{preset}_s{seed}``: the name of a run folder, a published model and its results."""
    return f"{preset}_s{seed}"


def parse_model_stem(stem: str) -> tuple[str, int] | None:
    """``(preset, seed)`` of a ``{preset}_s{seed}`` stem (the preset not checked), or None."""
    match = _MODEL_STEM.match(stem)
    return None if match is None else (match["preset"], int(match["seed"]))


def known_model_stem(stem: str) -> tuple[str, int] | None:
    """``(preset, seed)`` of a stem whose preset is one of the paper's, or None."""
    parsed = parse_model_stem(stem)
    return parsed if parsed is not None and parsed[0] in _presets().presets else None


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

    def history_path(self, kind: str) -> Path:
        """``kind`` "train" or "test": ``{name}_{kind}_loss.parquet``."""
        return loss_history_path(self.folder, self.preset, self.seed, kind)


def loss_history_path(folder: str | os.PathLike, preset: str, seed: int, kind: str) -> Path:
    """``{folder}/{preset}_s{seed}_{kind}_loss.parquet`` (``kind`` "train" or "test")."""
    if kind not in LOSS_HISTORY_KINDS:
        raise ValueError(f"loss history kind must be one of {LOSS_HISTORY_KINDS}, got {kind!r}")
    return Path(folder) / f"{model_stem(preset, seed)}_{kind}_loss.parquet"


def find_loss_histories(folder: str | os.PathLike, kind: str) -> dict[tuple[str, int], Path]:
    """``{(preset, seed): path}`` of the ``kind`` loss histories of known presets in ``folder``."""
    suffix = f"_{kind}_loss.parquet"
    found = {}
    for path in Path(folder).glob(f"*{suffix}"):
        parsed = known_model_stem(path.name[: -len(suffix)])
        if parsed is not None:
            found[parsed] = path
    return found


def find_trained_models(
    folder: str | os.PathLike, only_presets: Iterable[str] | None = None, only_seeds: Iterable[int] | None = None
) -> list[TrainedModel]:
    """The models ``{preset}_s{seed}.eqx`` in ``folder``, in preset-table order then by seed,
    optionally only those of ``only_presets`` / ``only_seeds``. Files of unknown presets are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LayoutError(f"no trained models folder {folder} (export models with export_trained_models.py)")
    wanted_presets = None if only_presets is None else set(only_presets)
    wanted_seeds = None if only_seeds is None else set(only_seeds)
    found = []
    for path in folder.glob(f"*{WEIGHTS_SUFFIX}"):
        parsed = known_model_stem(path.stem)
        if parsed is None:
            continue
        preset, seed = parsed
        if (wanted_presets is None or preset in wanted_presets) and (wanted_seeds is None or seed in wanted_seeds):
            found.append(TrainedModel(preset, seed, folder))
    return sorted(found, key=lambda m: _presets().table_order(m.preset, m.seed))


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


def find_output_crop_sumsqs(results_folder: str | os.PathLike) -> dict[tuple[str, int], Path]:
    """``{(preset, seed): path}`` of the stored eval_mse results of known presets."""
    found = {}
    for path in output_crop_sumsqs_folder(results_folder).glob("*.npy"):
        parsed = known_model_stem(path.stem)
        if parsed is not None:
            found[parsed] = path
    return found


def timing_path(results_folder: str | os.PathLike) -> Path:
    """``{results}/timing.json`` (eval_train_time.py, eval_inference_time.py; batch_size=max)."""
    return Path(results_folder) / TIMING_FILENAME


def layer_nmse_path(results_folder: str | os.PathLike) -> Path:
    """``{results}/layer_nmse.json`` (eval_layer_nmse.py)."""
    return Path(results_folder) / LAYER_NMSE_FILENAME
