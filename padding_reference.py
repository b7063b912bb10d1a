"""The padding methods of padding.py written plainly, to read beside it and to test it against.

Niemitalo et al. (2025), arXiv:2502.12300. Same arguments and results as `padding.Padding2dLayer`
(up to rounding), but every step is the textbook formula: the autocorrelation at every lag by
one plain correlation, one linear solve per predicted position, one new row at a time, and
JAX's own derivatives (no custom VJPs). It is slow; use it in float64 on small arrays. padding.py's
reading guide maps the same steps to its fast functions.

One idea carries the four directions: to pad a side, the data is turned (transposed and/or
rotated by 180 degrees) so that the side is the bottom, a "down" predictor is fitted to the
turned analysis data, rows are appended, and the result is turned back.
"""

import itertools

import jax
import jax.numpy as jnp
import jax.scipy.signal
import numpy as np
import scipy.signal


def pad(data, num_padding, mode, padding_method_kwargs=None):
    """``Padding2dLayer(num_padding, mode, padding_method_kwargs)(data)``: (channel, y, x)."""
    kwargs = padding_method_kwargs or {}
    (top, bottom), (left, right) = num_padding
    if mode == "zero":
        return jnp.pad(data, ((0, 0), (top, bottom), (left, right)))
    if mode == "repl":
        return jnp.pad(data, ((0, 0), (top, bottom), (left, right)), mode="edge")
    one = {"lp": lp_pad, "extr": extr_pad}[mode]
    return jax.vmap(lambda channel: one(channel, num_padding, **kwargs))(data)


# Turn the data so that a side becomes the bottom, and back.
TURNS = {  # side: (turn, turn back)
    "bottom": (lambda x: x, lambda x: x),
    "top": (lambda x: x[::-1, ::-1], lambda x: x[::-1, ::-1]),
    "right": (lambda x: x.T, lambda x: x.T),
    "left": (lambda x: x.T[::-1, ::-1], lambda x: x[::-1, ::-1].T),
}


def extr_pad(x, num_padding, num_predictors):
    """Each row, then each column of the widened rows, continued by the polynomial of degree
    N - 1 through its N nearest samples (N = num_predictors, at most the samples there)."""
    (top, bottom), (left, right) = num_padding
    for sides in (("left", left), ("right", right)), (("top", top), ("bottom", bottom)):
        for side, num in sides:
            turn, back = TURNS[side]
            t = turn(x)
            n = min(num_predictors, t.shape[0])
            nodes = np.arange(n)  # the last n rows sit at 0..n-1; new row s at n - 1 + s
            rows = [t]
            for s in range(1, num + 1):
                lagrange = [np.prod([(n - 1 + s - k) / (j - k) for k in nodes if k != j]) for j in nodes]
                rows.append(jnp.tensordot(jnp.asarray(lagrange, t.dtype), t[-n:], axes=1)[None])
            x = back(jnp.concatenate(rows))
    return x


def lp_pad(data, num_padding, length=2, width=3, apodization="tukey", correlate_method="fft", cholesky_stab=1e-7):
    """`padding.linear_prediction_pad` for one channel (y, x)."""
    (top, bottom), (left, right) = num_padding
    mean = jnp.mean(data)
    d = data - mean  # 1. remove the mean
    a = d  # 2. the analysis data: windowed, or not
    if apodization == "tukey":
        window = [scipy.signal.windows.tukey(n + 1, sym=False)[1:] for n in d.shape]
        a = d * jnp.asarray(window[0], d.dtype)[:, None] * jnp.asarray(window[1], d.dtype)[None, :]

    def fit(side):  # 3. and 4.: predictor sets (K, L, K) for padding `side`
        turn, _ = TURNS[side]
        if correlate_method in ("direct", "fft"):
            return autocorrelation_coefs(turn(a), length, width, correlate_method, cholesky_stab)
        opposite = {"bottom": "top", "top": "bottom", "right": "left", "left": "right"}[side]
        stats = covariance_stats(turn(a), length)
        if correlate_method.startswith("cov_sym"):
            stats = stats + covariance_stats(TURNS[opposite][0](a), length)
        return covariance_coefs(stats, length, correlate_method.endswith("stab"))

    x = d  # 5. the recursion: horizontal first, then vertical on the widened data
    for side, num in (("left", left), ("right", right), ("top", top), ("bottom", bottom)):
        turn, back = TURNS[side]
        x = back(extend_down(turn(x), fit(side), num)) if num else x
    return (x + mean).at[top : top + data.shape[0], left : left + data.shape[1]].set(data)


def autocorrelation_coefs(a, length, width, correlate_method, cholesky_stab):
    """One predictor per predicted position q of the front, from the normal equations
    ``(M + ridge I) c = v``, ``M[i, j] = R(p_i - p_j)``, ``v[j] = R((L, q) - p_j)``."""
    ny, nx = a.shape
    m = max(length + 1, width) - 1
    scale = ny * nx if correlate_method == "direct" else smooth_size(ny + m) * smooth_size(nx + m)
    # R(dy, dx) = sum_{y, x} a[y, x] a[y + dy, x + dx] / scale (zero outside) sits at [ny - 1 + dy, nx - 1 + dx].
    full = jax.scipy.signal.correlate2d(a, a, mode="full") / scale
    predictors = np.array(list(itertools.product(range(length), range(width))))  # (row, column), row-major
    predicted = np.array([(length, q) for q in range(width)])

    def r(lags):
        return full[ny - 1 + lags[..., 0], nx - 1 + lags[..., 1]]

    matrix = r(predictors[:, None] - predictors[None, :]) + cholesky_stab * jnp.eye(len(predictors), dtype=a.dtype)
    v = r(predicted[:, None] - predictors[None, :])  # (K, L K)
    c = jnp.linalg.solve(matrix, v.T).T
    return jnp.where(jnp.isfinite(c), c, 0).reshape(width, length, width)


def smooth_size(n):
    """The smallest integer >= n whose prime factors are all 2, 3, 5 or 7 (the FFT size)."""
    for candidate in itertools.count(n):
        rest = candidate
        for p in (2, 3, 5, 7):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return candidate


def covariance_stats(a, length):
    """Sums of lagged products over the rows y where the whole neighbourhood y - L .. y fits:
    ``s[i, j] = sum_y sum_x a[y - i, x] a[y - j, x]``, i, j = 0 (predicted) .. L."""
    ny = a.shape[0]
    rows = [a[length - i : ny - i] for i in range(length + 1)]
    return jnp.stack([jnp.stack([jnp.sum(u * w) for w in rows]) for u in rows])


def covariance_coefs(s, length, stabilise):
    """The least-squares 1-D predictor ``x[y] = a1 x[y-1] (+ a2 x[y-2])``, poles reflected into
    the unit circle when ``stabilise``; as one set (1, L, 1), farthest predictor first."""
    if length == 1:
        a1 = safe_div(s[0, 1], s[1, 1])
        if stabilise:
            big = jnp.abs(a1) > 1
            a1 = jnp.where(big, 1 / jnp.where(big, a1, 1), a1)
        return a1.reshape(1, 1, 1)
    det = s[1, 1] * s[2, 2] - s[1, 2] ** 2
    a1 = safe_div(s[0, 1] * s[2, 2] - s[0, 2] * s[1, 2], det)
    a2 = safe_div(s[0, 2] * s[1, 1] - s[0, 1] * s[1, 2], det)
    if stabilise:
        disc = a1**2 + 4 * a2
        # complex poles: reflect when their modulus sqrt(-a2) exceeds 1
        flip = (disc < 0) & (a2 < -1)
        a2_flipped = jnp.where(flip, a2, -1)
        complex_a1, complex_a2 = jnp.where(flip, -a1 / a2_flipped, a1), jnp.where(flip, 1 / a2_flipped, a2)
        # real poles p = a1 / 2 +- sqrt(disc) / 2, each |p| > 1 replaced by 1 / p
        root = jnp.sqrt(jnp.where(disc > 0, disc, 1)) * (disc > 0)
        poles = [a1 / 2 + root / 2, a1 / 2 - root / 2]
        poles = [jnp.where(jnp.abs(p) > 1, 1 / jnp.where(jnp.abs(p) > 1, p, 1), p) for p in poles]
        real_a1, real_a2 = poles[0] + poles[1], -poles[0] * poles[1]
        a1, a2 = jnp.where(disc < 0, complex_a1, real_a1), jnp.where(disc < 0, complex_a2, real_a2)
    return jnp.stack([a2, a1]).reshape(1, 2, 1)


def safe_div(a, b):
    """``a / b``, and 0 where b is 0 (a constant channel; padding.py also gives 0 where the
    quotient overflows)."""
    return jnp.where(b == 0, 0, a / jnp.where(b == 0, 1, b))


def extend_down(x, sets, num):
    """``num`` new rows below x (y, N), each predicted from the last L rows: column n uses the set
    of its position q in the K-wide window that starts at ``clip(n - K // 2, 0, N - K)``."""
    _, length, width = sets.shape
    n = x.shape[1]
    start = np.clip(np.arange(n) - width // 2, 0, n - width)
    position = np.arange(n) - start  # 0 throughout for width 1 (one set)
    columns = start[:, None] + np.arange(width)  # (N, K)
    rows = [x]
    for _ in range(num):
        carry = jnp.concatenate(rows)[-length:]  # (L, N)
        rows.append(jnp.einsum("nlk,lnk->n", sets[position], carry[:, columns])[None])
    return jnp.concatenate(rows)
