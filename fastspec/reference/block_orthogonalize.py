"""Pure-torch twin of :func:`fastspec.ops.block_orthogonalize`: the same pass with two GEMMs."""

from __future__ import annotations

import torch


def block_orthogonalize(
    V: torch.Tensor, W: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One classical Gram–Schmidt pass of ``W`` [P, B] against the rows of ``V`` [n, P].

    Returns:
        ``(W − Vᵀ C, C = V W, sq_norms)`` with ``C`` and ``sq_norms`` ``[2, B]`` (squared
        column norms of ``W`` and of the result) in float64; float32 data is computed in
        float64 and the result rounded once, like the native kernels.
    """
    V64, W64 = V.to(torch.float64), W.to(torch.float64)
    C = V64 @ W64
    out = torch.addmm(W64, V64.mT, C, alpha=-1.0).to(W.dtype)
    sq = torch.stack([(W64 * W64).sum(0), (out.to(torch.float64) ** 2).sum(0)])
    return out, C, sq
