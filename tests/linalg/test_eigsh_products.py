"""eigsh's one-pass orthogonalisation test (DGKS) and residuals from stored products."""

from __future__ import annotations

import pytest
import torch

from fastspec.linalg import eigsh
from fastspec.linalg._random import make_generator
from fastspec.linalg.lanczos import convergence
from fastspec.linalg.lanczos.orthogonalize import orthonormalize
from fastspec.linalg.lanczos.result import Reporter
from fastspec.linalg.lanczos.solver import BlockLanczos
from fastspec.linalg.lanczos.state import LanczosState
from fastspec.linalg.operator import aslinearoperator


def power_law(P: int, s: float) -> torch.Tensor:
    return torch.arange(1, P + 1, dtype=torch.float64) ** (-s)


@pytest.mark.parametrize(("b", "which"), [(1, "LA"), (4, "LA"), (3, "SA")])
def test_basis_stays_orthonormal_when_passes_are_skipped(spectrum_matrix, b, which) -> None:
    """‖VᵀV − I‖ of the whole Lanczos basis at BCGS2's level, with most second passes skipped."""
    evals = power_law(500, 2.0) * (1.0 if which == "LA" else -1.0)
    A = aslinearoperator(spectrum_matrix(evals, seed=3))
    st = LanczosState(
        A, 12, which=which, tol=1e-10, b=b, M=60, max_restarts=50, gen=make_generator(0),
        report=Reporter(False, 12), store_products=True,
    )  # fmt: skip
    solver = BlockLanczos(st, None)
    worst = []

    def checked() -> convergence.Check:  # the basis at every convergence check
        n = st.s.n_lock + st.s.m + b
        V = st.V[:n].to(torch.float64)
        worst.append(float((V @ V.mT - torch.eye(n, dtype=torch.float64)).abs().max()))
        return convergence.check(st)

    solver.check = checked  # type: ignore[method-assign]
    res = solver.run(return_eigenvectors=False)
    assert res.all_converged
    steps = st.s.num_matvecs // b
    assert st.s.num_single_pass >= steps // 2  # the test does skip (where the time goes)
    assert max(worst) < 1e-13, max(worst)


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_stored_products_give_the_recomputed_answer(spectrum_matrix, which) -> None:
    A = spectrum_matrix(power_law(600, 1.0) * (1.0 if which == "LA" else -1.0), seed=4)
    k = 15
    kw = dict(which=which, tol=1e-8, seed=0, block_size=2, return_eigenvectors=True)
    stored = eigsh(A, k, store_products=True, **kw)
    fresh = eigsh(A, k, store_products=False, **kw)
    assert stored.all_converged and fresh.all_converged
    torch.testing.assert_close(stored.eigenvalues, fresh.eigenvalues, rtol=1e-10, atol=0)
    assert fresh.num_matvecs - stored.num_matvecs >= k  # the final products were saved
    # the reported residuals are those of the returned vectors (independent float64 oracle)
    V, lam = stored.eigenvectors, stored.eigenvalues
    assert V is not None
    direct = torch.linalg.vector_norm(A @ V - V * lam, dim=0) / lam.abs()
    assert bool(((stored.residuals - direct).abs() <= 1e-3 * direct + 1e-13).all())
    assert bool((direct <= 1e-8).all())


def test_store_products_must_be_bool(spectrum_matrix) -> None:
    A = spectrum_matrix(power_law(200, 1.0))
    with pytest.raises(TypeError, match="store_products must be True or False"):
        eigsh(A, 3, store_products=1)


def test_second_pass_runs_when_one_pass_is_not_enough(spectrum_matrix) -> None:
    """A block almost inside ``range(V)``: one pass leaves ``O(ε‖W‖/‖(I−VVᵀ)W‖)`` behind, so
    the test must ask for the second pass, and the result is orthogonal to ``V`` to ``O(ε)``."""
    A = aslinearoperator(spectrum_matrix(power_law(400, 1.0)))
    st = LanczosState(
        A, 4, which="LA", tol=1e-8, b=3, M=40, max_restarts=5, gen=make_generator(1),
        report=Reporter(False, 4), store_products=False,
    )  # fmt: skip
    BlockLanczos(st, None)
    gen = torch.Generator().manual_seed(2)
    Q, _ = torch.linalg.qr(torch.randn(400, 30, generator=gen, dtype=torch.float64))
    st.V[:30] = Q.mT
    W = Q @ torch.randn(30, 3, generator=gen, dtype=torch.float64)
    W = W + 1e-9 * torch.randn(400, 3, generator=gen, dtype=torch.float64)
    before = st.s.num_single_pass
    Qn, C, _, n_bad = orthonormalize(st, W.mT.contiguous(), torch.linalg.matrix_norm(W), 30)
    assert n_bad == 0 and st.s.num_single_pass == before
    assert float((Q.mT @ Qn.mT).abs().max()) < 1e-14
    torch.testing.assert_close(Qn @ Qn.mT, torch.eye(3, dtype=torch.float64), atol=1e-14, rtol=0)
    torch.testing.assert_close(Qn.mT @ C, W - Q @ (Q.mT @ W), atol=1e-15, rtol=0)
