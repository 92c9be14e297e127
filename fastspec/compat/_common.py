"""Argument checks shared by the model front doors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def check_device(model: nn.Module, cuda: Any, name: str) -> None:
    """fastspec computes where the model's parameters live; ``cuda`` (PyHessian's ``cuda``,
    hessian-eigenthings' ``use_gpu``) must agree with that."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(cuda, bool):
        raise TypeError(f"{name} must be True or False, got {cuda!r}")
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


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def check_tol(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (0 < value < 1):
        raise ValueError(f"{name} must lie in (0, 1), got {value}")
    return float(value)


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A flat ``[P]`` vector as one tensor per parameter, shaped like ``like``."""
    out, start = [], 0
    for p in like:
        out.append(vector[start : start + p.numel()].reshape(p.shape).to(p.dtype))
        start += p.numel()
    return out
