"""Loads the compiled extension ``fastspec._C`` with a clear error when it is missing."""

from __future__ import annotations

from types import ModuleType

_C: ModuleType | None
try:
    from fastspec import _C
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    _C = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None


def native() -> ModuleType:
    """Return the compiled extension, or raise an ImportError that says how to build it."""
    if _C is None:
        raise ImportError(
            "fastspec's native extension fastspec._C is not built or failed to load "
            f"({_IMPORT_ERROR}). Install fastspec with `pip install .` from a clone (see README)."
        )
    return _C
