"""Power-law statistics.

the P1 spectrum test, Clauset-Shalizi-Newman fits with the bootstrap goodness-of-fit p-value, Vuong
likelihood-ratio tests against alternatives, and per-sample tail tests. Same answers as the
``powerlaw`` package 2.0, faster by orders of magnitude; the differences (all deliberate and
documented) are listed in :mod:`fastspec.stats.powerlaw` and :mod:`fastspec.stats.alternatives`.

References: Clauset, Shalizi & Newman, SIAM Review 51 (2009); Alstott, Bullmore & Plenz, PLoS ONE
9 (2014); Vuong, Econometrica 57 (1989); Xie et al., arXiv:2201.13011 (P1) and arXiv:2212.02083
(P2).
"""

from __future__ import annotations

from fastspec.stats.alternatives import ALTERNATIVES, Comparison, compare
from fastspec.stats.bootstrap import GofResult, gof_pvalue
from fastspec.stats.powerlaw import PowerLaw, XminScan
from fastspec.stats.spectrum import (
    SpectrumFit,
    fit_eigengaps,
    fit_spectrum,
    ks_critical_value,
    min_k,
)
from fastspec.stats.tails import TailTests, hill_estimator, tail_tests

__all__ = [
    "ALTERNATIVES",
    "Comparison",
    "GofResult",
    "PowerLaw",
    "SpectrumFit",
    "TailTests",
    "XminScan",
    "compare",
    "fit_eigengaps",
    "fit_spectrum",
    "gof_pvalue",
    "hill_estimator",
    "ks_critical_value",
    "min_k",
    "tail_tests",
]
