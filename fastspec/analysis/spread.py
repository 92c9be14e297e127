"""Results over seeds: the mean ± standard deviation of a number, and how often a verdict held.

A single training run's verdict can sit on the KS threshold and flip with the floating-point
rounding of another CPU; what carries over between machines is the spread over seeds and the
count of seeds in which a verdict holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fastspec._checks import AsDict

__all__ = ["Count", "Spread", "count", "spread"]


@dataclass(frozen=True)
class Spread(AsDict):
    """A number over seeds.

    Attributes:
        values: the per-seed values (NaN where a seed had none).
        mean: their mean over the finite values (NaN if none).
        std: their sample standard deviation (ddof 1; 0 for one value, NaN for none).
    """

    values: tuple[float, ...]
    mean: float
    std: float

    def text(self, fmt: str = ".3g", scale: float = 1.0, unit: str = "") -> str:
        """``"mean±std"`` in ``fmt`` (after multiplying by ``scale``), or ``"-"`` when empty."""
        if math.isnan(self.mean):
            return "-"
        return f"{self.mean * scale:{fmt}}±{self.std * scale:{fmt}}{unit}"


def spread(values: Iterable[float | None]) -> Spread:
    """The :class:`Spread` of ``values`` (``None`` or NaN entries are kept but not averaged)."""
    vals = tuple(math.nan if v is None else float(v) for v in values)
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        return Spread(vals, math.nan, math.nan)
    mean = math.fsum(finite) / len(finite)
    var = math.fsum((v - mean) ** 2 for v in finite) / (len(finite) - 1) if len(finite) > 1 else 0.0
    return Spread(vals, mean, math.sqrt(var))


@dataclass(frozen=True)
class Count(AsDict):
    """How many seeds a yes/no outcome held in.

    Attributes:
        per_seed: the outcome in each seed.
        holds: how many were True.
        of: how many seeds.
    """

    per_seed: tuple[bool, ...]
    holds: int
    of: int

    def text(self) -> str:
        """``"2 of 3 seeds"``."""
        return f"{self.holds} of {self.of} seed{'s' if self.of != 1 else ''}"


def count(outcomes: Sequence[bool]) -> Count:
    """The :class:`Count` of ``outcomes`` (one per seed)."""
    per_seed = tuple(bool(x) for x in outcomes)
    return Count(per_seed, sum(per_seed), len(per_seed))
