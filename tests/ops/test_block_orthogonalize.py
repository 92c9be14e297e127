"""fastspec.ops.block_orthogonalize: native kernels against the pure-torch twin and the math."""

from __future__ import annotations

import pytest
import torch

from fastspec import reference
from fastspec.ops import block_orthogonalize


def basis_rows(n: int, P: int, *, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, n, generator=gen, dtype=torch.float64))
    return Q.mT.contiguous().to(dtype)


def block(P: int, B: int, *, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(P, B, generator=gen, dtype=torch.float64).to(dtype)


# P not a multiple of the CPU tile (256) nor of the CUDA chunk; n = 0 is the empty basis
SHAPES = [(0, 300, 3), (1, 257, 1), (13, 1001, 4), (40, 3000, 9), (7, 5000, 17)]


@pytest.mark.parametrize(("n", "P", "B"), SHAPES)
def test_native_matches_reference(n, P, B, device: torch.device, dtype: torch.dtype) -> None:
    V = basis_rows(n, P, seed=n, dtype=dtype).to(device)
    W = block(P, B, seed=P, dtype=dtype).to(device)
    out, C, sq = block_orthogonalize(V, W)
    ref_out, ref_C, ref_sq = reference.block_orthogonalize(V, W)
    assert out.dtype == dtype and out.shape == (P, B) and out.device == W.device
    assert C.dtype == sq.dtype == torch.float64 and C.shape == (n, B) and sq.shape == (2, B)
    # both accumulate in float64: float32 results differ by one rounding of the output
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    torch.testing.assert_close(C, ref_C, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sq, ref_sq, rtol=tol, atol=tol)


def test_is_a_projection() -> None:
    """``W_out`` is orthogonal to the basis and ``W = W_out + Vᵀ C`` (independent of the twin)."""
    V = basis_rows(30, 2000, seed=1)
    W = block(2000, 5, seed=2) + V.mT @ torch.randn(30, 5, dtype=torch.float64)
    out, C, sq = block_orthogonalize(V, W)
    assert float((V @ out).abs().max()) <= 1e-12 * float(W.abs().max())
    torch.testing.assert_close(out + V.mT @ C, W, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sq[0], (W * W).sum(0))
    torch.testing.assert_close(sq[1], (out * out).sum(0))


def test_strided_inputs_are_made_contiguous() -> None:
    V = basis_rows(6, 700, seed=3)
    W = block(700, 8, seed=4)
    a = block_orthogonalize(V[:, :].mT.contiguous().mT, W[:, ::2])
    b = block_orthogonalize(V, W[:, ::2].contiguous())
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_opcheck() -> None:
    from fastspec.ops.block_orthogonalize import _block_orthogonalize

    torch.library.opcheck(_block_orthogonalize, (basis_rows(5, 300, seed=5), block(300, 3, seed=6)))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: (basis_rows(3, 50, seed=0), block(50, 2, seed=0).numpy()), TypeError, "W must be a torch.Tensor"),
        (lambda: (basis_rows(3, 50, seed=0).float(), block(50, 2, seed=0)), TypeError, "V must have the dtype of W"),
        (lambda: (basis_rows(3, 50, seed=0), block(50, 2, seed=0).to(torch.int64)), TypeError, "W must have dtype"),
        (lambda: (basis_rows(3, 50, seed=0), block(50, 2, seed=0)[:, 0]), ValueError, "W must be 2-dimensional"),
        (lambda: (basis_rows(3, 50, seed=0)[0], block(50, 2, seed=0)), ValueError, "V must be 2-dimensional"),
        (lambda: (basis_rows(3, 50, seed=0), block(50, 2, seed=0)[:, :0]), ValueError, "W must have at least 1"),
        (lambda: (basis_rows(3, 60, seed=0), block(50, 2, seed=0)), ValueError, r"V must be \[n, P\] with P"),
    ],
)  # fmt: skip
def test_bad_inputs(make, error, match) -> None:  # type: ignore[no-untyped-def]
    V, W = make()
    with pytest.raises(error, match=match):
        block_orthogonalize(V, W)
