"""The vector kernels of the Krylov solvers, one small function each.

These are the only places where :mod:`fastspec.linalg` touches length-``P`` data besides the
operator itself, so each is the swap point for a fused native op from :mod:`fastspec.ops`
where one is measured faster:

- :func:`project_rows`: one classical Gram–Schmidt pass ``W ← W − (WVᵀ)V`` against a basis
  stored as rows, with the input norms, optionally updating only along the rows where the
  block has components above a threshold (two BLAS calls: a fused native pass lost to them at
  every block width, ``benchmarks/results/ops_block_orthogonalize.md``); the
  "twice is enough" orthonormalisation built on it (BCGS2 with a DGKS test that skips the
  second pass when the first one provably sufficed) lives in
  :meth:`fastspec.linalg.lanczos._BlockLanczos._orthonormalize`, which owns the host
  synchronisation the test needs;
- :func:`block_qr`: the QR factorisation of a block;
- :func:`three_term`: the block three-term recurrence ``W ← W − C_prev Q_prev``,
  ``α = QWᵀ``, ``W ← W − αᵀQ``;
- :func:`rotate_rows`: the in-place basis rotation ``V[:n] ← Sᵀ V[:m]`` of a thick restart,
  done in column chunks so that it needs no second basis-sized buffer;
- :func:`lanczos_step_batched`: one step of several independent single-vector Lanczos runs (SLQ).

Under a process group the vectors are split by rows of ``P`` over the ranks: the kernels that
take inner products then take a ``reduce`` (one all-reduce of the whole block of partial sums);
the others act on each rank's slice alone.

A basis stored in another dtype or on another device than the block (a lower-precision or
memory-mapped basis, :mod:`fastspec.linalg.lanczos.storage`) is read in row blocks of at most
``_CHUNK_ELEMS`` elements, each upcast to the block's dtype and device, so the arithmetic is in
the block's dtype and the transient is one row block, not the basis (:func:`gram_rows`,
:func:`subtract_rows`, and :func:`rotate_rows` with ``dtype``).

Blocks are handled as rows (``[B, P]``, like the basis ``V`` ``[M, P]``): the products then read
memory in order (faster than on ``[P, B]`` columns for both the pass and the recurrence:
``benchmarks/results/hessian_vs_peers.md``). Shapes use the project's letters: ``P`` the operator dimension, ``B`` the
block size, ``M`` the Krylov basis size. Only :func:`project_rows` with ``skip_below``
synchronises with the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

#: the sum over ranks of partial inner products (:meth:`fastspec.linalg.sharded.Sharding.sum`)
Reduce = Callable[[torch.Tensor], torch.Tensor]

#: elements of a temporary chunk (about 32 MiB of float64): a column chunk of
#: :func:`rotate_rows`, or one upcast row block of a basis stored in another dtype or device
_CHUNK_ELEMS = 1 << 22


def _direct(V: torch.Tensor, W: torch.Tensor) -> bool:
    """Whether basis rows ``V`` can be used with ``W`` as they are (same dtype and device)."""
    return V.dtype == W.dtype and V.device == W.device


def _row_blocks(
    V: torch.Tensor, lo: int, hi: int, like: torch.Tensor
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Rows ``[lo, hi)`` of ``V`` in blocks ``(a, b, V[a:b])`` upcast to ``like``'s dtype/device."""
    step = max(1, _CHUNK_ELEMS // max(1, V.shape[1]))
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        yield a, b, V[a:b].to(device=like.device, dtype=like.dtype)


def gram_rows(W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``W Vᵀ`` ``[B, n]`` for a block ``W`` ``[B, P]`` and basis rows ``V`` ``[n, P]``.

    A ``V`` of another dtype or device is read in upcast row blocks.
    """
    if _direct(V, W):
        return W @ V.mT
    out = W.new_empty(W.shape[0], V.shape[0])
    for a, b, Vb in _row_blocks(V, 0, V.shape[0], W):
        out[:, a:b] = W @ Vb.mT
    return out


def subtract_rows(W: torch.Tensor, C: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``W − C V`` for ``W`` ``[B, P]``, ``C`` ``[B, n]`` and basis rows ``V`` ``[n, P]``.

    A ``V`` of another dtype or device is read in upcast row blocks.
    """
    if _direct(V, W):
        return torch.addmm(W, C, V, alpha=-1.0)
    for a, b, Vb in _row_blocks(V, 0, V.shape[0], W):
        W = torch.addmm(W, C[:, a:b], Vb, alpha=-1.0)
    return W


def project_rows(
    V: torch.Tensor,
    W: torch.Tensor,
    *,
    skip_below: float = 0.0,
    reduce: Reduce | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One classical Gram–Schmidt pass of a block of rows against basis rows: ``W − (W Vᵀ) V``.

    With ``skip_below > 0`` the coefficients ``C = W Vᵀ`` (one basis read) decide which rows
    take part in the update: rows whose every coefficient is at most ``skip_below`` times the
    norm of its block row are left out, runs of the others (gaps of up to ``_GAP`` rows
    bridged) are subtracted, so the update reads only those rows. The result is
    orthogonal to every basis row to within ``skip_below`` (relative), as a full pass would be
    to within rounding. Choosing the rows reads ``C`` on the host (a device synchronisation).

    Args:
        V: ``[n, P]`` basis vectors as (contiguous) rows; ``n`` may be 0. Another dtype or
            device than ``W`` is read in upcast row blocks.
        W: ``[B, P]`` block as (contiguous) rows.
        skip_below: relative size of the components that may be left in (0: a full pass).
        reduce: sums partial inner products over ranks when ``V`` and ``W`` hold slices of
            their vectors; the coefficients and the norms go in one call.

    Returns:
        ``(W_out [B, P], sq_norms [B])``, the squared row norms of the input in float64.
    """
    sq_w = (W * W).sum(dim=1)
    C = gram_rows(W, V) if V.shape[0] else None  # [B, n]
    if reduce is not None:
        CS = reduce(torch.cat([sq_w.unsqueeze(1)] + ([] if C is None else [C]), dim=1))
        sq_w, C = CS[:, 0], (None if C is None else CS[:, 1:])
    sq = sq_w.to(torch.float64)
    if C is None:
        return W, sq
    if skip_below == 0.0:
        return subtract_rows(W, C, V), sq
    limit = skip_below * sq.sqrt().to(C.dtype).unsqueeze(1)
    rows = (C.abs() > limit).any(dim=0).nonzero().flatten().tolist()
    out = W
    for lo, hi in _runs(rows):
        out = subtract_rows(out, C[:, lo:hi], V[lo:hi])
    return out, sq


#: rows between two selected ones that :func:`project_rows` reads rather than starting a new
#: update (each update also reads and writes the block)
_GAP = 8


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Ascending row indices → ``[lo, hi)`` ranges covering them, gaps ``<= _GAP`` bridged."""
    runs: list[tuple[int, int]] = []
    for r in rows:
        if runs and r - runs[-1][1] <= _GAP:
            runs[-1] = (runs[-1][0], r + 1)
        else:
            runs.append((r, r + 1))
    return runs


def block_qr(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin Householder QR of a block of rows.

    Args:
        W: ``[B, P]``.

    Returns:
        ``(Q, R)``: ``Q`` ``[B, P]`` with orthonormal (contiguous) rows, ``R`` ``[B, B]`` upper
        triangular, ``W = Rᵀ Q`` (the QR of the columns ``Wᵀ = Qᵀ R``).
    """
    Q, R = torch.linalg.qr(W.mT, mode="reduced")
    return Q.mT.contiguous(), R


def three_term(
    W: torch.Tensor,
    Q: torch.Tensor,
    Q_prev: torch.Tensor,
    C_prev: torch.Tensor,
    *,
    reduce: Reduce | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block Lanczos recurrence for ``W = A Q``, on blocks of rows.

    In a thick-restarted run, ``Q_prev`` is the previous block (``C_prev`` its ``[B, B]``
    coupling) or, right after a restart, the kept Ritz vectors (``C_prev`` the ``[B, L]`` arrow).

    Args:
        W: ``[B, P]``, the product ``A Q`` as rows.
        Q: ``[B, P]``, the current block.
        Q_prev: ``[L, P]`` (``L`` may be 0); basis rows, possibly of another dtype or device.
        C_prev: ``[B, L]`` with ``A Q_prevᵀ = … + Qᵀ C_prev``.
        reduce: sums the partial ``α`` over ranks when the rows hold slices of the vectors.

    Returns:
        ``(W, alpha)``: ``W − C_prev Q_prev − αᵀ Q`` and ``α = Q (W − C_prev Q_prev)ᵀ`` ``[B, B]``.
    """
    if Q_prev.shape[0] > 0:
        W = subtract_rows(W, C_prev, Q_prev)
    alpha = Q @ W.mT
    if reduce is not None:
        alpha = reduce(alpha)
    W = torch.addmm(W, alpha.mT, Q, alpha=-1.0)
    return W, alpha


def rotate_rows(
    V: torch.Tensor,
    start: int,
    m: int,
    S: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> None:
    """In place: ``V[start : start+n] ← Sᵀ V[start : start+m]`` for ``S`` of shape ``[m, n]``.

    ``V`` stores basis vectors as rows (``[M, P]``). The product is formed in column chunks,
    so the temporary is ``n × chunk`` instead of ``n × P``.

    Args:
        V: ``[M, P]`` basis buffer, modified in place.
        start: first row of the rotated range.
        m: number of rows read.
        S: ``[m, n]`` with ``n <= m`` (any dtype; cast to the compute dtype).
        dtype: the compute dtype (default ``V.dtype``): each chunk of ``V`` is upcast to it,
            rotated, and only the result rounded to ``V.dtype``.
        device: where the product is formed (default ``V.device``).
    """
    n = S.shape[1]
    if n == 0:
        return
    dtype = V.dtype if dtype is None else dtype
    device = V.device if device is None else device
    St = S.mT.to(dtype=dtype, device=device)
    P = V.shape[1]
    chunk = max(1, _CHUNK_ELEMS // max(n, m))
    for c0 in range(0, P, chunk):
        c1 = min(P, c0 + chunk)
        Vc = V[start : start + m, c0:c1]
        V[start : start + n, c0:c1] = St @ Vc.to(dtype=dtype, device=device)


def lanczos_step_batched(
    w: torch.Tensor,
    v: torch.Tensor,
    v_prev: torch.Tensor,
    beta_prev: torch.Tensor,
    basis: torch.Tensor | None,
    *,
    reduce: Reduce | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of ``R`` independent single-vector Lanczos runs (one per column).

    Args:
        w: ``[P, R]``, ``A v``.
        v: ``[P, R]``, current Lanczos vectors.
        v_prev: ``[P, R]``, previous Lanczos vectors (zeros at the first step).
        beta_prev: ``[R]``, previous off-diagonal coefficients.
        basis: ``[R, J, P]`` the runs' earlier vectors for full reorthogonalisation (each run
            against its own basis), or ``None`` for the plain three-term recurrence.
        reduce: sums partial inner products over ranks when the vectors are split by rows
            (one call for ``α``, one per reorthogonalisation pass).

    Returns:
        ``(w, alpha)``: the new residual vectors ``[P, R]`` and diagonal coefficients ``[R]``.
    """
    alpha = (v * w).sum(dim=0)
    if reduce is not None:
        alpha = reduce(alpha)
    w = w - v * alpha - v_prev * beta_prev
    if basis is not None and basis.shape[1] > 0:
        for _ in range(2):
            coef = torch.bmm(basis, w.mT.unsqueeze(2))  # [R, J, 1]
            if reduce is not None:
                coef = reduce(coef)
            w = w - torch.bmm(basis.mT, coef).squeeze(2).mT
    return w, alpha
