"""The process-group helpers: which group a run uses, balanced slices, the agreement check."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from fastspec.distributed import check_agree, resolve_group, shard_range, world
from tests.helpers.distributed import run_ranks


@pytest.mark.parametrize("n, w", [(0, 1), (1, 2), (10, 3), (7, 7), (5, 8), (1000, 2)])
def test_shard_range_is_a_balanced_partition(n: int, w: int) -> None:
    ranges = [shard_range(n, w, r) for r in range(w)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_shard_range_names_a_bad_rank() -> None:
    with pytest.raises(ValueError, match="rank"):
        shard_range(10, 2, 2)


def test_one_process_has_no_group() -> None:
    assert resolve_group(None) is None
    assert world(None) == (0, 1)
    with pytest.raises(ValueError, match="process_group"):
        resolve_group(object())


def _agree(rank: int, world_size: int, differ: bool) -> tuple[int, int]:
    group = resolve_group(None)
    assert group is dist.group.WORLD
    check_agree(group, "the operator", P=10, dtype="float64", block=2 + (rank if differ else 0))
    return world(group)


def test_ranks_that_agree_pass() -> None:
    assert run_ranks(_agree, False) == [(0, 2), (1, 2)]


def test_ranks_that_disagree_fail_with_the_field() -> None:
    with pytest.raises(RuntimeError, match=r"ranks disagree on block \(rank 0: 2, rank 1: 3\)"):
        run_ranks(_agree, True)
