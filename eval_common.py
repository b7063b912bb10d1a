"""What the evaluation scripts share (SPEC 7, 8): published model files, test windows, shell
masks, the results store, the loop over units of work, and the timing search.

Published layout (the input of every evaluation; no training run folders are needed)::

    results/trained_models/{preset}_s{seed}.eqx                 weights, SPEC 3 format
    results/trained_models/{preset}_s{seed}_train_loss.parquet  step int32, train_loss float16
    results/trained_models/{preset}_s{seed}_test_loss.parquet   step int32, test_loss float16

Results (nothing pickled; every file written to a temporary name and renamed into place)::

    results/output_crop_sumsqs/{preset}_s{seed}.npy   float64 (11, N_test)      eval_mse.py
    results/timing.json                               {key: {preset: ...}}      eval_*_time.py
        keys largest_{train,inference}_batch_sizes (int), {train,inference}_step_times
        (list of s, first step included), {train,inference}_target_sizes (T, an addition)
    results/layer_nmse.json                           {train_preset: {padding: {seed: [11]}}}

Evaluation geometry: every test image ``(3, H, W)`` gives four windows of ``T + 2 sr`` pixels
at its corners (200x200 of 512x512 for the paper's ``T = 192``, ``sr = 4``); a window gives a
low-resolution input ``(3, T / sr, T / sr)`` and a target ``(3, T, T)``, as in training.
Mask ``k`` (0..10) is the target region ``[sr k, T - sr k)`` in both axes: the pixels a
model with output crop ``k`` predicts.

A unit of work (one model for eval_mse, one model for eval_layer_nmse, one batch-size search
or one timed run for the timing scripts) is stored as soon as it is done; a rerun skips
stored units, so an interruption loses at most the unit in progress.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import data_utils
import paths_config
import presets
import rvsr
import train_utils
from io_utils import atomic_path, atomic_write_json
from presets import table_order
from run_layout import (
    LAYER_NMSE_FILENAME,
    OUTPUT_CROP_SUMSQS_FOLDER,
    TIMING_FILENAME,
    LayoutError,
    TrainedModel,
    find_trained_models,
    model_stem,
    output_crop_sumsqs_path,
    parse_model_stem,
    read_loss_history,
    write_loss_history,
)
from padding import make_padding_layer

NUM_MASKS = rvsr.MAX_OUTPUT_CROP + 1  # masks k = 0..10, one per output crop
NUM_CORNERS = 4
DEFAULT_TARGET_SIZE = 192
LAYER_NMSE_PRESETS = ("zero_oc5", "lp2x3_oc5")
LAYER_NMSE_PADDINGS = ("zero", "repl", "lp2x3", "extr3")
NUM_FEATURE_MAPS = 11  # input, head, 7 body blocks, body output, model output
JOB_SCRIPT = Path(__file__).resolve().parent / "job.py"
JOB_EXIT_OUT_OF_MEMORY = 3
PROBE_STEPS = 5  # steps of a batch-size probe; only whether it runs matters



class EvalError(Exception):
    """An expected failure that a script reports as one line (missing data, bad file, ...)."""


# ----------------------------------------------------------------------------------------------
# Command lines


def run_script(prog: str, body: Callable[[], None]) -> int:
    """Run a script's ``body``; an ``EvalError`` becomes one line on stderr and exit status 1."""
    try:
        body()
    except (EvalError, LayoutError) as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


def preset_name(text: str) -> str:
    """argparse type: a known preset."""
    if text not in presets.presets:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; known: {', '.join(presets.presets)}")
    return text


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def add_model_eval_arguments(parser: argparse.ArgumentParser, default_presets: Sequence[str] | None = None) -> None:
    """The options of the evaluations that run trained models on the test set."""
    paths = paths_config.get_paths()
    parser.add_argument("--models-folder", default=paths["trained_models_folder"],
                        help="published / exported models (default: %(default)s)")
    parser.add_argument("--results-folder", default=paths["results_folder"], help="default: %(default)s")
    parser.add_argument("--test-data", default=paths_config.test_data_path(paths),
                        help="test images (N, 3, H, W) .npy (default: %(default)s)")
    parser.add_argument("--presets", nargs="+", type=preset_name, default=default_presets, metavar="PRESET",
                        help="presets to evaluate (default: %s)" % ("all found" if default_presets is None else " ".join(default_presets)))
    parser.add_argument("--seeds", nargs="+", type=non_negative_int, metavar="SEED", help="seeds (default: all found)")
    parser.add_argument("--num-images", type=positive_int, help="use only the first N test images (smoke runs)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="test images per batch, 4 windows each (default: %(default)s)")
    parser.add_argument("--target-size", type=positive_int,
                        help=f"target window size T (default: {DEFAULT_TARGET_SIZE}, or the largest that fits smaller images)")
    parser.add_argument("--overwrite", action="store_true", help="recompute results that are stored already")


# ----------------------------------------------------------------------------------------------
# Trained models in the published layout


def read_hidden_channels(path: str | os.PathLike) -> int:
    """The hidden channel count of an RVSR weights file (SPEC 3 format).

    The file is a sequence of .npy records; the first is the head convolution's weight
    ``(hidden_channels, 3, 3, 3)``. Reading it lets models of any width (tiny smoke-run models,
    the paper's 16) load without extra metadata.
    """
    try:
        with open(path, "rb") as f:
            first = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise EvalError(f"{path}: not an RVSR weights file ({e})") from e
    if first.ndim != 4 or first.shape[1:] != (3, 3, 3):
        raise EvalError(f"{path}: not an RVSR weights file (first array has shape {first.shape})")
    return int(first.shape[0])


def sr_rate_of(preset: str) -> int:
    """The super-resolution factor of ``preset`` (4 for all of the paper's)."""
    return presets.get_preset_hpars(preset)["sr_rate"]


def load_trained_model(model: TrainedModel, output_crop: int) -> tuple[rvsr.RVSR, eqx.nn.State]:
    """``(model, state)`` with the published weights, built at ``output_crop`` (any of 0..10,
    whatever the preset was trained with: the file holds every layer's weights)."""
    hpars = presets.get_preset_hpars(model.preset)
    model_hpars = {**hpars["model_hpars"], "hidden_channels": read_hidden_channels(model.weights_path)}
    try:
        return rvsr.load_rvsr(model.weights_path, model_hpars, hpars["sr_rate"], output_crop=output_crop)
    except (OSError, ValueError) as e:
        raise EvalError(f"cannot load {model.weights_path}: {e}") from e


# ----------------------------------------------------------------------------------------------
# Test images, corner windows, masks


def load_test_images(path: str | os.PathLike, num_images: int | None = None) -> np.ndarray:
    """The test images ``(N, 3, H, W)`` (memory-mapped), the first ``num_images`` if given."""
    try:
        images = data_utils.load_data_array(path, "test", mmap_mode="r")
    except (OSError, ValueError) as e:
        raise EvalError(f"cannot read test data {path}: {e} (make it with make_dataset_npys.py or pass --test-data)") from e
    if images.ndim != 4 or images.shape[1] != 3:
        raise EvalError(f"test data {path} has shape {images.shape}; expected (N, 3, H, W)")
    if num_images is not None:
        if num_images > len(images):
            raise EvalError(f"--num-images {num_images}: test data {path} has only {len(images)} images")
        images = images[:num_images]
    return images


def fit_target_size(image_shape: Sequence[int], sr_rate: int, requested: int | None = None) -> int:
    """The target size ``T`` for images ``(..., H, W)``: ``requested`` (a multiple of
    ``sr_rate`` whose windows ``T + 2 sr`` fit), or by default 192 or, for smaller images
    (smoke runs), the largest that fits."""
    side = min(image_shape[-2:])
    largest = (side - 2 * sr_rate) // sr_rate * sr_rate
    if requested is None:
        if largest < sr_rate:
            raise EvalError(f"test images of {side} pixels are too small for windows of at least {3 * sr_rate}")
        return min(DEFAULT_TARGET_SIZE, largest)
    if requested % sr_rate or requested > largest:
        raise EvalError(
            f"target size {requested} must be a multiple of {sr_rate} no larger than {largest} (windows of T + {2 * sr_rate} pixels in {side}-pixel images)"
        )
    return requested


def test_images_and_target_size(args: argparse.Namespace, sr_rate: int) -> tuple[np.ndarray, int]:
    """The test images and target size of the options of :func:`add_model_eval_arguments`;
    prints the geometry."""
    images = load_test_images(args.test_data, args.num_images)
    target_size = fit_target_size(images.shape, sr_rate, args.target_size)
    window = target_size + 2 * sr_rate
    print(f"{len(images)} test images, {window}x{window} windows at the 4 corners, {target_size}x{target_size} targets")
    return images, target_size


def corner_windows(images: np.ndarray, size: int) -> np.ndarray:
    """The four ``size`` x ``size`` corner windows of each image: ``(B, C, H, W) ->
    (B * 4, C, size, size)``, image-major, corners in the order top-left, top-right,
    bottom-left, bottom-right."""
    s = size
    corners = [images[..., :s, :s], images[..., :s, -s:], images[..., -s:, :s], images[..., -s:, -s:]]
    stacked = np.stack(corners, axis=1)
    return stacked.reshape(-1, *stacked.shape[2:])


def mask_bounds(target_size: int, sr_rate: int) -> list[tuple[int, int]]:
    """``[(sr k, T - sr k)]`` for k = 0..10: mask k is that range in both axes (empty when
    ``T <= 2 sr k``)."""
    return [(sr_rate * k, max(sr_rate * k, target_size - sr_rate * k)) for k in range(NUM_MASKS)]


def shell_masks(target_size: int, sr_rate: int) -> np.ndarray:
    """Masks k = 0..10 as a bool array ``(11, T, T)``; mask k is the output of a model with
    output crop k."""
    masks = np.zeros((NUM_MASKS, target_size, target_size), dtype=bool)
    for k, (lo, hi) in enumerate(mask_bounds(target_size, sr_rate)):
        masks[k, lo:hi, lo:hi] = True
    return masks


def mask_areas(target_size: int, sr_rate: int) -> np.ndarray:
    """Pixels per mask, ``(11,)`` float64: ``(T - 2 sr k)^2``, or 0."""
    return np.array([(hi - lo) ** 2 for lo, hi in mask_bounds(target_size, sr_rate)], dtype=np.float64)


def shell_sums(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Sums of ``maps`` ``(B, T, T)`` over each mask of ``masks`` ``(11, T, T)`` -> ``(B, 11)``,
    in float64."""
    return np.einsum("byx,kyx->bk", np.asarray(maps, dtype=np.float64), masks.astype(np.float64))


@eqx.filter_jit
def inputs_and_targets(windows: jax.Array, sr_rate: int) -> tuple[jax.Array, jax.Array]:
    """Windows ``(n, 3, T + 2 sr, T + 2 sr)`` -> inputs ``(n, 3, T / sr, T / sr)`` and targets
    ``(n, 3, T, T)``, the preprocessing of training (the center crop is the whole window)."""
    size = windows.shape[-1] - 2 * sr_rate
    return data_utils.preprocess_batch_for_superresolution_task(windows, size, size, sr_rate, random_crop=False)


predict = eqx.filter_jit(train_utils.predict)
"""``predict(model, state, inputs (n, 3, h, w)) -> (n, 3, sr (h - 2 oc), sr (w - 2 oc))``;
compiled once per model structure (seeds of a preset share it)."""


def map_test_images(
    batch_fn: Callable[[np.ndarray], tuple[np.ndarray, ...]],
    images: np.ndarray,
    window_size: int,
    batch_size: int,
    desc: str,
) -> tuple[np.ndarray, ...]:
    """Apply ``batch_fn`` to the corner windows of ``images`` ``(N, 3, H, W)``, ``batch_size``
    images at a time, and concatenate its per-image results.

    ``batch_fn`` gets windows ``(B * 4, 3, window_size, window_size)`` of B images and
    returns arrays with leading axis B. A short last batch is padded with copies of its last
    image (results dropped), so that every batch has the same shape and compiles once.
    """
    n = len(images)
    batch_size = min(batch_size, n)
    parts = []
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
        batch = np.asarray(images[start : start + batch_size], dtype=np.float32)
        count = len(batch)
        if count < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - count, axis=0)])
        parts.append(tuple(np.asarray(r)[:count] for r in batch_fn(corner_windows(batch, window_size))))
    return tuple(np.concatenate(columns) for columns in zip(*parts))


# ----------------------------------------------------------------------------------------------
# Per-model computations


@eqx.filter_jit
def _image_error_maps(model: rvsr.RVSR, state: eqx.nn.State, windows: jax.Array, sr_rate: int) -> jax.Array:
    """Squared error maps ``(B, T, T)`` of B images from their windows ``(B * 4, 3, T + 2 sr,
    T + 2 sr)``: averaged over channels and over each image's four windows."""
    inputs, targets = inputs_and_targets(windows, sr_rate)
    errors = jnp.mean((train_utils.predict(model, state, inputs) - targets) ** 2, axis=1)
    return jnp.mean(errors.reshape(-1, NUM_CORNERS, *errors.shape[1:]), axis=1)


def output_crop_sumsqs(
    model: rvsr.RVSR, state: eqx.nn.State, images: np.ndarray, target_size: int, sr_rate: int, batch_size: int, desc: str = ""
) -> np.ndarray:
    """For each test image, the squared error of an oc 0 ``model`` (channel and window mean)
    summed over each mask: float64 ``(11, N)``."""
    masks = shell_masks(target_size, sr_rate)

    def batch_fn(windows: np.ndarray) -> tuple[np.ndarray]:
        return (shell_sums(_image_error_maps(model, state, windows, sr_rate), masks),)

    (sums,) = map_test_images(batch_fn, images, target_size + 2 * sr_rate, batch_size, desc)
    return sums.T


def mean_mse_per_mask(sumsqs: np.ndarray, target_size: int, sr_rate: int) -> np.ndarray:
    """``output_crop_sumsqs`` ``(11, N)`` -> the mean over images of the per-pixel MSE in each
    mask, ``(11,)`` (NaN for empty masks)."""
    areas = mask_areas(target_size, sr_rate)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(areas > 0, sumsqs.mean(axis=1) / areas, np.nan)


def ring_padding_errors(
    feature_map: jax.Array, center: int, paddings: Sequence[str] = LAYER_NMSE_PADDINGS
) -> tuple[jax.Array, jax.Array]:
    """How well each padding method predicts a feature map's ring of pixels.

    ``feature_map`` ``(C, S, S)``: its centered ``center`` x ``center`` part is padded by 1
    with each method of ``paddings``, and the padded ring is compared with the true ring of
    the centered ``(center + 2)`` square. Returns the squared ring errors summed over
    channels, ``(len(paddings),)``, and the ring's squared deviations from each channel's
    ring mean summed over channels (``ring pixels x`` the ring variance), a scalar.
    """
    offset = (feature_map.shape[-1] - center) // 2
    true = feature_map[:, offset - 1 : offset + center + 1, offset - 1 : offset + center + 1]
    inner = true[:, 1:-1, 1:-1]
    ring = np.ones((center + 2, center + 2), dtype=bool)
    ring[1:-1, 1:-1] = False
    true_ring = true[:, ring]  # (C, ring pixels)
    errors = jnp.stack(
        [jnp.sum((make_padding_layer(p, ((1, 1), (1, 1)))(inner)[:, ring] - true_ring) ** 2) for p in paddings]
    )
    deviations = true_ring - jnp.mean(true_ring, axis=1, keepdims=True)
    return errors, jnp.sum(deviations**2)


@eqx.filter_jit
def _image_layer_ring_sums(
    model: rvsr.RVSR, state: eqx.nn.State, windows: jax.Array, sr_rate: int, center: int
) -> tuple[jax.Array, jax.Array]:
    """Per image ring sums of :func:`ring_padding_errors` for the 11 feature maps of an oc 10
    ``model`` (input, 9 intermediates, output), summed over the image's four windows:
    errors ``(B, paddings, 11)`` and deviations ``(B, 11)``."""
    inputs, _ = inputs_and_targets(windows, sr_rate)

    def one_window(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        out, _, intermediates = model(x, state, get_intermediates=True)
        maps = [x, *intermediates, out]
        errors, deviations = zip(*(ring_padding_errors(m, center) for m in maps))
        return jnp.stack(errors, axis=-1), jnp.stack(deviations)

    errors, deviations = jax.vmap(one_window)(inputs)
    per_image = lambda a: jnp.sum(a.reshape(-1, NUM_CORNERS, *a.shape[1:]), axis=1)
    return per_image(errors), per_image(deviations)


def layer_nmse_center_size(target_size: int, sr_rate: int) -> int:
    """The centered square padded in every feature map: the smallest map (the body output
    of an oc 10 model, ``T / sr - 18``) less its 1-pixel ring; 28 for the paper's 48x48 input."""
    center = target_size // sr_rate - 2 * (rvsr.MAX_OUTPUT_CROP - 1) - 2
    if center < 3:  # lp2x3 and extr3 need 3 pixels
        raise EvalError(f"target size {target_size} is too small for the layer NMSE (needs at least {sr_rate * 23})")
    return center


def layer_nmse(
    model: rvsr.RVSR, state: eqx.nn.State, images: np.ndarray, target_size: int, sr_rate: int, batch_size: int, desc: str = ""
) -> np.ndarray:
    """NMSE of each padding method (``LAYER_NMSE_PADDINGS``) on each feature map of an oc 10
    ``model`` over the test ``images``: ``(paddings, 11)`` float64, the sum of squared ring
    errors over the sum of ring squared deviations, both accumulated over all windows."""
    if model.output_crop != rvsr.MAX_OUTPUT_CROP:
        raise ValueError("layer_nmse needs a model built with output crop 10 (no padding)")
    center = layer_nmse_center_size(target_size, sr_rate)

    def batch_fn(windows: np.ndarray) -> tuple[jax.Array, jax.Array]:
        return _image_layer_ring_sums(model, state, windows, sr_rate, center)

    errors, deviations = map_test_images(batch_fn, images, target_size + 2 * sr_rate, batch_size, desc)
    return errors.astype(np.float64).sum(axis=0) / deviations.astype(np.float64).sum(axis=0)


# ----------------------------------------------------------------------------------------------
# Results store and units of work


def save_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        np.save(tmp, array, allow_pickle=False)


def load_array(path: str | os.PathLike) -> np.ndarray:
    """An array stored by :func:`save_array` (never unpickles)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EvalError(f"{path}: unreadable result file ({e}); delete it or rerun with --overwrite") from e


def load_output_crop_sumsqs(results_folder: str | os.PathLike) -> dict[str, dict[int, np.ndarray]]:
    """``{preset: {seed: (11, N) float64}}`` of every stored eval_mse result."""
    results: dict[str, dict[int, np.ndarray]] = {}
    for path in sorted((Path(results_folder) / OUTPUT_CROP_SUMSQS_FOLDER).glob("*.npy")):
        parsed = parse_model_stem(path.stem)
        if parsed is not None and parsed[0] in presets.presets:
            results.setdefault(parsed[0], {})[parsed[1]] = load_array(path)
    return {p: dict(sorted(results[p].items())) for p in sorted(results, key=table_order)}


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``, or ``{}`` when there is no such file."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EvalError(f"{path}: unreadable JSON results ({e})") from e
    if not isinstance(data, dict):
        raise EvalError(f"{path}: expected a JSON object of results")
    return data


def nested_get(data: Mapping, keys: Sequence[str], default: Any = None) -> Any:
    """``data[k0][k1]...`` or ``default`` when any level is missing."""
    for key in keys:
        if not isinstance(data, Mapping) or key not in data:
            return default
        data = data[key]
    return data


def update_json(path: str | os.PathLike, updates: Mapping[tuple[str, ...], Any]) -> dict:
    """Set ``data[k0][k1]... = value`` for each ``(k0, k1, ...): value`` of ``updates`` in the
    JSON results file ``path`` and write it atomically. The file is read just before, so
    results that another process stored in the meantime are kept."""
    data = read_json(path)
    for keys, value in updates.items():
        level = data
        for key in keys[:-1]:
            level = level.setdefault(key, {})
        level[keys[-1]] = value
    atomic_write_json(path, data)
    return data


@dataclasses.dataclass
class Unit:
    """A unit of work whose result is stored when it completes."""

    name: str
    is_done: Callable[[], bool]
    run: Callable[[], None]


def run_units(units: Sequence[Unit], desc: str, overwrite: bool = False) -> None:
    """Run the units not stored yet (all with ``overwrite``), with a progress bar."""
    todo = list(units) if overwrite else [u for u in units if not u.is_done()]
    if len(todo) < len(units):
        print(f"{desc}: {len(units) - len(todo)} of {len(units)} stored already (skipped; --overwrite recomputes)")
    with tqdm(todo, desc=desc, unit="unit") as bar:
        for unit in bar:
            bar.set_postfix_str(unit.name)
            unit.run()


def model_units(
    models: Sequence[TrainedModel], is_done: Callable[[TrainedModel], bool], run: Callable[[TrainedModel], None]
) -> list[Unit]:
    """One unit per model."""
    return [Unit(m.name, lambda m=m: is_done(m), lambda m=m: run(m)) for m in models]


def check_stored_shape(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether an array result is stored at ``path``; ``EvalError`` if it has another shape
    (for example from a run on a different number of test images)."""
    if not path.exists():
        return False
    stored = load_array(path)
    if stored.shape != shape:
        raise EvalError(f"{path} has shape {stored.shape}, this run makes {shape}; use the same --num-images or --overwrite")
    return True


def print_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned text table on stdout."""
    rows = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in [list(header), *rows]:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))))


# ----------------------------------------------------------------------------------------------
# Timing: batch-size search and timed job.py runs


TIMING_KEYS = {
    "train": ("largest_train_batch_sizes", "train_step_times", "train_target_sizes"),
    "inference": ("largest_inference_batch_sizes", "inference_step_times", "inference_target_sizes"),
}
"""mode -> keys in timing.json of the largest batch size, the step times and (extra, for the
throughput of smoke runs) the target size T, each ``{preset: value}``."""


@dataclasses.dataclass(frozen=True)
class JobResult:
    returncode: int
    message: str  # the last line job.py printed (its one-line error on failure)


JobRunner = Callable[[list[str]], JobResult]
"""Runs ``job.py`` with ``name=value`` arguments."""


def subprocess_job_runner(memory_limit_gb: float | None = None) -> JobRunner:
    """Run ``job.py`` in a fresh Python process (so each try starts with free memory), its
    address space limited to ``memory_limit_gb`` when given (CPU runs: an allocation beyond
    it fails with out of memory instead of swapping or waking the OOM killer; GPU memory is
    limited by the device)."""

    def limit_memory() -> None:  # runs in the child between fork and exec
        size = int(memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    def run(args: list[str]) -> JobResult:
        completed = subprocess.run(
            [sys.executable, str(JOB_SCRIPT), *args],
            capture_output=True,
            text=True,
            preexec_fn=None if memory_limit_gb is None else limit_memory,
        )
        lines = [line for line in (completed.stderr + completed.stdout).splitlines() if line.strip()]
        errors = [line for line in completed.stderr.splitlines() if line.startswith("job.py:")]
        return JobResult(completed.returncode, (errors or lines or [""])[-1].strip())

    return run


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    """A timing evaluation: ``mode`` "train" or "inference", and its caps."""

    mode: str
    start_batch_size: int
    max_batch_size: int
    steps: int
    cooldown: float
    target_size: int = DEFAULT_TARGET_SIZE
    seed: int = 0
    train_data_path: str | None = None  # the images trained on (the test set), train mode


def timing_job_args(preset: str, batch_size: int, steps: int, options: TimingOptions, cooldown: float = 0.0,
                    timing_filename: str | None = None) -> list[str]:
    """The ``job.py`` arguments of one timing run (or probe, without ``timing_filename``)."""
    t = options.target_size
    args = [f"preset={preset}", f"seed={options.seed}", f"batch_size={batch_size}", f"image_shape=[3,{t},{t}]",
            f"cooldown={cooldown}"]  # fmt: skip
    if options.mode == "train":
        args += ["save=False", f"train_steps={steps}", f"train_data_path={options.train_data_path}"]
    else:
        args += [f"inference_steps={steps}"]
    if timing_filename is not None:
        args.append(f"timing_filename={timing_filename}")
    return args


def _ran(result: JobResult, what: str) -> bool:
    """True if the job ran, False if it ran out of memory; ``EvalError`` for other failures."""
    if result.returncode == 0:
        return True
    if result.returncode == JOB_EXIT_OUT_OF_MEMORY:
        return False
    raise EvalError(f"{what}: job.py failed with exit status {result.returncode}: {result.message}")


def largest_batch_size(runs: Callable[[int], bool], start: int, maximum: int) -> int:
    """The largest batch size ``b <= maximum`` for which ``runs(b)``: from ``start`` doubling
    until the first failure (or ``maximum``), then bisecting between the last success and
    that failure (down from ``start`` if it fails)."""
    good, bad, size = 0, None, min(start, maximum)
    while bad is None:
        if not runs(size):
            bad = size
        elif size >= maximum:
            return size
        else:
            good, size = size, min(2 * size, maximum)
    while bad - good > 1:
        middle = (good + bad) // 2
        if runs(middle):
            good = middle
        else:
            bad = middle
    if good == 0:
        raise EvalError("even batch size 1 runs out of memory")
    return good


def timed_job(preset: str, batch_size: int, options: TimingOptions, runner: JobRunner) -> tuple[int, list[float]]:
    """``(batch_size, step_times)`` of ``options.steps`` timed steps (after the cooldown),
    retrying with one less when it runs out of memory."""
    with tempfile.TemporaryDirectory(prefix="timing-") as folder:
        timing_file = os.path.join(folder, "timing.json")
        while batch_size >= 1:
            args = timing_job_args(preset, batch_size, options.steps, options, options.cooldown, timing_file)
            if _ran(runner(args), f"{preset} timed {options.mode} run at batch size {batch_size}"):
                try:
                    return batch_size, [float(t) for t in read_json(timing_file)["step_times"]]
                except (KeyError, TypeError, ValueError) as e:
                    raise EvalError(f"{preset}: job.py wrote no step times to {timing_file} ({e!r})") from e
            batch_size -= 1
    raise EvalError(f"{preset}: the timed {options.mode} run ran out of memory even at batch size 1")


def timing_units(options: TimingOptions, preset_names: Sequence[str], timing_path: Path, runner: JobRunner) -> list[Unit]:
    """Two units per preset, each stored in ``timing_path`` when done: the batch-size search,
    then the timed run at the size found."""
    size_key, times_key, target_key = TIMING_KEYS[options.mode]

    def search(preset: str) -> None:
        def runs(batch_size: int) -> bool:
            args = timing_job_args(preset, batch_size, PROBE_STEPS, options)
            return _ran(runner(args), f"{preset} {options.mode} probe at batch size {batch_size}")

        if options.start_batch_size >= options.max_batch_size:
            # Nothing to search (a fixed size, e.g. a smoke run): the timed run tries it.
            size = options.max_batch_size
        else:
            try:
                size = largest_batch_size(runs, options.start_batch_size, options.max_batch_size)
            except EvalError as e:
                raise EvalError(f"{preset}: {e}") from None
        update_json(timing_path, {(size_key, preset): size, (target_key, preset): options.target_size})

    def timed(preset: str) -> None:
        size, times = timed_job(preset, nested_get(read_json(timing_path), (size_key, preset)), options, runner)
        update_json(timing_path, {(size_key, preset): size, (times_key, preset): times})

    def stored(key: str, preset: str) -> Callable[[], bool]:
        return lambda: nested_get(read_json(timing_path), (key, preset)) is not None

    units = []
    for preset in preset_names:
        units.append(Unit(f"{preset} batch size", stored(size_key, preset), lambda p=preset: search(p)))
        units.append(Unit(f"{preset} timed", stored(times_key, preset), lambda p=preset: timed(p)))
    return units


def mean_step_time(step_times: Sequence[float]) -> float:
    """Mean time of a step, the first (compiling, warming up) excluded."""
    times = list(step_times)[1:]
    return float(np.mean(times)) if times else float("nan")


def train_throughput(batch_size: int, step_times: Sequence[float]) -> float:
    """Training images per second."""
    return batch_size / mean_step_time(step_times)


def inference_throughput(batch_size: int, step_times: Sequence[float], output_crop: int,
                         target_size: int = DEFAULT_TARGET_SIZE, sr_rate: int = 4) -> float:
    """Output pixels of one channel per second: ``batch x (T - 2 sr oc)^2 / mean time``."""
    side = max(target_size - 2 * sr_rate * output_crop, 0)
    return batch_size * side**2 / mean_step_time(step_times)


def timing_summary_rows(timing: Mapping, mode: str) -> list[tuple]:
    """``(preset, largest batch size, mean step time s, throughput)`` per timed preset;
    throughput in images/s (train) or output pixels/s (inference)."""
    size_key, times_key, target_key = TIMING_KEYS[mode]
    rows = []
    for preset, times in timing.get(times_key, {}).items():
        size = timing[size_key][preset]
        if mode == "train":
            throughput = train_throughput(size, times)
        else:
            oc = presets.get_preset_hpars(preset)["model_hpars"]["output_crop"]
            target = nested_get(timing, (target_key, preset), DEFAULT_TARGET_SIZE)
            throughput = inference_throughput(size, times, oc, target, sr_rate_of(preset))
        rows.append((preset, size, mean_step_time(times), throughput))
    return rows


def add_timing_arguments(parser: argparse.ArgumentParser, start: int, steps: int, cooldown: float) -> None:
    """The options of the two timing scripts; defaults are the paper's."""
    paths = paths_config.get_paths()
    parser.add_argument("--results-folder", default=paths["results_folder"], help="default: %(default)s")
    parser.add_argument("--presets", nargs="+", type=preset_name, default=list(presets.presets), metavar="PRESET",
                        help="presets to time (default: all 22)")
    parser.add_argument("--start-batch-size", type=positive_int, default=start, help="default: %(default)s")
    parser.add_argument("--max-batch-size", type=positive_int, default=2**20, help="cap of the search (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=steps, help="timed steps (default: %(default)s)")
    parser.add_argument("--cooldown", type=non_negative_float, default=cooldown,
                        help="seconds of sleep before the timed run (default: %(default)s)")
    parser.add_argument("--memory-limit-gb", type=non_negative_float,
                        help="address-space limit of each job.py process (CPU runs; default: none)")
    parser.add_argument("--target-size", type=positive_int, default=DEFAULT_TARGET_SIZE,
                        help="target size T: image_shape [3,T,T], inputs T/4 (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="model seed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="time presets that are stored already again")


def run_timing(options: TimingOptions, args: argparse.Namespace, runner: JobRunner | None = None) -> None:
    """Search, time and store every preset of ``args.presets``, then print the summary."""
    sr_rate = presets.hpars["sr_rate"]
    if options.target_size % sr_rate:
        raise EvalError(f"--target-size {options.target_size} must be a multiple of the sr rate {sr_rate}")
    timing_path = Path(args.results_folder) / TIMING_FILENAME
    runner = subprocess_job_runner(args.memory_limit_gb) if runner is None else runner
    run_units(timing_units(options, args.presets, timing_path, runner), f"{options.mode} timing", args.overwrite)
    unit = "images/s" if options.mode == "train" else "output px/s"
    rows = [row for row in timing_summary_rows(read_json(timing_path), options.mode) if row[0] in args.presets]
    print_table(["preset", "largest batch", "mean step s", f"throughput {unit}"], rows)
