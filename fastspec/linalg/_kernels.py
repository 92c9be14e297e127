"""The vector kernels of the Krylov solvers, one small function each.

These are the only places where :mod:`fastspec.linalg` touches length-``P`` data besides the
operator itself, so each is the swap point for a fused native op from :mod:`fastspec.ops`:

- :func:`project`: one classical Gram–Schmidt pass ``W ← W − Q(QᵀW)``;
- :func:`orthonormalize_block`: two passes with a block QR after each (BCGS2, "twice is
  enough": Giraud, Langou, Rozložník & van den Eshof, Numer. Math. 101, 2005; Barlow &
  Smoktunowicz, Numer. Math. 123, 2013);
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

#: elements of the temporary used by :func:`rotate_rows` (about 32 MiB of float64)
_ROTATE_CHUNK_ELEMS = 1 << 22


def project(Q: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """One classical Gram–Schmidt pass: ``W − Q(QᵀW)``.

    Args:
        Q: ``[P, M]`` with orthonormal columns (may be a strided view; ``M`` may be 0).
        W: ``[P, B]``.

    Returns:
        ``[P, B]``.
    """
    if Q.shape[1] == 0:
        return W
    return torch.addmm(W, Q, Q.mT @ W, alpha=-1.0)


def orthogonalize(Q: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``W ← W − Q(QᵀW)`` twice (for blocks of comparable column scales, e.g. random ones).

    Args:
        Q: ``[P, M]`` with orthonormal columns.
        W: ``[P, B]``.

    Returns:
        ``[P, B]``.
    """
    return project(Q, project(Q, W))


def orthonormalize_block(
    Q: torch.Tensor, W: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block classical Gram–Schmidt with reorthogonalisation (BCGS2).

    J. L. Barlow & A. Smoktunowicz, *Reorthogonalized block classical Gram–Schmidt*,
    Numer. Math. 123, 2013: project, QR, project the *normalised* block again, QR. Normalising
    between the passes keeps directions of ``W`` with tiny singular values orthogonal to
    ``range(Q)`` too (two passes on the unnormalised block protect only the block as a whole).

    Args:
        Q: ``[P, M]`` orthonormal basis.
        W: ``[P, B]``.

    Returns:
        ``(Q2, R2, Q1, R1)``: ``W − QQᵀW = Q1 R1`` (first pass) and ``Q1 − QQᵀQ1 = Q2 R2``, so
        that ``W − QQᵀW ≈ Q2 (R2 R1)`` with ``Q2`` orthonormal and orthogonal to ``Q``.
    """
    Q1, R1 = block_qr(project(Q, W))
    Q2, R2 = block_qr(project(Q, Q1))
    return Q2, R2, Q1, R1


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
