"""fastspec.compat.pyhessian against PyHessian 0.1 (the original) and a dense Hessian (oracle)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from curvature_models import batches, dense_hessian, make_data, make_model
from torch import nn

from fastspec.compat.pyhessian import hessian

LOSS = nn.CrossEntropyLoss()


@pytest.fixture(scope="module")
def problem() -> dict[str, Any]:
    model = make_model("mlp")  # 5-8-3 tanh MLP, P = 75, float64
    x, y = make_data("mlp", n=50)
    H = dense_hessian(model, LOSS, x, y)
    evals = torch.linalg.eigvalsh(H)
    return {
        "model": model,
        "x": x,
        "y": y,
        "H": H,
        "lm": evals[evals.abs().argsort(descending=True)],
    }


def original(model: nn.Module, **kwargs: Any) -> Any:
    pyhessian = pytest.importorskip("pyhessian")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyhessian.hessian(model, LOSS, cuda=False, **kwargs)


def flat(vector: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in vector])


@pytest.mark.parametrize("source", ["data", "uneven_loader"])
def test_eigenvalues_match_dense_and_pyhessian(problem: dict[str, Any], source: str) -> None:
    """Same types and shapes as PyHessian; eigenvalues within tol of the dense ones. PyHessian's
    power iteration, run to a tight tolerance, converges to the same values (for an uneven last
    batch too: PyHessian weights batches by their sizes) times (1 + 1e-6)⁻²: it normalises by
    ‖v‖ + 1e-6, so its eigenvalues are biased low by 2e-6 relative at any tolerance."""
    model, x, y, H = problem["model"], problem["x"], problem["y"], problem["H"]
    data = {"data": (x, y)} if source == "data" else {"dataloader": batches(x, y, 16)}
    ours = hessian(model, LOSS, cuda=False, seed=0, **data)
    vals, vecs = ours.eigenvalues(top_n=3, tol=1e-8)
    assert isinstance(vals, list) and all(isinstance(v, float) for v in vals)
    assert len(vecs) == 3 and all(len(v) == len(list(model.parameters())) for v in vecs)
    for v in vecs:
        assert [t.shape for t in v] == [p.shape for p in model.parameters()]
        assert all(t.dtype == torch.float64 for t in v)
    np.testing.assert_allclose(vals, problem["lm"][:3].numpy(), rtol=1e-8)
    for lam, v in zip(vals, vecs):
        u = flat(v)
        assert float(u.norm()) == pytest.approx(1.0, abs=1e-12)
        assert float((H @ u - lam * u).norm()) <= 1e-7 * abs(lam)
    torch.manual_seed(0)
    ref_vals, ref_vecs = original(model, **data).eigenvalues(maxIter=3000, tol=1e-12, top_n=3)
    np.testing.assert_allclose(ref_vals, np.asarray(vals) / (1 + 1e-6) ** 2, rtol=1e-9)
    assert len(ref_vecs) == 3 and [t.shape for t in ref_vecs[0]] == [t.shape for t in vecs[0]]


def test_pyhessian_default_tolerance_is_loose(problem: dict[str, Any]) -> None:
    """At its defaults (tol 1e-3 on the change of the Rayleigh quotient) PyHessian's eigenvalues
    are further from the exact ones than fastspec's at the same tol (a residual bound)."""
    model, x, y = problem["model"], problem["x"], problem["y"]
    exact = problem["lm"][:3].numpy()
    ours, _ = hessian(model, LOSS, data=(x, y), cuda=False, seed=0).eigenvalues(top_n=3)
    torch.manual_seed(0)
    ref, _ = original(model, data=(x, y)).eigenvalues(top_n=3)
    err_ours = np.abs(np.asarray(ours) - exact) / np.abs(exact)
    err_ref = np.abs(np.asarray(ref) - exact) / np.abs(exact)
    assert err_ours.max() <= 1e-3
    assert err_ref.max() > err_ours.max()


def _hutchinson_sd(H: torch.Tensor, n: int) -> float:
    """Standard deviation of the mean of n Rademacher terms zᵀHz."""
    var = 2.0 * (float((H * H).sum()) - float((H.diagonal() ** 2).sum()))
    return math.sqrt(var / n)


def test_trace_is_pyhessians_list(problem: dict[str, Any]) -> None:
    model, x, y, H = problem["model"], problem["x"], problem["y"], problem["H"]
    exact = float(H.trace())
    ours = hessian(model, LOSS, data=(x, y), cuda=False, seed=1).trace(maxIter=200, tol=1e-12)
    assert isinstance(ours, list) and len(ours) == 200
    assert all(isinstance(t, float) for t in ours)
    assert abs(np.mean(ours) - exact) <= 5 * _hutchinson_sd(H, 200)
    torch.manual_seed(1)
    ref = original(model, data=(x, y)).trace(maxIter=200, tol=1e-12)
    assert len(ref) == 200 and abs(np.mean(ref) - exact) <= 5 * _hutchinson_sd(H, 200)
    # the stopping rule: stop at the first probe whose running mean moved by < tol relative
    short = hessian(model, LOSS, data=(x, y), cuda=False, seed=1).trace(maxIter=200, tol=0.05)
    means = np.cumsum(short) / np.arange(1, len(short) + 1)
    assert len(short) < 200
    assert abs(means[-1] - means[-2]) / (abs(means[-2]) + 1e-6) < 0.05
    moves = np.abs(np.diff(means[:-1])) / (np.abs(means[:-2]) + 1e-6)
    assert (moves >= 0.05).all()


def test_trace_computes_no_probe_beyond_the_stop(problem: dict[str, Any]) -> None:
    model, x, y = problem["model"], problem["x"], problem["y"]
    stops = []
    for seed in range(6):
        h = hessian(model, LOSS, data=(x, y), cuda=False, seed=seed)
        before = h.operator.num_matvecs
        terms = h.trace(maxIter=200, tol=0.05)
        assert h.operator.num_matvecs - before == len(terms)
        stops.append(len(terms))
    assert any(n % 8 for n in stops) and max(stops) < 200  # stops that blocks of 8 would overrun


def test_trace_negative_hessian_pyhessian_stops_after_two_probes() -> None:
    """PyHessian divides by (trace + 1e-6): with a negative trace its test passes at once."""
    torch.manual_seed(0)
    model = nn.Linear(6, 4).double()
    x = torch.randn(30, 6, dtype=torch.float64)

    def concave(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -((out - target) ** 2).mean()

    y = torch.randn(30, 4, dtype=torch.float64)
    H = dense_hessian(model, concave, x, y)
    exact = float(H.trace())
    assert exact < 0
    pyhessian = pytest.importorskip("pyhessian")
    torch.manual_seed(0)
    ref = pyhessian.hessian(model, concave, data=(x, y), cuda=False).trace(maxIter=100, tol=1e-3)
    assert len(ref) == 2
    ours = hessian(model, concave, data=(x, y), cuda=False, seed=0).trace(maxIter=100, tol=1e-3)
    assert len(ours) > 2
    sd = _hutchinson_sd(H, len(ours))
    assert abs(np.mean(ours) - exact) <= 5 * sd + 1e-12 * abs(exact)


def test_density_moments_match_dense_and_pyhessian(
    problem: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SLQ: per probe, Σ wθ = vᵀHv and Σ wθ² = vᵀH²v, whose means over probes estimate
    tr(H)/P and tr(H²)/P. PyHessian 0.1 calls torch.eig (removed in torch 1.13): it raises on
    current torch; with torch.eig restored (a shim over eigh) its nodes obey the same
    estimates."""
    model, x, y, H = problem["model"], problem["x"], problem["y"], problem["H"]
    P = H.shape[0]
    n_v = 30
    exact = [float(H.trace()) / P, float((H @ H).trace()) / P]
    nodes, weights = hessian(model, LOSS, data=(x, y), cuda=False, seed=0).density(iter=20, n_v=n_v)
    assert isinstance(nodes, list) and len(nodes) == n_v == len(weights)
    assert all(len(e) == len(w) == 20 for e, w in zip(nodes, weights))
    assert all(e == sorted(e) for e in nodes)
    np.testing.assert_allclose([sum(w) for w in weights], 1.0, rtol=1e-12)

    def moments(nodes: list[list[float]], weights: list[list[float]]) -> np.ndarray:
        e, w = np.asarray(nodes, dtype=np.float64), np.asarray(weights, dtype=np.float64)
        return np.stack([(w * e).sum(1), (w * e * e).sum(1)])  # [2, n_v]

    # variance of vᵀAv/P for unit Rademacher v: 2(‖A‖_F² − Σ A_ii²)/P²
    sds = [
        math.sqrt(2 * (float((A * A).sum()) - float((A.diagonal() ** 2).sum())) / n_v) / P
        for A in (H, H @ H)
    ]
    ours = moments(nodes, weights)
    for i in range(2):
        assert abs(ours[i].mean() - exact[i]) <= 5 * sds[i]
    with pytest.raises((AttributeError, RuntimeError)):
        original(model, data=(x, y)).density(iter=5, n_v=1)

    def eig(T: torch.Tensor, eigenvectors: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        w, V = torch.linalg.eigh(T)
        return torch.stack([w, torch.zeros_like(w)], 1), V

    monkeypatch.setattr(torch, "eig", eig)
    torch.manual_seed(0)
    ref_nodes, ref_weights = original(model, data=(x, y)).density(iter=20, n_v=n_v)
    ref = moments(ref_nodes, ref_weights)
    for i in range(2):
        assert abs(ref[i].mean() - exact[i]) <= 5 * sds[i]


def test_model_left_untouched(problem: dict[str, Any]) -> None:
    model, x, y = problem["model"], problem["x"], problem["y"]
    model.train()
    try:
        h = hessian(model, LOSS, data=(x, y), cuda=False, seed=0)
        h.eigenvalues(top_n=1)
        assert model.training and all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_bad_inputs(problem: dict[str, Any]) -> None:
    model, x, y = problem["model"], problem["x"], problem["y"]
    with pytest.raises(ValueError, match="exactly one"):
        hessian(model, LOSS, cuda=False)
    with pytest.raises(ValueError, match="exactly one"):
        hessian(model, LOSS, data=(x, y), dataloader=[(x, y)], cuda=False)
    with pytest.raises(ValueError, match="cuda=True"):
        hessian(model, LOSS, data=(x, y))
    with pytest.raises(TypeError, match="cuda"):
        hessian(model, LOSS, data=(x, y), cuda="no")
    with pytest.raises(TypeError, match="data"):
        hessian(model, LOSS, data=x, cuda=False)
    with pytest.raises(TypeError, match="model"):
        hessian("model", LOSS, data=(x, y), cuda=False)  # type: ignore[arg-type]
    h = hessian(model, LOSS, data=(x, y), cuda=False)
    with pytest.raises(ValueError, match="top_n"):
        h.eigenvalues(top_n=75)
    with pytest.raises(ValueError, match="top_n"):
        h.eigenvalues(top_n=0)
    with pytest.raises(TypeError, match="tol"):
        h.eigenvalues(tol="0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="maxIter"):
        h.trace(maxIter=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_v"):
        h.density(n_v=0)
    with pytest.raises(ValueError, match="num_steps"):
        h.density(iter=100)  # more Lanczos steps than P = 75


@pytest.mark.parametrize("tol", [0.0, -1.0, 2.0, 1e-3])
def test_every_tol_pyhessian_accepts_is_accepted(problem: dict[str, Any], tol: float) -> None:
    """PyHessian compares a relative change with ``tol``, so any real tol is valid there
    (tol <= 0: every iteration runs); the front door accepts the same: all maxIter trace terms
    for tol <= 0, and eigenvalues within the clamped tol."""
    model, x, y = problem["model"], problem["x"], problem["y"]
    torch.manual_seed(0)
    ref = original(model, data=(x, y))
    assert 1 <= len(ref.trace(maxIter=6, tol=tol)) <= 6  # accepted there
    ref.eigenvalues(maxIter=5, tol=tol)
    ours = hessian(model, LOSS, data=(x, y), cuda=False, seed=0)
    terms = ours.trace(maxIter=6, tol=tol)
    assert isinstance(terms, list) and 1 <= len(terms) <= 6
    if tol <= 0:
        assert len(terms) == 6  # (PyHessian may stop early on a negative trace: documented)
    vals, _ = ours.eigenvalues(tol=tol, top_n=2)
    exact = problem["lm"][:2].numpy()
    np.testing.assert_allclose(vals, exact, rtol=max(min(tol, 0.5), 1e-10) * 10)


def test_nan_data_is_one_clear_error(problem: dict[str, Any]) -> None:
    """trace() on NaN data used to return NaNs while eigenvalues() raised: now the front door
    refuses the data itself, for data= and dataloader= alike."""
    model, x, y = problem["model"], problem["x"], problem["y"]
    x = x.clone()
    x[0, 0] = math.nan
    with pytest.raises(ValueError, match="data contains NaN or inf"):
        hessian(model, LOSS, data=(x, y), cuda=False)
    with pytest.raises(ValueError, match="data contains NaN or inf"):
        hessian(model, LOSS, dataloader=[(x[:25], y[:25]), (x[25:], y[25:])], cuda=False)
