"""Pure-torch twin of :func:`fastspec.ops.seq_gram`: a Gram of per-sample gradients, not formed.

For a linear map applied at positions t with inputs ``a[i, t]`` and output gradients ``g[i, t]``,
sample i's weight gradient is G_i = Σ_t g_it a_itᵀ, and

    ⟨G_i, G_j⟩_F = Σ_{t,s} (a_it · a_js) (g_it · g_js).

This twin forms the two position-pair Gram matrices of a tile of rows with two GEMMs and
reduces their elementwise product; the tile is bounded so that the ``[rows·T, N_j·S]``
intermediates stay below ``max_elements``.
"""

from __future__ import annotations

import torch

__all__ = ["seq_gram"]


def seq_gram(
    a_i: torch.Tensor,
    g_i: torch.Tensor,
    a_j: torch.Tensor,
    g_j: torch.Tensor,
    *,
    max_elements: int = 2**24,
) -> torch.Tensor:
    """K[i, j] = Σ_{t,s} (a_i[i, t] · a_j[j, s]) (g_i[i, t] · g_j[j, s]).

    Args:
        a_i: [N_i, T, D_in] inputs of the first set of samples.
        g_i: [N_i, T, D_out] output gradients of the first set.
        a_j: [N_j, S, D_in] inputs of the second set.
        g_j: [N_j, S, D_out] output gradients of the second set.
        max_elements: bound on each ``[rows·T, N_j·S]`` intermediate.

    Returns:
        [N_i, N_j] in the inputs' dtype.
    """
    n_i, T, d_in = a_i.shape
    n_j, S, d_out = g_j.shape
    out = torch.empty(n_i, n_j, dtype=a_i.dtype, device=a_i.device)
    if n_i == 0 or n_j == 0:
        return out
    a_right = a_j.reshape(n_j * S, d_in).T
    g_right = g_j.reshape(n_j * S, d_out).T
    rows = max(1, max_elements // max(1, T * n_j * S))
    for lo in range(0, n_i, rows):
        hi = min(n_i, lo + rows)
        aa = a_i[lo:hi].reshape(-1, d_in) @ a_right  # [rows·T, N_j·S]
        aa *= g_i[lo:hi].reshape(-1, g_i.shape[-1]) @ g_right
        out[lo:hi] = aa.view(hi - lo, T, n_j, S).sum(dim=(1, 3))
    return out
