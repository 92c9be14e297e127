"""fastspec: fast Hessian and stochastic-gradient spectra for PyTorch models.

The public API. Native kernels are reached only through :mod:`fastspec.ops`.
"""

from __future__ import annotations

from fastspec._info import build_info, cuda_available
from fastspec.linalg import (
    ConvergenceWarning,
    LinearOperator,
    aslinearoperator,
    eigsh,
    pooled_ritz_values,
    slq,
    trace,
)
from fastspec.stats import fit_spectrum

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "LinearOperator",
    "__version__",
    "aslinearoperator",
    "build_info",
    "cuda_available",
    "eigsh",
    "fit_spectrum",
    "pooled_ritz_values",
    "slq",
    "trace",
]
