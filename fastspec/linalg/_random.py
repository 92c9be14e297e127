"""Seeded random blocks for the Krylov methods and estimators.

Draws happen on the CPU from a ``torch.Generator`` and are then moved to the operator's device,
so a seed gives the same numbers on every device and dtype.
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
    gen: torch.Generator, P: int, n: int, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``[P, n]`` standard normal."""
    return torch.randn(P, n, generator=gen, dtype=torch.float64).to(dtype).to(device)


def rademacher(
    gen: torch.Generator, P: int, n: int, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``[P, n]`` of independent ±1."""
    z = torch.randint(0, 2, (P, n), generator=gen, dtype=torch.int8)
    return (z.to(dtype) * 2 - 1).to(device)
