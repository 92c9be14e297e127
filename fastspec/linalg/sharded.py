"""The length-``P`` vectors of a Krylov run: whole on one process, one slice per rank.

Under a process group of ``W`` ranks, rank ``r`` keeps rows ``[start, stop) =
shard_range(P, W, r)`` of every basis vector, stored product and probe, and
:class:`Sharding` is the only place where such slices meet:

- inner products and norms: partial sums over the slice, then one all-reduce for the whole
  block of them (:meth:`Sharding.sum`), never one per dot;
- products (:meth:`Sharding.apply`): the block's slices are all-gathered to the full
  ``[P, B]`` block; an operator with ``local_matmat`` (data-parallel: this rank's unreduced
  share, the sum over ranks being the product) applies it and the result is reduce-scattered
  to the slices (:func:`reduce_scatter_rows`); an operator without it is taken as replicated
  (every rank holds the same operator): full product, each rank keeps its slice;
- QR of a block (:meth:`Sharding.qr`): TSQR, a local Householder QR, the small ``R`` factors
  all-gathered and factored once more (J. Demmel, L. Grigori, M. Hoemmen & J. Langou,
  *Communication-optimal parallel and sequential QR and LU factorizations*, SIAM J. Sci.
  Comput. 34(1), 2012): as stable as one Householder QR of the whole block, so the singular
  values that decide a breakdown are as accurate as on one process (a Cholesky QR of the
  all-reduced Gram would lose half the digits);
- random blocks (:meth:`Sharding.randn`, :meth:`Sharding.rademacher`): drawn at full length
  from the run's generator exactly as one process draws them, each rank keeping its slice, so
  a seed gives the same numbers on 1 and ``W`` ranks.

All ranks make the same decisions (restarts, breakdowns, convergence) because they read the
same all-reduced numbers. On one process (``group=None``) every method is the plain local
operation, the same arithmetic as code without this layer.

Memory per rank (``M`` basis vectors, block ``B``, ``s`` bytes per element): the basis
``M · ⌈P/W⌉ · s`` (twice that with stored products) plus, per product, two transient full
blocks ``2 · P · B · s`` (the gathered input and the operator's output, reduced in place on
gloo) and a full-length random block at a (re)start; measured in
``benchmarks/results/distributed_basis_memory.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from fastspec.distributed import check_agree, resolve_group, shard_range, world
from fastspec.linalg import _kernels, _random
from fastspec.linalg.operator import LinearOperator, checked_matmat

__all__ = ["Sharding", "reduce_scatter_rows", "run_group"]

# the names of torch >= 2.12, and those of earlier releases
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def run_group(A: LinearOperator, process_group: Any) -> Any:
    """The group a solver runs over: ``process_group``, else ``A.process_group``, else default.

    Raises:
        ValueError: ``process_group`` and the operator's ``process_group`` are different groups.
    """
    own = getattr(A, "process_group", None)
    if process_group is not None and own is not None and process_group is not own:
        raise ValueError(
            "process_group differs from op.process_group; pass the operator's group or neither"
        )
    return resolve_group(process_group if process_group is not None else own)


def reduce_scatter_rows(full: torch.Tensor, group: Any) -> torch.Tensor:
    """This rank's rows of the sum over ranks of ``full`` ``[P, c]`` (consumed: may be reused).

    NCCL and other backends with ``reduce_scatter_tensor`` move ``P · c`` elements per rank;
    gloo has none, so there the block is all-reduced in place (no extra memory beyond ``full``,
    twice the traffic) and the slice kept.

    Returns:
        ``[stop − start, c]``, rows ``shard_range(P, W, rank)`` of the sum.
    """
    rank, W = world(group)
    P = full.shape[0]
    lo, hi = shard_range(P, W, rank)
    if W == 1:
        return full
    full = full.contiguous()
    if dist.get_backend(group) == "gloo":
        dist.all_reduce(full, group=group)
        return full[lo:hi]
    nmax = -(-P // W)
    if P % W:
        padded = full.new_zeros((W * nmax, *full.shape[1:]))
        for r in range(W):
            a, b = shard_range(P, W, r)
            padded[r * nmax : r * nmax + (b - a)] = full[a:b]
        full = padded
    out = full.new_empty((nmax, *full.shape[1:]))
    _reduce_scatter(out, full, group=group)
    return out[: hi - lo]


class Sharding:
    """The vector layer of one run: rows ``[start, stop)`` of ``P`` on this rank.

    Args:
        P: length of the vectors.
        group: the resolved process group, or ``None`` (one process: every vector whole).

    Attributes:
        group: the process group (``None`` on one process).
        P: full length.
        rank: this rank in ``group`` (0 on one process).
        world_size: ranks in ``group`` (1 on one process).
        start: first row this rank holds.
        stop: one past the last row this rank holds.
    """

    def __init__(self, P: int, group: Any) -> None:
        self.group = group
        self.P = P
        self.rank, self.world_size = world(group)
        self.start, self.stop = shard_range(P, self.world_size, self.rank)

    @property
    def distributed(self) -> bool:
        """Whether vectors are split over more than one rank."""
        return self.group is not None

    @property
    def n(self) -> int:
        """Rows held by this rank."""
        return self.stop - self.start

    def _sizes(self) -> list[int]:
        bounds = (shard_range(self.P, self.world_size, r) for r in range(self.world_size))
        return [b - a for a, b in bounds]

    def agree(self, what: str, **fields: Any) -> None:
        """Fail on every rank unless all pass equal ``fields`` (and ``P``); see ``check_agree``."""
        check_agree(self.group, what, P=self.P, **fields)

    # reductions ---------------------------------------------------------------------------

    @property
    def reduce(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """:meth:`sum` for the kernels' ``reduce`` argument; ``None`` on one process."""
        return None if self.group is None else self.sum

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of the partial sums ``t`` (one all-reduce; ``t`` on one process)."""
        if self.group is None:
            return t
        t = t.contiguous()
        dist.all_reduce(t, group=self.group)
        return t

    def max(self, t: torch.Tensor) -> torch.Tensor:
        """The elementwise maximum over ranks of ``t`` (``t`` on one process)."""
        if self.group is None:
            return t
        t = t.contiguous()
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t

    def norm(self, X: torch.Tensor) -> torch.Tensor:
        """Frobenius norm of the whole block whose slices are ``X`` (a device scalar)."""
        if self.group is None:
            return torch.linalg.matrix_norm(X)
        return self.sum((X * X).sum()).sqrt()

    def vector_norms(self, X: torch.Tensor, dim: int) -> torch.Tensor:
        """Norms of the whole vectors along ``dim`` (the sliced one) of ``X``."""
        if self.group is None:
            return torch.linalg.vector_norm(X, dim=dim)
        return self.sum((X * X).sum(dim=dim)).sqrt()

    # moving slices --------------------------------------------------------------------------

    def take(self, X: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a full-length ``X`` ``[P, ...]`` (``X`` on one process)."""
        if self.group is None:
            return X
        return X[self.start : self.stop]

    def gather(self, X: torch.Tensor, dst: int | None = None) -> torch.Tensor | None:
        """The full ``[P, c]`` from every rank's rows ``X`` ``[stop − start, c]``.

        Args:
            X: this rank's rows.
            dst: ``None`` gathers on every rank; a rank of the group gathers there only
                (the others return ``None``), moving ``P · c`` elements to one rank.
        """
        if self.group is None:
            return X
        sizes = self._sizes()
        nmax = max(sizes)
        src = X.contiguous()
        if src.shape[0] != nmax:
            src = X.new_zeros((nmax, *X.shape[1:]))
            src[: X.shape[0]] = X
        if dst is None:
            buf = X.new_empty((self.world_size * nmax, *X.shape[1:]))
            _all_gather(buf, src, group=self.group)
        else:
            parts = [torch.empty_like(src) for _ in sizes] if self.rank == dst else None
            dist.gather(src, parts, dst=dist.get_global_rank(self.group, dst), group=self.group)
            if parts is None:
                return None
            buf = torch.cat(parts)
        if all(s == nmax for s in sizes):
            return buf
        return torch.cat([buf[r * nmax : r * nmax + s] for r, s in enumerate(sizes)])

    def apply(self, A: LinearOperator, X: torch.Tensor) -> torch.Tensor:
        """This rank's rows of ``A`` times the block whose rows ``X`` ``[stop − start, c]`` hold.

        See the module docstring: data-parallel operators (``local_matmat``) are all-gathered,
        applied locally and reduce-scattered; others are taken as replicated.
        """
        if self.group is None:
            return checked_matmat(A, X)
        full = self.gather(X)
        assert full is not None
        if callable(getattr(A, "local_matmat", None)):
            return reduce_scatter_rows(checked_matmat(A, full, local=True), self.group)
        return checked_matmat(A, full)[self.start : self.stop]

    # factorisations and draws ----------------------------------------------------------------

    def qr(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Thin QR of the block whose rows ``Y`` ``[stop − start, c]`` hold (TSQR when split).

        Returns:
            ``(Q, R)``: this rank's rows of ``Q`` (orthonormal columns) and ``R`` (replicated),
            with ``Y = Q R`` over the whole block.
        """
        if self.group is None:
            return torch.linalg.qr(Y, mode="reduced")
        c = Y.shape[1]
        Qi, Ri = torch.linalg.qr(Y, mode="reduced")  # [n, r_i], [r_i, c]
        rows = [min(s, c) for s in self._sizes()]
        rmax = max(rows)
        src = Ri.new_zeros(rmax, c)
        src[: Ri.shape[0]] = Ri
        buf = Ri.new_empty(self.world_size * rmax, c)
        _all_gather(buf, src, group=self.group)
        Rs = torch.cat([buf[r * rmax : r * rmax + k] for r, k in enumerate(rows)])
        Q2, R = torch.linalg.qr(Rs, mode="reduced")
        off = sum(rows[: self.rank])
        return Qi @ Q2[off : off + Ri.shape[0]], R

    def block_qr(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Thin QR of a block of rows ``W`` ``[b, n]``: ``(Q [b, n] rows, R [b, b])``, ``W = Rᵀ Q``."""
        if self.group is None:
            return _kernels.block_qr(W)
        Q, R = self.qr(W.mT)
        return Q.mT.contiguous(), R

    def randn(
        self, gen: torch.Generator, c: int, *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """This rank's rows of the ``[P, c]`` standard normal block one process would draw."""
        return _random.randn(gen, self.P, c, dtype=dtype, device=device, rows=self._rows())

    def rademacher(
        self, gen: torch.Generator, c: int, *, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """This rank's rows of the ``[P, c]`` Rademacher block one process would draw."""
        return _random.rademacher(gen, self.P, c, dtype=dtype, device=device, rows=self._rows())

    def _rows(self) -> tuple[int, int] | None:
        return None if self.group is None else (self.start, self.stop)

    def shared_seed(self, seed: int | None) -> int | None:
        """``seed``, or under a group with ``seed=None`` one fresh seed drawn by rank 0 for all."""
        if self.group is None or seed is not None:
            return seed
        box: list[Any] = [torch.Generator().seed() if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=dist.get_global_rank(self.group, 0), group=self.group)
        return int(box[0])

    def __repr__(self) -> str:
        return (
            f"Sharding(P={self.P}, rank={self.rank}, world_size={self.world_size}, "
            f"rows=[{self.start}, {self.stop}))"
        )
