"""Tiled processing of a raster by a super-resolution model: the tile grid, halos, batched
model calls on tiles of equal shape, and stitching.

This is the tiled CNN processing that the paper studies (Niemitalo et al. 2025,
arXiv:2502.12300): a raster too big for one pass is cut into tiles, each tile's edges are
padded by the model's own padding (zero, replication, linear prediction, ...), and the
outputs are put back together. Where the padding differs from the true neighbouring data,
the stitched output shows seams. An optional halo (overlap) lets each tile see more of its
neighbours, and its outputs are cropped away.

Geometry, in input pixels. The *core* of a tile is the part of the raster whose outputs the
tile provides; the cores partition the region the model predicts (the whole raster for
output crop 0; ``[oc, size - oc)`` per axis for output crop ``oc``) into ``tile_size`` squares,
smaller at the right and bottom edges. The *read window* is the core grown by ``halo + oc``
pixels per side, clipped to the raster: the model sees that window, padded at all its edges.
The model maps a read window ``(3, h, w)`` to ``(3, sr (h - 2 oc), sr (w - 2 oc))``, the outputs
of the input pixels ``[oc, h - oc)``; output pixel ``sr * (p - oc)`` starts the output of input
pixel ``p``. ``superresolve.py`` and the tiling figure (``figures.py``) both use this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import rvsr

# The receptive field radius of RVSR in input pixels: one 3x3 convolution in the head, one
# per body block (the RepConv; the FFN is pointwise), one in the tail, and the bilinear skip
# path reaches one pixel. It equals the output crop at which no layer is padded.
RECEPTIVE_FIELD_RADIUS = 1 + rvsr.NUM_BODY_BLOCKS + 1
assert RECEPTIVE_FIELD_RADIUS == rvsr.MAX_OUTPUT_CROP

Span = tuple[int, int]
"""A half-open range ``[start, stop)`` of pixel indices along one axis."""


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile: grid position, core and read window (input pixels, half-open spans)."""

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


def _spans(size: int, tile_size: int, margin: int) -> list[Span]:
    """Cores of ``tile_size`` covering ``[margin, size - margin)``, the last one smaller."""
    return [(start, min(start + tile_size, size - margin)) for start in range(margin, size - margin, tile_size)]


def tile_grid(height: int, width: int, tile_size: int, halo: int = 0, output_crop: int = 0) -> list[Tile]:
    """The tiles of a ``height`` x ``width`` raster, row by row. Raises ``ValueError`` when the
    raster leaves nothing to predict or an argument is out of range."""
    if tile_size < 1 or halo < 0 or output_crop < 0:
        raise ValueError(f"tile_size must be >= 1 and halo, output_crop >= 0; got {tile_size}, {halo}, {output_crop}")
    if min(height, width) <= 2 * output_crop:
        raise ValueError(f"a {height}x{width} raster is too small for output crop {output_crop}")
    grow = halo + output_crop
    tiles = []
    for row, (y0, y1) in enumerate(_spans(height, tile_size, output_crop)):
        for col, (x0, x1) in enumerate(_spans(width, tile_size, output_crop)):
            tiles.append(Tile(row, col, (y0, y1), (x0, x1),
                              (max(0, y0 - grow), min(height, y1 + grow)), (max(0, x0 - grow), min(width, x1 + grow))))
    return tiles


def output_span(span: Span, sr_rate: int, output_crop: int = 0) -> Span:
    """Output pixels of the input pixels ``span`` (in the stitched output's coordinates)."""
    return sr_rate * (span[0] - output_crop), sr_rate * (span[1] - output_crop)


def crop_to_core(output: np.ndarray, tile: Tile, sr_rate: int) -> np.ndarray:
    """The core's part ``(c, sr core_h, sr core_w)`` of the model's output ``(c, H, W)`` for the
    tile's read window. Works for any output crop: the output starts at read start + oc, and
    the core's offset from there is ``core start - read start - oc``; ``output.shape`` tells oc."""
    read_h, read_w = tile.read_shape
    oc = (read_h - output.shape[-2] // sr_rate) // 2
    top = sr_rate * (tile.core_y[0] - tile.read_y[0] - oc)
    left = sr_rate * (tile.core_x[0] - tile.read_x[0] - oc)
    height = sr_rate * (tile.core_y[1] - tile.core_y[0])
    width = sr_rate * (tile.core_x[1] - tile.core_x[0])
    return output[..., top:top + height, left:left + width]


def batches(tiles: Iterable[Tile], batch_size: int) -> Iterator[list[Tile]]:
    """Groups of at most ``batch_size`` tiles with equal read shapes (one model call each),
    in grid order within a shape."""
    by_shape: dict[tuple[int, int], list[Tile]] = {}
    for tile in tiles:
        by_shape.setdefault(tile.read_shape, []).append(tile)
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


BatchApply = Callable[[np.ndarray], np.ndarray]
"""A model call on a batch ``(n, 3, h, w)`` -> ``(n, 3, sr (h - 2 oc), sr (w - 2 oc))``."""


def make_batch_apply(model: rvsr.RVSR, state: eqx.nn.State, batch_size: int | None = None) -> BatchApply:
    """A jitted batched call of ``model``. With ``batch_size``, smaller batches are padded to it
    by repeating their last tile, so that each tile shape compiles once."""
    apply = eqx.filter_jit(jax.vmap(lambda x: model(x, state)[0]))

    def call(batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if batch_size is not None and n < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)])
        return np.asarray(apply(jnp.asarray(batch)))[:n]

    return call


def stitch(apply: BatchApply, image: np.ndarray, tile_size: int, halo: int = 0, output_crop: int = 0,
           sr_rate: int = 4, batch_size: int = 4) -> np.ndarray:
    """The tiled output of ``image`` (c, y, x), held whole: for small rasters (figures, tests).
    Returns (c, sr (y - 2 oc), sr (x - 2 oc))."""
    c, height, width = image.shape
    out = np.empty((c, sr_rate * (height - 2 * output_crop), sr_rate * (width - 2 * output_crop)), np.float32)
    for group in batches(tile_grid(height, width, tile_size, halo, output_crop), batch_size):
        windows = np.stack([image[:, t.read_y[0]:t.read_y[1], t.read_x[0]:t.read_x[1]] for t in group])
        for tile, tile_out in zip(group, apply(windows)):
            (y0, y1), (x0, x1) = output_span(tile.core_y, sr_rate, output_crop), output_span(tile.core_x, sr_rate, output_crop)
            out[:, y0:y1, x0:x1] = crop_to_core(tile_out, tile, sr_rate)
    return out


def seam_mask(tiles: Sequence[Tile], output_shape: tuple[int, int], sr_rate: int, width: int = 4,
              output_crop: int = 0) -> np.ndarray:
    """Boolean ``output_shape`` (y, x) mask of the output pixels within ``width`` pixels of a
    seam, i.e. of a core boundary inside the raster (not its outer edge)."""
    mask = np.zeros(output_shape, bool)
    for axis, starts in ((0, {t.core_y[0] for t in tiles}), (1, {t.core_x[0] for t in tiles})):
        first = min(starts)
        for start in sorted(starts - {first}):
            edge = sr_rate * (start - output_crop)
            index = [slice(None), slice(None)]
            index[axis] = slice(max(0, edge - width), edge + width)
            mask[tuple(index)] = True
    return mask


def deviation_summary(tiled: np.ndarray, untiled: np.ndarray, seams: np.ndarray) -> dict[str, float]:
    """Mean and max absolute deviation of ``tiled`` from ``untiled`` (c, y, x), over all
    finite pixels and over those where ``seams`` (y, x) is set."""
    deviation = np.abs(tiled.astype(np.float64) - untiled.astype(np.float64))
    finite = np.isfinite(deviation).all(axis=0)
    overall = deviation[:, finite]
    near = deviation[:, finite & seams]
    return {
        "mean": float(overall.mean()) if overall.size else float("nan"),
        "max": float(overall.max()) if overall.size else float("nan"),
        "seam_mean": float(near.mean()) if near.size else float("nan"),
        "seam_max": float(near.max()) if near.size else float("nan"),
    }


# ----------------------------------------------------------------------------------------------
# The paper's tiling figure: a 2x2 tiling around one tile corner


def two_by_two_tile_size(image_size: int, output_crop: int, sr_rate: int, paper_tile: int = 48) -> int:
    """The paper's 48-pixel input tile, or the largest that fits ``image_size`` (smaller test
    images): the 2x2 tiling of ``R = 2 tile - 2 oc`` input pixels needs ``sr (R + 2)`` pixels."""
    fitting = ((image_size - 2 * sr_rate) // sr_rate + 2 * output_crop) // 2
    return min(paper_tile, fitting)


def two_by_two(model: rvsr.RVSR, state: eqx.nn.State, inputs: np.ndarray, tile: int, output_crop: int,
               sr_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(stitched, untiled)``: the model's output for ``inputs`` (3, R, R), ``R = 2 tile - 2 oc``,
    stitched from the four ``tile x tile`` input tiles of a 2x2 tiling (overlapping by ``2 oc``
    so that their outputs abut), and in one piece. Both are (3, 2 sr step, 2 sr step) with
    ``step = tile - 2 oc``."""
    step = tile - 2 * output_crop
    if inputs.shape[-1] != tile + step:
        raise ValueError(f"inputs of size {inputs.shape[-1]} do not match tile {tile} and output crop {output_crop}")
    apply = make_batch_apply(model, state)
    untiled = apply(np.asarray(inputs)[None])[0]
    # Cores of `step` pixels starting at oc: the read windows are the four tile x tile squares.
    stitched = stitch(apply, np.asarray(inputs), step, halo=0, output_crop=output_crop, sr_rate=sr_rate)
    return stitched, np.asarray(untiled)
