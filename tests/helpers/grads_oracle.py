"""The per-sample-gradient oracle of the grads tests: a loop of single-sample autograd.grad."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


def loop_gradients(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    inputs: Any,
    targets: torch.Tensor,
    names: Sequence[str] | None = None,
) -> torch.Tensor:
    """[N, P]: row i = d loss_fn(model(inputs[i:i+1]), targets[i:i+1]) / d params (in
    ``model.named_parameters()`` order, or ``names``), one autograd call per sample."""
    named = dict(model.named_parameters())
    names = list(named) if names is None else list(names)
    rows = []
    for i in range(targets.shape[0]):
        x = tuple(t[i : i + 1] for t in inputs) if isinstance(inputs, tuple) else inputs[i : i + 1]
        out = model(*x) if isinstance(x, tuple) else model(x)
        grads = torch.autograd.grad(
            loss_fn(out, targets[i : i + 1]), [named[n] for n in names], allow_unused=True
        )
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(named[n]) if g is None else g).reshape(-1)
                    for n, g in zip(names, grads)
                ]
            )
        )
    return torch.stack(rows)
