"""Process groups: which group a run uses, each rank's slice of a vector, and agreement checks.

Every distributed path in fastspec goes through ``torch.distributed`` (gloo on CPU, NCCL on
CUDA). A run is distributed when a group is passed explicitly, or when the default group is
initialised with more than one rank; otherwise everything runs on one process unchanged.

>>> resolve_group(None) is None  # no process group initialised
True
>>> [shard_range(10, 3, r) for r in range(3)]
[(0, 4), (4, 7), (7, 10)]
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from fastspec._checks import check_int

__all__ = ["check_agree", "resolve_group", "shard_range", "world"]


def resolve_group(process_group: Any = None) -> Any:
    """The group a run uses: ``process_group`` if given, else the default group of > 1 rank.

    Returns ``None`` (one process) when no group is given and the default group is not
    initialised or has one rank.
    """
    if process_group is not None:
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("process_group was given but torch.distributed is not initialised")
        if not isinstance(process_group, dist.ProcessGroup):
            raise TypeError(
                f"process_group must be a torch.distributed.ProcessGroup, "
                f"got {type(process_group).__name__}"
            )
        return process_group
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


def world(group: Any) -> tuple[int, int]:
    """``(rank, world size)`` of this process in ``group``; ``(0, 1)`` for ``None``."""
    if group is None:
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def shard_range(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s balanced slice of ``n`` entries.

    The first ``n % world_size`` ranks hold one entry more; slices are consecutive.
    """
    n = check_int("n", n, minimum=0)
    world_size = check_int("world_size", world_size, minimum=1)
    rank = check_int("rank", rank, minimum=0, maximum=world_size - 1)
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def check_agree(group: Any, what: str, **fields: Any) -> None:
    """Raise ``ValueError`` on every rank unless all ranks pass equal ``fields``.

    One ``all_gather_object`` of a small dict: call it once before the first collective whose
    shapes depend on ``fields`` (parameter count, dtype, block size, …) so that ranks that
    disagree fail with a message instead of hanging in a mismatched collective.
    """
    if group is None:
        return
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, fields, group=group)
    for key in fields:
        values = [g.get(key) for g in gathered]
        if any(v != values[0] for v in values):
            per_rank = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            raise ValueError(f"{what}: ranks disagree on {key} ({per_rank})")
