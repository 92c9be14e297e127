"""Per-sample gradients [N, P] from layer hooks (torch.func fallback for modules without a rule).

Reference: Z. Xie et al., *On the Overlooked Structure of Stochastic Gradients*, NeurIPS 2023;
I. Goodfellow, *Efficient per-example gradient computations*, arXiv:1510.01799 (2015).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, overload

import torch
from torch import nn

from fastspec._checks import check_bool
from fastspec.batches import SampleBatches
from fastspec.grads.problem import GradProblem
from fastspec.params import ParamSpec

__all__ = ["per_sample_gradients"]


@overload
def per_sample_gradients(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    inputs: Any,
    targets: torch.Tensor,
    *,
    params: ParamSpec = ...,
    mode: str = ...,
    dtype: torch.dtype | None = ...,
    chunk_size: int | None = ...,
    flatten: Literal[True] = ...,
) -> torch.Tensor: ...


@overload
def per_sample_gradients(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    inputs: Any,
    targets: torch.Tensor,
    *,
    params: ParamSpec = ...,
    mode: str = ...,
    dtype: torch.dtype | None = ...,
    chunk_size: int | None = ...,
    flatten: Literal[False],
) -> dict[str, torch.Tensor]: ...


def per_sample_gradients(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    inputs: Any,
    targets: torch.Tensor,
    *,
    params: ParamSpec = None,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
    flatten: bool = True,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The gradient of every sample's own loss with respect to the selected parameters.

    Row i is the gradient of ℓ_i = ``loss_fn(model(inputs[i:i+1]), targets[i:i+1])`` (for a
    mean-reduced loss, the i-th sample's own loss; a loss returning several numbers for one
    sample is refused). Layer rules (Linear with any leading dims, Conv1d/Conv2d, Embedding,
    LayerNorm, GroupNorm, eval-mode BatchNorm) read the layer inputs and output gradients of one
    forward/backward pass per chunk; other parameters use ``torch.func.vmap(grad)``, announced
    by a :class:`~fastspec.grads.FallbackWarning` (see :func:`fastspec.grads.gradient_plan`).

    Args:
        model: any ``nn.Module``.
        loss_fn: ``loss(outputs, targets)``.
        inputs: [N, ...] tensor, or a tuple of such tensors (model arguments).
        targets: [N, ...] tensor.
        params: parameter selection as in :mod:`fastspec.curvature` (names, tensors, regex,
            predicate); default every parameter that requires grad.
        mode: ``"eval"`` (default: BatchNorm running statistics, dropout off) or ``"train"``
            (refused with BatchNorm: per-sample gradients are not defined there).
        dtype: compute dtype (default the parameters'); float32 or float64.
        chunk_size: samples per forward/backward pass.
        flatten: return [N, P] (columns in ``model.named_parameters()`` order); ``False``
            returns ``{name: [N, *shape]}``.

    Returns:
        [N, P] tensor, or a dict of per-parameter tensors.
    """
    flatten = check_bool("flatten", flatten)
    problem = GradProblem(
        model, loss_fn, params=params, mode=mode, dtype=dtype, chunk_size=chunk_size
    )
    data = SampleBatches([(inputs, targets)])
    rows = [
        {n: f.materialise() for n, f in problem.features(x, y).items()}
        for x, y in problem.chunks(data)
    ]
    if flatten:
        return torch.cat([torch.cat([r[n] for n in problem.names], dim=1) for r in rows])
    return {
        n: torch.cat([r[n] for r in rows]).reshape(-1, *problem.theta[n].shape)
        for n in problem.names
    }
