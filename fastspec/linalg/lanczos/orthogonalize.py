"""Orthonormalising a new block against the basis: BCGS2 with a one-pass test, and breakdown.

Block classical Gram–Schmidt, "twice is enough" (BCGS2: Giraud, Langou, Rozložník & van den
Eshof, Numer. Math. 101, 2005; Barlow & Smoktunowicz, Numer. Math. 123, 2013), written for
columns ``Wᵀ``: one pass and a block QR, ``(I − VᵀV)Wᵀ = Q1ᵀ R1``, then, only if needed, a
second pass on ``Q1`` and a QR, ``Q1ᵀ = Q2ᵀ R2``, so that ``(I − VᵀV)Wᵀ ≈ Q2ᵀ (R2 R1)``.

*Skipping the second pass.* The rounding left along ``range(Vᵀ)`` by one pass is ``O(ε)`` per
unit input vector, so ``‖V Q1ᵀ‖ ≲ cε / σ_min(R1 D)`` with ``D`` the inverse norms of the input.
``σ_min(R1 D) >= η = 1/√2`` keeps ``Q1`` as orthogonal as a second pass would (the block form of
the test of Daniel, Gragg, Kaufman & Stewart, Math. Comp. 30, 1976, also used by ARPACK with
``η = 0.717``). After Lanczos' three-term recurrence the large components are already gone, so
the test passes on most steps and halves the basis sweeps.

*Selective first pass (float64).* Components below ``_SKIP_OVERLAP · ε`` (relative to the input
vector's norm) are left in, so the update reads only the basis rows that matter (see
:func:`fastspec.linalg._kernels.project_rows`): the basis stays orthonormal to
``O(_SKIP_OVERLAP · ε)``, every new block still being measured against every row.

*Breakdown.* Singular values of ``R1`` below ``_RANK_TOL · ε · ‖A‖`` mean the Krylov space
became invariant. With the SVD ``R1 = U Σ Zᵀ``, ``(I − VᵀV)Wᵀ = (Q1ᵀ U) Σ Zᵀ``: the directions
with non-negligible ``σ`` are kept, the others replaced by random directions orthogonal to the
basis, with zero coupling (the run is then confirmed by a fresh start, see
:mod:`~fastspec.linalg.lanczos.convergence`).

*Under a process group* (rows split over the ranks, :mod:`~fastspec.linalg.sharded`), a pass
takes its coefficients and the input norms in one all-reduce and the block QR is a TSQR (one
all-gather of ``B × B`` factors), as stable as the one-process QR, so the breakdown test reads
the same singular values on every rank.

There is one host synchronisation per call (after the one of the selective pass): the singular
values of ``R1``, the scaled test and ``ref_norm`` (``‖AQ‖``, whose finiteness also tells
whether the operator returned NaN/inf) are read together.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fastspec.linalg import _kernels
from fastspec.linalg.lanczos.state import LanczosState

__all__ = ["orthonormalize"]

#: singular values of the new block below ``_RANK_TOL * eps * ‖A Q‖`` mean breakdown
_RANK_TOL = 100.0
#: the second Gram–Schmidt pass is skipped when the first kept this share of every unit input
#: direction (DGKS's 1/√2; ARPACK uses 0.717)
_REORTH_ETA = 1.0 / math.sqrt(2.0)
#: in float64 the first pass leaves in components below this many ε: after the recurrence the
#: active rows carry only rounding (benchmarks/results/hessian_vs_peers.md, the selective first
#: pass); float32 keeps full passes, as 64ε would show in the returned vectors' orthogonality
_SKIP_OVERLAP = 64.0


def orthonormalize(
    st: LanczosState, W: torch.Tensor, ref_norm: torch.Tensor, rows: int
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Orthonormalise a new block of rows ``W`` ``[b, P]`` against ``st.V[:rows]``.

    A basis stored in another dtype is read in upcast row blocks
    (:func:`~fastspec.linalg._kernels.project_rows`); the result is in ``W``'s dtype.

    Args:
        st: the run (its basis, generator, counters and ``‖A‖`` estimate).
        W: the new block as rows.
        ref_norm: ``‖A Q‖`` of the block ``W`` came from (a device scalar), the scale for the
            rank decision and the operator's finiteness check.
        rows: basis rows to orthogonalise against.

    Returns:
        ``(Q, C, ref, n_bad)``: ``Q`` ``[b, P]`` orthonormal rows orthogonal to ``V[:rows]``,
        ``C`` ``[b, b]`` float64 with ``(I − VᵀV) Wᵀ ≈ Qᵀ C``, ``ref_norm`` on the host, and the
        number of directions replaced after a breakdown.

    Raises:
        ValueError: ``ref_norm`` is NaN or inf (the operator returned NaN or inf).
    """
    Vr = st.V[:rows]
    skip_below = _SKIP_OVERLAP * st.eps if st.A.dtype == torch.float64 else 0.0
    sh = st.sh
    W1, sq_in = _kernels.project_rows(Vr, W, skip_below=skip_below, reduce=sh.reduce)
    Q1, R1 = sh.block_qr(W1)
    R1d = R1.to(torch.float64)
    # non-finite input is reported through ref_norm; keep the SVDs themselves from failing
    R1f = torch.nan_to_num(R1d, nan=0.0, posinf=0.0, neginf=0.0)
    sv = torch.linalg.svdvals(R1f)
    inv_norms = torch.nan_to_num(sq_in.to(R1f.device).rsqrt(), nan=0.0, posinf=0.0)
    sv_scaled = torch.linalg.svdvals(R1f * inv_norms).min().reshape(1)
    host = torch.cat([sv, sv_scaled, ref_norm.to(torch.float64).reshape(1)]).cpu().numpy()
    ref = float(host[-1])
    if not math.isfinite(ref):
        raise ValueError(
            f"op returned NaN or inf (after {st.s.num_matvecs} matvecs); "
            "eigsh needs a finite operator"
        )
    sv_h = host[:-2]
    bad = sv_h <= _RANK_TOL * st.eps * max(ref, st.s.anorm)
    if not bad.any():
        if host[-2] >= _REORTH_ETA:
            st.s.num_single_pass += 1
            return Q1, R1d, ref, 0
        Q2, R2 = sh.block_qr(_kernels.project_rows(Vr, Q1, reduce=sh.reduce)[0])
        return Q2, R2.to(torch.float64) @ R1d, ref, 0
    return _replace_dependent(st, Vr, Q1, R1d, bad, ref)


def _replace_dependent(
    st: LanczosState,
    Vr: torch.Tensor,
    Q1: torch.Tensor,
    R1d: torch.Tensor,
    bad: np.ndarray,
    ref: float,
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Breakdown: keep the directions of ``Q1ᵀ U`` with non-negligible ``σ``, add random ones."""
    sh = st.sh
    U, svals, Zh = torch.linalg.svd(R1d)
    good = torch.as_tensor(~bad, device=Q1.device)
    goodC = torch.as_tensor(~bad, device=R1d.device)
    Qg = _kernels.project_rows(Vr, (U.mT.to(Q1.dtype) @ Q1)[good], reduce=sh.reduce)[0]
    n_bad, ng = int(bad.sum()), int((~bad).sum())
    Z = sh.randn(st.gen, n_bad, dtype=st.A.dtype, device=st.A.device).mT.contiguous()
    for _ in range(2):
        Z = _kernels.project_rows(Vr, Z, reduce=sh.reduce)[0]
    Qf, Rf = sh.block_qr(torch.cat([Qg, Z]))
    # the random part came from two passes; make sure
    Qf = _kernels.project_rows(Vr, Qf, reduce=sh.reduce)[0]
    Qf, Rf2 = sh.block_qr(Qf)
    Rg = (Rf2 @ Rf).to(torch.float64)[:ng, :ng]
    C = torch.zeros(st.b, st.b, dtype=torch.float64, device=R1d.device)
    C[:ng] = Rg @ (svals[goodC].unsqueeze(1) * Zh[goodC])
    return Qf, C, ref, n_bad
