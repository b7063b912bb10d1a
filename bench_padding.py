"""Speed of every padding method, as a ratio to the 3x3 convolution it feeds.

    python bench_padding.py [--repeats 20] [--methods lp2x3,lp6x7] [--batch 64]

Two cases, both jitted: the RVSR case, a batch of (batch, 16, 48, 48) feature maps padded by 1
on every side, and the padding-samples case, (3, 48, 48) padded by 24. For each method the
table gives the median time of the forward pass and of forward + backward (the gradient of
sum(output * cotangent) with respect to the input), and both as a ratio to the forward +
backward time of an `eqx.nn.Conv2d` 16 -> 16, 3x3, on the padded RVSR batch (gradients with
respect to input and weights), measured in the same run. Zero padding alone is too small and
too dependent on fusion to divide by; the convolution is the work the padding serves.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from padding import PAPER_METHODS, make_padding_layer

METHODS = ["zero", "repl", "extr1", "extr2", "extr3", "lp1x1cs", "lp2x1cs", "lp2x1", "lp2x3", "lp2x5", "lp3x3", "lp4x5", "lp6x7"]


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls, after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_padding(method: str, x: jax.Array, pad: int, repeats: int) -> tuple[float, float]:
    """(forward, forward + backward) median times of padding ``x`` (batch, channel, y, x)."""
    layer = make_padding_layer(method, ((pad, pad), (pad, pad)))
    batched = jax.vmap(layer)
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=(*x.shape[:2], x.shape[2] + 2 * pad, x.shape[3] + 2 * pad)), x.dtype)
    forward = jax.jit(batched)
    backward = jax.jit(jax.grad(lambda x: jnp.sum(batched(x) * cotangent)))
    return median_time(lambda: forward(x), repeats), median_time(lambda: backward(x), repeats)


def time_conv(x: jax.Array, repeats: int) -> float:
    """Forward + backward median time of a 3x3 16 -> 16 convolution on ``x`` padded by 1."""
    conv = eqx.nn.Conv2d(16, 16, 3, key=jax.random.PRNGKey(0))
    padded = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cotangent = jnp.ones(x.shape, x.dtype)

    @jax.jit
    @jax.grad
    def grads(conv_and_input):
        conv, inputs = conv_and_input
        return jnp.sum(jax.vmap(conv)(inputs) * cotangent)

    return median_time(lambda: grads((conv, padded)), repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (median)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    parser.add_argument("--batch", type=int, default=64, help="batch size of the RVSR case")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in PAPER_METHODS]
    if unknown or args.repeats < 1 or args.batch < 1:
        print(f"error: unknown method(s) {unknown}" if unknown else "error: --repeats and --batch must be >= 1", file=sys.stderr)
        return 2

    rng = np.random.default_rng(0)
    rvsr_batch = jnp.asarray(rng.normal(size=(args.batch, 16, 48, 48)), jnp.float32)
    samples = jnp.asarray(rng.normal(size=(1, 3, 48, 48)), jnp.float32)
    conv = time_conv(rvsr_batch, args.repeats)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; conv 3x3 16->16 forward+backward on "
          f"{tuple(rvsr_batch.shape)}: {conv * 1e3:.2f} ms (the unit of the ratios)")
    header = f"{'method':<8} | {'pad 1: fwd ms':>13} {'fwd+bwd ms':>10} {'fwd/conv':>8} {'f+b/conv':>8} | {'pad 24: fwd ms':>14} {'fwd+bwd ms':>10} {'f+b/conv':>8}"
    print(header)
    print("-" * len(header))
    for method in methods:
        f1, b1 = time_padding(method, rvsr_batch, 1, args.repeats)
        f24, b24 = time_padding(method, samples, 24, args.repeats)
        print(f"{method:<8} | {f1 * 1e3:13.2f} {b1 * 1e3:10.2f} {f1 / conv:8.3f} {b1 / conv:8.3f} | "
              f"{f24 * 1e3:14.2f} {b24 * 1e3:10.2f} {b24 / conv:8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
