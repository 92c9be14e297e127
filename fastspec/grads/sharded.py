"""Per-sample gradient Grams over samples sharded across the ranks of a process group.

Each rank holds a shard of the samples (the union's order is rank 0's samples, then rank 1's,
…) and computes its per-sample gradient factors once, in a local
:class:`~fastspec.grads.gram.GradientStore`. With N = Σ_r N_r, G the [N, P] per-sample
gradients and G_r rank r's rows, F_r the elements of rank r's factors (N_r · Σ_layers
T·(D_in + D_out) for implicit weights, N_r · p for materialised parameters):

- **Assembled Gram** (``gradient_gram``, the ``"gram"`` method, and Lanczos while N × N fits):
  the blocks K_rs = G_r G_sᵀ come from a ring exchange of the factors. At step
  j = 1..⌊W/2⌋ every rank sends the factors it holds to rank r+1 and receives rank r−j's from
  rank r−1 (``batch_isend_irecv``; the blocks of step j−1 are computed meanwhile) and computes
  K_{r,r−j}; its transpose K_{r−j,r} is never computed, and for even W the chunk pairs at
  distance W/2 are split between their two ranks. Factor memory per rank:
  F_r + 2·max_s F_s (its own, the ones being sent on and the ones arriving), against all
  Σ_s F_s for an all-gather of the factors. Each rank keeps the blocks it computed (about
  N²/(2W) elements). :meth:`ShardedGradients.gram` broadcasts them (one broadcast per rank) and
  returns the full N × N matrix on every rank (N² elements, as on one process), or sends them
  to one rank only (the ``"gram"`` method: rank 0 alone holds N × N and takes the eigenvalues);
  :class:`BlockGramOperator` applies K from them with one all-reduce of [N, B] per block.
- **Matrix-free** (Lanczos beyond ``gram_max_bytes``, :class:`ShardedGramOperator`):
  K U = G(Σ_r G_rᵀ U_r)/N: one all-reduce of the [B, P] partial products Gᵀ U, then each rank
  fills its rows G_r (GᵀU) and one all-reduce of [N, B]; no factors move.

Both operators follow the data-parallel operator contract: ``process_group`` and
``local_matmat`` (this rank's unreduced share, summing to the full product over ranks), with
``matmat`` the all-reduce of ``local_matmat``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from fastspec.batches import SampleBatches
from fastspec.distributed import check_agree, world
from fastspec.grads.features import Dense, Feature, Index, Outer
from fastspec.grads.gram import GradientStore
from fastspec.grads.problem import GradProblem
from fastspec.linalg import LinearOperator

__all__ = [
    "BlockGramOperator",
    "ShardedGradients",
    "ShardedGramOperator",
    "agree_after",
    "shard_gradients",
]

_KINDS: dict[str, type[Feature]] = {"Dense": Dense, "Outer": Outer, "Index": Index}
T = TypeVar("T")
Chunks = list[dict[str, Feature]]


def agree_after(group: Any, what: str, step: Callable[[], T], **fields: Any) -> T:
    """Run the local ``step`` on every rank, then check that all ranks succeeded and agree.

    A rank whose ``step`` raises re-raises its own error; the others raise ``ValueError``
    naming it (``check_agree`` on the error and ``fields``), so no rank waits in a collective
    that a failed rank never joins. ``fields`` may be callables of the step's result.
    """
    result: Any = None
    error: Exception | None = None
    try:
        result = step()
    except Exception as exc:  # every rank must reach the agreement check below
        error = exc
    if error is None:
        values = {k: v(result) if callable(v) else v for k, v in fields.items()}
    else:
        values = dict.fromkeys(fields)
    message = None if error is None else f"{type(error).__name__}: {error}"
    try:
        check_agree(group, what, error=message, **values)
    except ValueError:
        if error is not None:
            raise error from None
        raise
    if error is not None:
        raise error
    return result


class ShardedGradients:
    """This rank's :class:`GradientStore` and where its samples sit in the union.

    Args:
        store: the local store (built with ``total_samples`` = N).
        group: the process group.

    Attributes:
        counts: [W] samples per rank; ``offsets`` [W + 1] their prefix sums.
        blocks: after :meth:`compute_blocks`, ``(row0, col0, tensor)`` rectangles of G Gᵀ in
            global sample coordinates computed on this rank (uncentred, not divided by N).
    """

    def __init__(self, store: GradientStore, group: Any, counts: list[int]) -> None:
        self.store, self.group = store, group
        self.rank, self.world_size = world(group)
        self.counts = counts
        self.offsets = [0]
        for c in counts:
            self.offsets.append(self.offsets[-1] + c)
        self.num_samples = self.offsets[-1]
        self.dtype, self.device = store.dtype, store.device
        self.blocks: list[tuple[int, int, torch.Tensor]] = []

    def compute_blocks(self) -> None:
        """This rank's share of the chunk-pair blocks of G Gᵀ, by a ring of the factors.

        The blocks of the factors that arrived in one step are computed while the next step's
        transfer is in flight.
        """
        r, W = self.rank, self.world_size
        mine = self.store.chunks
        starts = self._starts(mine, r)
        held, spec = _pack(mine)
        specs: list[Any] = [None] * W
        dist.all_gather_object(specs, spec, group=self.group)
        self.blocks = []
        pending: Callable[[], None] = lambda: self.blocks.extend(  # noqa: E731
            _blocks(mine, starts, mine, starts, _pairs(len(mine), len(mine), True))
        )
        for j in range(1, W // 2 + 1):
            s = (r - j) % W  # whose factors arrive in this step
            incoming = [
                torch.empty(shape, dtype=dtype, device=self.device)
                for shape, dtype in _tensor_specs(specs[s])
            ]
            after, before = self.global_rank((r + 1) % W), self.global_rank((r - 1) % W)
            ops = [dist.P2POp(dist.isend, t, after, self.group) for t in held]
            ops += [dist.P2POp(dist.irecv, t, before, self.group) for t in incoming]
            works = dist.batch_isend_irecv(ops) if ops else []
            pending()  # the previous step's blocks, during this step's transfer
            for work in works:
                work.wait()
            pending = self._cross(mine, starts, _unpack(incoming, specs[s]), s, j)
            held = incoming
        pending()

    def _cross(
        self, mine: Chunks, starts: list[int], theirs: Chunks, s: int, j: int
    ) -> Callable[[], None]:
        """Computes this rank's blocks with rank ``s``'s factors (ring distance ``j``)."""
        theirs_starts = self._starts(theirs, s)
        if 2 * j < self.world_size:
            pairs = _pairs(len(mine), len(theirs), False)
            return lambda: self.blocks.extend(_blocks(mine, starts, theirs, theirs_starts, pairs))
        # both ranks of this pair hold both factors: the lower rank's rows, split in two
        lower_first = self.rank < s
        left, right = (mine, theirs) if lower_first else (theirs, mine)
        ls, rs = (starts, theirs_starts) if lower_first else (theirs_starts, starts)
        pairs = _pairs(len(left), len(right), False)
        half = (len(pairs) + 1) // 2
        pairs = pairs[:half] if lower_first else pairs[half:]
        return lambda: self.blocks.extend(_blocks(left, ls, right, rs, pairs))

    def global_rank(self, rank: int) -> int:
        """The global rank of ``rank`` in the group."""
        return dist.get_global_rank(self.group, rank)

    def _starts(self, chunks: Chunks, rank: int) -> list[int]:
        starts, at = [], self.offsets[rank]
        for c in chunks:
            starts.append(at)
            at += next(iter(c.values())).n
        return starts

    def gram(self, *, center: bool, root: int | None = None) -> torch.Tensor | None:
        """The full (centred) Gram matrix / N [N, N], assembled from every rank's blocks.

        Args:
            center: H K H (H = I − 11ᵀ/N) instead of K.
            root: the one rank (in the group) that assembles it; the others send their blocks
                to it and return ``None``. Default: every rank (one broadcast per rank).
        """
        N = self.num_samples
        here = root is None or root == self.rank
        K = torch.empty(N, N, dtype=self.dtype, device=self.device) if here else None
        shapes: list[Any] = [None] * self.world_size
        mine = [(r0, c0, tuple(t.shape)) for r0, c0, t in self.blocks]
        dist.all_gather_object(shapes, mine, group=self.group)
        for src, rects in enumerate(shapes):
            if src == self.rank:
                flat = torch.cat([t.reshape(-1) for _, _, t in self.blocks])
            elif here:
                size = sum(h * w for _, _, (h, w) in rects)
                flat = torch.empty(size, dtype=self.dtype, device=self.device)
            if root is None:
                dist.broadcast(flat, self.global_rank(src), group=self.group)
            elif src != root and self.rank == src:
                dist.send(flat, self.global_rank(root), group=self.group)
            elif src != root and here:
                dist.recv(flat, self.global_rank(src), group=self.group)
            if K is None:
                continue
            at = 0
            for r0, c0, (h, w) in rects:
                block = flat[at : at + h * w].view(h, w)
                at += h * w
                K[r0 : r0 + h, c0 : c0 + w] = block
                if (r0, h) != (c0, w):
                    K[c0 : c0 + w, r0 : r0 + h] = block.T
            del flat
        if K is None:
            return None
        if center:
            K.sub_(K.mean(0, keepdim=True))
            K.sub_(K.mean(1, keepdim=True))
        return K.div_(N)


def _pairs(n_left: int, n_right: int, upper: bool) -> list[tuple[int, int]]:
    """Chunk pairs (a, b) in row-major order; only b >= a when ``upper`` (the same chunks)."""
    return [(a, b) for a in range(n_left) for b in range(a if upper else 0, n_right)]


def _blocks(
    left: Chunks,
    left_starts: list[int],
    right: Chunks,
    right_starts: list[int],
    pairs: list[tuple[int, int]],
) -> list[tuple[int, int, torch.Tensor]]:
    """``(row0, col0, G_a G_bᵀ)`` for the chunk pairs (a, b) of ``left`` × ``right``."""
    out = []
    for a, b in pairs:
        block = sum(left[a][n].gram(right[b][n]) for n in left[a])
        assert isinstance(block, torch.Tensor)
        out.append((left_starts[a], right_starts[b], block))
    return out


def _pack(chunks: Chunks) -> tuple[list[torch.Tensor], list[Any]]:
    """The tensors of every feature (contiguous) and a picklable description to rebuild them."""
    tensors: list[torch.Tensor] = []
    spec: list[Any] = []
    for chunk in chunks:
        entry = []
        for name, f in chunk.items():
            fields: dict[str, Any] = {}
            for fld in dataclasses.fields(f):  # type: ignore[arg-type]
                v = getattr(f, fld.name)
                if isinstance(v, torch.Tensor):
                    tensors.append(v.contiguous())
                    fields[fld.name] = ("tensor", tuple(v.shape), v.dtype)
                else:
                    fields[fld.name] = ("value", v)
            entry.append((name, type(f).__name__, fields))
        spec.append(entry)
    return tensors, spec


def _tensor_specs(spec: list[Any]) -> list[tuple[tuple[int, ...], torch.dtype]]:
    return [
        (v[1], v[2])
        for entry in spec
        for _, _, fields in entry
        for v in fields.values()
        if v[0] == "tensor"
    ]


def _unpack(tensors: list[torch.Tensor], spec: list[Any]) -> Chunks:
    it = iter(tensors)
    chunks: Chunks = []
    for entry in spec:
        chunk: dict[str, Feature] = {}
        for name, kind, fields in entry:
            kwargs = {k: next(it) if v[0] == "tensor" else v[1] for k, v in fields.items()}
            chunk[name] = _KINDS[kind](**kwargs)
        chunks.append(chunk)
    return chunks


class _ShardedGram(LinearOperator):
    """U ↦ K U (K the (centred) Gram / N) over sharded samples.

    ``matmat`` is the all-reduce of ``local_matmat`` (a replicated result on every rank).

    Args:
        sharded: the sharded gradients.
        center: apply H K H (H = I − 11ᵀ/N) instead of K.
    """

    def __init__(self, sharded: ShardedGradients, *, center: bool) -> None:
        self.sharded, self.center = sharded, center
        N = sharded.num_samples
        self.shape = (N, N)
        self.dtype, self.device = sharded.dtype, sharded.device
        self.process_group = sharded.group

    def local_matmat(self, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """This rank's unreduced share of ``A V`` [N, B] for the full ``V`` [N, B]."""
        raise NotImplementedError

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A V`` [N, B], the same on every rank: one all-reduce of :meth:`local_matmat`."""
        out = self.local_matmat(V)
        dist.all_reduce(out, group=self.process_group)
        return out


def _centred(V: torch.Tensor, center: bool) -> torch.Tensor:
    return V - V.mean(0, keepdim=True) if center else V


class BlockGramOperator(_ShardedGram):
    """U ↦ K U (K the (centred) Gram / N) from the blocks each rank computed.

    Args:
        sharded: the sharded gradients, after :meth:`ShardedGradients.compute_blocks`.
        center: apply H K H (H = I − 11ᵀ/N) instead of K.
    """

    def local_matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Rows and (by symmetry) columns of this rank's blocks applied to ``V`` [N, B]."""
        V = _centred(V, self.center)
        out = torch.zeros(V.shape, dtype=V.dtype, device=V.device)
        for r0, c0, block in self.sharded.blocks:
            h, w = block.shape
            out[r0 : r0 + h] += block @ V[c0 : c0 + w]
            if (r0, h) != (c0, w):
                out[c0 : c0 + w] += block.T @ V[r0 : r0 + h]
        return _centred(out, self.center).div_(self.shape[0])


class ShardedGramOperator(_ShardedGram):
    """U ↦ K U (K the (centred) Gram / N) from each rank's factors, without any N × N matrix."""

    def local_matmat(self, V: torch.Tensor) -> torch.Tensor:
        """This rank's rows G_r (Gᵀ V) / N (zeros elsewhere); Gᵀ V takes one all-reduce."""
        s = self.sharded
        lo, hi = s.offsets[s.rank], s.offsets[s.rank + 1]
        V = _centred(V, self.center)
        parts = s.store.rmatmul(V[lo:hi])  # {name: [B, p]} of this rank's samples
        names = list(parts)
        flat = torch.cat([parts[n].reshape(-1) for n in names])
        del parts
        dist.all_reduce(flat, group=self.process_group)
        B, full, at = V.shape[1], {}, 0
        for n in names:
            size = B * s.store.problem.numels[n]
            full[n] = flat[at : at + size].view(B, -1)
            at += size
        out = torch.zeros(V.shape, dtype=V.dtype, device=V.device)
        out[lo:hi] = s.store.matmul(full)
        return _centred(out, self.center).div_(self.shape[0])


def shard_gradients(
    group: Any,
    what: str,
    make_problem: Callable[[], GradProblem],
    data: Any,
    *,
    memory_budget: int,
    **fields: Any,
) -> ShardedGradients:
    """Every rank's per-sample gradient factors of its shard, after checking that ranks agree.

    Ranks must select the same parameters (names and sizes), compute in the same dtype and pass
    equal ``fields`` (the caller's options); this is checked before any collective whose shape
    depends on them, as is every rank's local setup and factor pass.
    """

    def setup() -> tuple[GradProblem, SampleBatches]:
        return make_problem(), SampleBatches(data)

    problem, samples = agree_after(
        group,
        what,
        setup,
        parameters=lambda ps: [(n, ps[0].numels[n]) for n in ps[0].names],
        dtype=lambda ps: str(ps[0].dtype),
        **fields,
    )
    counts: list[Any] = [None] * world(group)[1]
    dist.all_gather_object(counts, samples.num_samples, group=group)
    N = sum(counts)

    def factors() -> GradientStore:
        return GradientStore(problem, samples, memory_budget=memory_budget, total_samples=N)

    return ShardedGradients(agree_after(group, what, factors), group, counts)
