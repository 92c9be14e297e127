"""The continuous power law p(x) = (alpha - 1)/xmin (x/xmin)^(-alpha), x >= xmin.

closed-form MLE, log-likelihood, KS distance (the ``powerlaw`` package's convention) and inverse-CDF
sampling.

Clauset, Shalizi & Newman (2009), *Power-law distributions in empirical data*, SIAM Review 51,
eqs. (2.2), (3.1) and (3.5); Alstott, Bullmore & Plenz (2014), *powerlaw*, PLoS ONE 9.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cdf", "ks_distance", "log_pdf", "loglikelihood", "mle_alpha", "sample"]


def mle_alpha(tail: np.ndarray, xmin: float) -> float:
    """Alpha = 1 + n / sum(log(x_i / xmin)) over the tail x_i >= xmin (eq.

    3.1); inf when every tail value equals xmin.
    """
    s = float(np.sum(np.log(tail / xmin)))
    return 1.0 + tail.size / s if s > 0 else float("inf")


def log_pdf(x: np.ndarray, alpha: float, xmin: float) -> np.ndarray:
    """Log p(x) for x >= xmin (the log form: no underflow of x^-alpha for large x)."""
    return np.log(alpha - 1.0) - np.log(xmin) - alpha * np.log(x / xmin)


def loglikelihood(tail: np.ndarray, alpha: float, xmin: float) -> float:
    """Sum of log p(x_i) over the tail."""
    n = tail.size
    return float(n * (np.log(alpha - 1.0) - np.log(xmin)) - alpha * np.sum(np.log(tail / xmin)))


def cdf(x: np.ndarray, alpha: float, xmin: float) -> np.ndarray:
    """P(X <= x) = 1 - (x/xmin)^(1 - alpha) for x >= xmin, 0 below."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    above = x >= xmin
    out[above] = -np.expm1((1.0 - alpha) * np.log(x[above] / xmin))
    return out


def ks_distance(tail: np.ndarray, alpha: float, xmin: float) -> float:
    """The KS distance of the fit over the ascending tail (the package's convention).

    Max |F*(x_j) - Fhat(x_j)| over the ascending tail, Fhat(x_j) = #{tail < x_j} / n (the
    ``powerlaw`` package's empirical CDF: the fraction strictly below each value).
    """
    n = tail.size
    emp = np.searchsorted(tail, tail, side="left") / n
    fit = -np.expm1((1.0 - alpha) * np.log(tail / xmin))
    return float(np.max(np.abs(fit - emp)))


def sample(n: int, alpha: float, xmin: float, rng: np.random.Generator) -> np.ndarray:
    """N draws by inversion: x = xmin (1 - u)^(-1/(alpha - 1)), u ~ U[0, 1)."""
    u = rng.random(n)
    return xmin * np.exp(-np.log1p(-u) / (alpha - 1.0))
