"""Thick restart, locking of converged pairs, fresh starts and growth of the basis.

*Thick restart* (K. Wu & H. Simon, SIAM J. Matrix Anal. Appl. 22(2), 2000, in its block form:
Baglama, Calvetti & Reichel, SIAM J. Sci. Comput. 24(5), 2003). When the basis is full, the
active basis is rotated onto its Ritz vectors ``V ← Sᵀ V``; the wanted ones plus a margin of the
next ones (``_KEEP_FRACTION`` of the free space) are kept together with the pending block. The
projected matrix becomes an arrow: the kept Ritz values on the diagonal, and their coupling to
the pending block ``C S[c0:m, keep]`` in one block row.

*Locking.* A wanted pair whose estimate is below the locking threshold
(:func:`~fastspec.linalg.lanczos.convergence.check`) moves out of the active basis at a restart
into rows ``[0, n_lock)``. Locked vectors stay in the orthogonalisation set, so the active space
is the deflated one. A locked pair pushed out of the ``k`` most wanted by later ones is dropped.

*Fresh start.* To confirm that no copy of a wanted eigenvalue was missed, every wanted pair is
locked and the active basis restarts from a random block orthogonal to them.

*Growth.* A default basis that fills up with no new converged pair since the last restart (a
hard end of the spectrum, such as a cluster) is doubled instead of restarted, keeping every row
and the projected matrix, up to :func:`max_growth`.
"""

from __future__ import annotations

import numpy as np
import torch

from fastspec.linalg.lanczos.convergence import Check
from fastspec.linalg.lanczos.ordering import priority
from fastspec.linalg.lanczos.orthogonalize import orthonormalize
from fastspec.linalg.lanczos.state import LanczosState

__all__ = ["fresh_start", "grow", "max_growth", "thick_restart"]

#: share of the non-wanted free space filled with kept Ritz vectors at a restart
_KEEP_FRACTION = 0.5
#: a stalled default basis grows up to this many vectors, in at most ``_GROW_MAX_BYTES`` and a
#: quarter of the space: a cluster at the end of the spectrum needs a wide basis, the top pairs
#: of a power law do not (benchmarks/results/hessian_bottom.md, "basis growth")
_GROW_MAX = 128
_GROW_MAX_BYTES = 1 << 29


def max_growth(M: int, P: int, dtype: torch.dtype) -> int:
    """The largest basis a default basis of ``M`` vectors may grow to (see ``_GROW_MAX``).

    ``dtype`` is the basis' storage dtype.
    """
    vector_bytes = P * dtype.itemsize
    return max(M, min(_GROW_MAX, _GROW_MAX_BYTES // vector_bytes, P // 4))


def _drop_displaced_locked(st: LanczosState, ck: Check) -> int:
    """Remove locked vectors no longer among the k most wanted (rare); new lock count."""
    s, nl = st.s, st.s.n_lock
    keep_locked = np.sort(ck.union_wanted[ck.union_wanted < nl])
    if keep_locked.shape[0] < nl:
        rows = [int(r) for r in keep_locked] + list(range(nl, nl + s.m + st.b))
        st.move_rows(rows, 0)
        s.locked_theta = s.locked_theta[keep_locked]
        s.n_lock = int(keep_locked.shape[0])
    return s.n_lock


def fresh_start(st: LanczosState, ck: Check) -> None:
    """Lock every wanted pair, drop the rest, restart from a fresh random block."""
    s, b = st.s, st.b
    nl0, m = s.n_lock, s.m
    active_wanted = [int(i) for i in ck.union_wanted[ck.union_wanted >= nl0] - nl0]
    nl = _drop_displaced_locked(st, ck)
    sel = torch.as_tensor(active_wanted, dtype=torch.long, device=ck.S.device)
    st.rotate(nl, m, ck.S[:, sel])
    n_lock_new = nl + len(active_wanted)
    X = st.sh.randn(st.gen, b, dtype=st.A.dtype, device=st.A.device)
    Q, _, _, _ = orthonormalize(st, X.mT.contiguous(), st.sh.norm(X), n_lock_new)
    st.V[n_lock_new : n_lock_new + b] = Q
    s.locked_theta = np.concatenate([s.locked_theta, ck.theta[active_wanted]])
    s.n_lock, s.m, s.c0 = n_lock_new, 0, 0
    s.C = torch.zeros(b, 0, dtype=torch.float64, device=st.small)
    st.T.zero_()
    s.num_restarts += 1


def thick_restart(st: LanczosState, ck: Check) -> None:
    """Lock the lockable wanted pairs, keep the next most wanted Ritz vectors, restart."""
    s, b, M = st.s, st.b, st.M
    nl, m = s.n_lock, s.m
    wanted = ck.union_wanted
    active_wanted = wanted[wanted >= nl] - nl
    new_lock = [int(i) for i in active_wanted if ck.lockable[i]]
    nl = _drop_displaced_locked(st, ck)
    n_lock_new = nl + len(new_lock)
    # how many Ritz vectors to keep: the wanted ones plus a share of the remaining space
    free = M - n_lock_new - b  # rows for the active basis (the pending block needs b)
    k_act = max(0, st.k - n_lock_new)
    locked_set = set(new_lock)
    candidates = [int(i) for i in priority(ck.theta, st.which) if int(i) not in locked_set]
    n_keep = min(free - b, len(candidates), k_act + max(b, int(_KEEP_FRACTION * (free - k_act))))
    keep = candidates[:n_keep]
    sel = torch.as_tensor(new_lock + keep, dtype=torch.long, device=ck.S.device)
    st.rotate(nl, m, ck.S[:, sel])
    n_sel = len(new_lock) + n_keep
    st.V[nl + n_sel : nl + n_sel + b] = st.V[nl + m : nl + m + b].clone()
    assert s.C is not None
    keep_t = torch.as_tensor(keep, dtype=torch.long, device=ck.S.device)
    s.C = s.C @ ck.S[s.c0 : m][:, keep_t]
    s.c0 = 0
    s.m = n_keep
    st.T.zero_()
    theta_keep = torch.as_tensor(ck.theta[keep], dtype=torch.float64, device=st.small)
    st.T[:n_keep, :n_keep] = torch.diag(theta_keep)
    s.locked_theta = np.concatenate([s.locked_theta, ck.theta[new_lock]])
    s.n_lock = n_lock_new
    s.num_restarts += 1


def grow(st: LanczosState) -> None:
    """Double the basis (up to ``max_growth``), keeping every row and the projected matrix."""
    M = min(2 * st.M, st.max_growth)
    V = st.empty_like_basis(M)
    V[: st.M] = st.V
    st.V = V
    if st.AV is not None:
        AV = st.empty_like_basis(M)
        AV[: st.M] = st.AV
        st.AV = AV
    T = torch.zeros(M, M, dtype=st.T.dtype, device=st.T.device)
    T[: st.M, : st.M] = st.T
    st.T, st.M = T, M
