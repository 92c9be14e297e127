"""hessian_eigs / hessian_trace / hessian_density against the dense Hessian of a trained model."""

from __future__ import annotations

import pytest
import torch
from curvature_models import batches, dense_hessian
from torch import nn

from fastspec.curvature import hessian_density, hessian_eigs, hessian_trace


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 2-hidden-layer ReLU MLP trained to a low loss on a synthetic 3-class problem."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g, dtype=torch.float64)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).long() + (x[:, 3] > 1).long()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)
    ).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


@pytest.mark.parametrize("cache_graph", [None, False])
def test_hessian_eigs_matches_dense(trained, cache_graph) -> None:  # type: ignore[no-untyped-def]
    model, x, y = trained
    loss = nn.CrossEntropyLoss()
    tol = 1e-8
    res = hessian_eigs(
        model, loss, batches(x, y, 40), 12, tol=tol, seed=0, return_eigenvectors=True,
        cache_graph=cache_graph,
    )  # fmt: skip
    exact = torch.linalg.eigvalsh(dense_hessian(model, loss, x, y)).flip(0)[:12]
    assert bool(res.converged.all())
    assert bool((res.residuals <= tol).all())
    # |λ̃ − λ| ≤ ‖Av − λ̃v‖ for a symmetric matrix
    assert torch.allclose(res.eigenvalues, exact, rtol=0, atol=tol * float(exact.abs().max()))
    assert res.eigenvectors is not None and res.eigenvectors.shape == (
        x.shape[1] * 12 + 12 + 156 + 39,
        12,
    )


def test_hessian_eigs_bottom_of_the_spectrum(trained) -> None:  # type: ignore[no-untyped-def]
    model, x, y = trained
    loss = nn.CrossEntropyLoss()
    # the bottom sits in a cluster of tiny eigenvalues: a hard problem that needs a basis wider
    # than the default to converge quickly
    res = hessian_eigs(model, loss, (x, y), 4, which="SA", tol=1e-6, seed=1, max_basis=80)
    exact = torch.linalg.eigvalsh(dense_hessian(model, loss, x, y))[:4]
    assert exact[0] < 0  # a trained ReLU net has negative curvature directions
    assert bool(res.converged.all())
    # residuals are relative to |λ|, and |λ̃ − λ| ≤ ‖Av − λ̃v‖
    assert bool(((res.eigenvalues - exact).abs() <= res.residuals * exact.abs() + 1e-15).all())


def test_hessian_trace_within_its_standard_error(trained) -> None:  # type: ignore[no-untyped-def]
    model, x, y = trained
    loss = nn.CrossEntropyLoss()
    exact = float(dense_hessian(model, loss, x, y).trace())
    for method in ("hutch++", "hutchinson"):
        res = hessian_trace(model, loss, (x, y), method=method, num_matvecs=120, seed=3)
        assert res.std_error > 0
        assert abs(res.estimate - exact) <= 4 * res.std_error, (method, res, exact)


def test_hessian_density_reproduces_spectral_moments(trained) -> None:  # type: ignore[no-untyped-def]
    model, x, y = trained
    loss = nn.CrossEntropyLoss()
    evals = torch.linalg.eigvalsh(dense_hessian(model, loss, x, y))
    res = hessian_density(model, loss, (x, y), num_probes=16, num_steps=40, seed=0)
    nodes = torch.as_tensor(res.nodes, dtype=torch.float64).reshape(-1)
    weights = torch.as_tensor(res.weights, dtype=torch.float64).reshape(-1)
    weights = weights / weights.sum()
    # the quadrature of the first two moments is exact per probe; the probe average is an
    # unbiased estimate of (1/P) tr(H) and (1/P) tr(H²)
    m1, m2 = float((weights * nodes).sum()), float((weights * nodes**2).sum())
    assert abs(m1 - float(evals.mean())) < 0.25 * float(evals.abs().mean())
    assert abs(m2 - float((evals**2).mean())) < 0.35 * float((evals**2).mean())
    assert nodes.max() <= evals.max() + 1e-8 and nodes.min() >= evals.min() - 1e-8
