"""The runner behind :func:`tiling.predict_raster`: the work folder and its resume markers,
one batch of tiles (read, fill, model, post-process, write), and running the batches in this
process or on a Dask cluster.

A path destination is written through ``DESTINATION.partial/``: ``output.zarr`` (the output
dataset, one chunk per band and tile core), ``done/`` (an empty file per finished tile, touched after
its chunk is written), ``settings.json`` (written last: what a rerun must match to continue)
and ``run_id``. When every tile is done, the store becomes the Zarr output, or GDAL makes the
Cloud-Optimized GeoTIFF from it; the result is renamed into place and the folder removed.

Per process, a run keeps its model, its batched call (compiled once per shape), its reader and
its store in a cache keyed by the run's id: a Dask worker running many batches loads, opens
and compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import os
import pickle
import pkgutil
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

import raster_io
import tiling
from progress import Progress, heartbeat
from tiling import Tile, TilingError

WORK_SUFFIX = ".partial"
NODATA_MARKER = b"no valid pixel\n"  # the done marker of a skipped tile (a processed tile's is empty)
REPO = Path(__file__).resolve().parent


@functools.cache
def software_version() -> str:
    """What wrote an output, for its metadata: this repository's version and, in a git checkout,
    its commit (``+ changes`` when files differ from it)."""
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()

        commit = git("rev-parse", "--short=12", "HEAD")
        changed = " + changes" if git("status", "--porcelain", "--untracked-files=no") else ""
        return f"lp-padding {version} (git {commit}{changed})"
    except (OSError, subprocess.SubprocessError):
        return f"lp-padding {version}"


# ----------------------------------------------------------------------------------------------
# What the caller gives and gets


@dataclasses.dataclass(frozen=True)
class ModelLoader:
    """A model made where it runs: ``function(*args)`` is called once per process (and kept),
    e.g. to read a weights file on each Dask worker instead of sending the model. Both must be
    picklable (a module-level function and plain values)."""

    function: Callable[..., Any]
    args: tuple = ()

    def load(self) -> Any:
        return _cached(("loader", self), lambda: self.function(*self.args))


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What :func:`tiling.predict_raster` did for a path destination."""

    destination: Path
    tiles: int  # in the grid
    processed: int  # tiles this call went through (the rest were done before); some may be all nodata
    input_pixels: int  # core pixels the model processed in this call (tiles without a valid pixel skipped)
    seconds: float  # processing, after compiling (local) / including it (Dask)
    compile_seconds: float | None  # the one compilation of a local run; None on Dask
    size: tuple[int, int]  # of the input raster, (height, width)
    tile_size: int
    window: tuple[int, int]  # the read window (input pixels): the one shape the model saw
    scale: int
    halo: int
    align: int
    nodata_tiles: int = 0  # tiles without a valid core pixel, in the whole run (earlier calls too)
    nodata: float | None = None  # the input's, as used (besides NaN)
    out_nodata: float | None = None  # the output's

    @property
    def all_nodata(self) -> bool:
        """No input pixel was valid: the output holds only ``out_nodata``."""
        return self.nodata_tiles == self.tiles


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM raised as KeyboardInterrupt) during a run; the finished tiles are
    kept, and the same call continues. ``done`` of ``total`` tiles are finished."""

    def __init__(self, done: int, total: int, work_dir: Path):
        super().__init__(f"interrupted with {done} of {total} tiles done; rerun to continue")
        self.done, self.total, self.work_dir = done, total, work_dir


@dataclasses.dataclass
class Request:
    """The arguments of :func:`tiling.predict_raster` (documented there)."""

    model: Any
    source: Any
    destination: Path | None
    scale: int | None
    tile_size: int
    halo: int | str
    align: int | str
    batch_size: int
    bands: tuple | None
    nodata: float | None
    preprocess: Callable | None
    postprocess: Callable | None
    dtype: Any
    out_nodata: float | None
    client: Any
    scheduler: str | None
    workers: int | None
    security: Any
    overwrite: bool
    progress: bool | str
    attrs: dict
    resume_key: Any
    band_descriptions: Sequence[str] | None = None


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a process needs to run batches of tiles (picklable; paths absolute)."""

    run_id: str  # per run: long-lived workers must not reuse what they cached for another run
    work_dir: str | None  # None: outputs go back to the caller
    scale: int
    window: tuple[int, int]
    batch_size: int
    nodata: float | None  # of the input
    out_nodata: float
    dtype: str
    preprocess: Callable | None
    postprocess: Callable | None

    @property
    def store(self) -> Path:
        return Path(self.work_dir) / "output.zarr"

    @property
    def done_dir(self) -> Path:
        return Path(self.work_dir) / "done"


# ----------------------------------------------------------------------------------------------
# Per-process caches. The lock keeps two threads of a worker from making the same value twice;
# it is re-entrant because one cached value is made from another.

_CACHE: dict[Any, Any] = {}
_CACHE_LOCK = threading.RLock()


def _cached(key: Any, make: Callable[[], Any]) -> Any:
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]


def _run_state(job: Job, source: raster_io.SourceSpec | np.ndarray) -> tuple[raster_io.Reader, Any]:
    """This process's reader and store for ``job``'s run; a new run drops the previous runs'."""
    with _CACHE_LOCK:
        if ("run", job.run_id) not in _CACHE:
            for key in [k for k in _CACHE if k[0] == "run"]:
                del _CACHE[key]
            store = None if job.work_dir is None else raster_io.open_zarr_data(job.store)
            _CACHE[("run", job.run_id)] = (raster_io.open_reader(source), store)
        return _CACHE[("run", job.run_id)]


def resolve_model(model: Any) -> Any:
    return model.load() if isinstance(model, ModelLoader) else model


# ----------------------------------------------------------------------------------------------
# One batch of tiles


def fill_invalid(x: np.ndarray, invalid: np.ndarray) -> np.ndarray | None:
    """``x`` (band, h, w) with each pixel where ``invalid`` (h, w) replaced by its nearest valid
    pixel (Euclidean); None if no pixel is valid. The model's padding must not see NaN (linear
    prediction is fitted to all pixels of a map), and a nearest-valid fill continues the image
    without adding edges."""
    if not invalid.any():
        return x
    if invalid.all():
        return None
    from scipy import ndimage

    nearest = ndimage.distance_transform_edt(invalid, return_distances=False, return_indices=True)
    return x[:, nearest[0], nearest[1]]


def read_window(reader: raster_io.Reader, tile: Tile, nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, invalid)``: the tile's read window (band, h, w) as float32, NaN past the raster, and
    its invalid pixels (h, w): NaN or ``nodata`` in any band, masked by the raster's own mask
    (GDAL mask bands), or past the raster."""
    info = reader.info
    rows, cols = (tile.read_y[0], min(tile.read_y[1], info.height)), (tile.read_x[0], min(tile.read_x[1], info.width))
    raw = reader.read(rows, cols)
    height, width = tile.read_shape
    x = np.full((raw.shape[0], height, width), np.nan, np.float32)
    x[:, : raw.shape[1], : raw.shape[2]] = raw
    invalid = np.ones((height, width), bool)
    bad = ~np.isfinite(raw).all(axis=0) if raw.dtype.kind == "f" else np.zeros(raw.shape[1:], bool)
    if nodata is not None and np.isfinite(nodata):
        bad |= (raw == nodata).any(axis=0)
    masked = reader.masked(rows, cols)
    if masked is not None:
        bad |= masked
    invalid[: raw.shape[1], : raw.shape[2]] = bad
    return x, invalid


def valid_range(dtype: np.dtype, nodata: float) -> tuple[float, float]:
    """The values valid outputs of integer or float ``dtype`` are clipped to: its range (finite,
    for floats), less ``nodata`` where that is at an end of it, so that no valid output reads as
    nodata."""
    limits = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    low, high = float(limits.min), float(limits.max)
    step = 1 if dtype.kind in "iu" else 0  # a float nodata at an end of the range: NaN in practice
    return low + step * (nodata == low), high - step * (nodata == high)


def cast(y: np.ndarray, dtype: np.dtype, nodata: float) -> np.ndarray:
    """``y`` as ``dtype``: to integers rounded (half to even) and clipped to
    :func:`valid_range` (NaN becomes ``nodata``); to a narrower float (e.g. float16) clipped to
    its finite range. Always a copy (the model's output is read-only)."""
    if dtype.kind in "iu":
        low, high = valid_range(dtype, nodata)
        invalid = np.isnan(y) if y.dtype.kind == "f" else None
        y = np.clip(np.rint(y) if y.dtype.kind == "f" else y, low, high).astype(dtype)
        if invalid is not None and invalid.any():
            y[invalid] = nodata
        return y
    if y.dtype.kind == "f" and dtype.itemsize < y.dtype.itemsize:
        y = np.clip(y, *valid_range(dtype, nodata))
    return y.astype(dtype)


def process_batch(
    job: Job, model: Any, source: raster_io.SourceSpec | np.ndarray, tiles: Sequence[Tile]
) -> list[tuple[str, int, np.ndarray | None]]:
    """Read, fill, run the model on and write ``tiles``; returns ``(tile key, core pixels
    processed, output or None)`` per tile (0 pixels: skipped, no valid core pixel). With a work
    folder each tile's chunk is written before its done marker, so a marker means a complete
    chunk, and no output comes back."""
    reader, store = _run_state(job, source)
    windows, masks, todo, results = [], [], [], []
    for tile in tiles:
        x, invalid = read_window(reader, tile, job.nodata)
        core = tile.core_in_window()
        filled = fill_invalid(x, invalid)
        if filled is None or invalid[core].all():
            if store is not None:  # nothing valid: the store's fill value is nodata
                (job.done_dir / tile.key).write_bytes(NODATA_MARKER)
            results.append((tile.key, 0, None))
            continue
        windows.append(filled if job.preprocess is None else np.asarray(job.preprocess(filled), np.float32))
        masks.append(invalid[core])
        todo.append(tile)
    if not todo:
        return results
    batch = np.stack(windows)
    if len(batch) < job.batch_size:  # filled up: every call has one shape
        batch = np.concatenate([batch, np.repeat(batch[-1:], job.batch_size - len(batch), axis=0)])
    outputs = tiling.batch_call(resolve_model(model), batch)
    s, dtype = job.scale, np.dtype(job.dtype)
    for tile, out, invalid in zip(todo, outputs, masks):
        y = out[(slice(None), *tile.core_in_window(s))]
        if job.postprocess is not None:
            y = np.asarray(job.postprocess(y))
        y = cast(y, dtype, job.out_nodata)
        if invalid.any():
            y[:, np.repeat(np.repeat(invalid, s, axis=0), s, axis=1)] = job.out_nodata
        if store is not None:
            store[(slice(None), *tile.core_in_output(s))] = y
            (job.done_dir / tile.key).touch()
            results.append((tile.key, tile.core_pixels, None))
        else:
            results.append((tile.key, tile.core_pixels, y))
    return results


# ----------------------------------------------------------------------------------------------
# Settings: what a rerun must match


def fingerprint(obj: Any) -> str:
    """A digest of a model (or hook) that changes when its code or weights change: the class or
    function name and bytecode, the arrays of an Equinox module or other pytree, what a
    closure or partial holds, a loader's function and arguments, a dataclass's fields. Plain
    values count where they configure (arguments, closure cells, fields), not inside
    containers, where they are more likely state (a list counting calls)."""
    digest = hashlib.sha256()

    def visit(o: Any, depth: int = 0, config: bool = True) -> None:
        if depth > 6:
            return
        if isinstance(o, (np.ndarray, jax.Array, np.generic)):
            a = np.ascontiguousarray(np.asarray(o))
            digest.update(f"{a.shape}{a.dtype}".encode())
            digest.update(memoryview(a).cast("B"))
        elif o is None or isinstance(o, (bool, int, float, str, bytes)):
            if config:
                digest.update(repr(o).encode())
        elif isinstance(o, (list, tuple)):
            for item in o:
                visit(item, depth + 1, config=False)
        elif isinstance(o, dict):
            for key in sorted(o, key=str):
                visit(o[key], depth + 1, config=False)
        else:
            kind = o if isinstance(o, type) else type(o)
            digest.update(
                f"{getattr(o, '__module__', kind.__module__)}.{getattr(o, '__qualname__', kind.__qualname__)}".encode()
            )
            if isinstance(o, ModelLoader):
                visit(o.function, depth + 1)
                for arg in o.args:
                    visit(arg, depth + 1)
            elif dataclasses.is_dataclass(o) and not isinstance(o, type) and not callable(o):
                for field in dataclasses.fields(o):
                    visit(getattr(o, field.name), depth + 1)
            elif isinstance(o, functools.partial):
                visit(o.func, depth + 1)
                for arg in (*o.args, *o.keywords.values()):
                    visit(arg, depth + 1)
            elif inspect.isfunction(o):
                digest.update(o.__code__.co_code)
                for cell in o.__closure__ or ():
                    try:
                        visit(cell.cell_contents, depth + 1)
                    except ValueError:  # an empty cell
                        pass
            elif hasattr(o, "__wrapped__"):  # jax.jit and functools.wraps
                visit(o.__wrapped__, depth + 1)
            elif not isinstance(o, type):
                leaves = jax.tree_util.tree_leaves(o)
                if not (len(leaves) == 1 and leaves[0] is o):
                    visit(leaves, depth + 1)

    visit(obj)
    return digest.hexdigest()


def _source_identity(source: raster_io.SourceSpec | np.ndarray) -> Any:
    if isinstance(source, np.ndarray):
        return ["array", list(source.shape), str(source.dtype), fingerprint(source)]
    stat = os.stat(source.path)
    return [source.path, stat.st_size, stat.st_mtime_ns]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


_NOT_RECORDED = object()  # a setting a partial run did not record (an older version wrote it)


def _shown(value: Any, width: int = 60) -> str:
    """A setting's value for a message: JSON, digests cut to 12 characters, long values cut."""
    if value is _NOT_RECORDED:
        return "(not recorded)"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a fingerprint: enough to see that it differs
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def settings_differences(previous: dict, settings: dict) -> str:
    """Which settings of a partial run (``previous``) differ from this run's, with both values:
    ``tile_size was 16, now 32; model was 1f0c..., now 9a4e...`` (entries of a dict setting, such
    as ``resume_key``, by their own names)."""
    differences = []
    for key in sorted(set(previous) | set(settings)):
        old, new = previous.get(key, _NOT_RECORDED), settings.get(key, _NOT_RECORDED)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            differences.append(
                settings_differences(
                    {f"{key}.{k}": v for k, v in old.items()}, {f"{key}.{k}": v for k, v in new.items()}
                )
            )
        else:
            differences.append(f"{key} was {_shown(old)}, now {_shown(new)}")
    return "; ".join(differences)


def prepare_work_dir(work_dir: Path, settings: dict, overwrite: bool, create_store: Callable[[Path], None]) -> str:
    """Create the work folder (store, done markers, settings) or reuse a matching one; returns
    the run id."""
    settings_path = work_dir / "settings.json"
    if work_dir.exists():
        try:
            previous = json.loads(settings_path.read_text())
        except (OSError, ValueError):
            previous = None  # created but never finished setting up: start again
        if previous is not None and previous != settings:
            if not overwrite:
                raise TilingError(
                    f"{work_dir} holds a partial run with other settings: "
                    f"{settings_differences(previous, settings)}; rerun that run to finish it, or "
                    f"overwrite to discard it"
                )
            previous = None
        if not (work_dir / "output.zarr" / ".zmetadata").exists():
            previous = None  # the store was published (a Zarr output) before the folder was removed
        if previous is None:
            shutil.rmtree(work_dir)
    if not work_dir.exists():
        (work_dir / "done").mkdir(parents=True)
        create_store(work_dir / "output.zarr")
        (work_dir / "run_id").write_text(uuid.uuid4().hex)
        tmp = settings_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(settings))
        os.replace(tmp, settings_path)  # written last: its presence means the folder is ready
    return (work_dir / "run_id").read_text()


# ----------------------------------------------------------------------------------------------
# The run


def _check_destination(request: Request, source: raster_io.SourceSpec | np.ndarray) -> None:
    destination = request.destination
    if destination is None:
        return
    suffix = destination.suffix.lower()
    if suffix not in (*raster_io.GEOTIFF_SUFFIXES, raster_io.ZARR_SUFFIX):
        raise TilingError(f"output {destination} must end in .tif, .tiff or .zarr")
    if destination.exists() and not request.overwrite:
        raise TilingError(f"output {destination} exists; overwrite to replace it")
    if isinstance(source, raster_io.SourceSpec) and Path(source.path) == destination:
        raise TilingError("input and output are the same file")
    if not destination.parent.is_dir():  # a mistyped folder should not silently become a new one
        raise TilingError(f"the output's folder {destination.parent} does not exist; create it first")


def _geometry(request: Request, model: Any, in_bands: int) -> tuple[int, int, int]:
    """``(scale, align, halo)``, measured where asked."""
    scale = request.scale
    if scale is None or request.align == "auto" or request.halo == "auto":
        scale = tiling.output_scale(model, in_bands, scale)
    if request.align == "auto":
        align = tiling.alignment(model, in_bands, scale=scale)
    elif isinstance(request.align, int) and request.align >= 1:
        align = request.align
    else:
        raise TilingError(f"align must be 'auto' or an int >= 1, got {request.align!r}")
    if request.halo == "auto":
        halo = tiling.receptive_field(model, in_bands, scale=scale, align=align)
    elif isinstance(request.halo, int) and request.halo >= 0:
        halo = request.halo
    else:
        raise TilingError(f"halo must be 'auto' or an int >= 0, got {request.halo!r}")
    return scale, align, -(-halo // align) * align


def _output_spec(
    request: Request, model_out: tuple[int, ...], model_dtype: Any, scale: int
) -> tuple[int, np.dtype, float]:
    """``(bands, dtype, nodata)`` of the output, given the model's output for one window."""
    bands, dtype = model_out[0], np.dtype(model_dtype)
    if request.postprocess is not None:
        probe = np.asarray(request.postprocess(np.zeros((bands, 8 * scale, 8 * scale), dtype)))
        if probe.ndim != 3 or probe.shape[1:] != (8 * scale, 8 * scale):
            raise TilingError(
                f"postprocess must map (bands, h, w) to (bands', h, w); it gave {probe.shape} for "
                f"{(bands, 8 * scale, 8 * scale)}"
            )
        bands, dtype = probe.shape[0], probe.dtype
    if request.dtype is not None:
        dtype = np.dtype(request.dtype)
    if dtype.kind == "f":
        nodata = float("nan") if request.out_nodata is None else float(request.out_nodata)
    elif dtype.kind in "iu":
        limits = np.iinfo(dtype)
        nodata = (limits.max if dtype.kind == "u" else limits.min) if request.out_nodata is None else request.out_nodata
        if not (float(nodata).is_integer() and limits.min <= nodata <= limits.max):
            raise TilingError(f"out_nodata {nodata} is not a {dtype} value")
        nodata = int(nodata)
    else:
        raise TilingError(f"output dtype {dtype} is neither float nor integer")
    return bands, dtype, nodata


def run(request: Request) -> np.ndarray | RunSummary:
    """:func:`tiling.predict_raster`."""
    if isinstance(request.source, np.ndarray):
        source: raster_io.SourceSpec | np.ndarray = request.source
        if request.bands is not None:
            raise TilingError("bands= applies to files; select the bands of an array yourself")
    else:
        source = raster_io.SourceSpec(str(Path(request.source).resolve()), request.bands, request.nodata)
    if request.destination is not None:
        request.destination = request.destination.resolve()  # workers may run in other folders
    _check_destination(request, source)
    if sum(x is not None for x in (request.client, request.scheduler, request.workers)) > 1:
        raise TilingError("give at most one of client, scheduler and workers")
    if request.security is not None and request.scheduler is None and request.workers is None:
        raise TilingError("security applies to scheduler= and workers=; a client= brings its own")
    if request.scheduler is not None or request.workers is not None:
        request.security = _security(request)  # checked before any work
    if not isinstance(request.batch_size, int) or request.batch_size < 1:
        raise TilingError(f"batch_size must be an int >= 1, got {request.batch_size!r}")
    reader = raster_io.open_reader(source)
    info = reader.info
    nodata = request.nodata if request.nodata is not None else info.nodata
    model = resolve_model(request.model)
    in_bands = info.count
    if request.preprocess is not None:
        in_bands = np.asarray(request.preprocess(np.zeros((info.count, 8, 8), np.float32))).shape[0]
    scale, align, halo = _geometry(request, model, in_bands)
    tiles = tiling.tile_grid(info.height, info.width, request.tile_size, halo, align)
    window = tiling.window_shape(info.height, info.width, request.tile_size, halo, align)
    local = request.client is None and request.scheduler is None and request.workers is None

    work_dir = (
        None if request.destination is None else request.destination.with_name(request.destination.name + WORK_SUFFIX)
    )
    done = set(os.listdir(work_dir / "done")) if work_dir is not None and (work_dir / "done").is_dir() else set()
    todo = [t for t in tiles if t.key not in done]
    batch_size = max(1, min(request.batch_size, len(todo)))

    # The model's output for one batch: compiled here for a local run (timed; the one
    # compilation of the run), traced only for Dask (the workers compile).
    compile_seconds = None
    example = np.zeros((batch_size, in_bands, *window), np.float32)
    try:
        if local and todo:
            start = time.perf_counter()
            out = tiling.batch_call(model, example)
            compile_seconds = time.perf_counter() - start
        else:
            out = eqx.filter_eval_shape(tiling.vmapped, model, jax.ShapeDtypeStruct(example.shape, example.dtype))
    except Exception as e:  # the user's model: say which input it failed on, keep the cause
        raise TilingError(f"the model fails on a batch of tiles {example.shape} ({type(e).__name__}: {e})") from e
    out_shape, out_dtype = out.shape, out.dtype
    if out_shape[2:] != (scale * window[0], scale * window[1]):
        raise TilingError(
            f"the model maps a {window[0]}x{window[1]} tile to {out_shape[2]}x{out_shape[3]}, not scale {scale}"
        )
    bands, dtype, out_nodata = _output_spec(request, out_shape[1:], out_dtype, scale)
    descriptions = None if request.band_descriptions is None else [str(d) for d in request.band_descriptions]
    if descriptions is not None and len(descriptions) != bands:
        raise TilingError(f"{len(descriptions)} band descriptions for {bands} output bands")
    shape = (bands, scale * info.height, scale * info.width)

    run_id = uuid.uuid4().hex
    if work_dir is not None:
        settings = _jsonable(
            {
                "source": _source_identity(source),
                "bands": request.bands,
                "nodata": repr(nodata),
                "size": [info.height, info.width],
                "tile_size": request.tile_size,
                "halo": halo,
                "align": align,
                "scale": scale,
                "dtype": dtype.name,
                "out_nodata": repr(out_nodata),
                "bands_out": bands,
                "model": fingerprint(request.model),
                "preprocess": fingerprint(request.preprocess),
                "postprocess": fingerprint(request.postprocess),
                "resume_key": request.resume_key,
                "band_descriptions": descriptions,
                "destination": str(request.destination),
            }
        )
        transform = raster_io.scaled_transform(info.transform, scale)
        attrs = {
            **request.attrs,
            "scale": scale,
            "halo": halo,
            "tile_size": request.tile_size,
            "align": align,
            "software": software_version(),
        }
        run_id = prepare_work_dir(
            work_dir,
            settings,
            request.overwrite,
            lambda path: raster_io.create_zarr_dataset(
                path,
                shape,
                scale * request.tile_size,
                raster_io.store_dtype(dtype, request.destination),
                out_nodata,
                info.crs,
                transform,
                attrs,
                descriptions,
            ),
        )
        done = set(os.listdir(work_dir / "done"))
        todo = [t for t in tiles if t.key not in done]
    job = Job(
        run_id,
        None if work_dir is None else str(work_dir),
        scale,
        window,
        batch_size,
        None if nodata is None else float(nodata),
        out_nodata,
        dtype.name,
        request.preprocess,
        request.postprocess,
    )
    result = None if work_dir is not None else np.full(shape, out_nodata, dtype)
    groups = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]

    label = request.progress if isinstance(request.progress, str) else None
    progress = Progress(len(tiles), initial=len(tiles) - len(todo), label=label, enabled=bool(request.progress))
    start = time.perf_counter()
    try:
        if local:  # this process's reader and store for the run: the ones opened here
            _CACHE[("run", run_id)] = (reader, None if work_dir is None else raster_io.open_zarr_data(job.store))
            pixels = _run_local(job, model, source, groups, progress, result)
        else:
            pixels = _run_dask(job, request, source, groups, progress, result)
    except KeyboardInterrupt:
        progress.close()
        if work_dir is None:
            raise
        raise RunInterrupted(len(os.listdir(work_dir / "done")), len(tiles), work_dir) from None
    finally:
        with _CACHE_LOCK:
            _CACHE.pop(("run", run_id), None)
    seconds = time.perf_counter() - start
    progress.close()
    if work_dir is None:
        return result
    destination = request.destination
    if destination.suffix.lower() == raster_io.ZARR_SUFFIX:
        raster_io.publish(job.store, destination)
    else:
        assembled = work_dir / "assembled.tif"

        def written() -> str:  # GDAL's COG driver reports no progress: the bytes it wrote so far
            size = sum(f.stat().st_size for f in work_dir.glob(assembled.name + "*") if f.is_file())
            return f"{size / 1e6:.0f} MB of GeoTIFF written"

        with heartbeat(
            f"writing {destination.name} from the store (GDAL's COG driver: tiles, overviews)",
            written,
            label=label,
            enabled=bool(request.progress),
        ):
            raster_io.write_cog(
                job.store, assembled, resampling="average" if dtype.kind == "f" else "nearest", tags=attrs, dtype=dtype
            )
        raster_io.publish(assembled, destination)
    nodata_tiles = sum(1 for marker in os.scandir(work_dir / "done") if marker.stat().st_size)
    shutil.rmtree(work_dir)
    return RunSummary(
        destination,
        len(tiles),
        sum(1 for g in groups for _ in g),
        pixels,
        seconds,
        compile_seconds,
        (info.height, info.width),
        request.tile_size,
        window,
        scale,
        halo,
        align,
        nodata_tiles=nodata_tiles,
        nodata=job.nodata,
        out_nodata=out_nodata,
    )


def _collect(
    results: Iterable[tuple[str, int, np.ndarray | None]], tiles: dict[str, Tile], scale: int, output: np.ndarray | None
) -> int:
    pixels = 0
    for key, n, y in results:
        pixels += n
        if output is not None and y is not None:
            output[(slice(None), *tiles[key].core_in_output(scale))] = y
    return pixels


def _run_local(
    job: Job, model: Any, source: Any, groups: Sequence[list[Tile]], progress: Any, output: np.ndarray | None
) -> int:
    pixels = 0
    for group in groups:
        results = process_batch(job, model, source, group)
        pixels += _collect(results, {t.key: t for t in group}, job.scale, output)
        progress.update(len(results))
    return pixels


def tls_security(ca_file: str | os.PathLike, cert: str | os.PathLike, key: str | os.PathLike | None = None) -> Any:
    """A ``distributed.Security`` for Dask's mutual TLS with encryption required: one
    certificate ``cert`` (PEM; its private ``key``, unless appended to ``cert``) signed by the
    authority in ``ca_file``, for this process as a client and for the scheduler and workers
    of a local cluster. The scheduler's and workers' own come from their ``--tls-ca-file``,
    ``--tls-cert`` and ``--tls-key`` options."""
    from distributed import Security

    files = {"tls_ca_file": str(ca_file)}
    for role in ("client", "scheduler", "worker"):
        files[f"tls_{role}_cert"] = str(cert)
        files[f"tls_{role}_key"] = None if key is None else str(key)
    return Security(require_encryption=True, **files)


def _security(request: Request) -> Any:
    """The ``distributed.Security`` of a Dask run: the caller's, or Dask's configuration's
    (``distributed.comm.tls.*``, ``DASK_DISTRIBUTED__COMM__TLS__...``), checked against the
    scheduler address so that a mismatch is one line, not a handshake error."""
    from distributed import Security

    security = request.security if request.security is not None else Security()
    if not isinstance(security, Security):
        raise TilingError(f"security must be a distributed.Security, got {type(security).__name__}")
    address = request.scheduler
    if address is not None and address.startswith("tls://") and not (security.tls_ca_file and security.tls_client_cert):
        raise TilingError(
            f"the scheduler {address} speaks TLS: give its certificate authority and a client "
            "certificate (security=, or superresolve.py's --tls-ca-file, --tls-cert, --tls-key)"
        )
    if address is not None and security.require_encryption and not address.startswith("tls://"):
        raise TilingError(f"encryption is required, but the scheduler address {address} is not tls://")
    return security


def _local_cluster(workers: int, security: Any) -> Any:
    """A cluster of ``workers`` single-thread processes listening on 127.0.0.1 only (other
    machines cannot reach it; other users of this machine can, unless ``security`` has TLS),
    without a dashboard."""
    from dask.distributed import LocalCluster

    os.environ.update(_worker_environment())  # the nannies start workers with this environment
    tls = bool(security.tls_scheduler_cert and security.tls_worker_cert)
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        protocol="tls://" if tls else "tcp://",
        security=security,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )


def _worker_environment() -> dict[str, str]:
    """Environment for local Dask workers: this repository importable, and JAX not grabbing all
    GPU memory at start (several workers may share a machine)."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), path) if p), "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def run_sent_batch(payload: bytes, model: Any = None, source: Any = None) -> list[tuple[str, int, np.ndarray | None]]:
    """The body of a Dask task, on a worker: :func:`process_batch` of ``payload``, the pickled
    ``(job, tiles, model, source)`` (model and source None where they come scattered instead)."""
    job, tiles, sent_model, sent_source = pickle.loads(payload)
    return process_batch(
        job, model if sent_model is None else sent_model, source if sent_source is None else sent_source, tiles
    )


def _submit_batches(client: Any, job: Job, model: Any, source: Any, groups: Sequence[list[Tile]]) -> list[Any]:
    """One task per batch of tiles, built so that a scheduler without this repository can hold
    it. The scheduler unpickles the task graph (distributed does in its recent versions), so
    it must see only the standard library and Dask: a first task resolves
    :func:`run_sent_batch` by its name on a worker (``pkgutil.resolve_name``), and each batch's
    task is ``dask.utils.apply`` of that function to bytes (the pickled job and tiles, opaque to
    the scheduler) and the scattered model and source. Workers import this repository; the
    scheduler needs only Dask."""
    from dask.utils import apply
    from distributed import Future
    from distributed.protocol import pickle as dask_pickle

    function = client.submit(pkgutil.resolve_name, f"{__name__}:{run_sent_batch.__name__}", pure=False)
    scattered_model, scattered_source = (x if isinstance(x, Future) else None for x in (model, source))
    futures = []
    for tiles in groups:  # dask_pickle: cloudpickle where plain pickle cannot (lambdas, __main__)
        payload = dask_pickle.dumps(
            (job, tiles, None if scattered_model else model, None if scattered_source else source)
        )
        futures.append(client.submit(apply, function, [payload, scattered_model, scattered_source], pure=False))
    return futures


def _run_dask(
    job: Job, request: Request, source: Any, groups: Sequence[list[Tile]], progress: Any, output: np.ndarray | None
) -> int:
    """Each task runs one batch: the worker reads its tiles itself and writes their chunks into
    the store (on a file system the workers share), so only tile keys come back (outputs too
    when the result is an array)."""
    from dask.distributed import Client, as_completed

    cluster = None
    if request.client is not None:
        client, own = request.client, False
    elif request.scheduler is not None:
        try:
            client, own = Client(request.scheduler, timeout="30s", security=request.security), True
        except (OSError, TimeoutError) as e:
            raise TilingError(f"cannot reach the Dask scheduler at {request.scheduler} ({e})") from None
    else:
        cluster = _local_cluster(request.workers, request.security)
        client, own = Client(cluster, security=request.security), True
    futures = []
    try:
        # The model once per worker (a loader is small: it travels with each task and loads there).
        model = (
            request.model
            if isinstance(request.model, ModelLoader)
            else client.scatter([request.model], broadcast=True, hash=False)[0]
        )
        data = client.scatter([source], hash=False)[0] if isinstance(source, np.ndarray) else source
        futures = _submit_batches(client, job, model, data, groups)
        tiles = {t.key: t for group in groups for t in group}
        pixels = 0
        for future in as_completed(futures):
            try:
                results = future.result()
            except (ImportError, AttributeError) as e:
                raise TilingError(
                    f"a Dask task failed ({type(e).__name__}: {e}); the workers must be able to import "
                    f"this repository ({REPO}) and the model's module, e.g. on PYTHONPATH"
                ) from None
            except TilingError as e:
                raise TilingError(f"on a Dask worker: {e}") from None
            pixels += _collect(results, tiles, job.scale, output)
            progress.update(len(results))
        return pixels
    finally:
        if futures and not own:
            client.cancel(futures)
        if own:
            client.close()
        if cluster is not None:
            cluster.close()
