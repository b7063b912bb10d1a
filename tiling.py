"""Tiled processing of a raster by any JAX model: the tile grid, the receptive field and the
alignment a model needs, batched tile calls, and :func:`predict_raster`, the library entry.

This is the tiled CNN processing that the paper studies (Niemitalo et al. 2025,
arXiv:2502.12300): a raster too big for one pass is cut into tiles, each tile's edges are
padded by the model's own padding (zero, replication, linear prediction, ...), and the
outputs are put back together. Where the padding differs from the true neighbouring data, the
stitched output shows seams. A halo (overlap) lets each tile see more of its neighbours; its
outputs are cropped away. With a halo of the model's receptive-field radius the tiled output
equals a one-pass run away from the raster's outer edge. docs/tiled_processing.md is the
user guide.

The model maps one tile ``(C, h, w)`` to ``(C', s h, s w)`` for an integer scale ``s >= 1``
(output pixel ``s p + j``, ``0 <= j < s``, belongs to input pixel ``p``). It may be an Equinox
module, a plain or jitted function, or a closure over a Flax ``apply``.

Geometry, in input pixels, per axis. The *cores* partition the raster into ``tile_size``
spans from 0, the last one shorter. Every *read window* (what the model sees) has one size,
``tile_size + 2 halo``, or the raster's size when that is smaller: a window starts ``halo``
before its core, shifted back inside the raster at the edges, so one compiled shape serves
the whole run. Models that downsample (stride, pooling) are shift-equivariant only by
multiples of their total stride, the *alignment* ``a``: tile sizes, halos and window origins
are multiples of ``a``, and a raster whose size is no multiple of ``a`` is read as if extended
to one (the extension is filled like nodata and its outputs are dropped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import padding
from cli import UserError

MIN_TILE_SIZE = 8  # smaller tiles spend nearly all their time on the halo and on per-tile overheads
MAX_ALIGN = 32  # the largest total stride alignment() looks for
ALIGN_RTOL = 1e-4  # relative difference below which two outputs count as equal (float32 rounding)

Span = tuple[int, int]
"""A half-open range ``[start, stop)`` of pixel indices along one axis."""

Model = Callable[[Any], Any]
"""One tile ``(C, h, w)`` -> ``(C', s h, s w)``, traceable by JAX."""


class TilingError(UserError, ValueError):
    """A request that cannot be met (bad arguments, unreadable input, an existing output):
    the message says what is wrong and what to do. Scripts print it as one line."""


# ----------------------------------------------------------------------------------------------
# Geometry


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile: grid position, core and read window (input pixels, half-open spans). The read
    window may end past the raster (by less than the alignment) when the raster's size is no
    multiple of it."""

    row: int
    col: int
    core_y: Span
    core_x: Span
    read_y: Span
    read_x: Span

    @property
    def key(self) -> str:
        """A short name, ``r{row}_c{col}``, e.g. for per-tile files."""
        return f"r{self.row}_c{self.col}"

    @property
    def read_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the read window."""
        return self.read_y[1] - self.read_y[0], self.read_x[1] - self.read_x[0]

    @property
    def core_pixels(self) -> int:
        return (self.core_y[1] - self.core_y[0]) * (self.core_x[1] - self.core_x[0])

    def core_in_window(self, scale: int = 1) -> tuple[slice, slice]:
        """The core's ``(y, x)`` slices in the model's output for the read window (input pixels
        for ``scale`` 1)."""
        return (
            slice(scale * (self.core_y[0] - self.read_y[0]), scale * (self.core_y[1] - self.read_y[0])),
            slice(scale * (self.core_x[0] - self.read_x[0]), scale * (self.core_x[1] - self.read_x[0])),
        )

    def core_in_output(self, scale: int) -> tuple[slice, slice]:
        """The core's ``(y, x)`` slices in the whole raster's output."""
        return (
            slice(scale * self.core_y[0], scale * self.core_y[1]),
            slice(scale * self.core_x[0], scale * self.core_x[1]),
        )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def check_tile_size(tile_size: int, align: int = 1) -> None:
    """Raise :class:`TilingError` unless ``tile_size`` is sane and a multiple of ``align``."""
    if align < 1:
        raise TilingError(f"align must be >= 1, got {align}")
    if tile_size < MIN_TILE_SIZE:
        raise TilingError(
            f"tile size {tile_size} is too small: use at least {MIN_TILE_SIZE} input pixels (256 is a good start)"
        )
    if tile_size % align:
        lower, upper = tile_size // align * align, _round_up(tile_size, align)
        choices = " or ".join(str(t) for t in (lower, upper) if t >= MIN_TILE_SIZE)
        raise TilingError(
            f"tile size {tile_size} is not a multiple of {align}, the model's total stride (it is "
            f"shift-equivariant only by multiples of it); use {choices}"
        )


def window_shape(height: int, width: int, tile_size: int, halo: int = 0, align: int = 1) -> tuple[int, int]:
    """The one read-window shape ``(h, w)`` of a run: ``tile_size + 2 halo``, or the raster's
    size rounded up to ``align`` where that is smaller."""
    side = tile_size + 2 * halo
    return min(side, _round_up(height, align)), min(side, _round_up(width, align))


def _axis(size: int, tile_size: int, halo: int, align: int) -> list[tuple[Span, Span]]:
    """``(core, read window)`` spans along one axis."""
    padded = _round_up(size, align)
    window = min(tile_size + 2 * halo, padded)
    spans = []
    for start in range(0, size, tile_size):
        read = min(max(start - halo, 0), padded - window)
        spans.append(((start, min(start + tile_size, size)), (read, read + window)))
    return spans


def tile_grid(height: int, width: int, tile_size: int, halo: int = 0, align: int = 1) -> list[Tile]:
    """The tiles of a ``height`` x ``width`` raster, row by row, all with the read shape
    :func:`window_shape`. ``tile_size`` and ``halo`` must be multiples of ``align``; raises
    :class:`TilingError` otherwise."""
    check_tile_size(tile_size, align)
    if halo < 0 or halo % align:
        raise TilingError(f"halo must be a multiple of the alignment {align} and >= 0, got {halo}")
    if height < 1 or width < 1:
        raise TilingError(f"a {height}x{width} raster has no pixels")
    return [
        Tile(row, col, core_y, core_x, read_y, read_x)
        for row, (core_y, read_y) in enumerate(_axis(height, tile_size, halo, align))
        for col, (core_x, read_x) in enumerate(_axis(width, tile_size, halo, align))
    ]


def seam_mask(tiles: Sequence[Tile], output_shape: tuple[int, int], scale: int, width: int = 4) -> np.ndarray:
    """Boolean ``output_shape`` (y, x) mask of the output pixels within ``width`` pixels of a
    seam, i.e. of a core boundary inside the raster (not its outer edge)."""
    mask = np.zeros(output_shape, bool)
    for axis, starts in ((0, {t.core_y[0] for t in tiles}), (1, {t.core_x[0] for t in tiles})):
        for start in sorted(starts - {min(starts)}):
            index = [slice(None), slice(None)]
            index[axis] = slice(max(0, scale * start - width), scale * start + width)
            mask[tuple(index)] = True
    return mask


class DeviationSummary:
    """Mean and max absolute deviation of a tiled output from an untiled one, over all finite
    pixels and near seams, accumulated block by block (whole outputs need not be held twice)."""

    def __init__(self) -> None:
        self.sums = {"": 0.0, "seam_": 0.0}
        self.counts = {"": 0, "seam_": 0}
        self.maxes = {"": -np.inf, "seam_": -np.inf}

    def add(self, tiled: np.ndarray, untiled: np.ndarray, seams: np.ndarray) -> np.ndarray:
        """Adds a block (c, y, x) of both outputs and its ``seams`` mask (y, x); returns the
        block's absolute deviation (c, y, x), float64 (NaN where either is not finite)."""
        deviation = np.abs(tiled.astype(np.float64) - untiled.astype(np.float64))
        finite = np.isfinite(deviation).all(axis=0)
        for prefix, where in (("", finite), ("seam_", finite & seams)):
            values = deviation[:, where]
            if values.size:
                self.sums[prefix] += float(values.sum())
                self.counts[prefix] += values.size
                self.maxes[prefix] = max(self.maxes[prefix], float(values.max()))
        return deviation

    def result(self) -> dict[str, float]:
        """``mean``, ``max``, ``seam_mean``, ``seam_max`` (NaN where no pixel counted)."""
        out = {}
        for prefix in self.sums:
            n = self.counts[prefix]
            out[f"{prefix}mean"] = self.sums[prefix] / n if n else float("nan")
            out[f"{prefix}max"] = self.maxes[prefix] if n else float("nan")
        return out


def deviation_summary(tiled: np.ndarray, untiled: np.ndarray, seams: np.ndarray) -> dict[str, float]:
    """Mean and max absolute deviation of ``tiled`` from ``untiled`` (c, y, x), over all
    finite pixels and over those where ``seams`` (y, x) is set."""
    summary = DeviationSummary()
    summary.add(tiled, untiled, seams)
    return summary.result()


# ----------------------------------------------------------------------------------------------
# Batched calls


def vmapped(model: Model, x: jax.Array) -> jax.Array:
    """``model`` on each tile of ``x`` ``(n, C, h, w)``: the traced function of a batch."""
    return jax.vmap(model)(x)


# One jitted wrapper for every model: an Equinox module's arrays are arguments of the compiled
# call (not constants folded into it), and a model is traced once per batch shape per process.
_batched = eqx.filter_jit(vmapped)


def batch_call(model: Model, batch: np.ndarray) -> np.ndarray:
    """``model`` on each tile of ``batch`` ``(n, C, h, w)`` -> ``(n, C', s h, s w)``, compiled once
    per shape (and model structure) per process."""
    return np.asarray(_batched(model, jnp.asarray(batch)))


def output_scale(model: Model, in_bands: int, scale: int | None = None, sizes: Sequence[int] = (64, 128, 256)) -> int:
    """The model's integer scale ``s`` (output pixels per input pixel along each axis), from the
    shape it gives a ``(in_bands, n, n)`` input (traced only, not run); checks a given ``scale``.
    The first of ``sizes`` the model accepts is used."""
    failures = []
    for n in sizes:
        try:
            out = jax.eval_shape(model, jax.ShapeDtypeStruct((in_bands, n, n), jnp.float32))
        except Exception as e:  # a model may refuse some sizes (e.g. a U-Net: multiples of 2**levels)
            failures.append(f"{n}: {type(e).__name__}: {e}")
            continue
        shape = getattr(out, "shape", None)
        if shape is None or len(shape) != 3 or shape[1] != shape[2] or shape[1] % n or shape[1] < n:
            raise TilingError(
                f"the model maps ({in_bands}, {n}, {n}) to {shape if shape is not None else type(out)}; "
                f"it must give (bands, s*{n}, s*{n}) for an integer scale s >= 1"
            )
        found = shape[1] // n
        if scale is not None and scale != found:
            raise TilingError(
                f"scale {scale} given, but the model maps ({in_bands}, {n}, {n}) to {tuple(shape)}, scale {found}"
            )
        return found
    raise TilingError(f"the model fails on ({in_bands}, n, n) inputs for n in {tuple(sizes)} ({'; '.join(failures)})")


# ----------------------------------------------------------------------------------------------
# What a model needs: alignment (total stride) and receptive field, measured


def _probe(key: jax.Array, shape: tuple[int, ...], low: float, high: float) -> jax.Array:
    return jax.random.uniform(key, shape, jnp.float32, low, high)


def geometry_probe_form(model: Model) -> Model:
    """``model`` with every :class:`padding.Padding2dLayer` in it replaced by zero padding of the
    same size: the form :func:`alignment` and :func:`receptive_field` probe. Padding acts only
    at a feature map's edges, and both measurements look only where the edges do not reach, so
    the result is the model's own; but zero padding compiles in a fraction of the time of
    linear prediction padding (whose fitted predictor also ties every pixel of a map to every
    padded one). Models that are not Equinox modules (plain functions, closures) are probed as
    they are."""
    if not isinstance(model, eqx.Module):
        return model

    def is_padding(node: Any) -> bool:
        return isinstance(node, padding.Padding2dLayer)

    def zero(node: Any) -> Any:
        return padding.Padding2dLayer(node.num_padding, "zero") if is_padding(node) else node

    return jax.tree_util.tree_map(zero, model, is_leaf=is_padding)


def alignment(
    model: Model,
    in_bands: int,
    *,
    scale: int | None = None,
    max_align: int = MAX_ALIGN,
    probe_size: int = 128,
    max_probe_size: int = 1024,
    low: float = -1.0,
    high: float = 1.0,
    seed: int = 0,
) -> int:
    """The total stride ``a`` of ``model``: the smallest shift (input pixels) by which it is
    shift-equivariant, measured. 1 for a model without stride or pooling; 4 for a two-level
    U-Net.

    Windows of a random probe (uniform in ``[low, high)``) shifted by ``d = 1, 2, ...`` are run
    in one batch, and the outputs compared away from the windows' edges (a quarter of the
    window); the first ``d`` whose outputs agree (relative difference below 1e-4) is ``a``.
    Where none agrees, the window grows (edge effects may reach the compared region), up to
    ``max_probe_size``; then :class:`TilingError` (e.g. a global operation, or a stride above
    ``max_align``: pass ``align=`` yourself). The model is probed in its
    :func:`geometry_probe_form`."""
    scale = output_scale(model, in_bands, scale)
    model = geometry_probe_form(model)
    key = jax.random.PRNGKey(seed)
    n = _round_up(max(probe_size, 4 * max_align), max_align)
    while n <= max_probe_size:
        margin = n // 4
        image = _probe(key, (in_bands, n + max_align, n + max_align), low, high)
        for first in range(1, max_align + 1, 4):
            shifts = [0] + list(range(first, min(first + 4, max_align + 1)))
            batch = jnp.stack([image[:, d : d + n, d : d + n] for d in shifts])
            batch = jnp.concatenate([batch, jnp.repeat(batch[-1:], 5 - len(shifts), axis=0)])  # one shape
            out = np.asarray(_batched(model, batch), np.float64)
            tol = ALIGN_RTOL * max(np.abs(out[0]).max(), 1e-30)
            for i, d in enumerate(shifts[1:], 1):
                lo, hi = scale * (d + margin), scale * (n - margin)  # global output pixels compared
                if lo >= hi:
                    continue
                reference = out[0][:, lo:hi, lo:hi]
                shifted = out[i][:, lo - scale * d : hi - scale * d, lo - scale * d : hi - scale * d]
                if np.abs(reference - shifted).max() <= tol:
                    return d
        n *= 2
    raise TilingError(
        f"the model is not shift-equivariant by any shift up to {max_align} pixels away from the "
        f"edges of a {n // 2}x{n // 2} input: a global operation (global pooling, normalization over "
        f"the whole map, attention), or a larger stride? Pass align= (and halo=) yourself"
    )


def _gradient_support(model: Model, probes: jax.Array, cotangent: jax.Array) -> jax.Array:
    """``(n, n)``: where the gradient of ``<model(probe), cotangent>`` is non-zero for any probe
    and channel, as ``|gradient|`` maximum over them."""
    _, pullback = jax.vjp(lambda x: jax.vmap(model)(x), probes)
    (gradient,) = pullback(cotangent)
    return jnp.abs(gradient).max(axis=(0, 1))


_gradient_support_jit = eqx.filter_jit(_gradient_support)


def receptive_field(
    model: Model,
    in_bands: int,
    *,
    scale: int | None = None,
    align: int | None = None,
    probe_size: int = 32,
    max_probe_size: int = 1024,
    probes: int = 2,
    low: float = -1.0,
    high: float = 1.0,
    tolerance: float = 0.0,
    seed: int = 0,
) -> int:
    """The receptive-field radius of ``model`` in input pixels, measured: how far from an input
    pixel the inputs reach that its outputs depend on. 10 for RVSR; ``sum(dilations)`` for a
    stack of 3x3 convolutions.

    The gradient of the outputs of a central block of ``align`` x ``align`` input pixels (all
    phases of the model's stride; random cotangent) with respect to ``probes`` random inputs
    (uniform in ``[low, high)``) is taken; its support, where ``|gradient| > tolerance *
    max |gradient|``, is the dependency cone. The probe grows from ``probe_size`` (doubling)
    until the support keeps clear of its edge: until then the cone may reach the padding (with
    linear prediction padding, which is fitted to a whole feature map, the support is then the
    whole probe). A model whose support never keeps clear (global pooling, normalization over
    the map, attention) raises :class:`TilingError` at ``max_probe_size``. Several probes guard
    against inputs whose ReLUs happen to cut a path. ``tolerance`` 0 suits exact zeros, as with
    convolutions in space; a model using FFT convolutions needs a small one (e.g. 1e-6).
    ``align`` is measured with :func:`alignment` when not given. The model is probed in its
    :func:`geometry_probe_form` (the same support, a much cheaper compilation).

    With ``align`` > 1 the radius is that of an aligned ``align`` x ``align`` block, the one a
    halo needs (tiles start on the block grid); a single pixel inside the block may see up to
    ``align - 1`` pixels farther on one side.
    """
    scale = output_scale(model, in_bands, scale)
    model = geometry_probe_form(model)
    align = alignment(model, in_bands, scale=scale, low=low, high=high, seed=seed) if align is None else align
    key_x, key_c = jax.random.split(jax.random.PRNGKey(seed))
    n = _round_up(max(probe_size, 4 * align), align)
    while n <= max_probe_size:
        start = n // 2 // align * align  # the central block [start, start + align) in both axes
        x = _probe(key_x, (probes, in_bands, n, n), low, high)
        out = jax.eval_shape(lambda v: jax.vmap(model)(v), x)
        block = (
            slice(None),
            slice(None),
            slice(scale * start, scale * (start + align)),
            slice(scale * start, scale * (start + align)),
        )
        cotangent = jnp.zeros(out.shape, out.dtype)
        cotangent = cotangent.at[block].set(jax.random.normal(key_c, cotangent[block].shape, out.dtype))
        magnitude = np.asarray(_gradient_support_jit(model, x, cotangent))
        rows, cols = np.nonzero(magnitude > tolerance * magnitude.max())
        if rows.size == 0:
            return 0  # the outputs do not depend on the input
        lo, hi = min(rows.min(), cols.min()), max(rows.max(), cols.max())
        if lo >= align and hi < n - align:  # clear of the edge: the cone is all inside
            return int(max(start - lo, hi - (start + align - 1)))
        n *= 2
    raise TilingError(
        f"the model's receptive field reaches the edge of a {n // 2}x{n // 2} input: its outputs "
        f"depend on the whole input (a global operation such as global pooling, normalization over the "
        f"map or attention?), so no halo makes tiles exact; pass halo= yourself"
    )


# ----------------------------------------------------------------------------------------------
# The library entry


def predict_raster(
    model: Any,
    source: Any,
    destination: str | Path | None = None,
    *,
    scale: int | None = None,
    tile_size: int = 256,
    halo: int | str = "auto",
    align: int | str = "auto",
    batch_size: int = 4,
    bands: Sequence[int | str] | None = None,
    nodata: float | None = None,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    postprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    dtype: Any = None,
    out_nodata: float | None = None,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    security: Any = None,
    overwrite: bool = False,
    progress: bool | str = True,
    attrs: dict | None = None,
    resume_key: Any = None,
    band_descriptions: Sequence[str] | None = None,
) -> Any:
    """Run ``model`` over a raster tile by tile; returns the output array, or writes it.

    ``model``: one tile ``(C, h, w)`` -> ``(C', s h, s w)`` (an Equinox module, a plain or jitted
    function, a closure over a Flax ``apply``), or a :class:`tile_runner.ModelLoader` that loads
    it once per process (e.g. from a weights file, for Dask workers). Stateful Equinox models:
    wrap them, e.g. ``lambda x: model(x, state)[0]``.

    ``source``: a NumPy array ``(C, H, W)``, or a path: GeoTIFF (or anything GDAL reads),
    NetCDF (data variables ``(y, x)`` or ``(time, y, x)``, time index 0), Zarr (an array, or a
    group with one 3-D array such as this function writes) or ``.npy``. ``bands`` picks bands
    (numbers from 1; NetCDF: variable names); default all. Values reach the model as stored, as
    float32 (no unit scaling), unless ``preprocess`` (on the host, per read window, ``(C, h, w)``
    -> ``(C_model, h, w)``) changes them.

    ``destination``: None (return the array ``(C'', s H, s W)``), or a path ending in ``.tif`` /
    ``.tiff`` (a Cloud-Optimized GeoTIFF: internal tiles, overviews, deflate) or ``.zarr`` (an
    xarray dataset, variable ``data`` with dims ``(band, y, x)``, coordinates and a CF grid
    mapping, which ``xarray.open_zarr`` and GDAL both read). Georeferencing is the source's with
    the pixel size divided by ``s``. ``attrs`` go into the Zarr dataset's attributes and the
    GeoTIFF's metadata, with the run's ``scale``, ``halo``, ``tile_size``, ``align`` and
    ``software`` (this repository's version and git commit); ``band_descriptions`` (one per
    output band) into the GeoTIFF's band descriptions and the dataset's ``description``
    coordinate.

    ``scale``: ``s``; default: from the model's output shape. ``tile_size``: the core size in
    input pixels (a multiple of the alignment, >= 8). ``halo``: input pixels of overlap per
    side; ``"auto"`` is :func:`receptive_field` (rounded up to the alignment): outputs then equal
    a one-pass run, to float rounding, everywhere farther than the receptive field from the
    raster's outer edge; 0 is the paper's case (padding only; seams). ``align``: the total
    stride, ``"auto"`` = :func:`alignment`. ``batch_size``: tiles per model call (the last batch
    is filled up, so every call has one shape and the model compiles once).

    Invalid pixels (``nodata``, default the source's own, or NaN, in any band) are replaced by
    their nearest valid pixel in the read window before the model sees it; their outputs are
    ``out_nodata``. Tiles without a valid core pixel are skipped.

    ``postprocess``: on the host, per tile core, ``(C', h, w)`` -> ``(C'', h, w)``, e.g.
    ``lambda y: y.argmax(0)[None].astype(np.uint8)`` for a class map. ``dtype``: of the output
    (default: what the model or ``postprocess`` gives); integers are rounded and clipped.
    ``out_nodata``: default NaN for float output (a value valid outputs cannot take), the
    dtype's maximum (unsigned) or minimum (signed) for integers.

    Runs in this process, or on Dask: ``client`` (a ``distributed.Client``), ``scheduler`` (its
    address) or ``workers`` (a local cluster of that many processes, on 127.0.0.1). The model
    is sent once per worker (a ``ModelLoader`` instead loads it there); workers must import the
    model's module, like any Dask task, and see the source and destination folders; the
    scheduler needs only Dask. ``security``: a ``distributed.Security`` for ``scheduler`` and
    ``workers`` (e.g. :func:`tile_runner.tls_security` for TLS; default: Dask's configuration);
    a ``client`` brings its own.

    A path destination is written through ``DESTINATION.partial/`` (a Zarr store, a marker per
    finished tile, the run's settings): an interrupted run (Ctrl-C, SIGTERM raised as
    KeyboardInterrupt, a kill) rerun with the same arguments continues, and
    :class:`tile_runner.RunInterrupted` (a ``KeyboardInterrupt``) tells how far it got. A
    partial run with other settings (or model weights) is refused unless ``overwrite``, naming
    each setting that differs with both values; ``resume_key`` adds anything else that must
    match. The destination's folder must exist; the destination appears only when complete; an
    existing one is replaced only with ``overwrite``. Memory stays flat in the
    raster's size. ``progress``: a tqdm bar on stderr (a string labels it). Returns the array,
    or a :class:`tile_runner.RunSummary`.
    """
    import tile_runner

    return tile_runner.run(
        tile_runner.Request(
            model=model,
            source=source,
            destination=None if destination is None else Path(destination),
            scale=scale,
            tile_size=tile_size,
            halo=halo,
            align=align,
            batch_size=batch_size,
            bands=None if bands is None else tuple(bands),
            nodata=nodata,
            preprocess=preprocess,
            postprocess=postprocess,
            dtype=dtype,
            out_nodata=out_nodata,
            client=client,
            scheduler=scheduler,
            workers=workers,
            security=security,
            overwrite=overwrite,
            progress=progress,
            attrs=dict(attrs or {}),
            resume_key=resume_key,
            band_descriptions=None if band_descriptions is None else tuple(band_descriptions),
        )
    )


# ----------------------------------------------------------------------------------------------
# The paper's tiling figure: a 2x2 tiling around one tile corner


def two_by_two_tile_size(image_size: int, output_crop: int, sr_rate: int, paper_tile: int = 48) -> int:
    """The paper's 48-pixel input tile, or the largest that fits ``image_size`` (smaller test
    images): the 2x2 tiling of ``R = 2 tile - 2 oc`` input pixels needs ``sr (R + 2)`` pixels."""
    fitting = ((image_size - 2 * sr_rate) // sr_rate + 2 * output_crop) // 2
    return min(paper_tile, fitting)


def two_by_two(
    model: eqx.Module, state: eqx.nn.State, inputs: np.ndarray, tile: int, output_crop: int, sr_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(stitched, untiled)``: the output of a stateful model ``(3, y, x) -> (3, sr (y - 2 oc),
    sr (x - 2 oc))`` (RVSR) for ``inputs`` (3, R, R), ``R = 2 tile - 2 oc``, stitched from the
    four ``tile x tile`` input tiles of a 2x2 tiling (overlapping by ``2 oc`` so that their
    outputs abut), and in one piece. Both are (3, 2 sr step, 2 sr step), ``step = tile - 2 oc``."""
    step = tile - 2 * output_crop
    inputs = np.asarray(inputs)
    if inputs.shape[-1] != tile + step:
        raise ValueError(f"inputs of size {inputs.shape[-1]} do not match tile {tile} and output crop {output_crop}")
    stateless = _Stateless(model, state)
    untiled = batch_call(stateless, inputs[None])[0]
    windows = np.stack([inputs[:, y : y + tile, x : x + tile] for y in (0, step) for x in (0, step)])
    top_left, top_right, bottom_left, bottom_right = batch_call(stateless, windows)
    stitched = np.concatenate(
        [np.concatenate([top_left, top_right], axis=-1), np.concatenate([bottom_left, bottom_right], axis=-1)], axis=-2
    )
    return stitched, untiled


class _Stateless(eqx.Module):
    """A stateful Equinox model ``(x, state) -> (y, state)`` as ``x -> y``."""

    model: eqx.Module
    state: eqx.nn.State

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.model(x, self.state)[0]


def stateless(model: eqx.Module, state: eqx.nn.State) -> eqx.Module:
    """A stateful Equinox model (``out, state = model(x, state)``, e.g. RVSR) as a model of one
    tile ``x -> out`` for :func:`predict_raster`, keeping its arrays as arguments of the
    compiled call (a lambda would fold them into it as constants)."""
    return _Stateless(model, state)
