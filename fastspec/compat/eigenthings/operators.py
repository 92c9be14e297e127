"""hessian-eigenthings 1.0's curvature operators over fastspec's exact products."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import torch
from torch import nn

from fastspec._checks import check_bool, check_choice, check_float, check_int
from fastspec.batches import first_tensor
from fastspec.compat.eigenthings.losses import (
    ForwardFn,
    LossFn,
    LossOfOutputFn,
    ParamFilter,
)
from fastspec.curvature import EmpiricalFisherOperator as _FastFisher
from fastspec.curvature import GGNOperator as _FastGGN
from fastspec.curvature import HessianOperator as _FastHessian
from fastspec.linalg import CallableOperator, LinearOperator

_BACKEND_METHODS = ("dot", "norm", "axpy", "scale", "zeros_like", "randn_like", "rademacher_like")


class CurvatureOperator(abc.ABC):
    """Symmetric matrix-free operator over a flat parameter vector (the original's base)."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """``P``, the length of the vectors the operator acts on."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Device of ``matvec``'s output."""

    @property
    @abc.abstractmethod
    def dtype(self) -> torch.dtype:
        """Dtype of ``matvec``'s output."""

    @abc.abstractmethod
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``A @ v`` for a flat ``[P]`` vector."""

    def rmatvec(self, v: torch.Tensor) -> torch.Tensor:
        """``vᵀ A``, equal to :meth:`matvec` (the operator is symmetric)."""
        return self.matvec(v)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`matvec`."""
        return self.matvec(v)

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        return self.matvec(v)


class LambdaOperator(CurvatureOperator):
    """A callable ``v [P] -> A v [P]`` as a :class:`CurvatureOperator`.

    Args:
        matvec_fn: the product.
        size: ``P``.
        device: device of the vectors.
        dtype: dtype of the vectors.
    """

    def __init__(
        self,
        matvec_fn: Callable[[torch.Tensor], torch.Tensor],
        size: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not callable(matvec_fn):
            raise TypeError(f"matvec_fn must be callable, got {type(matvec_fn).__name__}")
        self._matvec_fn = matvec_fn
        self._size = check_int("size", size, minimum=1)
        self._device = torch.device(device)
        self._dtype = dtype

    @property
    def size(self) -> int:
        """``P``."""
        return self._size

    @property
    def device(self) -> torch.device:
        """Device of the vectors."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the vectors."""
        return self._dtype

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``matvec_fn(v)``."""
        return self._matvec_fn(v)


class _Call(nn.Module):
    """``forward(count, batch) = fn(model, batch)``: the user's callable as a module.

    fastspec's operators run it with their own parameters, and the user's callable sees the real
    model.
    """

    fn: Callable[..., torch.Tensor]
    sample_dim: int | None  # None: fn takes the batch; else one sample, mapped over this dim

    def __init__(self, model: nn.Module, fn: Callable[..., torch.Tensor], sample_dim: Any) -> None:
        super().__init__()
        self.model = model
        self.__dict__["fn"] = fn  # a plain attribute, never a submodule
        self.__dict__["sample_dim"] = sample_dim

    def forward(self, count: torch.Tensor, batch: Any) -> torch.Tensor:
        if self.sample_dim is None:
            return self.fn(self.model, batch)
        dims = (_vmap_dims(batch, self.sample_dim),)
        return torch.func.vmap(lambda one: self.fn(self.model, one), in_dims=dims)(batch)


def _vmap_dims(batch: Any, sample_dim: int) -> Any:
    """The ``in_dims`` of ``vmap`` for a (nested) batch: ``sample_dim`` for each tensor."""
    if isinstance(batch, torch.Tensor):
        return sample_dim
    if isinstance(batch, (list, tuple)):
        return type(batch)(_vmap_dims(x, sample_dim) for x in batch)
    if isinstance(batch, dict):
        return {k: _vmap_dims(v, sample_dim) for k, v in batch.items()}
    return None


class _Batches:
    """The user's dataloader as fastspec batches ``((count, batch), target)``.

    ``count`` is a ``[n]`` tensor whose length is the batch's sample count (fastspec's weight),
    ``target`` what the loss sees next to the output (the batch for the GGN, ``count`` for the
    Fisher).
    """

    def __init__(
        self,
        dataloader: Any,
        *,
        full_dataset: bool,
        num_batches: int | None,
        sample_dim: int,
        target: Literal["none", "batch", "count"],
    ) -> None:
        if isinstance(dataloader, Iterator):  # one pass only: keep the batches
            dataloader = list(dataloader)
        if not isinstance(dataloader, Iterable):
            raise TypeError(
                f"dataloader must be an iterable of batches, got {type(dataloader).__name__}"
            )
        self.dataloader = dataloader
        self.limit = 1 if not full_dataset else num_batches
        self.sample_dim = sample_dim
        self.target = target

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.dataloader):
            if self.limit is not None and i >= self.limit:
                return
            first = first_tensor(batch)
            if first is None or first.dim() <= self.sample_dim:
                raise ValueError(
                    "every batch must hold a tensor whose dimension sample_dim="
                    f"{self.sample_dim} counts samples, got {type(batch).__name__}"
                )
            count = torch.zeros(first.shape[self.sample_dim], device=first.device)
            target = {"none": None, "batch": batch, "count": count}[self.target]
            yield (count, batch), target


class _ModelOperator(CurvatureOperator):
    """Argument checks, parameter selection and the fastspec operator (``self.operator``)."""

    def __init__(
        self,
        model: nn.Module,
        dataloader: Any,
        fn: Callable[..., torch.Tensor],
        loss: Callable[[Any, Any], torch.Tensor],
        fast: type[_FastHessian] | type[_FastGGN] | type[_FastFisher],
        *,
        param_filter: ParamFilter | None,
        full_dataset: bool,
        num_batches: int | None,
        backend: Any,
        sample_dim: int = 0,
        per_sample: bool = False,
        target: Literal["none", "batch", "count"] = "none",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if param_filter is not None and not callable(param_filter):
            raise TypeError(
                "param_filter must be None or a callable (name, parameter) -> bool, got "
                f"{type(param_filter).__name__}"
            )
        self.model = model
        self.dataloader = dataloader
        self.full_dataset = check_bool("full_dataset", full_dataset)
        self.num_batches = check_int("num_batches", num_batches, minimum=1, none_ok=True)
        self.backend = check_backend(backend)
        names = [
            n
            for n, p in model.named_parameters()
            if p.requires_grad and (param_filter is None or param_filter(n, p))
        ]
        if not names:
            raise ValueError("param_filter selected zero parameters")
        data = _Batches(
            dataloader,
            full_dataset=self.full_dataset,
            num_batches=self.num_batches,
            sample_dim=sample_dim,
            target=target,
        )
        wrapper = _Call(model, fn, sample_dim if per_sample else None)
        self.operator: LinearOperator = fast(
            wrapper,
            loss,
            data,
            params=["model." + n for n in names],
            mode="train" if model.training else "eval",
        )

    @property
    def size(self) -> int:
        """``P``, the number of selected parameter entries."""
        return self.operator.shape[0]

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return self.operator.device

    @property
    def dtype(self) -> torch.dtype:
        """The model's parameter dtype."""
        return self.operator.dtype

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """The operator times a flat ``[P]`` vector (one pass over the data)."""
        if not isinstance(v, torch.Tensor) or v.shape != (self.size,):
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"expected vector of shape ({self.size},), got {got}")
        return self.operator.matvec(v.to(self.device, self.dtype))

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """The operator times a ``[P, B]`` block (one pass over the data for the block)."""
        return self.operator.matmat(V)


class HessianOperator(_ModelOperator):
    """Hessian of ``loss_fn(model, batch)`` over the batches of ``dataloader``.

    Args:
        model: any ``nn.Module``.
        dataloader: a ``DataLoader`` or re-iterable of batches (anything ``loss_fn`` takes).
        loss_fn: ``loss_fn(model, batch) -> scalar`` mean loss of the batch (e.g.
            ``supervised_loss(nn.CrossEntropyLoss())``).
        param_filter: ``(name, parameter) -> bool`` choosing the parameters (default: every
            parameter that requires grad).
        full_dataset: all batches (True) or the first batch only.
        num_batches: use only the first ``num_batches`` batches.
        microbatch_size: checked, unused (see the module notes).
        microbatch_unsafe: checked, unused.
        method: ``"autograd"`` or ``"finite_difference"``; both give exact products here.
        fd_eps: checked (positive or None), unused.
        backend: checked, unused.
    """

    def __init__(
        self,
        model: nn.Module,
        dataloader: Iterable[Any],
        loss_fn: LossFn,
        *,
        param_filter: ParamFilter | None = None,
        full_dataset: bool = True,
        num_batches: int | None = None,
        microbatch_size: int | None = None,
        microbatch_unsafe: bool = False,
        method: Literal["autograd", "finite_difference"] = "autograd",
        fd_eps: float | None = None,
        backend: Any = None,
    ) -> None:
        if not callable(loss_fn):
            raise TypeError("loss_fn must be a callable loss_fn(model, batch) -> scalar")
        self.loss_fn = loss_fn
        self.microbatch_size = check_int(
            "microbatch_size", microbatch_size, minimum=1, none_ok=True
        )
        check_bool("microbatch_unsafe", microbatch_unsafe)
        self.method = check_choice("method", method, ("autograd", "finite_difference"))
        self.fd_eps = check_float("fd_eps", fd_eps, minimum=0.0, open_min=True, none_ok=True)
        super().__init__(
            model,
            dataloader,
            loss_fn,
            _identity_loss,
            _FastHessian,
            param_filter=param_filter,
            full_dataset=full_dataset,
            num_batches=num_batches,
            backend=backend,
        )


class GGNOperator(_ModelOperator):
    """Generalised Gauss–Newton matrix ``Jᵀ H_loss J`` of ``loss_of_output_fn ∘ forward_fn``.

    Args:
        model: any ``nn.Module``.
        dataloader: a ``DataLoader`` or re-iterable of batches.
        forward_fn: ``forward_fn(model, batch) -> output`` tensor (e.g. ``supervised_forward``).
        loss_of_output_fn: ``loss_of_output_fn(output, batch) -> scalar`` mean loss (e.g.
            ``supervised_loss_of_output(nn.CrossEntropyLoss())``).
        param_filter: ``(name, parameter) -> bool`` choosing the parameters.
        full_dataset: all batches (True) or the first batch only.
        num_batches: use only the first ``num_batches`` batches.
        backend: checked, unused.
    """

    def __init__(
        self,
        model: nn.Module,
        dataloader: Iterable[Any],
        forward_fn: ForwardFn,
        loss_of_output_fn: LossOfOutputFn,
        *,
        param_filter: ParamFilter | None = None,
        full_dataset: bool = True,
        num_batches: int | None = None,
        backend: Any = None,
    ) -> None:
        if not callable(forward_fn):
            raise TypeError("forward_fn must be a callable forward_fn(model, batch) -> output")
        if not callable(loss_of_output_fn):
            raise TypeError(
                "loss_of_output_fn must be a callable loss_of_output_fn(output, batch) -> scalar"
            )
        self.forward_fn = forward_fn
        self.loss_of_output_fn = loss_of_output_fn
        super().__init__(
            model,
            dataloader,
            forward_fn,
            lambda output, batch: loss_of_output_fn(output, batch),
            _FastGGN,
            param_filter=param_filter,
            full_dataset=full_dataset,
            num_batches=num_batches,
            backend=backend,
            target="batch",
        )


class EmpiricalFisherOperator(_ModelOperator):
    """Empirical Fisher ``(1/N) Σ_i g_i g_iᵀ`` of the per-sample gradients ``g_i``.

    Args:
        model: any ``nn.Module``.
        dataloader: a ``DataLoader`` or re-iterable of batches.
        per_sample_loss_fn: ``per_sample_loss_fn(model, sample) -> scalar`` on one un-batched
            sample (e.g. ``supervised_per_sample_loss(nn.CrossEntropyLoss())``); mapped over
            ``sample_dim`` with ``torch.func.vmap``.
        param_filter: ``(name, parameter) -> bool`` choosing the parameters.
        full_dataset: all batches (True) or the first batch only.
        num_batches: use only the first ``num_batches`` batches.
        sample_dim: the batch dimension of every tensor of a batch.
        backend: checked, unused.
    """

    def __init__(
        self,
        model: nn.Module,
        dataloader: Iterable[Any],
        per_sample_loss_fn: Callable[[nn.Module, Any], torch.Tensor],
        *,
        param_filter: ParamFilter | None = None,
        full_dataset: bool = True,
        num_batches: int | None = None,
        sample_dim: int = 0,
        backend: Any = None,
    ) -> None:
        if not callable(per_sample_loss_fn):
            raise TypeError(
                "per_sample_loss_fn must be a callable per_sample_loss_fn(model, sample) -> scalar"
            )
        self.per_sample_loss_fn = per_sample_loss_fn
        self.sample_dim = check_int("sample_dim", sample_dim, minimum=0)
        super().__init__(
            model,
            dataloader,
            per_sample_loss_fn,
            _mean_loss,
            _FastFisher,
            param_filter=param_filter,
            full_dataset=full_dataset,
            num_batches=num_batches,
            backend=backend,
            sample_dim=self.sample_dim,
            per_sample=True,
            target="count",
        )


def _identity_loss(loss: torch.Tensor, target: Any) -> torch.Tensor:
    """The wrapped ``loss_fn`` already returns the batch's loss."""
    return loss


def _mean_loss(losses: torch.Tensor, target: Any) -> torch.Tensor:
    """Mean of the per-sample losses (one sample: that sample's loss)."""
    return losses.mean()


def check_backend(backend: Any) -> Any:
    """``backend`` if it is ``None`` or has the methods of a LinAlgBackend (it is unused here)."""
    if backend is not None:
        missing = [m for m in _BACKEND_METHODS if not callable(getattr(backend, m, None))]
        if missing:
            raise TypeError(
                "backend must be None or a hessian-eigenthings LinAlgBackend (methods "
                f"{', '.join(_BACKEND_METHODS)}); {type(backend).__name__} lacks {missing}"
            )
    return backend


def as_linear(operator: Any) -> LinearOperator:
    """A fastspec operator for any object with ``size``, ``dtype``, ``device``, ``matvec``."""
    if isinstance(operator, _ModelOperator):
        return operator.operator
    if isinstance(operator, LinearOperator):
        return operator
    needed = ("size", "dtype", "device", "matvec")
    if not all(hasattr(operator, a) for a in needed):
        raise TypeError(
            "operator must be a CurvatureOperator (size, dtype, device, matvec), got "
            f"{type(operator).__name__}"
        )
    n = check_int("operator.size", operator.size, minimum=1)
    return CallableOperator(
        operator.matvec,
        shape=(n, n),
        dtype=operator.dtype,
        device=operator.device,
        batched=False,
    )
