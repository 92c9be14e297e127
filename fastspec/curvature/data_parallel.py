"""Data-parallel curvature operators: each rank holds a shard of the data, products are summed.

Under a process group (:func:`fastspec.distributed.resolve_group`), the ``data`` of a curvature
operator is this rank's shard of the full data. The full-data mean L = (1/N) Σ_j ℓ_j over the N
samples of all ranks splits into one sum per rank, each term weighted by 1/N with N counted
across ranks once, at construction. So ``local_matmat`` (this rank's unreduced term) summed over
ranks is the full-data product, and ``matmat`` is one all-reduce of it per block: its result is
replicated on every rank (as hessian-eigenthings' DDP operator). The sharded solvers of
:mod:`fastspec.linalg` call ``local_matmat`` on full blocks and reduce-scatter the result.

Ranks check, once at construction, that they hold the same operator (kind, parameter names and
shapes, dtype, reduction, mode, and per-tensor sums of the parameter values to 1e-9) and, at the first
product, the same block size: ranks that disagree raise a ``ValueError`` naming the field
instead of hanging in a collective of mismatched shapes. An error one rank meets while reading
its shard at construction (NaN, no batch that fits, …) is raised on every rank.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from fastspec.distributed import check_agree, resolve_group, world

__all__ = ["agree_on_block", "common_seed", "count_across_ranks", "reduce_product"]


def count_across_ranks(op: Any, count_local: Callable[[], int]) -> int:
    """Check the ranks of ``op.process_group`` agree on ``op``, and return the total count.

    ``count_local()`` reads this rank's shard and returns its sample count; an exception it
    raises on any rank is raised on every rank (the failing rank's own exception there, a
    ``RuntimeError`` naming it elsewhere). One process: ``count_local()`` itself.
    """
    group = op.process_group
    if group is None:
        return count_local()
    failure: BaseException | None = None
    local = 0
    try:
        local = count_local()
    except Exception as exc:  # raised on every rank below, not only here
        failure = exc
    W = world(group)[1]
    gathered: list[Any] = [None] * W
    message = None if failure is None else f"{type(failure).__name__}: {failure}"
    dist.all_gather_object(gathered, (message, local, _checksum(op)), group=group)
    failed = [(r, g[0]) for r, g in enumerate(gathered) if g[0] is not None]
    if failure is not None:
        raise failure
    if failed:
        r, m = failed[0]
        raise RuntimeError(f"{type(op).__name__}: rank {r} of {W} failed reading its data: {m}")
    check_agree(group, type(op).__name__, **_identity(op))
    sums = [g[2] for g in gathered]
    if any(not torch.allclose(s, sums[0], rtol=1e-9, atol=0.0) for s in sums):
        per_rank = ", ".join(f"rank {r}: {s.tolist()}" for r, s in enumerate(sums))
        raise ValueError(
            f"{type(op).__name__}: ranks disagree on the parameter values (Σ|θ| and Σθ² "
            f"per tensor, {per_rank}); load the same weights on every rank"
        )
    return sum(g[1] for g in gathered)


def _identity(op: Any) -> dict[str, Any]:
    """What every rank's operator must share: kind, parameters, dtype, loss reduction, mode."""
    layout = repr([(n, op.param_shapes[n]) for n in op.param_names]).encode()
    return {
        "operator": type(op).__name__,
        "num_params": op.shape[0],
        "dtype": str(op.dtype).removeprefix("torch."),
        "parameter_names_and_shapes": hashlib.sha1(layout).hexdigest()[:12],
        "reduction": op.reduction,
        "mode": op.mode,
    }


def _checksum(op: Any) -> torch.Tensor:
    """``[2, tensors]``: Σ|θ| and Σθ² of each parameter tensor (sums without cancellation)."""
    theta = [t.detach().double() for t in op._theta.values()]
    return torch.stack([
        torch.stack([t.abs().sum() for t in theta]), torch.stack([t.square().sum() for t in theta])
    ]).cpu()  # fmt: skip


def agree_on_block(op: Any, B: int) -> None:
    """Check once, at ``op``'s first product, that every rank multiplies blocks of ``B``."""
    if op.process_group is not None and not getattr(op, "_block_agreed", False):
        check_agree(op.process_group, f"{type(op).__name__} (first product)", block_size=B)
        op._block_agreed = True


def reduce_product(op: Any, Y: torch.Tensor) -> torch.Tensor:
    """Sum this rank's ``local_matmat`` result ``Y`` [P, B] over ranks, in place: one all-reduce.

    ``Y`` is the transpose of a contiguous ``[B, P]`` tensor (``local_matmat``'s layout); the
    all-reduce runs on that contiguous tensor and ``Y`` is returned.
    """
    if op.process_group is None:
        return Y
    if Y.mT.is_contiguous():
        dist.all_reduce(Y.mT, group=op.process_group)
        return Y
    Y = Y.contiguous()
    dist.all_reduce(Y, group=op.process_group)
    return Y


def common_seed(seed: int | None, process_group: Any = None) -> int | None:
    """``seed``, or under a process group with ``seed=None`` rank 0's fresh seed on every rank.

    The solvers draw their random blocks from the seed on every rank; one seed for all ranks
    keeps those draws, and so the Krylov spaces, the same everywhere.
    """
    group = resolve_group(process_group)
    if seed is not None or group is None:
        return seed
    chosen = [random.SystemRandom().randrange(2**63) if world(group)[0] == 0 else None]
    dist.broadcast_object_list(chosen, src=dist.get_global_rank(group, 0), group=group)
    return int(chosen[0])  # type: ignore[arg-type]
