"""Data as the curvature operators and the per-sample gradients see it: batches and their sizes.

``data`` is a ``DataLoader`` or any re-iterable of batches, or a single ``(inputs, targets)``
pair. A batch is an ``(inputs, targets)`` pair, or anything a ``batch_loss`` hook understands
(e.g. a dict of tensors for a language model); its sample count is the leading size of its first
tensor. :class:`SampleBatches` is ``data`` of ``(inputs, targets)`` pairs checked and counted
once, the one structure the per-sample-gradient code reads. This module sits below
:mod:`fastspec.curvature` and :mod:`fastspec.grads` and imports neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable

import torch

__all__ = [
    "SampleBatches",
    "as_batches",
    "batch_size",
    "check_finite",
    "describe",
    "first_tensor",
    "loss_error",
    "map_tensors",
    "pair",
    "slice_samples",
    "to_device",
    "truncate",
]


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


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
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


def check_finite(batch: Any) -> None:
    """Refuse a batch whose floating-point tensors hold NaN or inf (before any computation).

    Raises:
        ValueError: a tensor of the batch is not finite.
    """
    bad: list[torch.Tensor] = []

    def look(t: torch.Tensor) -> None:
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            bad.append(t)

    map_tensors(batch, look)
    if bad:
        raise ValueError(
            f"data contains NaN or inf (a {bad[0].dtype} tensor of shape "
            f"{tuple(bad[0].shape)}); every curvature and gradient would be NaN"
        )


def describe(batch: Any) -> str:
    """The dtypes and shapes of a batch's tensors, for messages."""
    parts: list[str] = []
    map_tensors(batch, lambda t: parts.append(f"{str(t.dtype)[6:]} {list(t.shape)}"))
    return ", ".join(parts)


def loss_error(loss: Callable[[], Any], batch: Any) -> TypeError | None:
    """A clear error when the loss itself cannot be evaluated on ``batch``, else ``None``.

    A derivative that fails may fail because the model lacks a derivative, or because the data
    do not fit the model and loss at all (integer inputs to a float layer, float class targets):
    ``loss()`` (the batch's loss, no derivative) tells the two apart.
    """
    try:
        with torch.no_grad():
            loss()
    except Exception as plain:  # any failure of the plain loss is the data's
        return TypeError(
            f"the loss cannot be evaluated on a batch ({describe(batch)}): {plain}. "
            "Check the dtypes and shapes of the inputs and targets (e.g. floating-point inputs, integer "
            "class indices as targets of CrossEntropyLoss)"
        )
    return None


def _check_pair(inputs: Any, targets: Any) -> int:
    """The sample count of an ``(inputs, targets)`` pair, whose tensors all have samples first."""
    tensors = list(inputs) if isinstance(inputs, tuple) else [inputs]
    if not tensors or not all(isinstance(t, torch.Tensor) and t.dim() > 0 for t in tensors):
        raise TypeError("inputs must be a tensor (or a tuple of tensors) with samples first")
    if not isinstance(targets, torch.Tensor) or targets.dim() == 0:
        raise TypeError("targets must be a tensor with samples first")
    n = tensors[0].shape[0]
    sizes = [t.shape[0] for t in tensors]
    if any(s != n for s in sizes) or targets.shape[0] != n:
        raise ValueError(
            "inputs and targets must hold the same number of samples (first dimension): "
            f"inputs {sizes if len(sizes) > 1 else n}, targets {targets.shape[0]}"
        )
    return int(n)


def slice_samples(inputs: Any, lo: int, hi: int) -> Any:
    """Samples ``lo:hi`` of ``inputs`` (a tensor or a tuple of tensors)."""
    if isinstance(inputs, tuple):
        return tuple(t[lo:hi] for t in inputs)
    return inputs[lo:hi]


class SampleBatches:
    """``data`` of ``(inputs, targets)`` pairs, checked and counted once.

    ``data`` of ``(inputs, targets)`` pairs, checked (samples first, equal counts, finite) and
    counted once; iterate it again for the pairs, or :meth:`chunks` of them.

    Args:
        data: a ``DataLoader``, a re-iterable of ``(inputs, targets)`` batches or one pair.

    Attributes:
        sizes: the sample count of each batch.
        num_samples: N, their sum (at least 1).

    Raises:
        TypeError, ValueError: a batch that is not a pair of tensors with samples first, counts
            that differ between inputs and targets, NaN or inf, or no samples at all.
    """

    def __init__(self, data: Any) -> None:
        if isinstance(data, SampleBatches):
            self._batches: Iterable[Any] = data._batches
            self.sizes: list[int] = list(data.sizes)
        else:
            self._batches = as_batches(data)
            self.sizes = []
            for batch in self._batches:
                inputs, targets = pair(batch)
                self.sizes.append(_check_pair(inputs, targets))
                check_finite((inputs, targets))
        self.num_samples = sum(self.sizes)
        if self.num_samples == 0:
            raise ValueError("data is empty: it yielded no samples")

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        for batch in self._batches:
            yield pair(batch)

    def chunks(
        self, size: int, device: torch.device, dtype: torch.dtype
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        """``(inputs, targets)`` chunks of at most ``size`` samples on ``device``.

        ``(inputs, targets)`` chunks of at most ``size`` samples, on ``device``, floating tensors in
        ``dtype``.
        """
        for inputs, targets in self:
            inputs, targets = to_device((inputs, targets), device, dtype)
            n = int(targets.shape[0])
            for lo in range(0, n, size):
                hi = min(n, lo + size)
                yield slice_samples(inputs, lo, hi), targets[lo:hi]
