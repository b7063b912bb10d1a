"""Tests of padding.py: the reference vectors in tests/data/padding_cases.npz, finite-difference
gradients, robustness on hard inputs, and the documented behaviour of every function."""

import importlib
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import padding
from padding import (
    PAPER_METHODS,
    Padding2dLayer,
    extr_pad,
    extr_pad_channels,
    linear_prediction_pad,
    linear_prediction_pad_channels,
    make_extr_pad_weights,
)

DATA = Path(__file__).parent / "data"

# float64 inside a `with` block: jax.enable_x64 in newer JAX, jax.experimental.enable_x64 in the
# oldest supported versions (0.4.35), which lack the former; JAX 0.12 lacks the latter.
enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else importlib.import_module("jax.experimental").enable_x64

# Every method of the paper plus the covariance variants the paper's code offers.
ALL_METHODS = {
    **PAPER_METHODS,
    "lp1x1c": ("lp", dict(length=1, width=1, apodization=None, correlate_method="cov")),
    "lp2x1c": ("lp", dict(length=2, width=1, apodization=None, correlate_method="cov")),
    "lp1x1csym": ("lp", dict(length=1, width=1, apodization=None, correlate_method="cov_sym")),
    "lp2x1csymstab": ("lp", dict(length=2, width=1, apodization=None, correlate_method="cov_sym_stab")),
    "lp1x1csymstab": ("lp", dict(length=1, width=1, apodization=None, correlate_method="cov_sym_stab")),
    "lp2x3fft": ("lp", dict(length=2, width=3, correlate_method="fft")),
    "lp3x3noapod": ("lp", dict(length=3, width=3, apodization=None, correlate_method="direct")),
    "extr1": ("extr", dict(num_predictors=1)),
}
LP_METHODS = [name for name, (mode, _) in ALL_METHODS.items() if mode == "lp"]
COV_STAB_METHODS = ["lp1x1cs", "lp2x1cs", "lp1x1csymstab", "lp2x1csymstab"]


def layer_for(method: str, num_padding=((1, 1), (1, 1))) -> Padding2dLayer:
    mode, kwargs = ALL_METHODS[method]
    return Padding2dLayer(num_padding, mode, kwargs)


def value_and_vjp(layer: Padding2dLayer, x: jax.Array, cotangent: jax.Array):
    """Padded output and the gradient of sum(output * cotangent), in one compiled function."""

    def loss(x):
        out = layer(x)
        return jnp.sum(out * cotangent), out

    (_, out), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(x)
    return out, grad


def oscillating_images(rng: np.random.Generator, n: int, size=(14, 15)) -> np.ndarray:
    """(n, y, x) damped or growing 2-D oscillations plus a little noise: complex-pole data."""
    y, x = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing="ij")
    images = []
    for _ in range(n):
        fy, fx = rng.uniform(0.3, 2.5, size=2)
        gy, gx = rng.uniform(-0.15, 0.15, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        image = np.exp(gy * y + gx * x) * np.cos(fy * y + fx * x + phase)
        images.append(image + 0.05 * rng.normal(size=size))
    return np.stack(images)


# ----------------------------------------------------------------------------------------------
# Reference vectors (tests/data/padding_cases.npz)

_REFERENCE = np.load(DATA / "padding_cases.npz")
_CASES = json.loads(str(_REFERENCE["index_json"]))


@pytest.mark.parametrize("case", _CASES, ids=[f"{c['case']}-{c['method']}" for c in _CASES])
def test_reference_case_output_and_gradient(case):
    i = case["case"]
    x = _REFERENCE[f"c{i}_input"]
    layer = Padding2dLayer(case["num_padding"], case["mode"], case["padding_method_kwargs"])
    out, grad = value_and_vjp(layer, jnp.asarray(x), jnp.asarray(_REFERENCE[f"c{i}_cotangent"]))
    expected_out = _REFERENCE[f"c{i}_output"]
    expected_grad = _REFERENCE[f"c{i}_grad"]
    assert out.shape == expected_out.shape and out.dtype == expected_out.dtype
    out_scale = np.abs(expected_out).max()
    grad_scale = np.abs(expected_grad).max()
    np.testing.assert_allclose(out, expected_out, rtol=0, atol=2e-5 * out_scale)
    # A constant channel sits on a knife edge: its gradient divides sums of squares of
    # (x - mean) ~ 1e-7 by each other, so the summation order XLA picks shows at 1e-4.
    constant = np.ptp(x, axis=(1, 2)).max() == 0
    np.testing.assert_allclose(grad, expected_grad, rtol=0, atol=(3e-4 if constant else 5e-5) * grad_scale)


# ----------------------------------------------------------------------------------------------
# One compiled probe per method and dtype serves the gradient, property and robustness tests:
# the channels hold random data, that data plus a constant, and hard inputs (constant, zero, tiny, huge, alternating).

PROBE_PADDING = ((2, 1), (1, 2))
PROBE_SHAPE = (9, 10)
RANDOM, SHIFTED, CONSTANT, ZEROS, TINY, HUGE, STRIPES = range(7)
SHIFT = 5.0


def probe_input(dtype) -> np.ndarray:
    """(7, 9, 10) channels in the order of the indices above."""
    rng = np.random.default_rng(1)
    random = rng.normal(size=PROBE_SHAPE)
    noise = rng.normal(size=PROBE_SHAPE)
    tiny, huge = (1e-30, 1e150) if dtype == np.float64 else (1e-18, 1e15)
    stripes = np.tile([1.0, -1.0], (PROBE_SHAPE[0], PROBE_SHAPE[1] // 2))
    channels = [
        random,
        random + SHIFT,
        np.full(PROBE_SHAPE, -3.25),
        np.zeros(PROBE_SHAPE),
        noise * tiny,
        noise * huge,
        stripes,
    ]
    return np.stack(channels).astype(dtype)


_PROBES = {}


def probe(method: str, dtype):
    """jit(x, cotangent) -> (sum(out * cotangent), out, gradient) for the method's layer."""
    if (method, dtype) not in _PROBES:
        layer = layer_for(method, PROBE_PADDING)

        def loss(x, cotangent):
            out = layer(x)
            return jnp.sum(out * cotangent), out

        @jax.jit
        def run(x, cotangent):
            (value, out), grad = jax.value_and_grad(loss, has_aux=True)(x, cotangent)
            return value, out, grad

        _PROBES[method, dtype] = run
    return _PROBES[method, dtype]


def padded_shape(channels: int) -> tuple[int, int, int]:
    (top, bottom), (left, right) = PROBE_PADDING
    return channels, PROBE_SHAPE[0] + top + bottom, PROBE_SHAPE[1] + left + right


@pytest.mark.parametrize("method", list(ALL_METHODS))
@pytest.mark.slow
def test_gradient_matches_finite_differences(method):
    """Central differences along random directions, float64, on the random channel."""
    rng = np.random.default_rng(2)
    with enable_x64(True):
        run = probe(method, np.float64)
        x = probe_input(np.float64)
        cotangent = np.zeros(padded_shape(len(x)))
        cotangent[RANDOM] = rng.normal(size=cotangent.shape[1:])
        _, _, grad = run(x, cotangent)
        eps = 1e-5
        for _ in range(3):
            direction = np.zeros_like(x)
            direction[RANDOM] = rng.normal(size=PROBE_SHAPE)
            plus = run(x + eps * direction, cotangent)[0]
            minus = run(x - eps * direction, cotangent)[0]
            numeric = (plus - minus) / (2 * eps)
            analytic = np.sum(np.asarray(grad) * direction)
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", list(ALL_METHODS))
@pytest.mark.slow
def test_interior_is_returned_unchanged(method):
    with enable_x64(True):
        x = probe_input(np.float64)
        _, out, _ = probe(method, np.float64)(x, np.ones(padded_shape(len(x))))
    (top, _), (left, _) = PROBE_PADDING
    finite = [RANDOM, SHIFTED, CONSTANT, ZEROS, TINY, HUGE, STRIPES]
    np.testing.assert_array_equal(
        np.asarray(out)[finite, top : top + PROBE_SHAPE[0], left : left + PROBE_SHAPE[1]], x[finite]
    )


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if m != "zero"])
def test_mean_is_restored(method):
    """Adding a constant to a channel adds it to every padded pixel; a constant pads as itself."""
    with enable_x64(True):
        x = probe_input(np.float64)
        _, out, _ = probe(method, np.float64)(x, np.ones(padded_shape(len(x))))
    out = np.asarray(out)
    np.testing.assert_allclose(out[SHIFTED] - out[RANDOM], SHIFT, atol=1e-9)
    np.testing.assert_allclose(out[CONSTANT], -3.25, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", list(ALL_METHODS))
@pytest.mark.slow
def test_finite_output_and_gradient_on_hard_inputs(method, dtype):
    """Constant, all-zero, tiny, huge and alternating channels: no NaN or inf, in value or gradient."""
    with enable_x64(dtype == np.float64):
        x = probe_input(dtype)
        value, out, grad = probe(method, dtype)(x, np.ones(padded_shape(len(x)), dtype))
    assert out.dtype == dtype and grad.dtype == dtype
    for channel in (CONSTANT, ZEROS, TINY, HUGE, STRIPES):
        assert np.all(np.isfinite(out[channel])), channel
        assert np.all(np.isfinite(grad[channel])), channel


@pytest.mark.parametrize("method", COV_STAB_METHODS)
def test_stabilised_gradient_on_oscillating_data(method):
    """Complex poles, inside and outside the unit circle: the gradient is the true one."""
    layer = layer_for(method, ((2, 2), (2, 2)))
    with enable_x64(True):
        images = jnp.asarray(oscillating_images(np.random.default_rng(3), 8))
        cotangent = jnp.asarray(np.random.default_rng(4).normal(size=(8, 18, 19)))
        check_grads(jax.jit(lambda x: jnp.sum(layer(x) * cotangent)), (images,), order=1, modes=["rev"], eps=1e-6)


def _poles(a1, a2):
    return np.roots([1.0, -a1, -a2])


@pytest.mark.parametrize(
    "a1, a2",
    [(0.5, 0.3), (1.5, -0.9), (2.5, -1.2), (-0.8, -1.5), (3.0, -2.2), (0.2, 1.5), (-2.2, -0.5)],
)
def test_stabilise_reflects_poles_into_unit_circle(a1, a2):
    with enable_x64(True):
        b1, b2 = (float(v) for v in padding._stabilise((jnp.float64(a1), jnp.float64(a2))))
    before = _poles(a1, a2)
    expected = np.where(np.abs(before) > 1, 1 / before, before)
    np.testing.assert_allclose(np.sort_complex(_poles(b1, b2)), np.sort_complex(expected), atol=1e-9)
    # the derivative of the branch taken, checked against finite differences
    with enable_x64(True):
        check_grads(
            lambda a1, a2: sum(padding._stabilise((a1, a2))), (jnp.float64(a1), jnp.float64(a2)), order=1, eps=1e-7
        )


# ----------------------------------------------------------------------------------------------
# Lagrange extrapolation


def test_extr_weights_match_spec():
    np.testing.assert_array_equal(make_extr_pad_weights(3, 3), [[1, 3, 6], [-3, -8, -15], [3, 6, 10]])
    np.testing.assert_array_equal(make_extr_pad_weights(4, 1), [[1, 1, 1, 1]])
    np.testing.assert_array_equal(make_extr_pad_weights(2, 2), [[-1, -2], [2, 3]])


@pytest.mark.parametrize("num_predictors", [1, 2, 3, 4, 5])
def test_extr_weights_reproduce_polynomials(num_predictors):
    weights = make_extr_pad_weights(6, num_predictors)
    assert weights.dtype.kind == "i"
    nodes = np.arange(-num_predictors + 1, 1)
    for degree in range(num_predictors):
        np.testing.assert_array_equal(nodes**degree @ weights, np.arange(1, 7) ** degree)


@pytest.mark.parametrize("num_predictors", [1, 2, 3])
def test_extr_pad_extends_polynomial_surfaces_exactly(num_predictors):
    degree = num_predictors - 1
    y, x = np.meshgrid(np.arange(-3.0, 8), np.arange(-2.0, 10), indexing="ij")
    surface = (0.5 * y + 0.25 * x + 1) ** degree + 0.1 * x**degree
    inner = surface[3:9, 2:10]
    out = extr_pad(jnp.asarray(inner), ((3, 2), (2, 2)), num_predictors)
    np.testing.assert_allclose(out, surface, rtol=1e-5, atol=1e-4)


def test_extr1_is_replication():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 6)), jnp.float32)
    np.testing.assert_array_equal(
        extr_pad_channels(x, ((2, 1), (0, 3)), num_predictors=1), jnp.pad(x, ((0, 0), (2, 1), (0, 3)), mode="edge")
    )


def test_extr_reduces_predictors_to_data_size():
    x = jnp.asarray([[1.0, 2.0]])
    np.testing.assert_allclose(extr_pad(x, ((0, 0), (1, 2)), 3), [[0.0, 1.0, 2.0, 3.0, 4.0]])


# ----------------------------------------------------------------------------------------------
# Properties of every method


def _ar_rows(rng, a1, a2, shape, burn_in=50):
    """Independent 1-D AR(2) processes along each row: x[t] = a1 x[t-1] + a2 x[t-2] + noise."""
    ny, nx = shape
    noise = rng.normal(size=(ny, nx + burn_in))
    out = np.zeros_like(noise)
    for t in range(nx + burn_in):
        out[:, t] = noise[:, t] + (a1 * out[:, t - 1] if t >= 1 else 0) + (a2 * out[:, t - 2] if t >= 2 else 0)
    return out[:, burn_in:]


@pytest.mark.parametrize("a1, a2", [(0.8, 0.0), (1.2, -0.5), (0.5, 0.3), (-0.4, 0.2)])
@pytest.mark.parametrize("correlate_method", ["cov", "cov_stab", "cov_sym"])
def test_covariance_method_recovers_ar_coefficients(a1, a2, correlate_method):
    length = 1 if a2 == 0.0 else 2
    field = _ar_rows(np.random.default_rng(7), a1, a2, (200, 300))
    with enable_x64(True):
        coefs = np.asarray(padding._covariance_coefs(jnp.asarray(field), length, correlate_method))
    horizontal = coefs[1, 0, :, 0]  # right (or horizontal) set, farthest predictor first
    expected = [a1] if length == 1 else [a2, a1]
    np.testing.assert_allclose(horizontal, expected, atol=0.02)
    if not correlate_method.startswith("cov_sym"):
        np.testing.assert_allclose(coefs[3, 0, :, 0], expected, atol=0.02)  # left: AR is time-reversible


@pytest.mark.parametrize("axis", [0, 1])
def test_covariance_statistics_are_plain_sums(axis):
    a = np.random.default_rng(8).normal(size=(5, 6))
    with enable_x64(True):
        forward, backward = np.asarray(padding._covariance_stats(jnp.asarray(a), 2, axis))
    b = a if axis == 1 else a.T
    x0, x1, x2 = b[:, 2:], b[:, 1:-1], b[:, :-2]
    np.testing.assert_allclose(
        forward, [(x1 * x1).sum(), (x2 * x2).sum(), (x0 * x1).sum(), (x1 * x2).sum(), (x0 * x2).sum()]
    )
    y0, y1, y2 = b[:, :-2], b[:, 1:-1], b[:, 2:]
    np.testing.assert_allclose(
        backward, [(y1 * y1).sum(), (y2 * y2).sum(), (y0 * y1).sum(), (y1 * y2).sum(), (y0 * y2).sum()]
    )


def _lag_sum(a: np.ndarray, dy: int, dx: int) -> float:
    """sum a[y, x] a[y + dy, x + dx] over the zero-extended data, straight from the definition."""
    m = max(abs(dy), abs(dx))
    padded = np.pad(a, m)
    return float((a * padded[m + dy : m + dy + a.shape[0], m + dx : m + dx + a.shape[1]]).sum())


@pytest.mark.parametrize("lag_sums", [padding._lag_sums_direct, padding._lag_sums_fft])
@pytest.mark.parametrize("shape", [(9, 9), (7, 12), (11, 10)])
def test_lag_sums_match_definition(lag_sums, shape):
    """Also odd FFT widths, where an inverse transform without the output size goes wrong."""
    a = np.random.default_rng(9).normal(size=shape)
    lags = tuple((dy, dx) for dy in range(4) for dx in range(-3, 4) if dy > 0 or dx >= 0)
    with enable_x64(True):
        sums = np.asarray(lag_sums(jnp.asarray(a), lags))
    np.testing.assert_allclose(sums, [_lag_sum(a, dy, dx) for dy, dx in lags], atol=1e-11)


def _lag_sums_by_definition(a: jax.Array, lags) -> jax.Array:
    """The lag sums written plainly (slices of the zero-padded data), differentiated by JAX."""
    m = max(max(abs(dy), abs(dx)) for dy, dx in lags)
    padded = jnp.pad(a, m)
    ny, nx = a.shape
    return jnp.stack([jnp.sum(a * padded[m + dy : m + dy + ny, m + dx : m + dx + nx]) for dy, dx in lags])


@pytest.mark.parametrize("lag_sums", [padding._lag_sums_direct, padding._lag_sums_fft])
@pytest.mark.parametrize("shape", [(7, 12), (11, 10)])
@pytest.mark.parametrize("reach", [2, 5])
@pytest.mark.slow
def test_lag_sums_custom_gradient_matches_autodiff(lag_sums, shape, reach):
    """The closed-form backward passes of the lag sums against JAX's derivative of the definition
    (reach 2: 13 lags, the FFT method's backward in space; reach 5: 61 lags, by inverse FFT)."""
    rng = np.random.default_rng(17)
    a = jnp.asarray(rng.normal(size=shape))
    lags = tuple((dy, dx) for dy in range(reach + 1) for dx in range(-reach, reach + 1) if dy > 0 or dx >= 0)
    assert (len(lags) <= padding._SPATIAL_BACKWARD_MAX_LAGS) == (reach == 2)
    g = jnp.asarray(rng.normal(size=len(lags)))
    with enable_x64(True):
        a, g = jnp.asarray(a, jnp.float64), jnp.asarray(g, jnp.float64)
        ours = jax.grad(lambda a: jnp.sum(lag_sums(a, lags) * g))(a)
        plain = jax.grad(lambda a: jnp.sum(_lag_sums_by_definition(a, lags) * g))(a)
    np.testing.assert_allclose(ours, plain, atol=1e-11)


@pytest.mark.parametrize("axis", [0, 1])
def test_covariance_statistics_gradient_matches_autodiff(axis):
    rng = np.random.default_rng(18)
    with enable_x64(True):
        a = jnp.asarray(rng.normal(size=(6, 7)))
        g = jnp.asarray(rng.normal(size=(2, 5)))
        ours = jax.grad(lambda a: jnp.sum(padding._covariance_stats(a, 2, axis) * g))(a)

        def plain(a):
            b = a if axis == 1 else a.T
            x0, x1, x2 = b[:, 2:], b[:, 1:-1], b[:, :-2]
            y0, y1, y2 = b[:, :-2], b[:, 1:-1], b[:, 2:]
            stats = [[x1 * x1, x2 * x2, x0 * x1, x1 * x2, x0 * x2], [y1 * y1, y2 * y2, y0 * y1, y1 * y2, y0 * y2]]
            return jnp.stack([jnp.stack([s.sum() for s in row]) for row in stats])

        expected = jax.grad(lambda a: jnp.sum(plain(a) * g))(a)
    np.testing.assert_allclose(ours, expected, atol=1e-12)


@pytest.mark.parametrize("length", [1, 2])
def test_covariance_sums_gram_and_product_forms_agree(length, monkeypatch):
    """The Gram-matrix forward (axes up to `_GRAM_MAX_SIZE`) and the lagged-product forward
    (longer axes) give the same sums, and share the closed-form gradient."""
    rng = np.random.default_rng(21)
    with enable_x64(True):
        a = jnp.asarray(rng.normal(size=(6, 7)))
        g = jnp.asarray(rng.normal(size=(2, 2, 5 if length == 2 else 2)))
        gram = padding._covariance_sums(a, length, (0, 1))
        gram_grad = jax.grad(lambda a: jnp.sum(padding._covariance_sums(a, length, (0, 1)) * g))(a)
        monkeypatch.setattr(padding, "_GRAM_MAX_SIZE", 0)
        products = padding._covariance_sums(a, length, (0, 1))
        products_grad = jax.grad(lambda a: jnp.sum(padding._covariance_sums(a, length, (0, 1)) * g))(a)
    np.testing.assert_allclose(products, gram, atol=1e-12)
    np.testing.assert_allclose(products_grad, gram_grad, atol=1e-12)


@pytest.mark.parametrize("length", [1, 2])
def test_covariance_sums_of_a_constant_channel_round_alike(length):
    """A float32 constant minus its inexact mean is a tiny constant: all sums of an axis add the
    same number of equal products, so on the gradient path (the forward rule, the Gram form)
    they must come out exactly equal (a1 = 1 for length 1, a zero determinant for length 2),
    not an ulp apart on either side of the stabiliser's edge, where the gradient flips."""
    sums = jax.jit(lambda a: padding._covariance_sums_fwd(a, length, (0, 1))[0])
    for value, shape in [(0.1, (33, 17)), (1 / 3, (48, 48)), (7.77, (9, 10))]:
        d = jnp.full(shape, value, jnp.float32)
        out = np.asarray(sums(d - jnp.mean(d)))
        for row in out.reshape(-1, out.shape[-1]):
            np.testing.assert_array_equal(row, row[0])


@pytest.mark.parametrize("method", COV_STAB_METHODS)
def test_constant_float32_channel_pads_alike_with_and_without_gradient(method):
    """Without a gradient the covariance sums come from lag sums minus edge terms, which need
    not round alike for a constant channel (a tiny constant after the inexact float32 mean, where
    the normal equations are singular); such a channel must still pad as the gradient path pads
    it, not with a predictor picked by rounding."""
    layer = layer_for(method, ((3, 2), (1, 4)))
    primal, gradient_path = jax.jit(lambda x: layer(x)), jax.jit(lambda x: jax.vjp(layer, x)[0])
    for value, shape in [(0.1, (33, 17)), (1 / 3, (48, 48)), (7.77, (9, 10))]:
        x = jnp.full((1, *shape), value, jnp.float32)
        np.testing.assert_allclose(primal(x), gradient_path(x), rtol=2e-7, atol=0)
        np.testing.assert_allclose(primal(x), value, rtol=1e-5)


@pytest.mark.parametrize("method", ["lp1x1cs", "lp2x1cs", "lp1x1csym", "lp2x1c", "lp2x1", "lp2x3", "lp6x7"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_gradient_forward_equals_the_gradient_path(method, dtype):
    """Without a gradient the padding may take cheaper forms (custom VJPs whose primal differs
    from their forward rule); the value must equal, to rounding, the one a gradient computes,
    on data padded by more than one pixel and on the hard inputs."""
    layer = layer_for(method, ((3, 2), (1, 4)))
    with enable_x64(dtype == np.float64):
        scaled = np.random.default_rng(31).normal(size=(3, *PROBE_SHAPE)) * [[[1.0]], [[1e-3]], [[50.0]]]
        x = jnp.asarray(np.concatenate([scaled.astype(dtype), probe_input(dtype)]))
        primal = np.asarray(jax.jit(lambda x: layer(x))(x))
        gradient_path = np.asarray(jax.jit(lambda x: jax.vjp(layer, x)[0])(x))
    if dtype == np.float32:
        # The tiny channel's products (1e-36) fall to float32's subnormal range, where the two
        # forms' different summation orders keep different bits: compared only in float64.
        primal, gradient_path = np.delete(primal, 3 + TINY, 0), np.delete(gradient_path, 3 + TINY, 0)
    finite = np.isfinite(gradient_path).all(axis=(1, 2))
    assert (np.isfinite(primal).all(axis=(1, 2)) == finite).all()
    scale = np.maximum(np.abs(gradient_path[finite]).max(axis=(1, 2), keepdims=True), np.finfo(dtype).tiny)
    tolerance = 1e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(primal[finite] / scale, gradient_path[finite] / scale, rtol=0, atol=tolerance)


@pytest.mark.parametrize("method", ["lp1x1cs", "lp2x1cs", "lp2x3", "lp6x7"])
@pytest.mark.slow
def test_gradient_through_a_scan_of_vmapped_padding(method):
    """The RVSR body's pattern: padding vmapped over images inside a scan, differentiated. The
    gradient equals the one without the scan (JAX 0.12 once mixed up the batch axes of a custom
    VJP's two forward forms here)."""
    layer = layer_for(method, ((1, 1), (1, 1)))
    x = jnp.asarray(np.random.default_rng(32).normal(size=(2, 2, 8, 9)), jnp.float32)

    def step(h, _):
        return jax.vmap(layer)(h)[:, :, 1:-1, 1:-1] * 0.5 + h, None

    def looped(h):
        for _ in range(2):
            h = step(h, None)[0]
        return jnp.sum(h**2)

    scanned = jax.grad(lambda h: jnp.sum(jax.lax.scan(step, h, None, length=2, unroll=True)[0] ** 2))(x)
    np.testing.assert_allclose(scanned, jax.grad(looped)(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "correlate_method, scale",
    [
        ("direct", lambda ny, nx, m: ny * nx),
        ("fft", lambda ny, nx, m: padding._smooth_size(ny + m) * padding._smooth_size(nx + m)),
    ],
)
def test_autocorrelation_scale(correlate_method, scale):
    a = np.random.default_rng(10).normal(size=(7, 11))
    lags = ((0, 0), (1, -2), (0, 3))
    with enable_x64(True):
        r = np.asarray(padding._autocorrelation(jnp.asarray(a), lags, correlate_method))
    np.testing.assert_allclose(r * scale(7, 11, 3), [_lag_sum(a, dy, dx) for dy, dx in lags], atol=1e-11)


@pytest.mark.parametrize("length, width", [(1, 1), (2, 1), (2, 3), (3, 3), (6, 7)])
def test_normal_equations_index_the_right_lags(length, width):
    lags, mat_index, rhs_index = padding._normal_equations(length, width)
    assert all(dy > 0 or (dy == 0 and dx >= 0) for dy, dx in lags)
    n = length * width
    for i in range(n):
        for j in range(n):
            d = (i // width - j // width, i % width - j % width)
            assert lags[mat_index[0, i, j]] in (d, (-d[0], -d[1]))
            assert lags[mat_index[1, i, j]] in (d[::-1], (-d[1], -d[0]))
        for q in range(width):
            d = (length - i // width, q - i % width)
            assert lags[rhs_index[0, i, q]] in (d, (-d[0], -d[1]))


def test_smooth_size():
    assert [padding._smooth_size(n) for n in (1, 11, 13, 17, 97, 121)] == [1, 12, 14, 18, 98, 125]


@pytest.mark.parametrize("method", LP_METHODS)
@pytest.mark.slow
def test_smallest_valid_input(method):
    mode, kwargs = ALL_METHODS[method]
    length, width = kwargs.get("length", 2), kwargs.get("width", 3)
    side = max(length + 1, width)
    x = jnp.asarray(np.random.default_rng(11).normal(size=(1, side, side)), jnp.float32)
    layer = layer_for(method, ((1, 1), (1, 1)))
    out, grad = value_and_vjp(layer, x, jnp.ones((1, side + 2, side + 2)))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="too small"):
        layer(x[:, :-1, :-1] if side > length + 1 else x[:, :-1])


# ----------------------------------------------------------------------------------------------
# Transformations and dtypes


def test_float64_in_float64_out_and_matches_float32():
    x = np.random.default_rng(12).normal(size=(2, 12, 13))
    padder = layer_for("lp2x3", ((2, 2), (2, 2)))
    layer = jax.jit(lambda x: padder(x))  # one function, compiled per dtype
    with enable_x64(True):
        out64 = layer(jnp.asarray(x))
        assert out64.dtype == jnp.float64
    out32 = layer(jnp.asarray(x, jnp.float32))
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(out32, out64, atol=1e-4)


def test_vmap_over_batch_matches_loop():
    x = jnp.asarray(np.random.default_rng(13).normal(size=(3, 2, 10, 10)), jnp.float32)
    layer = layer_for("lp2x1cs")
    batched = jax.jit(jax.vmap(layer))(x)
    single = jax.jit(lambda x: layer(x))  # compiled once, reused for every item
    for i in range(3):
        np.testing.assert_allclose(batched[i], single(x[i]), atol=1e-6)


def test_channels_function_matches_single_channel():
    x = jnp.asarray(np.random.default_rng(14).normal(size=(2, 10, 11)), jnp.float32)
    kwargs = dict(length=3, width=3, correlate_method="direct")
    both = jax.jit(lambda x: linear_prediction_pad_channels(x, ((1, 2), (3, 0)), **kwargs))(x)
    one = jax.jit(lambda x: linear_prediction_pad(x, ((1, 2), (3, 0)), **kwargs))(x[1])
    np.testing.assert_allclose(both[1], one, atol=1e-6)


def test_zero_padding_on_some_sides():
    x = jnp.asarray(np.random.default_rng(15).normal(size=(9, 10)), jnp.float32)
    out = linear_prediction_pad(x, ((0, 2), (0, 0)))
    assert out.shape == (11, 10)
    np.testing.assert_array_equal(linear_prediction_pad(x, ((0, 0), (0, 0))), x)


def test_defaults_are_lp2x3_fft():
    x = jnp.asarray(np.random.default_rng(16).normal(size=(9, 10)), jnp.float32)
    np.testing.assert_array_equal(
        linear_prediction_pad(x, ((1, 1), (1, 1))),
        linear_prediction_pad(
            x, ((1, 1), (1, 1)), length=2, width=3, apodization="tukey", correlate_method="fft", cholesky_stab=1e-7
        ),
    )


def test_layer_holds_no_arrays_and_is_static():
    layer = layer_for("lp2x3")
    assert jax.tree_util.tree_leaves(layer) == []
    assert layer.num_padding == ((1, 1), (1, 1)) and layer.mode == "lp"
    assert eqx.tree_equal(layer, layer_for("lp2x3"))


@pytest.mark.parametrize("mode", ["zero", "repl"])
def test_zero_and_repl_ignore_options(mode):
    x = jnp.arange(12.0).reshape(1, 3, 4)
    with_options = Padding2dLayer(((1, 0), (2, 1)), mode, {"length": 4, "width": 5, "anything": 1})(x)
    expected = jnp.pad(x, ((0, 0), (1, 0), (2, 1)), mode="constant" if mode == "zero" else "edge")
    np.testing.assert_array_equal(with_options, expected)


def test_long_recursion_stays_finite_and_smooth_data_extends_smoothly():
    y, x = np.meshgrid(np.linspace(0, 1, 24), np.linspace(0, 1, 24), indexing="ij")
    smooth = np.sin(3 * x + 2 * y)[None].astype(np.float32)
    out = layer_for("lp2x3", ((24, 24), (24, 24)))(jnp.asarray(smooth))
    assert out.shape == (1, 72, 72) and np.all(np.isfinite(out))
    step = np.abs(np.asarray(out)[0, 24, 24:48] - np.asarray(out)[0, 23, 24:48])
    assert step.max() < 0.2


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(width=2), "width"),
        (dict(width=0), "width"),
        (dict(width=-3), "width"),
        (dict(length=0), "length"),
        (dict(correlate_method="fast"), "correlate_method"),
        (dict(apodization="hann"), "apodization"),
        (dict(correlate_method="cov", width=3), "correlate_method"),
        (dict(correlate_method="cov_stab", length=3, width=1), "correlate_method"),
    ],
)
def test_bad_lp_options_raise(kwargs, name):
    x = jnp.zeros((10, 10))
    with pytest.raises(ValueError, match=name):
        linear_prediction_pad(x, ((1, 1), (1, 1)), **kwargs)
    with pytest.raises(ValueError, match=name):
        Padding2dLayer(((1, 1), (1, 1)), "lp", kwargs)


@pytest.mark.parametrize("num_padding", [((-1, 0), (0, 0)), ((0, 0), (0, -2)), ((1,), (1, 1)), "1", ((0.5, 0), (0, 0))])
def test_bad_num_padding_raises(num_padding):
    with pytest.raises(ValueError, match="num_padding"):
        linear_prediction_pad(jnp.zeros((10, 10)), num_padding)
    with pytest.raises(ValueError, match="num_padding"):
        Padding2dLayer(num_padding, "zero")


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="mode"):
        Padding2dLayer(((1, 1), (1, 1)), "reflect")


@pytest.mark.parametrize("num_predictors", [0, -1, 1.5])
def test_bad_num_predictors_raises(num_predictors):
    with pytest.raises(ValueError, match="num_predictors"):
        make_extr_pad_weights(3, num_predictors)
    with pytest.raises(ValueError, match="num_predictors"):
        extr_pad(jnp.zeros((4, 4)), ((1, 1), (1, 1)), num_predictors)
    with pytest.raises(ValueError, match="num_predictors"):
        Padding2dLayer(((1, 1), (1, 1)), "extr", {"num_predictors": num_predictors})


def test_wrong_rank_raises():
    with pytest.raises(ValueError, match="data"):
        linear_prediction_pad(jnp.zeros((2, 10, 10)), ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match="data"):
        linear_prediction_pad_channels(jnp.zeros((10, 10)), ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match="x"):
        extr_pad(jnp.zeros((10,)), ((1, 1), (1, 1)), 2)
    with pytest.raises(ValueError, match="x"):
        layer_for("repl")(jnp.zeros((10, 10)))


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(length=2, width=3), (2, 10)),  # fewer than length + 1 rows
        (dict(length=4, width=5), (10, 4)),  # fewer than length + 1 columns
        (dict(length=1, width=7), (5, 12)),  # front narrower than width
        (dict(length=2, width=1, apodization=None, correlate_method="cov_stab"), (10, 2)),
    ],
)
def test_data_too_small_raises(kwargs, shape):
    with pytest.raises(ValueError, match="too small"):
        linear_prediction_pad(jnp.zeros(shape), ((1, 1), (1, 1)), **kwargs)


@pytest.mark.parametrize("method", ["lp1x1cs", "lp2x1cs", "lp2x1", "lp6x7"])
def test_thin_map_padded_only_along_x(method):
    """A (1, 100) map needs pixels only along the padded axes: none without padding; with
    left/right padding, length + 1 along x and (for the prediction front) width along y."""
    _, kwargs = ALL_METHODS[method]
    x = jnp.asarray(np.random.default_rng(19).normal(size=(1, 100)), jnp.float32)
    np.testing.assert_array_equal(linear_prediction_pad(x, ((0, 0), (0, 0)), **kwargs), x)
    if kwargs["width"] > 1:
        with pytest.raises(ValueError, match=r"left/right needs at least 7 pixels along y, got 1"):
            linear_prediction_pad(x, ((0, 0), (2, 3)), **kwargs)
        return

    def loss(x):
        padded = linear_prediction_pad(x, ((0, 0), (2, 3)), **kwargs)
        return jnp.sum(padded**2), padded

    (_, padded), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(x)
    assert padded.shape == (1, 105) and np.all(np.isfinite(padded))
    np.testing.assert_array_equal(padded[:, 2:-3], x)
    assert np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match=r"top/bottom needs at least \d pixels along y, got 1"):
        linear_prediction_pad(x, ((1, 0), (0, 0)), **kwargs)
    with pytest.raises(ValueError, match=r"left/right needs at least \d pixels along x, got 1"):
        linear_prediction_pad(x.T, ((0, 0), (1, 0)), **kwargs)


@pytest.mark.parametrize("method", ["lp1x1cs", "lp2x3", "lp3x3"])
def test_nan_poisons_the_whole_border_of_its_channel_only(method):
    """As documented: one NaN makes the fitted predictor NaN, so every padded pixel of that
    channel is NaN; the interior is returned as given and other channels are unaffected."""
    x = np.random.default_rng(20).normal(size=(2, 8, 9)).astype(np.float32)
    x[0, 3, 4] = np.nan
    out = np.asarray(layer_for(method, ((1, 2), (2, 1)))(jnp.asarray(x)))
    border = np.ones(out.shape[1:], bool)
    border[1:-2, 2:-1] = False
    assert np.isnan(out[0][border]).all()
    np.testing.assert_array_equal(out[0, 1:-2, 2:-1], x[0])
    assert np.isfinite(out[1]).all()
