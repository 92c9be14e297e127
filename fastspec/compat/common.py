"""Argument checks shared by the model front doors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fastspec._checks import check_bool, check_float


def check_device(model: nn.Module, cuda: Any, name: str) -> None:
    """Fastspec computes where the model's parameters live.

    ``cuda`` (PyHessian's ``cuda``, hessian-eigenthings' ``use_gpu``) must agree with that.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    cuda = check_bool(name, cuda)
    first = next((p for p in model.parameters() if p.requires_grad), None)
    if first is None:
        raise ValueError("model has no parameter that requires grad")
    on_cuda = first.device.type == "cuda"
    if cuda != on_cuda:
        raise ValueError(
            f"{name}={cuda} but the model's parameters are on {first.device}: fastspec computes "
            f"on the model's device; move the model (model.cuda() / model.cpu()) or pass "
            f"{name}={on_cuda}"
        )


def trainable_names(model: nn.Module) -> list[str]:
    """The parameters the originals differentiate: those with ``requires_grad``, in order."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def check_tol(name: str, value: Any) -> float:
    """A residual tolerance for :func:`fastspec.linalg.eigsh`, in (0, 1)."""
    return check_float(name, value, minimum=0.0, maximum=1.0, open_min=True, open_max=True)


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A flat ``[P]`` vector as one tensor per parameter, shaped like ``like``."""
    out, start = [], 0
    for p in like:
        out.append(vector[start : start + p.numel()].reshape(p.shape).to(p.dtype))
        start += p.numel()
    return out
