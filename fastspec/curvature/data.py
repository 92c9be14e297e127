"""Data handling for the curvature operators: batches, their sizes, device and dtype.

``data`` is a ``DataLoader`` or any re-iterable of batches, or a single ``(inputs, targets)``
pair. A batch is an ``(inputs, targets)`` pair, or anything a ``batch_loss`` hook understands
(e.g. a dict of tensors for a language model); its sample count is the leading size of its first
tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch


def as_batches(data: Any) -> Iterable[Any]:
    """A re-iterable of batches. One-shot iterators (generators) are materialised once."""
    if data is None:
        raise ValueError("data must be a DataLoader, an iterable of batches or (inputs, targets)")
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return [tuple(data)]
    if isinstance(data, Mapping):
        return [data]
    if isinstance(data, torch.Tensor):
        raise TypeError(
            "data must be batches of (inputs, targets), not a single tensor; "
            "pass (inputs, targets) or a DataLoader"
        )
    if not isinstance(data, Iterable):
        raise TypeError(
            f"data must be iterable (a DataLoader or list of batches), got {type(data).__name__}"
        )
    if isinstance(data, Iterator):
        return list(data)
    return data


def pair(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a batch; a list of inputs becomes a tuple of model arguments."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(
            "each batch must be an (inputs, targets) pair; for other batches pass batch_loss="
        )
    inputs, targets = batch
    return (tuple(inputs) if isinstance(inputs, list) else inputs), targets


def first_tensor(batch: Any) -> torch.Tensor | None:
    """The first tensor in a (nested) batch, depth first."""
    if isinstance(batch, torch.Tensor):
        return batch
    items = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(items, (tuple, list)) or isinstance(batch, Mapping):
        for item in items:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def batch_size(batch: Any) -> int:
    """Number of samples in a batch: the leading size of its first tensor."""
    t = first_tensor(batch)
    if t is None or t.dim() == 0:
        raise ValueError(
            "every batch must contain a tensor whose first dimension counts samples, "
            f"got {type(batch).__name__}"
        )
    return int(t.shape[0])


def map_tensors(batch: Any, fn: Any) -> Any:
    """Apply ``fn`` to every tensor of a nested batch (tuples, lists, dicts)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return type(batch)({k: map_tensors(v, fn) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch


def to_device(batch: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move a batch to ``device``; floating tensors are cast to ``dtype`` (integer labels kept)."""

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

    return map_tensors(batch, move)


def truncate(batch: Any, n: int) -> Any:
    """The first ``n`` samples of a batch (every tensor sliced along its first dimension)."""
    return map_tensors(batch, lambda t: t[:n] if t.dim() > 0 else t)
