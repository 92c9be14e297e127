"""Loads the compiled extension ``fastspec._C`` with a clear error when it is missing."""

from __future__ import annotations

from pathlib import Path
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
        here = Path(__file__).resolve().parent
        hint = (
            f" Python imported fastspec from the source tree {here}, which holds no built "
            "extension: run from another directory, or install with `pip install -e .`."
            if not any(here.glob("_C*.so")) and (here.parent / "CMakeLists.txt").exists()
            else ""
        )
        raise ImportError(
            f"fastspec's native extension fastspec._C failed to load ({_IMPORT_ERROR}). "
            f"Install fastspec with `pip install .` (see README).{hint}"
        )
    return _C


def loaded() -> ModuleType | None:
    """The compiled extension if it loaded, else None (for import-time tables)."""
    return _C
