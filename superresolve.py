"""Super-resolve a large raster with a trained RVSR model, tile by tile.

    python superresolve.py INPUT OUTPUT --model results/trained_models/lp2x3_s0.eqx
        [--preset NAME] [--bands 4,3,2] [--units dn|model] [--nodata VALUE]
        [--tile-size 256] [--halo 0|H|auto] [--batch-size 4] [--training-form]
        [--workers N | --scheduler ADDRESS] [--compare-untiled [--compare-output FILE.npz]]
        [--overwrite] [--no-progress]

This is the tiled processing studied by Niemitalo et al. (2025), "Per-channel autoregressive
linear prediction padding in tiled CNN processing of 2D spatial data" (arXiv:2502.12300): each
tile is padded at its edges by the model's own padding (the paper's case, ``--halo 0``), or
overlaps its neighbours by a halo whose outputs are cropped away. The geometry is in
``tiling.py``; README.md, section "Super-resolving a large raster", is the user guide.

Input: a GeoTIFF (or anything GDAL reads), a NetCDF file of the dataset's format (variables
B04, B03, B02, first time step), a Zarr array, or a .npy array, each ``(band, y, x)``.
Output: a tiled, compressed float32 GeoTIFF with the input's CRS, origin, and pixel size
divided by the model's rate (4), or a Zarr array when OUTPUT ends in ``.zarr``.

How a run goes: the tiles' outputs go into a Zarr store in ``OUTPUT.partial/`` (one chunk per
tile), and each finished tile leaves a marker file there. Killed or interrupted, a rerun of the
same command skips the marked tiles. When all are done, the GeoTIFF is assembled from the
store tile by tile (or the store itself becomes the Zarr output) and renamed into place, so
OUTPUT exists only when complete, and memory never holds the whole raster.

Invalid pixels (the input's nodata value, or NaN) give nodata outputs. Before the model sees a
tile, each invalid pixel is replaced by its nearest valid pixel in the tile's read window:
the model's padding (linear prediction is fitted on all pixels of a map) must not see NaN,
and a nearest-valid fill continues the image without adding edges. Tiles without a valid
pixel are skipped.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import logging
import os
import resource
import shutil
import signal
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import cli
import presets
import run_layout
import tiling
from cli import UserError, non_negative_int, positive_int, run_script
from sentinel2 import BANDS, dn_to_model_units, model_units_to_dn

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = cli.EXIT_ERROR, cli.EXIT_USAGE, cli.EXIT_INTERRUPTED
REPO = Path(__file__).resolve().parent
SEAM_WIDTH = 4  # output pixels on each side of a seam counted as "near the seam"
MAX_COMPARE_PIXELS = 4096 * 4096  # --compare-untiled runs the model on the whole raster at once
WORK_SUFFIX = ".partial"
GEOTIFF_SUFFIXES = (".tif", ".tiff")
BIGTIFF_BYTES = 3 * 2**30  # above this many uncompressed bytes, write BigTIFF (classic TIFF ends at 4 GiB)


# ----------------------------------------------------------------------------------------------
# Readers: one class per input format, all giving raw values (band, y, x) of a window


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """Which raster to read and how: picklable, so that Dask workers open their own reader."""

    path: str
    bands: tuple[str, ...] | None = None  # band numbers from 1 (NetCDF: variable names); None: default
    units: str = "dn"  # "dn": digital numbers, scaled as the dataset; "model": read unchanged
    nodata: float | None = None  # overrides the file's nodata value


@dataclasses.dataclass(frozen=True)
class RasterInfo:
    height: int
    width: int
    crs: str | None  # WKT
    transform: tuple[float, ...] | None  # affine a, b, c, d, e, f (rasterio / GDAL order a..f)
    nodata: float | None


class Reader(Protocol):
    info: RasterInfo

    def read(self, rows: tiling.Span, cols: tiling.Span) -> np.ndarray:
        """Raw values of the selected 3 bands in the window: (3, h, w)."""


def _band_numbers(spec: InputSpec, count: int) -> list[int]:
    """0-based indexes of the 3 bands to read from a ``count``-band raster."""
    if count < 3:
        raise UserError(f"{spec.path} has {count} band(s); the model needs 3 (red, green, blue)")
    if spec.bands is None:
        return [0, 1, 2]
    try:
        numbers = [int(b) for b in spec.bands]
    except ValueError:
        raise UserError(f"--bands must be band numbers from 1 for {spec.path}, got {','.join(spec.bands)}") from None
    if any(not 1 <= n <= count for n in numbers):
        raise UserError(f"--bands {','.join(spec.bands)}: {spec.path} has bands 1..{count}")
    return [n - 1 for n in numbers]


class GeoTiffReader:
    """GeoTIFF (or any raster GDAL opens), read by windows with rasterio."""

    def __init__(self, spec: InputSpec):
        import rasterio

        try:
            self.dataset = rasterio.open(spec.path)
        except Exception as e:  # rasterio raises RasterioIOError and friends; name the file
            raise UserError(f"cannot read {spec.path} as a raster ({type(e).__name__}: {e})") from None
        ds = self.dataset
        self.indexes = [i + 1 for i in _band_numbers(spec, ds.count)]
        nodata = next((ds.nodatavals[i - 1] for i in self.indexes if ds.nodatavals[i - 1] is not None), None)
        georeferenced = ds.crs is not None or not ds.transform.is_identity
        self.info = RasterInfo(ds.height, ds.width, ds.crs.to_wkt() if ds.crs else None,
                               tuple(ds.transform)[:6] if georeferenced else None,
                               spec.nodata if spec.nodata is not None else nodata)

    def read(self, rows: tiling.Span, cols: tiling.Span) -> np.ndarray:
        from rasterio.windows import Window

        window = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
        return self.dataset.read(self.indexes, window=window)


class NetCDFReader:
    """The dataset's NetCDF files: variables B04, B03, B02 with dims (time, y, x), time index 0.
    Georeferencing comes from regular ``y``/``x`` pixel-centre coordinates and a CF grid mapping
    (``crs_wkt`` / ``spatial_ref`` attribute), when present."""

    def __init__(self, spec: InputSpec):
        import xarray as xr

        names = spec.bands or BANDS
        if len(names) != 3:
            raise UserError(f"--bands needs 3 NetCDF variable names for {spec.path}, got {len(names)}")
        try:
            # mask_and_scale=False: the raw digital numbers, as make_dataset_npys.py reads them.
            self.dataset = xr.open_dataset(spec.path, engine="netcdf4", mask_and_scale=False, decode_times=False)
        except Exception as e:
            raise UserError(f"cannot read {spec.path} as NetCDF ({type(e).__name__}: {e})") from None
        missing = [n for n in names if n not in self.dataset.data_vars]
        if missing:
            raise UserError(f"{spec.path} lacks variable(s) {', '.join(missing)}; it has "
                            f"{', '.join(map(str, self.dataset.data_vars)) or 'none'} (3 bands are needed)")
        self.variables = [self.dataset[n] for n in names]
        shapes = {v.shape for v in self.variables}
        if len(shapes) != 1 or self.variables[0].ndim != 3:
            raise UserError(f"{spec.path}: bands {', '.join(names)} must share dims (time, y, x); shapes {shapes}")
        _, height, width = self.variables[0].shape
        attrs = self.variables[0].attrs
        nodata = attrs.get("_FillValue", attrs.get("missing_value"))
        self.info = RasterInfo(height, width, self._crs(), self._transform(),
                               spec.nodata if spec.nodata is not None else (None if nodata is None else float(nodata)))

    def _crs(self) -> str | None:
        mapping = self.variables[0].attrs.get("grid_mapping")
        candidates = [self.dataset[mapping]] if mapping in self.dataset.variables else list(self.dataset.variables.values())
        for variable in candidates:
            for key in ("crs_wkt", "spatial_ref"):
                if key in variable.attrs:
                    return str(variable.attrs[key])
        return None

    def _transform(self) -> tuple[float, ...] | None:
        dims = self.variables[0].dims
        if dims[1] not in self.dataset.coords or dims[2] not in self.dataset.coords:
            return None
        y, x = (np.asarray(self.dataset[d].values, dtype=np.float64) for d in dims[1:])
        if len(y) < 2 or len(x) < 2 or np.ptp(np.diff(y)) > 1e-6 * abs(y[1] - y[0]) \
                or np.ptp(np.diff(x)) > 1e-6 * abs(x[1] - x[0]):
            return None  # not a regular grid
        dy, dx = y[1] - y[0], x[1] - x[0]
        return (dx, 0.0, x[0] - dx / 2, 0.0, dy, y[0] - dy / 2)  # coordinates are pixel centres

    def read(self, rows: tiling.Span, cols: tiling.Span) -> np.ndarray:
        return np.stack([v[0, rows[0]:rows[1], cols[0]:cols[1]].values for v in self.variables])


class ArrayReader:
    """A ``(band, y, x)`` array: .npy (memory-mapped) or Zarr (an array, or a group holding one).
    Zarr attributes ``crs``, ``transform`` and ``nodata`` (as this script writes them) are used."""

    def __init__(self, spec: InputSpec):
        attrs: dict[str, Any] = {}
        try:
            if spec.path.rstrip("/").endswith(".zarr"):
                import zarr

                node = zarr.open(spec.path, mode="r")
                if isinstance(node, zarr.Group):
                    arrays = list(node.arrays())
                    if len(arrays) != 1:
                        raise UserError(f"{spec.path}: a Zarr group must hold exactly one array, found {len(arrays)}")
                    node = arrays[0][1]
                self.array, attrs = node, dict(node.attrs)
            else:
                self.array = np.load(spec.path, mmap_mode="r", allow_pickle=False)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"cannot read {spec.path} ({type(e).__name__}: {e})") from None
        if self.array.ndim != 3:
            raise UserError(f"{spec.path}: expected an array (band, y, x), got shape {self.array.shape}")
        self.indexes = _band_numbers(spec, self.array.shape[0])
        nodata = spec.nodata if spec.nodata is not None else attrs.get("nodata")
        transform = attrs.get("transform")
        self.info = RasterInfo(int(self.array.shape[1]), int(self.array.shape[2]), attrs.get("crs"),
                               None if transform is None else tuple(transform),
                               None if nodata is None else float(nodata))

    def read(self, rows: tiling.Span, cols: tiling.Span) -> np.ndarray:
        return np.stack([np.asarray(self.array[i, rows[0]:rows[1], cols[0]:cols[1]]) for i in self.indexes])


def open_reader(spec: InputSpec) -> Reader:
    """The reader for ``spec.path``'s format (by its suffix; GDAL for anything unknown)."""
    path = Path(spec.path)
    if not path.exists():
        raise UserError(f"input {spec.path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".nc":
        return NetCDFReader(spec)
    if suffix in (".zarr", ".npy"):
        return ArrayReader(spec)
    return GeoTiffReader(spec)


def to_model_units(raw: np.ndarray, units: str, nodata: float | None) -> np.ndarray:
    """Raw values (3, h, w) in model units, float32, NaN where the pixel is invalid in any band.
    Scaling is done in float64 (digital numbers can exceed 16383), as the dataset's conversion."""
    x = raw.astype(np.float64)
    invalid = ~np.isfinite(x).all(axis=0)
    if nodata is not None and np.isfinite(nodata):
        invalid |= (raw == nodata).any(axis=0)
    if units == "dn":
        x = dn_to_model_units(x)
    x[:, invalid] = np.nan
    return x.astype(np.float32)


def from_model_units(y: np.ndarray, units: str) -> np.ndarray:
    """Model output (3, h, w) in the output units (the inverse scaling for "dn"), float32."""
    return (model_units_to_dn(y) if units == "dn" else y).astype(np.float32)


def fill_invalid(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``x`` (3, h, w) with NaN at invalid pixels -> ``(filled, valid)``: each invalid pixel takes
    the values of its nearest valid pixel (Euclidean), ``valid`` is (h, w) bool. None if no
    pixel is valid."""
    valid = np.isfinite(x).all(axis=0)
    if valid.all():
        return x, valid
    if not valid.any():
        return None
    from scipy import ndimage

    nearest = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return x[:, nearest[0], nearest[1]], valid


# ----------------------------------------------------------------------------------------------
# The model


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    path: str
    preset: str
    reparameterize: bool = True


def resolve_preset(model_path: str, preset: str | None) -> str:
    """The preset named by ``--preset`` or by the ``{preset}_s{seed}.eqx`` file name."""
    if preset is None:
        parsed = run_layout.parse_model_stem(Path(model_path).stem)
        if parsed is None:
            raise UserError(f"cannot tell the preset from the file name {Path(model_path).name}; "
                            "name it {preset}_s{seed}.eqx or give --preset")
        preset = parsed[0]
    if preset not in presets.presets:
        raise UserError(f"unknown preset {preset!r}; known presets: {', '.join(presets.presets)}")
    return preset


def load_model(spec: ModelSpec) -> tuple[Any, Any, int]:
    """``(model, state, sr_rate)``: the weights of ``spec.path`` in an output crop 0 model (every
    layer padded, so any tile size works and the raster's outer edge is padded by the model's
    own padding, as in training), reparameterized unless the spec says otherwise."""
    import published_models
    import rvsr

    path = Path(spec.path)
    if not path.is_file():
        raise UserError(f"model file {spec.path} does not exist")
    parsed = run_layout.parse_model_stem(path.stem)
    try:
        if parsed is not None and parsed[0] == spec.preset:
            model, state = published_models.load_trained_model(
                run_layout.TrainedModel(spec.preset, parsed[1], path.parent), output_crop=0)
        else:  # a file named otherwise, with --preset
            hpars = presets.get_preset_hpars(spec.preset)
            model_hpars = {**hpars["model_hpars"], "hidden_channels": published_models.read_hidden_channels(path)}
            model, state = rvsr.load_rvsr(path, model_hpars, hpars["sr_rate"], output_crop=0)
    except (UserError, OSError, ValueError) as e:
        raise UserError(f"{spec.path} is not usable RVSR weights for preset {spec.preset} ({e})") from None
    if spec.reparameterize:
        model = rvsr.reparameterize(model)
    return model, state, model.sr_rate


# Per-process caches: a Dask worker runs many batches and loads the model (and opens the input)
# once. The lock keeps two threads of a worker from loading the same model twice; it is
# re-entrant because one cached value is made from another.
_CACHE: dict[Any, Any] = {}
_CACHE_LOCK = threading.RLock()


def _cached(key: Any, make: Any) -> Any:
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]


def _forget_files() -> None:
    """Drop cached readers and stores (a new run in this process may reuse their paths)."""
    with _CACHE_LOCK:
        for key in [k for k in _CACHE if k[0] in ("reader", "store")]:
            del _CACHE[key]


# An input left open until the interpreter's final garbage collection would be closed by its
# __del__ when the modules it needs are gone (rasterio then reports "Error in sys.excepthook" on
# stderr): drop the cached files while the interpreter is still whole, also on Dask workers.
atexit.register(_forget_files)


def loaded_model(spec: ModelSpec) -> tuple[Any, Any, int]:
    """:func:`load_model`, once per process."""
    return _cached(("loaded", spec), lambda: load_model(spec))


def batch_apply(spec: ModelSpec, batch_size: int) -> tiling.BatchApply:
    """The jitted batched model call, once per process (its compilations are kept with it)."""
    def make() -> tiling.BatchApply:
        model, state, _ = loaded_model(spec)
        return tiling.make_batch_apply(model, state, batch_size)

    return _cached(("apply", spec, batch_size), make)


# ----------------------------------------------------------------------------------------------
# The runner: one batch of tiles, in this process or on a Dask worker


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a worker needs to process tiles (picklable)."""

    input: InputSpec
    model: ModelSpec
    work_dir: str
    sr_rate: int
    batch_size: int
    nodata_out: float
    run_id: str  # of the work folder: long-lived workers must not reuse files cached for another run

    @property
    def store(self) -> str:
        return str(Path(self.work_dir) / "output.zarr")

    @property
    def done_dir(self) -> Path:
        return Path(self.work_dir) / "done"


def process_batch(job: Job, tiles: Sequence[tiling.Tile]) -> list[tuple[str, int]]:
    """Read, fill, super-resolve and write ``tiles`` (equal read shapes); returns
    ``(tile key, input pixels processed)`` per tile (0 for a tile skipped as all nodata).
    Each tile's output chunk is written before its done marker, so a marker means a
    complete chunk."""
    import zarr

    with _CACHE_LOCK:
        if ("store", job.store, job.run_id) not in _CACHE:
            _forget_files()  # a new run: close nothing explicitly, just drop the previous run's handles
        reader = _cached(("reader", job.input, job.run_id), lambda: open_reader(job.input))
        store = _cached(("store", job.store, job.run_id), lambda: zarr.open_array(job.store, mode="r+"))
    windows, valid_masks, todo, results = [], [], [], []
    for tile in tiles:
        x = to_model_units(reader.read(tile.read_y, tile.read_x), job.input.units, reader.info.nodata)
        filled = fill_invalid(x)
        core = (slice(tile.core_y[0] - tile.read_y[0], tile.core_y[1] - tile.read_y[0]),
                slice(tile.core_x[0] - tile.read_x[0], tile.core_x[1] - tile.read_x[0]))
        if filled is None or not filled[1][core].any():
            (job.done_dir / tile.key).touch()  # nothing valid: the store's fill value is nodata
            results.append((tile.key, 0))
            continue
        windows.append(filled[0])
        valid_masks.append(filled[1][core])
        todo.append(tile)
    if todo:
        outputs = batch_apply(job.model, job.batch_size)(np.stack(windows))
        sr = job.sr_rate
        for tile, out, valid in zip(todo, outputs, valid_masks):
            out = from_model_units(tiling.crop_to_core(out, tile, sr), job.input.units)
            out[:, ~np.repeat(np.repeat(valid, sr, axis=0), sr, axis=1)] = job.nodata_out
            (y0, y1), (x0, x1) = tiling.output_span(tile.core_y, sr), tiling.output_span(tile.core_x, sr)
            store[:, y0:y1, x0:x1] = out
            (job.done_dir / tile.key).touch()
            results.append((tile.key, tile.core_pixels))
    return results


def compile_tile_shapes(job: Job, tiles: Iterable[tiling.Tile]) -> int:
    """Compile the model for every read shape among ``tiles`` (one call on zeros each), so that
    the timed run measures steady-state throughput; returns the number of shapes."""
    apply = batch_apply(job.model, job.batch_size)
    shapes = sorted({t.read_shape for t in tiles})
    for height, width in shapes:
        apply(np.zeros((1, 3, height, width), np.float32))
    return len(shapes)


def run_local(job: Job, groups: Iterable[list[tiling.Tile]], progress: Any) -> int:
    """Process ``groups`` in this process; returns the input pixels processed."""
    pixels = 0
    for group in groups:
        results = process_batch(job, group)
        pixels += sum(n for _, n in results)
        progress.update(len(results))
    return pixels


def _worker_environment() -> dict[str, str]:
    """Environment for local Dask workers: the repository importable, and JAX not grabbing
    all GPU memory at start (several workers may share a machine)."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), path) if p),
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def run_dask(job: Job, groups: Iterable[list[tiling.Tile]], progress: Any, workers: int | None,
             scheduler: str | None) -> int:
    """Process ``groups`` on a Dask cluster: a local one of ``workers`` processes, or the one at
    ``scheduler``. Each task reads its own tiles and writes their chunks into the store (which
    must be on a file system the workers share); only tile keys come back."""
    from dask.distributed import Client, LocalCluster, as_completed

    if scheduler is not None:
        try:
            client_context = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as e:
            raise UserError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None
        cluster = None
    else:
        os.environ.update(_worker_environment())  # the nannies start workers with this environment
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client_context = Client(cluster)
    pixels = 0
    try:
        with client_context as client:
            # This module is imported as `superresolve` (see the bottom of the file), so tasks refer
            # to superresolve.process_batch, which workers import from the repository.
            futures = [client.submit(process_batch, job, group, pure=False) for group in groups]
            for future in as_completed(futures):
                try:
                    results = future.result()
                except (ImportError, AttributeError) as e:
                    # Typically a worker that cannot import this repository.
                    raise UserError(f"a Dask task failed ({type(e).__name__}: {e}); start the workers with this "
                                    f"repository ({REPO}) on PYTHONPATH, see README.md") from None
                except UserError as e:
                    raise UserError(f"on a Dask worker: {e}") from None
                pixels += sum(n for _, n in results)
                progress.update(len(results))
    finally:
        if cluster is not None:
            cluster.close()
    return pixels


# ----------------------------------------------------------------------------------------------
# The work folder and the outputs


def settings_record(args: argparse.Namespace, spec: InputSpec, model: ModelSpec, info: RasterInfo) -> dict:
    """What must match for a rerun to continue a partial run."""
    def identity(path: str) -> list:
        stat = os.stat(path)
        return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]

    return {"input": identity(spec.path), "bands": spec.bands, "units": spec.units, "nodata": spec.nodata,
            "size": [info.height, info.width], "model": identity(model.path), "preset": model.preset,
            "reparameterize": model.reparameterize, "tile_size": args.tile_size, "halo": args.halo}


def prepare_work_dir(work_dir: Path, settings: dict, overwrite: bool, shape: tuple[int, int, int],
                     chunk: int, nodata_out: float, attrs: dict) -> tuple[int, str]:
    """Create the work folder (Zarr store, done markers, settings) or reuse a matching one;
    returns the number of tiles already done and the folder's run id."""
    import zarr

    settings_path = work_dir / "settings.json"
    if work_dir.exists():
        try:
            previous = json.loads(settings_path.read_text())
        except (OSError, ValueError):
            previous = None  # created but never finished setting up: start again
        if previous is not None and previous != settings:
            if not overwrite:
                raise UserError(f"{work_dir} holds a partial run with other settings; rerun that command to "
                                f"finish it, or pass --overwrite to discard it")
            previous = None
        if not (work_dir / "output.zarr" / "zarr.json").exists():
            previous = None  # the store was published (a Zarr output) before the folder was removed
        if previous is None:
            shutil.rmtree(work_dir)
    if not work_dir.exists():
        (work_dir / "done").mkdir(parents=True)
        array = zarr.open_array(str(work_dir / "output.zarr"), mode="w", shape=shape, chunks=(shape[0], chunk, chunk),
                                dtype="float32", fill_value=nodata_out)
        array.attrs.update(attrs)
        (work_dir / "run_id").write_text(uuid.uuid4().hex)
        # Written last: its presence means the store is ready.
        tmp = settings_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(settings))
        os.replace(tmp, settings_path)
    return len(os.listdir(work_dir / "done")), (work_dir / "run_id").read_text()


def output_transform(info: RasterInfo, sr_rate: int) -> tuple[float, ...] | None:
    """The input's affine transform with the pixel size divided by ``sr_rate``, same origin."""
    if info.transform is None:
        return None
    a, b, c, d, e, f = info.transform
    return (a / sr_rate, b / sr_rate, c, d / sr_rate, e / sr_rate, f)


def _block_size(tile_output: int) -> int:
    """A GeoTIFF block size (multiple of 16) that divides a tile's output, so that writing one
    tile completes its blocks and GDAL's cache can flush them."""
    return next((b for b in (512, 256, 128, 64, 32, 16) if tile_output % b == 0), 256)


def assemble_geotiff(job: Job, tiles: Sequence[tiling.Tile], path: Path, info: RasterInfo, tile_size: int) -> None:
    """Write the store as a tiled, deflate-compressed float32 GeoTIFF at ``path``, one tile's
    output at a time."""
    import rasterio
    import zarr
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import Affine
    from rasterio.windows import Window

    store = zarr.open_array(job.store, mode="r")
    bands, height, width = store.shape
    transform = output_transform(info, job.sr_rate)
    block = _block_size(job.sr_rate * tile_size)
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": "float32",
        "nodata": job.nodata_out, "tiled": True, "blockxsize": block, "blockysize": block,
        "compress": "deflate", "predictor": 3, "interleave": "pixel",
        "bigtiff": "YES" if store.nbytes > BIGTIFF_BYTES else "NO",
        "crs": info.crs, "transform": Affine(*transform) if transform else None,
    }
    # A small block cache: finished blocks go to disk instead of piling up in memory.
    with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=64):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **{k: v for k, v in profile.items() if v is not None}) as dst:
            for tile in tiles:
                (y0, y1), (x0, x1) = tiling.output_span(tile.core_y, job.sr_rate), tiling.output_span(tile.core_x, job.sr_rate)
                dst.write(store[:, y0:y1, x0:x1], window=Window(x0, y0, x1 - x0, y1 - y0))


def publish(source: Path, output: Path) -> None:
    """Move the finished ``source`` to ``output``, replacing an old output only now."""
    if output.exists():
        old = output.with_name(output.name + ".old")
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        os.replace(output, old)
        os.replace(source, output)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(source, output)


def read_output(path: Path) -> np.ndarray:
    """A (small) output, whole: (3, y, x) float32."""
    if path.suffix == ".zarr":
        import zarr

        return np.asarray(zarr.open_array(str(path), mode="r")[...])
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings(), rasterio.open(path) as src:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return src.read()


def compare_untiled(job: Job, tiles: Sequence[tiling.Tile], output: Path, info: RasterInfo,
                    save: Path | None) -> dict[str, float]:
    """Deviation of the tiled output from a one-tile run of the whole raster (model units)."""
    if info.height * info.width > MAX_COMPARE_PIXELS:
        raise UserError(f"--compare-untiled: a {info.height}x{info.width} raster is too big for one pass")
    reader = open_reader(job.input)
    x = to_model_units(reader.read((0, info.height), (0, info.width)), job.input.units, info.nodata)
    filled = fill_invalid(x)
    if filled is None:
        raise UserError("--compare-untiled: the raster has no valid pixel")
    model, state, sr = loaded_model(job.model)
    untiled = tiling.make_batch_apply(model, state)(filled[0][None])[0]
    tiled = read_output(output).astype(np.float64)
    if np.isfinite(job.nodata_out):
        tiled[tiled == job.nodata_out] = np.nan
    if job.input.units == "dn":
        tiled = dn_to_model_units(tiled)
    seams = tiling.seam_mask(tiles, tiled.shape[1:], sr, SEAM_WIDTH)
    summary = tiling.deviation_summary(tiled, untiled, seams)
    if save is not None:
        deviation = np.abs(tiled - untiled).mean(axis=0).astype(np.float32)
        np.savez(save, deviation=deviation, seams=seams, preset=job.model.preset,
                 **{k: np.float64(v) for k, v in summary.items()})
    return summary


# ----------------------------------------------------------------------------------------------
# Command line


def parse_halo(text: str) -> int | str:
    """argparse type of ``--halo``: an int >= 0, or "auto"."""
    return text if text == "auto" else non_negative_int(text)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superresolve.py",
        description="Super-resolve a large raster with a trained RVSR model, tile by tile (Niemitalo et al. 2025, "
                    "arXiv:2502.12300). See README.md, 'Super-resolving a large raster'.")
    parser.add_argument("input", help="GeoTIFF, NetCDF (.nc, bands B04 B03 B02), Zarr (.zarr) or .npy (band, y, x)")
    parser.add_argument("output", help="GeoTIFF (.tif, .tiff) or Zarr (.zarr)")
    parser.add_argument("--model", required=True, help="weights file, e.g. results/trained_models/lp2x3_s0.eqx")
    parser.add_argument("--preset", help="the model's preset (default: from the file name {preset}_s{seed}.eqx)")
    parser.add_argument("--bands", help="3 comma-separated band numbers from 1 (NetCDF: variable names); default 1,2,3")
    parser.add_argument("--units", choices=("dn", "model"), default="dn",
                        help="dn: digital numbers, scaled as the dataset (v * 2 / 10000 - 1) and written back in "
                             "digital numbers; model: the model's own units, unchanged (default: %(default)s)")
    parser.add_argument("--nodata", type=float, help="the input's nodata value (default: the file's own; NaN is always invalid)")
    parser.add_argument("--tile-size", type=positive_int, default=256, help="tile size in input pixels (default: %(default)s)")
    parser.add_argument("--halo", type=parse_halo, default=0,
                        help="overlap in input pixels whose outputs are cropped away; 'auto' = the model's receptive "
                             f"field radius ({tiling.RECEPTIVE_FIELD_RADIUS}) (default: %(default)s, padding only)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="tiles per model call (default: %(default)s)")
    parser.add_argument("--training-form", action="store_true",
                        help="run the training form of the model instead of the reparameterized one (slower, same output)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, help="start a local Dask cluster of this many worker processes")
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://10.0.0.1:8786")
    parser.add_argument("--compare-untiled", action="store_true",
                        help="print the deviation from a one-tile run (small rasters only)")
    parser.add_argument("--compare-output", type=Path, help="with --compare-untiled: save the deviation map (.npz)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (and a mismatching partial run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM (a job scheduler's stop) ends the run like Ctrl-C: clusters close, markers stay.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    _forget_files()
    output = Path(args.output)
    is_zarr = output.suffix.lower() == ".zarr"
    if not is_zarr and output.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise UserError(f"output {output} must end in .tif, .tiff or .zarr")
    if output.exists() and not args.overwrite:
        raise UserError(f"output {output} exists; pass --overwrite to replace it")
    if Path(args.input).resolve() == output.resolve():
        raise UserError("input and output are the same file")
    if args.compare_output is not None and not args.compare_untiled:
        raise UserError("--compare-output needs --compare-untiled")
    bands = None if args.bands is None else tuple(b.strip() for b in args.bands.split(","))
    if bands is not None and len(bands) != 3:
        raise UserError(f"--bands needs 3 bands, got {len(bands)}")
    spec = InputSpec(str(args.input), bands, args.units, args.nodata)
    reader = open_reader(spec)
    info = reader.info
    model_spec = ModelSpec(str(args.model), resolve_preset(args.model, args.preset), not args.training_form)
    # Loading here checks the weights before any work, and warms this process's cache.
    _, _, sr = loaded_model(model_spec)
    halo = tiling.RECEPTIVE_FIELD_RADIUS if args.halo == "auto" else args.halo
    tiles = tiling.tile_grid(info.height, info.width, args.tile_size, halo)
    nodata_out = float("nan") if info.nodata is None else float(np.float32(info.nodata))
    work_dir = output.with_name(output.name + WORK_SUFFIX)
    attrs = {"crs": info.crs, "transform": output_transform(info, sr), "nodata": nodata_out, "units": args.units,
             "sr_rate": sr, "preset": model_spec.preset, "source": str(Path(args.input).name),
             "reference": "Niemitalo et al. 2025, arXiv:2502.12300"}
    settings = dict(settings_record(args, spec, model_spec, info), output=str(output.resolve()))
    output.parent.mkdir(parents=True, exist_ok=True)
    done_before, run_id = prepare_work_dir(work_dir, settings, args.overwrite,
                                   (3, sr * info.height, sr * info.width), sr * args.tile_size, nodata_out, attrs)
    done = set(os.listdir(work_dir / "done"))
    todo = [t for t in tiles if t.key not in done]
    # Partial batches are padded to the batch size (one compilation per tile shape); a raster of
    # fewer tiles than that gets a smaller batch instead of paying for the padding.
    job = Job(spec, model_spec, str(work_dir), sr, max(1, min(args.batch_size, len(todo))), nodata_out, run_id)
    groups = list(tiling.batches(todo, job.batch_size))
    progress = tqdm(total=len(tiles), initial=done_before, unit="tile", disable=args.no_progress,
                    desc=f"{model_spec.preset} x{sr}", file=sys.stderr)
    compiled = ""
    try:
        if args.workers is None and args.scheduler is None:
            start = time.perf_counter()
            shapes = compile_tile_shapes(job, todo)
            compiled = f" after compiling {shapes} tile shape(s) in {time.perf_counter() - start:.3g} s"
            start = time.perf_counter()
            pixels = run_local(job, groups, progress)
        else:  # workers compile as they go: the time includes it
            start = time.perf_counter()
            pixels = run_dask(job, groups, progress, args.workers, args.scheduler)
    except KeyboardInterrupt:
        progress.close()
        finished = len(os.listdir(job.done_dir))
        print(f"interrupted with {finished} of {len(tiles)} tiles done; rerun the same command to continue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    seconds = time.perf_counter() - start
    progress.close()
    if is_zarr:
        publish(Path(job.store), output)
    else:
        assembled = work_dir / "assembled.tif"
        assemble_geotiff(job, tiles, assembled, info, args.tile_size)
        publish(assembled, output)
    shutil.rmtree(work_dir)
    print(f"wrote {output}: {sr * info.width}x{sr * info.height} pixels; {len(todo)} tiles "
          f"({pixels / 1e6:.3g} input Mpx) in {seconds:.3g} s = {pixels / 1e6 / max(seconds, 1e-9):.3g} input Mpx/s{compiled}; "
          f"peak memory of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.compare_untiled:
        s = compare_untiled(job, tiles, output, info, args.compare_output)
        print(f"tiled vs one-tile run (model units): mean |deviation| {s['mean']:.3g}, max {s['max']:.3g}; "
              f"within {SEAM_WIDTH} output pixels of seams: mean {s['seam_mean']:.3g}, max {s['seam_max']:.3g}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_script("superresolve.py", lambda: run(args), interrupted="interrupted; rerun the same command to continue")
    finally:
        signal.signal(signal.SIGTERM, previous)
        _forget_files()  # no input file stays open after the run


if __name__ == "__main__":
    # Run as the module `superresolve`, not `__main__`, so that the functions sent to Dask
    # workers are found there by name.
    import superresolve

    sys.exit(superresolve.main())
