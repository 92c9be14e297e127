"""The Gram matrix of per-sample gradients of a weight used at several positions, natively.

CPU with OpenMP, CUDA; neither the gradients nor the [N_i, N_j, T, S] position-pair products are
formed.

    out[i, j] = Σ_{t,s} (a_i[i, t] · a_j[j, s]) (g_i[i, t] · g_j[j, s])  = ⟨G_i, G_j⟩_F,
    G_i = Σ_t g_i[i, t] a_i[i, t]ᵀ

(the per-sample gradient of a Linear weight with inputs a and output gradients g; see
:mod:`fastspec.grads.features`). Twin: :mod:`fastspec.reference.seq_gram`.

Reference: Z. Xie et al., *On the Overlooked Structure of Stochastic Gradients*, NeurIPS 2023;
the Gram identity is the sequence form of I. Goodfellow, *Efficient per-example gradient
computations*, arXiv:1510.01799 (2015).
"""

from __future__ import annotations

import torch

from fastspec.ops._dispatch import FLOAT_DTYPES, call, check_tensor, run_op

__all__ = ["seq_gram"]


@torch.library.custom_op("fastspec::seq_gram", mutates_args=())
def _seq_gram(
    a_i: torch.Tensor, g_i: torch.Tensor, a_j: torch.Tensor, g_j: torch.Tensor
) -> torch.Tensor:
    (n_i, t_i, d_in), (n_j, t_j, d_out) = a_i.shape, g_j.shape
    out = torch.empty(n_i, n_j, dtype=a_i.dtype, device=a_i.device)
    if n_i and n_j:
        call(
            "seq_gram",
            a_i.device,
            {
                "a_i": a_i,
                "g_i": g_i,
                "a_j": a_j,
                "g_j": g_j,
                "out": out,
                "n_i": n_i,
                "n_j": n_j,
                "t_i": t_i,
                "t_j": t_j,
                "d_in": d_in,
                "d_out": d_out,
                "dtype": a_i.dtype,
            },
        )
    return out


@_seq_gram.register_fake
def _(a_i, g_i, a_j, g_j):
    return a_i.new_empty(a_i.shape[0], a_j.shape[0])


def seq_gram(
    a_i: torch.Tensor, g_i: torch.Tensor, a_j: torch.Tensor, g_j: torch.Tensor
) -> torch.Tensor:
    """K[i, j] = Σ_{t,s} (a_i[i, t] · a_j[j, s]) (g_i[i, t] · g_j[j, s]).

    Args:
        a_i: [N_i, T, D_in] inputs of the first set of samples; float32 or float64, cpu or cuda.
        g_i: [N_i, T, D_out] output gradients of the first set.
        a_j: [N_j, S, D_in] inputs of the second set.
        g_j: [N_j, S, D_out] output gradients of the second set.

    Returns:
        [N_i, N_j] in the inputs' dtype (the dot products accumulate in that dtype, the sum over
        position pairs in float64).
    """
    a_i = check_tensor("a_i", a_i, dtypes=FLOAT_DTYPES, ndim=3, min_numel=0)
    device, dtype = a_i.device, a_i.dtype
    g_i = check_tensor("g_i", g_i, dtypes=(dtype,), ndim=3, device=device, min_numel=0)
    a_j = check_tensor("a_j", a_j, dtypes=(dtype,), ndim=3, device=device, min_numel=0)
    g_j = check_tensor("g_j", g_j, dtypes=(dtype,), ndim=3, device=device, min_numel=0)
    if g_i.shape[:2] != a_i.shape[:2] or g_j.shape[:2] != a_j.shape[:2]:
        raise ValueError(
            "g_i and g_j must match a_i and a_j in samples and positions: got a_i "
            f"{tuple(a_i.shape)}, g_i {tuple(g_i.shape)}, a_j {tuple(a_j.shape)}, g_j "
            f"{tuple(g_j.shape)}"
        )
    if a_j.shape[2] != a_i.shape[2] or g_j.shape[2] != g_i.shape[2]:
        raise ValueError(
            "a_j and g_j must have the feature sizes of a_i and g_i: got D_in "
            f"{a_i.shape[2]} vs {a_j.shape[2]}, D_out {g_i.shape[2]} vs {g_j.shape[2]}"
        )
    if min(a_i.shape[1], a_j.shape[1], a_i.shape[2], g_i.shape[2]) < 1:
        raise ValueError("positions and feature sizes must be at least 1")
    return run_op(_seq_gram, a_i, g_i, a_j, g_j)
