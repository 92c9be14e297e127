"""Copies of a repeated eigenvalue beyond what one start block can show are found, not hidden.

A block Krylov space from a start block of ``B`` vectors holds at most ``B`` vectors of one
eigenspace; more copies come only from rounding or a breakdown. The default block and the
fresh-start confirmation must still return every wanted copy (the oracle is dense ``eigh``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastspec.linalg import eigsh
from fastspec.linalg.lanczos import restart_locking

P = 600


def with_spectrum(evals: np.ndarray, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=gen, dtype=torch.float64))
    A = (Q * torch.as_tensor(evals, dtype=torch.float64)) @ Q.T
    return 0.5 * (A + A.T)


def tail(n: int) -> np.ndarray:
    return np.linspace(0.5, 0.0, n)


@pytest.mark.parametrize(
    ("name", "evals", "k"),
    [
        ("twelve copies of 1, then 0.9", np.r_[np.ones(12), 0.9, tail(P - 13)], 10),
        ("a cluster 1 + i·1e-10 of 8", np.r_[1 + 1e-10 * np.arange(8), 0.9, tail(P - 9)], 8),
        ("a double eigenvalue, k = 3", np.r_[1.0, 1.0, 0.9, 0.85, tail(P - 4)], 3),
        ("a triple eigenvalue, k = 4", np.r_[1.0, 1.0, 1.0, 0.9, 0.85, tail(P - 5)], 4),
    ],
)
@pytest.mark.parametrize("block_size", [None, 1])
def test_every_copy_is_found(name: str, evals: np.ndarray, k: int, block_size: int | None):
    A = with_spectrum(evals)
    exact = torch.linalg.eigvalsh(A).flip(0)[:k]
    for seed in range(3):
        res = eigsh(A, k, seed=seed, block_size=block_size)
        assert res.all_converged, name
        torch.testing.assert_close(res.eigenvalues, exact, rtol=1e-6, atol=0, msg=name)


@pytest.mark.parametrize(("block_size", "starts"), [(None, 0), (1, 1)])
def test_confirmation_only_when_copies_may_hide(monkeypatch, block_size, starts):
    """Distinct wanted values and ``B >= 2``: no confirmation start; ``B = 1``: one."""
    calls = []
    fresh_start = restart_locking.fresh_start

    def counted(*args):
        calls.append(1)
        fresh_start(*args)

    monkeypatch.setattr(restart_locking, "fresh_start", counted)
    A = with_spectrum(np.r_[1.0, 0.9, 0.8, 0.7, tail(P - 4)])
    res = eigsh(A, 3, seed=0, block_size=block_size)
    assert res.all_converged and len(calls) == starts
