"""Seeded random blocks for the Krylov methods and estimators.

Draws happen on the CPU from a ``torch.Generator`` and are then moved to the operator's device,
so a seed gives the same numbers on every device and dtype; under a process group each rank
draws the full block and keeps its rows, so a seed also gives the same numbers on any number of
ranks.
"""

from __future__ import annotations

import torch


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (fresh entropy when ``None``)."""
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def randn(
    gen: torch.Generator,
    P: int,
    n: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``[P, n]`` standard normal, or its rows ``[start, stop)`` (the full block is drawn)."""
    z = torch.randn(P, n, generator=gen, dtype=torch.float64)
    if rows is not None:
        z = z[rows[0] : rows[1]]
    return z.to(dtype).to(device)


def rademacher(
    gen: torch.Generator,
    P: int,
    n: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``[P, n]`` of independent ±1, or its rows ``[start, stop)`` (the full block is drawn)."""
    z = torch.randint(0, 2, (P, n), generator=gen, dtype=torch.int8)
    if rows is not None:
        z = z[rows[0] : rows[1]]
    return (z.to(dtype) * 2 - 1).to(device)
