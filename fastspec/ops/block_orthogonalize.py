"""One classical Gram–Schmidt pass of a block against a basis, natively (CPU with OpenMP, CUDA).

For a basis stored as rows, ``V`` [n, P], and a block ``W`` [P, B]:

    C = V W,    W_out = W − Vᵀ C,    sq_norms = [‖W[:, j]‖², ‖W_out[:, j]‖²]

in one call that reads ``V`` twice (the update needs the whole ``C``), tiled over ``P`` so that
each tile of ``W`` stays in cache while every basis row passes over it, with both column norms
taken from the same reads. It is the projection step of block classical Gram–Schmidt with
reorthogonalisation (BCGS2: Barlow & Smoktunowicz, Numer. Math. 123, 2013) as used by
:mod:`fastspec.linalg`; the input norms feed its "twice is enough" test (Daniel, Gragg, Kaufman
& Stewart, Math. Comp. 30, 1976). Twin: :func:`fastspec.reference.block_orthogonalize`.
"""

from __future__ import annotations

import torch

from fastspec.ops._dispatch import FLOAT_DTYPES, addr, call, check_tensor, dtype_code

__all__ = ["block_orthogonalize"]


@torch.library.custom_op("fastspec::block_orthogonalize", mutates_args=())
def _block_orthogonalize(
    V: torch.Tensor, W: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, P = V.shape
    B = W.shape[1]
    out = torch.empty_like(W)
    C = torch.empty(n, B, dtype=torch.float64, device=W.device)
    sq = torch.empty(2, B, dtype=torch.float64, device=W.device)
    call(
        "block_orthogonalize", W.device, addr(V), addr(W), addr(out), addr(C), addr(sq),
        n, P, B, dtype_code(W.dtype),
    )  # fmt: skip
    return out, C, sq


@_block_orthogonalize.register_fake
def _(V, W):
    B = W.shape[1]
    C = W.new_empty(V.shape[0], B, dtype=torch.float64)
    return torch.empty_like(W), C, W.new_empty(2, B, dtype=torch.float64)


def block_orthogonalize(
    V: torch.Tensor, W: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project ``W`` once against the rows of ``V``: ``W − Vᵀ(V W)``.

    Args:
        V: ``[n, P]`` basis vectors as rows (orthonormal for a projection; ``n`` may be 0);
            float32 or float64, cpu or cuda.
        W: ``[P, B]`` block, same dtype and device as ``V``, ``B >= 1``.

    Returns:
        ``(W_out [P, B], C [n, B] float64, sq_norms [2, B] float64)``: the projected block, the
        coefficients ``V W``, and the squared column norms of ``W`` (row 0) and ``W_out``
        (row 1). float32 data is accumulated in float64.
    """
    W = check_tensor("W", W, dtypes=FLOAT_DTYPES, ndim=2)
    V = check_tensor("V", V, dtypes=FLOAT_DTYPES, ndim=2, device=W.device, min_numel=0)
    if V.dtype != W.dtype:
        raise TypeError(f"V must have the dtype of W ({W.dtype}), got {V.dtype}")
    if V.shape[1] != W.shape[0]:
        raise ValueError(
            f"V must be [n, P] with P = W.shape[0] = {W.shape[0]}, got shape {tuple(V.shape)}"
        )
    return _block_orthogonalize(V, W)
