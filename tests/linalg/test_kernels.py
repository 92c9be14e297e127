"""The Krylov vector kernels on blocks of rows, against dense column-form oracles."""

from __future__ import annotations

import pytest
import torch

from fastspec.linalg import _kernels, eigsh
from fastspec.linalg.operator import CallableOperator

P = 3000


def orthonormal_rows(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, n, generator=gen, dtype=torch.float64))
    return Q.mT.contiguous()


@pytest.mark.parametrize("n", [0, 1, 37])
def test_full_pass_is_classical_gram_schmidt(n: int) -> None:
    V = orthonormal_rows(n, 0)
    W = torch.randn(3, P, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, sq = _kernels.project_rows(V, W)
    Wc = W.mT
    torch.testing.assert_close(out.mT, Wc - V.mT @ (V @ Wc), atol=1e-13, rtol=0)
    torch.testing.assert_close(sq, (W * W).sum(1), atol=0, rtol=1e-14)


def test_selective_pass_updates_only_the_rows_that_matter() -> None:
    n, tau = 40, 1e-6
    V = orthonormal_rows(n, 2)
    gen = torch.Generator().manual_seed(3)
    coef = 1e-2 * tau * torch.randn(2, n, generator=gen, dtype=torch.float64)  # below tau
    big = [3, 4, 17, 30]
    coef[0, big] = torch.tensor([0.5, -0.2, 0.1, 0.3], dtype=torch.float64)
    rest = torch.randn(2, P, generator=gen, dtype=torch.float64)
    rest = rest - (rest @ V.mT) @ V
    W = coef @ V + rest
    out, _ = _kernels.project_rows(V, W, skip_below=tau)
    left = out @ V.mT  # [2, n] components left along each row
    norms = W.norm(dim=1, keepdim=True)
    assert float((left.abs() / norms).max()) <= tau
    # rows 3 and 4 form one run, 17 and 30 one each; every other row is left untouched
    runs = [(3, 5), (17, 18), (30, 31)]
    assert _kernels._runs(big) == runs
    touched = torch.zeros(n, dtype=torch.bool)
    for lo, hi in runs:
        touched[lo:hi] = True
        assert float((left[:, lo:hi].abs() / norms).max()) < 1e-15
    # the small components are still there (rounding is ~1e-14, they are ~1e-8)
    torch.testing.assert_close(left[:, ~touched], coef[:, ~touched], atol=1e-12, rtol=0)


def test_selective_pass_with_nothing_to_remove_returns_the_block() -> None:
    V = orthonormal_rows(10, 4)
    W = torch.randn(2, P, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    W = W - (W @ V.mT) @ V
    out, _ = _kernels.project_rows(V, W, skip_below=1e-12)
    assert out is W


@pytest.mark.parametrize(
    ("rows", "runs"),
    [
        ([], []),
        ([5], [(5, 6)]),
        ([1, 2, 3], [(1, 4)]),
        ([0, 8], [(0, 9)]),  # a gap of 7 rows is read through
        ([0, 10], [(0, 1), (10, 11)]),  # a gap of 9 rows starts a new run
    ],
)
def test_runs(rows: list[int], runs: list[tuple[int, int]]) -> None:
    assert _kernels._runs(rows) == runs


def test_three_term_and_qr_on_rows_match_the_column_forms() -> None:
    gen = torch.Generator().manual_seed(6)
    V = orthonormal_rows(6, 7)
    Q, Qp = V[4:6], V[:4]
    C = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    W = torch.randn(2, P, generator=gen, dtype=torch.float64)
    out, alpha = _kernels.three_term(W, Q, Qp, C)
    Wc = W.mT - Qp.mT @ C.mT
    a = Q @ Wc
    torch.testing.assert_close(alpha, a, atol=1e-12, rtol=0)
    torch.testing.assert_close(out.mT, Wc - Q.mT @ a, atol=1e-12, rtol=0)
    Qr, R = _kernels.block_qr(out)
    assert Qr.is_contiguous() and Qr.shape == (2, P)
    torch.testing.assert_close(Qr @ Qr.mT, torch.eye(2, dtype=torch.float64), atol=1e-14, rtol=0)
    torch.testing.assert_close(R.mT @ Qr, out, atol=1e-12, rtol=0)
    assert bool((R.tril(-1) == 0).all())


def test_callables_get_contiguous_blocks_from_eigsh() -> None:
    """eigsh hands operators a transposed view of its basis rows; the adapter of user code
    makes it contiguous, so a function that needs ``view`` still works."""
    d = torch.linspace(1.0, 2.0, 200, dtype=torch.float64)

    def fn(V: torch.Tensor) -> torch.Tensor:
        return (d.view(-1, 1) * V.view(200, -1)).view(V.shape)

    op = CallableOperator(fn, shape=(200, 200), dtype=torch.float64)
    res = eigsh(op, 3, tol=1e-10, seed=0, block_size=2)
    assert res.all_converged
    torch.testing.assert_close(res.eigenvalues, d.flip(0)[:3], atol=1e-10, rtol=0)


def test_selective_pass_with_every_row_selected_is_the_full_pass() -> None:
    V = orthonormal_rows(20, 8)
    W = torch.randn(2, P, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    expected, _ = _kernels.project_rows(V, W)
    sel, _ = _kernels.project_rows(V, W, skip_below=1e-12)
    torch.testing.assert_close(sel, expected, atol=1e-13, rtol=0)
    torch.testing.assert_close(
        V @ sel.mT, torch.zeros(20, 2, dtype=torch.float64), atol=1e-12, rtol=0
    )
