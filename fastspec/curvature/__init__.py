"""Curvature operators of a model, its loss and its data, and the Hessian spectrum in one call.

``curvature`` turns (model, loss, data) into :class:`fastspec.linalg.LinearOperator` s; the
solvers in :mod:`fastspec.linalg` know nothing of models.
"""

from fastspec.curvature.api import hessian_density, hessian_eigs, hessian_trace
from fastspec.curvature.language import lm_loss, token_cross_entropy
from fastspec.curvature.operators import EmpiricalFisherOperator, GGNOperator, HessianOperator

__all__ = [
    "EmpiricalFisherOperator",
    "GGNOperator",
    "HessianOperator",
    "hessian_density",
    "hessian_eigs",
    "hessian_trace",
    "lm_loss",
    "token_cross_entropy",
]
