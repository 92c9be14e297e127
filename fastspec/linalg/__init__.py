"""Operators and Krylov solvers.

The ``LinearOperator`` contract, block Lanczos ``eigsh``, stochastic Lanczos quadrature, and
trace estimators. Under a ``torch.distributed`` process group the solvers keep each rank's slice
of every vector (:mod:`fastspec.linalg.sharded`).

``linalg`` knows operators, not models: nothing here imports the curvature, gradient, statistics
or analysis layers.
"""

from __future__ import annotations

from fastspec.linalg.lanczos import ConvergenceWarning, EigshProgress, EigshResult, eigsh
from fastspec.linalg.operator import (
    CallableOperator,
    DenseOperator,
    LinearOperator,
    MatmulOperator,
    ScipyOperator,
    aslinearoperator,
)
from fastspec.linalg.slq import SLQResult, pooled_ritz_values, slq
from fastspec.linalg.trace import TraceResult, trace

__all__ = [
    "CallableOperator",
    "ConvergenceWarning",
    "DenseOperator",
    "EigshProgress",
    "EigshResult",
    "LinearOperator",
    "MatmulOperator",
    "SLQResult",
    "ScipyOperator",
    "TraceResult",
    "aslinearoperator",
    "eigsh",
    "pooled_ritz_values",
    "slq",
    "trace",
]
