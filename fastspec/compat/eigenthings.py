"""hessian-eigenthings 1.0's API on fastspec's operators and solvers.

Change ``from hessian_eigenthings import HessianOperator, lanczos, trace, ...`` to
``from fastspec.compat.eigenthings import HessianOperator, lanczos, trace, ...`` and keep the
calls: every argument of the original is accepted under the same name with the same default,
and the results are frozen dataclasses with the original's fields (:class:`EigenResult`,
:class:`TraceResult`, :class:`SpectralDensityResult`), same shapes, dtypes and order. The
module does not need hessian-eigenthings installed.

Under the hood:

* :class:`HessianOperator`, :class:`GGNOperator` and :class:`EmpiricalFisherOperator` are
  :class:`fastspec.curvature.HessianOperator` / ``GGNOperator`` / ``EmpiricalFisherOperator``
  over the same ``(model, dataloader, loss)``: exact products, a block of vectors per pass over
  the data, the gradient graphs kept when they fit. The user's ``loss_fn(model, batch)``,
  ``forward_fn`` / ``loss_of_output_fn`` and ``per_sample_loss_fn(model, sample)`` are called
  with the real module (its parameters swapped by ``torch.func.functional_call``), so the
  hessian-eigenthings helpers (:func:`supervised_loss`, :func:`hf_lm_loss`,
  :func:`hf_lm_loss_of_output`, ...) and hand-written ones work unchanged.
* :func:`lanczos` is :func:`fastspec.linalg.eigsh` (thick-restarted block Lanczos, full
  reorthogonalisation): every returned pair has a residual recomputed from the returned vector,
  and ``converged`` is ``residual <= tol · |λ|``.
* :func:`trace` is :func:`fastspec.linalg.trace` (Hutch++ or Hutchinson);
  :func:`spectral_density` is :func:`fastspec.linalg.slq` with the original's grid and
  bandwidth rule.

Differences from hessian-eigenthings 1.0, all deliberate:

* **Converged pairs instead of a fixed number of steps.** The original's ``lanczos`` runs
  ``max_iter`` steps (default ``2k``) once and reports what it has: on the digits MLP its top 10
  were 6e-3 off (``benchmarks/results/compat_vs_originals.md``). Here the solver runs until every
  pair meets ``tol``; ``max_iter`` and ``reorthogonalize`` are checked and otherwise unused
  (reorthogonalisation is always full), ``iterations`` counts operator-vector products, and
  ``residuals`` are ``‖Av − λv‖`` of the returned vectors (relative residual times
  ``max(|λ|, √ε · max|λ|)``, the solver's scale).
* **Uneven batches.** The original averages per-batch curvatures with equal weights, so a short
  last batch is over-weighted. Here batches are weighted by their sample counts (the leading
  size of the batch's first tensor, or its size along ``sample_dim`` for the empirical Fisher):
  the operator is the curvature of the full-data mean loss. With equal batches the two agree.
* ``full_dataset=False`` there draws a new batch for every ``HessianOperator`` product (a random
  operator); here every operator then uses the first batch only (a fixed operator).
* ``method="finite_difference"`` (and ``fd_eps``) are accepted; products are exact (the
  central-difference bias of the original is absent). ``microbatch_size`` /
  ``microbatch_unsafe`` (memory chunking there) and ``backend`` (vector arithmetic there) are
  checked and unused: fastspec processes batches as the loader yields them and does its own
  arithmetic.
* The model is evaluated in its current mode but never modified; train mode with dropout is
  refused (its curvature would be random): call ``model.eval()`` first.
* :func:`trace`: probes are always Rademacher (``distribution="gaussian"`` is checked and
  unused; the original ignores it for Hutch++ too), Hutch++ spends all ``num_matvecs``
  (the original ``3 · (num_matvecs // 3)``), and at least 2 (Hutchinson) or 4 (Hutch++)
  products are needed for a standard error.
* ``seed=None`` draws a fresh seed in every algorithm (the original's unseeded generators
  always start from the same state).
* The LM helpers (``hf_*``, ``tlens_*``) are the original's loss callables; they need the
  model to return what they read (``.loss``, ``.logits``), as there.

Not served here: ``lanczos_tridiagonal``, ``power_iteration_one`` / ``deflated_power_iteration``
(use :func:`lanczos`), ``DDPHessianOperator``, and the flat-vector helpers of ``param_utils``.
"""

from __future__ import annotations

import abc
import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from fastspec._checks import AsDict, check_bool, check_choice, check_float, check_int
from fastspec.batches import first_tensor
from fastspec.curvature import EmpiricalFisherOperator as _FastFisher
from fastspec.curvature import GGNOperator as _FastGGN
from fastspec.curvature import HessianOperator as _FastHessian
from fastspec.linalg import CallableOperator, LinearOperator, eigsh, slq
from fastspec.linalg import trace as _fast_trace

__all__ = [
    "CurvatureOperator",
    "EigenResult",
    "EmpiricalFisherOperator",
    "GGNOperator",
    "HessianOperator",
    "LambdaOperator",
    "ParamFilter",
    "SpectralDensityResult",
    "TraceResult",
    "hf_lm_forward",
    "hf_lm_loss",
    "hf_lm_loss_of_output",
    "hf_seq2seq_loss",
    "hutch_plus_plus",
    "hutchinson",
    "lanczos",
    "match_names",
    "match_regex",
    "spectral_density",
    "supervised_forward",
    "supervised_loss",
    "supervised_loss_of_output",
    "supervised_per_sample_loss",
    "tlens_forward",
    "tlens_loss",
    "tlens_loss_of_output",
    "trace",
]

ParamFilter = Callable[[str, nn.Parameter], bool]
LossFn = Callable[[nn.Module, Any], torch.Tensor]
ForwardFn = Callable[[nn.Module, Any], torch.Tensor]
LossOfOutputFn = Callable[[torch.Tensor, Any], torch.Tensor]
Which = Literal["LM", "LA", "SA"]

_BACKEND_METHODS = ("dot", "norm", "axpy", "scale", "zeros_like", "randn_like", "rademacher_like")


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class EigenResult(AsDict):
    """Eigenpairs from :func:`lanczos`, ordered as ``which`` asks.

    Attributes:
        eigenvalues: ``[K]`` (``"LM"`` by descending magnitude, ``"LA"`` descending, ``"SA"``
            ascending), the operator's dtype.
        eigenvectors: ``[K, P]``, row ``i`` the unit eigenvector of ``eigenvalues[i]``.
        residuals: ``[K]``, ``‖Av − λv‖`` of the returned pairs.
        iterations: operator-vector products used.
        converged: ``[K]`` bool, ``residual <= tol · |λ|``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor = field(metadata={"serialize": False})
    residuals: torch.Tensor
    iterations: int
    converged: torch.Tensor


@dataclass(frozen=True)
class TraceResult(AsDict):
    """A stochastic estimate of ``tr(A)``.

    Attributes:
        estimate: the estimate.
        stderr: its standard error (from the Hutchinson terms).
        samples: ``[m]`` the Hutchinson terms ``zᵀAz`` (Hutch++: on the deflated operator).
    """

    estimate: float
    stderr: float
    samples: torch.Tensor


@dataclass(frozen=True)
class SpectralDensityResult(AsDict):
    """Gaussian-smoothed eigenvalue density on a regular grid, with the quadrature behind it.

    Attributes:
        grid: ``[G]`` abscissae.
        density: ``[G]``, integrates to about 1.
        raw_eigenvalues: ``[R, m]`` Ritz values of each run, ascending (NaN past a run's end).
        raw_weights: ``[R, m]`` their quadrature weights (0 past a run's end).
        sigma: the Gaussian bandwidth used.
    """

    grid: torch.Tensor
    density: torch.Tensor
    raw_eigenvalues: torch.Tensor
    raw_weights: torch.Tensor
    sigma: float


# -------------------------------------------------------------------------------- operators


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
        self.backend = _check_backend(backend)
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


def _check_backend(backend: Any) -> Any:
    if backend is not None:
        missing = [m for m in _BACKEND_METHODS if not callable(getattr(backend, m, None))]
        if missing:
            raise TypeError(
                "backend must be None or a hessian-eigenthings LinAlgBackend (methods "
                f"{', '.join(_BACKEND_METHODS)}); {type(backend).__name__} lacks {missing}"
            )
    return backend


def _as_linear(operator: Any) -> LinearOperator:
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


# ------------------------------------------------------------------------------- algorithms


def lanczos(
    operator: Any,
    *,
    k: int = 10,
    max_iter: int | None = None,
    tol: float = 1e-4,
    reorthogonalize: bool | None = None,
    which: Which = "LM",
    seed: int | None = None,
    backend: Any = None,
) -> EigenResult:
    """Top ``k`` eigenpairs of a symmetric operator, each converged to ``tol``.

    Args:
        operator: a :class:`CurvatureOperator` (or any object with ``size``, ``dtype``,
            ``device`` and ``matvec``, hessian-eigenthings' own operators included).
        k: number of eigenpairs, ``1 <= k <= P``.
        max_iter: checked as there (``k <= max_iter <= P``), unused: the solver runs until
            every pair converged.
        tol: relative residual bound, ``‖Av − λv‖ <= tol · |λ|``.
        reorthogonalize: checked (bool or None), unused: always full.
        which: ``"LM"`` largest magnitude, ``"LA"`` largest, ``"SA"`` smallest.
        seed: seed of the start block (None: fresh).
        backend: checked, unused.

    Returns:
        An :class:`EigenResult`.
    """
    A = _as_linear(operator)
    n = A.shape[0]
    k = check_int("k", k, minimum=1)
    if k > n:
        raise ValueError(f"k={k} exceeds operator size {n}")
    max_iter = check_int("max_iter", max_iter, none_ok=True)
    if max_iter is not None and not k <= max_iter <= n:
        raise ValueError(f"max_iter must lie in [k, P] = [{k}, {n}], got {max_iter}")
    tol = check_float("tol", tol, minimum=0.0, open_min=True)
    if reorthogonalize is not None:
        check_bool("reorthogonalize", reorthogonalize)
    which = check_choice("which", which, ("LM", "LA", "SA"))  # type: ignore[assignment]
    seed = check_int("seed", seed, none_ok=True)
    _check_backend(backend)
    if k == n:  # the whole spectrum: dense
        return _dense_pairs(A, which, tol)
    res = eigsh(A, k, which=which, tol=tol, return_eigenvectors=True, seed=seed)
    assert res.eigenvectors is not None
    lam = res.eigenvalues
    scale = torch.clamp(
        lam.abs().to(torch.float64),
        min=math.sqrt(torch.finfo(A.dtype).eps) * float(lam.abs().max()),
    )
    return EigenResult(
        eigenvalues=lam,
        eigenvectors=res.eigenvectors.mT.contiguous(),
        residuals=(res.residuals * scale).to(lam.dtype),
        iterations=res.num_matvecs,
        converged=res.converged,
    )


def _dense_pairs(A: LinearOperator, which: str, tol: float) -> EigenResult:
    H = A.to_dense().to(torch.float64)
    lam, V = torch.linalg.eigh((H + H.mT) / 2)
    key = {"LM": -lam.abs(), "LA": -lam, "SA": lam}[which]
    order = torch.argsort(key, stable=True)
    lam, V = lam[order], V[:, order]
    res = torch.linalg.vector_norm(H @ V - V * lam, dim=0)
    return EigenResult(
        eigenvalues=lam.to(A.dtype),
        eigenvectors=V.mT.contiguous().to(A.dtype),
        residuals=res.to(A.dtype),
        iterations=A.shape[0],
        converged=res <= tol * lam.abs().clamp(min=1e-12),
    )


class _Recorder(LinearOperator):
    """``A`` that keeps ``vᵀAv`` of every column it is applied to, in order."""

    def __init__(self, A: LinearOperator) -> None:
        self.A, self.shape, self.dtype, self.device = A, A.shape, A.dtype, A.device
        self.forms: list[torch.Tensor] = []

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = self.A.matmat(V)
        self.forms.append((V * out.reshape(V.shape)).sum(dim=0))
        return out


def trace(
    operator: Any,
    *,
    num_matvecs: int = 100,
    method: Literal["hutchinson", "hutch++"] = "hutch++",
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | None = None,
    backend: Any = None,
) -> TraceResult:
    """Stochastic estimate of ``tr(A)`` from ``num_matvecs`` operator-vector products.

    Args:
        operator: a :class:`CurvatureOperator`-like object (see :func:`lanczos`).
        num_matvecs: products to spend (at least 2 for Hutchinson, 4 for Hutch++).
        method: ``"hutch++"`` or ``"hutchinson"``.
        distribution: ``"rademacher"`` or ``"gaussian"``; checked, probes are Rademacher.
        seed: seed of the probes (None: fresh).
        backend: checked, unused.

    Returns:
        A :class:`TraceResult`; ``samples`` are the Hutchinson terms behind ``stderr``.
    """
    A = _Recorder(_as_linear(operator))
    num_matvecs = check_int("num_matvecs", num_matvecs, minimum=1)
    method = check_choice("method", method, ("hutchinson", "hutch++"))  # type: ignore[assignment]
    check_choice("distribution", distribution, ("rademacher", "gaussian"))
    seed = check_int("seed", seed, none_ok=True)
    _check_backend(backend)
    res = _fast_trace(A, method=method, num_matvecs=num_matvecs, seed=seed)
    samples = torch.cat(A.forms)[-res.num_probes :].to(A.dtype)  # the Hutchinson part is last
    return TraceResult(estimate=res.estimate, stderr=res.std_error, samples=samples)


def hutchinson(
    operator: Any,
    *,
    num_samples: int = 100,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | None = None,
    backend: Any = None,
) -> TraceResult:
    """Hutchinson's estimator: :func:`trace` with ``method="hutchinson"``."""
    return trace(
        operator,
        num_matvecs=num_samples,
        method="hutchinson",
        distribution=distribution,
        seed=seed,
        backend=backend,
    )


def hutch_plus_plus(
    operator: Any, *, num_matvecs: int = 99, seed: int | None = None, backend: Any = None
) -> TraceResult:
    """Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021): :func:`trace` with ``"hutch++"``."""
    return trace(operator, num_matvecs=num_matvecs, method="hutch++", seed=seed, backend=backend)


def spectral_density(
    operator: Any,
    *,
    num_runs: int = 10,
    lanczos_steps: int = 80,
    num_grid_points: int = 10000,
    sigma: float | None = None,
    grid_padding: float = 0.1,
    seed: int | None = None,
    backend: Any = None,
) -> SpectralDensityResult:
    """Eigenvalue density by stochastic Lanczos quadrature (Ubaru, Chen & Saad, SIMAX 2017).

    Args:
        operator: a :class:`CurvatureOperator`-like object (see :func:`lanczos`).
        num_runs: random probes ``R`` (run together, one ``[P, R]`` block per step).
        lanczos_steps: Lanczos steps per probe ``m`` (``<= P``), fully reorthogonalised.
        num_grid_points: ``G``, points of the regular grid.
        sigma: Gaussian bandwidth; default ``(max node − min node) / lanczos_steps``.
        grid_padding: share of the node range added on each side of the grid.
        seed: seed of the probes (None: fresh).
        backend: checked, unused.

    Returns:
        A :class:`SpectralDensityResult` (grid and density in the operator's dtype).
    """
    A = _as_linear(operator)
    R = check_int("num_runs", num_runs, minimum=1)
    m = check_int("lanczos_steps", lanczos_steps, minimum=1)
    if m > A.shape[0]:
        raise ValueError(f"lanczos_steps={m} exceeds operator size {A.shape[0]}")
    G = check_int("num_grid_points", num_grid_points, minimum=1)
    sigma = check_float("sigma", sigma, minimum=0.0, open_min=True, none_ok=True)
    pad_share = check_float("grid_padding", grid_padding, minimum=0.0)
    seed = check_int("seed", seed, none_ok=True)
    _check_backend(backend)
    q = slq(A, num_probes=R, num_steps=m, seed=seed, reorthogonalize=True)
    width = int(q.lengths.max())
    valid = torch.arange(width)[None, :] < q.lengths[:, None]
    nodes = torch.where(valid, q.nodes[:, :width], torch.nan)
    weights = torch.where(valid, q.weights[:, :width], 0.0)
    lo, hi = float(nodes[valid].min()), float(nodes[valid].max())
    spread = max(hi - lo, 1e-9)
    if sigma is None:
        sigma = spread / m
    pad = pad_share * spread
    grid = torch.linspace(lo - pad, hi + pad, G, dtype=torch.float64)
    density = q.density(grid, sigma=sigma)
    return SpectralDensityResult(
        grid=grid.to(A.device, A.dtype),
        density=density.to(A.device, A.dtype),
        raw_eigenvalues=nodes.to(A.device, A.dtype),
        raw_weights=weights.to(A.device, A.dtype),
        sigma=sigma,
    )


# -------------------------------------------------------------------- loss and param helpers


def supervised_loss(
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[nn.Module, Any], torch.Tensor]:
    """``loss_fn(model, (x, y)) = criterion(model(x), y)`` for :class:`HessianOperator`."""

    def fn(model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return criterion(model(x), y)

    return fn


def supervised_forward(model: nn.Module, batch: Any) -> torch.Tensor:
    """``forward_fn`` for :class:`GGNOperator` on ``(x, y)`` batches: ``model(x)``."""
    x, _ = batch
    out: torch.Tensor = model(x)
    return out


def supervised_loss_of_output(
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """``loss_of_output_fn(output, (x, y)) = criterion(output, y)`` for :class:`GGNOperator`."""

    def fn(output: torch.Tensor, batch: Any) -> torch.Tensor:
        _, y = batch
        return criterion(output, y)

    return fn


def supervised_per_sample_loss(
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[nn.Module, Any], torch.Tensor]:
    """``per_sample_loss_fn(model, (x, y))`` on one un-batched sample (empirical Fisher)."""

    def fn(model: nn.Module, sample: Any) -> torch.Tensor:
        x, y = sample
        return criterion(model(x.unsqueeze(0)).squeeze(0), y)

    return fn


def hf_lm_loss() -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """``loss_fn(model, batch) = model(**batch).loss``: HuggingFace models, ``labels`` given."""

    def fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        loss: torch.Tensor = model(**batch).loss
        return loss

    return fn


def hf_seq2seq_loss() -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """Seq2seq HuggingFace models compute their loss internally too: :func:`hf_lm_loss`."""
    return hf_lm_loss()


def hf_lm_forward() -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """``forward_fn`` for :class:`GGNOperator` on a HuggingFace LM: ``logits`` (no labels)."""

    def fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits: torch.Tensor = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return logits

    return fn


def hf_lm_loss_of_output() -> Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]:
    """``loss_of_output_fn``: next-token cross-entropy of ``logits`` and ``batch["labels"]``.

    Position ``t``'s logits against label ``t + 1``; labels -100 are ignored.
    """

    def fn(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return _shifted_cross_entropy(logits, batch["labels"], ignore_index=-100)

    return fn


def tlens_loss() -> Callable[[nn.Module, Any], torch.Tensor]:
    """``loss_fn`` for a TransformerLens model: ``model(tokens, return_type="loss")``."""

    def fn(model: nn.Module, batch: Any) -> torch.Tensor:
        loss: torch.Tensor = model(_tokens(batch), return_type="loss")
        return loss

    return fn


def tlens_forward() -> Callable[[nn.Module, Any], torch.Tensor]:
    """``forward_fn`` for a TransformerLens model: its logits."""

    def fn(model: nn.Module, batch: Any) -> torch.Tensor:
        logits: torch.Tensor = model(_tokens(batch), return_type="logits")
        return logits

    return fn


def tlens_loss_of_output() -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """``loss_of_output_fn`` for a TransformerLens model: shifted next-token cross-entropy."""

    def fn(logits: torch.Tensor, batch: Any) -> torch.Tensor:
        return _shifted_cross_entropy(logits, _tokens(batch), ignore_index=-100)

    return fn


def _tokens(batch: Any) -> torch.Tensor:
    return batch["tokens"] if isinstance(batch, dict) else batch


def _shifted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int
) -> torch.Tensor:
    """Mean cross-entropy of position ``t``'s logits against label ``t + 1``."""
    shift_logits = logits[..., :-1, :].contiguous()
    shift_labels = labels[..., 1:].contiguous()
    return torch.nn.functional.cross_entropy(
        shift_logits.view(-1, shift_logits.size(-1)),
        shift_labels.view(-1),
        ignore_index=ignore_index,
    )


def match_names(*patterns: str) -> ParamFilter:
    """A ``param_filter`` matching parameter names against glob ``patterns`` (any of them)."""

    def fn(name: str, _: nn.Parameter) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)

    return fn


def match_regex(*patterns: str) -> ParamFilter:
    """A ``param_filter`` matching parameter names with ``re.search`` (any of ``patterns``)."""
    compiled = [re.compile(pat) for pat in patterns]

    def fn(name: str, _: nn.Parameter) -> bool:
        return any(p.search(name) is not None for p in compiled)

    return fn
