"""Benchmark of superresolve.py: throughput and peak memory against raster size, and the speed
of the reparameterized model against the training form.

    python bench_superresolve.py [--model results/trained_models/lp2x3_s0.eqx] [--sizes 256,1024,2048]
                                 [--tile-size 256] [--batch-size 4] [--repeats 5] [--folder bench_sr]

Each size runs ``superresolve.py`` in a fresh process on a synthetic scene (digital numbers,
GeoTIFF), and its peak resident memory (``ru_maxrss`` from ``os.wait4``) and its reported
steady-state throughput (input megapixels per second, compilation excluded) are read. The first
size should fit in one tile: it is the one-pass baseline. The checks printed at the end are
the targets behind docs/speed.md, "superresolve.py: throughput and memory": peak memory of the largest size at
most 1.6x that of the smallest (outputs are never held whole), tiled throughput at least 0.8x
the one-pass throughput, and cost linear in area. Without ``--model`` a random-init RVSR of
the paper's width (16 hidden channels) with lp2x3 padding is used: the speed does not depend
on the weights (``--preset`` picks its padding). Tiling as in the paper (Niemitalo et al. 2025, arXiv:2502.12300): no halo.
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

from make_synthetic_dataset import make_scene

REPO = Path(__file__).resolve().parent
THROUGHPUT = re.compile(r"= ([0-9.eE+-]+) input Mpx/s")


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


def run_superresolve(args: list[str]) -> tuple[float, float, float]:
    """Run superresolve.py in a fresh process: ``(Mpx/s, peak RSS in MiB, wall s)``."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(REPO / "superresolve.py"), *args, "--no-progress", "--overwrite"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"superresolve.py failed ({process.returncode}):\n{output}")
    match = THROUGHPUT.search(output)
    return float(match[1]), usage.ru_maxrss / 1024, time.perf_counter() - start


def model_speed(model_path: Path, size: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Seconds per call of the training form and the reparameterized form on a batch of
    ``size`` x ``size`` inputs (median of ``repeats`` after a compiling call)."""
    import superresolve
    import tiling

    preset = superresolve.resolve_preset(str(model_path), None)
    x = np.random.default_rng(0).uniform(-0.9, -0.5, (batch_size, 3, size, size)).astype(np.float32)
    times = {}
    for name, reparameterize in (("training form", False), ("reparameterized", True)):
        model, state, _ = superresolve.load_model(superresolve.ModelSpec(str(model_path), preset, reparameterize))
        tile_model = tiling.stateless(model, state)
        tiling.batch_call(tile_model, x)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            tiling.batch_call(tile_model, x)
            samples.append(time.perf_counter() - start)
        times[name] = float(np.median(samples))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="weights {preset}_s{seed}.eqx (default: random-init --preset)")
    parser.add_argument("--preset", default="lp2x3", help="the preset of the random-init model (default: %(default)s)")
    parser.add_argument("--sizes", default="256,1024,2048", help="raster sizes; the first fits one tile ('' for none)")
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model form")
    parser.add_argument("--reparam-size", type=int, default=256, help="input size of the model-form comparison")
    parser.add_argument("--folder", type=Path, default=Path("bench_sr"), help="scratch folder (scenes and outputs)")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    model = args.model or default_model(args.folder, args.preset)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    print(f"model {model}; tile {args.tile_size}, halo 0, batch {args.batch_size}; one fresh process per size")
    rows = []
    for size in sizes:
        scene = args.folder / f"scene_{size}.tif"
        if not scene.exists():
            make_scene(scene, size)
        throughput, peak, wall = run_superresolve([str(scene), str(args.folder / f"out_{size}.tif"), "--model", str(model),
                                                   "--tile-size", str(args.tile_size), "--batch-size", str(args.batch_size)])
        rows.append((size, throughput, peak, wall))
        print(f"{size:>6}² input -> {4 * size}² output: {throughput:8.4f} input Mpx/s, "
              f"{size * size / 1e6 / throughput:8.2f} s of processing, peak memory {peak:7.0f} MiB, wall {wall:6.1f} s")
        (args.folder / f"out_{size}.tif").unlink()

    if rows:
        summarize(rows)
    speed = model_speed(model, args.reparam_size, args.batch_size, args.repeats)
    print(f"model call on {args.batch_size} x 3 x {args.reparam_size}²: training form {speed['training form'] * 1e3:.0f} ms, "
          f"reparameterized {speed['reparameterized'] * 1e3:.0f} ms, "
          f"speed-up {speed['training form'] / speed['reparameterized']:.2f}x")
    return 0


def summarize(rows: list[tuple[int, float, float, float]]) -> None:
    """Print the checks: memory and throughput of the largest size against the first, and the
    processing time per pixel by size."""
    base, largest = rows[0], rows[-1]
    print(f"peak memory {largest[0]}² / {base[0]}²: {largest[2] / base[2]:.2f} (target <= 1.6)")
    print(f"throughput tiled {largest[0]}² / one pass {base[0]}²: {largest[1] / base[1]:.2f} (target >= 0.8)")
    per_px = [1e3 / throughput for _, throughput, _, _ in rows]  # ns per input pixel
    print("processing ns per input pixel by size: " + ", ".join(f"{s}²: {t:.0f}" for (s, *_), t in zip(rows, per_px))
          + " (linear in area when these agree)")


if __name__ == "__main__":
    sys.exit(main())
