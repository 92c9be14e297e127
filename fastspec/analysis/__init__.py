"""The papers' analyses as one call each, their reports and figures, and the main job.

- :func:`analyze_hessian` → :class:`HessianReport` (P1: top-K Hessian spectrum, power-law fits
  and KS decisions for eigenvalues and eigengaps, λ_1, Tr(H), SLQ density);
- :class:`SpectrumTracker`: λ_1, Tr(H), ŝ and d_ks at training checkpoints;
- :func:`run_main_job` → :class:`RunReport`: ``fastspec run``.

The analysis layer computes no statistic itself: it composes :mod:`fastspec.curvature`,
:mod:`fastspec.linalg` and :mod:`fastspec.stats`, and records their results.
"""

from __future__ import annotations

from fastspec.analysis.hessian import HessianReport, analyze_hessian
from fastspec.analysis.run import QUICK, RunReport, RunSettings, run_main_job
from fastspec.analysis.tracker import SpectrumTracker

__all__ = [
    "QUICK",
    "HessianReport",
    "RunReport",
    "RunSettings",
    "SpectrumTracker",
    "analyze_hessian",
    "run_main_job",
]
