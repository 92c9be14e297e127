"""Small problems: the operator materialised and solved by dense ``eigh``.

When the basis would hold (nearly) the whole space, Lanczos cannot save anything: the operator
is materialised with ``P`` products (none for a dense one), solved by ``eigh`` in float64, and the
residuals of the returned vectors are recomputed with ``k`` more products.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fastspec.linalg.lanczos.ordering import output_order, priority
from fastspec.linalg.lanczos.result import EigshProgress, EigshResult, Reporter, make_result
from fastspec.linalg.operator import (
    DenseOperator,
    LinearOperator,
    apply_scale,
    checked_matmat,
    safe_scale,
)

__all__ = ["dense_eigsh"]


def dense_eigsh(
    A: LinearOperator,
    k: int,
    *,
    which: str,
    tol: float,
    block_size: int,
    max_basis: int,
    return_eigenvectors: bool,
    report: Reporter,
) -> EigshResult:
    """Small problems: materialise the operator, ``eigh`` in float64, recompute residuals."""
    P = A.shape[0]
    num_matvecs = 0 if isinstance(A, DenseOperator) else P
    Ad = A.to_dense()
    if not bool(torch.isfinite(Ad).all()):
        raise ValueError("op returned NaN or inf")
    asym = DenseOperator(Ad).asymmetry()
    eps = torch.finfo(A.dtype).eps
    if asym > math.sqrt(eps):
        raise ValueError(
            f"op is not symmetric: max|A - Aᵀ| / max|A| = {asym:.3g}; eigsh needs a symmetric "
            "operator"
        )
    scale = safe_scale(float(Ad.abs().amax()), Ad.dtype, P)
    A64 = Ad.to(torch.float64) * scale
    evals, evecs = torch.linalg.eigh(0.5 * (A64 + A64.mT))
    evals_h = evals.cpu().numpy()
    sel = priority(evals_h, which)[:k]
    theta = evals_h[sel]
    perm = output_order(theta, which)
    sel = sel[perm]
    X = evecs[:, torch.as_tensor(sel, device=evecs.device)].to(A.dtype)  # [P, k]
    res = np.empty(k)
    theta_out = np.empty(k)
    for j in range(0, k, block_size):
        c = min(block_size, k - j)
        Xc = X[:, j : j + c].contiguous()
        AXc = apply_scale(checked_matmat(A, Xc), scale)
        num_matvecs += c
        th = (Xc * AXc).sum(dim=0)
        r = torch.linalg.vector_norm(AXc - Xc * th, dim=0)
        theta_out[j : j + c] = th.double().cpu().numpy()
        res[j : j + c] = r.double().cpu().numpy()
    if not (np.isfinite(res).all() and np.isfinite(theta_out).all()):
        raise ValueError("op returned NaN or inf while recomputing residuals")
    anorm = float(np.abs(evals_h).max()) / scale
    theta_out, res = theta_out / scale, res / scale
    report(EigshProgress(num_matvecs, k, k, 0, P))
    return make_result(
        theta_out,
        res,
        X if return_eigenvectors else None,
        anorm=anorm,
        eps=eps,
        A=A,
        num_matvecs=num_matvecs,
        num_restarts=0,
        which=which,
        tol=tol,
        block_size=block_size,
        max_basis=max_basis,
        method="dense",
    )
