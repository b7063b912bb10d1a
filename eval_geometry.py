"""Evaluation geometry: test windows, output-crop masks and the MSEs over them, and the
output crop and sr rate of each preset.

The evaluation of arXiv:2502.12300 (its test MSE per output crop and shell): every test image
``(3, H, W)`` gives four windows of ``T + 2 sr`` pixels at its corners (200x200 of 512x512
for the paper's ``T = 192``, ``sr = 4``); a window gives a low-resolution input
``(3, T / sr, T / sr)`` and a target ``(3, T, T)``, as in training. Mask ``k`` (0..10) is the
target region ``[sr k, T - sr k)`` in both axes: the pixels a model trained with output crop
``k`` predicts. "Crop k" is that region, "shell k" the ring between crop k and crop k + 1
(shell 10 is the whole remaining centre).

NumPy only; nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import presets
from cli import UserError
from rvsr import MAX_OUTPUT_CROP

NUM_MASKS = MAX_OUTPUT_CROP + 1  # masks k = 0..10, one per output crop
NUM_CORNERS = 4
DEFAULT_TARGET_SIZE = 192  # the paper's evaluated outputs: 192x192 of 200x200 windows


def sr_rate_of(preset: str) -> int:
    """The super-resolution factor of ``preset`` (4 for all of the paper's)."""
    return presets.get_preset_hpars(preset)["sr_rate"]


def output_crop_of(preset: str) -> int:
    """The output crop ``oc`` that ``preset`` is trained with: its outputs are mask ``oc``."""
    return presets.get_preset_hpars(preset)["model_hpars"]["output_crop"]


def fit_target_size(image_shape: Sequence[int], sr_rate: int, requested: int | None = None) -> int:
    """The target size ``T`` for images ``(..., H, W)``: ``requested`` (a multiple of
    ``sr_rate`` whose windows ``T + 2 sr`` fit), or by default 192 or, for smaller images
    (smoke runs), the largest that fits."""
    side = min(image_shape[-2:])
    largest = (side - 2 * sr_rate) // sr_rate * sr_rate
    if requested is None:
        if largest < sr_rate:
            raise UserError(f"test images of {side} pixels are too small for windows of at least {3 * sr_rate}")
        return min(DEFAULT_TARGET_SIZE, largest)
    if requested % sr_rate or requested > largest:
        raise UserError(
            f"target size {requested} must be a multiple of {sr_rate} no larger than {largest} "
            f"(windows of T + {2 * sr_rate} pixels in {side}-pixel images)"
        )
    return requested


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


def output_side(target_size: int, sr_rate: int, output_crop: int) -> int:
    """Side of the output of a model with ``output_crop``: ``T - 2 sr oc`` (0 if nothing is left)."""
    return max(target_size - 2 * sr_rate * output_crop, 0)


def shell_sums(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Sums of ``maps`` ``(B, T, T)`` over each mask of ``masks`` ``(11, T, T)`` -> ``(B, 11)``,
    in float64."""
    return np.einsum("byx,kyx->bk", np.asarray(maps, dtype=np.float64), masks.astype(np.float64))


def crop_and_shell_mse(sumsqs: np.ndarray, target_size: int, sr_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Test MSE over crop k and over shell k (k = 0..10) from one model's mask sums
    ``(11, N)`` (eval_mse.py's ``output_crop_sumsqs``): means over the images of per-image
    MSEs, so that every image weighs the same. Each ``(11,)``; NaN where a crop or shell is
    empty (small smoke-run outputs)."""
    areas = mask_areas(target_size, sr_rate)
    mean_sums = np.asarray(sumsqs, dtype=np.float64).mean(axis=1)
    # Shell k = crop k minus crop k + 1, for the sums and the areas alike.
    ring_sums = mean_sums - np.append(mean_sums[1:], 0.0)
    ring_areas = areas - np.append(areas[1:], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        crop = np.where(areas > 0, mean_sums / areas, np.nan)
        shell = np.where(ring_areas > 0, ring_sums / ring_areas, np.nan)
    return crop, shell


def layer_nmse_center_size(target_size: int, sr_rate: int) -> int:
    """The centred square padded in every feature map by eval_layer_nmse.py: the smallest map
    (the body output of an oc 10 model, ``T / sr - 18``) less its 1-pixel ring; 28 for the
    paper's 48x48 input."""
    center = target_size // sr_rate - 2 * (MAX_OUTPUT_CROP - 1) - 2
    if center < 3:  # lp2x3 and extr3 need 3 pixels
        raise UserError(f"target size {target_size} is too small for the layer NMSE (needs at least {sr_rate * 23})")
    return center
