"""The power-law test of a Hessian (or gradient-covariance) spectrum, as the P1 paper does it.

The power-law test of a Hessian (or gradient-covariance) spectrum, exactly as the P1 paper does it:
Xie, Tang, Cai, Sun, Li, *On the Power-Law Hessian Spectrums in Deep Learning*, arXiv:2201.13011
(2022); Tang et al., ICML 2025.

The top K positive eigenvalues lambda_1 >= ... >= lambda_K are fitted with the cutoff fixed at the
smallest, xmin = lambda_K (the ``powerlaw`` package with a fixed xmin):

* beta = 1 + K / sum_i log(lambda_i / lambda_K) (Clauset et al. 2009, eq. 3.1), the exponent of
  p(lambda) ~ lambda^-beta;
* its standard error (beta - 1) / sqrt(K), and the rank-law slope s = 1 / (beta - 1) of
  lambda_k ~ k^-s (this is *not* a log-log least-squares slope; that one is reported separately
  as ``lsq_slope`` and ``lsq_r2``);
* the KS distance d_ks with the package's convention (empirical CDF (i - 1)/K at the i-th smallest
  value, fitted CDF 1 - (lambda / lambda_K)^(1 - beta));
* the decision "power-law" iff d_ks < c_alpha / sqrt(K), c_alpha from the KS table
  (1.07, 1.14, 1.22, 1.36, 1.63 for alpha = 0.20, 0.15, 0.10, 0.05, 0.01).

Eigengaps delta_k = lambda_k - lambda_{k+1}, re-sorted descending, are tested the same way (P1
finds s_gap ~ s + 1).

Two inputs admit no decision, and are refused with a ``ValueError`` that says so:

* **Too few values for the test.** With beta fitted to the same K values, d_ks can approach but
  never reach sup_d(K) = max(1 - 2/K, 1 - e^(-K/(K-1)) - 1/K) (K - 2 values just above xmin and
  one far above it; the second form is the two-value case). Where c_alpha / sqrt(K) >= sup_d(K)
  no K values can fail the test (K = 2 always passes), so K >= :func:`min_k` (6 at alpha = 0.05).
* **Values equal to within float resolution.** The exponent is K / sum log(lambda_i / lambda_K);
  when log(lambda_1 / lambda_K) <= ``MIN_LOG_SPREAD`` (sqrt of float64's epsilon, 1.5e-8) the
  sum is rounding noise and beta (e.g. 2.5e12 for values equal to 1e-10) with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastspec._checks import AsDict, check_int
from fastspec.stats import continuous as cont
from fastspec.stats.inputs import KS_TABLE, as_float_vector, check_level

__all__ = [
    "MIN_LOG_SPREAD",
    "SpectrumFit",
    "fit_eigengaps",
    "fit_spectrum",
    "ks_critical_value",
    "min_k",
]

#: the smallest log(lambda_1 / lambda_K) fitted: below it the values agree to within rounding
MIN_LOG_SPREAD = float(np.finfo(np.float64).eps) ** 0.5


def sup_ks_distance(k: int) -> float:
    """The supremum of d_ks over all sets of ``k`` values fitted by their own MLE (see the notes)."""
    k = check_int("k", k, minimum=2)
    return max(1.0 - 2.0 / k, 1.0 - math.exp(-k / (k - 1)) - 1.0 / k)


def min_k(alpha: float = 0.05) -> int:
    """The fewest values for which P1's KS test can reject at level ``alpha``.

    The smallest K with c_alpha / sqrt(K) < :func:`sup_ks_distance` (K): 5 at alpha = 0.20,
    0.15 and 0.10, 6 at 0.05 and 0.01.
    """
    c = KS_TABLE[check_level(alpha)]
    k = 2
    while c / math.sqrt(k) >= sup_ks_distance(k):
        k += 1
    return k


def ks_critical_value(n: int, alpha: float = 0.05) -> float:
    """The KS critical distance c_alpha / sqrt(n) of P1's decision rule.

    c_alpha = 1.07, 1.14, 1.22, 1.36, 1.63 for alpha = 0.20, 0.15, 0.10, 0.05, 0.01 (the table P1
    uses); other levels raise ``ValueError`` rather than mixing in a different formula (the
    asymptotic sqrt(-log(alpha/2)/2) gives 1.358 at 0.05, not 1.36). Note: P1's own K = 50 tables
    compare against 0.176, not 1.36/sqrt(50) = 0.192; fastspec reports the formula's value.

    Args:
        n: number of points in the fitted tail (K), >= 1.
        alpha: significance level.

    Returns:
        c_alpha / sqrt(n) (1.36/sqrt(1000) = 0.04301, 1.36/sqrt(50) = 0.19233).
    """
    n = check_int("n", n, minimum=1)
    return KS_TABLE[check_level(alpha)] / math.sqrt(n)


@dataclass(frozen=True)
class SpectrumFit(AsDict):
    """The P1 power-law fit and KS test of the top-k values of a spectrum.

    Attributes:
        k: number of values fitted (K).
        xmin: the cutoff, lambda_K (the smallest value fitted).
        lambda_max: the largest value, lambda_1.
        beta: MLE exponent of p(lambda) ~ lambda^-beta.
        beta_se: its standard error (beta - 1) / sqrt(k).
        s: the rank-law slope 1 / (beta - 1) (lambda_k ~ k^-s).
        ks: KS distance d_ks.
        ks_critical: c_alpha / sqrt(k).
        alpha: the significance level.
        is_power_law: ks < ks_critical.
        lsq_slope: least-squares slope of log lambda_i against log i (i = 1..k); about -s for a
            rank law (an extra, not P1's estimator).
        lsq_r2: R^2 of that regression.
    """

    k: int
    xmin: float
    lambda_max: float
    beta: float
    beta_se: float
    s: float
    ks: float
    ks_critical: float
    alpha: float
    is_power_law: bool
    lsq_slope: float
    lsq_r2: float


def fit_spectrum(eigenvalues: Any, k: int | None = None, *, alpha: float = 0.05) -> SpectrumFit:
    """Fit and test a power law on the top ``k`` positive values (P1's method).

    Args:
        eigenvalues: [N] finite values in any order (numpy, list or tensor); non-positive values
            are dropped (only positive eigenvalues enter the fit).
        k: how many of the largest positive values to fit (all positive ones if None); >= 2.
        alpha: significance level of the KS decision (a KS-table level).

    Returns:
        The fit, its KS distance and the decision.

    Raises:
        TypeError: ``k`` is not an int, or ``alpha`` not a number.
        ValueError: on NaN/inf, fewer than 2 positive values, k < 2 or k larger than the number
            of positive values, an untabulated alpha, or input that admits no decision: fewer
            than :func:`min_k` values, or values equal to within float resolution.
    """
    level = check_level(alpha)
    ev = as_float_vector("eigenvalues", eigenvalues, min_size=1)
    pos = np.sort(ev[ev > 0])[::-1]
    if pos.size < 2:
        raise ValueError(
            f"eigenvalues must contain at least 2 positive values, got {pos.size} "
            f"(of {ev.size}; only positive eigenvalues enter the fit)"
        )
    return _fit_top(pos, k, level, what="eigenvalues")


def fit_eigengaps(eigenvalues: Any, k: int | None = None, *, alpha: float = 0.05) -> SpectrumFit:
    """:func:`fit_spectrum` on the eigengaps lambda_i - lambda_{i+1} of the positive eigenvalues.

    The positive eigenvalues are sorted descending, their consecutive gaps taken, zero gaps (ties)
    dropped, the rest re-sorted descending, and the top ``k`` gaps (all if None) fitted.

    Args:
        eigenvalues: [N] finite values in any order; non-positive values are dropped.
        k: how many of the largest gaps to fit; >= 2.
        alpha: significance level of the KS decision.
    """
    level = check_level(alpha)
    ev = as_float_vector("eigenvalues", eigenvalues, min_size=1)
    pos = np.sort(ev[ev > 0])[::-1]
    gaps = np.sort(pos[:-1] - pos[1:])[::-1]
    gaps = gaps[gaps > 0]
    if gaps.size < 2:
        raise ValueError(
            f"eigenvalues must give at least 2 positive gaps between positive values, got "
            f"{gaps.size}"
        )
    return _fit_top(gaps, k, level, what="eigengaps")


def _fit_top(values: np.ndarray, k: int | None, level: float, *, what: str) -> SpectrumFit:
    """Fit the top ``k`` (all if None) of ``values`` [n] descending positive values."""
    k = int(values.size) if k is None else check_int("k", k, minimum=2)
    if k > values.size:
        name = "positive eigenvalues" if what == "eigenvalues" else "positive eigengaps"
        raise ValueError(f"k={k} exceeds the number of {name} ({values.size})")
    if k < min_k(level):
        raise ValueError(
            f"{what}: cannot decide with k={k} values: at alpha={level:g} the KS test rejects no "
            f"set of fewer than {min_k(level)} values (fastspec.stats.min_k)"
        )
    top = values[:k]
    xmin = float(top[-1])
    spread = math.log(float(top[0]) / xmin)
    if spread <= MIN_LOG_SPREAD:
        raise ValueError(
            f"{what}: cannot decide: the top k={k} values are all equal to within a relative "
            f"{spread:.1e} (at most {MIN_LOG_SPREAD:.1e}, float resolution); the exponent would "
            "be rounding noise"
        )
    beta = cont.mle_alpha(top, xmin)
    ks = cont.ks_distance(top[::-1].copy(), beta, xmin)
    crit = KS_TABLE[level] / math.sqrt(k)
    slope, r2 = _loglog_lsq(top)
    return SpectrumFit(
        k=k,
        xmin=xmin,
        lambda_max=float(top[0]),
        beta=beta,
        beta_se=(beta - 1.0) / math.sqrt(k),
        s=1.0 / (beta - 1.0),
        ks=ks,
        ks_critical=crit,
        alpha=level,
        is_power_law=bool(ks < crit),
        lsq_slope=slope,
        lsq_r2=r2,
    )


def _loglog_lsq(top: np.ndarray) -> tuple[float, float]:
    """Slope and R^2 of log top_i ~ a + b log i, i = 1..k."""
    lx = np.log(np.arange(1, top.size + 1, dtype=np.float64))
    ly = np.log(top)
    dx, dy = lx - lx.mean(), ly - ly.mean()
    sxx, syy = float(np.sum(dx * dx)), float(np.sum(dy * dy))
    slope = float(np.sum(dx * dy)) / sxx
    r2 = slope * slope * sxx / syy if syy > 0 else 1.0
    return slope, r2
