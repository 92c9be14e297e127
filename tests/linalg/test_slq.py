"""Stochastic Lanczos quadrature: exact identities per probe, variance bands, pooling."""

from __future__ import annotations

import math

import pytest
import torch

from fastspec.linalg import SLQResult, pooled_ritz_values, slq
from fastspec.linalg._random import make_generator, rademacher

P = 200


def probes(seed: int, R: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The unit probes slq draws for ``seed`` (documented: Rademacher / √P, CPU generator)."""
    return rademacher(make_generator(seed), P, R, dtype=dtype, device=torch.device("cpu")) / (
        math.sqrt(P)
    )


def gauss(x: torch.Tensor, t: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-0.5 * ((t[:, None] - x[None, :]) / sigma) ** 2) / (
        sigma * math.sqrt(2 * math.pi)
    )


@pytest.fixture
def evals() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.sort(torch.rand(P, generator=gen, dtype=torch.float64) * 4 - 1).values


@pytest.fixture
def A(spectrum_matrix, evals) -> torch.Tensor:
    return spectrum_matrix(evals, seed=1)


def test_moments_are_exact_per_probe(A):
    """Gauss quadrature with m nodes integrates x^j exactly for j < 2m: Σ τ θ^j = zᵀAʲz."""
    R, m = 6, 4
    res = slq(A, num_probes=R, num_steps=m, seed=3)
    Z = probes(3, R)
    torch.testing.assert_close(res.weights.sum(1), torch.ones(R, dtype=torch.float64))
    Aj = torch.eye(P, dtype=torch.float64)
    for j in range(1, 2 * m):
        Aj = Aj @ A
        quad = (res.weights * res.nodes**j).sum(1)
        exact = (Z * (Aj @ Z)).sum(0)
        torch.testing.assert_close(quad, exact, rtol=1e-9, atol=1e-12)
    assert res.num_matvecs == R * m
    assert torch.equal(res.lengths, torch.full((R,), m))


def test_density_within_variance_band(A, evals):
    """With m = P the quadrature is exact per probe: only Hutchinson noise remains."""
    R, sigma = 30, 0.15
    grid = torch.linspace(-1.5, 3.5, 41, dtype=torch.float64)
    res = slq(A, num_probes=R, num_steps=P, seed=5)
    est = res.density(grid, sigma=sigma)
    # exact broadened density and the per-probe variance 2(‖F‖_F² − Σ F_ii²)/P² of zᵀF z/P·P
    lam, U = torch.linalg.eigh(A)
    G = gauss(lam, grid, sigma)  # [grid, P]
    exact = G.mean(1)
    F = torch.einsum("ip,gp,jp->gij", U, G, U)  # f_t(A) per grid point
    var = 2 * ((F**2).sum((1, 2)) - (torch.diagonal(F, dim1=1, dim2=2) ** 2).sum(1)) / P**2
    sd = torch.sqrt(var / R)
    z = (est - exact).abs() / sd
    assert float(z.max()) < 5.0, z.max()
    # and it is not trivially exact: some deviation is visible
    assert float(z.max()) > 0.1
    # integrates to 1
    wide = torch.linspace(-4, 6, 4001, dtype=torch.float64)
    integral = torch.trapezoid(res.density(wide, sigma=sigma), wide)
    torch.testing.assert_close(integral, torch.tensor(1.0, dtype=torch.float64), atol=1e-6, rtol=0)


def test_truncated_quadrature_matches_full(A):
    """Same seed, same probes: m = 60 nodes reproduce the m = P density of a smooth kernel."""
    grid = torch.linspace(-1.5, 3.5, 101, dtype=torch.float64)
    full = slq(A, num_probes=4, num_steps=P, seed=7).density(grid, sigma=0.2)
    short = slq(A, num_probes=4, num_steps=60, seed=7).density(grid, sigma=0.2)
    torch.testing.assert_close(short, full, atol=1e-6 * float(full.max()), rtol=0)


def test_breakdown_on_few_distinct_eigenvalues(spectrum_matrix):
    distinct = torch.tensor([-2.0, -0.5, 0.25, 1.0, 3.0], dtype=torch.float64)
    ev = distinct.repeat_interleave(P // 5)
    A = spectrum_matrix(ev, seed=2)
    R = 3
    res = slq(A, num_probes=R, num_steps=20, seed=11)
    assert torch.equal(res.lengths, torch.full((R,), 5))
    torch.testing.assert_close(res.nodes[:, :5], distinct.expand(R, 5), atol=1e-10, rtol=0)
    assert bool((res.weights[:, 5:] == 0).all())
    # weights are the probes' squared projections on each eigenspace
    lam, U = torch.linalg.eigh(A)
    Z = probes(11, R)
    proj = (U.T @ Z) ** 2  # [P, R]
    w = torch.stack([proj[(lam - d).abs() < 1e-8].sum(0) for d in distinct], dim=1)
    torch.testing.assert_close(res.weights[:, :5], w, atol=1e-10, rtol=0)


def test_pooling_as_the_papers_do(spectrum_matrix):
    Pn = 500
    ev = torch.arange(1, Pn + 1, dtype=torch.float64) ** -1.0
    A = spectrum_matrix(ev, seed=3)
    runs = [slq(A, num_probes=1, num_steps=120, seed=s) for s in (1, 2, 3)]
    pooled = pooled_ritz_values(runs, 6)
    expect = ev[:2].repeat_interleave(3)  # each converged top eigenvalue once per run
    torch.testing.assert_close(pooled, expect, rtol=1e-8, atol=0)
    # the same three runs as one result with three probes pool identically
    one = slq(A, num_probes=3, num_steps=120, seed=1)
    assert pooled_ritz_values(one, 30).shape == (30,)
    # dedupe merges copies of the same eigenvalue across runs
    deduped = pooled_ritz_values(runs, 5, dedupe_rtol=1e-6)
    torch.testing.assert_close(deduped, ev[:5], rtol=1e-6, atol=0)
    assert bool((pooled_ritz_values(runs, 300).diff() <= 0).all())
    with pytest.raises(ValueError, match="exceeds"):
        pooled_ritz_values(runs, 361)
    with pytest.raises(TypeError):
        pooled_ritz_values([], 3)
    with pytest.raises(ValueError, match="dedupe_rtol"):
        pooled_ritz_values(runs, 3, dedupe_rtol=0.0)


def test_without_reorthogonalisation(A, evals):
    res = slq(A, num_probes=4, num_steps=80, seed=13, reorthogonalize=False)
    assert not res.reorthogonalized
    Z = probes(13, 4)
    # the first moment is α₁ = zᵀAz whatever the orthogonality
    torch.testing.assert_close(
        (res.weights * res.nodes).sum(1), (Z * (A @ Z)).sum(0), rtol=1e-9, atol=1e-12
    )
    # Ritz values stay inside the spectrum and the extremes converge
    assert float(res.nodes.min()) >= float(evals[0]) - 1e-9
    assert float(res.nodes.max()) <= float(evals[-1]) + 1e-9
    torch.testing.assert_close(res.nodes.max(), evals[-1], rtol=1e-8, atol=0)


def test_float32_and_serialisation(A):
    res = slq(A.float(), num_probes=2, num_steps=10, seed=0)
    assert isinstance(res, SLQResult) and res.nodes.dtype == torch.float64
    d = res.to_dict()
    assert d["dim"] == P and len(d["nodes"]) == 2 and d["num_matvecs"] == 20
    ref = slq(A, num_probes=2, num_steps=10, seed=0)
    torch.testing.assert_close(res.nodes, ref.nodes, atol=1e-4, rtol=0)
