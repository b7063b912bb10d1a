"""Super-resolve a large raster with a trained RVSR model, tile by tile.

    python superresolve.py INPUT OUTPUT --model results/trained_models/lp2x3_s0.eqx
        [--preset NAME] [--bands 4,3,2] [--units dn|model] [--dtype float32|float16|uint16] [--nodata VALUE]
        [--tile-size 256] [--halo 0|H|auto] [--batch-size 4] [--training-form]
        [--workers N | --scheduler ADDRESS] [--tls-ca-file CA.pem --tls-cert CERT.pem [--tls-key KEY.pem]]
        [--compare-untiled [--compare-output FILE.npz]]
        [--overwrite] [--no-progress]

This is the tiled processing studied by Niemitalo et al. (2025), "Per-channel autoregressive
linear prediction padding in tiled CNN processing of 2D spatial data" (arXiv:2502.12300): each
tile is padded at its edges by the model's own padding (the paper's case, ``--halo 0``), or
overlaps its neighbours by a halo whose outputs are cropped away. This script is a command
line over :func:`tiling.predict_raster` (docs/tiled_processing.md), which does the tiling,
nodata, resuming, Dask and the output formats; what is RVSR's lives here: loading the
published weights and the dataset's units (digital numbers ``v`` scaled to ``v * 2 / 10000 - 1``
and back). docs/superresolve.md is the user guide.

Input: a GeoTIFF (or anything GDAL reads), a NetCDF file of the dataset's format (variables
B04, B03, B02, first time step), a Zarr array or dataset, or a .npy array, each ``(band, y, x)``.
Output: a Cloud-Optimized GeoTIFF (float32, float16 or uint16) with the input's CRS, origin, and
pixel size divided by the model's rate (4), or a Zarr dataset when OUTPUT ends in ``.zarr``;
nodata is NaN for floats (uint16: the input's nodata 0 or 65535, else 65535).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import os
import resource
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import cli
import presets
import raster_io
import run_layout
import tile_runner
import tiling
from cli import UserError, non_negative_int, positive_int
from sentinel2 import (
    BANDS,
    BASELINE_04_ADD_OFFSET,
    DN_PER_REFLECTANCE,
    dn_to_model_units,
    model_units_to_dn,
)

SEAM_WIDTH = 4  # output pixels on each side of a seam counted as "near the seam"
# --compare-untiled runs the model on the whole raster at once: RVSR with 16 hidden channels
# took 4.4 GiB (peak RSS, XLA on the CPU) for 2048x2048 input pixels, about 1 KiB per pixel;
# the whole superresolve.py run with the comparison 4.7 GiB.
MAX_COMPARE_PIXELS = 2048 * 2048
COMPARE_GIB_AT_MAX = 5
COMPARE_ROWS = 512  # output rows of the tiled output read and compared at a time
RVSR_ALIGN = 1  # RVSR has no stride or pooling: shift-equivariant by every pixel
OUTPUT_DTYPES = ("float32", "float16", "uint16")


# ----------------------------------------------------------------------------------------------
# The model


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    path: str
    preset: str
    reparameterize: bool = True


def resolve_preset(model_path: str, preset: str | None) -> str:
    """The model's preset, from ``--preset``, the preset recorded beside the weights
    (``{file}.eqx.json``, written by export_trained_models.py) and a ``{preset}_s{seed}.eqx``
    file name of a known preset; refused when any two disagree (the padding would be wrong)."""
    path = Path(model_path)
    claims = {}  # where the preset comes from: the preset it says
    if preset is not None:
        claims["--preset"] = preset
    recorded = run_layout.read_model_metadata(path)
    if recorded is not None:
        claims[run_layout.model_metadata_path(path).name] = recorded["preset"]
    parsed = run_layout.parse_model_stem(path.stem)
    if parsed is not None and (parsed[0] in presets.presets or not claims):
        claims[f"the file name {path.name}"] = parsed[0]
    if not claims:
        raise UserError(
            f"cannot tell the preset from the file name {path.name}; name it {{preset}}_s{{seed}}.eqx or give --preset"
        )
    for claimed in claims.values():
        if claimed not in presets.presets:
            raise UserError(f"unknown preset {claimed!r}; known presets: {', '.join(presets.presets)}")
    if len(set(claims.values())) > 1:
        said = "; ".join(f"{source} says {claimed}" for source, claimed in claims.items())
        raise UserError(
            f"contradictory presets for {path.name}: {said}; a model runs only with its own preset's padding"
        )
    return next(iter(claims.values()))


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
                run_layout.TrainedModel(spec.preset, parsed[1], path.parent), output_crop=0
            )
        else:  # a file named otherwise, with --preset
            hpars = presets.get_preset_hpars(spec.preset)
            model_hpars = {**hpars["model_hpars"], "hidden_channels": published_models.read_hidden_channels(path)}
            model, state = rvsr.load_rvsr(path, model_hpars, hpars["sr_rate"], output_crop=0)
    except (UserError, OSError, ValueError) as e:
        raise UserError(f"{spec.path} is not usable RVSR weights for preset {spec.preset} ({e})") from None
    if spec.reparameterize:
        model = rvsr.reparameterize(model)
    return model, state, model.sr_rate


def load_tile_model(spec: ModelSpec) -> Any:
    """The model of one tile ``(3, h, w) -> (3, 4 h, 4 w)`` in model units, for
    :func:`tiling.predict_raster` (a :class:`tile_runner.ModelLoader` calls this once per
    process, so that Dask workers read the weights file themselves)."""
    model, state, _ = load_model(spec)
    return tiling.stateless(model, state)


def to_model_units(
    dn: np.ndarray, quantification_value: float = DN_PER_REFLECTANCE, add_offset: float = 0
) -> np.ndarray:
    """Digital numbers -> model units, float32 (scaled in float64, as the dataset is; the
    arguments as in :func:`sentinel2.dn_to_model_units`)."""
    return dn_to_model_units(dn, quantification_value, add_offset).astype(np.float32)


def to_dn(units: np.ndarray, quantification_value: float = DN_PER_REFLECTANCE, add_offset: float = 0) -> np.ndarray:
    """Model units -> digital numbers, float32."""
    return model_units_to_dn(units, quantification_value, add_offset).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Seams


def check_compare_size(height: int, width: int) -> None:
    """Refuse (in one line, before any work) a raster too big for ``--compare-untiled``'s one pass."""
    if height * width > MAX_COMPARE_PIXELS:
        side = int(MAX_COMPARE_PIXELS**0.5)
        raise UserError(
            f"--compare-untiled: a {height}x{width} raster is too big for one pass (at most "
            f"{MAX_COMPARE_PIXELS} pixels, e.g. {side}x{side}, which takes about "
            f"{COMPARE_GIB_AT_MAX:g} GiB of memory); compare on a crop of it"
        )


def compare_untiled(
    spec: ModelSpec,
    source: raster_io.SourceSpec,
    scaling: dict | None,
    summary: tile_runner.RunSummary,
    output: Path,
    save: Path | None,
) -> dict[str, float]:
    """Deviation of the tiled output from a one-tile run of the whole raster (model units);
    ``scaling``: the arguments of :func:`to_model_units` for digital numbers, None for model units.
    Memory: the one pass (about 1 KiB per input pixel for 16 hidden channels) and its output;
    the tiled output is read and compared ``COMPARE_ROWS`` output rows at a time."""
    reader = raster_io.open_reader(source)
    info = reader.info
    check_compare_size(info.height, info.width)
    whole = tiling.Tile(0, 0, (0, info.height), (0, info.width), (0, info.height), (0, info.width))
    x, invalid = tile_runner.read_window(reader, whole, info.nodata)
    filled = tile_runner.fill_invalid(x, invalid)
    if filled is None:
        raise UserError("--compare-untiled: the raster has no valid pixel")
    if scaling is not None:
        filled = to_model_units(filled, **scaling)
    del x, invalid
    untiled = tiling.batch_call(tile_runner.ModelLoader(load_tile_model, (spec,)).load(), filled[None])[0]
    del filled
    tiles = tiling.tile_grid(info.height, info.width, summary.tile_size, summary.halo, summary.align)
    seams = tiling.seam_mask(tiles, untiled.shape[1:], summary.scale, SEAM_WIDTH)
    tiled_reader = raster_io.open_reader(raster_io.SourceSpec(str(output.resolve())))
    out_nodata = tiled_reader.info.nodata
    deviations = tiling.DeviationSummary()
    deviation_map = None if save is None else np.empty(untiled.shape[1:], np.float32)
    height, width = untiled.shape[1:]
    for top in range(0, height, COMPARE_ROWS):
        rows = (top, min(top + COMPARE_ROWS, height))
        tiled = tiled_reader.read(rows, (0, width)).astype(np.float64)
        if out_nodata is not None and np.isfinite(out_nodata):  # integer outputs: nodata is a number
            tiled[:, (tiled == out_nodata).any(axis=0)] = np.nan
        if scaling is not None:
            tiled = dn_to_model_units(tiled, **scaling)
        deviation = deviations.add(tiled, untiled[:, rows[0] : rows[1]], seams[rows[0] : rows[1]])
        if deviation_map is not None:
            deviation_map[rows[0] : rows[1]] = deviation.mean(axis=0)
    result = deviations.result()
    if save is not None:
        np.savez(
            save,
            deviation=deviation_map,
            seams=seams,
            preset=spec.preset,
            **{k: np.float64(v) for k, v in result.items()},
        )
    return result


def output_nodata(dtype: str, input_nodata: float | None) -> float | None:
    """The output's nodata: NaN for floats; for integers the input's nodata where it is the
    smallest or largest value of ``dtype`` (Sentinel-2 products: 0), else None (the type's
    largest, :func:`tiling.predict_raster`'s default). Valid outputs are clipped clear of it."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return float("nan")
    limits = np.iinfo(dtype)
    return input_nodata if input_nodata in (limits.min, limits.max) else None


def band_descriptions(info: raster_io.RasterInfo) -> list[str]:
    """The output bands' descriptions: the input's, where it has them (GeoTIFF descriptions,
    NetCDF variable names), else the dataset's band each takes the place of (B04, B03, B02)."""
    given = info.descriptions or (None,) * len(BANDS)
    return [description or band for description, band in zip(given, BANDS, strict=True)]


def file_digest(path: str) -> str:
    """SHA-256 of a (weights) file, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_output(path: Path) -> np.ndarray:
    """A (small) output, whole: (3, y, x) float32."""
    return raster_io.read_raster(path)


# ----------------------------------------------------------------------------------------------
# Command line


def parse_halo(text: str) -> int | str:
    """argparse type of ``--halo``: an int >= 0, or "auto"."""
    return text if text == "auto" else non_negative_int(text)


def make_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="superresolve.py",
        description="Super-resolve a large raster with a trained RVSR model, tile by tile (Niemitalo et al. 2025, "
        "arXiv:2502.12300). See docs/superresolve.md.",
    )
    parser.add_argument("input", help="GeoTIFF, NetCDF (.nc, bands B04 B03 B02), Zarr (.zarr) or .npy (band, y, x)")
    parser.add_argument("output", help="GeoTIFF (.tif, .tiff; Cloud-Optimized) or Zarr (.zarr)")
    parser.add_argument("--model", required=True, help="weights file, e.g. results/trained_models/lp2x3_s0.eqx")
    parser.add_argument("--preset", help="the model's preset (default: from the file name {preset}_s{seed}.eqx)")
    parser.add_argument("--bands", help="3 comma-separated band numbers from 1 (NetCDF: variable names); default 1,2,3")
    parser.add_argument(
        "--units",
        choices=("dn", "model"),
        default="dn",
        help="dn: digital numbers, scaled as the dataset (v * 2 / 10000 - 1, or by the next two "
        "options) and written back in digital numbers; model: the model's own units, unchanged "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--quantification-value",
        type=float,
        help=f"digital numbers per unit of reflectance: reflectance = (DN + offset) / this "
        f"(Sentinel-2's QUANTIFICATION_VALUE; default {DN_PER_REFLECTANCE})",
    )
    parser.add_argument(
        "--add-offset",
        type=float,
        help=f"added to digital numbers before dividing by the quantification value; "
        f"{BASELINE_04_ADD_OFFSET} for Sentinel-2 products of processing baseline 04.00 and "
        f"later (BOA_ADD_OFFSET of L2A, RADIO_ADD_OFFSET of L1C) (default 0, the dataset's)",
    )
    parser.add_argument(
        "--dtype",
        choices=OUTPUT_DTYPES,
        default="float32",
        help="output data type: float32; float16 (half the size, steps of 1 DN up to 2048, 8 DN "
        "above 8192); uint16 (digital numbers rounded and clipped; with --units dn) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--nodata", type=float, help="the input's nodata value (default: the file's own; NaN is always invalid)"
    )
    parser.add_argument(
        "--tile-size",
        type=positive_int,
        default=256,
        help=f"tile size in input pixels, at least {tiling.MIN_TILE_SIZE} (default: %(default)s)",
    )
    parser.add_argument(
        "--halo",
        type=parse_halo,
        default=0,
        help="overlap in input pixels whose outputs are cropped away; 'auto' = the model's receptive "
        "field radius, measured (10 for RVSR) (default: %(default)s, padding only)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=4, help="tiles per model call (default: %(default)s)"
    )
    parser.add_argument(
        "--training-form",
        action="store_true",
        help="run the training form of the model instead of the reparameterized one (slower, same output)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, help="start a local Dask cluster of this many worker processes")
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tls://10.0.0.1:8786")
    tls = parser.add_argument_group("Dask TLS (as dask scheduler / dask worker take them; encryption required)")
    tls.add_argument("--tls-ca-file", type=Path, help="the certificate authority's certificate (PEM)")
    tls.add_argument("--tls-cert", type=Path, help="this client's certificate (PEM), signed by that authority")
    tls.add_argument("--tls-key", type=Path, help="its private key (PEM), unless appended to --tls-cert")
    parser.add_argument(
        "--compare-untiled", action="store_true", help="print the deviation from a one-tile run (small rasters only)"
    )
    parser.add_argument("--compare-output", type=Path, help="with --compare-untiled: save the deviation map (.npz)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output (and a mismatching partial run)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM (a job scheduler's stop) ends the run like Ctrl-C: clusters close, markers stay.
    raise KeyboardInterrupt


def _source(args: argparse.Namespace) -> raster_io.SourceSpec:
    """The input with its 3 bands, checked."""
    path = str(Path(args.input).resolve())
    if args.bands is not None:
        bands = tuple(b.strip() for b in args.bands.split(","))
        if len(bands) != 3:
            raise UserError(f"--bands needs 3 bands, got {len(bands)}")
    elif Path(args.input).suffix.lower() == ".nc":
        bands = BANDS
    else:
        count = raster_io.open_reader(raster_io.SourceSpec(path)).info.count
        if count < 3:
            raise UserError(f"{args.input} has {count} band(s); the model needs 3 (red, green, blue)")
        bands = (1, 2, 3)
    return raster_io.SourceSpec(path, bands, args.nodata)


def _dn_scaling(args: argparse.Namespace) -> dict | None:
    """The arguments of :func:`to_model_units` and :func:`to_dn`, or None for ``--units model``."""
    given = [
        f"--{name}"
        for name, value in (("quantification-value", args.quantification_value), ("add-offset", args.add_offset))
        if value is not None
    ]
    if args.units != "dn":
        if given:
            raise UserError(f"{' and '.join(given)} scale digital numbers; they need --units dn")
        return None
    quantification = DN_PER_REFLECTANCE if args.quantification_value is None else args.quantification_value
    if not quantification > 0:
        raise UserError(f"--quantification-value must be > 0, got {quantification:g}")
    return {"quantification_value": quantification, "add_offset": 0 if args.add_offset is None else args.add_offset}


def _security(args: argparse.Namespace) -> Any:
    """The Dask TLS security of ``--tls-*``, or None (Dask's configuration decides)."""
    files = {"--tls-ca-file": args.tls_ca_file, "--tls-cert": args.tls_cert, "--tls-key": args.tls_key}
    given = [flag for flag, path in files.items() if path is not None]
    if not given:
        return None
    if args.tls_ca_file is None or args.tls_cert is None:
        raise cli.UsageError("TLS needs --tls-ca-file and --tls-cert (and --tls-key unless the key is in the cert)")
    if args.scheduler is None and args.workers is None:
        raise cli.UsageError(f"{given[0]} applies to a Dask run (--scheduler or --workers)")
    for flag in given:
        if not files[flag].is_file():
            raise UserError(f"{flag} {files[flag]} does not exist")
    return tile_runner.tls_security(
        args.tls_ca_file.resolve(), args.tls_cert.resolve(), None if args.tls_key is None else args.tls_key.resolve()
    )


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix.lower() not in (*raster_io.GEOTIFF_SUFFIXES, raster_io.ZARR_SUFFIX):
        raise UserError(f"output {output} must end in .tif, .tiff or .zarr")
    if output.exists() and not args.overwrite:
        raise UserError(f"output {output} exists; pass --overwrite to replace it")
    if Path(args.input).resolve() == output.resolve():
        raise UserError("input and output are the same file")
    if args.compare_output is not None and not args.compare_untiled:
        raise UserError("--compare-output needs --compare-untiled")
    for path, what in ((output, "output"), (args.compare_output, "--compare-output")):
        if path is not None and not path.resolve().parent.is_dir():
            raise UserError(f"the {what} folder {path.parent} does not exist; create it first")
    if not Path(args.input).exists():
        raise UserError(f"input {args.input} does not exist")
    if np.dtype(args.dtype).kind != "f" and args.units != "dn":
        raise UserError(f"--dtype {args.dtype} holds digital numbers; it needs --units dn")
    scaling = _dn_scaling(args)
    security = _security(args)
    source = _source(args)
    info = raster_io.open_reader(source).info
    if args.compare_untiled:
        check_compare_size(info.height, info.width)
    input_nodata = args.nodata if args.nodata is not None else info.nodata
    spec = ModelSpec(str(Path(args.model).resolve()), resolve_preset(args.model, args.preset), not args.training_form)
    loader = tile_runner.ModelLoader(load_tile_model, (spec,))
    sr_rate = loader.load().model.sr_rate  # checks the weights before any work, and warms this process's cache
    model_file = os.stat(spec.path)
    try:
        summary = tiling.predict_raster(
            loader,
            source.path,
            output,
            scale=sr_rate,
            tile_size=args.tile_size,
            halo=args.halo,
            align=RVSR_ALIGN,
            batch_size=args.batch_size,
            bands=source.bands,
            nodata=args.nodata,
            preprocess=None if scaling is None else functools.partial(to_model_units, **scaling),
            postprocess=None if scaling is None else functools.partial(to_dn, **scaling),
            dtype=args.dtype,
            out_nodata=output_nodata(args.dtype, input_nodata),
            workers=args.workers,
            scheduler=args.scheduler,
            security=security,
            overwrite=args.overwrite,
            progress=False if args.no_progress else f"{spec.preset} x4",
            attrs={
                "units": args.units,
                **(scaling or {}),
                "model": Path(spec.path).name,
                "model_sha256": file_digest(spec.path),
                "preset": spec.preset,
                "reparameterized": str(spec.reparameterize).lower(),
                "source": Path(args.input).name,
                "reference": "Niemitalo et al. 2025, arXiv:2502.12300",
            },
            band_descriptions=band_descriptions(info),
            resume_key={"model_file": [model_file.st_size, model_file.st_mtime_ns]},
        )
    except tile_runner.RunInterrupted as e:
        print(f"interrupted with {e.done} of {e.total} tiles done; rerun the same command to continue", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    s = summary
    compiled = "" if s.compile_seconds is None else f" after compiling 1 tile shape(s) in {s.compile_seconds:.3g} s"
    print(
        f"wrote {output}: {s.scale * s.size[1]}x{s.scale * s.size[0]} pixels; {s.processed} tiles "
        f"({s.input_pixels / 1e6:.3g} input Mpx) in {s.seconds:.3g} s = "
        f"{s.input_pixels / 1e6 / max(s.seconds, 1e-9):.3g} input Mpx/s{compiled}; "
        f"peak memory of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    if s.all_nodata:
        print(
            f"superresolve.py: warning: no input pixel is valid (each is NaN"
            f"{'' if s.nodata is None else f', the nodata value {s.nodata:g}'} or masked by the file's mask band), "
            f"so {output} holds only nodata ({s.out_nodata:g}); check --nodata and --bands",
            file=sys.stderr,
        )
    if args.compare_untiled:
        r = compare_untiled(spec, source, scaling, s, output, args.compare_output)
        print(
            f"tiled vs one-tile run (model units): mean |deviation| {r['mean']:.3g}, max {r['max']:.3g}; "
            f"within {SEAM_WIDTH} output pixels of seams: mean {r['seam_mean']:.3g}, max {r['seam_max']:.3g}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return cli.run_main(make_parser(), run, argv, interrupted="interrupted; rerun the same command to continue")
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    # Run as the module `superresolve`, not `__main__`, so that the functions sent to Dask
    # workers are found there by name.
    import superresolve

    sys.exit(superresolve.main())
