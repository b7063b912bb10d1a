"""Check that bilinear upscaling pads implicitly by edge replication (arXiv:2502.12300).

For a random 48x48 image, compare bilinear x4 upscaling with the same after explicit 1-pixel
replication padding (50x50 -> 200x200) and cropping 4 output pixels per side. Equal results
(max abs difference at rounding level) mean the upscaler's edge handling is replication,
which is why the RVSR skip path with ``upscale_padding_method=None`` behaves as repl padding.
Run in JAX (float64), PyTorch and OpenCV; a library that is not installed is skipped.

Usage: ``python bilinear_test.py [--seed 0] [--tolerance 1e-9]``; exit status 1 if a
difference exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

import numpy as np

import cli

SIZE, FACTOR = 48, 4


def jax_difference(image: np.ndarray) -> float:
    """The JAX (``jax.image.resize``, float64) max abs difference for ``image`` ``(48, 48)``."""
    import jax

    # jax.enable_x64 in newer JAX; jax.experimental.enable_x64 in JAX 0.4.35 (removed in 0.12).
    enable_x64 = (
        jax.enable_x64 if hasattr(jax, "enable_x64") else importlib.import_module("jax.experimental").enable_x64
    )
    with enable_x64(True):  # float64 only inside: importers keep their float32 default
        import jax.numpy as jnp

        x = jnp.asarray(image, dtype=jnp.float64)
        plain = jax.image.resize(x, (SIZE * FACTOR,) * 2, "bilinear")
        padded = jnp.pad(x, 1, mode="edge")
        cropped = jax.image.resize(padded, ((SIZE + 2) * FACTOR,) * 2, "bilinear")[FACTOR:-FACTOR, FACTOR:-FACTOR]
        return float(jnp.max(jnp.abs(plain - cropped)))


def torch_difference(image: np.ndarray) -> float:
    """The PyTorch (``interpolate``, bilinear, half-pixel centers, float64) difference."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(image)[None, None]  # (1, 1, 48, 48) float64
    plain = F.interpolate(x, scale_factor=FACTOR, mode="bilinear", align_corners=False)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    cropped = F.interpolate(padded, scale_factor=FACTOR, mode="bilinear", align_corners=False)[
        ..., FACTOR:-FACTOR, FACTOR:-FACTOR
    ]
    return float((plain - cropped).abs().max())


def opencv_difference(image: np.ndarray) -> float:
    """The OpenCV (``resize``, ``INTER_LINEAR``, float64) difference."""
    import cv2

    plain = cv2.resize(image, (SIZE * FACTOR,) * 2, interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(image, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    cropped = cv2.resize(padded, ((SIZE + 2) * FACTOR,) * 2, interpolation=cv2.INTER_LINEAR)[
        FACTOR:-FACTOR, FACTOR:-FACTOR
    ]
    return float(np.max(np.abs(plain - cropped)))


LIBRARIES: dict[str, tuple[str, Callable[[np.ndarray], float]]] = {
    "JAX": ("jax", jax_difference),
    "PyTorch": ("torch", torch_difference),
    "OpenCV": ("cv2", opencv_difference),
}
"""Library name -> (module to import, difference function)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="bilinear_test.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the random image (default: %(default)s)")
    parser.add_argument(
        "--tolerance", type=float, default=1e-9, help="largest accepted difference (default: %(default)s)"
    )

    def body(args: argparse.Namespace) -> int:
        image = np.random.default_rng(args.seed).uniform(-1, 1, (SIZE, SIZE))
        failed = False
        for name, (module, difference) in LIBRARIES.items():
            try:
                __import__(module)
            except ImportError:
                print(f"{name}: skipped ({module} is not installed)")
                continue
            value = difference(image)
            ok = value <= args.tolerance
            failed |= not ok
            verdict = "replication" if ok else f"NOT replication (above {args.tolerance:g})"
            print(f"{name}: max abs difference {value:.3g}: {verdict}")
        return 1 if failed else 0

    return cli.run_main(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
