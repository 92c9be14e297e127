"""Finishing a run and certifying its answer: final Rayleigh–Ritz, recomputed residuals.

The ``k`` most wanted Ritz vectors (locked and active) are moved to the first rows of the basis,
``X = V[:k]``. When locked vectors take part, their neglected coupling is removed by a final
Rayleigh–Ritz on ``span(X)``: ``G = X A Xᵀ = U diag(θ) Uᵀ``, ``X ← Uᵀ X``.

Reported residuals are never the Lanczos estimates: they are ``‖Ax − θx‖`` of the returned
vectors, either from ``k`` (``2k`` with locking, when ``AX`` does not fit in the free rows)
fresh products, or from the stored products ``A V`` rotated like the basis
(``store_products``). Each stored row is a product the operator returned, rotated and moved
exactly like its basis row, so its residual is that of the returned vector up to the rounding
of those rotations (:func:`_stored_rounding`); a pair whose residual lies within that bound of
the tolerance is recomputed with a fresh product, so the ``converged`` flags are exactly those
of a recomputation. Finally the exact power-of-two scale is undone.

*A basis stored below the operator's dtype* (:mod:`~fastspec.linalg.lanczos.storage`) has no
stored products. Each returned vector is its stored row upcast and normalised in the
operator's dtype, ``x = v / ‖v‖``; its Rayleigh quotient and residual come from a fresh product
of that very ``x``, so ``converged`` is as honest as with a full-precision basis, and the
Rayleigh quotient's error is second order in the rounding of ``v``. The rounding of the stored
rows bounds the attainable residual (see :func:`~fastspec.linalg.eigsh`, ``basis_dtype``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fastspec.linalg import _kernels
from fastspec.linalg.lanczos.convergence import Check
from fastspec.linalg.lanczos.ordering import output_order
from fastspec.linalg.lanczos.result import EigshResult, make_result
from fastspec.linalg.lanczos.state import LanczosState

__all__ = ["finish"]


def finish(st: LanczosState, ck: Check, *, return_eigenvectors: bool) -> EigshResult:
    """Ritz vectors of the k most wanted pairs, Rayleigh–Ritz, recomputed residuals."""
    s, k, b = st.s, st.k, st.b
    nl, m = s.n_lock, s.m
    wanted = ck.union_wanted
    locked_rows = [int(r) for r in np.sort(wanted[wanted < nl])]
    active = torch.as_tensor(wanted[wanted >= nl] - nl, dtype=torch.long, device=ck.S.device)
    st.rotate(nl, m, ck.S[:, active])
    st.move_rows(locked_rows + list(range(nl, nl + active.shape[0])), 0)
    X = st.V[:k]  # [k, P], orthonormal rows
    theta = torch.empty(k, dtype=torch.float64, device=st.small)
    res = torch.empty(k, dtype=torch.float64, device=st.small)
    if not st.direct:
        _finish_rounded(st, theta, res, rayleigh_ritz=len(locked_rows) > 0)
    elif st.AV is None:
        _finish_recompute(st, X, theta, res, rayleigh_ritz=len(locked_rows) > 0)
    else:
        _finish_stored(st, X, theta, res, rayleigh_ritz=len(locked_rows) > 0)
    theta_h = theta.cpu().numpy()
    res_h = res.cpu().numpy()
    if not (np.isfinite(theta_h).all() and np.isfinite(res_h).all()):
        raise ValueError("op returned NaN or inf while recomputing residuals")
    s.anorm = max(s.anorm, float(np.abs(theta_h).max()))
    if st.scale not in (None, 1.0):  # undo the exact power-of-two scaling
        theta_h, res_h, s.anorm = theta_h / st.scale, res_h / st.scale, s.anorm / st.scale
    eigvecs = None
    perm = output_order(theta_h, st.which)
    if return_eigenvectors and st.direct:
        eigvecs = X.index_select(0, torch.as_tensor(perm, device=X.device)).mT
    elif return_eigenvectors:
        eigvecs = torch.cat([_unit_rows(st, int(i), int(i) + 1) for i in perm]).mT
    return make_result(
        theta_h[perm],
        res_h[perm],
        eigvecs,
        anorm=s.anorm,
        eps=st.eps,
        A=st.A,
        num_matvecs=s.num_matvecs,
        num_restarts=s.num_restarts,
        which=st.which,
        tol=st.tol,
        block_size=b,
        max_basis=st.M,
        method="block-lanczos",
        sharding=st.sh if st.sh.distributed else None,
        basis_dtype=st.storage.name,
        basis_spilled=st.storage.spilled,
    )


def _finish_recompute(
    st: LanczosState,
    X: torch.Tensor,
    theta: torch.Tensor,
    res: torch.Tensor,
    *,
    rayleigh_ritz: bool,
) -> None:
    """Final Rayleigh quotients and residuals from ``k`` (or ``2k``) fresh products.

    With ``rayleigh_ritz`` (locked vectors take part), a Rayleigh–Ritz on ``span(X)``
    removes their neglected coupling to the active ones; ``AX`` is kept in the free rows of
    the buffer when there is room, else recomputed.
    """
    k, b = st.k, st.b
    store = st.M >= 2 * k
    G = torch.zeros(k, k, dtype=torch.float64, device=st.small) if rayleigh_ritz else None
    for j in range(0, k, b):
        c = min(b, k - j)
        AXc = st.matmat(X[j : j + c])
        if G is not None:
            G[:, j : j + c] = st.sh.sum(X @ AXc.mT).to(st.small, torch.float64)
            if store:
                st.V[k + j : k + j + c] = AXc
        else:
            _rayleigh_residual(st, X[j : j + c], AXc, theta, res, j)
    if G is None:
        return
    theta_g, U = torch.linalg.eigh(0.5 * (G + G.mT))
    _kernels.rotate_rows(st.V, 0, k, U)
    if store:
        _kernels.rotate_rows(st.V, k, k, U)
    for j in range(0, k, b):
        c = min(b, k - j)
        if store:
            AXc = st.V[k + j : k + j + c]
            _rayleigh_residual(st, X[j : j + c], AXc, theta, res, j, theta_g[j : j + c])
        else:
            AXc = st.matmat(X[j : j + c])
            _rayleigh_residual(st, X[j : j + c], AXc, theta, res, j)


def _unit_rows(st: LanczosState, lo: int, hi: int) -> torch.Tensor:
    """Stored rows ``[lo, hi)`` upcast to the operator's dtype and normalised."""
    X = st.rows(lo, hi)
    return X / st.sh.vector_norms(X, dim=1).unsqueeze(1)


def _finish_rounded(
    st: LanczosState, theta: torch.Tensor, res: torch.Tensor, *, rayleigh_ritz: bool
) -> None:
    """Final Rayleigh quotients and residuals of a basis stored below the operator's dtype.

    Like :func:`_finish_recompute`, with the vectors read in blocks, upcast and normalised
    (:func:`_unit_rows`), and without keeping ``AX`` in the (rounded) basis: a Rayleigh–Ritz
    costs ``2k`` products. The residuals are those of the normalised vectors, the ones returned.
    """
    k, b = st.k, st.b
    if rayleigh_ritz:
        G = torch.zeros(k, k, dtype=torch.float64, device=st.small)
        for j in range(0, k, b):
            c = min(b, k - j)
            AXc = st.matmat(_unit_rows(st, j, j + c))
            for i in range(0, k, b):
                Xi = _unit_rows(st, i, min(k, i + b))
                G[i : i + Xi.shape[0], j : j + c] = st.sh.sum(Xi @ AXc.mT).to(st.small, G.dtype)
        _, U = torch.linalg.eigh(0.5 * (G + G.mT))
        _kernels.rotate_rows(st.V, 0, k, U, dtype=st.A.dtype, device=st.A.device)
    for j in range(0, k, b):
        c = min(b, k - j)
        Xc = _unit_rows(st, j, j + c)
        _rayleigh_residual(st, Xc, st.matmat(Xc), theta, res, j)


def _finish_stored(
    st: LanczosState,
    X: torch.Tensor,
    theta: torch.Tensor,
    res: torch.Tensor,
    *,
    rayleigh_ritz: bool,
) -> None:
    """Final Rayleigh quotients and residuals from the stored products ``AX = AV[:k]``.

    Every stored row is a product the operator returned, rotated and moved exactly like its
    basis row, so ``‖AX − θX‖`` is a residual of the returned vectors up to the rounding of
    those rotations (bounded by ``_stored_rounding``), not a recurrence estimate. A pair
    whose residual lies within that bound of the tolerance is recomputed with a fresh
    product, so the ``converged`` flags are exactly those of a recomputation.
    """
    assert st.AV is not None
    k, b = st.k, st.b
    AX = st.AV[:k]
    theta_known = None
    if rayleigh_ritz:
        G = st.sh.sum(X @ AX.mT).to(st.small, torch.float64)
        theta_known, U = torch.linalg.eigh(0.5 * (G + G.mT))
        _kernels.rotate_rows(st.V, 0, k, U)
        _kernels.rotate_rows(st.AV, 0, k, U)
    for j in range(0, k, b):
        c = min(b, k - j)
        known = None if theta_known is None else theta_known[j : j + c]
        _rayleigh_residual(st, X[j : j + c], AX[j : j + c], theta, res, j, known)
    theta_h, res_h = theta.cpu().numpy(), res.cpu().numpy()
    anorm = max(st.s.anorm, float(np.abs(theta_h).max()))
    bound = _stored_rounding(st, anorm)
    scale = np.maximum(np.abs(theta_h), math.sqrt(st.eps) * anorm)
    unsure = np.flatnonzero(np.abs(res_h - st.tol * scale) <= bound)
    for j0 in range(0, unsure.shape[0], b):
        idx = torch.as_tensor(unsure[j0 : j0 + b], dtype=torch.long, device=X.device)
        Xc = X.index_select(0, idx)
        AXc = st.matmat(Xc)
        th = torch.empty(idx.shape[0], dtype=torch.float64, device=st.small)
        r = torch.empty_like(th)
        _rayleigh_residual(st, Xc, AXc, th, r, 0)
        theta[idx.to(st.small)] = th
        res[idx.to(st.small)] = r


def _stored_rounding(st: LanczosState, anorm: float) -> float:
    """Bound on ``‖AX_stored − A X‖`` per vector.

    Each rotation of the ``M``-row buffers adds about ``√M ε ‖A‖``; a factor 10 of margin.
    """
    rotations = 2 * st.s.num_restarts + 2
    return 10.0 * rotations * math.sqrt(st.M) * st.eps * anorm


def _rayleigh_residual(
    st: LanczosState,
    Xc: torch.Tensor,
    AXc: torch.Tensor,
    theta: torch.Tensor,
    res: torch.Tensor,
    j: int,
    theta_known: torch.Tensor | None = None,
) -> None:
    """Rayleigh quotients and ``‖Ax − θx‖`` for rows ``Xc`` / ``AXc`` (``[c, P]``)."""
    c = Xc.shape[0]
    if theta_known is None:
        th = st.sh.sum((Xc * AXc).sum(dim=1))
    else:
        th = theta_known.to(device=Xc.device, dtype=Xc.dtype)
    r = st.sh.vector_norms(AXc - th.unsqueeze(1) * Xc, dim=1)
    theta[j : j + c] = th.to(st.small, torch.float64)
    res[j : j + c] = r.to(st.small, torch.float64)
