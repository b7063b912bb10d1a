"""Speed of every padding method in one fixed unit, and the end-to-end cost of lp in RVSR.

    python bench_padding.py [--repeats 15] [--methods lp2x3,lp6x7] [--presets lp2x3,lp6x7] [--quick]

The unit: ``eqx.nn.Conv2d(16, 16, 3, padding=1)`` vmapped over a batch of 64 x 16 x 48 x 48
feature maps, the gradient of ``sum(out ** 2)`` with respect to the input only, jitted. It is
the 3x3 convolution the padding feeds in RVSR, measured in the same process, so the ratios
travel between machines better than milliseconds do.

Four tables, all jitted, all from one process in which every timed function runs once per
round, round after round (interleaved repetitions, so that load from other processes hits all
of them alike), reporting medians over the rounds:

1. pad 1 on the same batch (64 x 16 x 48 x 48): forward, and forward + backward (the gradient
   of ``sum(out * cotangent)`` with respect to the input), in ms and divided by the unit;
2. the 24-pixel sample case (3 x 48 x 48 padded by 24, as in the padding-samples figure);
3. the floors: the two parts of each lp method that do not shrink with the padding, timed
   alone on the same batch, forward + backward: the statistics (lag sums or covariance sums)
   and the solve of the normal equations (from precomputed statistics);
4. the RVSR inference form (``rvsr.make_rvsr(..., inference=True)``) forward on a batch of
   32 x 3 x 48 x 48 for each preset, divided by the ``repl`` preset's time: the same graph,
   only the padding differs. ``zero-repl`` is printed too but is not the divisor, as its zero
   padding is folded into the convolutions (a different graph).

Run as a script on Linux, the benchmark restarts itself once with ``GLIBC_TUNABLES`` keeping
freed large buffers on the heap, in one arena (`STABLE_MALLOC`), unless that variable is already set or
``--default-malloc`` is given. With glibc's defaults every buffer above its mmap threshold is
mapped afresh on each call and its pages faulted in again: on a 2-core machine that made the
unit vary between 8 and 13 ms from one process to the next, and some padding times by 2x.
The first line of the output says which allocator setting was in effect.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import cli
import padding
from padding import PAPER_METHODS, make_padding_layer

METHODS = [
    "zero",
    "repl",
    "extr1",
    "extr2",
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
PRESETS = ["zero-repl", "repl", "lp1x1cs", "lp2x1cs", "lp2x1", "lp2x3", "lp2x5", "lp3x3", "lp4x5", "lp6x7"]
QUICK_METHODS = ["zero", "repl", "lp1x1cs", "lp2x3"]
QUICK_PRESETS = ["repl", "lp1x1cs"]
# arena_max=1: XLA:CPU allocates on its worker threads, whose glibc arenas map and unmap their
# own heaps whatever the thresholds say; with one arena the thresholds govern every buffer.
STABLE_MALLOC = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1"


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time in seconds of each ``fn()``, calling all of them once per round."""
    for fn in fns.values():  # compile and warm up
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def unit_fn(batch: jax.Array) -> Callable[[], object]:
    """The unit: 3x3 16 -> 16 conv (padding=1) on ``batch``, gradient of sum(out**2) w.r.t. input."""
    conv = eqx.nn.Conv2d(16, 16, 3, padding=1, key=jax.random.PRNGKey(0))
    grad = jax.jit(jax.grad(lambda x: jnp.sum(jax.vmap(conv)(x) ** 2)))
    return lambda: grad(batch)


def padding_fns(method: str, x: jax.Array, pad: int) -> tuple[Callable[[], object], Callable[[], object]]:
    """(forward, forward + backward) of padding ``x`` (batch, channel, y, x) by ``pad``."""
    batched = jax.vmap(make_padding_layer(method, ((pad, pad), (pad, pad))))
    shape = (*x.shape[:2], x.shape[2] + 2 * pad, x.shape[3] + 2 * pad)
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=shape), x.dtype)
    forward = jax.jit(batched)
    backward = jax.jit(jax.grad(lambda x: jnp.sum(batched(x) * cotangent)))
    return (lambda: forward(x)), (lambda: backward(x))


def gradient_fn(f: Callable[[jax.Array], jax.Array], x: jax.Array) -> Callable[[], object]:
    """Forward + backward of ``f``: ``f(x)`` and the gradient of ``sum(f(x) * cotangent)`` w.r.t.
    ``x``, jitted. The value is returned too: a closed-form backward that does not need it would
    otherwise let XLA drop the forward computation."""
    shape = jax.eval_shape(f, x).shape
    cotangent = jnp.asarray(np.random.default_rng(2).normal(size=shape), x.dtype)

    def value_and_grad(x, cotangent):
        value, vjp = jax.vjp(f, x)
        return value, vjp(cotangent)[0]

    compiled = jax.jit(value_and_grad)  # the cotangent an argument: XLA would fold a constant one
    return lambda: compiled(x, cotangent)


def floor_fns(method: str, x: jax.Array) -> tuple[Callable[[], object], Callable[[], object]]:
    """(statistics, solve) of an lp method, each forward + backward on ``x`` (batch, channel, y, x).

    Statistics: the lag sums of the autocorrelation method or the covariance sums, of ``x`` as
    given (the mean removal and the window are elementwise passes, counted in the rest); solve:
    the normal equations of both directions from those statistics.
    """
    options = {**padding._LP_DEFAULTS, **PAPER_METHODS[method][1]}
    length, width, correlate_method = options["length"], options["width"], options["correlate_method"]
    maps = x.reshape(-1, *x.shape[-2:])
    if correlate_method in padding.COVARIANCE_METHODS:

        def stats(a):
            return padding._covariance_sums(a, length, (0, 1))

        def solve(sums):
            return padding._covariance_solve_all(sums, length, correlate_method)
    else:
        lags = padding._normal_equations(length, width)[0]

        def stats(a):
            return padding._autocorrelation(a, lags, correlate_method)

        def solve(r):
            return padding._autocorrelation_solve(r, length, width, options["cholesky_stab"])

    statistics = jax.jit(jax.vmap(stats))(maps)
    return gradient_fn(jax.vmap(stats), maps), gradient_fn(jax.vmap(solve), statistics)


def rvsr_fn(preset: str, x: jax.Array, gradient_path: bool = False) -> Callable[[], object]:
    """Forward pass of the RVSR inference form of ``preset`` on ``x`` (batch, 3, y, x).

    With ``gradient_path`` the forward pass is the one a gradient would take: the value of
    ``jax.vjp`` with respect to the input (XLA drops the unused residuals), so every custom
    VJP of the padding runs its forward rule instead of its cheaper no-gradient form. The
    two together show what the no-gradient forms save, in one process.
    """
    import presets
    import rvsr

    model_hpars = presets.get_preset_hpars(preset)["model_hpars"]
    model, state = rvsr.make_rvsr(model_hpars, 4, inference=True, key=jax.random.PRNGKey(0))

    def apply(model, x):
        return jax.vmap(lambda image: model(image, state)[0])(x)

    if gradient_path:
        forward = eqx.filter_jit(lambda model, x: jax.vjp(lambda x: apply(model, x), x)[0])
    else:
        forward = eqx.filter_jit(apply)
    return lambda: forward(model, x)


def padding_section_fns(
    methods: list[str], maps: jax.Array, samples: jax.Array | None = None, floors: bool = True
) -> dict[str, Callable[[], object]]:
    """The timed functions of the padding tables: ``unit``; per method ``{method}/1/f`` and
    ``{method}/1/fb`` (pad 1 of ``maps``), ``{method}/24/f`` and ``{method}/24/fb`` (pad 24 of
    ``samples``, when given); per lp method ``{method}/stats`` and ``{method}/solve`` (floors)."""
    fns: dict[str, Callable[[], object]] = {"unit": unit_fn(maps)}
    for method in methods:
        fns[f"{method}/1/f"], fns[f"{method}/1/fb"] = padding_fns(method, maps, 1)
        if samples is not None:
            fns[f"{method}/24/f"], fns[f"{method}/24/fb"] = padding_fns(method, samples, 24)
    if floors:
        for method in methods:
            if PAPER_METHODS[method][0] == "lp":
                fns[f"{method}/stats"], fns[f"{method}/solve"] = floor_fns(method, maps)
    return fns


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="bench_padding.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=cli.positive_int, default=15, help="interleaved rounds (medians over them)")
    parser.add_argument("--methods", default=None, help="comma-separated padding method names")
    parser.add_argument("--presets", default=None, help="comma-separated RVSR presets ('' for none)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few methods, presets and rounds, small batch")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's default allocator settings")
    return cli.run_main(parser, run, argv)


def run(args: argparse.Namespace) -> int:
    methods = args.methods.split(",") if args.methods is not None else QUICK_METHODS if args.quick else METHODS
    preset_names = args.presets.split(",") if args.presets is not None else QUICK_PRESETS if args.quick else PRESETS
    methods, preset_names = [m for m in methods if m], [p for p in preset_names if p]
    unknown = [m for m in methods if m not in PAPER_METHODS]
    if unknown:
        raise cli.UsageError(f"unknown method(s): {', '.join(unknown)}")
    repeats = min(args.repeats, 3) if args.quick else args.repeats
    batch, rvsr_batch = (8, 4) if args.quick else (64, 32)

    rng = np.random.default_rng(0)
    maps = jnp.asarray(rng.normal(size=(batch, 16, 48, 48)), jnp.float32)
    samples = jnp.asarray(rng.normal(size=(1, 3, 48, 48)), jnp.float32)
    images = jnp.asarray(rng.uniform(size=(rvsr_batch, 3, 48, 48)), jnp.float32)

    fns = padding_section_fns(methods, maps, samples)
    lp_methods = [m for m in methods if PAPER_METHODS[m][0] == "lp"]
    for preset in preset_names:
        fns[f"rvsr/{preset}"] = rvsr_fn(preset, images)
    t = interleaved_medians(fns, repeats)
    unit = t["unit"]

    malloc = os.environ.get("GLIBC_TUNABLES")
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {repeats} interleaved rounds, medians; "
        f"malloc: {'GLIBC_TUNABLES=' + malloc if malloc else 'default settings'}."
    )
    print(
        f"UNIT = eqx.nn.Conv2d(16, 16, 3, padding=1) vmapped over {tuple(maps.shape)}, jitted gradient of "
        f"sum(out ** 2) w.r.t. the input only: {unit * 1e3:.2f} ms"
    )
    print()
    print(
        f"Padding of {tuple(maps.shape)} by 1 (fwd: forward; f+b: gradient of sum(out * cotangent) w.r.t. the input),"
    )
    print("ms and divided by UNIT; then 3 x 48 x 48 padded by 24, ms. zero and repl can show f+b faster than fwd:")
    print("XLA drops the padding from the gradient (it only slices the cotangent).")
    header = f"{'method':<8} | {'fwd ms':>7} {'f+b ms':>7} {'fwd/UNIT':>8} {'f+b/UNIT':>8} | {'pad24 fwd ms':>12} {'f+b ms':>7}"
    print(header)
    print("-" * len(header))
    for m in methods:
        f1, b1, f24, b24 = (t[f"{m}/{k}"] for k in ("1/f", "1/fb", "24/f", "24/fb"))
        print(
            f"{m:<8} | {f1 * 1e3:7.2f} {b1 * 1e3:7.2f} {f1 / unit:8.3f} {b1 / unit:8.3f} | {f24 * 1e3:12.2f} {b24 * 1e3:7.2f}"
        )
    if lp_methods:
        print()
        print(f"Floors on {tuple(maps.shape)}, forward + backward, each part alone: the statistics and the solve")
        print("of the normal equations; what is left of the f+b above is the mean, window, recursion and assembly.")
        header = f"{'method':<8} | {'stats ms':>8} {'/UNIT':>6} | {'solve ms':>8} {'/UNIT':>6} | {'sum/UNIT':>8} {'f+b/UNIT':>8}"
        print(header)
        print("-" * len(header))
        for m in lp_methods:
            s_, v_ = t[f"{m}/stats"], t[f"{m}/solve"]
            print(
                f"{m:<8} | {s_ * 1e3:8.2f} {s_ / unit:6.3f} | {v_ * 1e3:8.2f} {v_ / unit:6.3f} | {(s_ + v_) / unit:8.3f} {t[f'{m}/1/fb'] / unit:8.3f}"
            )
    if preset_names:
        print()
        print(f"RVSR inference form, forward of {tuple(images.shape)}: ms and divided by the repl preset's time")
        print("(zero-repl is shown but not the divisor: its zero padding is folded into the convolutions).")
        base = t.get("rvsr/repl")
        for p in preset_names:
            ratio = f"{t[f'rvsr/{p}'] / base:6.3f}x repl" if base else "   (no repl preset timed)"
            print(f"{p:<10} | {t[f'rvsr/{p}'] * 1e3:8.2f} ms | {ratio}")
    return 0


def restart_with_stable_malloc() -> None:
    """Re-run this script with `STABLE_MALLOC` (see the module docstring), once, on Linux."""
    if sys.platform.startswith("linux") and "GLIBC_TUNABLES" not in os.environ and "--default-malloc" not in sys.argv:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": STABLE_MALLOC})


if __name__ == "__main__":
    restart_with_stable_malloc()
    sys.exit(main())
