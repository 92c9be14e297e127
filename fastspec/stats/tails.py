"""Heavy tail or Gaussian?

Per-sample tests for sets of gradient samples, as in the gradient-structure analysis of P2 (Xie et
al., *On the Overlooked Structure of Stochastic Gradients*, NeurIPS 2023; a reconstruction: P2's
exact protocol could not be read).

For each sample (a 1-D array of values, e.g. one gradient over its coordinates, or one coordinate
over iterations):

* **Power law** on the magnitudes |v| (zeros dropped: a power law lives on x > 0): the Clauset fit
  with xmin by minimum KS distance (:class:`~fastspec.stats.PowerLaw`), and the P1/P2 decision
  "power-law" iff d_ks < c_alpha / sqrt(n_tail) (:func:`~fastspec.stats.ks_critical_value`).
* **Gaussian**: the KS distance to N(mean, std^2) fitted to the sample, with scipy's KS p-value
  (which ignores that the two parameters were estimated, so it is conservative: Lilliefors), and
  D'Agostino-Pearson's K^2 test (``scipy.stats.normaltest``, the default) or Shapiro-Wilk
  (``scipy.stats.shapiro``). "Gaussian" iff the p-value is > alpha.
* **Hill estimator** of the tail exponent on |v|, from the k largest magnitudes.

References: A. Clauset, C. R. Shalizi, M. E. J. Newman, SIAM Review 51 (2009); B. M. Hill,
*A simple general approach to inference about the tail of a distribution*, Ann. Statist. 3
(1975) 1163-1174; R. B. D'Agostino, E. S. Pearson, Biometrika 60 (1973) 613-622.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fastspec._checks import AsDict, check_choice, check_float, check_int
from fastspec.stats.inputs import as_float_vector, check_level
from fastspec.stats.powerlaw import PowerLaw
from fastspec.stats.spectrum import ks_critical_value

__all__ = ["TailTests", "hill_estimator", "tail_tests"]

GaussianTest = Literal["dagostino", "shapiro"]
_MIN_SIZE = 8  # D'Agostino's K^2 needs 8 values


def hill_estimator(x: Any, k: int) -> float:
    """Hill's estimate of the power-law exponent from the ``k`` largest values of ``x``.

    With x_(1) >= x_(2) >= ... the values in descending order,
    xi = (1/k) sum_{i<=k} log(x_(i) / x_(k+1)) estimates 1/(alpha - 1) for a density ~x^-alpha,
    so this returns alpha = 1 + 1/xi (the density exponent, the same convention as
    :attr:`PowerLaw.alpha`; the CCDF / tail index is alpha - 1 = 1/xi).

    Args:
        x: [N] positive finite values.
        k: number of top order statistics, 1 <= k <= N - 1.

    Returns:
        alpha (inf when the k + 1 largest values are all equal).
    """
    v = as_float_vector("x", x, min_size=2)
    if not (v > 0).all():
        raise ValueError("x must be positive for the Hill estimator")
    k = check_int("k", k, minimum=1)
    if k > v.size - 1:
        raise ValueError(f"k must be at most len(x) - 1 = {v.size - 1}, got {k}")
    top = np.sort(v)[::-1][: k + 1]
    xi = float(np.mean(np.log(top[:k] / top[k])))
    return 1.0 + 1.0 / xi if xi > 0 else math.inf


@dataclass(frozen=True, eq=False)
class TailTests(AsDict):
    """Per-sample tail statistics of S samples, and the fraction passing each test.

    Attributes:
        n: [S] sample sizes.
        pl_alpha, pl_xmin, pl_ks, pl_n_tail, pl_ks_critical: [S] the power-law fit on |v| (NaN
            and 0 where it could not be fitted: fewer than 3 distinct nonzero magnitudes, or no
            candidate with alpha in range).
        pl_pass: [S] d_ks < c_alpha / sqrt(n_tail).
        gauss_ks, gauss_ks_p: [S] KS distance to the fitted normal and its p-value.
        gauss_ks_pass: [S] gauss_ks_p > alpha.
        normal_stat, normal_p: [S] the chosen normality test's statistic and p-value.
        normal_pass: [S] normal_p > alpha.
        hill_alpha: [S] Hill's exponent from the top ``hill_k`` magnitudes (see ``hill_fraction``).
        frac_power_law, frac_gaussian_ks, frac_gaussian: the fraction of samples passing.
        alpha: the significance level; gaussian_test: ``"dagostino"`` or ``"shapiro"``.
    """

    n: np.ndarray
    pl_alpha: np.ndarray
    pl_xmin: np.ndarray
    pl_ks: np.ndarray
    pl_n_tail: np.ndarray
    pl_ks_critical: np.ndarray
    pl_pass: np.ndarray
    gauss_ks: np.ndarray
    gauss_ks_p: np.ndarray
    gauss_ks_pass: np.ndarray
    normal_stat: np.ndarray
    normal_p: np.ndarray
    normal_pass: np.ndarray
    hill_alpha: np.ndarray
    frac_power_law: float
    frac_gaussian_ks: float
    frac_gaussian: float
    alpha: float
    gaussian_test: str


def tail_tests(
    samples: Any,
    *,
    alpha: float = 0.05,
    gaussian_test: GaussianTest = "dagostino",
    hill_fraction: float = 0.1,
    alpha_range: tuple[float, float] = (1.0, math.inf),
) -> TailTests:
    """Power-law, Gaussian and Hill statistics of every sample.

    Args:
        samples: [S, N] array (one sample per row) or a sequence of S 1-D arrays (sizes may
            differ); each sample needs at least 8 finite values.
        alpha: significance level of every decision (a KS-table level: 0.2, 0.15, 0.1, 0.05,
            0.01).
        gaussian_test: ``"dagostino"`` (``scipy.stats.normaltest``) or ``"shapiro"``.
        hill_fraction: the Hill estimator uses the top k = max(1, ceil(hill_fraction * m))
            magnitudes of the m nonzero ones.
        alpha_range: valid power-law exponents for the xmin search (see :meth:`PowerLaw.fit`).

    Returns:
        The per-sample statistics and the fractions passing.
    """
    from scipy import stats  # imported on use: keeps `import fastspec` light

    level = check_level(alpha)
    check_choice("gaussian_test", gaussian_test, ("dagostino", "shapiro"))
    hill_fraction = check_float(
        "hill_fraction", hill_fraction, minimum=0.0, maximum=1.0, open_min=True, open_max=True
    )
    rows = _rows(samples)
    s = len(rows)
    cols: dict[str, np.ndarray] = {
        name: np.full(s, np.nan)
        for name in (
            "pl_alpha", "pl_xmin", "pl_ks", "pl_ks_critical", "gauss_ks", "gauss_ks_p",
            "normal_stat", "normal_p", "hill_alpha",
        )
    }  # fmt: skip
    n = np.array([r.size for r in rows])
    n_tail = np.zeros(s, dtype=np.int64)
    for i, v in enumerate(rows):
        mag = np.abs(v[v != 0])
        try:
            fit = PowerLaw.fit(mag, alpha_range=alpha_range)
        except ValueError:
            fit = None
        if fit is not None:
            cols["pl_alpha"][i], cols["pl_xmin"][i], cols["pl_ks"][i] = fit.alpha, fit.xmin, fit.ks
            n_tail[i] = fit.n_tail
            cols["pl_ks_critical"][i] = ks_critical_value(fit.n_tail, alpha=level)
        if mag.size >= 2:
            k = min(mag.size - 1, max(1, math.ceil(hill_fraction * mag.size)))
            cols["hill_alpha"][i] = hill_estimator(mag, k)
        sd = float(np.std(v, ddof=1))
        if sd > 0:
            ks = stats.kstest(v, "norm", args=(float(np.mean(v)), sd))
            cols["gauss_ks"][i], cols["gauss_ks_p"][i] = ks.statistic, ks.pvalue
            test = stats.normaltest(v) if gaussian_test == "dagostino" else stats.shapiro(v)
            cols["normal_stat"][i], cols["normal_p"][i] = test.statistic, test.pvalue
    with np.errstate(invalid="ignore"):
        pl_pass = cols["pl_ks"] < cols["pl_ks_critical"]
        gauss_ks_pass = cols["gauss_ks_p"] > level
        normal_pass = cols["normal_p"] > level
    return TailTests(
        n=n,
        pl_n_tail=n_tail,
        pl_pass=pl_pass,
        gauss_ks_pass=gauss_ks_pass,
        normal_pass=normal_pass,
        frac_power_law=float(pl_pass.mean()),
        frac_gaussian_ks=float(gauss_ks_pass.mean()),
        frac_gaussian=float(normal_pass.mean()),
        alpha=level,
        gaussian_test=gaussian_test,
        **cols,
    )


def _rows(samples: Any) -> list[np.ndarray]:
    if hasattr(samples, "detach"):
        samples = samples.detach().cpu().double().numpy()
    if isinstance(samples, np.ndarray):
        if samples.ndim != 2:
            raise ValueError(
                f"samples must be a 2-D array (one sample per row) or a list of 1-D arrays, "
                f"got shape {samples.shape}"
            )
        seq: Sequence[Any] = list(samples)
    elif isinstance(samples, Sequence) and not isinstance(samples, (str, bytes)):
        seq = samples
    else:
        raise ValueError("samples must be a 2-D array or a sequence of 1-D arrays")
    if len(seq) == 0:
        raise ValueError("samples must hold at least one sample")
    return [as_float_vector(f"samples[{i}]", r, min_size=_MIN_SIZE) for i, r in enumerate(seq)]
