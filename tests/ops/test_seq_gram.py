"""seq_gram: native kernels against the pure-torch twin and an explicit per-sample-gradient
oracle, over devices x dtypes; bad inputs."""

from __future__ import annotations

import pytest
import torch

from fastspec import reference
from fastspec.ops import seq_gram
from fastspec.ops.seq_gram import _seq_gram

SHAPES = [(5, 3, 2, 7, 5), (17, 1, 1, 9, 3), (9, 5, 6, 33, 17), (3, 9, 4, 1, 1)]


def inputs(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, seed: int = 0):  # type: ignore[no-untyped-def]
    n, T, S, d_in, d_out = shape
    g = torch.Generator().manual_seed(seed)

    def r(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=g, dtype=torch.float64).to(device, dtype)

    return r(n, T, d_in), r(n, T, d_out), r(n + 2, S, d_in), r(n + 2, S, d_out)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_native_matches_reference_and_explicit_gradients(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> None:
    a_i, g_i, a_j, g_j = inputs(shape, device, dtype)
    got = seq_gram(a_i, g_i, a_j, g_j)
    assert got.shape == (a_i.shape[0], a_j.shape[0]) and got.dtype == dtype
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(got, reference.seq_gram(a_i, g_i, a_j, g_j), **tol)
    # oracle: materialised per-sample weight gradients G_i = Σ_t g_it a_itᵀ, then ⟨G_i, G_j⟩
    Gi = torch.einsum("nto,nti->noi", g_i.double(), a_i.double()).flatten(1)
    Gj = torch.einsum("nto,nti->noi", g_j.double(), a_j.double()).flatten(1)
    torch.testing.assert_close(got.double(), Gi @ Gj.T, **tol)


def test_symmetric_and_strided_inputs() -> None:
    a, g, _, _ = inputs((6, 4, 4, 10, 3), torch.device("cpu"), torch.float64)
    K = seq_gram(a, g, a, g)
    torch.testing.assert_close(K, K.T, rtol=1e-14, atol=1e-14)
    wide = torch.randn(6, 4, 20, dtype=torch.float64)[:, :, ::2]  # non-contiguous
    torch.testing.assert_close(
        seq_gram(wide, g, wide, g), reference.seq_gram(wide, g, wide, g), rtol=1e-12, atol=1e-12
    )


def test_empty_sets() -> None:
    a, g, b, h = inputs((4, 2, 3, 5, 2), torch.device("cpu"), torch.float64)
    assert seq_gram(a[:0], g[:0], b, h).shape == (0, 6)
    assert seq_gram(a, g, b[:0], h[:0]).shape == (4, 0)


def test_opcheck() -> None:
    a, g, b, h = inputs((4, 2, 3, 5, 2), torch.device("cpu"), torch.float64)
    torch.library.opcheck(_seq_gram, (a, g, b, h))


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda x: (x[0].float(), *x[1:]), TypeError, "g_i must have dtype float32"),
        (lambda x: (x[0].long(), *x[1:]), TypeError, "a_i must have dtype"),
        (lambda x: (x[0][0], *x[1:]), ValueError, "a_i must be 3-dimensional"),
        (lambda x: (x[0], x[1][:, :1], *x[2:]), ValueError, "match a_i and a_j"),
        (lambda x: (*x[:2], x[2][..., :2], x[3]), ValueError, "feature sizes"),
        (lambda x: (x[0], x[1], x[2], x[3].float()), TypeError, "g_j must have dtype"),
        (lambda x: (x[0].tolist(), *x[1:]), TypeError, "a_i must be a torch.Tensor"),
    ],
)
def test_bad_inputs(change, error, match) -> None:  # type: ignore[no-untyped-def]
    x = inputs((4, 2, 3, 5, 2), torch.device("cpu"), torch.float64)
    with pytest.raises(error, match=match):
        seq_gram(*change(x))
