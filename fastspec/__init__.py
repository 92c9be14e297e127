"""fastspec: fast Hessian and stochastic-gradient spectra for PyTorch models.

The public API. Native kernels are reached only through :mod:`fastspec.ops`.
"""

from __future__ import annotations

from fastspec._info import build_info, cuda_available

__version__ = "0.1.0"

__all__ = ["__version__", "build_info", "cuda_available"]
