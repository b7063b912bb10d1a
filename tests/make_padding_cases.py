"""Regenerates tests/data/padding_cases.npz, the reference vectors of tests/test_padding.py.

The file holds ``index_json`` (a JSON list of cases: ``case``, ``method``, ``num_padding``,
``mode``, ``padding_method_kwargs``, ``finite``) and per case i the float32 arrays
``c{i}_input`` (channel, y, x), ``c{i}_output`` (what ``Padding2dLayer(num_padding, mode,
padding_method_kwargs)`` returns), ``c{i}_cotangent`` and ``c{i}_grad`` (the gradient of
``sum(output * cotangent)`` with respect to the input). The committed file was computed with the
paper's code, its three defects corrected (docs/padding.md); this script computes outputs and
gradients with padding_reference.py (plain JAX), never with padding.py, so the vectors stay
independent of the code they test. The arithmetic is in the inputs' dtype, float32, as the
layer's is (``--dtype float64`` for more exact values): on a constant channel the float32 mean
leaves a residual of about 4e-7 that the predictor fits (a1 = 1), where float64 leaves none
(a1 = 0), so the two give different gradients there, both correct for their dtype.

The inputs of the committed file came from a generator we do not have, so to reproduce that
file the inputs and cotangents are read from it (``--inputs-from``); ``--seed`` draws new ones
of the same kinds instead. ``--compare`` prints how far a file's vectors are from another's.

    python tests/make_padding_cases.py --inputs-from tests/data/padding_cases.npz \\
        --output /tmp/padding_cases.npz --compare tests/data/padding_cases.npz
    python tests/make_padding_cases.py --seed 1 --output /tmp/new_cases.npz
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import scipy.ndimage

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))  # cli and padding_reference, when run as a script from anywhere

import cli  # noqa: E402

LP_COV = dict(apodization=None)  # the covariance methods use no window
PAPER_CODE_METHODS = {  # name: (mode, padding_method_kwargs), as in the committed index
    "lp1x1cs": ("lp", dict(length=1, width=1, **LP_COV, correlate_method="cov_stab")),
    "lp2x1cs": ("lp", dict(length=2, width=1, **LP_COV, correlate_method="cov_stab")),
    "lp1x1c": ("lp", dict(length=1, width=1, **LP_COV, correlate_method="cov")),
    "lp2x1c": ("lp", dict(length=2, width=1, **LP_COV, correlate_method="cov")),
    "lp2x1csym": ("lp", dict(length=2, width=1, **LP_COV, correlate_method="cov_sym")),
    "lp2x1csymstab": ("lp", dict(length=2, width=1, **LP_COV, correlate_method="cov_sym_stab")),
    "lp2x1": ("lp", dict(length=2, width=1, correlate_method="direct")),
    "lp2x3": ("lp", dict(length=2, width=3, correlate_method="direct")),
    "lp2x3fft": ("lp", dict(length=2, width=3, correlate_method="fft")),
    "lp2x5": ("lp", dict(length=2, width=5)),
    "lp3x3": ("lp", dict(length=3, width=3)),
    "lp4x5": ("lp", dict(length=4, width=5)),
    "lp6x7": ("lp", dict(length=6, width=7)),
    "lp3x3noapod": ("lp", dict(length=3, width=3, apodization=None, correlate_method="direct")),
    "lp1x3": ("lp", dict(length=1, width=3, correlate_method="direct")),
    "lp1x1csymstab": ("lp", dict(length=1, width=1, **LP_COV, correlate_method="cov_sym_stab")),
    "extr1": ("extr", dict(num_predictors=1)),
    "extr2": ("extr", dict(num_predictors=2)),
    "extr3": ("extr", dict(num_predictors=3)),
    "zero": ("zero", {}),
    "repl": ("repl", {}),
}
# (input kind, shape (channel, y, x), num_padding) of each case, in the file's order.
SMOOTH = [("smooth", (3, 20, 23), ((1, 1), (1, 1))), ("smooth", (2, 17, 15), ((2, 3), (4, 1)))]
EDGE_CASES = [  # a constant channel, and oscillating data (complex poles: the stabiliser's gradient)
    ("lp2x3", "constant", (1, 12, 12), ((1, 1), (1, 1))),
    ("lp1x1cs", "constant", (1, 12, 12), ((1, 1), (1, 1))),
    *[(m, "oscillating", (3, 16, 16), ((1, 2), (2, 1))) for m in ("lp2x1cs", "lp2x1csymstab", "lp1x1cs", "lp2x3")],
]


def case_table() -> list[tuple[str, str, tuple, tuple]]:
    """(method, input kind, shape, num_padding) of every case, in order."""
    return [(m, kind, shape, pad) for m in PAPER_CODE_METHODS for kind, shape, pad in SMOOTH] + EDGE_CASES


def draw_input(rng: np.random.Generator, kind: str, shape: tuple) -> np.ndarray:
    """New float32 input of a kind: smooth satellite-like fields (mean about -0.25, standard
    deviation 0.1, the paper's units), a constant 0.3, or growing / damped 2-D oscillations."""
    channels, ny, nx = shape
    if kind == "constant":
        return np.full(shape, 0.3, np.float32)
    if kind == "smooth":
        fields = scipy.ndimage.gaussian_filter(rng.normal(size=shape), sigma=(0, 1.5, 1.5), mode="wrap")
        fields = (fields - fields.mean(axis=(1, 2), keepdims=True)) / fields.std(axis=(1, 2), keepdims=True)
        return (0.1 * fields + rng.uniform(-0.4, -0.1, size=(channels, 1, 1))).astype(np.float32)
    y, x = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    out = []
    for _ in range(channels):
        fy, fx, gy, gx, phase = rng.uniform([0.3, 0.3, -0.15, -0.15, 0], [2.5, 2.5, 0.15, 0.15, 2 * np.pi])
        out.append(0.1 * np.exp(gy * y + gx * x) * np.cos(fy * y + fx * x + phase) + 0.005 * rng.normal(size=(ny, nx)))
    return np.stack(out).astype(np.float32)


def reference_vectors(mode: str, kwargs: dict, num_padding, data: np.ndarray, cotangent: np.ndarray, dtype=np.float64):
    """Output and input gradient of padding_reference.pad computed in ``dtype``, float32 out."""
    import jax
    import jax.numpy as jnp

    import padding_reference

    # float64 inside the block only: jax.enable_x64 in newer JAX, jax.experimental's in the oldest.
    enable_x64 = (
        jax.enable_x64 if hasattr(jax, "enable_x64") else importlib.import_module("jax.experimental").enable_x64
    )

    @jax.jit
    def run(data, cotangent):
        out, vjp = jax.vjp(lambda d: padding_reference.pad(d, num_padding, mode, kwargs), data)
        return out, vjp(cotangent)[0]

    with enable_x64():
        out, grad = run(jnp.asarray(data, dtype), jnp.asarray(cotangent, dtype))
    return np.asarray(out, np.float32), np.asarray(grad, np.float32)


def make_cases(inputs_from: Path | None, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """Every array of the file, by name."""
    source = np.load(inputs_from) if inputs_from else None
    rng = np.random.default_rng(seed)
    arrays, index = {}, []
    for i, (method, kind, shape, num_padding) in enumerate(case_table()):
        mode, kwargs = PAPER_CODE_METHODS[method]
        (top, bottom), (left, right) = num_padding
        if source is not None:
            data, cotangent = source[f"c{i}_input"], source[f"c{i}_cotangent"]
        else:
            data = draw_input(rng, kind, shape)
            cotangent = rng.normal(size=(shape[0], shape[1] + top + bottom, shape[2] + left + right)).astype(np.float32)
        out, grad = reference_vectors(mode, kwargs, num_padding, data, cotangent, dtype)
        finite = bool(np.isfinite(out).all() and np.isfinite(grad).all())
        index.append(dict(case=i, method=method, num_padding=[list(p) for p in num_padding], mode=mode,
                          padding_method_kwargs=kwargs, finite=finite))  # fmt: skip
        arrays.update({f"c{i}_input": data, f"c{i}_output": out, f"c{i}_cotangent": cotangent, f"c{i}_grad": grad})
        print(f"case {i:2d} {method:14s} {shape}", flush=True)
    return {"index_json": np.array(json.dumps(index)), **arrays}


def compare(new: dict[str, np.ndarray], old_path: Path) -> float:
    """Prints, per case, the largest output and gradient differences relative to the largest
    value, and returns the largest of them."""
    old = np.load(old_path)
    same_index = str(old["index_json"]) == str(new["index_json"])
    print(f"index_json {'identical' if same_index else 'DIFFERS'}; largest |difference| / largest |value|:")
    worst = 0.0 if same_index else np.inf
    for case in json.loads(str(new["index_json"])):
        i = case["case"]
        diffs = []
        for part in ("input", "cotangent", "output", "grad"):
            a, b = new[f"c{i}_{part}"], old[f"c{i}_{part}"]
            diffs.append(float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(np.float32).tiny)))
        worst = max(worst, *diffs)
        print(f"case {i:2d} {case['method']:14s} input {diffs[0]:.1e} cotangent {diffs[1]:.1e} "
              f"output {diffs[2]:.1e} grad {diffs[3]:.1e}")  # fmt: skip
    print(f"largest: {worst:.2e}")
    return worst


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="make_padding_cases.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="the .npz file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--inputs-from", type=Path, help="take inputs and cotangents from this .npz")
    source.add_argument("--seed", type=int, help="draw new inputs and cotangents with this seed")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="the arithmetic of the reference (default: float32, the inputs' dtype)")  # fmt: skip
    parser.add_argument("--compare", type=Path, help="print the differences to this .npz")
    return cli.run_main(parser, run, argv)


def run(args: argparse.Namespace) -> int:
    if args.output.exists() and not args.overwrite:
        raise cli.UsageError(f"{args.output} exists; pass --overwrite to replace it")
    for path in (args.inputs_from, args.compare):
        if path is not None and not path.is_file():
            raise cli.UsageError(f"no such file: {path}")
    arrays = make_cases(args.inputs_from, args.seed or 0, np.dtype(args.dtype))
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output}")
    if args.compare:
        compare(arrays, args.compare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
