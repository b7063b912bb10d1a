"""Differentiable padding of 2-D feature maps: linear prediction, Lagrange extrapolation, zero, replication.

This is the padding library of Niemitalo et al. (2025), "Per-channel autoregressive linear
prediction padding in tiled CNN processing of 2D spatial data" (arXiv:2502.12300).

Linear prediction padding ("lp") fits, per channel, a small 2-D autoregressive predictor to the
data by least squares and extrapolates outward one row (column) at a time. The paper names a
configuration ``lpLxW``: a neighbourhood of ``length`` L rows (in the padding direction) by
``width`` W columns. Every function here is pure JAX and works under ``jit``, ``vmap`` and
``grad`` in float32 and float64.

Array shapes: single-channel functions take ``(y, x)``; ``*_channels`` functions and
`Padding2dLayer` take ``(channel, y, x)``. ``num_padding = ((top, bottom), (left, right))``.

Reading guide: the steps of the paper's linear prediction padding (its methods description),
in the order `linear_prediction_pad` runs them, each with its formula and where it lives, here
and in `padding_reference.py` (beside this file in the repository), which writes the same steps
plainly (slow, float64, JAX's own derivatives) and is what the tests check this module against.
One channel d of shape (Ny, Nx); neighbourhood of L = ``length`` rows (in the padding
direction) by K = ``width`` columns.

1. Remove the channel mean, ``d <- d - mean(d)``; it is added back at the end
   (`linear_prediction_pad`; reference `lp_pad`).
2. Apodization: the statistics are estimated from ``a = d * w_y[:, None] * w_x[None, :]``, w a
   periodic Tukey window of N + 1 points without its first (`_tukey`); the recursion itself
   runs on d, not a.
3. Statistics and normal equations, by one of two least-squares formulations:
   - autocorrelation method (``correlate_method`` "direct" or "fft"): the autocorrelation of the
     zero-extended data, ``R(dy, dx) = sum_{y,x} a[y, x] a[y + dy, x + dx] / S`` with S = Ny Nx
     ("direct") or the padded FFT size Fy Fx ("fft"), at the lags the neighbourhood needs
     (`_normal_equations` lists them and where each matrix entry reads; `_lag_sums_direct` /
     `_lag_sums_fft` compute the sums, `_autocorrelation` scales them; reference
     `autocorrelation_coefs`). Per predicted position q of the front, with predictor offsets
     p_i: ``(M + cholesky_stab I) c = v``, ``M[i, j] = R(p_i - p_j)``, ``v[j] = R((L, q) - p_j)``,
     solved by Cholesky (`_autocorrelation_solve`, `_psd_solve`, `_cholesky`, `_cho_solve`);
   - covariance method ("cov*", width 1, length 1 or 2): sums of lagged products over the
     positions where the whole neighbourhood fits, ``r_ij = sum_y a[y - i] a[y - j]``
     (`COVARIANCE_STAT_NAMES`; `_covariance_sums` reads them off the Gram matrices of the data;
     reference `covariance_stats`), solved in closed form: ``a1 = r01 / r11`` (L = 1), or
     ``a1 = (r01 r22 - r02 r12) / D``, ``a2 = (r02 r11 - r01 r12) / D``, ``D = r11 r22 - r12^2``
     (L = 2), no factorization (`_covariance_solve_all`, `_covariance_solve`; reference
     `covariance_coefs`). "cov_sym*" adds the sums of the two opposite directions first.
4. Stabilisation ("cov_stab", "cov_sym_stab"): poles of the 1-D recursion
   ``x[n] = a1 x[n-1] + a2 x[n-2]`` outside the unit circle are reflected to their reciprocals,
   inside it: ``a1 <- 1 / a1`` where ``|a1| > 1`` (L = 1); complex poles with ``a2 < -1`` give
   ``(a1, a2) <- (-a1 / a2, 1 / a2)``; real poles ``p = a1 / 2 +- sqrt(a1^2 + 4 a2) / 2`` with
   ``|p| > 1`` become ``1 / p`` (`_stabilise`; reference `covariance_coefs`).
5. The padding recursion: new rows predicted one at a time from the last L rows,
   ``new[n] = sum_{r,k} c_q[r, k] carry[r, s + k]`` with the window start
   ``s = clip(n - K // 2, 0, N - K)`` and q = n - s (off-centre sets near the ends keep the front
   from narrowing); horizontal padding first, then vertical padding of the widened data
   (`_predict_row`, `_extend_down`, `_extend_up`, `_direction_sets`; reference `extend_down`).

Lagrange extrapolation (``extr``, the paper's polynomial baseline): `make_extr_pad_weights`,
`extr_pad`. docs/padding.md lists where this implementation departs from the paper's code
and why, and how it is made fast; docs/speed.md has the measurements behind the choices
noted in the comments here.

Non-finite input: lp padding propagates NaN (an inf becomes NaN once the mean is subtracted,
with the same effect). One NaN anywhere in a channel makes its
mean and every statistic NaN, hence its fitted predictor, hence every padded pixel of that
channel (the whole border; the interior is returned as given). Other channels are unaffected.
"""

from __future__ import annotations

import functools
import inspect
from fractions import Fraction
from typing import Any, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

__all__ = [
    "linear_prediction_pad",
    "linear_prediction_pad_channels",
    "extr_pad",
    "extr_pad_channels",
    "make_extr_pad_weights",
    "Padding2dLayer",
    "make_padding_layer",
    "PAPER_METHODS",
    "PADDING_MODES",
    "CORRELATE_METHODS",
]

PADDING_MODES = ("lp", "zero", "repl", "extr")
AUTOCORRELATION_METHODS = ("direct", "fft")
COVARIANCE_METHODS = ("cov", "cov_stab", "cov_sym", "cov_sym_stab")
CORRELATE_METHODS = AUTOCORRELATION_METHODS + COVARIANCE_METHODS
APODIZATIONS = ("tukey", None)

NumPadding = tuple[tuple[int, int], tuple[int, int]]

_FFT_TUKEY = dict(apodization="tukey", correlate_method="fft")
_COV_STAB = dict(width=1, apodization=None, correlate_method="cov_stab")
# The paper's method names -> (mode, padding_method_kwargs). lpLxW: length L, width W.
PAPER_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "lp1x1cs": ("lp", dict(length=1, **_COV_STAB)),
    "lp2x1cs": ("lp", dict(length=2, **_COV_STAB)),
    "lp2x1": ("lp", dict(length=2, width=1, apodization="tukey", correlate_method="direct")),
    "lp2x3": ("lp", dict(length=2, width=3, apodization="tukey", correlate_method="direct")),
    "lp2x5": ("lp", dict(length=2, width=5, **_FFT_TUKEY)),
    "lp3x3": ("lp", dict(length=3, width=3, **_FFT_TUKEY)),
    "lp4x5": ("lp", dict(length=4, width=5, **_FFT_TUKEY)),
    "lp6x7": ("lp", dict(length=6, width=7, **_FFT_TUKEY)),
    "extr1": ("extr", dict(num_predictors=1)),
    "extr2": ("extr", dict(num_predictors=2)),
    "extr3": ("extr", dict(num_predictors=3)),
    "zero": ("zero", {}),
    "repl": ("repl", {}),
}


# ----------------------------------------------------------------------------------------------
# Argument checks: every failure is a ValueError that names the argument.


def _check_num_padding(num_padding: Any) -> NumPadding:
    try:
        (top, bottom), (left, right) = num_padding
        values = tuple(int(v) for v in (top, bottom, left, right))
        exact = all(int(v) == v for v in (top, bottom, left, right))
    except (TypeError, ValueError):
        raise ValueError(
            f"num_padding must be ((top, bottom), (left, right)) of non-negative ints, got {num_padding!r}"
        ) from None
    if not exact or min(values) < 0:
        raise ValueError(f"num_padding must hold non-negative ints, got {num_padding!r}")
    top, bottom, left, right = values
    return ((top, bottom), (left, right))


def _check_rank(data: jax.Array, rank: int, name: str = "data") -> None:
    if jnp.ndim(data) != rank:
        layout = "(y, x)" if rank == 2 else "(channel, y, x)"
        raise ValueError(f"{name} must have rank {rank} {layout}, got shape {jnp.shape(data)}")


def _check_lp_options(length: Any, width: Any, apodization: Any, correlate_method: Any) -> None:
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    if not isinstance(width, (int, np.integer)) or isinstance(width, bool) or width < 1 or width % 2 == 0:
        raise ValueError(f"width must be a positive odd int, got {width!r}")
    if apodization not in APODIZATIONS:
        raise ValueError(f"apodization must be 'tukey' or None, got {apodization!r}")
    if correlate_method not in CORRELATE_METHODS:
        raise ValueError(f"correlate_method must be one of {CORRELATE_METHODS}, got {correlate_method!r}")
    if correlate_method in COVARIANCE_METHODS and (width != 1 or length > 2):
        raise ValueError(
            f"correlate_method={correlate_method!r} needs width=1 and length 1 or 2, got length={length}, width={width}"
        )


def _check_num_predictors(num_predictors: Any) -> None:
    if int(num_predictors) != num_predictors or num_predictors < 1:
        raise ValueError(f"num_predictors must be an int >= 1, got {num_predictors!r}")


def _check_lp_size(shape: tuple[int, int], num_padding: NumPadding, length: int, width: int) -> None:
    """Pixels are required only along the axes that are padded: padding along an axis needs
    ``length + 1`` pixels along it (a predictor neighbourhood plus the predicted pixel, which the
    covariance sums need to be non-empty) and ``width`` pixels across it (the prediction front;
    for the vertical padding the front includes the horizontal padding)."""
    ny, nx = shape
    (top, bottom), (left, right) = num_padding
    checks = []  # (padded sides, axis, pixels there, pixels needed, what needs them)
    if left or right:
        checks += [
            ("left/right", "x", nx, length + 1, f"length={length}"),
            ("left/right", "y", ny, width, f"width={width} (the prediction front)"),
        ]
    if top or bottom:
        front = f"width={width} (the prediction front, including the left/right padding)"
        checks += [
            ("top/bottom", "y", ny, length + 1, f"length={length}"),
            ("top/bottom", "x", nx + left + right, width, front),
        ]
    for padded, axis, have, need, what in checks:
        if have < need:
            raise ValueError(
                f"data of shape {shape} (y, x) is too small for {what}: padding {padded} needs at least "
                f"{need} pixels along {axis}, got {have}"
            )


# ----------------------------------------------------------------------------------------------
# Shared pieces of the linear prediction.


# Every matrix product here asks for HIGHEST precision: on a GPU the default float32 product may
# round its inputs to TF32 (10-bit mantissa), far too coarse for the statistics, the one-hot
# selections and the extrapolation weights, whose results must equal the CPU's to float rounding.
_HIGHEST = jax.lax.Precision.HIGHEST


def _tukey(n: int, dtype: Any) -> np.ndarray:
    """The apodization window: a periodic Tukey window of n + 1 points, first dropped."""
    return scipy.signal.windows.tukey(n + 1, sym=False)[1:].astype(dtype)


@jax.custom_vjp
def _safe_div(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a / b``, or 0 where that is not finite (a constant channel gives 0 / 0)."""
    q = a / b
    return jnp.where(jnp.isfinite(q), q, 0)


def _safe_div_fwd(a, b):
    return _safe_div(a, b), (a, b)


def _safe_div_bwd(residuals, g):
    a, b = residuals
    ga = g / b
    gb = -g * a / (b * b)
    bad = ~(jnp.isfinite(ga) & jnp.isfinite(gb))
    return jnp.where(bad, 0, ga), jnp.where(bad, 0, gb)


_safe_div.defvjp(_safe_div_fwd, _safe_div_bwd)


# Below this size the Cholesky factorization and the substitutions are unrolled into scalar
# arithmetic, which vmap turns into vector operations across the whole batch of systems (no
# per-system loop, no dynamic shapes, which suits a GPU too): on XLA:CPU, jnp.linalg.cholesky
# and triangular_solve run a batch of small systems as a loop of LAPACK calls, several
# microseconds each. Above it, the unrolled graph would grow as n^3 and compile for minutes; a
# column-at-a-time version in jnp operations (tried for lp6x7's 42 x 42 systems) ran slower
# than the LAPACK loop on XLA:CPU, as each step rewrites the whole batch of factors.
_UNROLLED_SOLVE_MAX_SIZE = 12


def _cholesky(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor (n, n) of a symmetric positive definite a (n, n), zeros above the
    diagonal. A failed factorization (not positive definite) gives non-finite entries."""
    n = a.shape[0]
    if n > _UNROLLED_SOLVE_MAX_SIZE:
        return jnp.linalg.cholesky(a)
    lower: list[list[jax.Array]] = [[] for _ in range(n)]
    for j in range(n):
        pivot = jnp.sqrt(a[j, j] - sum(lower[j][k] * lower[j][k] for k in range(j)))
        lower[j].append(pivot)
        for i in range(j + 1, n):
            lower[i].append((a[i, j] - sum(lower[i][k] * lower[j][k] for k in range(j))) / pivot)
    zero = jnp.zeros((), a.dtype)
    return jnp.stack([jnp.stack(row + [zero] * (n - len(row))) for row in lower])


def _cho_solve(factor: jax.Array, v: jax.Array) -> jax.Array:
    """Solve ``(F F^T) x = v`` for the lower factor F (n, n) of `_cholesky`; v: (n, k) -> (n, k)."""
    n = factor.shape[0]
    if n > _UNROLLED_SOLVE_MAX_SIZE:
        y = jax.lax.linalg.triangular_solve(factor, v, left_side=True, lower=True)
        return jax.lax.linalg.triangular_solve(factor, y, left_side=True, lower=True, transpose_a=True)
    y: list[jax.Array] = []
    for i in range(n):  # forward substitution with F, one row of right-hand sides at a time
        y.append((v[i] - sum(factor[i, k] * y[k] for k in range(i))) / factor[i, i])
    x: list[jax.Array] = [None] * n
    for i in reversed(range(n)):  # back substitution with F^T
        x[i] = (y[i] - sum(factor[k, i] * x[k] for k in range(i + 1, n))) / factor[i, i]
    return jnp.stack(x)


@jax.custom_vjp
def _psd_solve(a: jax.Array, v: jax.Array) -> jax.Array:
    """Solve ``a @ c = v`` for a symmetric positive (semi)definite ``a`` by Cholesky.

    ``a``: (n, n); ``v``: (n, k) right-hand sides sharing one factorization. Non-finite results
    (a factorization that failed) become 0, as do the gradients that would flow through them.
    The backward pass reuses the forward factor: for symmetric ``a``, ``dv = a^-1 dc`` and
    ``da = -dv c^T``.
    """
    return _psd_solve_fwd(a, v)[0]


def _finite_or_zero(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(x), x, 0)


def _psd_solve_fwd(a, v):
    factor = _cholesky(a)
    c = _finite_or_zero(_cho_solve(factor, v))
    return c, (factor, c)


def _psd_solve_bwd(residuals, gc):
    factor, c = residuals
    gv = _finite_or_zero(_cho_solve(factor, gc))
    ga = -jnp.matmul(gv, c.T, precision=_HIGHEST)
    return ga, gv


_psd_solve.defvjp(_psd_solve_fwd, _psd_solve_bwd)


# ----------------------------------------------------------------------------------------------
# Autocorrelation method.


def _smooth_size(n: int) -> int:
    """The smallest integer >= n whose prime factors are all in {2, 3, 5, 7}."""
    while True:
        k = n
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return n
        n += 1


def _max_lag(lags: tuple[tuple[int, int], ...]) -> int:
    """The largest |dy| or |dx| of the lags: how far the lag sums reach beyond a pixel."""
    return max(max(abs(dy), abs(dx)) for dy, dx in lags)


def _half_plane(dy: int, dx: int) -> tuple[int, int]:
    """The representative of lag (dy, dx) in the half-plane dy > 0, or dy = 0 and dx >= 0."""
    return (dy, dx) if dy > 0 or (dy == 0 and dx >= 0) else (-dy, -dx)


@functools.lru_cache(maxsize=None)
def _normal_equations(length: int, width: int) -> tuple[tuple[tuple[int, int], ...], np.ndarray, np.ndarray]:
    """The lags the normal equations use, and where each matrix and right-hand-side entry reads.

    Down: predictors p_i = (i // width, i % width) (row-major), predicted pixel (length, q),
    ``M[i, j] = R(p_i - p_j)``, ``v[j, q] = R((length, q) - p_j)``. Right: the same on the
    transposed lags. Returns (half-plane lags, matrix index (2, n, n), rhs index (2, n, width)),
    the indices pointing into the list of lags; direction 0 is down, 1 is right.
    """
    n = length * width
    pr, pc = np.divmod(np.arange(n), width)
    mat = np.stack([pr[:, None] - pr[None, :], pc[:, None] - pc[None, :]], axis=-1)  # (n, n, 2)
    rhs = np.stack(np.broadcast_arrays(length - pr[:, None], np.arange(width)[None, :] - pc[:, None]), axis=-1)
    lags: dict[tuple[int, int], int] = {}

    def lookup(offsets: np.ndarray, transpose: bool) -> np.ndarray:
        flat = offsets.reshape(-1, 2)[:, ::-1] if transpose else offsets.reshape(-1, 2)
        keys = [_half_plane(int(dy), int(dx)) for dy, dx in flat]
        return np.array([lags.setdefault(k, len(lags)) for k in keys]).reshape(offsets.shape[:-1])

    mat_index = np.stack([lookup(mat, False), lookup(mat, True)])
    rhs_index = np.stack([lookup(rhs, False), lookup(rhs, True)])
    # int32 whatever the x64 setting: index arithmetic must not mix integer widths
    return tuple(lags), mat_index.astype(np.int32), rhs_index.astype(np.int32)


def _shifted(a: jax.Array, dy: int, dx: int) -> jax.Array:
    """``b[y, x] = a[y + dy, x + dx]``, zero outside the data. a: (y, x) -> (y, x).

    A pad with a negative edge, not a slice: XLA:CPU fuses it into the consumer, while several
    slices of one array each become a slow copy.
    """
    zero = jnp.zeros((), a.dtype)
    return jax.lax.pad(a, zero, ((-dy, dy, 0), (-dx, dx, 0)))


# Why a custom VJP: differentiating the lagged products as written gives, per lag, a transposed
# pad, a broadcast and an add, which XLA:CPU runs as several passes over the maps; the backward
# then cost several times the forward. The gradient is known in closed form,
#     d/da[p] sum_q w[q] a[q] a[q + t] = w[p] a[p + t] + w[p - t] a[p - t],
# so the whole backward is one elementwise expression over shifted copies of ``a`` and of the
# broadcast profile cotangents, which XLA fuses into a single pass whatever the number of lags.
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _lag_profiles(a: jax.Array, lags: tuple[tuple[int, int], ...], axis: int) -> jax.Array:
    """Lagged products summed across the other axis: ``P[l, i] = sum_j a[i, j] a[i + dy, j + dx]``
    for axis 0 (``sum_j a[j, i] a[j + dy, i + dx]`` for axis 1), terms outside the data 0, for
    ``(dy, dx) = lags[l]``. a: (y, x) -> (len(lags), a.shape[axis]).

    Both kinds of statistics are sums of these profiles: the autocorrelation sums of the whole
    profile, the covariance sums over the window of positions where a neighbourhood fits.
    """
    return jnp.stack([jnp.sum(a * _shifted(a, dy, dx), axis=1 - axis) for dy, dx in lags])


def _lag_profiles_fwd(a, lags, axis):
    return _lag_profiles(a, lags, axis), a


def _lag_profiles_bwd(lags, axis, a, g):
    grad = jnp.zeros_like(a)
    for (dy, dx), gl in zip(lags, g):
        w = gl[:, None] if axis == 0 else gl[None, :]
        grad = grad + w * _shifted(a, dy, dx) + _shifted(w * a, -dy, -dx)
    return (grad,)


_lag_profiles.defvjp(_lag_profiles_fwd, _lag_profiles_bwd)


def _lag_sums_direct(a: jax.Array, lags: tuple[tuple[int, int], ...]) -> jax.Array:
    """``S[l] = sum_{y,x} a[y, x] a[y + dy, x + dx]`` (terms outside the data are 0) for each
    half-plane lag ``(dy, dx) = lags[l]``, one pass per lag. a: (y, x) -> (len(lags),)."""
    return jnp.sum(_lag_profiles(a, lags, 0), axis=1)


@functools.lru_cache(maxsize=None)
def _fft_lag_basis(fy: int, fx: int, lags: tuple[tuple[int, int], ...]) -> np.ndarray:
    """``cos(2 pi (ky dy / fy + kx dx / fx))`` for the half spectrum (ky, kx <= fx // 2) of the
    real FFT, flattened, by lag: (fy * (fx // 2 + 1), len(lags)), float64."""
    ky = np.arange(fy)[:, None, None]
    kx = np.arange(fx // 2 + 1)[None, :, None]
    dy, dx = (np.array([lag[i] for lag in lags])[None, None, :] for i in (0, 1))
    return np.cos(2 * np.pi * (ky * dy / fy + kx * dx / fx)).reshape(fy * (fx // 2 + 1), len(lags))


def _half_spectrum_weights(fy: int, fx: int) -> np.ndarray:
    """How often each bin of the half spectrum stands in the full one: 1 for kx = 0 and (fx even)
    kx = fx / 2, 2 for the rest, whose mirror images the real FFT leaves out."""
    w = np.full(fx // 2 + 1, 2.0)
    w[0] = 1
    if fx % 2 == 0:
        w[-1] = 1
    return np.broadcast_to(w, (fy, fx // 2 + 1)).reshape(-1)


def _fft_size(shape: tuple[int, int], m: int) -> tuple[int, int]:
    """The FFT size of the ``fft`` autocorrelation: zero padding by at least m, to 7-smooth sizes."""
    return _smooth_size(shape[0] + m), _smooth_size(shape[1] + m)


# Why not irfft2 then gather: by the Wiener-Khinchin theorem the circular autocorrelation at a
# lag l is (1 / F) sum_k |A_k|^2 cos(2 pi k . l / F) (|A|^2 is real and even), so the few lags
# the normal equations read are one small matrix product with a constant cosine basis, where
# an inverse FFT would compute all F lags. The backward pass is again closed-form: the gradient
# of sum_l g_l S_l is the correlation of the data with the symmetric kernel
# h = sum_l g_l (delta_l + delta_-l), whose transform is real, 2 sum_l g_l cos(2 pi k . l / F);
# so it is one matrix product and one inverse FFT of the forward spectrum times it. Zero
# padding to F >= N + m makes circular and linear correlation agree for these lags, in both
# directions. With few lags the same correlation is cheaper in space (`_symmetric_correlation`):
# on XLA:CPU the inverse FFT and the complex product before it cost more than one fused pass
# over 2 * (number of lags) shifted views. Faster in space up to lp3x3's 23 lags, equal at
# lp2x5's 33, slower beyond (measured: docs/speed.md, "Padding: design choices measured").
_SPATIAL_BACKWARD_MAX_LAGS = 24


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _lag_sums_fft(a: jax.Array, lags: tuple[tuple[int, int], ...]) -> jax.Array:
    """As `_lag_sums_direct`, computed from the power spectrum of the data zero-padded to the
    FFT size of `_fft_size` (exact circular autocorrelation, also for odd widths)."""
    return _lag_sums_fft_fwd(a, lags)[0]


def _lag_sums_fft_fwd(a, lags):
    m = _max_lag(lags)
    fy, fx = _fft_size(a.shape, m)
    spectrum = jnp.fft.rfft2(a, s=(fy, fx))
    power = (jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2).reshape(-1)
    basis = _fft_lag_basis(fy, fx, lags) * (_half_spectrum_weights(fy, fx)[:, None] / (fy * fx))
    spatial = len(lags) <= _SPATIAL_BACKWARD_MAX_LAGS
    return jnp.matmul(power, jnp.asarray(basis, a.dtype), precision=_HIGHEST), (a, None if spatial else spectrum)


def _lag_sums_fft_bwd(lags, residuals, g):
    a, spectrum = residuals
    if spectrum is None:
        return (_symmetric_correlation(a, lags, g),)
    m = _max_lag(lags)
    fy, fx = _fft_size(a.shape, m)
    kernel = jnp.matmul(2 * jnp.asarray(_fft_lag_basis(fy, fx, lags), a.dtype), g, precision=_HIGHEST)
    grad = jnp.fft.irfft2(spectrum * kernel.reshape(fy, fx // 2 + 1), s=(fy, fx))
    return (grad[: a.shape[0], : a.shape[1]].astype(a.dtype),)


def _symmetric_correlation(a: jax.Array, lags: tuple[tuple[int, int], ...], g: jax.Array) -> jax.Array:
    """``out[p] = sum_l g[l] (a[p + l] + a[p - l])``, zero outside the data: the gradient of
    ``sum_l g[l] S[l]`` for the lag sums S. a: (y, x), g: (len(lags),) -> (y, x).

    The views are slices of one zero-padded copy, not one pad per shift: XLA:CPU fuses the
    slices into a single pass.
    """
    m = _max_lag(lags)
    ny, nx = a.shape
    padded = jnp.pad(a, m)

    def view(dy: int, dx: int) -> jax.Array:
        return padded[m + dy : m + dy + ny, m + dx : m + dx + nx]

    return sum(g[i] * (view(dy, dx) + view(-dy, -dx)) for i, (dy, dx) in enumerate(lags))


_lag_sums_fft.defvjp(_lag_sums_fft_fwd, _lag_sums_fft_bwd)


def _prefer_fft(num_lags: int) -> bool:
    """Whether the FFT is cheaper than one pass per lag. Both give the same sums up to rounding;
    on XLA:CPU with batches of 48 x 48 maps, the FFT wins from about four lags on."""
    return num_lags > 3


def _autocorrelation(a: jax.Array, lags: tuple[tuple[int, int], ...], correlate_method: str) -> jax.Array:
    """``R(lag)`` of the zero-extended data a: (y, x) for half-plane ``lags`` -> (len(lags),).

    The two methods differ only in scale: ``direct`` divides the sums by y * x, ``fft`` by the
    padded FFT size (as the paper's code does). How the sums are computed is a matter of speed alone.
    """
    ny, nx = a.shape
    m = _max_lag(lags)
    lag_sums = _lag_sums_fft if _prefer_fft(len(lags)) else _lag_sums_direct
    if correlate_method == "direct":
        scale = 1 / (ny * nx)
    else:
        scale = 1 / (_smooth_size(ny + m) * _smooth_size(nx + m))
    return lag_sums(a, lags) * jnp.asarray(scale, a.dtype)


def _select(values: jax.Array, index: np.ndarray) -> jax.Array:
    """``values[index]`` for a static index. For small systems this is a product with a one-hot
    matrix, whose gradient is a matrix product too, where a gather's is a scatter-add, slow on
    XLA:CPU; for large ones the one-hot matrix would cost more than the scatter."""
    if index.size > 512:
        return values[index]
    one_hot = np.arange(values.shape[0])[:, None] == index.reshape(1, -1)
    return jnp.matmul(values, jnp.asarray(one_hot, values.dtype), precision=_HIGHEST).reshape(index.shape)


def _autocorrelation_coefs(
    a: jax.Array, length: int, width: int, correlate_method: str, cholesky_stab: float
) -> jax.Array:
    """Coefficients ``coefs[direction, predicted_position, row, col]``, shape (2, K, L, K).

    Direction 0 predicts downwards, 1 rightwards (the down case on transposed data).
    All K predicted positions of a direction share the system matrix, so one Cholesky
    factorization serves them all.
    """
    lags = _normal_equations(length, width)[0]
    return _autocorrelation_solve(_autocorrelation(a, lags, correlate_method), length, width, cholesky_stab)


def _autocorrelation_solve(r: jax.Array, length: int, width: int, cholesky_stab: float) -> jax.Array:
    """The normal equations of both directions from the autocorrelation ``r`` at the lags of
    `_normal_equations`, solved -> coefficients (2, K, L, K) as in `_autocorrelation_coefs`."""
    _, mat_index, rhs_index = _normal_equations(length, width)
    n = length * width
    matrices = _select(r, mat_index) + jnp.asarray(cholesky_stab, r.dtype) * jnp.eye(n, dtype=r.dtype)
    coefs = jax.vmap(_psd_solve)(matrices, _select(r, rhs_index))  # (2, n, K): column q solves position q
    return jnp.swapaxes(coefs, 1, 2).reshape(2, width, length, width)


# ----------------------------------------------------------------------------------------------
# Covariance method.


# The covariance sums by name, for one direction: predicted pixel x0 and predictors x1 (nearest)
# and x2 along the axis, summed over the positions where all of them lie inside the data:
#     r11 = sum x1 x1, r22 = sum x2 x2, r01 = sum x0 x1, r12 = sum x1 x2, r02 = sum x0 x2.
# The least-squares normal equations of the covariance method are
#     [r11 r12] [a1]   [r01]
#     [r12 r22] [a2] = [r02]     (length 1: r11 a1 = r01).
COVARIANCE_STAT_NAMES = {1: ("r11", "r01"), 2: ("r11", "r22", "r01", "r12", "r02")}

# Each statistic as ``(lag, start)``: ``sum_{i = start}^{start + n - length - 1} a[i] a[i + lag]``
# along the axis (n pixels, n - length fitting positions), in the order of the names above.
# Forward (predict i from i - 1, i - 2, i = length .. n - 1): x0 starts at length, x1 at
# length - 1, x2 at 0. Backward (predict i from i + 1, i + 2, i = 0 .. n - 1 - length): x0
# starts at 0, x1 at 1, x2 at 2. A product is written with its lower index first.
_COVARIANCE_WINDOWS = {
    1: (((0, 0), (1, 0)), ((0, 1), (1, 0))),
    2: (((0, 1), (0, 0), (1, 1), (1, 0), (2, 0)), ((0, 1), (0, 2), (1, 0), (1, 1), (2, 0))),
}


def _covariance_stats(a: jax.Array, length: int, axis: int) -> jax.Array:
    """The covariance sums (`COVARIANCE_STAT_NAMES`) of a: (y, x) along ``axis`` -> (2, s), for
    the directions (forward, backward) along it (axis 1: right, left; axis 0: bottom, top)."""
    return _covariance_sums(a, length, (axis,))[0]


# Why Gram matrices: every covariance sum along an axis is a sum of entries of the Gram matrix
# of the data along that axis, sum_{i in window} G[i, i + lag], with G = a a^T (y by y) for the
# vertical sums and G = a^T a (x by x) for the horizontal ones. So all the sums of both axes are
# two small matrix products per channel plus a product with a constant 0/1 window matrix. On
# XLA:CPU this beat summing lagged products of shifted copies (each shift a pad, which XLA
# materialised as a full copy of the maps before every reduction) by several times (measured:
# docs/speed.md, "Padding: design choices measured"). The backward pass is
# closed-form, but not as matrix products (B a with a banded B measured slower than the
# elementwise form): only the Gram entries on the bands |i - j| <= length carry weight, so with
# w[lag, i] the total weight of the product a[i] a[i + lag] (a constant 0/1 matrix times the
# cotangents, `_covariance_profile_windows`),
#     d/da[i] sum_{lag, j} w[lag, j] a[j] a[j + lag] = sum_lag w[lag, i] a[i + lag] + w[lag, i - lag] a[i - lag],
# one elementwise expression over shifted copies of a, for both axes, which XLA fuses.
# The Gram matrix costs n^2 times the other side per channel where the shifted products cost a
# few passes, and its window matrix holds n^2 rows: above this size along an axis, the sums of
# that axis come from the lagged products summed across it instead (the same backward pass).
# On XLA:CPU the Gram form of lp2x1cs still measured faster at 512 x 512 maps; the limit caps
# the cubic cost and the constant's size (256: 2.6 MB in float32) rather than marking a crossover.
_GRAM_MAX_SIZE = 256


def _gram(a: jax.Array, axis: int) -> jax.Array:
    """Products summed across the other axis: a a^T (y, y) for axis 0, a^T a (x, x) for axis 1."""
    return jnp.matmul(a, a.T, precision=_HIGHEST) if axis == 0 else jnp.matmul(a.T, a, precision=_HIGHEST)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _covariance_sums(a: jax.Array, length: int, axes: tuple[int, ...]) -> jax.Array:
    """The covariance sums of a: (y, x) along each of ``axes`` -> (len(axes), 2, s), as in
    `_covariance_stats`.

    Without a gradient the sums come from a few whole-map lag sums (`_covariance_sums_by_lags`);
    the gradient path (forward rule) reads them off the Gram matrices, where each column of the
    window matrix picks the entries of one statistic; all statistics of an axis pick the same
    number of entries, so equal sums (a constant channel) round alike there.
    """
    return _covariance_sums_by_lags(a, length, axes)


def _covariance_sums_fwd(a, length, axes):
    sums = []
    for axis in axes:
        n = a.shape[axis]
        if n <= _GRAM_MAX_SIZE:
            windows = jnp.asarray(_covariance_window_matrix(n, length), a.dtype)
            sums.append(jnp.matmul(_gram(a, axis).reshape(-1), windows, precision=_HIGHEST))
        else:  # lagged products summed across the axis (profiles), then over the windows
            shifts = [(lag, 0) if axis == 0 else (0, lag) for lag in range(length + 1)]
            profiles = jnp.stack([jnp.sum(a * _shifted(a, dy, dx), axis=1 - axis) for dy, dx in shifts])
            windows = jnp.asarray(_covariance_profile_windows(n, length), a.dtype)
            sums.append(jnp.matmul(profiles.reshape(-1), windows, precision=_HIGHEST))
    return jnp.stack(sums).reshape(len(axes), 2, -1), a


def _covariance_sums_bwd(length, axes, a, g):
    grad = jnp.zeros_like(a)
    for axis, g_axis in zip(axes, g):
        n = a.shape[axis]
        # The weight of each lagged product a[i] a[i + lag] in the cotangent-weighted sums: (length + 1, n).
        profile_windows = jnp.asarray(_covariance_profile_windows(n, length), a.dtype)
        weights = jnp.matmul(profile_windows, g_axis.reshape(-1), precision=_HIGHEST).reshape(length + 1, n)
        for lag in range(length + 1):
            w = weights[lag][:, None] if axis == 0 else weights[lag][None, :]
            dy, dx = (lag, 0) if axis == 0 else (0, lag)
            grad = grad + w * _shifted(a, dy, dx) + _shifted(w * a, -dy, -dx)
    return (grad,)


_covariance_sums.defvjp(_covariance_sums_fwd, _covariance_sums_bwd)


def _along(a: jax.Array, axis: int, start: int, stop: int) -> jax.Array:
    """Rows (axis 0) or columns (axis 1) ``start:stop`` of a: (y, x)."""
    return a[start:stop] if axis == 0 else a[:, start:stop]


@functools.lru_cache(maxsize=None)
def _barrier_batches() -> bool:
    """Whether ``jax.vmap`` can batch an optimization barrier (JAX releases before 0.4.36 or so
    have no batching rule for it; checked by tracing, nothing is compiled)."""
    try:
        jax.eval_shape(jax.vmap(jax.lax.optimization_barrier), jax.ShapeDtypeStruct((1,), jnp.float32))
    except NotImplementedError:
        return False
    return True


def _product_sum(x: jax.Array, y: jax.Array) -> jax.Array:
    """``sum(x * y)``. On XLA:CPU the product is written out first (an optimization barrier):
    fused into the reduction, its sliced operands were each copied out before it, three
    passes where the barrier leaves two. Where JAX cannot batch the barrier, the plain sum."""
    if not _barrier_batches():
        return jnp.sum(x * y)
    return jax.lax.platform_dependent(
        x, y, cpu=lambda x, y: jnp.sum(jax.lax.optimization_barrier(x * y)), default=lambda x, y: jnp.sum(x * y)
    )


# Why a second forward form: the sums over windows that start and end at most ``length`` rows
# from the edges are the lag sums over the whole map minus a few edge rows, and a whole-map lag
# sum is one pass; the Gram matrices cost n times more arithmetic. Only the gradient path needs
# what the Gram form gives besides: sums that round alike for a constant channel.
def _covariance_sums_by_lags(a: jax.Array, length: int, axes: tuple[int, ...]) -> jax.Array:
    """The sums of `_covariance_sums`, as whole-map lag sums minus their edge terms.

    These need not round alike for a constant channel (a tiny constant after the inexact mean),
    where the normal equations are singular and rounding would pick the predictor; such a
    channel gets, as from the Gram form, equal sums per axis: the predictor of its exact sums.
    """
    squares = jnp.sum(a * a)
    per_axis = [jnp.stack(_window_sums_by_lags(a, length, axis, squares)) for axis in axes]
    constant = jnp.all(a == a[0, 0])
    sums = [jnp.where(constant, jnp.full_like(s, s[0]), s) for s in per_axis]
    # Ending like the forward rule (a reshape) puts the batch axis of vmap where it puts it:
    # JAX 0.12 mixed up the two forms' batch axes when a scan body was linearized otherwise.
    return jnp.concatenate(sums).reshape(len(axes), 2, -1)


def _window_sums_by_lags(a: jax.Array, length: int, axis: int, squares: jax.Array) -> list[jax.Array]:
    """The covariance sums along ``axis`` (`_COVARIANCE_WINDOWS` order, both directions) from
    the lag sums over the whole map (``squares`` is lag 0) minus the products outside each
    window: ``sum_{i=start}^{start+count-1} = sum_{i=0}^{n-lag-1}`` less at most ``length`` rows."""
    n = a.shape[axis]
    count = n - length  # fitting positions along the axis
    windows = [window for direction in _COVARIANCE_WINDOWS[length] for window in direction]
    if count <= 0:  # not padded along this axis: no fitting position
        return [jnp.zeros((), a.dtype)] * len(windows)
    whole = [squares] + [
        _product_sum(_along(a, axis, 0, n - lag), _along(a, axis, lag, n)) for lag in range(1, length + 1)
    ]
    sums = []
    for lag, start in windows:
        outside = [*range(start), *range(start + count, n - lag)]
        edges = [jnp.sum(_along(a, axis, i, i + 1) * _along(a, axis, i + lag, i + lag + 1)) for i in outside]
        sums.append(whole[lag] - sum(edges) if edges else whole[lag])
    return sums


@functools.lru_cache(maxsize=None)
def _covariance_profile_windows(n: int, length: int) -> np.ndarray:
    """0/1 matrix ((length + 1) * n, 2 * s): entry ((lag, i), k) is 1 where statistic k
    (`_COVARIANCE_WINDOWS`) includes the product a[i] a[i + lag]."""
    count = max(n - length, 0)
    columns = []
    for windows in _COVARIANCE_WINDOWS[length]:
        for lag, start in windows:
            column = np.zeros((length + 1, n))
            column[lag, start : start + count] = 1
            columns.append(column.reshape(-1))
    return np.stack(columns, axis=1)


@functools.lru_cache(maxsize=None)
def _covariance_window_matrix(n: int, length: int) -> np.ndarray:
    """0/1 matrix (n * n, 2 * s): column k sums the entries ``G[i, i + lag]`` of the flattened
    Gram matrix (n, n) over the window ``start <= i < start + n - length`` of statistic k
    (`_COVARIANCE_WINDOWS`), forward direction first."""
    count = max(n - length, 0)  # no fitting position along an axis that is not padded
    columns = []
    for windows in _COVARIANCE_WINDOWS[length]:
        for lag, start in windows:
            column = np.zeros((n, n))
            i = np.arange(start, start + count)
            column[i, i + lag] = 1
            columns.append(column.reshape(-1))
    return np.stack(columns, axis=1)


def _covariance_solve(stats: jax.Array, length: int) -> tuple[jax.Array, ...]:
    """Least-squares coefficients (a1,) or (a1, a2) from the statistics of `_covariance_stats`."""
    if length == 1:
        r11, r01 = stats
        return (_safe_div(r01, r11),)
    r11, r22, r01, r12, r02 = stats
    det = r11 * r22 - r12 * r12
    return _safe_div(r01 * r22 - r02 * r12, det), _safe_div(r02 * r11 - r01 * r12, det)


def _where_reciprocal(condition: jax.Array, x: jax.Array) -> jax.Array:
    """``1 / x`` where ``condition``, else ``x``; the branch not taken never divides by zero."""
    return jnp.where(condition, 1 / jnp.where(condition, x, 1), x)


def _stabilise(coefs: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    """Reflect the poles of the 1-D recursion into the unit circle.

    Only the branch taken carries a gradient: square roots and reciprocals of the other
    branches see guarded arguments, so no NaN leaks through ``jnp.where``.
    """
    if len(coefs) == 1:
        (a1,) = coefs
        return (_where_reciprocal(jnp.abs(a1) > 1, a1),)
    a1, a2 = coefs
    disc = a1 * a1 + 4 * a2
    complex_poles = disc < 0
    # Complex pair with |p|^2 = -a2 > 1: reflect both.
    flip_complex = complex_poles & (a2 < -1)
    a2_c = jnp.where(flip_complex, a2, -1)
    a1_complex = jnp.where(flip_complex, -a1 / a2_c, a1)
    a2_complex = jnp.where(flip_complex, 1 / a2_c, a2)
    # Real poles: reflect each one that lies outside the unit circle to 1 / p, inside it.
    positive = disc > 0
    root = jnp.where(positive, jnp.sqrt(jnp.where(positive, disc, 1)), 0) / 2
    p0, p1 = a1 / 2 + root, a1 / 2 - root
    out0, out1 = jnp.abs(p0) > 1, jnp.abs(p1) > 1
    q0, q1 = _where_reciprocal(out0, p0), _where_reciprocal(out1, p1)
    reflect_real = ~complex_poles & (out0 | out1)
    a1_real = jnp.where(reflect_real, q0 + q1, a1)
    a2_real = jnp.where(reflect_real, -q0 * q1, a2)
    return (
        jnp.where(complex_poles, a1_complex, a1_real),
        jnp.where(complex_poles, a2_complex, a2_real),
    )


def _covariance_coefs(a: jax.Array, length: int, correlate_method: str) -> jax.Array:
    """Coefficients (4, 1, L, 1) for (bottom, right, top, left), or (2, 1, L, 1) for
    (vertical, horizontal) with the symmetric methods; farthest predictor first."""
    return _covariance_solve_all(_covariance_sums(a, length, (0, 1)), length, correlate_method)


def _covariance_solve_all(sums: jax.Array, length: int, correlate_method: str) -> jax.Array:
    """The coefficients of `_covariance_coefs` from the sums of `_covariance_sums` (2, 2, s)."""
    vertical, horizontal = sums  # (bottom, top), (right, left)
    if correlate_method.startswith("cov_sym"):
        stats = jnp.stack([vertical.sum(0), horizontal.sum(0)])
    else:
        stats = jnp.stack([vertical[0], horizontal[0], vertical[1], horizontal[1]])
    coefs = _covariance_solve(stats.T, length)
    if correlate_method.endswith("_stab"):
        coefs = _stabilise(coefs)
    # [[[a2], [a1]]]: the farthest predictor first
    return jnp.stack(coefs[::-1], axis=-1).reshape(-1, 1, length, 1)


# ----------------------------------------------------------------------------------------------
# The padding recursion.


def _predict_row(carry: jax.Array, coefs: jax.Array) -> jax.Array:
    """One new row below ``carry`` (L, N) with coefficient sets ``coefs`` (K, L, K) -> (N,).

    The centered set slides along the front; near its two ends the off-center sets are applied
    to the outermost K columns so the front keeps its width.
    """
    width = coefs.shape[-1]
    half = width // 2
    n = carry.shape[1]
    inner = _sliding_prediction(carry, coefs[half])[half : n - half]
    if half == 0:
        return inner
    left = jnp.sum(coefs[:half] * carry[None, :, :width], axis=(1, 2))
    right = jnp.sum(coefs[half + 1 :] * carry[None, :, n - width :], axis=(1, 2))
    return jnp.concatenate([left, inner, right])


# Why a custom VJP, and why unrolled: the sliding prediction is sum_{r,k} c[r, k] times the
# carry row r shifted by k - K//2. Written as L K scalar-times-vector terms (no reduction over
# an axis), XLA fuses it into one pass over the carry; a reduction per offset would be K
# kernels, and stacking the shifted copies would write L (2K - 1) times the carry to memory.
# JAX's own derivative would transpose every shift separately. The partials in closed form:
#     d carry[r, m] = sum_k c[r, k] g[m - k + K//2]      (again L K fused terms)
#     d c[r, k]     = sum_n g[n] carry[r, n + k - K//2]  (one small matrix product with the K
#                                                         shifted copies of g)
@jax.custom_vjp
def _sliding_prediction(carry: jax.Array, centered: jax.Array) -> jax.Array:
    """``out[n] = sum_{r,k} centered[r, k] carry[r, n + k - K//2]``, zero outside the carry;
    carry (L, N), centered (L, K) -> (N,)."""
    rows, width = centered.shape
    half = width // 2
    return sum(centered[r, k] * _shifted(carry[r : r + 1], 0, k - half)[0] for r in range(rows) for k in range(width))


def _sliding_prediction_fwd(carry, centered):
    return _sliding_prediction(carry, centered), (carry, centered)


def _sliding_prediction_bwd(residuals, g):
    carry, centered = residuals
    rows, width = centered.shape
    half = width // 2
    g_row = g[None]
    d_carry = jnp.concatenate(
        [sum(centered[r, k] * _shifted(g_row, 0, half - k) for k in range(width)) for r in range(rows)]
    )
    g_shifts = jnp.concatenate([_shifted(g_row, 0, half - k) for k in range(width)])  # (K, N)
    d_centered = jnp.matmul(carry, g_shifts.T, precision=_HIGHEST)
    return d_carry, d_centered


_sliding_prediction.defvjp(_sliding_prediction_fwd, _sliding_prediction_bwd)


def _extend_down(edge: jax.Array, coefs: jax.Array, num: int) -> jax.Array:
    """``num`` rows predicted below ``edge`` (L, N), the last L rows (farthest first) -> (num, N)."""
    if num == 0:
        return jnp.zeros((0, edge.shape[1]), edge.dtype)
    if num == 1:
        return _predict_row(edge, coefs)[None]

    def step(carry, _):
        row = _predict_row(carry, coefs)
        return jnp.concatenate([carry[1:], row[None]]), row

    return jax.lax.scan(step, edge, None, length=num)[1]


def _extend_both(
    low_edge: jax.Array, high_edge: jax.Array, low_coefs: jax.Array, high_coefs: jax.Array, num_low: int, num_high: int
) -> tuple[jax.Array, jax.Array]:
    """Rows predicted before ``low_edge`` (the first L rows, up) and after ``high_edge`` (the
    last L rows, down), each (L, N) -> ((num_low, N), (num_high, N)).

    Why both at once: the up recursion is the down recursion on the rotated edge, so the two
    sides are one recursion over a stacked pair of carries (run for the larger count, the
    surplus rows dropped), which halves the number of kernels on XLA:CPU.
    """
    if num_low == 0 or num_high == 0:
        return _extend_up(low_edge, low_coefs, num_low), _extend_down(high_edge, high_coefs, num_high)
    edges = jnp.stack([_rotate(low_edge), high_edge])
    rows = jax.vmap(_extend_down, in_axes=(0, 0, None))(
        edges, jnp.stack([low_coefs, high_coefs]), max(num_low, num_high)
    )
    return _rotate(rows[0, :num_low]), rows[1, :num_high]


def _rotate(x: jax.Array) -> jax.Array:
    return x[::-1, ::-1]


def _extend_up(edge: jax.Array, coefs: jax.Array, num: int) -> jax.Array:
    """``num`` rows predicted above ``edge`` (L, N), the first L rows: the down recursion on the
    data rotated by 180 degrees -> (num, N)."""
    return _rotate(_extend_down(_rotate(edge), coefs, num))


def _direction_sets(coefs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(down, right, up, left) coefficient sets from any of the coefficient layouts
    (autocorrelation (2, K, L, K); covariance (4, 1, L, 1); symmetric covariance (2, 1, L, 1))."""
    if coefs.shape[0] == 4:  # covariance: bottom, right, top, left
        return coefs[0], coefs[1], coefs[2], coefs[3]
    # Why up and left reuse the down and right sets: up (left) padding is the down (right)
    # recursion on the data rotated by 180 degrees. Rotation maps every lag d to -d, and the
    # autocorrelation of the zero-extended data is even, R(-d) = R(d), so the least-squares
    # fit on the rotated data has exactly the same normal equations and coefficients. The
    # symmetric covariance method sums the statistics of both directions, so its one set per
    # axis is flip-symmetric by construction. (The plain covariance sums run over different
    # windows for opposite directions, so those keep four sets, above.)
    return coefs[0], coefs[1], coefs[0], coefs[1]


# ----------------------------------------------------------------------------------------------
# Public functions.


def linear_prediction_pad(
    data: jax.Array,
    num_padding: NumPadding,
    length: int = 2,
    width: int = 3,
    apodization: str | None = "tukey",
    correlate_method: str = "fft",
    cholesky_stab: float = 1e-7,
) -> jax.Array:
    """Pad one channel by 2-D autoregressive linear prediction.

    Args:
        data: (y, x) floating-point data.
        num_padding: ((top, bottom), (left, right)) non-negative ints.
        length: predictor rows in the padding direction (L >= 1).
        width: predictor columns across it (K, odd).
        apodization: "tukey" or None, the window applied before estimating statistics.
        correlate_method: "direct" or "fft" (autocorrelation method), or "cov", "cov_stab",
            "cov_sym", "cov_sym_stab" (covariance method; width 1, length 1 or 2).
        cholesky_stab: ridge added to the autocorrelation-method system matrix.

    Returns:
        (top + y + bottom, left + x + right), same dtype as ``data``. Interior pixels are ``data``.

    NaN input propagates: one NaN makes the mean and the statistics NaN, so the fitted predictor
    and every padded pixel (the whole border) are NaN; the interior is still returned as given.
    With `linear_prediction_pad_channels` or `Padding2dLayer`, only that channel is affected.
    ``ValueError`` for bad options, and for data with fewer than ``length + 1`` pixels along a
    padded axis or fewer than ``width`` pixels across its prediction front.
    """
    num_padding = _check_num_padding(num_padding)
    _check_rank(data, 2)
    _check_lp_options(length, width, apodization, correlate_method)
    data = jnp.asarray(data)
    if not jnp.issubdtype(data.dtype, jnp.floating):
        raise ValueError(f"data must be floating point, got dtype {data.dtype}")
    _check_lp_size(data.shape, num_padding, length, width)
    (top, bottom), (left, right) = num_padding
    if top == bottom == left == right == 0:
        return data

    mean = jnp.mean(data)
    d = data - mean
    if apodization == "tukey":
        ny, nx = d.shape
        a = d * _tukey(ny, d.dtype)[:, None] * _tukey(nx, d.dtype)[None, :]
    else:
        a = d

    if correlate_method in COVARIANCE_METHODS:
        coefs = _covariance_coefs(a, length, correlate_method)
    else:
        coefs = _autocorrelation_coefs(a, length, width, correlate_method, cholesky_stab)
    down, right_set, up, left_set = _direction_sets(coefs)

    # Horizontal first (as rows of the transposed edge columns), then vertical on the widened
    # data. Only the L rows or columns at each edge take part, so no full-size copy is made.
    left_cols, right_cols = (
        cols.T for cols in _extend_both(d[:, :length].T, d[:, -length:].T, left_set, right_set, left, right)
    )

    def widened(rows: slice) -> jax.Array:
        return jnp.concatenate([left_cols[rows], d[rows], right_cols[rows]], axis=1)

    top_rows, bottom_rows = _extend_both(
        widened(slice(0, length)), widened(slice(-length, None)), up, down, top, bottom
    )
    # The interior is returned exactly as given, not as (data - mean) + mean.
    middle = jnp.concatenate([left_cols + mean, data, right_cols + mean], axis=1)
    return jnp.concatenate([top_rows + mean, middle, bottom_rows + mean], axis=0)


def linear_prediction_pad_channels(data: jax.Array, num_padding: NumPadding, **kwargs: Any) -> jax.Array:
    """`linear_prediction_pad` applied to each channel of ``data`` (channel, y, x)."""
    _check_rank(data, 3)
    return jax.vmap(lambda channel: linear_prediction_pad(channel, num_padding, **kwargs))(data)


def make_extr_pad_weights(max_num_padding: int, num_predictors: int) -> np.ndarray:
    """Integer Lagrange extrapolation weights, shape (num_predictors, max_num_padding).

    Column s holds the weights of the samples (farthest first) for the point s + 1 steps beyond
    the edge sample, from the polynomial of degree num_predictors - 1 through them.
    """
    _check_num_predictors(num_predictors)
    if int(max_num_padding) != max_num_padding or max_num_padding < 0:
        raise ValueError(f"max_num_padding must be an int >= 0, got {max_num_padding!r}")
    positions = range(-num_predictors + 1, 1)
    weights = np.zeros((num_predictors, max_num_padding), dtype=np.int64)
    for s in range(max_num_padding):
        target = s + 1
        for j, tj in enumerate(positions):
            w = Fraction(1)
            for tk in positions:
                if tk != tj:
                    w *= Fraction(target - tk, tj - tk)
            weights[j, s] = int(w)  # Lagrange weights at integer nodes and targets are integers
    return weights


def _extr_pad_columns(x: jax.Array, left: int, right: int, num_predictors: int) -> jax.Array:
    """Extrapolate each row of ``x`` (y, x) by ``left`` and ``right`` columns."""
    n = min(num_predictors, x.shape[1])
    weights = jnp.asarray(make_extr_pad_weights(max(left, right), n), x.dtype)
    parts = [x]
    if right:
        parts.append(jnp.matmul(x[:, x.shape[1] - n :], weights[:, :right], precision=_HIGHEST))
    if left:
        # Mirrored: the first column is the edge sample, samples farthest first means reversed.
        parts.insert(0, jnp.matmul(x[:, :n][:, ::-1], weights[:, :left], precision=_HIGHEST)[:, ::-1])
    return jnp.concatenate(parts, axis=1) if len(parts) > 1 else x


def extr_pad(x: jax.Array, num_padding: NumPadding, num_predictors: int) -> jax.Array:
    """Pad ``x`` (y, x) by polynomial (Lagrange) extrapolation through the nearest samples.

    Rows are extrapolated first, then the columns of the widened data. ``num_predictors=1``
    replicates the edge. Returns (top + y + bottom, left + x + right).
    """
    num_padding = _check_num_padding(num_padding)
    _check_rank(x, 2, "x")
    _check_num_predictors(num_predictors)
    (top, bottom), (left, right) = num_padding
    widened = _extr_pad_columns(jnp.asarray(x), left, right, int(num_predictors))
    return _extr_pad_columns(widened.T, top, bottom, int(num_predictors)).T


def extr_pad_channels(data: jax.Array, num_padding: NumPadding, **kwargs: Any) -> jax.Array:
    """`extr_pad` applied to each channel of ``data`` (channel, y, x)."""
    _check_rank(data, 3)
    return jax.vmap(lambda channel: extr_pad(channel, num_padding, **kwargs))(data)


# ----------------------------------------------------------------------------------------------
# The layer.

# The options of mode "lp" and their defaults, read off `linear_prediction_pad` so they cannot drift.
_LP_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(linear_prediction_pad).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


def _check_mode_options(mode: Any, options: Mapping[str, Any]) -> None:
    if mode not in PADDING_MODES:
        raise ValueError(f"mode must be one of {PADDING_MODES}, got {mode!r}")
    if mode == "lp":
        unknown = sorted(set(options) - set(_LP_DEFAULTS))
        if unknown:
            raise ValueError(f"padding_method_kwargs has unknown lp option(s) {unknown}")
        merged = {**_LP_DEFAULTS, **options}
        _check_lp_options(merged["length"], merged["width"], merged["apodization"], merged["correlate_method"])
    elif mode == "extr":
        if "num_predictors" not in options:
            raise ValueError("padding_method_kwargs needs num_predictors for mode 'extr'")
        _check_num_predictors(options["num_predictors"])


class Padding2dLayer(eqx.Module):
    """Pads (channel, y, x) feature maps by ``num_padding`` with one of the methods.

    ``mode`` is "lp" (options: the arguments of `linear_prediction_pad`), "extr" (option
    ``num_predictors``), "zero" or "repl" (options ignored). The layer holds no arrays.
    """

    num_padding: NumPadding = eqx.field(static=True)
    mode: str = eqx.field(static=True)
    padding_method_kwargs: dict = eqx.field(static=True)

    def __init__(self, num_padding: NumPadding, mode: str, padding_method_kwargs: Mapping[str, Any] | None = None):
        options = dict(padding_method_kwargs or {})
        _check_mode_options(mode, options)
        self.num_padding = _check_num_padding(num_padding)
        self.mode = mode
        self.padding_method_kwargs = options

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """x: (channel, y, x) -> (channel, top + y + bottom, left + x + right)."""
        _check_rank(x, 3, "x")
        (top, bottom), (left, right) = self.num_padding
        if self.mode == "lp":
            return linear_prediction_pad_channels(x, self.num_padding, **self.padding_method_kwargs)
        if self.mode == "extr":
            return extr_pad_channels(x, self.num_padding, num_predictors=self.padding_method_kwargs["num_predictors"])
        pad_mode = "constant" if self.mode == "zero" else "edge"
        return jnp.pad(x, ((0, 0), (top, bottom), (left, right)), mode=pad_mode)


def make_padding_layer(method: str, num_padding: NumPadding) -> Padding2dLayer:
    """The `Padding2dLayer` of one of the paper's method names (`PAPER_METHODS`), e.g. "lp2x3"."""
    if method not in PAPER_METHODS:
        raise ValueError(f"method must be one of {sorted(PAPER_METHODS)}, got {method!r}")
    mode, kwargs = PAPER_METHODS[method]
    return Padding2dLayer(num_padding, mode, kwargs)
