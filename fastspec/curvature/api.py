"""The Hessian spectrum, trace and density of (model, loss, data) in one call each.

Each builds a :class:`~fastspec.curvature.HessianOperator` (its options: ``params``, ``mode``,
``dtype``, ``hvp``, ``batch_loss``, ``max_samples``, ``allow_stochastic``) and runs the
:mod:`fastspec.linalg` solver on it, returning that solver's result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fastspec.curvature.operators import HessianOperator
from fastspec.curvature.params import ParamSpec
from fastspec.linalg import EigshResult, SLQResult, TraceResult, eigsh, slq, trace

__all__ = ["hessian_density", "hessian_eigs", "hessian_trace"]


def hessian_eigs(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor] | None,
    data: Any,
    k: int,
    *,
    params: ParamSpec = None,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    hvp: str = "auto",
    batch_loss: Any = None,
    max_samples: int | None = None,
    allow_stochastic: bool = False,
    **eigsh_options: Any,
) -> EigshResult:
    """Top (or bottom, ``which="SA"``; or both ends, ``"BE"``) ``k`` Hessian eigenpairs of the
    full-data loss, with certified residuals: :func:`fastspec.linalg.eigsh` on a
    :class:`HessianOperator`. ``eigsh_options``: ``which``, ``tol``, ``block_size``,
    ``max_basis``, ``return_eigenvectors``, ``seed``, ``v0``, ``progress``, ...
    """
    op = HessianOperator(
        model, loss_fn, data, params=params, mode=mode, dtype=dtype, hvp=hvp,
        batch_loss=batch_loss, max_samples=max_samples, allow_stochastic=allow_stochastic,
    )  # fmt: skip
    return eigsh(op, k, **eigsh_options)


def hessian_trace(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor] | None,
    data: Any,
    *,
    method: str = "hutch++",
    num_matvecs: int = 100,
    seed: int | None = None,
    params: ParamSpec = None,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    hvp: str = "auto",
    batch_loss: Any = None,
    max_samples: int | None = None,
    allow_stochastic: bool = False,
) -> TraceResult:
    """Tr(H) with a standard error: :func:`fastspec.linalg.trace` on a :class:`HessianOperator`."""
    op = HessianOperator(
        model, loss_fn, data, params=params, mode=mode, dtype=dtype, hvp=hvp,
        batch_loss=batch_loss, max_samples=max_samples, allow_stochastic=allow_stochastic,
    )  # fmt: skip
    return trace(op, method=method, num_matvecs=num_matvecs, seed=seed)  # type: ignore[arg-type]


def hessian_density(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor] | None,
    data: Any,
    *,
    num_probes: int = 4,
    num_steps: int = 80,
    seed: int | None = None,
    params: ParamSpec = None,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    hvp: str = "auto",
    batch_loss: Any = None,
    max_samples: int | None = None,
    allow_stochastic: bool = False,
) -> SLQResult:
    """Spectral density by stochastic Lanczos quadrature (``result.density(grid, sigma)``):
    :func:`fastspec.linalg.slq` on a :class:`HessianOperator`."""
    op = HessianOperator(
        model, loss_fn, data, params=params, mode=mode, dtype=dtype, hvp=hvp,
        batch_loss=batch_loss, max_samples=max_samples, allow_stochastic=allow_stochastic,
    )  # fmt: skip
    return slq(op, num_probes=num_probes, num_steps=num_steps, seed=seed)
