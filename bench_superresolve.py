"""Benchmark of superresolve.py (tiling.predict_raster with RVSR): throughput and peak memory
against raster size, compilations on a raster that is no multiple of the tile size, the
receptive field measured, and the speed of the reparameterized model against the training form.

    python bench_superresolve.py [--model results/trained_models/lp2x3_s0.eqx] [--sizes 256,1024,2048]
                                 [--tile-size 256] [--batch-size 4] [--repeats 5] [--folder bench_sr]
                                 [--compile-raster 1100x1500] [--receptive-field]

Each size runs ``superresolve.py`` in a fresh process on a synthetic scene (digital numbers,
GeoTIFF), and its peak resident memory (``ru_maxrss`` from ``os.wait4``) and its reported
steady-state throughput (input megapixels per second, compilation excluded) are read. The first
size should fit in one tile: it is the one-pass baseline. The checks printed at the end are
the targets behind docs/speed.md, "superresolve.py: throughput and memory": peak memory of the largest size at
most 1.6x that of the smallest (outputs are never held whole), tiled throughput at least 0.8x
the one-pass throughput, and cost linear in area. Without ``--model`` a random-init RVSR of
the paper's width (16 hidden channels) with lp2x3 padding is used: the speed does not depend
on the weights (``--preset`` picks its padding). Tiling as in the paper (Niemitalo et al. 2025, arXiv:2502.12300): no halo.

``--compile-raster HxW`` runs superresolve.py once more on an H x W scene and prints how many
tile shapes it compiled and for how long (one shape: edge tiles read full windows);
``--receptive-field`` prints the receptive field ``tiling.receptive_field`` measures for the
model and how long the measurement took. :func:`predict_raster_run` is one run of
``tiling.predict_raster`` with the RVSR loader in this process, for other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import cli
from make_synthetic_dataset import make_scene

REPO = Path(__file__).resolve().parent
THROUGHPUT = re.compile(r"= ([0-9.eE+-]+) input Mpx/s")
COMPILED = re.compile(r"after compiling (\d+) tile shape\(s\) in ([0-9.eE+-]+) s")
PROCESSED = re.compile(r"input Mpx\) in ([0-9.eE+-]+) s")


def default_model(folder: Path, preset: str = "lp2x3") -> Path:
    """A random-init RVSR of the paper's width, saved as ``{preset}_s0.eqx``."""
    import jax

    import presets
    import rvsr

    path = folder / f"{preset}_s0.eqx"
    if not path.exists():
        model, _ = rvsr.make_rvsr(presets.get_preset_hpars(preset)["model_hpars"], key=jax.random.PRNGKey(0))
        rvsr.save_rvsr_weights(model, path)
    return path


def run_superresolve(args: list[str], log: list[str] | None = None) -> tuple[float, float, float]:
    """Run superresolve.py in a fresh process: ``(Mpx/s, peak RSS in MiB, wall s)``; its output
    is appended to ``log``."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "superresolve.py"), *args, "--no-progress", "--overwrite"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"superresolve.py failed ({process.returncode}):\n{output}")
    if log is not None:
        log.append(output)
    match = THROUGHPUT.search(output)
    return float(match[1]), usage.ru_maxrss / 1024, time.perf_counter() - start


def compile_check(model: Path, shape: tuple[int, int], folder: Path, tile_size: int, batch_size: int) -> dict:
    """superresolve.py on an ``shape`` scene: tile shapes compiled, compile and processing
    seconds, peak memory, wall time."""
    scene = folder / f"scene_{shape[0]}x{shape[1]}.tif"
    if not scene.exists():
        make_scene(scene, shape)
    log: list[str] = []
    _, peak, wall = run_superresolve(
        [
            str(scene),
            str(folder / "out_compile.tif"),
            "--model",
            str(model),
            "--tile-size",
            str(tile_size),
            "--batch-size",
            str(batch_size),
        ],
        log,
    )
    (folder / "out_compile.tif").unlink()
    compiled = COMPILED.search(log[0])
    return {
        "shapes": int(compiled[1]),
        "compile_s": float(compiled[2]),
        "processing_s": float(PROCESSED.search(log[0])[1]),
        "peak_mib": peak,
        "wall_s": wall,
    }


def measured_receptive_field(model_path: Path) -> tuple[int, float]:
    """``(radius, seconds)``: tiling.receptive_field of the reparameterized model (RVSR has no
    stride: align 1)."""
    import superresolve
    import tiling

    spec = superresolve.ModelSpec(str(model_path), superresolve.resolve_preset(str(model_path), None))
    model = superresolve.load_tile_model(spec)
    start = time.perf_counter()
    radius = tiling.receptive_field(model, 3, align=superresolve.RVSR_ALIGN)
    return radius, time.perf_counter() - start


def predict_raster_run(source: Path, model_path: Path, destination: Path | None = None, **options):
    """One ``tiling.predict_raster`` run of the RVSR model in ``model_path`` (reparameterized,
    loaded once per process), digital numbers in and out as superresolve.py does; ``options``
    go to predict_raster (defaults: tile 256, halo 0, align 1, no progress). Returns its
    result (a RunSummary, or the array for ``destination`` None)."""
    import superresolve
    import tile_runner
    import tiling

    spec = superresolve.ModelSpec(str(Path(model_path).resolve()), superresolve.resolve_preset(str(model_path), None))
    options = {
        "tile_size": 256,
        "halo": 0,
        "align": superresolve.RVSR_ALIGN,
        "progress": False,
        "preprocess": superresolve.to_model_units,
        "postprocess": superresolve.to_dn,
        "dtype": "float32",
        **options,
    }
    return tiling.predict_raster(
        tile_runner.ModelLoader(superresolve.load_tile_model, (spec,)), source, destination, **options
    )


def model_speed(model_path: Path, size: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Seconds per call of the training form and the reparameterized form on a batch of
    ``size`` x ``size`` inputs (median of ``repeats`` after a compiling call)."""
    import superresolve
    import tiling

    preset = superresolve.resolve_preset(str(model_path), None)
    x = np.random.default_rng(0).uniform(-0.9, -0.5, (batch_size, 3, size, size)).astype(np.float32)
    times = {}
    for name, reparameterize in (("training form", False), ("reparameterized", True)):
        model = superresolve.load_tile_model(superresolve.ModelSpec(str(model_path), preset, reparameterize))
        tiling.batch_call(model, x)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            tiling.batch_call(model, x)
            samples.append(time.perf_counter() - start)
        times[name] = float(np.median(samples))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="bench_superresolve.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="weights {preset}_s{seed}.eqx (default: random-init --preset)")
    parser.add_argument("--preset", default="lp2x3", help="the preset of the random-init model (default: %(default)s)")
    parser.add_argument("--sizes", default="256,1024,2048", help="raster sizes; the first fits one tile ('' for none)")
    parser.add_argument("--tile-size", type=cli.positive_int, default=256)
    parser.add_argument("--batch-size", type=cli.positive_int, default=4)
    parser.add_argument("--repeats", type=cli.positive_int, default=5, help="timed calls per model form")
    parser.add_argument(
        "--reparam-size", type=cli.positive_int, default=256, help="input size of the model-form comparison"
    )
    parser.add_argument("--folder", type=Path, default=Path("bench_sr"), help="scratch folder (scenes and outputs)")
    parser.add_argument(
        "--compile-raster",
        default="1100x1500",
        help="HxW of the raster for the compilation count ('' for none; default: %(default)s)",
    )
    parser.add_argument("--receptive-field", action="store_true", help="measure the model's receptive field")
    return cli.run_main(parser, run, argv)


def run(args: argparse.Namespace) -> int:
    args.folder.mkdir(parents=True, exist_ok=True)
    model = args.model or default_model(args.folder, args.preset)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    print(f"model {model}; tile {args.tile_size}, halo 0, batch {args.batch_size}; one fresh process per size")
    rows = []
    for size in sizes:
        scene = args.folder / f"scene_{size}.tif"
        if not scene.exists():
            make_scene(scene, size)
        throughput, peak, wall = run_superresolve(
            [
                str(scene),
                str(args.folder / f"out_{size}.tif"),
                "--model",
                str(model),
                "--tile-size",
                str(args.tile_size),
                "--batch-size",
                str(args.batch_size),
            ]
        )
        rows.append((size, throughput, peak, wall))
        print(
            f"{size:>6}² input -> {4 * size}² output: {throughput:8.4f} input Mpx/s, "
            f"{size * size / 1e6 / throughput:8.2f} s of processing, peak memory {peak:7.0f} MiB, wall {wall:6.1f} s"
        )
        (args.folder / f"out_{size}.tif").unlink()

    if rows:
        summarize(rows)
    if args.compile_raster:
        shape = tuple(int(n) for n in args.compile_raster.lower().split("x"))
        c = compile_check(model, shape, args.folder, args.tile_size, args.batch_size)
        print(
            f"{shape[0]}x{shape[1]} input in tiles of {args.tile_size}: compiled {c['shapes']} tile shape(s) in "
            f"{c['compile_s']:.3g} s, then {c['processing_s']:.3g} s of processing; peak memory {c['peak_mib']:.0f} MiB, "
            f"wall {c['wall_s']:.1f} s"
        )
    if args.receptive_field:
        radius, seconds = measured_receptive_field(model)
        print(f"receptive field measured by tiling.receptive_field: {radius} input pixels ({seconds:.3g} s)")
    speed = model_speed(model, args.reparam_size, args.batch_size, args.repeats)
    print(
        f"model call on {args.batch_size} x 3 x {args.reparam_size}²: training form {speed['training form'] * 1e3:.0f} ms, "
        f"reparameterized {speed['reparameterized'] * 1e3:.0f} ms, "
        f"speed-up {speed['training form'] / speed['reparameterized']:.2f}x"
    )
    return 0


def summarize(rows: list[tuple[int, float, float, float]]) -> None:
    """Print the checks: memory and throughput of the largest size against the first, and the
    processing time per pixel by size."""
    base, largest = rows[0], rows[-1]
    print(f"peak memory {largest[0]}² / {base[0]}²: {largest[2] / base[2]:.2f} (target <= 1.6)")
    print(f"throughput tiled {largest[0]}² / one pass {base[0]}²: {largest[1] / base[1]:.2f} (target >= 0.8)")
    per_px = [1e3 / throughput for _, throughput, _, _ in rows]  # ns per input pixel
    print(
        "processing ns per input pixel by size: "
        + ", ".join(f"{s}²: {t:.0f}" for (s, *_), t in zip(rows, per_px))
        + " (linear in area when these agree)"
    )


if __name__ == "__main__":
    sys.exit(main())
