"""Record stochastic gradients during training, for P2's tests.

Record stochastic gradients during training, for P2's iteration-wise, noise and dimension-wise tests
(Xie et al., *On the Overlooked Structure of Stochastic Gradients*, NeurIPS 2023; a reconstruction).

A :class:`GradientRecorder` keeps a bounded, seeded sample of C coordinates of the flattened
selected parameters. At every :meth:`~GradientRecorder.record` (after ``loss.backward()``) it
stores those coordinates of the minibatch gradient g_t (read from ``p.grad``); given ``loss_fn``
and ``data`` it also computes the full-data gradient ∇L(θ_t), L = (1/N) Σ_i ℓ_i, and stores the
noise ξ_t = g_t − ∇L(θ_t) at the same coordinates; at the steps in ``full_gradient_steps`` it
keeps the whole minibatch gradient [P]. g_t must be the gradient of the minibatch *mean* loss
for ξ_t to be the minibatch noise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call

from fastspec._checks import check_int
from fastspec.batches import SampleBatches, to_device
from fastspec.grads.hooks import sample_losses
from fastspec.mode import MODEL_LOCK, check_mode, model_mode
from fastspec.params import ParamSpec, select_parameters

__all__ = ["GradientRecorder"]


class GradientRecorder:
    """Sampled coordinates of minibatch gradients (and of their noise) over training steps.

    Args:
        model: the model being trained.
        params: parameter selection as in :mod:`fastspec.curvature` (default all that require
            grad); coordinates index the concatenation of the selected parameters, flattened in
            ``model.named_parameters()`` order.
        num_coordinates: C, how many coordinates to track (all P if P is smaller).
        seed: seed of the coordinate sample.
        loss_fn: ``loss(outputs, targets)``; with ``data``, enables the noise record.
        data: the training set (a ``DataLoader``, batches or one ``(inputs, targets)`` pair)
            over which ∇L(θ_t) is computed at every :meth:`record` (one full pass: choose a
            subset when the set is large).
        full_gradient_steps: steps at which the whole minibatch gradient is kept.
        mode: mode of the full-gradient pass: ``"eval"`` (default) or ``"train"``; buffers of
            the model are never updated by it.

    Attributes:
        steps: the recorded step numbers, in order.
        coordinates: [C] int64 sampled coordinates (ascending).
        minibatch: [T, C] the minibatch gradient at the coordinates, one row per step.
        noise: [T, C] ξ_t at the coordinates, or ``None`` without ``loss_fn``/``data``.
        full_gradients: step → [P] whole minibatch gradient.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        params: ParamSpec = None,
        num_coordinates: int = 1000,
        seed: int = 0,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        data: Any = None,
        full_gradient_steps: Iterable[int] = (),
        mode: str = "eval",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        num_coordinates = check_int("num_coordinates", num_coordinates, minimum=1)
        seed = check_int("seed", seed)
        if (loss_fn is None) != (data is None):
            raise ValueError("pass both loss_fn and data (for the noise record), or neither")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError("loss_fn must be a callable loss(outputs, targets) -> scalar")
        check_mode(model, mode, allow_stochastic=False)
        self.model, self.loss_fn, self.mode = model, loss_fn, mode
        self.names = select_parameters(model, params)
        self._batches = None if data is None else SampleBatches(data)
        with MODEL_LOCK:
            named = dict(model.named_parameters())
        self._params = [named[n] for n in self.names]
        P = sum(p.numel() for p in self._params)
        g = torch.Generator().manual_seed(seed)
        self.coordinates = torch.randperm(P, generator=g)[: min(num_coordinates, P)].sort().values
        self.num_params = P
        self.full_gradient_steps = {
            check_int("full_gradient_steps[]", s) for s in full_gradient_steps
        }
        self.steps: list[int] = []
        self._minibatch: list[torch.Tensor] = []
        self._noise: list[torch.Tensor] = []
        self.full_gradients: dict[int, torch.Tensor] = {}

    @property
    def minibatch(self) -> torch.Tensor:
        """[T, C] recorded minibatch-gradient coordinates."""
        return _stack(self._minibatch, len(self.coordinates))

    @property
    def noise(self) -> torch.Tensor | None:
        """[T, C] recorded noise coordinates, or ``None`` without ``loss_fn``/``data``."""
        return None if self._batches is None else _stack(self._noise, len(self.coordinates))

    def record(self, step: int) -> None:
        """Record the current minibatch gradient (call after ``loss.backward()``)."""
        step = check_int("step", step)
        if any(p.grad is None for p in self._params):
            missing = [n for n, p in zip(self.names, self._params) if p.grad is None]
            raise ValueError(
                f"parameters {missing} have no .grad: call record after loss.backward()"
            )
        flat = torch.cat([p.grad.detach().reshape(-1) for p in self._params])  # type: ignore[union-attr]
        coords = self.coordinates.to(flat.device)
        self.steps.append(step)
        self._minibatch.append(flat[coords].cpu())
        if step in self.full_gradient_steps:
            self.full_gradients[step] = flat.clone().cpu()
        if self._batches is not None:
            self._noise.append((flat - self.full_gradient())[coords].cpu())

    def full_gradient(self) -> torch.Tensor:
        """∇L(θ) [P] over ``data`` at the current parameters, L = (1/N) Σ_i ℓ_i."""
        if self._batches is None or self.loss_fn is None:
            raise ValueError("the full gradient needs loss_fn and data")
        with MODEL_LOCK:
            named = dict(self.model.named_parameters())
            buffers = dict(self.model.named_buffers())
        theta = {n: named[n].detach().requires_grad_(True) for n in self.names}
        state = {
            **{n: p.detach() for n, p in named.items()},
            **{n: b.detach().clone() for n, b in buffers.items()},
            **theta,
        }
        total = [torch.zeros_like(t) for t in theta.values()]
        with model_mode(self.model, self.mode):
            for batch in self._batches:
                inputs, targets = to_device(
                    batch, self._params[0].device, named[self.names[0]].dtype
                )
                args = inputs if isinstance(inputs, tuple) else (inputs,)
                out = functional_call(self.model, state, args)
                loss = sample_losses(self.loss_fn, out, targets).sum()
                grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
                for acc, g in zip(total, grads):
                    if g is not None:
                        acc += g
        return torch.cat([t.reshape(-1) for t in total]) / self._batches.num_samples

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form of the record (coordinates, rows, full gradients)."""
        noise = self.noise
        return {
            "steps": list(self.steps),
            "coordinates": self.coordinates.tolist(),
            "num_params": self.num_params,
            "minibatch": self.minibatch.tolist(),
            "noise": None if noise is None else noise.tolist(),
            "full_gradients": {s: g.tolist() for s, g in self.full_gradients.items()},
        }


def _stack(rows: list[torch.Tensor], C: int) -> torch.Tensor:
    return torch.stack(rows) if rows else torch.empty(0, C)
