"""Checks of the data the statistics take: real vectors, positivity, and KS-table levels.

Scalar options (ints, floats, choices, bools) are checked with :mod:`fastspec._checks`, like
everywhere in the package; what is specific to statistics lives here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastspec._checks import check_float

__all__ = ["KS_TABLE", "as_float_vector", "check_level", "require_positive"]

# Critical values c_alpha of the one-sample KS test, D_crit = c_alpha / sqrt(n) (the table the
# P1 paper uses; the asymptotic Kolmogorov quantiles rounded to two decimals).
KS_TABLE: dict[float, float] = {0.20: 1.07, 0.15: 1.14, 0.10: 1.22, 0.05: 1.36, 0.01: 1.63}


def as_float_vector(name: str, value: Any, *, min_size: int = 1) -> np.ndarray:
    """``value`` as a 1-D float64 array with finite entries and at least ``min_size`` of them.

    Raises:
        ValueError: not real numbers (complex values included), not 1-D, too short, or NaN/inf.
    """
    if hasattr(value, "detach"):  # a torch tensor (possibly on a GPU): bring it to numpy
        if value.is_complex():
            raise ValueError(f"{name} must hold real numbers, got a complex tensor")
        value = value.detach().cpu().double().numpy()
    if np.iscomplexobj(value):
        raise ValueError(f"{name} must hold real numbers, got complex values")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of real numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if arr.size < min_size:
        raise ValueError(f"{name} must have at least {min_size} values, got {arr.size}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (it contains NaN or inf)")
    return arr


def require_positive(name: str, arr: np.ndarray) -> None:
    """A power law lives on x > 0: refuse zeros and negatives."""
    if arr.size and not (arr > 0).all():
        bad = int((arr <= 0).sum())
        raise ValueError(
            f"{name} must be positive (a power law is defined on x > 0); "
            f"{bad} value(s) are zero or negative"
        )


def check_level(alpha: Any) -> float:
    """A significance level from the KS table (0.20, 0.15, 0.10, 0.05, 0.01).

    Raises:
        TypeError: ``alpha`` is not a real number.
        ValueError: ``alpha`` is not one of the tabulated levels.
    """
    a = check_float("alpha", alpha)
    for level in KS_TABLE:
        if math.isclose(a, level, rel_tol=1e-9, abs_tol=0.0):
            return level
    levels = ", ".join(f"{lv:g}" for lv in KS_TABLE)
    raise ValueError(f"alpha must be one of the tabulated KS levels ({levels}), got {alpha!r}")
