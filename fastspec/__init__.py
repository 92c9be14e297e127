"""fastspec: fast Hessian and stochastic-gradient spectra for PyTorch models.

The public API (``docs/usage.md`` walks through it). Native kernels are reached only through
:mod:`fastspec.ops`.
"""

from __future__ import annotations

from fastspec._info import build_info, cuda_available
from fastspec.analysis import SpectrumTracker, analyze_gradients, analyze_hessian
from fastspec.curvature import (
    EmpiricalFisherOperator,
    GGNOperator,
    HessianOperator,
    hessian_density,
    hessian_eigs,
    hessian_trace,
)
from fastspec.grads import (
    CovarianceSpectrum,
    GradientRecorder,
    gradient_covariance_spectrum,
    gradient_gram,
    per_sample_gradients,
)
from fastspec.linalg import (
    ConvergenceWarning,
    LinearOperator,
    aslinearoperator,
    eigsh,
    pooled_ritz_values,
    slq,
    trace,
)
from fastspec.stats import PowerLaw, fit_eigengaps, fit_spectrum

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "CovarianceSpectrum",
    "EmpiricalFisherOperator",
    "GGNOperator",
    "GradientRecorder",
    "HessianOperator",
    "LinearOperator",
    "PowerLaw",
    "SpectrumTracker",
    "__version__",
    "analyze_gradients",
    "analyze_hessian",
    "aslinearoperator",
    "build_info",
    "cuda_available",
    "eigsh",
    "fit_eigengaps",
    "fit_spectrum",
    "gradient_covariance_spectrum",
    "gradient_gram",
    "hessian_density",
    "hessian_eigs",
    "hessian_trace",
    "per_sample_gradients",
    "pooled_ritz_values",
    "slq",
    "trace",
]
