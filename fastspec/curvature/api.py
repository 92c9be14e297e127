"""The Hessian spectrum, trace and density of (model, loss, data) in one call each.

Each builds a :class:`~fastspec.curvature.HessianOperator` from ``operator_options`` (``params``,
``mode``, ``dtype``, ``hvp``, ``batch_loss``, ``max_samples``, ``allow_stochastic``,
``cache_graph``, ``process_group``; see its docstring) and runs the :mod:`fastspec.linalg` solver
on it, returning that solver's result.

Under a process group (passed as ``process_group=``, or the default group when it is initialised
with more than one rank) ``data`` is this rank's shard and every rank returns the result of one
process over the union of the shards; ``seed=None`` then becomes rank 0's fresh seed on every
rank.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import nn

from fastspec.curvature.data_parallel import common_seed
from fastspec.curvature.operators import HessianOperator
from fastspec.linalg import EigshResult, SLQResult, TraceResult, eigsh, slq, trace

__all__ = ["hessian_density", "hessian_eigs", "hessian_trace"]

OPERATOR_OPTIONS = frozenset(
    {
        "params",
        "mode",
        "dtype",
        "hvp",
        "batch_loss",
        "max_samples",
        "allow_stochastic",
        "cache_graph",
        "process_group",
    }
)
Loss = Optional[Callable[..., torch.Tensor]]


def hessian_eigs(model: nn.Module, loss_fn: Loss, data: Any, k: int, **options: Any) -> EigshResult:
    """The top ``k`` Hessian eigenpairs of the full-data loss, each certified by its residual.

    (Or the bottom ones, ``which="SA"``, or both ends, ``"BE"``): :func:`fastspec.linalg.eigsh`
    on a :class:`HessianOperator`.

    ``options``: the operator's (``params``, ``mode``, ``dtype``, ``hvp``, ``batch_loss``,
    ``max_samples``, ``allow_stochastic``, ``cache_graph``, ``process_group``) and eigsh's (``which``, ``tol``, ``block_size``,
    ``max_basis``, ``return_eigenvectors``, ``seed``, ``v0``, ``progress``, ...).
    """
    operator = {key: options.pop(key) for key in OPERATOR_OPTIONS & options.keys()}
    op = HessianOperator(model, loss_fn, data, **operator)
    options["seed"] = common_seed(options.get("seed"), op.process_group)
    return eigsh(op, k, **options)


def hessian_trace(
    model: nn.Module,
    loss_fn: Loss,
    data: Any,
    *,
    method: str = "hutch++",
    num_matvecs: int = 100,
    seed: int | None = None,
    **operator_options: Any,
) -> TraceResult:
    """Tr(H) with a standard error: :func:`fastspec.linalg.trace` on a :class:`HessianOperator`."""
    op = HessianOperator(model, loss_fn, data, **operator_options)
    seed = common_seed(seed, op.process_group)
    return trace(op, method=method, num_matvecs=num_matvecs, seed=seed)  # type: ignore[arg-type]


def hessian_density(
    model: nn.Module,
    loss_fn: Loss,
    data: Any,
    *,
    num_probes: int = 4,
    num_steps: int = 80,
    seed: int | None = None,
    **operator_options: Any,
) -> SLQResult:
    """Spectral density by stochastic Lanczos quadrature (``result.density(grid, sigma=...)``).

    :func:`fastspec.linalg.slq` on a :class:`HessianOperator`.
    """
    op = HessianOperator(model, loss_fn, data, **operator_options)
    seed = common_seed(seed, op.process_group)
    return slq(op, num_probes=num_probes, num_steps=num_steps, seed=seed)
