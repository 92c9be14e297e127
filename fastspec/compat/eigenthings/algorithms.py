"""hessian-eigenthings 1.0's algorithms on fastspec's solvers: lanczos, trace, density."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from fastspec._checks import check_bool, check_choice, check_float, check_int
from fastspec.compat.eigenthings.operators import as_linear, check_backend
from fastspec.compat.eigenthings.results import EigenResult, SpectralDensityResult, TraceResult
from fastspec.linalg import LinearOperator, eigsh, slq
from fastspec.linalg import trace as _fast_trace

Which = Literal["LM", "LA", "SA"]


def lanczos(
    operator: Any,
    *,
    k: int = 10,
    max_iter: int | None = None,
    tol: float = 1e-4,
    reorthogonalize: bool | None = None,
    which: Which = "LM",
    seed: int | None = None,
    backend: Any = None,
) -> EigenResult:
    """Top ``k`` eigenpairs of a symmetric operator, each converged to ``tol``.

    Args:
        operator: a :class:`CurvatureOperator` (or any object with ``size``, ``dtype``,
            ``device`` and ``matvec``, hessian-eigenthings' own operators included).
        k: number of eigenpairs, ``1 <= k <= P``.
        max_iter: checked as there (``k <= max_iter <= P``), unused: the solver runs until
            every pair converged.
        tol: relative residual bound, ``‖Av − λv‖ <= tol · |λ|``.
        reorthogonalize: checked (bool or None), unused: always full.
        which: ``"LM"`` largest magnitude, ``"LA"`` largest, ``"SA"`` smallest.
        seed: seed of the start block (None: fresh).
        backend: checked, unused.

    Returns:
        An :class:`EigenResult`.
    """
    A = as_linear(operator)
    n = A.shape[0]
    k = check_int("k", k, minimum=1)
    if k > n:
        raise ValueError(f"k={k} exceeds operator size {n}")
    max_iter = check_int("max_iter", max_iter, none_ok=True)
    if max_iter is not None and not k <= max_iter <= n:
        raise ValueError(f"max_iter must lie in [k, P] = [{k}, {n}], got {max_iter}")
    tol = check_float("tol", tol, minimum=0.0, open_min=True)
    if reorthogonalize is not None:
        check_bool("reorthogonalize", reorthogonalize)
    which = check_choice("which", which, ("LM", "LA", "SA"))  # type: ignore[assignment]
    seed = check_int("seed", seed, none_ok=True)
    check_backend(backend)
    if k == n:  # the whole spectrum: dense
        return _dense_pairs(A, which, tol)
    res = eigsh(A, k, which=which, tol=tol, return_eigenvectors=True, seed=seed)
    assert res.eigenvectors is not None
    lam = res.eigenvalues
    scale = torch.clamp(
        lam.abs().to(torch.float64),
        min=math.sqrt(torch.finfo(A.dtype).eps) * float(lam.abs().max()),
    )
    return EigenResult(
        eigenvalues=lam,
        eigenvectors=res.eigenvectors.mT.contiguous(),
        residuals=(res.residuals * scale).to(lam.dtype),
        iterations=res.num_matvecs,
        converged=res.converged,
    )


def _dense_pairs(A: LinearOperator, which: str, tol: float) -> EigenResult:
    H = A.to_dense().to(torch.float64)
    lam, V = torch.linalg.eigh((H + H.mT) / 2)
    key = {"LM": -lam.abs(), "LA": -lam, "SA": lam}[which]
    order = torch.argsort(key, stable=True)
    lam, V = lam[order], V[:, order]
    res = torch.linalg.vector_norm(H @ V - V * lam, dim=0)
    return EigenResult(
        eigenvalues=lam.to(A.dtype),
        eigenvectors=V.mT.contiguous().to(A.dtype),
        residuals=res.to(A.dtype),
        iterations=A.shape[0],
        converged=res <= tol * lam.abs().clamp(min=1e-12),
    )


class _Recorder(LinearOperator):
    """``A`` that keeps ``vᵀAv`` of every column it is applied to, in order."""

    def __init__(self, A: LinearOperator) -> None:
        self.A, self.shape, self.dtype, self.device = A, A.shape, A.dtype, A.device
        self.forms: list[torch.Tensor] = []

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = self.A.matmat(V)
        self.forms.append((V * out.reshape(V.shape)).sum(dim=0))
        return out


def trace(
    operator: Any,
    *,
    num_matvecs: int = 100,
    method: Literal["hutchinson", "hutch++"] = "hutch++",
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | None = None,
    backend: Any = None,
) -> TraceResult:
    """Stochastic estimate of ``tr(A)`` from ``num_matvecs`` operator-vector products.

    Args:
        operator: a :class:`CurvatureOperator`-like object (see :func:`lanczos`).
        num_matvecs: products to spend (at least 2 for Hutchinson, 4 for Hutch++).
        method: ``"hutch++"`` or ``"hutchinson"``.
        distribution: ``"rademacher"`` or ``"gaussian"``; checked, probes are Rademacher.
        seed: seed of the probes (None: fresh).
        backend: checked, unused.

    Returns:
        A :class:`TraceResult`; ``samples`` are the Hutchinson terms behind ``stderr``.
    """
    A = _Recorder(as_linear(operator))
    num_matvecs = check_int("num_matvecs", num_matvecs, minimum=1)
    method = check_choice("method", method, ("hutchinson", "hutch++"))  # type: ignore[assignment]
    check_choice("distribution", distribution, ("rademacher", "gaussian"))
    seed = check_int("seed", seed, none_ok=True)
    check_backend(backend)
    res = _fast_trace(A, method=method, num_matvecs=num_matvecs, seed=seed)
    samples = torch.cat(A.forms)[-res.num_probes :].to(A.dtype)  # the Hutchinson part is last
    return TraceResult(estimate=res.estimate, stderr=res.std_error, samples=samples)


def hutchinson(
    operator: Any,
    *,
    num_samples: int = 100,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | None = None,
    backend: Any = None,
) -> TraceResult:
    """Hutchinson's estimator: :func:`trace` with ``method="hutchinson"``."""
    return trace(
        operator,
        num_matvecs=num_samples,
        method="hutchinson",
        distribution=distribution,
        seed=seed,
        backend=backend,
    )


def hutch_plus_plus(
    operator: Any, *, num_matvecs: int = 99, seed: int | None = None, backend: Any = None
) -> TraceResult:
    """Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021): :func:`trace` with ``"hutch++"``."""
    return trace(operator, num_matvecs=num_matvecs, method="hutch++", seed=seed, backend=backend)


def spectral_density(
    operator: Any,
    *,
    num_runs: int = 10,
    lanczos_steps: int = 80,
    num_grid_points: int = 10000,
    sigma: float | None = None,
    grid_padding: float = 0.1,
    seed: int | None = None,
    backend: Any = None,
) -> SpectralDensityResult:
    """Eigenvalue density by stochastic Lanczos quadrature (Ubaru, Chen & Saad, SIMAX 2017).

    Args:
        operator: a :class:`CurvatureOperator`-like object (see :func:`lanczos`).
        num_runs: random probes ``R`` (run together, one ``[P, R]`` block per step).
        lanczos_steps: Lanczos steps per probe ``m`` (``<= P``), fully reorthogonalised.
        num_grid_points: ``G``, points of the regular grid.
        sigma: Gaussian bandwidth; default ``(max node − min node) / lanczos_steps``.
        grid_padding: share of the node range added on each side of the grid.
        seed: seed of the probes (None: fresh).
        backend: checked, unused.

    Returns:
        A :class:`SpectralDensityResult` (grid and density in the operator's dtype).
    """
    A = as_linear(operator)
    R = check_int("num_runs", num_runs, minimum=1)
    m = check_int("lanczos_steps", lanczos_steps, minimum=1)
    if m > A.shape[0]:
        raise ValueError(f"lanczos_steps={m} exceeds operator size {A.shape[0]}")
    G = check_int("num_grid_points", num_grid_points, minimum=1)
    sigma = check_float("sigma", sigma, minimum=0.0, open_min=True, none_ok=True)
    pad_share = check_float("grid_padding", grid_padding, minimum=0.0)
    seed = check_int("seed", seed, none_ok=True)
    check_backend(backend)
    q = slq(A, num_probes=R, num_steps=m, seed=seed, reorthogonalize=True)
    width = int(q.lengths.max())
    valid = torch.arange(width)[None, :] < q.lengths[:, None]
    nodes = torch.where(valid, q.nodes[:, :width], torch.nan)
    weights = torch.where(valid, q.weights[:, :width], 0.0)
    lo, hi = float(nodes[valid].min()), float(nodes[valid].max())
    spread = max(hi - lo, 1e-9)
    if sigma is None:
        sigma = spread / m
    pad = pad_share * spread
    grid = torch.linspace(lo - pad, hi + pad, G, dtype=torch.float64)
    density = q.density(grid, sigma=sigma)
    return SpectralDensityResult(
        grid=grid.to(A.device, A.dtype),
        density=density.to(A.device, A.dtype),
        raw_eigenvalues=nodes.to(A.device, A.dtype),
        raw_weights=weights.to(A.device, A.dtype),
        sigma=sigma,
    )
