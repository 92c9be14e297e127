"""block_orthogonalize: the native Gram–Schmidt pass against its torch twin and the torch paths.

pytest benchmarks/bench_block_orthogonalize.py                             # timings
pytest benchmarks/bench_block_orthogonalize.py --smoke --benchmark-disable # CI: answers only

The problem is eigsh's on the digits-MLP Hessian: a basis of n rows of length P = 3·10^5
(float64) against a block of B columns.
"""

from __future__ import annotations

import pytest
import torch

from fastspec import reference
from fastspec.ops import block_orthogonalize


def torch_path(V: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Two BLAS calls on the block as columns (what eigsh did before it kept blocks as rows)."""
    return torch.addmm(W, V.mT, V @ W, alpha=-1.0)


def torch_rows(V: torch.Tensor, Wr: torch.Tensor) -> torch.Tensor:
    """Two BLAS calls on the block as rows ``[B, P]``: eigsh's full pass
    (``fastspec.linalg._kernels.project_rows``)."""
    return torch.addmm(Wr, Wr @ V.mT, V, alpha=-1.0)


@pytest.fixture(
    params=[(200, 1), (200, 2), (200, 4), (200, 8), (50, 16)], ids=lambda p: f"n{p[0]}-B{p[1]}"
)
def problem(request: pytest.FixtureRequest, smoke: bool, device: torch.device):  # type: ignore[no-untyped-def]
    n, B = request.param
    P = 3_000 if smoke else 300_000
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(n, P, generator=gen, dtype=torch.float64) / P**0.5
    W = torch.randn(P, B, generator=gen, dtype=torch.float64)
    return V.to(device), W.to(device)


@pytest.mark.parametrize("variant", ["native", "torch_path", "torch_rows", "torch_reference"])
def test_block_orthogonalize(benchmark, synchronized, problem, variant: str) -> None:  # type: ignore[no-untyped-def]
    V, W = problem
    Wr = W.mT.contiguous()
    fn = {
        "native": lambda: block_orthogonalize(V, W)[0],
        "torch_path": lambda: torch_path(V, W),
        "torch_rows": lambda: torch_rows(V, Wr).mT,
        "torch_reference": lambda: reference.block_orthogonalize(V, W)[0],
    }[variant]
    out = benchmark(synchronized(fn, W.device))
    torch.testing.assert_close(out, torch_path(V, W), rtol=1e-10, atol=1e-10)
