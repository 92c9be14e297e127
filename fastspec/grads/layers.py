"""Per-layer rules.

per-sample gradients of a layer's own parameters from its inputs and the gradients of the per-sample
losses with respect to its outputs.

A rule sees every call of its module in one forward pass over a chunk (a module called several
times, e.g. a shared layer, contributes the sum of its calls) and returns one
:class:`~fastspec.grads.features.Feature` per parameter it was asked for:

- ``Linear`` (inputs [n, *, D_in], any leading dims: positions of a sequence): weight
  Σ_t g_t a_tᵀ (:class:`Outer`), bias Σ_t g_t.
- ``Conv1d`` / ``Conv2d`` (stride, padding of any mode or ``"same"``, dilation, groups): the
  weight as a linear map on im2col columns, one group per ``groups`` (:class:`Outer`); bias
  Σ_positions g.
- ``Embedding`` (``padding_idx`` honoured): :class:`Index`.
- ``LayerNorm``, ``GroupNorm``, ``BatchNorm1d/2d/3d`` in eval mode (running statistics):
  weight Σ g ∘ x̂, bias Σ g over the non-channel positions, x̂ the normalised input.

Modules not listed, and listed ones in configurations whose per-sample gradient these rules do
not cover (``Embedding`` with ``max_norm``/``scale_grad_by_freq``/``sparse``, ``Conv3d``,
BatchNorm without running statistics), use the torch.func fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fastspec.grads.features import Dense, Feature, Index, Outer

__all__ = ["Call", "rule_for"]


@dataclass
class Call:
    """One call of a hooked module: its input, the gradient at its output, its buffers then."""

    x: torch.Tensor
    g: torch.Tensor
    buffers: dict[str, torch.Tensor]


Rule = Callable[[nn.Module, Sequence[Call], set[str]], dict[str, Feature]]


def rule_for(module: nn.Module) -> Rule | None:
    """The rule of ``module`` (its exact type and configuration), or ``None``."""
    kind = type(module)
    if kind is nn.Linear:
        return _linear
    if kind in (nn.Conv1d, nn.Conv2d):
        return _conv
    if kind is nn.Embedding:
        m = module
        assert isinstance(m, nn.Embedding)
        if m.max_norm is None and not m.scale_grad_by_freq and not m.sparse:
            return _embedding
        return None
    if kind is nn.LayerNorm:
        return _layer_norm
    if kind is nn.GroupNorm:
        return _group_norm
    if kind in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        return _batch_norm if getattr(module, "running_mean", None) is not None else None
    return None


def _bias(g: torch.Tensor) -> Dense:
    """Σ over every dim but samples (0) and channels (-1) of g [n, *, C]."""
    return Dense(g.reshape(g.shape[0], -1, g.shape[-1]).sum(1))


def _linear(module: nn.Module, calls: Sequence[Call], wanted: set[str]) -> dict[str, Feature]:
    a = torch.cat([c.x.reshape(c.x.shape[0], -1, c.x.shape[-1]) for c in calls], dim=1)
    g = torch.cat([c.g.reshape(c.g.shape[0], -1, c.g.shape[-1]) for c in calls], dim=1)
    out: dict[str, Feature] = {}
    if "weight" in wanted:
        out["weight"] = Outer(a[:, None], g[:, None])
    if "bias" in wanted:
        out["bias"] = _bias(g)
    return out


def _conv(module: nn.Module, calls: Sequence[Call], wanted: set[str]) -> dict[str, Feature]:
    assert isinstance(module, (nn.Conv1d, nn.Conv2d))
    R = module.groups
    cols, grads = [], []
    for c in calls:
        n = c.x.shape[0]
        u = _im2col(module, c.x)  # [n, C_in·K, L]
        cols.append(u.reshape(n, R, -1, u.shape[-1]).transpose(2, 3))  # [n, R, L, C_in/R·K]
        gr = c.g.reshape(n, R, module.out_channels // R, -1)
        grads.append(gr.transpose(2, 3))  # [n, R, L, C_out/R]
    g = torch.cat(grads, dim=2)
    out: dict[str, Feature] = {}
    if "weight" in wanted:
        out["weight"] = Outer(torch.cat(cols, dim=2), g)
    if "bias" in wanted:
        out["bias"] = Dense(g.sum(2).reshape(g.shape[0], -1))
    return out


def _im2col(module: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Columns [n, C_in·K, L] of ``x`` for ``module``'s kernel, stride, padding and dilation."""
    one_d = isinstance(module, nn.Conv1d)
    if one_d:
        x = x.unsqueeze(2)
    padding: tuple[int, ...] | str = module.padding
    if isinstance(padding, str) or module.padding_mode != "zeros":
        pad = list(module._reversed_padding_repeated_twice)
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, [*pad, 0, 0] if one_d else pad, mode=mode) if any(pad) else x
        padding = (0,) * (1 if one_d else 2)

    def pair(v: tuple[int, ...] | str, fill: int) -> tuple[int, ...]:
        assert not isinstance(v, str)
        return (fill, *v) if one_d else tuple(v)

    return F.unfold(
        x,
        kernel_size=pair(module.kernel_size, 1),
        dilation=pair(module.dilation, 1),
        padding=pair(padding, 0),
        stride=pair(module.stride, 1),
    )


def _embedding(module: nn.Module, calls: Sequence[Call], wanted: set[str]) -> dict[str, Feature]:
    assert isinstance(module, nn.Embedding)
    idx = torch.cat([c.x.reshape(c.x.shape[0], -1) for c in calls], dim=1)
    g = torch.cat([c.g.reshape(c.g.shape[0], -1, c.g.shape[-1]) for c in calls], dim=1)
    if module.padding_idx is not None:  # the padding row receives no gradient
        g = g.masked_fill((idx == module.padding_idx)[..., None], 0.0)
    return {"weight": Index(idx, g, module.num_embeddings)} if "weight" in wanted else {}


def _affine(
    calls: Sequence[Call],
    wanted: set[str],
    normalise: Callable[[Call], tuple[torch.Tensor, torch.Tensor]],
    dims: int,
) -> dict[str, Feature]:
    """Weight Σ g∘x̂ and bias Σ g, summed over positions.

    the last ``dims`` dims of ``normalise(call)`` (channels-last) are the parameter's shape.
    """
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    for c in calls:
        n = c.g.shape[0]
        xhat, g = normalise(c)
        shape = g.shape[g.dim() - dims :]
        if "weight" in wanted:
            w = (g * xhat).reshape(n, -1, *shape).sum(1).reshape(n, -1)
            weight = w if weight is None else weight + w
        if "bias" in wanted:
            b = g.reshape(n, -1, *shape).sum(1).reshape(n, -1)
            bias = b if bias is None else bias + b
    out: dict[str, Feature] = {}
    if weight is not None:
        out["weight"] = Dense(weight)
    if bias is not None:
        out["bias"] = Dense(bias)
    return out


def _layer_norm(module: nn.Module, calls: Sequence[Call], wanted: set[str]) -> dict[str, Feature]:
    assert isinstance(module, nn.LayerNorm)
    shape = tuple(module.normalized_shape)

    def normalise(c: Call) -> tuple[torch.Tensor, torch.Tensor]:
        return F.layer_norm(c.x, shape, None, None, module.eps), c.g

    return _affine(calls, wanted, normalise, len(shape))


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """[n, C, *] → [n, *, C]."""
    return t.movedim(1, -1) if t.dim() > 2 else t


def _group_norm(module: nn.Module, calls: Sequence[Call], wanted: set[str]) -> dict[str, Feature]:
    assert isinstance(module, nn.GroupNorm)

    def normalise(c: Call) -> tuple[torch.Tensor, torch.Tensor]:
        xhat = F.group_norm(c.x, module.num_groups, None, None, module.eps)
        return _channels_last(xhat), _channels_last(c.g)

    return _affine(calls, wanted, normalise, 1)


def _batch_norm(module: nn.Module, calls: Sequence[Call], wanted: set[str]) -> dict[str, Feature]:
    assert isinstance(module, nn.modules.batchnorm._BatchNorm)
    eps = module.eps

    def normalise(c: Call) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = c.buffers["running_mean"], c.buffers["running_var"]
        xhat = (_channels_last(c.x) - mean) / torch.sqrt(var + eps)
        return xhat, _channels_last(c.g)

    return _affine(calls, wanted, normalise, 1)
