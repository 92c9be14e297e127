"""The vector kernels of the Krylov solvers, one small function each.

These are the only places where :mod:`fastspec.linalg` touches length-``P`` data besides the
operator itself, so each is the swap point for a fused native op from :mod:`fastspec.ops`:

- :func:`project_rows`: one classical Gram–Schmidt pass ``W ← W − Vᵀ(VW)`` against a basis
  stored as rows, with the input column
  norms, through the native :func:`fastspec.ops.block_orthogonalize` where it was measured faster
  (``USE_NATIVE``); the "twice is enough" orthonormalisation built on it (BCGS2 with a DGKS
  test that skips the second pass when the first one provably sufficed) lives in
  :meth:`fastspec.linalg.lanczos._BlockLanczos._orthonormalize`, which owns the host
  synchronisation the test needs;
- :func:`block_qr`: the QR factorisation of a block;
- :func:`three_term`: the block three-term recurrence ``W ← W − Q_prev C_prevᵀ``,
  ``α = QᵀW``, ``W ← W − Qα``;
- :func:`rotate_rows`: the in-place basis rotation ``V[:n] ← Sᵀ V[:m]`` of a thick restart,
  done in column chunks so that it needs no second basis-sized buffer;
- :func:`lanczos_step_batched`: one step of several independent single-vector Lanczos runs (SLQ).

Shapes use the project's letters: ``P`` the operator dimension, ``B`` the block size, ``M`` the
Krylov basis size. None of these functions synchronises with the device.
"""

from __future__ import annotations

import torch

from fastspec import ops

#: elements of the temporary used by :func:`rotate_rows` (about 32 MiB of float64)
_ROTATE_CHUNK_ELEMS = 1 << 22


#: block widths for which :func:`project_rows` runs natively, per device: where the native op
#: beat the two BLAS calls (``benchmarks/results/ops_block_orthogonalize.md``: 1.66x at B = 2,
#: 1.09x at B = 4, slower at B = 1, 8, 16 on the 2-core CPU; CUDA never measured)
USE_NATIVE: dict[str, range] = {"cpu": range(2, 5)}


def project_rows(V: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One classical Gram–Schmidt pass against basis rows: ``W − Vᵀ(VW)``, and ``‖W[:, j]‖²``.

    Args:
        V: ``[n, P]`` basis vectors as (contiguous) rows; ``n`` may be 0.
        W: ``[P, B]``.

    Returns:
        ``(W_out [P, B], sq_norms [B])``, the squared column norms of the input in float64.
    """
    if W.shape[1] in USE_NATIVE.get(W.device.type, ()):
        out, _, sq = ops.block_orthogonalize(V, W)
        return out, sq[0]
    sq = (W * W).sum(dim=0).to(torch.float64)
    if V.shape[0] == 0:
        return W, sq
    return torch.addmm(W, V.mT, V @ W, alpha=-1.0), sq


def block_qr(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin Householder QR of a block.

    Args:
        W: ``[P, B]``.

    Returns:
        ``(Q, R)``: ``Q`` ``[P, B]`` with orthonormal columns, ``R`` ``[B, B]`` upper triangular.
    """
    Q, R = torch.linalg.qr(W, mode="reduced")
    return Q, R


def three_term(
    W: torch.Tensor, Q: torch.Tensor, Q_prev: torch.Tensor, C_prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block Lanczos recurrence for ``W = A Q``.

    In a thick-restarted run, ``Q_prev`` is the previous block (``C_prev`` its ``[B, B]``
    coupling) or, right after a restart, the kept Ritz vectors (``C_prev`` the ``[B, L]`` arrow).

    Args:
        W: ``[P, B]``, the product ``A Q``.
        Q: ``[P, B]``, the current block.
        Q_prev: ``[P, L]`` (``L`` may be 0).
        C_prev: ``[B, L]`` with ``A Q_prev = … + Q C_prev``.

    Returns:
        ``(W, alpha)``: ``W − Q_prev C_prevᵀ − Q α`` and ``α = Qᵀ(W − Q_prev C_prevᵀ)`` ``[B, B]``.
    """
    if Q_prev.shape[1] > 0:
        W = torch.addmm(W, Q_prev, C_prev.mT, alpha=-1.0)
    alpha = Q.mT @ W
    W = torch.addmm(W, Q, alpha, alpha=-1.0)
    return W, alpha


def rotate_rows(V: torch.Tensor, start: int, m: int, S: torch.Tensor) -> None:
    """In place: ``V[start : start+n] ← Sᵀ V[start : start+m]`` for ``S`` of shape ``[m, n]``.

    ``V`` stores basis vectors as rows (``[M, P]``). The product is formed in column chunks,
    so the temporary is ``n × chunk`` instead of ``n × P``.

    Args:
        V: ``[M, P]`` basis buffer, modified in place.
        start: first row of the rotated range.
        m: number of rows read.
        S: ``[m, n]`` with ``n <= m`` (any dtype; cast to ``V.dtype``).
    """
    n = S.shape[1]
    if n == 0:
        return
    St = S.mT.to(dtype=V.dtype, device=V.device)
    P = V.shape[1]
    chunk = max(1, _ROTATE_CHUNK_ELEMS // max(n, m))
    for c0 in range(0, P, chunk):
        c1 = min(P, c0 + chunk)
        V[start : start + n, c0:c1] = St @ V[start : start + m, c0:c1]


def lanczos_step_batched(
    w: torch.Tensor,
    v: torch.Tensor,
    v_prev: torch.Tensor,
    beta_prev: torch.Tensor,
    basis: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of ``R`` independent single-vector Lanczos runs (one per column).

    Args:
        w: ``[P, R]``, ``A v``.
        v: ``[P, R]``, current Lanczos vectors.
        v_prev: ``[P, R]``, previous Lanczos vectors (zeros at the first step).
        beta_prev: ``[R]``, previous off-diagonal coefficients.
        basis: ``[R, J, P]`` the runs' earlier vectors for full reorthogonalisation (each run
            against its own basis), or ``None`` for the plain three-term recurrence.

    Returns:
        ``(w, alpha)``: the new residual vectors ``[P, R]`` and diagonal coefficients ``[R]``.
    """
    alpha = (v * w).sum(dim=0)
    w = w - v * alpha - v_prev * beta_prev
    if basis is not None and basis.shape[1] > 0:
        for _ in range(2):
            coef = torch.bmm(basis, w.mT.unsqueeze(2))  # [R, J, 1]
            w = w - torch.bmm(basis.mT, coef).squeeze(2).mT
    return w, alpha
