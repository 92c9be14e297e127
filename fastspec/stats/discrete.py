"""The discrete power law p(x) = x^(-alpha) / zeta(alpha, xmin) on the integers x >= xmin.

The discrete power law p(x) = x^(-alpha) / zeta(alpha, xmin) on the integers x >= xmin, with the
Hurwitz zeta function zeta(a, q) = sum_{k>=0} (q + k)^(-a) (``scipy.special.zeta(a, q)``).

Exact MLE (Clauset et al. 2009, eq. 3.5: maximise -alpha sum log x_i - n log zeta(alpha, xmin)),
the closed-form approximation alpha = 1 + n / sum log(x_i / (xmin - 1/2)) (their eq. 3.7, which
the ``powerlaw`` package uses when xmin >= 10), the KS distance with the package's convention, and
exact inverse-CDF sampling. References: Clauset, Shalizi & Newman (2009), SIAM Review 51;
Alstott, Bullmore & Plenz (2014), PLoS ONE 9.
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = [
    "approx_alpha",
    "ccdf_ge",
    "exact_alpha",
    "ks_distance",
    "log_zeta",
    "loglikelihood",
    "max_alpha",
    "sample",
]

_FD_STEP = 1e-5  # central-difference step in alpha for d/dalpha log zeta(alpha, q)
_BISECT_STEPS = 60


def log_zeta(a: np.ndarray | float, q: np.ndarray | float) -> np.ndarray:
    """Log zeta(a, q) elementwise (-inf where zeta underflows)."""
    z = special.zeta(a, q)
    with np.errstate(divide="ignore"):
        return np.log(z)


def max_alpha(q: np.ndarray | float) -> np.ndarray:
    """The largest exponent fastspec fits at cutoff q.

    zeta(alpha, q) >= q^-alpha stays far from underflow (alpha log q <= 600), and alpha <= 200.
    """
    lq = np.log(np.maximum(np.asarray(q, dtype=np.float64), 1.0))
    with np.errstate(divide="ignore"):
        return np.minimum(200.0, 1.0 + 600.0 / lq)


def _dlog_zeta(a: np.ndarray, q: np.ndarray) -> np.ndarray:
    """d/da log zeta(a, q) by a central difference (error ~1e-10, far below the MLE's spread)."""
    h = np.minimum(_FD_STEP, (a - 1.0) / 4.0)
    return (log_zeta(a + h, q) - log_zeta(a - h, q)) / (2.0 * h)


def exact_alpha(n: np.ndarray, sum_log: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Exact discrete MLE for each of C tails at once.

    Args:
        n: [C] tail sizes.
        sum_log: [C] sum of log x over each tail.
        q: [C] cutoffs (integers >= 1).

    Returns:
        [C] alpha solving d/dalpha log zeta(alpha, q) = -sum_log / n (the log-likelihood is concave
        in alpha, so the root is its unique maximum), by bisection on log(alpha - 1); NaN where
        the maximum lies above :func:`max_alpha` (a tail too steep to fit).
    """
    n, sum_log, q = (np.asarray(v, dtype=np.float64) for v in (n, sum_log, q))
    mean_log = sum_log / n
    lo = np.full(n.shape, np.log(1e-6))
    hi = np.log(max_alpha(q) - 1.0)

    def score(t: np.ndarray) -> np.ndarray:  # increasing in t; its root is the MLE
        return mean_log + _dlog_zeta(1.0 + np.exp(t), q)

    too_steep = score(hi) < 0
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        up = score(mid) < 0
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    alpha = 1.0 + np.exp(0.5 * (lo + hi))
    return np.where(too_steep, np.nan, alpha)


def approx_alpha(n: np.ndarray, sum_log: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Alpha = 1 + n / sum log(x / (q - 1/2)) (Clauset et al. 2009, eq. 3.7)."""
    n, sum_log, q = (np.asarray(v, dtype=np.float64) for v in (n, sum_log, q))
    with np.errstate(divide="ignore"):
        return 1.0 + n / (sum_log - n * np.log(q - 0.5))


def loglikelihood(tail: np.ndarray, alpha: float, xmin: float) -> float:
    """Sum over the tail of log p(x) = -alpha log x - log zeta(alpha, xmin)."""
    return float(-alpha * np.sum(np.log(tail)) - tail.size * log_zeta(alpha, xmin))


def ccdf_ge(x: np.ndarray, alpha: float, xmin: float) -> np.ndarray:
    """P(X >= x) = zeta(alpha, x) / zeta(alpha, xmin) for integers x >= xmin."""
    return np.exp(log_zeta(alpha, x) - log_zeta(alpha, xmin))


def ks_distance(values: np.ndarray, below: np.ndarray, n: int, alpha: float, xmin: float) -> float:
    """The KS distance of the discrete fit over the distinct tail values.

    Max |F*(v) - Fhat(v)| over the distinct tail values ``values`` (ascending, values[0] = xmin),
    with Fhat(v) = below / n (``below``: how many tail points are < v) and F*(v) = P(X < v) = 1 -
    zeta(alpha, v) / zeta(alpha, xmin).

    The ``powerlaw`` package evaluates F* as ((1 - zeta(v)) - (1 - zeta(xmin))) / zeta(xmin),
    which loses about log10(1/zeta(alpha, xmin)) digits; the ratio form here does not.
    """
    fit = 1.0 - ccdf_ge(values, alpha, xmin)
    return float(np.max(np.abs(fit - below / n)))


def sample(n: int, alpha: float, xmin: float, rng: np.random.Generator) -> np.ndarray:
    """N exact draws: X = max{x >= xmin .

    P(X >= x) >= u}, u ~ U(0, 1], by integer bisection on the Hurwitz-zeta CCDF (started from the
    continuous approximation). Values above 2^53 (not exactly representable in float64) are returned
    rounded.
    """
    log_u = np.log1p(-rng.random(n))  # log u, u in (0, 1]
    lz0 = float(log_zeta(alpha, xmin))
    limit = 2.0**53

    def log_s(x: np.ndarray) -> np.ndarray:
        return log_zeta(alpha, x) - lz0

    with np.errstate(over="ignore"):
        guess = (xmin - 0.5) * np.exp(-log_u / (alpha - 1.0)) + 0.5
    lo = np.full(n, float(xmin))
    hi = np.minimum(np.maximum(np.floor(2.0 * guess) + 1.0, xmin + 1.0), limit)
    grow = log_s(hi) >= log_u
    while grow.any():  # make P(X >= hi) < u
        lo = np.where(grow, hi, lo)
        hi = np.where(grow, np.minimum(2.0 * hi, limit), hi)
        grow &= hi < limit
        grow &= log_s(hi) >= log_u
    active = hi - lo > 1
    while active.any():
        mid = np.floor(0.5 * (lo + hi))
        keep = log_s(mid) >= log_u
        lo = np.where(active & keep, mid, lo)
        hi = np.where(active & ~keep, mid, hi)
        active = hi - lo > 1
    return lo
