"""What a block Lanczos run carries: settings, the basis and its products, the projected matrix.

The basis ``V`` ``[M, P]`` holds one vector per row, in three consecutive parts::

    rows [0, n_lock)                      locked Ritz vectors (converged wanted pairs)
    rows [n_lock, n_lock + m)             the active basis, processed
    rows [n_lock + m, n_lock + m + B)     the pending block, whose product comes next

``T`` ``[M, M]`` (float64) is the projected matrix of the active basis: after a thick restart
an arrow (kept Ritz values on the diagonal, their coupling to the residual block in one block
row), then the block-tridiagonal part of the cycle. ``C`` couples the pending block to the
active columns ``[c0, m)``. ``AV`` (with ``store_products``) holds ``A V`` row for row, rotated
and moved exactly like ``V``.

The buffers come from a :class:`~fastspec.linalg.lanczos.storage.BasisStorage`: in the
operator's dtype in memory by default, or in a lower precision and/or a memory-mapped file.
Rows are read for arithmetic through :meth:`LanczosState.rows` (upcast when the storage differs)
and written by plain assignment (rounded to the storage dtype); :attr:`LanczosState.direct`
tells whether the buffers can be used as they are.

Every product goes through :meth:`LanczosState.matmat`, which counts it and applies the exact
power-of-two scale of :func:`~fastspec.linalg.operator.safe_scale` chosen at the first product.

Under a process group, ``V`` and ``AV`` hold this rank's slice of every vector (``[M, P/W]``,
:attr:`LanczosState.sh`); every operation on length-``P`` data goes through that
:class:`~fastspec.linalg.sharded.Sharding`, and everything else (``T``, ``C``, the counters) is
the same on every rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from fastspec.linalg import _kernels
from fastspec.linalg.lanczos.result import Reporter
from fastspec.linalg.lanczos.storage import BasisStorage
from fastspec.linalg.operator import LinearOperator, apply_scale, safe_scale
from fastspec.linalg.sharded import Sharding

__all__ = ["Counters", "LanczosState"]


@dataclass
class Counters:
    """Positions in the basis and the counters of a run."""

    n_lock: int = 0  # locked vectors: rows [0, n_lock)
    m: int = 0  # processed active vectors: rows [n_lock, n_lock + m)
    c0: int = 0  # the pending block couples to active columns [c0, m)
    C: torch.Tensor | None = None  # [b, m - c0] float64 coupling of the pending block
    locked_theta: np.ndarray = field(default_factory=lambda: np.empty(0))
    anorm: float = 0.0
    num_matvecs: int = 0
    num_restarts: int = 0
    num_single_pass: int = 0  # orthonormalisations that needed one Gram–Schmidt pass
    # invariant-subspace breakdowns and the fresh-start confirmation (see convergence.confirmed)
    broke: bool = False
    verify_values: np.ndarray | None = None


class LanczosState:
    """Settings, buffers and counters of one run; the functions of the solver modules act on it.

    Args:
        A: the (symmetric) operator.
        k: wanted pairs.
        which: ``"LA"``, ``"SA"``, ``"LM"`` or ``"BE"``.
        tol: relative residual tolerance.
        b: block size ``B``.
        M: basis size (rows of ``V``).
        max_restarts: cap on restarts.
        gen: generator of the random start and replacement directions.
        report: progress dispatcher.
        store_products: keep ``A V`` next to ``V``.
        max_growth: the largest basis a stalled run may grow to (``M`` when growth is off).
        sh: the vector layer (this rank's rows of every vector); one process by default.
        storage: where and in which dtype ``V`` and ``AV`` are stored; default the operator's
            dtype, in memory.
    """

    def __init__(
        self,
        A: LinearOperator,
        k: int,
        *,
        which: str,
        tol: float,
        b: int,
        M: int,
        max_restarts: int,
        gen: torch.Generator,
        report: Reporter,
        store_products: bool,
        max_growth: int | None = None,
        sh: Sharding | None = None,
        storage: BasisStorage | None = None,
    ) -> None:
        self.A, self.k, self.which, self.tol, self.b, self.M = A, k, which, tol, b, M
        self.max_growth = M if max_growth is None else max_growth
        self.progress = -1  # converged pairs at the last restart
        self.max_restarts = max_restarts
        self.gen, self.report = gen, report
        self.P = A.shape[0]
        self.sh = Sharding(self.P, None) if sh is None else sh
        self.eps = torch.finfo(A.dtype).eps
        self.small = torch.device("cpu") if A.device.type == "mps" else A.device
        self.storage = BasisStorage(A.dtype, A.device, None) if storage is None else storage
        #: the buffers hold the operator's dtype on its device (used as they are)
        self.direct = self.storage.dtype == A.dtype and self.storage.device == A.device
        self.V = self.storage.empty(M, self.sh.n)
        self.AV = self.storage.empty(M, self.sh.n) if store_products else None
        self.T = torch.zeros(M, M, dtype=torch.float64, device=self.small)
        self.s = Counters()
        self.scale: float | None = None  # power of two applied to every product

    def rows(self, lo: int, hi: int) -> torch.Tensor:
        """Basis rows ``[lo, hi)`` in the operator's dtype and device (a view when direct)."""
        V = self.V[lo:hi]
        return V if self.direct else V.to(device=self.A.device, dtype=self.A.dtype)

    def empty_like_basis(self, M: int) -> torch.Tensor:
        """A new ``[M, P/W]`` buffer from the run's storage (for growth and resume)."""
        return self.storage.empty(M, self.sh.n)

    def release(self) -> None:
        """Drop the buffers (a spilled basis is unmapped once nothing else holds it)."""
        self.V = self.V[:0]
        self.AV = None

    def matmat(self, Q: torch.Tensor) -> torch.Tensor:
        """``A Qᵀ`` for a block of rows ``Q`` ``[b, P]``, returned as rows (times ``scale``)."""
        out = self.sh.apply(self.A, Q.mT)
        self.s.num_matvecs += Q.shape[0]
        out = out.mT.contiguous()
        if self.scale is None:
            self.scale = self._output_scale(out)
        return apply_scale(out, self.scale)

    def _output_scale(self, W: torch.Tensor) -> float:
        """The scale from the first product (one host read)."""
        peak = float(self.sh.max(W.abs().amax() if W.numel() else W.new_zeros(())))
        if not math.isfinite(peak):
            raise ValueError(
                f"op returned NaN or inf (after {self.s.num_matvecs} matvecs); "
                "eigsh needs a finite operator"
            )
        return safe_scale(peak, W.dtype, self.P)

    def rotate(self, start: int, m: int, S: torch.Tensor) -> None:
        """``V[start : start+n] ← Sᵀ V[start : start+m]``, and the same for the stored ``AV``."""
        dev = self.A.device
        _kernels.rotate_rows(self.V, start, m, S, dtype=self.A.dtype, device=dev)
        if self.AV is not None:
            _kernels.rotate_rows(self.AV, start, m, S, dtype=self.A.dtype, device=dev)

    def move_rows(self, src: list[int], dst0: int) -> None:
        """Copy rows ``src`` (ascending, each >= its target) to ``dst0, dst0 + 1, …``."""
        for i, r in enumerate(src):
            if r != dst0 + i:
                self.V[dst0 + i] = self.V[r]
                if self.AV is not None:
                    self.AV[dst0 + i] = self.AV[r]

    def room_for_step(self) -> bool:
        """Whether the basis has room for one more block step (and the block after it)."""
        return self.s.n_lock + self.s.m + 2 * self.b <= self.M

    def enough(self) -> bool:
        """Whether the active basis is large enough for a convergence check to decide."""
        s = self.s
        return s.m >= self.k - s.n_lock + self.b
