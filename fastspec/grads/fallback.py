"""Per-sample gradients of parameters no layer rule covers: ``torch.func.vmap(grad)``.

Used for parameters of modules without a rule (attention's packed projections, custom layers
with their own ``nn.Parameter``), of rule-less configurations, and of parameters that are also
used outside their module's ``forward`` (weight tying, functional use). The per-sample loss is
``loss_fn`` on the one-sample batch, exactly as in :func:`fastspec.grads.hooks.sample_losses`;
the whole model runs under ``vmap`` but only the fallback parameters are differentiated. Memory
is n × (their parameter count) per chunk.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_map

__all__ = ["FallbackWarning", "fallback_gradients"]


class FallbackWarning(UserWarning):
    """Some per-sample gradients are computed by the torch.func fallback (slower; exact)."""


def fallback_gradients(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    theta: dict[str, torch.Tensor],
    loss_fn: Callable[..., torch.Tensor],
    inputs: Any,
    targets: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Per-sample gradients ``{name: [n, *shape]}`` of the parameters in ``theta``.

    Args:
        model: the module.
        state: every other parameter and buffer (name → tensor) for ``functional_call``.
        theta: the differentiated parameters (name → tensor).
        loss_fn: ``loss(outputs, targets)``; called on one-sample batches.
        inputs: [n, ...] tensor or tuple of tensors (model arguments), samples first.
        targets: [n, ...].
    """
    args = inputs if isinstance(inputs, tuple) else (inputs,)

    def one(th: dict[str, torch.Tensor], x: tuple[Any, ...], y: torch.Tensor) -> torch.Tensor:
        batch = tree_map(lambda t: t.unsqueeze(0), x)
        loss = loss_fn(functional_call(model, {**state, **th}, batch), y.unsqueeze(0))
        return loss.reshape(())

    # the math attention kernel is the one with batching rules for every backend
    with sdpa_kernel(SDPBackend.MATH):
        return vmap(grad(one), in_dims=(None, 0, 0))(theta, args, targets)
