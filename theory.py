"""One-step extrapolation of a stationary process with a Gaussian autocorrelation: the
theory curves of arXiv:2502.12300 (NMSE of zero, repl, extrN and order-N linear prediction
padding against the blur sigma).

A process with normalised autocorrelation ``k(d) = exp(-d^2 / (2 sigma^2))`` is extrapolated
one step with a prediction-error filter ``a`` (``a_0 = -1`` on the predicted sample, ``a_i``
on the sample ``i`` steps back); the normalised mean square error is
``NMSE = sum_ij a_i a_j k(j - i)``.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.linalg

import padding

THEORY_METHODS = ("zero", "repl", "extr2", "extr3", "lp1x1cs", "lp2x1", "lp3x1")
"""The methods of the paper's theory figure."""


def gaussian_autocorrelation(lag: np.ndarray, sigma: float) -> np.ndarray:
    """``k(d) = exp(-d^2 / (2 sigma^2))`` for lags of any shape (same shape out)."""
    return np.exp(-np.square(lag) / (2.0 * sigma**2))


def prediction_error_filter(method: str, sigma: float) -> np.ndarray:
    """``a`` ``(order + 1,)`` with ``a[0] = -1`` (the predicted sample) and ``a[i]`` the weight
    of the sample ``i`` steps back from it, so that the prediction error is ``sum_i a_i x_i``.

    zero predicts 0, repl the nearest sample, extrN the polynomial through the N nearest
    (the padding library's weights), and lpNx1 (lp1x1cs = lp1x1) the optimal linear
    predictor of order N: the normal equations ``sum_j r_ij c_j = r_0i`` with ``r_ij = k(j - i)``.
    """
    if method == "zero":
        return np.array([-1.0])
    if method == "repl":
        return np.array([-1.0, 1.0])
    if match := re.fullmatch(r"extr(\d+)", method):
        weights = np.asarray(padding.make_extr_pad_weights(1, int(match[1]))[:, 0], dtype=np.float64)
        return np.concatenate([[-1.0], weights[::-1]])  # the library orders farthest first
    if match := re.fullmatch(r"lp(\d+)x1(cs)?", method):
        order = int(match[1])
        r = gaussian_autocorrelation(np.arange(order + 1), sigma)
        coefs = scipy.linalg.solve(scipy.linalg.toeplitz(r[:order]), r[1:], assume_a="pos")
        return np.concatenate([[-1.0], coefs])
    raise ValueError(f"unknown extrapolation method {method!r}")


def one_step_nmse(method: str, sigma: float) -> float:
    """Normalised mean square error of one-step extrapolation: ``sum_ij a_i a_j k(j - i)``."""
    a = prediction_error_filter(method, sigma)
    lags = np.arange(len(a))
    return float(a @ gaussian_autocorrelation(lags[None, :] - lags[:, None], sigma) @ a)
