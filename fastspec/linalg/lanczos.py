"""Block Lanczos with thick restart and locking: :func:`eigsh`.

Algorithm (the references are the papers the method comes from):

- Block Lanczos: G. H. Golub & R. Underwood, *The block Lanczos method for computing
  eigenvalues*, in Mathematical Software III (1977), 361–377. A block of ``B`` vectors is
  multiplied per step, so the operator sees ``[P, B]`` blocks (batched Hessian-vector products)
  and eigenvalues of multiplicity up to ``B`` are found without special care.
- Full reorthogonalisation, "twice is enough": every new block is orthogonalised against the
  whole basis, locked vectors included, by two classical Gram–Schmidt passes with a block QR
  after each (BCGS2: Giraud, Langou, Rozložník & van den Eshof, Numer. Math. 101, 2005;
  Barlow & Smoktunowicz, Numer. Math. 123, 2013). No ghost eigenvalues. The second pass is
  skipped when the first provably sufficed (the block form of the test of Daniel, Gragg,
  Kaufman & Stewart, Math. Comp. 30, 1976): after the local three-term recurrence it almost
  always does, which halves the basis sweeps per step. In float64 the first pass measures the
  new block against every basis row but updates it only along the rows where its component
  exceeds 64ε: the basis stays orthonormal to that level, and the update reads about a third
  of the rows (those of the locked vectors with the largest neglected coupling).
- Breakdown (an invariant subspace found): dependent directions of the new block are
  replaced by random ones orthogonal to the basis. Since a block Krylov space holds at most
  ``B`` copies of an eigenvalue, a run that broke down is only declared converged after a
  fresh random start, deflated against the wanted pairs, brings no new wanted pair.
- Thick restart: K. Wu & H. Simon, *Thick-restart Lanczos method for large symmetric eigenvalue
  problems*, SIAM J. Matrix Anal. Appl. 22(2), 2000, in its block form (Baglama, Calvetti &
  Reichel, *IRBL: an implicitly restarted block-Lanczos method*, SIAM J. Sci. Comput. 24(5),
  2003). When the basis is full, the wanted Ritz vectors plus a margin of the next ones are kept,
  together with the residual block; the projected matrix becomes an arrow (kept Ritz values on
  the diagonal, their coupling to the residual block in one block row) followed by the
  block-tridiagonal part of the next cycle.
- Locking: converged wanted Ritz pairs are moved out of the active basis at a restart. They stay
  in the orthogonalisation set, so the active space is the deflated one. Hard locking neglects
  a locked vector's coupling to the others, which enters their residuals, so a pair is locked
  only when its residual estimate is below ``tol`` times the smallest wanted ``|λ|`` (not its
  own: with power-law spectra the top pairs would otherwise spoil the small ones); a final
  Rayleigh–Ritz on the span of the returned vectors removes what coupling remains among them.

The projected problem is kept and solved in float64 with ``torch.linalg.eigh`` whatever the
operator's dtype. Host synchronisation happens once per block step (rank check of the new block
and finiteness of the operator's output, read together; in float64 once more, to choose the
basis rows the Gram–Schmidt update reads) and once per convergence check, never per dot product.

Reported residuals are never taken from the Lanczos estimates: they are ``‖Av − θv‖`` of the
returned vectors, from the stored products ``A V`` rotated like the basis (``store_products``)
or from one more ``matmat`` of the returned vectors (counted in ``num_matvecs``).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np
import torch

from fastspec.linalg import _kernels
from fastspec.linalg._random import make_generator, randn
from fastspec.linalg.operator import (
    DenseOperator,
    LinearOperator,
    aslinearoperator,
    checked_matmat,
    safe_scale,
)

__all__ = ["ConvergenceWarning", "EigshProgress", "EigshResult", "eigsh"]

Which = Literal["LA", "SA", "LM", "BE"]
_WHICH = ("LA", "SA", "LM", "BE")

#: a Ritz pair counts as converged inside the iteration when its residual estimate is below
#: ``_SAFETY * tol``; the margin absorbs rounding so that the recomputed residual is below ``tol``
_SAFETY = 0.5
#: singular values of the new block below ``_RANK_TOL * eps * ‖A Q‖`` mean breakdown
_RANK_TOL = 100.0
#: share of the non-wanted free space filled with kept Ritz vectors at a restart
_KEEP_FRACTION = 0.5
#: default cap on restarts
_DEFAULT_MAX_RESTARTS = 500
#: convergence checks (one eigh of the projected matrix each) may cost this share of the block
#: steps between them; at least this many checks happen per restart cycle
_CHECK_COST_SHARE = 0.25
_MIN_CHECKS_PER_CYCLE = 4
#: the second Gram–Schmidt pass is skipped when the first kept this share of every unit input
#: direction (DGKS's 1/√2; ARPACK uses 0.717)
_REORTH_ETA = 1.0 / math.sqrt(2.0)
#: in float64, a new block's first Gram–Schmidt pass leaves in components along basis rows below
#: this many ε (relative to the vector's norm): after the three-term recurrence the active rows
#: carry only rounding (measured on the digits-MLP Hessian: ≤ 1.1e-14 ≈ 47ε, median 8ε), so the
#: update reads just the rows that matter. float32 keeps full passes: 64ε = 7.6e-6 would show
#: in the orthogonality of the returned vectors.
_SKIP_OVERLAP = 64.0
#: ``store_products=None`` keeps ``A V`` when that buffer takes at most this many bytes
_STORE_PRODUCTS_MAX_BYTES = 1 << 30
#: a default basis that fills up without a new converged pair since the last restart is doubled
#: rather than restarted, up to this many vectors, as long as they fit in ``_GROW_MAX_BYTES``
#: and take at most a quarter of the space. Measured on the digits-MLP Hessian (P = 301,066,
#: tol 1e-6, B = 1, fixed bases): the bottom 10 (``which="SA"``, a cluster near −0.02) did not
#: converge in 500 restarts and 3523 products with a basis of 24, and took 790 products with
#: 64, 543 with 120 and 432 with 240; the top 10 took 30 products with 24, 64 and 120 alike.
_GROW_MAX = 128
_GROW_MAX_BYTES = 1 << 29


class ConvergenceWarning(UserWarning):
    """Some requested eigenpairs did not reach the tolerance; see ``result.converged``."""


@dataclass(frozen=True)
class EigshProgress:
    """A progress report, passed to a ``progress`` callback at every convergence check.

    Attributes:
        num_matvecs: operator-vector products so far.
        num_converged: wanted pairs whose residual estimate is below the tolerance.
        k: pairs requested.
        num_restarts: restarts so far.
        basis_size: vectors stored (locked + active + pending block).
    """

    num_matvecs: int
    num_converged: int
    k: int
    num_restarts: int
    basis_size: int


ProgressArg = Union[bool, Callable[[EigshProgress], Any]]


@dataclass(frozen=True)
class EigshResult:
    """Eigenpairs from :func:`eigsh`.

    Attributes:
        eigenvalues: ``[K]``, ordered as ``which`` asks: ``"LA"`` descending, ``"SA"``
            ascending, ``"LM"`` by descending magnitude, ``"BE"`` descending.
        eigenvectors: ``[P, K]`` (column ``i`` belongs to ``eigenvalues[i]``) or ``None``.
        residuals: ``[K]`` float64, ``‖A v − λ v‖ / max(|λ|, √ε ‖A‖)`` recomputed from the
            returned vectors (``ε`` the dtype's machine epsilon, ``‖A‖`` estimated by the
            largest Ritz value in magnitude; the floor only matters for eigenvalues near 0).
        converged: ``[K]`` bool, ``residuals <= tol``.
        num_matvecs: operator-vector products, including the final residual check.
        num_restarts: thick restarts performed.
        which: the ``which`` argument.
        tol: the ``tol`` argument.
        block_size: block size used.
        max_basis: basis cap used (vectors of length ``P``).
        method: ``"block-lanczos"`` or ``"dense"`` (small problems, see :func:`eigsh`).
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor | None
    residuals: torch.Tensor
    converged: torch.Tensor
    num_matvecs: int
    num_restarts: int
    which: str
    tol: float
    block_size: int
    max_basis: int
    method: str

    @property
    def k(self) -> int:
        """Number of pairs returned."""
        return int(self.eigenvalues.shape[0])

    @property
    def num_converged(self) -> int:
        """Number of pairs with ``residual <= tol``."""
        return int(self.converged.sum())

    @property
    def all_converged(self) -> bool:
        """Whether every returned pair converged."""
        return bool(self.converged.all())

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python summary (eigenvectors left out)."""
        return {
            "eigenvalues": self.eigenvalues.detach().cpu().tolist(),
            "residuals": self.residuals.detach().cpu().tolist(),
            "converged": self.converged.detach().cpu().tolist(),
            "num_matvecs": self.num_matvecs,
            "num_restarts": self.num_restarts,
            "which": self.which,
            "tol": self.tol,
            "block_size": self.block_size,
            "max_basis": self.max_basis,
            "method": self.method,
        }


# --------------------------------------------------------------------------------------------
# selection helpers (host side, on small numpy arrays)


def _priority(values: np.ndarray, which: str) -> np.ndarray:
    """Indices of ``values`` from most to least wanted."""
    if which == "LA":
        return np.argsort(-values, kind="stable")
    if which == "SA":
        return np.argsort(values, kind="stable")
    if which == "LM":
        return np.argsort(-np.abs(values), kind="stable")
    # "BE": alternate between the top and the bottom, top first
    desc = np.argsort(-values, kind="stable")
    n = values.shape[0]
    taken = np.zeros(n, dtype=bool)
    out: list[int] = []
    hi, lo = 0, n - 1
    while len(out) < n:
        while taken[desc[hi]]:
            hi += 1
        out.append(int(desc[hi]))
        taken[desc[hi]] = True
        if len(out) == n:
            break
        while taken[desc[lo]]:
            lo -= 1
        out.append(int(desc[lo]))
        taken[desc[lo]] = True
    return np.asarray(out, dtype=np.int64)


def _output_order(values: np.ndarray, which: str) -> np.ndarray:
    """Permutation putting the selected ``values`` in the documented output order."""
    if which == "BE":
        return np.argsort(-values, kind="stable")
    return _priority(values, which)


# --------------------------------------------------------------------------------------------
# validation and defaults


def _default_block_size(k: int, device: torch.device) -> int:
    if k > 256:
        return 16
    # on a CPU a block of products costs about as much per vector as single ones (measured on
    # the digits-MLP Hessian), while every extra column costs Krylov degree: stay small
    return max(1, min(2 if device.type == "cpu" else 8, k // 8))


def _default_max_basis(k: int, b: int) -> int:
    return max(2 * k + 2 * b, k + 6 * b, 24)


def _max_growth(M: int, P: int, dtype: torch.dtype) -> int:
    """The largest basis a default basis of ``M`` vectors may grow to (see ``_GROW_MAX``)."""
    vector_bytes = P * torch.finfo(dtype).bits // 8
    return max(M, min(_GROW_MAX, _GROW_MAX_BYTES // vector_bytes, P // 4))


def _validate(
    A: LinearOperator, k: Any, which: Any, tol: Any, block_size: Any, max_basis: Any
) -> None:
    P = A.shape[0]
    if A.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"op.dtype must be float32 or float64 for eigsh, got {A.dtype}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1 or k >= P:
        raise ValueError(f"k must satisfy 1 <= k < P = {P}, got k={k}")
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)):
        raise TypeError(f"tol must be a float, got {type(tol).__name__}")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol}")
    for name, val in (("block_size", block_size), ("max_basis", max_basis)):
        if val is None:
            continue
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise TypeError(f"{name} must be an int or None, got {type(val).__name__}")
        if val < 1:
            raise ValueError(f"{name} must be >= 1, got {val}")


def _check_symmetric(A: LinearOperator) -> None:
    if isinstance(A, DenseOperator):
        asym = A.asymmetry()
        eps = torch.finfo(A.dtype).eps
        if not math.isfinite(asym):
            raise ValueError("op contains NaN or inf")
        if asym > math.sqrt(eps):
            raise ValueError(
                f"op is not symmetric: max|A - Aᵀ| / max|A| = {asym:.3g} "
                f"(allowed {math.sqrt(eps):.3g}); eigsh needs a symmetric operator"
            )


def _prepare_v0(v0: Any, A: LinearOperator, b: int) -> torch.Tensor | None:
    if v0 is None:
        return None
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"v0 must be a torch.Tensor or None, got {type(v0).__name__}")
    if v0.dtype != A.dtype:
        raise TypeError(f"v0.dtype {v0.dtype} does not match op.dtype {A.dtype}")
    if v0.device != A.device:
        raise TypeError(f"v0 is on {v0.device}, but op is on {A.device}")
    V = v0.reshape(-1, 1) if v0.dim() == 1 else v0
    if V.dim() != 2 or V.shape[0] != A.shape[0] or V.shape[1] > b:
        raise ValueError(
            f"v0 must have shape [P] or [P, c] with P = {A.shape[0]} and c <= block_size = {b}, "
            f"got {tuple(v0.shape)}"
        )
    if not bool(torch.isfinite(V).all()):
        raise ValueError("v0 contains NaN or inf")
    if not bool((V.abs().sum(dim=0) > 0).all()):
        raise ValueError("v0 has a zero column")
    return V


class _Reporter:
    """Dispatch progress reports to a callback, tqdm, or stderr."""

    def __init__(self, progress: ProgressArg, k: int) -> None:
        self.callback: Callable[[EigshProgress], Any] | None = None
        self.bar: Any = None
        if callable(progress):
            self.callback = progress
        elif progress:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=k, desc="eigsh", unit="pair")
            except ImportError:
                self.callback = self._print

    @staticmethod
    def _print(p: EigshProgress) -> None:
        print(
            f"eigsh: {p.num_converged}/{p.k} converged, {p.num_matvecs} matvecs, "
            f"{p.num_restarts} restarts, basis {p.basis_size}",
            file=sys.stderr,
        )

    def __call__(self, p: EigshProgress) -> None:
        if self.callback is not None:
            self.callback(p)
        if self.bar is not None:
            self.bar.n = p.num_converged
            self.bar.set_postfix(matvecs=p.num_matvecs, restarts=p.num_restarts, refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------------------
# the solver


@dataclass
class _Check:
    """Outcome of one convergence check on the active projected matrix."""

    theta: np.ndarray  # [m] active Ritz values (float64, host)
    S: torch.Tensor  # [m, m] their eigenvectors (float64)
    conv: np.ndarray  # [m] bool, estimate <= _SAFETY * tol * scale
    lockable: np.ndarray  # [m] bool, estimate <= _SAFETY * tol * (smallest wanted scale)
    union_wanted: np.ndarray  # indices into concat(locked, active): the k most wanted
    done: bool
    num_converged: int
    top_unwanted_converged: bool  # the most wanted active Ritz pair outside the wanted set


@dataclass
class _State:
    n_lock: int = 0  # locked vectors: rows [0, n_lock)
    m: int = 0  # processed active vectors: rows [n_lock, n_lock + m)
    c0: int = 0  # the pending block couples to active columns [c0, m)
    C: torch.Tensor | None = None  # [b, m - c0] float64 coupling of the pending block
    locked_theta: np.ndarray = field(default_factory=lambda: np.empty(0))
    anorm: float = 0.0
    num_matvecs: int = 0
    num_restarts: int = 0
    num_single_pass: int = 0  # orthonormalisations that needed one Gram–Schmidt pass
    # invariant-subspace breakdowns and the fresh-start verification (see _BlockLanczos.run)
    broke: bool = False
    verify_values: np.ndarray | None = None


class _BlockLanczos:
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
        v0: torch.Tensor | None,
        report: _Reporter,
        store_products: bool,
        max_growth: int | None = None,
    ) -> None:
        self.A, self.k, self.which, self.tol, self.b, self.M = A, k, which, tol, b, M
        self.max_growth = M if max_growth is None else max_growth  # see _grow
        self.progress = -1  # converged pairs at the last restart
        self.max_restarts = max_restarts
        self.gen, self.report = gen, report
        self.P = A.shape[0]
        self.eps = torch.finfo(A.dtype).eps
        self.skip_below = _SKIP_OVERLAP * self.eps if A.dtype == torch.float64 else 0.0
        self.small = torch.device("cpu") if A.device.type == "mps" else A.device
        self.V = torch.empty(M, self.P, dtype=A.dtype, device=A.device)  # basis, one per row
        # A V, row for row, for the processed vectors (rotated and moved with V)
        self.AV = torch.empty_like(self.V) if store_products else None
        self.T = torch.zeros(M, M, dtype=torch.float64, device=self.small)
        self.s = _State()
        self.scale: float | None = None  # power of two applied to every product (_output_scale)
        self._start(v0)

    # -- block primitives ---------------------------------------------------------------------

    def _matmat(self, Q: torch.Tensor) -> torch.Tensor:
        """``A Qᵀ`` for a block of rows ``Q`` ``[b, P]``, returned as rows (times ``scale``)."""
        out = checked_matmat(self.A, Q.mT)
        self.s.num_matvecs += Q.shape[0]
        out = out.mT.contiguous()
        if self.scale is None:
            self.scale = self._output_scale(out)
        return out if self.scale == 1.0 else out * self.scale

    def _output_scale(self, W: torch.Tensor) -> float:
        """The power of two the solver multiplies every product by (:func:`~fastspec.linalg.operator.safe_scale`), from
        the first product. One host read."""
        peak = float(W.abs().amax()) if W.numel() else 0.0
        if not math.isfinite(peak):
            raise ValueError(
                f"op returned NaN or inf (after {self.s.num_matvecs} matvecs); "
                "eigsh needs a finite operator"
            )
        return safe_scale(peak, W.dtype, self.P)

    def _orthonormalize(
        self, W: torch.Tensor, ref_norm: torch.Tensor, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor, float, int]:
        """Orthonormalise a new block of rows ``W`` ``[b, P]`` against ``V[:rows]``; replace
        dependent directions.

        Block classical Gram–Schmidt, "twice is enough" (BCGS2, Barlow & Smoktunowicz 2013),
        written for columns ``Wᵀ``: one pass and a block QR, ``(I − VᵀV)Wᵀ = Q1ᵀ R1``; then one
        host synchronisation (after the one of the float64 selective pass below) reads the singular values of ``R1`` together with ``ref_norm``
        (``‖AQ‖``, whose finiteness also tells whether the operator returned NaN/inf) and the
        input's norms. The second pass (on the normalised ``Q1``, then a QR) is skipped when the
        first provably sufficed: the rounding left along ``range(Vᵀ)`` by one pass is ``O(ε)``
        per unit input vector, so ``‖VQ1ᵀ‖ ≲ cε / σ_min(R1 D)`` with ``D`` the inverse norms of
        the input, and ``σ_min(R1 D) >= 1/√2`` keeps ``Q1`` as orthogonal as a second pass would
        (the block form of the test of Daniel, Gragg, Kaufman & Stewart, Math. Comp. 30, 1976,
        also used by ARPACK). In Lanczos the three-term recurrence has already removed the large
        components, so the test passes on most steps and halves the basis sweeps.

        In float64 the first pass leaves in components below ``_SKIP_OVERLAP · ε`` (relative to
        the input vector's norm), so its update reads only the basis rows that matter (see
        :func:`_kernels.project_rows`): after the recurrence these are the few locked vectors
        whose neglected coupling is largest, while the active rows carry rounding only. The
        basis then stays orthonormal to ``O(_SKIP_OVERLAP · ε)``, every new block being
        measured against every row.

        Directions with singular value below ``_RANK_TOL · ε · ‖A‖`` mean an invariant subspace
        was found (breakdown); they are replaced by random directions orthogonal to the basis,
        with zero coupling.

        Returns:
            ``(Q, C, ref, n_bad)``: ``Q`` ``[b, P]`` orthonormal rows orthogonal to
            ``V[:rows]``, ``C`` ``[b, b]`` float64 with ``(I − VᵀV) Wᵀ ≈ Qᵀ C``, ``ref_norm`` on
            the host, and the number of replaced directions.
        """
        Vr = self.V[:rows]
        W1, sq_in = _kernels.project_rows(Vr, W, skip_below=self.skip_below)
        Q1, R1 = _kernels.block_qr(W1)
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
                f"op returned NaN or inf (after {self.s.num_matvecs} matvecs); "
                "eigsh needs a finite operator"
            )
        sv_h = host[:-2]
        bad = sv_h <= _RANK_TOL * self.eps * max(ref, self.s.anorm)
        if not bad.any():
            if host[-2] >= _REORTH_ETA:
                self.s.num_single_pass += 1
                return Q1, R1d, ref, 0
            Q2, R2 = _kernels.block_qr(_kernels.project_rows(Vr, Q1)[0])
            return Q2, R2.to(torch.float64) @ R1d, ref, 0
        # rank-revealing path: (I − VᵀV)Wᵀ = (Q1ᵀ U) diag(σ) Zᵀ; keep the directions with
        # non-negligible σ, complete with random ones
        U, svals, Zh = torch.linalg.svd(R1d)
        good = torch.as_tensor(~bad, device=Q1.device)
        goodC = torch.as_tensor(~bad, device=R1d.device)
        Qg = _kernels.project_rows(Vr, (U.mT.to(Q1.dtype) @ Q1)[good])[0]
        n_bad, ng = int(bad.sum()), int((~bad).sum())
        Z = randn(self.gen, self.P, n_bad, dtype=self.V.dtype, device=self.V.device)
        Z = _kernels.project_rows(Vr, _kernels.project_rows(Vr, Z.mT.contiguous())[0])[0]
        Qf, Rf = _kernels.block_qr(torch.cat([Qg, Z]))
        Qf = _kernels.project_rows(Vr, Qf)[0]  # the random part came from two passes; make sure
        Qf, Rf2 = _kernels.block_qr(Qf)
        Rg = (Rf2 @ Rf).to(torch.float64)[:ng, :ng]
        C = torch.zeros(self.b, self.b, dtype=torch.float64, device=R1d.device)
        C[:ng] = Rg @ (svals[goodC].unsqueeze(1) * Zh[goodC])
        return Qf, C, ref, n_bad

    # -- phases -------------------------------------------------------------------------------

    def _start(self, v0: torch.Tensor | None) -> None:
        b = self.b
        X = randn(self.gen, self.P, b, dtype=self.V.dtype, device=self.V.device)
        if v0 is not None:
            X[:, : v0.shape[1]] = v0
        ref = torch.linalg.matrix_norm(X)
        Q, _, _, _ = self._orthonormalize(X.mT.contiguous(), ref, 0)
        self.V[:b] = Q
        self.s.C = torch.zeros(b, 0, dtype=torch.float64, device=self.small)

    def _room_for_step(self) -> bool:
        return self.s.n_lock + self.s.m + 2 * self.b <= self.M

    def _step(self) -> None:
        s, b = self.s, self.b
        q0 = s.n_lock + s.m
        Q = self.V[q0 : q0 + b]  # [b, P]
        W = self._matmat(Q)
        if self.AV is not None:
            self.AV[q0 : q0 + b] = W
        ref = torch.linalg.matrix_norm(W)
        Q_prev = self.V[s.n_lock + s.c0 : q0]
        assert s.C is not None
        W, alpha = _kernels.three_term(W, Q, Q_prev, s.C.to(device=W.device, dtype=W.dtype))
        Qn, C, ref_h, n_bad = self._orthonormalize(W, ref, q0 + b)
        if n_bad:
            s.broke = True
        s.anorm = max(s.anorm, ref_h / math.sqrt(b))
        m = s.m
        a64 = alpha.to(device=self.small, dtype=torch.float64)
        self.T[m : m + b, m : m + b] = 0.5 * (a64 + a64.mT)
        Cs = s.C.to(self.small)
        self.T[m : m + b, s.c0 : m] = Cs
        self.T[s.c0 : m, m : m + b] = Cs.mT
        self.V[q0 + b : q0 + 2 * b] = Qn
        s.m = m + b
        s.c0 = m
        s.C = C.to(self.small)

    def _check(self) -> _Check:
        s = self.s
        m = s.m
        theta_d, S = torch.linalg.eigh(self.T[:m, :m])
        assert s.C is not None
        est_d = torch.linalg.vector_norm(s.C @ S[s.c0 : m], dim=0)
        host = torch.stack([theta_d, est_d]).cpu().numpy()
        theta, est = host[0], host[1]
        if not np.isfinite(theta).all():
            raise ValueError("op returned NaN or inf (non-finite projected matrix)")
        s.anorm = max(s.anorm, float(np.abs(theta).max(initial=0.0)))
        scale = np.maximum(np.abs(theta), math.sqrt(self.eps) * s.anorm)
        conv = est <= _SAFETY * self.tol * scale
        nl = s.n_lock
        union = np.concatenate([s.locked_theta, theta])
        wanted = _priority(union, self.which)[: self.k]
        active_wanted = wanted[wanted >= nl] - nl
        # hard locking neglects a locked vector's coupling to the rest, which then enters the
        # other pairs' residuals: lock only below what the most demanding wanted pair tolerates
        floor = float(np.maximum(np.abs(union[wanted]), math.sqrt(self.eps) * s.anorm).min())
        lockable = est <= _SAFETY * self.tol * np.minimum(scale, floor)
        num_conv = int((wanted < nl).sum() + conv[active_wanted].sum())
        enough = union.shape[0] >= self.k and m >= self.k - nl + self.b
        done = bool(enough and conv[active_wanted].all())
        is_wanted = np.zeros(m, dtype=bool)
        is_wanted[active_wanted] = True
        unwanted = [int(i) for i in _priority(theta, self.which) if not is_wanted[i]]
        top_unwanted_converged = bool(unwanted and conv[unwanted[0]])
        self.report(
            EigshProgress(
                num_matvecs=s.num_matvecs,
                num_converged=num_conv,
                k=self.k,
                num_restarts=s.num_restarts,
                basis_size=nl + m + self.b,
            )
        )
        return _Check(theta, S, conv, lockable, wanted, done, num_conv, top_unwanted_converged)

    def _rotate(self, start: int, m: int, S: torch.Tensor) -> None:
        """``V[start : start+n] ← Sᵀ V[start : start+m]``, and the same for the stored ``AV``."""
        _kernels.rotate_rows(self.V, start, m, S)
        if self.AV is not None:
            _kernels.rotate_rows(self.AV, start, m, S)

    def _move_rows(self, src: list[int], dst0: int) -> None:
        """Copy rows ``src`` (ascending, each >= its target) to ``dst0, dst0 + 1, …``."""
        for i, r in enumerate(src):
            if r != dst0 + i:
                self.V[dst0 + i] = self.V[r]
                if self.AV is not None:
                    self.AV[dst0 + i] = self.AV[r]

    def _drop_displaced_locked(self, ck: _Check) -> int:
        """Remove locked vectors no longer among the k most wanted (rare); new lock count."""
        s, nl = self.s, self.s.n_lock
        keep_locked = np.sort(ck.union_wanted[ck.union_wanted < nl])
        if keep_locked.shape[0] < nl:
            rows = [int(r) for r in keep_locked] + list(range(nl, nl + s.m + self.b))
            self._move_rows(rows, 0)
            s.locked_theta = s.locked_theta[keep_locked]
            s.n_lock = int(keep_locked.shape[0])
        return s.n_lock

    def _fresh_start(self, ck: _Check) -> None:
        """Lock every wanted pair, drop the rest, restart from a fresh random block."""
        s, b = self.s, self.b
        nl0, m = s.n_lock, s.m
        active_wanted = [int(i) for i in ck.union_wanted[ck.union_wanted >= nl0] - nl0]
        nl = self._drop_displaced_locked(ck)
        sel = torch.as_tensor(active_wanted, dtype=torch.long, device=ck.S.device)
        self._rotate(nl, m, ck.S[:, sel])
        n_lock_new = nl + len(active_wanted)
        X = randn(self.gen, self.P, b, dtype=self.V.dtype, device=self.V.device)
        Q, _, _, _ = self._orthonormalize(
            X.mT.contiguous(), torch.linalg.matrix_norm(X), n_lock_new
        )
        self.V[n_lock_new : n_lock_new + b] = Q
        s.locked_theta = np.concatenate([s.locked_theta, ck.theta[active_wanted]])
        s.n_lock, s.m, s.c0 = n_lock_new, 0, 0
        s.C = torch.zeros(b, 0, dtype=torch.float64, device=self.small)
        self.T.zero_()
        s.num_restarts += 1

    def _restart(self, ck: _Check) -> None:
        """Thick restart: lock converged wanted pairs, keep the next most wanted Ritz vectors."""
        s, b, M = self.s, self.b, self.M
        nl, m = s.n_lock, s.m
        wanted = ck.union_wanted
        active_wanted = wanted[wanted >= nl] - nl
        new_lock = [int(i) for i in active_wanted if ck.lockable[i]]
        nl = self._drop_displaced_locked(ck)
        n_lock_new = nl + len(new_lock)
        # how many Ritz vectors to keep: the wanted ones plus half of the remaining space
        free = M - n_lock_new - b  # rows for the active basis (the pending block needs b)
        k_act = max(0, self.k - n_lock_new)
        locked_set = set(new_lock)
        candidates = [int(i) for i in _priority(ck.theta, self.which) if int(i) not in locked_set]
        n_keep = min(
            free - b, len(candidates), k_act + max(b, int(_KEEP_FRACTION * (free - k_act)))
        )
        keep = candidates[:n_keep]
        sel = torch.as_tensor(new_lock + keep, dtype=torch.long, device=ck.S.device)
        self._rotate(nl, m, ck.S[:, sel])
        n_sel = len(new_lock) + n_keep
        self.V[nl + n_sel : nl + n_sel + b] = self.V[nl + m : nl + m + b].clone()
        assert s.C is not None
        keep_t = torch.as_tensor(keep, dtype=torch.long, device=ck.S.device)
        s.C = s.C @ ck.S[s.c0 : m][:, keep_t]
        s.c0 = 0
        s.m = n_keep
        self.T.zero_()
        theta_keep = torch.as_tensor(ck.theta[keep], dtype=torch.float64, device=self.small)
        self.T[:n_keep, :n_keep] = torch.diag(theta_keep)
        s.locked_theta = np.concatenate([s.locked_theta, ck.theta[new_lock]])
        s.n_lock = n_lock_new
        s.num_restarts += 1

    def _grow(self) -> None:
        """Double the basis (up to ``max_growth``), keeping every row and the projected matrix."""
        M = min(2 * self.M, self.max_growth)
        V = torch.empty(M, self.P, dtype=self.V.dtype, device=self.V.device)
        V[: self.M] = self.V
        self.V = V
        if self.AV is not None:
            AV = torch.empty_like(V)
            AV[: self.M] = self.AV
            self.AV = AV
        T = torch.zeros(M, M, dtype=self.T.dtype, device=self.T.device)
        T[: self.M, : self.M] = self.T
        self.T, self.M = T, M

    def _interval(self) -> int:
        """Block steps between convergence checks.

        A check costs an ``eigh`` of the ``m × m`` projected matrix (about ``10 m³`` flops); a
        block step the basis sweeps of the orthogonalisation (taken as the four of two passes,
        ``8 P n B``, although the second pass is usually skipped). Checks
        are spaced so that they cost at most ``_CHECK_COST_SHARE`` of the steps between them,
        and at least ``_MIN_CHECKS_PER_CYCLE`` happen per restart cycle.
        """
        s, b = self.s, self.b
        steps = max(1, (self.M - s.n_lock - s.m - b) // b)
        m = self.M - s.n_lock - b  # projected size near the end of the cycle
        step_cost = 8.0 * self.P * (self.M - b) * b
        by_cost = math.ceil(10.0 * m**3 / (_CHECK_COST_SHARE * step_cost))
        return max(1, min(by_cost, math.ceil(steps / _MIN_CHECKS_PER_CYCLE)))

    def _enough(self) -> bool:
        s = self.s
        return s.m >= self.k - s.n_lock + self.b

    def _confirmed(self, ck: _Check) -> bool:
        """Whether a converged run may stop.

        A block Krylov space holds at most ``B`` vectors of one eigenspace; after an invariant
        subspace was found (breakdown), or when ``B`` equal values are among the wanted ones,
        a wanted eigenvalue may have copies the space never saw. Such runs are confirmed by a
        fresh start: every wanted pair is locked and a new
        random block, orthogonal to them, is iterated until its most wanted Ritz pair
        outside the wanted set has converged. If that brings no new wanted pair, the wanted
        set is complete; otherwise the check is repeated.
        """
        s = self.s
        union = np.concatenate([s.locked_theta, ck.theta])
        vals = np.sort(union[ck.union_wanted])
        scale = np.maximum(np.abs(vals), math.sqrt(self.eps) * s.anorm)
        if not s.broke and s.verify_values is None and not self._full_cluster(vals, scale):
            return True
        prev = s.verify_values
        same = (
            prev is not None
            and prev.shape == vals.shape
            and bool((np.abs(prev - vals) <= self.tol * scale).all())
        )
        if same and ck.top_unwanted_converged:
            return True
        nl = s.n_lock
        active_wanted = ck.union_wanted[ck.union_wanted >= nl] - nl
        if not ck.lockable[active_wanted].all():
            return False  # iterate on until every wanted pair can be locked
        if not same and s.num_restarts < self.max_restarts:
            s.verify_values = vals
            self._fresh_start(ck)
        return False

    def _full_cluster(self, vals: np.ndarray, scale: np.ndarray) -> bool:
        """Whether ``B >= 2`` equal (within ``tol``) values sit among the sorted wanted ``vals``.

        One start block shows at most ``B`` copies of an eigenvalue, so ``B`` copies are the
        signature of a possibly larger multiplicity (with ``B = 1`` nothing can be seen).
        """
        b = self.b
        if b < 2 or vals.shape[0] < b:
            return False
        same = np.diff(vals) <= self.tol * scale[1:]
        run = 1
        for eq in same:
            run = run + 1 if eq else 1
            if run >= b:
                return True
        return False

    def run(self, *, return_eigenvectors: bool) -> EigshResult:
        since, interval = 0, self._interval()
        while True:
            if self._room_for_step():
                self._step()
                since += 1
                if self._room_for_step() and (since < interval or not self._enough()):
                    continue
            ck = self._check()
            since = 0
            if ck.done:
                if self._confirmed(ck):
                    break
                if self.s.m == 0:  # a fresh start happened: take steps before checking again
                    interval = self._interval()
                    continue
            if not self._room_for_step():
                if self.s.num_restarts >= self.max_restarts:
                    break
                if ck.num_converged <= self.progress and self.M < self.max_growth:
                    self._grow()  # no new pair in this cycle: widen instead of restarting
                else:
                    self.progress = ck.num_converged
                    self._restart(ck)
                interval = self._interval()
        return self._finish(ck, return_eigenvectors=return_eigenvectors)

    def _finish(self, ck: _Check, *, return_eigenvectors: bool) -> EigshResult:
        """Ritz vectors of the k most wanted pairs, Rayleigh–Ritz, recomputed residuals."""
        s, k, b = self.s, self.k, self.b
        nl, m = s.n_lock, s.m
        wanted = ck.union_wanted
        locked_rows = [int(r) for r in np.sort(wanted[wanted < nl])]
        active = torch.as_tensor(wanted[wanted >= nl] - nl, dtype=torch.long, device=ck.S.device)
        self._rotate(nl, m, ck.S[:, active])
        self._move_rows(locked_rows + list(range(nl, nl + active.shape[0])), 0)
        X = self.V[:k]  # [k, P], orthonormal rows
        theta = torch.empty(k, dtype=torch.float64, device=self.small)
        res = torch.empty(k, dtype=torch.float64, device=self.small)
        if self.AV is None:
            self._finish_recompute(X, theta, res, rayleigh_ritz=len(locked_rows) > 0)
        else:
            self._finish_stored(X, theta, res, rayleigh_ritz=len(locked_rows) > 0)
        theta_h = theta.cpu().numpy()
        res_h = res.cpu().numpy()
        if not (np.isfinite(theta_h).all() and np.isfinite(res_h).all()):
            raise ValueError("op returned NaN or inf while recomputing residuals")
        s.anorm = max(s.anorm, float(np.abs(theta_h).max()))
        if self.scale not in (None, 1.0):  # undo the exact power-of-two scaling
            theta_h, res_h, s.anorm = theta_h / self.scale, res_h / self.scale, s.anorm / self.scale
        eigvecs = None
        perm = _output_order(theta_h, self.which)
        if return_eigenvectors:
            eigvecs = X.index_select(0, torch.as_tensor(perm, device=X.device)).mT
        return _make_result(
            theta_h[perm],
            res_h[perm],
            eigvecs,
            anorm=s.anorm,
            eps=self.eps,
            A=self.A,
            num_matvecs=s.num_matvecs,
            num_restarts=s.num_restarts,
            which=self.which,
            tol=self.tol,
            block_size=b,
            max_basis=self.M,
            method="block-lanczos",
        )

    def _finish_recompute(
        self, X: torch.Tensor, theta: torch.Tensor, res: torch.Tensor, *, rayleigh_ritz: bool
    ) -> None:
        """Final Rayleigh quotients and residuals from ``k`` (or ``2k``) fresh products.

        With ``rayleigh_ritz`` (locked vectors take part), a Rayleigh–Ritz on ``span(X)``
        removes their neglected coupling to the active ones; ``AX`` is kept in the free rows of
        the buffer when there is room, else recomputed.
        """
        k, b = self.k, self.b
        store = self.M >= 2 * k
        G = torch.zeros(k, k, dtype=torch.float64, device=self.small) if rayleigh_ritz else None
        for j in range(0, k, b):
            c = min(b, k - j)
            AXc = self._matmat(X[j : j + c])
            if G is not None:
                G[:, j : j + c] = (X @ AXc.mT).to(self.small, torch.float64)
                if store:
                    self.V[k + j : k + j + c] = AXc
            else:
                self._rayleigh_residual(X[j : j + c], AXc, theta, res, j)
        if G is None:
            return
        theta_g, U = torch.linalg.eigh(0.5 * (G + G.mT))
        _kernels.rotate_rows(self.V, 0, k, U)
        if store:
            _kernels.rotate_rows(self.V, k, k, U)
        for j in range(0, k, b):
            c = min(b, k - j)
            if store:
                AXc = self.V[k + j : k + j + c]
                self._rayleigh_residual(X[j : j + c], AXc, theta, res, j, theta_g[j : j + c])
            else:
                AXc = self._matmat(X[j : j + c])
                self._rayleigh_residual(X[j : j + c], AXc, theta, res, j)

    def _finish_stored(
        self, X: torch.Tensor, theta: torch.Tensor, res: torch.Tensor, *, rayleigh_ritz: bool
    ) -> None:
        """Final Rayleigh quotients and residuals from the stored products ``AX = AV[:k]``.

        Every stored row is a product the operator returned, rotated and moved exactly like its
        basis row, so ``‖AX − θX‖`` is a residual of the returned vectors up to the rounding of
        those rotations (bounded by ``_stored_rounding``), not a recurrence estimate. A pair
        whose residual lies within that bound of the tolerance is recomputed with a fresh
        product, so the ``converged`` flags are exactly those of a recomputation.
        """
        assert self.AV is not None
        k, b = self.k, self.b
        AX = self.AV[:k]
        theta_known = None
        if rayleigh_ritz:
            G = (X @ AX.mT).to(self.small, torch.float64)
            theta_known, U = torch.linalg.eigh(0.5 * (G + G.mT))
            _kernels.rotate_rows(self.V, 0, k, U)
            _kernels.rotate_rows(self.AV, 0, k, U)
        for j in range(0, k, b):
            c = min(b, k - j)
            known = None if theta_known is None else theta_known[j : j + c]
            self._rayleigh_residual(X[j : j + c], AX[j : j + c], theta, res, j, known)
        theta_h, res_h = theta.cpu().numpy(), res.cpu().numpy()
        anorm = max(self.s.anorm, float(np.abs(theta_h).max()))
        bound = self._stored_rounding(anorm)
        scale = np.maximum(np.abs(theta_h), math.sqrt(self.eps) * anorm)
        unsure = np.flatnonzero(np.abs(res_h - self.tol * scale) <= bound)
        for j0 in range(0, unsure.shape[0], b):
            idx = torch.as_tensor(unsure[j0 : j0 + b], dtype=torch.long, device=X.device)
            Xc = X.index_select(0, idx)
            AXc = self._matmat(Xc)
            th = torch.empty(idx.shape[0], dtype=torch.float64, device=self.small)
            r = torch.empty_like(th)
            self._rayleigh_residual(Xc, AXc, th, r, 0)
            theta[idx.to(self.small)] = th
            res[idx.to(self.small)] = r

    def _stored_rounding(self, anorm: float) -> float:
        """Bound on ``‖AX_stored − A X‖`` per vector: each rotation of the ``M``-row buffers
        adds about ``√M ε ‖A‖``; a factor 10 of margin."""
        rotations = 2 * self.s.num_restarts + 2
        return 10.0 * rotations * math.sqrt(self.M) * self.eps * anorm

    def _rayleigh_residual(
        self,
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
            th = (Xc * AXc).sum(dim=1)
        else:
            th = theta_known.to(device=Xc.device, dtype=Xc.dtype)
        r = torch.linalg.vector_norm(AXc - th.unsqueeze(1) * Xc, dim=1)
        theta[j : j + c] = th.to(self.small, torch.float64)
        res[j : j + c] = r.to(self.small, torch.float64)


def _make_result(
    theta: np.ndarray,
    res_abs: np.ndarray,
    eigvecs: torch.Tensor | None,
    *,
    anorm: float,
    eps: float,
    A: LinearOperator,
    num_matvecs: int,
    num_restarts: int,
    which: str,
    tol: float,
    block_size: int,
    max_basis: int,
    method: str,
) -> EigshResult:
    scale = np.maximum(np.abs(theta), math.sqrt(eps) * anorm)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, res_abs / np.where(scale > 0, scale, 1.0), res_abs)
    converged = rel <= tol
    if not converged.all():
        bad = int((~converged).sum())
        warnings.warn(
            f"eigsh: {bad} of {theta.shape[0]} eigenpairs did not reach tol={tol:g} "
            f"(worst relative residual {float(rel.max()):.3g}, {num_matvecs} matvecs, "
            f"{num_restarts} restarts); they are marked converged=False. Raise max_restarts or "
            "max_basis, or loosen tol (float32 cannot resolve eigenvalues much smaller than "
            "‖A‖ to relative tolerances near its epsilon).",
            ConvergenceWarning,
            stacklevel=3,
        )
    dev = A.device
    return EigshResult(
        eigenvalues=torch.as_tensor(theta.copy(), dtype=A.dtype, device=dev),
        eigenvectors=eigvecs,
        residuals=torch.as_tensor(rel.copy(), dtype=torch.float64, device=dev),
        converged=torch.as_tensor(converged.copy(), dtype=torch.bool, device=dev),
        num_matvecs=num_matvecs,
        num_restarts=num_restarts,
        which=which,
        tol=float(tol),
        block_size=block_size,
        max_basis=max_basis,
        method=method,
    )


def _dense_eigsh(
    A: LinearOperator,
    k: int,
    *,
    which: str,
    tol: float,
    block_size: int,
    max_basis: int,
    return_eigenvectors: bool,
    report: _Reporter,
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
    sel = _priority(evals_h, which)[:k]
    theta = evals_h[sel]
    perm = _output_order(theta, which)
    sel = sel[perm]
    X = evecs[:, torch.as_tensor(sel, device=evecs.device)].to(A.dtype)  # [P, k]
    res = np.empty(k)
    theta_out = np.empty(k)
    for j in range(0, k, block_size):
        c = min(block_size, k - j)
        Xc = X[:, j : j + c].contiguous()
        AXc = checked_matmat(A, Xc) * scale
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
    return _make_result(
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


def _store_products(store: Any, M: int, P: int, dtype: torch.dtype) -> bool:
    if store is None:
        return M * P * torch.finfo(dtype).bits // 8 <= _STORE_PRODUCTS_MAX_BYTES
    if not isinstance(store, bool):
        raise TypeError(f"store_products must be a bool or None, got {type(store).__name__}")
    return store


def eigsh(
    op: Any,
    k: int,
    *,
    which: Which = "LA",
    tol: float = 1e-6,
    block_size: int | None = None,
    max_basis: int | None = None,
    max_restarts: int | None = None,
    return_eigenvectors: bool = False,
    seed: int | None = None,
    v0: torch.Tensor | None = None,
    progress: ProgressArg = False,
    store_products: bool | None = None,
) -> EigshResult:
    """``k`` eigenpairs of a symmetric operator by thick-restarted block Lanczos.

    Args:
        op: a symmetric operator: anything :func:`~fastspec.linalg.aslinearoperator` accepts.
            float32 or float64.
        k: number of eigenpairs, ``1 <= k < P``.
        which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"LM"`` largest
            magnitude, ``"BE"`` both ends (``ceil(k/2)`` from the top, ``floor(k/2)`` from the
            bottom).
        tol: relative residual tolerance: a pair is converged when
            ``‖Av − λv‖ <= tol · max(|λ|, √ε‖A‖)``. With float32 operators, tolerances much
            below ``1e-4`` are out of reach for eigenvalues far below ``‖A‖``; such pairs are
            reported as unconverged.
        block_size: vectors per operator call ``B``. Default for ``k <= 256``:
            ``max(1, min(2, k // 8))`` on CPU (a block of Hessian-vector products was not
            cheaper per vector there, and on the digits-MLP Hessian, ``k = 100``, ``B = 2`` took
            1124 products, ``B = 4`` 1240, ``B = 8`` 1572), ``max(1, min(8, k // 8))`` on other
            devices; 16 for ``k > 256``. A block finds eigenvalues of multiplicity up to ``B``
            without relying on rounding, and turns ``B`` products into one batched call
            (batched Hessian-vector products), but the Krylov degree is only basis size /
            ``B``, so it costs more products: measured on ``λ_i = i^(−1)``, ``P = 2·10⁴``,
            ``tol = 1e-6`` (products including the final residual check), ``k = 10``: 43 at
            ``B = 1``, 98 at ``B = 8``; ``k = 100``: 325 at ``B = 1``, 420 at ``B = 8``;
            ``k = 1000``: 3264 at ``B = 8``, 3400 at ``B = 16``. For large ``k`` the basis
            sweeps of the orthogonalisation dominate (memory-bound, one set per block step),
            and ``B = 16`` halved the wall time there.
        max_basis: cap on stored basis vectors of length ``P`` (locked, active and the pending
            block); peak memory is about ``max_basis · P`` elements (twice that with
            ``store_products``) plus a few blocks and a ``max_basis²`` float64 projected matrix.
            Default ``max(2k + 2B, k + 6B, 24)``: like ARPACK's ``ncv = 2k + 1``, twice the
            wanted count leaves the restart a margin of unwanted Ritz vectors as wide as the
            wanted set, which keeps the convergence rate close to that of an unrestarted run
            while bounding memory at ``~2k`` vectors. A default basis that fills up with no new
            converged pair since the last restart (a hard end of the spectrum, such as a
            cluster) is doubled instead of restarted, up to ``min(128, P / 4)`` vectors that fit
            in 512 MiB; the result's ``max_basis`` is the final size. A given ``max_basis`` is
            kept. Must be at least ``k + 2B``. Lower it when ``2k · P`` elements do not fit.
        max_restarts: cap on thick restarts (default 500); pairs not converged by then are
            returned with ``converged=False`` and a :class:`ConvergenceWarning`.
        return_eigenvectors: also return the ``[P, K]`` eigenvectors.
        seed: seed of the random start block (and of replacement directions after a
            breakdown); ``None`` draws a fresh seed.
        v0: ``[P]`` or ``[P, c]`` (``c <= B``) start vectors, completed with random ones.
        progress: ``True`` shows a tqdm bar (or prints to stderr without tqdm); a callable
            receives an :class:`EigshProgress` at every convergence check. Off by default.
        store_products: keep ``A V`` next to the basis (a second ``max_basis × P`` buffer), so
            that the final residuals come from the stored products instead of ``k`` more
            (``2k`` with locking) products; only pairs whose residual is within rounding of
            ``tol`` are recomputed. Default: on when the extra buffer takes at most 1 GiB.

    Returns:
        An :class:`EigshResult`. Pairs that missed ``tol`` are returned with
        ``converged=False`` and a :class:`ConvergenceWarning`; nothing is dropped silently.

    Raises:
        TypeError: unsupported ``op``, a non-int ``k``, a dtype other than float32/float64,
            ``v0`` with another dtype or device than ``op``, or an operator output of the wrong
            dtype or device.
        ValueError: ``k`` outside ``[1, P)``, unknown ``which``, ``tol <= 0``, bad
            ``block_size``/``max_basis``/``v0``, a non-square or (dense and) non-symmetric
            operator, or NaN/inf produced by the operator.

    Notes:
        When the basis would hold (nearly) the whole space, ``P <= max_basis + B`` (this covers
        ``P`` smaller than the block and ``k`` close to ``P``), Lanczos cannot save anything:
        the operator is materialised with ``P`` products and solved by dense ``eigh`` in
        float64 (``method="dense"``). Residuals are recomputed in both cases (in
        the Lanczos case from stored products when ``store_products``; see that argument).

        A block Krylov space holds at most ``B`` vectors of one eigenspace. When the space
        becomes invariant (breakdown), fresh random directions are injected and convergence is
        confirmed by a fresh deflated start (counted in ``num_restarts``), so that (with
        probability one, in exact arithmetic) every copy of a wanted eigenvalue is found.
        Without a breakdown, copies beyond ``B`` come only from
        rounding errors once the first copies are locked (this worked in the tests, e.g.
        multiplicity 12 with ``B = 4``, but is not guaranteed): choose ``block_size`` at least
        the multiplicity you expect.

        ``return_eigenvectors=True`` adds a ``[K, P]`` copy (returned as its ``[P, K]``
        transpose) to the peak memory.
    """
    A = aslinearoperator(op)
    _validate(A, k, which, tol, block_size, max_basis)
    k = int(k)
    P = A.shape[0]
    b = int(block_size) if block_size is not None else _default_block_size(k, A.device)
    M = int(max_basis) if max_basis is not None else _default_max_basis(k, b)
    store = _store_products(store_products, M, P, A.dtype)
    if max_restarts is None:
        max_restarts = _DEFAULT_MAX_RESTARTS
    elif isinstance(max_restarts, bool) or not isinstance(max_restarts, (int, np.integer)):
        raise TypeError(f"max_restarts must be an int or None, got {type(max_restarts).__name__}")
    elif max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
    _check_symmetric(A)
    v0_block = _prepare_v0(v0, A, b)
    report = _Reporter(progress, k)
    try:
        if P <= M + b:
            return _dense_eigsh(
                A,
                k,
                which=which,
                tol=float(tol),
                block_size=min(b, P),
                max_basis=min(M, P),
                return_eigenvectors=return_eigenvectors,
                report=report,
            )
        if M < k + 2 * b:
            raise ValueError(
                f"max_basis must be >= k + 2*block_size = {k + 2 * b} (got {M}): the basis holds "
                "the k wanted vectors, the current block and the next one"
            )
        solver = _BlockLanczos(
            A,
            k,
            which=which,
            tol=float(tol),
            b=b,
            M=M,
            max_restarts=int(max_restarts),
            gen=make_generator(seed),
            v0=v0_block,
            report=report,
            store_products=store,
            max_growth=None if max_basis is not None else _max_growth(M, P, A.dtype),
        )
        return solver.run(return_eigenvectors=return_eigenvectors)
    finally:
        report.close()
