"""Shared builders for the linalg tests: matrices and implicit operators with known spectra."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fastspec.linalg import LinearOperator


def dense_with_spectrum(
    evals: torch.Tensor, *, seed: int = 0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``Q diag(evals) Qᵀ`` with a random orthogonal ``Q``, exactly symmetric."""
    gen = torch.Generator().manual_seed(seed)
    P = evals.shape[0]
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=gen, dtype=torch.float64))
    A = (Q * evals.to(torch.float64)) @ Q.T
    return (0.5 * (A + A.T)).to(dtype)


class HouseholderDiag(LinearOperator):
    """``A = H D Hᵀ`` with ``H`` a product of ``r`` Householder reflections, never formed.

    The spectrum is ``d`` exactly; eigenvectors are dense. ``O(P (r + 1))`` per column.
    """

    def __init__(
        self, d: torch.Tensor, *, r: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        P = d.shape[0]
        self.shape = (P, P)
        self.dtype = dtype
        self.device = torch.device("cpu")
        self.d = d.to(dtype).unsqueeze(1)
        U = torch.randn(P, r, generator=gen, dtype=torch.float64)
        self.U = (U / U.norm(dim=0)).to(dtype).T.contiguous()  # [r, P]
        self.calls = 0

    def _reflect(self, V: torch.Tensor, order: range) -> torch.Tensor:
        for i in order:
            u = self.U[i]
            V = V - 2.0 * torch.outer(u, u @ V)
        return V

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.calls += V.shape[1]
        r = self.U.shape[0]
        W = self._reflect(V, range(r))
        return self._reflect(self.d * W, range(r - 1, -1, -1))


@pytest.fixture
def spectrum_matrix() -> Callable[..., torch.Tensor]:
    return dense_with_spectrum


@pytest.fixture
def householder_diag() -> type[HouseholderDiag]:
    return HouseholderDiag


def expected_eigenvalues(evals: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """The ``k`` eigenvalues ``eigsh`` must return, in its documented order."""
    e = torch.sort(evals.to(torch.float64), descending=True).values
    if which == "LA":
        return e[:k]
    if which == "SA":
        return e.flip(0)[:k]
    if which == "LM":
        return e[torch.argsort(e.abs(), descending=True, stable=True)][:k]
    hi, lo = (k + 1) // 2, k // 2
    return torch.cat([e[:hi], e[e.shape[0] - lo :]])


@pytest.fixture
def expected() -> Callable[[torch.Tensor, int, str], torch.Tensor]:
    return expected_eigenvalues
