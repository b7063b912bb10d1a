"""Trained models on the test windows: selecting the published models and loading the test
set, and the two per-model computations of the evaluations (mask sums of the squared error
for eval_mse.py, feature-map padding NMSE for eval_layer_nmse.py).

Models are read from the published layout only (``run_layout``, loaded by
``published_models``), so the published models of arXiv:2502.12300 evaluate as they are. The
window and mask geometry is in ``eval_geometry``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import data_utils
import paths_config
import rvsr
from catalog import find_trained_models
from cli import UserError, non_negative_int, positive_int
from eval_geometry import (
    DEFAULT_TARGET_SIZE,
    NUM_CORNERS,
    corner_windows,
    fit_target_size,
    layer_nmse_center_size,
    shell_masks,
    shell_sums,
    sr_rate_of,
)
from padding import make_padding_layer
from presets import preset_name
from run_layout import TrainedModel

LAYER_NMSE_PADDINGS = ("zero", "repl", "lp2x3", "extr3")
NUM_FEATURE_MAPS = 11  # input, head, 7 body blocks, body output, model output


def add_model_eval_arguments(parser: argparse.ArgumentParser, default_presets: Sequence[str] | None = None) -> None:
    """The options of the evaluations that run trained models on the test set."""
    paths = paths_config.get_paths()
    parser.add_argument(
        "--models-folder",
        default=paths["trained_models_folder"],
        help="published / exported models (default: %(default)s)",
    )
    parser.add_argument("--results-folder", default=paths["results_folder"], help="default: %(default)s")
    parser.add_argument(
        "--test-data",
        default=paths_config.test_data_path(paths),
        help="test images (N, 3, H, W) .npy (default: %(default)s)",
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        type=preset_name,
        default=default_presets,
        metavar="PRESET",
        help="presets to evaluate (default: %s)"
        % ("all found" if default_presets is None else " ".join(default_presets)),
    )
    parser.add_argument("--seeds", nargs="+", type=non_negative_int, metavar="SEED", help="seeds (default: all found)")
    parser.add_argument("--num-images", type=positive_int, help="use only the first N test images (smoke runs)")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="test images per batch, 4 windows each (default: %(default)s)",
    )
    parser.add_argument(
        "--target-size",
        type=positive_int,
        help=f"target window size T (default: {DEFAULT_TARGET_SIZE}, or the largest that fits smaller images)",
    )
    parser.add_argument("--overwrite", action="store_true", help="recompute results that are stored already")


# ----------------------------------------------------------------------------------------------
# Test images through the models


def load_test_images(path: str | os.PathLike, num_images: int | None = None) -> np.ndarray:
    """The test images ``(N, 3, H, W)`` (memory-mapped), the first ``num_images`` if given."""
    try:
        images = data_utils.load_data_array(path, "test", mmap_mode="r")
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot read test data {path}: {e} (make it with make_dataset_npys.py or pass --test-data)"
        ) from e
    if images.ndim != 4 or images.shape[1] != 3:
        raise UserError(f"test data {path} has shape {images.shape}; expected (N, 3, H, W)")
    if num_images is not None:
        if num_images > len(images):
            raise UserError(f"--num-images {num_images}: test data {path} has only {len(images)} images")
        images = images[:num_images]
    return images


@dataclasses.dataclass(frozen=True)
class Selection:
    """What an evaluation runs on: ``models`` (table order), the test ``images`` ``(N, 3, H,
    W)``, the target size ``T`` of their windows and the sr rate."""

    models: list[TrainedModel]
    images: np.ndarray
    target_size: int
    sr_rate: int


def select_models_and_images(args: argparse.Namespace) -> Selection:
    """The models and test images chosen by the options of :func:`add_model_eval_arguments`;
    prints the geometry. ``UserError`` when there is nothing to evaluate."""
    models = find_trained_models(args.models_folder, args.presets, args.seeds)
    if not models:
        wanted = " ".join(args.presets) if args.presets else "any preset"
        seeds = f" seeds {' '.join(map(str, args.seeds))}" if args.seeds else ""
        raise UserError(f"no trained models of {wanted}{seeds} in {args.models_folder}")
    sr_rate = sr_rate_of(models[0].preset)  # 4 for every preset
    images = load_test_images(args.test_data, args.num_images)
    target_size = fit_target_size(images.shape, sr_rate, args.target_size)
    window = target_size + 2 * sr_rate
    print(f"{len(images)} test images, {window}x{window} windows at the 4 corners, {target_size}x{target_size} targets")
    return Selection(models, images, target_size, sr_rate)


@eqx.filter_jit
def inputs_and_targets(windows: jax.Array, sr_rate: int) -> tuple[jax.Array, jax.Array]:
    """Windows ``(n, 3, T + 2 sr, T + 2 sr)`` -> inputs ``(n, 3, T / sr, T / sr)`` and targets
    ``(n, 3, T, T)``, the preprocessing of training (the center crop is the whole window)."""
    size = windows.shape[-1] - 2 * sr_rate
    return data_utils.preprocess_batch_for_superresolution_task(windows, size, size, sr_rate, random_crop=False)


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


def _per_image(a: jax.Array, reduce: Callable[..., jax.Array]) -> jax.Array:
    """``(B * 4, ...) -> (B, ...)``: ``reduce`` (mean or sum) over each image's four windows."""
    return reduce(a.reshape(-1, NUM_CORNERS, *a.shape[1:]), axis=1)


# ----------------------------------------------------------------------------------------------
# eval_mse.py: squared error summed over the masks


@eqx.filter_jit
def _image_error_maps(model: rvsr.RVSR, state: eqx.nn.State, windows: jax.Array, sr_rate: int) -> jax.Array:
    """Squared error maps ``(B, T, T)`` of B images from their windows ``(B * 4, 3, T + 2 sr,
    T + 2 sr)``: averaged over channels and over each image's four windows."""
    inputs, targets = inputs_and_targets(windows, sr_rate)
    errors = jnp.mean((rvsr.predict(model, state, inputs) - targets) ** 2, axis=1)
    return _per_image(errors, jnp.mean)


def output_crop_sumsqs(
    model: rvsr.RVSR,
    state: eqx.nn.State,
    images: np.ndarray,
    target_size: int,
    sr_rate: int,
    batch_size: int,
    desc: str = "",
) -> np.ndarray:
    """For each test image, the squared error of an oc 0 ``model`` (channel and window mean)
    summed over each mask: float64 ``(11, N)``."""
    masks = shell_masks(target_size, sr_rate)

    def batch_fn(windows: np.ndarray) -> tuple[np.ndarray]:
        return (shell_sums(_image_error_maps(model, state, windows, sr_rate), masks),)

    (sums,) = map_test_images(batch_fn, images, target_size + 2 * sr_rate, batch_size, desc)
    return sums.T


# ----------------------------------------------------------------------------------------------
# eval_layer_nmse.py: how well each padding predicts each feature map's ring


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
    return _per_image(errors, jnp.sum), _per_image(deviations, jnp.sum)


def layer_nmse(
    model: rvsr.RVSR,
    state: eqx.nn.State,
    images: np.ndarray,
    target_size: int,
    sr_rate: int,
    batch_size: int,
    desc: str = "",
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
