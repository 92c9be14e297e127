"""One hooked forward/backward pass per chunk: layer inputs and output gradients.

One forward/backward pass over a chunk that captures, for every hooked module, its inputs and the
gradients of the per-sample losses with respect to its outputs.

Forward hooks record each call's input and output; after the forward pass the per-sample losses
ℓ_i (each ``loss_fn`` on the one-sample batch i, see :func:`sample_losses`) are summed and one
``torch.autograd.grad`` call returns d(Σ_i ℓ_i)/d(output) for every recorded output (no weight
gradients are formed). For a model without cross-sample interaction (no train-mode BatchNorm),
row i of such an output gradient depends on sample i only and equals dℓ_i/d(output_i): it is
exactly the per-sample output gradient.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._pytree import tree_map

__all__ = ["Recorded", "record_calls", "sample_losses"]


@dataclass
class Recorded:
    """A call in flight: input, output, their version counters, the module's buffers."""

    x: torch.Tensor
    y: torch.Tensor
    versions: tuple[int, int]
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    def modified(self) -> bool:
        """Whether the input or the output was modified in place after the call."""
        return (self.x._version, self.y._version) != self.versions


@contextmanager
def record_calls(modules: dict[str, nn.Module], *, clone: bool) -> Iterator[dict[str, list[Any]]]:
    """Record every call of ``modules`` (name → module) while the context is open.

    Args:
        modules: the hooked modules.
        clone: store a copy of each input and pass a copy of each output on, so that in-place
            operations after the layer (``ReLU(inplace=True)``, ``x += f(x)``) cannot change
            what was recorded.

    Yields:
        name → list of :class:`Recorded`, one per call whose output requires grad.
    """
    records: dict[str, list[Any]] = {name: [] for name in modules}
    handles = []

    def make_hook(name: str) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            if not (isinstance(output, torch.Tensor) and output.requires_grad and args):
                return None
            x = args[0].detach()
            x = x.clone() if clone else x
            buffers = {k: b.detach() for k, b in module._buffers.items() if b is not None}
            records[name].append(Recorded(x, output, (x._version, output._version), buffers))
            return output.clone() if clone else None

        return hook

    for name, module in modules.items():
        handles.append(module.register_forward_hook(make_hook(name)))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


def sample_losses(loss_fn: Callable[..., torch.Tensor], outputs: Any, targets: Any) -> torch.Tensor:
    """[n] per-sample losses ℓ_i = ``loss_fn(outputs[i:i+1], targets[i:i+1])``.

    Evaluated for all samples at once with ``torch.func.vmap`` (a loop over samples when the
    loss cannot be vmapped). For a mean-reduced loss ℓ_i is the sample's own loss; this is the
    per-sample term whatever the reduction (a weighted or ``ignore_index`` cross-entropy
    included), since each term is the loss of a one-sample batch.

    Raises:
        ValueError: ``loss_fn`` returns more than one number for a one-sample batch (e.g.
            ``reduction="none"`` over sequence positions), which hides how the per-sample term
            is reduced.
    """

    def one(out: Any, target: Any) -> torch.Tensor:
        value = loss_fn(tree_map(lambda t: t.unsqueeze(0), out), target.unsqueeze(0))
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                "loss_fn must return one number for a one-sample batch (reduction 'mean' or "
                f"'sum'), got {shape}; a loss with reduction='none' over several terms per "
                "sample hides how they form the per-sample loss: reduce them in loss_fn"
            )
        return value.reshape(())

    try:
        return torch.func.vmap(one)(outputs, targets)
    except (RuntimeError, NotImplementedError):  # not vmappable: one call per sample
        n = targets.shape[0]
        return torch.stack(
            [one(tree_map(lambda t: t[i], outputs), targets[i]) for i in range(n)]  # noqa: B023
        )
