"""Colour conversion, batching, cropping and super-resolution preprocessing.

Images are stored in the paper's units: reflectance ``v * 2 / 10000 - 1`` (about -1..1),
batches as ``(batch, channel, y, x)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from io_utils import atomic_write_json

# sRGB transfer function constants (IEC 61966-2-1).
_SRGB_LINEAR_LIMIT = 0.0031308
_SRGB_LINEAR_SLOPE = 12.92


def np_linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """Linear intensity ``v`` (any shape, 0..1 is the displayable range) to 8-bit sRGB codes.

    ``12.92 v`` up to 0.0031308, else ``1.055 v^(1/2.4) - 0.055``; clipped to [0, 1], scaled
    by 255 and truncated (not rounded) to ``uint8``. Paper-unit images are shown as
    ``np_linear_to_srgb(x * 0.5 + 0.5)`` (figures divide by 0.8 first: reflectance 0.8 is white).
    """
    v = np.asarray(v)
    if not np.issubdtype(v.dtype, np.floating):
        v = v.astype(np.float64)
    # Float input is converted in its own precision: the truncation to codes makes the last
    # bit visible at code boundaries (e.g. 1.0 gives 254.99999... and code 254, as the
    # formula does in floating point), and this matches plain numpy code on float32 images.
    # The power branch is evaluated on all elements; clamping keeps negative inputs from
    # producing NaN warnings there (they take the linear branch anyway).
    curved = 1.055 * np.power(np.maximum(v, _SRGB_LINEAR_LIMIT), 1 / 2.4) - 0.055
    srgb = np.where(v <= _SRGB_LINEAR_LIMIT, _SRGB_LINEAR_SLOPE * v, curved)
    return (np.clip(srgb, 0.0, 1.0) * 255).astype(np.uint8)


def load_data_array(path: str | os.PathLike, id: str, mmap_mode: str | None = None) -> np.ndarray:
    """The array in the .npy file ``path``, with its shape and dtype printed under the label
    ``id`` (e.g. "train"). ``mmap_mode`` as in ``np.load`` (e.g. "r" to avoid reading a large
    file into memory). Never unpickles. Raises ``FileNotFoundError`` / ``ValueError``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{id} data file not found: {path}")
    data = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    print(f"{id} data {path}: shape {data.shape}, dtype {data.dtype}")
    return data


class ImageBatcher:
    """Draws batches of images from an array ``(N, ...)``: ``batch = batcher(data)``.

    With ``shuffle``, every batch is an independent draw of ``batch_size`` distinct images
    (no epochs: images repeat across batches), using ``rng`` (a ``np.random.Generator``).
    Without, consecutive batches in order from ``position``, wrapping around the end.
    """

    def __init__(self, batch_size: int, shuffle: bool, rng: np.random.Generator | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng() if rng is None else rng
        # Index of the next image in sequential mode; the trainer sets it when resuming.
        self.position = 0

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """A batch ``(batch_size, ...)`` of ``data`` ``(N, ...)``."""
        n = len(data)
        if self.batch_size > n:
            raise ValueError(f"batch_size {self.batch_size} is larger than the {n} images available")
        if self.shuffle:
            # shuffle=False: the order of the draw does not matter for training, and this
            # exact call fixes which images a given generator state yields.
            return self.rng.choice(data, size=self.batch_size, replace=False, shuffle=False)
        indices = (self.position + np.arange(self.batch_size)) % n
        self.position = int(indices[-1] + 1) % n
        if indices[0] < indices[-1]:
            # A basic slice: no copy of the whole array for memory-mapped data.
            return np.asarray(data[indices[0] : indices[-1] + 1])
        return np.asarray(data[indices])


def _check_crop(batch_shape: tuple[int, ...], height: int, width: int) -> None:
    if len(batch_shape) != 4:
        raise ValueError(f"batch must have shape (batch, channel, y, x), got {batch_shape}")
    if not (0 < height <= batch_shape[2] and 0 < width <= batch_shape[3]):
        raise ValueError(f"crop {height}x{width} does not fit images of size {batch_shape[2]}x{batch_shape[3]}")


def random_crop_jax(batch: Array, height: int, width: int, key: PRNGKeyArray) -> Array:
    """Each image of ``batch`` ``(B, C, Ny, Nx)`` cut to ``(C, height, width)`` at its own random
    offset; top offsets uniform in ``0..Ny - height`` from the first half of ``key``, left
    offsets in ``0..Nx - width`` from the second (both ends included)."""
    _check_crop(batch.shape, height, width)
    b, c, ny, nx = batch.shape
    ky, kx = jax.random.split(key)
    tops = jax.random.randint(ky, (b,), 0, ny - height + 1)
    lefts = jax.random.randint(kx, (b,), 0, nx - width + 1)

    def cut(image: Array, top: Array, left: Array) -> Array:
        return jax.lax.dynamic_slice(image, (0, top, left), (c, height, width))

    return jax.vmap(cut)(batch, tops, lefts)


def center_crop(batch: Array, height: int, width: int) -> Array:
    """``batch`` ``(B, C, Ny, Nx)`` cut to ``(B, C, height, width)`` at offsets
    ``((Ny - height) // 2, (Nx - width) // 2)``. Works on numpy and JAX arrays."""
    _check_crop(batch.shape, height, width)
    top = (batch.shape[2] - height) // 2
    left = (batch.shape[3] - width) // 2
    return batch[:, :, top : top + height, left : left + width]


def preprocess_batch_for_superresolution_task(
    batch: Array,
    height: int,
    width: int,
    sr_rate: int,
    random_crop: bool,
    key: PRNGKeyArray | None = None,
) -> tuple[Array, Array]:
    """Low-resolution inputs and high-resolution targets from images ``(B, C, Ny, Nx)``.

    A ``(height + 2 sr, width + 2 sr)`` crop (random with ``key``, else centered) is
    downscaled by ``1 / sr`` (bilinear with antialiasing); the inputs are that without one
    pixel per side, ``(B, C, height / sr, width / sr)``, and the targets are the crop without
    ``sr`` pixels per side, ``(B, C, height, width)``: the same area. The extra margin keeps
    the antialiasing filter of the border input pixels inside the image.
    E.g. 192x192 targets: 200x200 crop, 48x48 inputs.
    """
    if height % sr_rate or width % sr_rate:
        raise ValueError(f"height {height} and width {width} must be multiples of sr_rate {sr_rate}")
    crop_h, crop_w = height + 2 * sr_rate, width + 2 * sr_rate
    if random_crop:
        if key is None:
            raise ValueError("random_crop=True needs a key")
        crop = random_crop_jax(batch, crop_h, crop_w, key)
    else:
        # Cropping before the conversion moves only the crop to the device.
        crop = jnp.asarray(center_crop(batch, crop_h, crop_w))
    b, c = crop.shape[:2]
    low = jax.image.resize(crop, (b, c, crop_h // sr_rate, crop_w // sr_rate), "bilinear", antialias=True)
    inputs = low[:, :, 1:-1, 1:-1]
    targets = crop[:, :, sr_rate:-sr_rate, sr_rate:-sr_rate]
    return inputs, targets


def first_non_finite_image(data: np.ndarray, chunk_bytes: int = 256 << 20) -> int | None:
    """The index of the first image of ``data`` ``(N, ...)`` holding a NaN or infinity, or None.

    Reads ``data`` (typically memory-mapped) a chunk of about ``chunk_bytes`` at a time, so a
    28 GB training set is checked without holding it in memory."""
    per_image = max(1, int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize)
    chunk = max(1, chunk_bytes // per_image)
    for start in range(0, len(data), chunk):
        finite = (
            np.isfinite(np.asarray(data[start : start + chunk])).reshape(min(chunk, len(data) - start), -1).all(axis=1)
        )
        if not finite.all():
            return start + int(np.argmin(finite))
    return None


# The stamp of a data file found free of NaN and infinity: ``{file}{FINITE_STAMP_SUFFIX}`` beside it.
FINITE_STAMP_SUFFIX = ".finite.json"
_IDENTITY_END_BYTES = 1 << 20  # hashed at each end of a file: the .npy header, the first and last images


def finite_stamp_path(path: str | os.PathLike) -> Path:
    """``{path}.finite.json``: where the finite-values check of the data file ``path`` is recorded."""
    return Path(f"{os.fspath(path)}{FINITE_STAMP_SUFFIX}")


def file_identity(path: str | os.PathLike) -> dict:
    """What tells one version of the file ``path`` from another without reading it whole: its
    size, inode, modification and status-change times (nanoseconds), and the SHA-256 of its
    first and last MiB (for a .npy file: the header, the first and the last images)."""
    with open(path, "rb") as f:
        stat = os.fstat(f.fileno())
        digest = hashlib.sha256(f.read(_IDENTITY_END_BYTES))
        f.seek(max(_IDENTITY_END_BYTES, stat.st_size - _IDENTITY_END_BYTES))
        digest.update(f.read())
    return {
        "bytes": stat.st_size,
        "inode": stat.st_ino,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "ends_sha256": digest.hexdigest(),
    }


def first_non_finite_image_of_file(path: str | os.PathLike, data: np.ndarray) -> int | None:
    """:func:`first_non_finite_image` of ``data``, the array of the .npy file ``path``, read once
    per version of the file rather than at every start of a run.

    A scan that finds every value finite leaves a stamp (:func:`finite_stamp_path`) holding the
    file's :func:`file_identity` from before the scan; while the file keeps that identity, later
    calls return None without reading the data. Any change to the file (rewritten, replaced,
    touched, a different size) makes its identity differ, and the whole scan runs again. A file
    with a NaN or infinity never gets a stamp. If the stamp cannot be written (a read-only
    folder), a note says so and the scan runs again next time."""
    stamp = finite_stamp_path(path)
    identity = file_identity(path)
    try:
        if json.loads(stamp.read_text()) == identity:
            return None
    except (OSError, ValueError):
        pass  # no stamp, or an unreadable one: scan
    bad = first_non_finite_image(data)
    if bad is None:
        try:
            atomic_write_json(stamp, identity)
        except OSError as e:
            print(f"note: could not record the finite-values check of {path} in {stamp} ({e}); it runs again next time")
    return bad
