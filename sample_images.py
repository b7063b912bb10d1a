"""Test-set samples for the image figures of arXiv:2502.12300: sRGB conversion, padding
samples (centres of test crops padded back with every method) and low-res inputs with their
high-res targets. The figures only draw what these return.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

import data_utils
import padding

PADDING_SAMPLE_METHODS = (
    "lp1x1cs", "lp2x1", "lp2x1cs", "lp2x3", "lp2x5", "lp3x3", "lp4x5", "lp6x7", "zero", "repl", "extr2", "extr3",
)  # fmt: skip
"""The rows of the paper's padding-samples figure, top to bottom (after the target row)."""


def image_to_srgb(x: np.ndarray) -> np.ndarray:
    """A ``(3, y, x)`` image in the paper's units -> ``(y, x, 3)`` uint8 sRGB, reflectance 0.8 white."""
    return data_utils.np_linear_to_srgb((np.moveaxis(np.asarray(x), 0, -1) * 0.5 + 0.5) / 0.8)


def centre_crops(images: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size x size`` crops of ``images`` ``(n, 3, H, W)`` -> ``(n, 3, size, size)``."""
    top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
    return np.asarray(images[..., top : top + size, left : left + size])


def padding_sample_tiles(crops: np.ndarray, methods: Sequence[str]) -> np.ndarray:
    """Rows of tiles: the crops ``(n, 3, 2m, 2m)`` themselves, then for each method their
    ``m x m`` centres padded back to ``2m x 2m``: ``(1 + len(methods), n, 3, 2m, 2m)``."""
    size = crops.shape[-1]
    margin = size // 4
    centres = np.asarray(crops[:, :, margin : size - margin, margin : size - margin], dtype=np.float32)
    rows = [np.asarray(crops, dtype=np.float32)]
    for method in methods:
        layer = padding.make_padding_layer(method, ((margin, margin), (margin, margin)))
        rows.append(np.asarray(jax.jit(jax.vmap(layer))(centres)))
    return np.stack(rows)


def inputs_and_targets(images: np.ndarray, target_size: int, sr_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre-cropped low-res inputs ``(n, 3, T / sr, T / sr)`` and high-res targets
    ``(n, 3, T, T)`` of ``images`` ``(n, 3, H, W)``, as in the trainer's test loss."""
    inputs, targets = data_utils.preprocess_batch_for_superresolution_task(
        np.asarray(images, dtype=np.float32), target_size, target_size, sr_rate, random_crop=False)  # fmt: skip
    return np.asarray(inputs), np.asarray(targets)
