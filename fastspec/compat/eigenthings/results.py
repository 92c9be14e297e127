"""The result records of hessian-eigenthings 1.0, with the original's fields."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fastspec._checks import AsDict


@dataclass(frozen=True)
class EigenResult(AsDict):
    """Eigenpairs from :func:`lanczos`, ordered as ``which`` asks.

    Attributes:
        eigenvalues: ``[K]`` (``"LM"`` by descending magnitude, ``"LA"`` descending, ``"SA"``
            ascending), the operator's dtype.
        eigenvectors: ``[K, P]``, row ``i`` the unit eigenvector of ``eigenvalues[i]``.
        residuals: ``[K]``, ``‖Av − λv‖`` of the returned pairs.
        iterations: operator-vector products used.
        converged: ``[K]`` bool, ``residual <= tol · |λ|``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor = field(metadata={"serialize": False})
    residuals: torch.Tensor
    iterations: int
    converged: torch.Tensor


@dataclass(frozen=True)
class TraceResult(AsDict):
    """A stochastic estimate of ``tr(A)``.

    Attributes:
        estimate: the estimate.
        stderr: its standard error (from the Hutchinson terms).
        samples: ``[m]`` the Hutchinson terms ``zᵀAz`` (Hutch++: on the deflated operator).
    """

    estimate: float
    stderr: float
    samples: torch.Tensor


@dataclass(frozen=True)
class SpectralDensityResult(AsDict):
    """Gaussian-smoothed eigenvalue density on a regular grid, with the quadrature behind it.

    Attributes:
        grid: ``[G]`` abscissae.
        density: ``[G]``, integrates to about 1.
        raw_eigenvalues: ``[R, m]`` Ritz values of each run, ascending (NaN past a run's end).
        raw_weights: ``[R, m]`` their quadrature weights (0 past a run's end).
        sigma: the Gaussian bandwidth used.
    """

    grid: torch.Tensor
    density: torch.Tensor
    raw_eigenvalues: torch.Tensor
    raw_weights: torch.Tensor
    sigma: float
