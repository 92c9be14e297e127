"""One set of argument checks and one way to serialise results, for the whole package.

Every public function validates its options here, so the same mistake gives the same error
everywhere: a wrong *type* raises ``TypeError``, a wrong *value* raises ``ValueError``, numpy
scalars are accepted like Python's, and the message names the argument and what was expected.
This module sits below every layer (it imports neither torch models nor other subpackages).

>>> check_int("k", np.int64(3), minimum=1)
3
>>> check_int("k", 2.7)
Traceback (most recent call last):
    ...
TypeError: k must be an int, got float 2.7
>>> check_float("tol", 2.0, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
Traceback (most recent call last):
    ...
ValueError: tol must lie in (0, 1), got 2
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Collection, Mapping
from typing import Any, Literal, overload

import numpy as np

__all__ = ["AsDict", "check_bool", "check_choice", "check_float", "check_int", "to_plain"]


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


@overload
def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = ...,
    maximum: int | None = ...,
    none_ok: Literal[False] = False,
) -> int: ...
@overload
def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = ...,
    maximum: int | None = ...,
    none_ok: Literal[True],
) -> int | None: ...
def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    none_ok: bool = False,
) -> int | None:
    """An integer (Python or numpy; bools and floats refused) in ``[minimum, maximum]``.

    Args:
        name: the argument's name, for the message.
        value: what the caller passed.
        minimum: smallest allowed value, or ``None`` for no bound.
        maximum: largest allowed value, or ``None`` for no bound.
        none_ok: accept ``None`` (returned as is).

    Returns:
        ``value`` as a Python ``int`` (or ``None``).

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: ``value`` is outside the bounds.
    """
    if value is None and none_ok:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        expected = "an int or None" if none_ok else "an int"
        raise TypeError(f"{name} must be {expected}, got {_shown(value)}")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = None if minimum is None else float(minimum)
        hi = None if maximum is None else float(maximum)
        raise ValueError(f"{name} must {_range_text(lo, hi, False, False)}, got {v}")
    return v


@overload
def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = ...,
    maximum: float | None = ...,
    open_min: bool = ...,
    open_max: bool = ...,
    none_ok: Literal[False] = False,
) -> float: ...
@overload
def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = ...,
    maximum: float | None = ...,
    open_min: bool = ...,
    open_max: bool = ...,
    none_ok: Literal[True],
) -> float | None: ...
def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    open_min: bool = False,
    open_max: bool = False,
    none_ok: bool = False,
) -> float | None:
    """A finite real number (int, float or numpy scalar; bools refused) within the bounds.

    Args:
        name: the argument's name, for the message.
        value: what the caller passed.
        minimum: lower bound, or ``None``.
        maximum: upper bound, or ``None``.
        open_min: the lower bound itself is excluded.
        open_max: the upper bound itself is excluded.
        none_ok: accept ``None`` (returned as is).

    Returns:
        ``value`` as a Python ``float`` (or ``None``).

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is NaN, infinite or outside the bounds.
    """
    if value is None and none_ok:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        expected = "a real number or None" if none_ok else "a real number"
        raise TypeError(f"{name} must be {expected}, got {_shown(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    low_bad = minimum is not None and (v <= minimum if open_min else v < minimum)
    high_bad = maximum is not None and (v >= maximum if open_max else v > maximum)
    if low_bad or high_bad:
        raise ValueError(
            f"{name} must {_range_text(minimum, maximum, open_min, open_max)}, got {v:g}"
        )
    return v


def _range_text(lo: float | None, hi: float | None, open_lo: bool, open_hi: bool) -> str:
    if lo is not None and hi is not None:
        return f"lie in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
    if lo is not None:
        return f"be {'>' if open_lo else '>='} {lo:g}"
    return f"be {'<' if open_hi else '<='} {hi:g}"


def check_choice(name: str, value: Any, choices: Collection[str]) -> str:
    """One of a fixed set of strings.

    Raises:
        TypeError: ``value`` is not a string.
        ValueError: ``value`` is not one of ``choices``.
    """
    shown = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {shown}, got {_shown(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {shown}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` (numpy bools accepted).

    Raises:
        TypeError: ``value`` is not a bool.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_shown(value)}")
    return bool(value)


def to_plain(value: Any) -> Any:
    """``value`` as plain Python (dicts, lists, numbers, strings): the one serialisation.

    Tensors and arrays become (nested) lists, numpy scalars Python numbers, paths strings,
    dataclasses their :class:`AsDict` form (or all fields), mappings and sequences element-wise.
    """
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # a torch tensor, any device
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


class AsDict:
    """Mixin for result dataclasses: ``to_dict()`` is every field through :func:`to_plain`.

    A field declared with ``metadata={"serialize": False}`` (eigenvectors, bulky tensors) is left
    out; the names in ``_dict_properties`` (derived properties worth keeping) are added.
    """

    _dict_properties: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form of the result (see :func:`to_plain`)."""
        assert dataclasses.is_dataclass(self)
        out = {
            f.name: to_plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata.get("serialize", True)
        }
        for name in self._dict_properties:
            out[name] = to_plain(getattr(self, name))
        return out
