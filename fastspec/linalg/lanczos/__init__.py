"""Block Lanczos with thick restart and locking: :func:`eigsh`, one module per job.

See :mod:`~fastspec.linalg.lanczos.driver` for the map of the modules.
"""

from __future__ import annotations

from fastspec.linalg.lanczos.driver import eigsh
from fastspec.linalg.lanczos.result import ConvergenceWarning, EigshProgress, EigshResult

__all__ = ["ConvergenceWarning", "EigshProgress", "EigshResult", "eigsh"]
