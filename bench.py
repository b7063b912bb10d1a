"""Every speed figure of the README from one command, on whatever device JAX has.

    python bench.py [--quick] [--json OUT] [--repeats N] [--sections padding,inference,training,tiled]
                    [--scale K] [--default-malloc]

Four sections, each timed in this one process (the tiled one in fresh child processes),
interleaved round after round, medians over the rounds (`bench_padding.interleaved_medians`):

- ``padding``: every method of the paper padding a batch of 64 x 16 x 48 x 48 feature maps by 1,
  forward and forward + backward, divided by the unit of ``bench_padding.py`` (the jitted input
  gradient of ``eqx.nn.Conv2d(16, 16, 3, padding=1)`` on the same batch); with the full run
  also the 24-pixel sample case and the floors (``python bench_padding.py`` says what each is);
- ``rvsr_inference``: the RVSR inference form (the paper's timing model) on 32 x 3 x 48 x 48
  per preset, as a ratio to ``zero-repl`` (how the paper's throughputs compare) and to ``repl``
  (the same graph, only the padding differs); for lp presets also the forward pass a gradient
  would take (``jax.vjp``), which shows in the same run what the padding's no-gradient forms save;
- ``rvsr_training``: one Adam training step (``train_utils.make_train_step``) on 32 images of
  3 x 200 x 200 (48 x 48 inputs, 192 x 192 targets) per preset, as a ratio to ``zero-repl``;
- ``tiled``: a 1024^2 raster super-resolved in 256^2 tiles, batch 4, by a random-init lp2x3
  RVSR of the paper's width, reparameterized: in memory (``tiling.predict_raster`` on an array) and, where its
  readers and writers are installed, by ``superresolve.py`` (GeoTIFF in and out); input Mpx/s
  and peak memory (host RSS; on an accelerator also the device's peak bytes in use).

Batches are multiplied by ``--scale`` (default 16 on a GPU, where the CPU sizes would time
kernel launches, 1 elsewhere). The paper's figures (an RTX 4070 Ti, the largest batch that fit)
are printed beside ours; where it gives none, the table says so. ``--json OUT`` writes
everything, with the device, the versions and the allocator settings, after each section.
``--quick`` is a smoke run: tiny batches, 3 rounds, no floors, 6 padding methods (zero, repl,
extr3, lp1x1cs, lp2x3, lp6x7), the RVSR sections for fewer presets
(inference: zero-repl, repl, lp1x1cs, lp2x3; training: zero-repl, lp2x3), a 128^2 raster in 64^2 tiles.

Run as a script on Linux it restarts itself once with ``GLIBC_TUNABLES`` keeping freed large
buffers on the heap, as ``bench_padding.py`` does (``--default-malloc`` keeps glibc's defaults).
It sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless set: the tiled section's child process
shares the accelerator with this one, and JAX would otherwise take 75 % of its memory here.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX starts; see above

import argparse
import functools
import importlib.metadata
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import bench_padding
import cli
from padding import PAPER_METHODS

REPO = Path(__file__).resolve().parent
SECTIONS = ("padding", "inference", "training", "tiled")
INFERENCE_PRESETS = [
    "zero-repl",
    "repl",
    "extr3",
    "lp1x1cs",
    "lp2x1cs",
    "lp2x1",
    "lp2x3",
    "lp2x5",
    "lp3x3",
    "lp4x5",
    "lp6x7",
]
TRAINING_PRESETS = ["zero-repl", "repl", "extr3", "lp1x1cs", "lp2x1cs", "lp2x3", "lp6x7"]
QUICK_METHODS = ["zero", "repl", "extr3", "lp1x1cs", "lp2x3", "lp6x7"]
QUICK_INFERENCE_PRESETS = ["zero-repl", "repl", "lp1x1cs", "lp2x3"]
QUICK_TRAINING_PRESETS = ["zero-repl", "lp2x3"]
ALLOCATOR_VARIABLES = ("GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                       "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR",
                       "XLA_FLAGS", "JAX_DEFAULT_MATMUL_PRECISION")  # fmt: skip

# The paper's timing (Niemitalo et al. 2025, arXiv:2502.12300, main table): one RTX 4070 Ti,
# the largest batch that fit, oc 0. Inference: 10^6 output pixels (of one channel) per second
# of the inference-form model; training: images per second. Its other figures give no speed.
PAPER = {
    "gpu": "NVIDIA GeForce RTX 4070 Ti",
    "inference_mpx_per_s": {
        "zero-repl": 964,
        "repl": 870,
        "lp1x1cs": 722,
        "lp2x1cs": 632,
        "lp2x1": 498,
        "lp2x3": 480,
        "lp2x5": 382,
        "lp3x3": 394,
        "lp4x5": 356,
        "lp6x7": 266,
        "extr3": 758,
    },
    "training_images_per_s": {"zero-repl": 472, "repl": 481, "lp1x1cs": 464, "lp2x3": 429, "lp6x7": 432},
}


def paper_ratios(throughputs: dict[str, float]) -> dict[str, float]:
    """Time per item relative to zero-repl: zero-repl's throughput over each preset's."""
    return {p: throughputs["zero-repl"] / v for p, v in throughputs.items()}


# ----------------------------------------------------------------------------------------------
# The device


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def device_info() -> dict[str, Any]:
    """What ran the benchmark: the device, the host, the versions, the settings that move timings."""
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "host_cpu": _cpu_model(),
        "host_cores": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in ("jax", "jaxlib", "equinox", "optax", "numpy")},
        "environment": {name: os.environ.get(name) for name in ALLOCATOR_VARIABLES},
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def default_scale() -> int:
    return 16 if jax.default_backend() == "gpu" else 1


# ----------------------------------------------------------------------------------------------
# The sections


def padding_section(methods: list[str], scale: int, repeats: int, quick: bool) -> dict[str, Any]:
    """Per method: pad-1 forward and forward + backward on the unit's batch, in ms and units."""
    rng = np.random.default_rng(0)
    maps = jnp.asarray(rng.normal(size=(4 if quick else 64 * scale, 16, 48, 48)), jnp.float32)
    samples = None if quick else jnp.asarray(rng.normal(size=(1, 3, 48, 48)), jnp.float32)
    t = bench_padding.interleaved_medians(
        bench_padding.padding_section_fns(methods, maps, samples, floors=not quick), repeats
    )
    unit = t["unit"]
    rows = {}
    for m in methods:
        row = {"fwd_ms": t[f"{m}/1/f"] * 1e3, "fb_ms": t[f"{m}/1/fb"] * 1e3,
               "fwd_per_unit": t[f"{m}/1/f"] / unit, "fb_per_unit": t[f"{m}/1/fb"] / unit}  # fmt: skip
        if samples is not None:
            row.update(pad24_fwd_ms=t[f"{m}/24/f"] * 1e3, pad24_fb_ms=t[f"{m}/24/fb"] * 1e3)
        if f"{m}/stats" in t:
            row.update(stats_per_unit=t[f"{m}/stats"] / unit, solve_per_unit=t[f"{m}/solve"] / unit)
        rows[m] = row
    return {"batch": list(maps.shape), "unit": "jitted input gradient of eqx.nn.Conv2d(16, 16, 3, padding=1) on the batch",
            "unit_ms": unit * 1e3, "methods": rows}  # fmt: skip


def inference_section(preset_names: list[str], scale: int, repeats: int, quick: bool) -> dict[str, Any]:
    """Per preset: the inference form's forward pass (and, for lp, the gradient path's)."""
    import timing_search

    batch = 2 if quick else 32 * scale
    images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, size=(batch, 3, 48, 48)), jnp.float32)
    fns: dict[str, Callable[[], object]] = {}
    for p in preset_names:
        fns[p] = bench_padding.rvsr_fn(p, images)
        if p == "repl" or p.startswith("lp"):  # repl: the control, no custom VJP in it
            fns[f"{p}/gradient path"] = bench_padding.rvsr_fn(p, images, gradient_path=True)
    t = bench_padding.interleaved_medians(fns, repeats)
    rows = {}
    for p in preset_names:
        row = {"ms": t[p] * 1e3, "output_mpx_per_s": timing_search.inference_throughput(batch, t[p], 0, 192) / 1e6}
        if "zero-repl" in t:
            row["per_zero_repl"] = t[p] / t["zero-repl"]
        if "repl" in t:
            row["per_repl"] = t[p] / t["repl"]
        if f"{p}/gradient path" in t:
            row["gradient_path_ms"] = t[f"{p}/gradient path"] * 1e3
            if "repl" in t:
                row["gradient_path_per_repl"] = t[f"{p}/gradient path"] / t["repl"]
        rows[p] = row
    return {"batch": list(images.shape), "presets": rows}


def training_step_fn(preset: str, batch: int, image_size: int) -> Callable[[], object]:
    """One jitted Adam step of ``preset`` on ``batch`` random images ``(3, image_size + 8)^2``
    (targets ``image_size``^2, inputs a quarter of that), the paper's training step."""
    import presets
    import train_utils

    hpars = {**presets.get_preset_hpars(preset), "image_shape": [3, image_size, image_size], "batch_size": batch}
    optimizer = train_utils.make_optimizer(hpars)
    model, state = train_utils.build_model(hpars, jax.random.PRNGKey(0))
    opt_state = optimizer.init(train_utils.trainable(model))
    step = train_utils.make_train_step(hpars, optimizer)
    side = image_size + 2 * hpars["sr_rate"]
    images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, size=(batch, 3, side, side)), jnp.float32)
    key = jax.random.PRNGKey(1)
    return lambda: step(model, state, opt_state, images, key)


def training_section(preset_names: list[str], scale: int, repeats: int, quick: bool) -> dict[str, Any]:
    batch, size = (2, 64) if quick else (32 * scale, 192)
    t = bench_padding.interleaved_medians({p: training_step_fn(p, batch, size) for p in preset_names}, repeats)
    rows = {}
    for p in preset_names:
        rows[p] = {"ms": t[p] * 1e3, "images_per_s": batch / t[p]}
        if "zero-repl" in t:
            rows[p]["per_zero_repl"] = t[p] / t["zero-repl"]
    return {"batch": [batch, 3, size + 8, size + 8], "presets": rows}


TILED_CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import jax, numpy as np
import bench_superresolve, superresolve, tiling
from make_synthetic_dataset import reflectance_to_dn, synthetic_reflectance
folder, size, tile, batch = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
model = superresolve.load_tile_model(superresolve.ModelSpec(str(bench_superresolve.default_model(folder)), "lp2x3", True))
image = superresolve.to_model_units(reflectance_to_dn(synthetic_reflectance(np.random.default_rng(0), (size, size))))
options = dict(scale=4, tile_size=tile, halo=0, align=1, batch_size=batch, progress=False)
tiling.predict_raster(model, image, **options)  # the first run compiles; the second is timed
start = time.perf_counter()
out = tiling.predict_raster(model, image, **options)
seconds = time.perf_counter() - start
assert out.shape == (3, 4 * size, 4 * size) and np.isfinite(out).all()
stats = jax.devices()[0].memory_stats() or {}
print(json.dumps({"mpx_per_s": size * size / 1e6 / seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "device_peak_mib": stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None}))
"""


def _superresolve_installed() -> bool:
    try:
        import rasterio  # noqa: F401
        import zarr  # noqa: F401
    except ImportError:
        return False
    return True


def tiled_section(quick: bool) -> dict[str, Any]:
    """Tiled throughput and peak memory at one raster size, each way in a fresh process."""
    import bench_superresolve
    from make_synthetic_dataset import make_scene

    size, tile, batch = (128, 64, 4) if quick else (1024, 256, 4)
    result: dict[str, Any] = {
        "size": size,
        "tile_size": tile,
        "batch_size": batch,
        "model": "random-init lp2x3 RVSR, 16 channels, reparameterized",
    }
    with tempfile.TemporaryDirectory(prefix="bench-tiled-") as folder:
        done = subprocess.run([sys.executable, "-c", TILED_CHILD, str(REPO), folder, str(size), str(tile), str(batch)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"the tiled child process failed:\n{done.stderr[-3000:]}")
        result["in_memory"] = json.loads(done.stdout.strip().splitlines()[-1])
        if _superresolve_installed():
            scene = Path(folder) / "scene.tif"
            make_scene(scene, size)
            model = bench_superresolve.default_model(Path(folder))
            mpx, peak, _ = bench_superresolve.run_superresolve([str(scene), str(Path(folder) / "out.tif"), "--model", str(model),
                                                                "--tile-size", str(tile), "--batch-size", str(batch)])  # fmt: skip
            result["superresolve"] = {"mpx_per_s": mpx, "peak_rss_mib": peak}
        else:
            result["superresolve"] = None  # rasterio or zarr missing
    return result


# ----------------------------------------------------------------------------------------------
# The report


def _f(value: float | None, spec: str = ".3f") -> str:
    """``value`` formatted by ``spec`` (e.g. "10.3f"), or "-" right-aligned in its width."""
    return format("-", ">" + spec.split(".")[0]) if value is None else format(value, spec)


def print_padding(section: dict[str, Any]) -> None:
    print(f"\nPADDING of {tuple(section['batch'])} by 1; UNIT = {section['unit']} = {section['unit_ms']:.2f} ms.")
    print("fwd: forward; f+b: gradient of sum(out * cotangent) w.r.t. the input. The paper gives no padding timings.")
    extra = any("stats_per_unit" in r for r in section["methods"].values())
    header = f"{'method':<9} {'fwd ms':>8} {'f+b ms':>8} {'fwd/UNIT':>8} {'f+b/UNIT':>8}"
    header += f" | {'pad24 f+b ms':>12} {'stats/UNIT':>10} {'solve/UNIT':>10}" if extra else ""
    print(header)
    for m, r in section["methods"].items():
        line = f"{m:<9} {r['fwd_ms']:8.2f} {r['fb_ms']:8.2f} {r['fwd_per_unit']:8.3f} {r['fb_per_unit']:8.3f}"
        if extra:
            line += f" | {_f(r.get('pad24_fb_ms'), '12.2f')} {_f(r.get('stats_per_unit'), '10.3f')} {_f(r.get('solve_per_unit'), '10.3f')}"
        print(line)


def print_inference(section: dict[str, Any]) -> None:
    paper = PAPER["inference_mpx_per_s"]
    ratios = paper_ratios(paper)
    print(
        f"\nRVSR INFERENCE FORM, forward of {tuple(section['batch'])}; ratios are times divided by zero-repl's (as the"
    )
    print(
        "paper's throughputs compare) or by repl's (same graph, only the padding differs). 'grad path': the forward a"
    )
    print(f"gradient would take (jax.vjp), i.e. without the no-gradient forms. Paper: {PAPER['gpu']}, largest batch.")
    print(
        f"{'preset':<10} {'ms':>9} {'out Mpx/s':>9} {'/zero-repl':>10} {'/repl':>7} {'grad path /repl':>15} | "
        f"{'paper Mpx/s':>11} {'paper /zero-repl':>16}"
    )
    for p, r in section["presets"].items():
        print(
            f"{p:<10} {r['ms']:9.2f} {r['output_mpx_per_s']:9.2f} {_f(r.get('per_zero_repl'), '10.3f')} "
            f"{_f(r.get('per_repl'), '7.3f')} {_f(r.get('gradient_path_per_repl'), '15.3f')} | "
            f"{_f(paper[p], '11.0f') if p in paper else 'none':>11} {_f(ratios.get(p), '16.3f')}"
        )


def print_training(section: dict[str, Any]) -> None:
    paper = PAPER["training_images_per_s"]
    ratios = paper_ratios(paper)
    print(
        f"\nRVSR TRAINING STEP (Adam) on {tuple(section['batch'])} images; times divided by zero-repl's. Paper: "
        f"{PAPER['gpu']}, largest batch; 'none': not in the paper."
    )
    print(f"{'preset':<10} {'ms':>9} {'images/s':>9} {'/zero-repl':>10} | {'paper img/s':>11} {'paper /zero-repl':>16}")
    for p, r in section["presets"].items():
        print(
            f"{p:<10} {r['ms']:9.1f} {r['images_per_s']:9.2f} {_f(r.get('per_zero_repl'), '10.3f')} | "
            f"{_f(paper[p], '11.0f') if p in paper else 'none':>11} {_f(ratios.get(p), '16.3f')}"
        )


def print_tiled(section: dict[str, Any]) -> None:
    s = section["size"]
    print(
        f"\nTILED: {s}^2 raster in {section['tile_size']}^2 tiles, batch {section['batch_size']}, no halo; {section['model']}."
    )
    print("input Mpx/s; peak memory of the fresh process (host RSS; device: peak bytes in use). The paper gives none.")
    rows = [
        ("in memory (predict_raster)", section["in_memory"]),
        ("superresolve.py (GeoTIFF)", section["superresolve"]),
    ]
    for name, r in rows:
        if r is None:
            print(f"{name:<27} not run: rasterio or zarr is not installed")
        else:
            device = r.get("device_peak_mib")
            print(
                f"{name:<27} {r['mpx_per_s']:8.3f} Mpx/s, peak RSS {r['peak_rss_mib']:7.0f} MiB"
                + (f", device peak {device:7.0f} MiB" if device is not None else "")
            )


def print_device(info: dict[str, Any]) -> None:
    env = ", ".join(f"{k}={v}" for k, v in info["environment"].items() if v is not None) or "none set"
    load = " ".join(f"{x:.2f}" for x in info["load_average_at_start"] or []) or "unknown"
    print(
        f"device: {info['device_kind']} ({info['platform']}, {info['device_count']} device(s)); host {info['host_cpu']}, "
        f"{info['host_cores']} cores; load average at start (1, 5, 15 min): {load}"
    )
    print(
        f"python {info['python']}, " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f"; settings: {env}"
    )


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny batches, 3 rounds, no floors")
    parser.add_argument("--json", type=Path, help="write every figure here as JSON (after each section)")
    parser.add_argument("--repeats", type=cli.positive_int, help="interleaved rounds (default 11, --quick 3)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS)
    )
    parser.add_argument("--methods", help="padding methods (default: all 13)")
    parser.add_argument("--presets", help="RVSR presets of both RVSR sections (default: the paper's timed ones)")
    parser.add_argument("--scale", type=cli.positive_int, help="batch multiplier (default 16 on a GPU, else 1)")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's default allocator settings")
    return cli.run_main(parser, functools.partial(run, argv=argv), argv)


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    sections = [s for s in args.sections.split(",") if s]
    methods = args.methods.split(",") if args.methods else QUICK_METHODS if args.quick else list(bench_padding.METHODS)
    import presets

    bad = [s for s in sections if s not in SECTIONS] + [m for m in methods if m not in PAPER_METHODS]
    bad += [p for p in (args.presets or "").split(",") if p and p not in presets.presets]
    if bad:
        raise cli.UsageError(f"unknown section(s), method(s) or preset(s): {', '.join(bad)}")
    repeats = args.repeats or (3 if args.quick else 11)
    scale = args.scale or default_scale()
    inference_presets = (
        args.presets.split(",") if args.presets else QUICK_INFERENCE_PRESETS if args.quick else INFERENCE_PRESETS
    )
    training_presets = (
        args.presets.split(",") if args.presets else QUICK_TRAINING_PRESETS if args.quick else TRAINING_PRESETS
    )

    report: dict[str, Any] = {"device": device_info(), "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
                              "repeats": repeats, "scale": scale, "quick": args.quick,
                              "paper": {**PAPER, "inference_per_zero_repl": paper_ratios(PAPER["inference_mpx_per_s"]),
                                        "training_per_zero_repl": paper_ratios(PAPER["training_images_per_s"])}}  # fmt: skip
    print_device(report["device"])
    print(f"{repeats} interleaved rounds, medians; batch scale {scale}{'; quick' if args.quick else ''}.", flush=True)
    runs = {"padding": (lambda: padding_section(methods, scale, repeats, args.quick), print_padding),
            "inference": (lambda: inference_section(inference_presets, scale, repeats, args.quick), print_inference),
            "training": (lambda: training_section(training_presets, scale, repeats, args.quick), print_training),
            "tiled": (lambda: tiled_section(args.quick), print_tiled)}  # fmt: skip
    keys = {"padding": "padding", "inference": "rvsr_inference", "training": "rvsr_training", "tiled": "tiled"}
    for name in SECTIONS:
        report[keys[name]] = None
    for name in sections:
        start = time.perf_counter()
        run, show = runs[name]
        report[keys[name]] = run()
        report[keys[name]]["seconds"] = time.perf_counter() - start
        report[keys[name]]["peak_rss_mib_so_far"] = peak_rss_mib()
        show(report[keys[name]])
        sys.stdout.flush()
        write_json(args.json, report)
    report["device"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    write_json(args.json, report)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in report['device']['load_average_at_end'] or [])}")
    return 0


if __name__ == "__main__":
    bench_padding.restart_with_stable_malloc()
    sys.exit(main())
