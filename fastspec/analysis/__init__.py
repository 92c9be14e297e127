"""The papers' analyses as one call each, their reports and figures, and the main job.

- :func:`analyze_hessian` → :class:`HessianReport` (P1: top-K Hessian spectrum, power-law fits
  and KS decisions for eigenvalues and eigengaps, λ_1, Tr(H), SLQ density);
- :func:`analyze_gradients` → :class:`GradientReport` (P2: covariance and noise spectra with
  their fits, dimension-wise / iteration-wise / noise tail tests);
- :class:`SpectrumTracker`: λ_1, Tr(H), ŝ and d_ks at training checkpoints;
- :func:`run_main_job` → :class:`RunReport`: ``fastspec run``.

The analysis layer computes no statistic itself: it composes :mod:`fastspec.curvature`,
:mod:`fastspec.linalg` and :mod:`fastspec.stats`, and records their results.
"""

from __future__ import annotations

from fastspec.analysis.gradients import GradientReport, analyze_gradients
from fastspec.analysis.hessian import HessianReport, analyze_hessian
from fastspec.analysis.run import QUICK, RunReport, RunSettings, run_main_job
from fastspec.analysis.tracker import SpectrumTracker

__all__ = [
    "QUICK",
    "GradientReport",
    "HessianReport",
    "RunReport",
    "RunSettings",
    "SpectrumTracker",
    "analyze_gradients",
    "analyze_hessian",
    "run_main_job",
]
