"""The block Lanczos iteration: start, block step, and the loop that drives the other modules.

Block Lanczos (G. H. Golub & R. Underwood, *The block Lanczos method for computing eigenvalues*,
Mathematical Software III, 1977): with the pending block ``Q_j`` ``[B, P]`` (rows),

    W = A Q_jᵀ − Q_{j−1}ᵀ C_{j−1}ᵀ,   α_j = Q_j W,   W ← W − Q_jᵀ α_j,
    (I − VᵀV) W = Q_{j+1}ᵀ C_j        (:mod:`~fastspec.linalg.lanczos.orthogonalize`),

and the projected matrix ``T = V A Vᵀ`` gains the block row ``[C_{j−1}, α_j]``. The operator sees
``[P, B]`` blocks (batched Hessian-vector products), and eigenvalues of multiplicity up to ``B``
are found without relying on rounding. :meth:`BlockLanczos.iterate` interleaves steps with
convergence checks (:mod:`~fastspec.linalg.lanczos.convergence`), thick restarts, locking and
growth (:mod:`~fastspec.linalg.lanczos.restart_locking`); :meth:`BlockLanczos.extract` finishes
and certifies the answer (:mod:`~fastspec.linalg.lanczos.certify`).

The projected problem is kept and solved in float64 whatever the operator's dtype. The host
synchronises once per block step (the rank check of the new block and the finiteness of the
operator's output, read together; in float64 once more, to choose the rows the Gram–Schmidt
update reads) and once per convergence check, never per dot product.
"""

from __future__ import annotations

import math

import torch

from fastspec.linalg import _kernels
from fastspec.linalg.lanczos import certify, convergence, restart_locking
from fastspec.linalg.lanczos.checkpoint import LanczosCheckpoint
from fastspec.linalg.lanczos.orthogonalize import orthonormalize
from fastspec.linalg.lanczos.result import EigshResult
from fastspec.linalg.lanczos.state import LanczosState

__all__ = ["BlockLanczos"]


class BlockLanczos:
    """One thick-restarted block Lanczos run over a :class:`LanczosState`.

    Args:
        st: the run's settings and buffers.
        v0: ``[P, c]`` start vectors (``c <= B``), completed with random ones, or ``None``.
        checkpoint: saves the run at the top of the loop and resumes a saved one.
    """

    def __init__(
        self,
        st: LanczosState,
        v0: torch.Tensor | None,
        checkpoint: LanczosCheckpoint | None = None,
    ) -> None:
        self.st = st
        self.checkpoint = checkpoint
        self.resumed = None if checkpoint is None else checkpoint.restore(st)
        if self.resumed is None:
            self._start(v0)

    def _start(self, v0: torch.Tensor | None) -> None:
        st, b = self.st, self.st.b
        X = st.sh.randn(st.gen, b, dtype=st.A.dtype, device=st.A.device)
        if v0 is not None:
            X[:, : v0.shape[1]] = st.sh.take(v0)
        ref = st.sh.norm(X)
        Q, _, _, _ = orthonormalize(st, X.mT.contiguous(), ref, 0)
        st.V[:b] = Q
        st.s.C = torch.zeros(b, 0, dtype=torch.float64, device=st.small)

    def step(self) -> None:
        """One block step: product, three-term recurrence, orthonormalisation, ``T`` update."""
        st, b = self.st, self.st.b
        s = st.s
        q0 = s.n_lock + s.m
        Q = st.rows(q0, q0 + b)  # [b, P]
        W = st.matmat(Q)
        if st.AV is not None:
            st.AV[q0 : q0 + b] = W
        ref = st.sh.norm(W)
        Q_prev = st.V[s.n_lock + s.c0 : q0]  # stored rows, read in blocks by three_term
        assert s.C is not None
        C_prev = s.C.to(device=W.device, dtype=W.dtype)
        W, alpha = _kernels.three_term(W, Q, Q_prev, C_prev, reduce=st.sh.reduce)
        Qn, C, ref_h, n_bad = orthonormalize(st, W, ref, q0 + b)
        if n_bad:
            s.broke = True
        s.anorm = max(s.anorm, ref_h / math.sqrt(b))
        m = s.m
        a64 = alpha.to(device=st.small, dtype=torch.float64)
        st.T[m : m + b, m : m + b] = 0.5 * (a64 + a64.mT)
        Cs = s.C.to(st.small)
        st.T[m : m + b, s.c0 : m] = Cs
        st.T[s.c0 : m, m : m + b] = Cs.mT
        st.V[q0 + b : q0 + 2 * b] = Qn
        s.m = m + b
        s.c0 = m
        s.C = C.to(st.small)

    def check(self) -> convergence.Check:
        """A convergence check of the active basis."""
        return convergence.check(self.st)

    def iterate(self) -> convergence.Check:
        """Run until the wanted pairs are confirmed or ``max_restarts`` is spent.

        Returns:
            The last convergence check, for :meth:`extract`.
        """
        st = self.st
        since, interval = 0, convergence.check_interval(st)
        if self.resumed is not None:
            since, interval = self.resumed.since, self.resumed.interval
            if self.resumed.phase == "extract":
                return self.check()  # reads only the restored state: the check it ended with
        while True:
            if self.checkpoint is not None:
                self.checkpoint.maybe_save(st, since, interval)
            if st.room_for_step():
                self.step()
                since += 1
                if st.room_for_step() and (since < interval or not st.enough()):
                    continue
            ck = self.check()
            since = 0
            if ck.done:
                action = convergence.confirm(st, ck)
                if action == "stop":
                    return ck
                if action == "fresh-start":
                    restart_locking.fresh_start(st, ck)
                    interval = convergence.check_interval(st)
                    continue  # take steps before checking again
            if not st.room_for_step():
                if st.s.num_restarts >= st.max_restarts:
                    return ck
                if ck.num_converged <= st.progress and st.M < st.max_growth:
                    restart_locking.grow(st)  # no new pair in this cycle: widen, not restart
                else:
                    st.progress = ck.num_converged
                    restart_locking.thick_restart(st, ck)
                interval = convergence.check_interval(st)

    def extract(self, ck: convergence.Check, *, return_eigenvectors: bool) -> EigshResult:
        """The certified result from the last check (see :func:`~.certify.finish`)."""
        return certify.finish(self.st, ck, return_eigenvectors=return_eigenvectors)

    def run(self, *, return_eigenvectors: bool) -> EigshResult:
        """:meth:`iterate`, then :meth:`extract`."""
        ck = self.iterate()
        if self.checkpoint is not None:
            self.checkpoint.maybe_save(self.st, 0, 0, phase="extract")
        return self.extract(ck, return_eigenvectors=return_eigenvectors)
