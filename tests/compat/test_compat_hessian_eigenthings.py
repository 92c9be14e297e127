"""fastspec.compat.hessian_eigenthings against hessian-eigenthings 1.0.0a5 (the installed original:
its HessianOperator with deflated power iteration and Lanczos, the algorithms behind the classic
``compute_hessian_eigenthings``) and a dense Hessian (oracle)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from curvature_models import batches, dense_hessian, make_data, make_model
from torch import nn

from fastspec.compat.hessian_eigenthings import compute_hessian_eigenthings

LOSS = nn.CrossEntropyLoss()


@pytest.fixture(scope="module")
def problem() -> dict[str, Any]:
    model = make_model("mlp")  # P = 75, float64, eval mode
    x, y = make_data("mlp", n=48)
    H = dense_hessian(model, LOSS, x, y)
    evals = torch.linalg.eigvalsh(H)
    return {"model": model, "x": x, "y": y, "H": H, "evals": evals}


def _check_pairs(H: torch.Tensor, vals: np.ndarray, vecs: np.ndarray, tol: float) -> None:
    V = torch.from_numpy(vecs).T  # [P, K]
    lam = torch.from_numpy(vals)
    res = torch.linalg.norm(H @ V - V * lam, dim=0) / lam.abs()
    assert float(res.max()) <= tol
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-10)


def test_power_iter_mode(problem: dict[str, Any]) -> None:
    """Classic return: (eigenvals [K], eigenvecs [K, P]) numpy, by descending magnitude, equal to
    the dense eigenvalues and to hessian-eigenthings' deflated power iteration run tight."""
    model, x, y, H = problem["model"], problem["x"], problem["y"], problem["H"]
    loader = batches(x, y, 16)
    vals, vecs = compute_hessian_eigenthings(
        model, loader, LOSS, num_eigenthings=4, use_gpu=False, power_iter_err_threshold=1e-8, seed=0
    )
    assert isinstance(vals, np.ndarray) and isinstance(vecs, np.ndarray)
    assert vals.shape == (4,) and vecs.shape == (4, H.shape[0]) and vals.dtype == np.float64
    evals = problem["evals"]
    lm = evals[evals.abs().argsort(descending=True)][:4].numpy()
    np.testing.assert_allclose(vals, lm, rtol=1e-8)
    _check_pairs(H, vals, vecs, 1e-7)
    he = pytest.importorskip("hessian_eigenthings")
    op = he.HessianOperator(model, [(x, y)], he.supervised_loss(LOSS))  # equal batches: same H
    ref = he.deflated_power_iteration(op, k=2, max_iter=1000, tol=1e-7, seed=0)
    assert bool(ref.converged.all())
    np.testing.assert_allclose(ref.eigenvalues.numpy(), vals[:2], rtol=1e-10)


def test_lanczos_mode(problem: dict[str, Any]) -> None:
    """ARPACK's order (ascending) for which='LA' and 'SA'; equal to hessian-eigenthings' Lanczos
    (40 fully reorthogonalised steps)."""
    model, x, y, H = problem["model"], problem["x"], problem["y"], problem["H"]
    evals = problem["evals"]
    loader = batches(x, y, 16)
    top, vecs = compute_hessian_eigenthings(
        model, loader, LOSS, num_eigenthings=5, mode="lanczos", use_gpu=False, which="LA", seed=0
    )
    np.testing.assert_allclose(top, evals[-5:].numpy(), rtol=1e-9)
    assert (np.diff(top) >= 0).all()
    _check_pairs(H, top, vecs, 1e-5)
    bottom, _ = compute_hessian_eigenthings(
        model, loader, LOSS, num_eigenthings=3, mode="lanczos", use_gpu=False, which="SA", seed=0
    )
    np.testing.assert_allclose(bottom, evals[:3].numpy(), rtol=1e-6, atol=1e-10)
    v0 = np.ones(H.shape[0])
    again, _ = compute_hessian_eigenthings(
        model, loader, LOSS, num_eigenthings=5, mode="lanczos", use_gpu=False, which="LA",
        init_vec=v0, seed=0,
    )  # fmt: skip
    np.testing.assert_allclose(again, top, rtol=1e-9)
    he = pytest.importorskip("hessian_eigenthings")
    op = he.HessianOperator(model, [(x, y)], he.supervised_loss(LOSS))  # equal batches: same H
    ref = he.lanczos(op, k=5, max_iter=40, which="LA", reorthogonalize=True, seed=0)
    np.testing.assert_allclose(np.sort(ref.eigenvalues.numpy()), top, rtol=1e-8)


def test_uneven_batches(problem: dict[str, Any]) -> None:
    """48 samples in batches of 20: hessian-eigenthings averages the three batch Hessians with
    equal weights (20, 20 and 8 samples), which is not the full-data Hessian; fastspec's is."""
    model, x, y, H = problem["model"], problem["x"], problem["y"], problem["H"]
    loader = batches(x, y, 20)
    vals, _ = compute_hessian_eigenthings(
        model, loader, LOSS, num_eigenthings=3, use_gpu=False, power_iter_err_threshold=1e-9, seed=0
    )
    evals = problem["evals"]
    np.testing.assert_allclose(
        vals, evals[evals.abs().argsort(descending=True)][:3].numpy(), rtol=1e-8
    )
    he = pytest.importorskip("hessian_eigenthings")
    op = he.HessianOperator(model, loader, he.supervised_loss(LOSS))
    mean_of_batches = sum(dense_hessian(model, LOSS, xb, yb) for xb, yb in loader) / len(loader)
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Hv = op.matvec(v)
    torch.testing.assert_close(Hv, mean_of_batches @ v, rtol=1e-10, atol=1e-12)
    assert float((Hv - H @ v).norm()) > 1e-2 * float((H @ v).norm())
    mb = torch.linalg.eigvalsh(mean_of_batches)
    theirs = mb[mb.abs().argsort(descending=True)][:3].numpy()
    assert np.abs(theirs / vals - 1).max() > 1e-2


def test_first_batch_only(problem: dict[str, Any]) -> None:
    model, x, y = problem["model"], problem["x"], problem["y"]
    loader = batches(x, y, 16)
    vals, _ = compute_hessian_eigenthings(
        model, loader, LOSS, num_eigenthings=2, full_dataset=False, use_gpu=False,
        power_iter_err_threshold=1e-9, seed=0,
    )  # fmt: skip
    first = torch.linalg.eigvalsh(dense_hessian(model, LOSS, x[:16], y[:16]))
    np.testing.assert_allclose(
        vals, first[first.abs().argsort(descending=True)][:2].numpy(), rtol=1e-8
    )


def test_bad_inputs(problem: dict[str, Any]) -> None:
    model, x, y = problem["model"], problem["x"], problem["y"]
    loader = batches(x, y, 16)

    def call(**kwargs: Any) -> Any:
        return compute_hessian_eigenthings(model, loader, LOSS, **{"use_gpu": False, **kwargs})

    with pytest.raises(ValueError, match="use_gpu=True"):
        compute_hessian_eigenthings(model, loader, LOSS)
    with pytest.raises(ValueError, match="fp16"):
        call(fp16=True)
    with pytest.raises(ValueError, match="mode"):
        call(mode="arnoldi")
    with pytest.raises(TypeError, match="max_steps"):
        call(max_steps=10)  # a lanczos option given to power_iter
    with pytest.raises(ValueError, match="which"):
        call(mode="lanczos", which="SM")
    with pytest.raises(ValueError, match="num_eigenthings"):
        call(num_eigenthings=75)
    with pytest.raises(TypeError, match="num_eigenthings"):
        call(num_eigenthings=2.0)
    with pytest.raises(ValueError, match="power_iter_err_threshold"):
        call(power_iter_err_threshold=-1.0)
    with pytest.raises(ValueError, match="init_vec"):
        call(mode="lanczos", init_vec=np.ones(3))
    with pytest.raises(ValueError, match="max_possible_gpu_samples"):
        call(max_possible_gpu_samples=0)
