"""What the curvature operators share: the model, the data passes, the product-method choice.

See :mod:`fastspec.curvature.operators` for the matrices and the product methods.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastspec._checks import check_bool, check_choice, check_int
from fastspec.batches import (
    as_batches,
    batch_size,
    check_finite,
    loss_error,
    pair,
    to_device,
    truncate,
)
from fastspec.curvature.data_parallel import agree_on_block, count_across_ranks, reduce_product
from fastspec.curvature.language import (
    TokenLoss,
    count_tokens,
    is_dict_batch,
    keep_tokens,
    model_shift,
    output_logits,
    output_loss,
    split_labels,
    token_logits,
    token_rows,
)
from fastspec.distributed import resolve_group
from fastspec.linalg import LinearOperator
from fastspec.mode import MODEL_LOCK, check_mode, model_mode
from fastspec.params import ParamSpec, select_parameters

Params = dict[str, torch.Tensor]
BatchLoss = Callable[[Callable[..., Any], Any], torch.Tensor]


def loss_reduction(loss_fn: Any) -> str:
    """'mean' or 'sum': how ``loss_fn`` reduces over a batch (callables are taken as 'mean')."""
    reduction = getattr(loss_fn, "reduction", None)
    if reduction is None and isinstance(loss_fn, functools.partial):
        reduction = loss_fn.keywords.get("reduction")
    reduction = "mean" if reduction is None else reduction
    if reduction not in ("mean", "sum"):
        raise ValueError(
            f"loss_fn must reduce a batch to a scalar with reduction 'mean' or 'sum', got {reduction!r}"
        )
    return reduction


class ModelOperator(LinearOperator):
    """Shared machinery: parameters, data passes, the BatchNorm/dropout policy, flattening."""

    #: the scaled_dot_product_attention kernel of the products: "math" (every derivative; CPU's
    #: default flash kernel and CUDA's fused ones have no double backward), or "default" for
    #: finite differences, which need gradients only
    attention_backend = "math"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor] | None,
        data: Any,
        *,
        params: ParamSpec = None,
        mode: str = "eval",
        dtype: torch.dtype | None = None,
        batch_loss: BatchLoss | None = None,
        max_samples: int | None = None,
        allow_stochastic: bool = False,
        process_group: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if batch_loss is None and loss_fn is not None and not callable(loss_fn):
            raise TypeError("loss_fn must be a callable loss(outputs, targets) -> scalar")
        if batch_loss is not None and not callable(batch_loss):
            raise TypeError("batch_loss must be a callable batch_loss(model, batch) -> scalar")
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        max_samples = check_int("max_samples", max_samples, minimum=1, none_ok=True)
        check_mode(model, mode, allow_stochastic)
        self.model, self.loss_fn, self.batch_loss, self.mode = model, loss_fn, batch_loss, mode
        self.reduction = "mean" if batch_loss is not None else loss_reduction(loss_fn)
        self.param_names = select_parameters(model, params)
        with MODEL_LOCK:
            named = dict(model.named_parameters())
            buffers = dict(model.named_buffers())
        first = named[self.param_names[0]]
        self.device = first.device
        self.dtype = dtype or first.dtype
        if self.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"the model's parameters must be float32 or float64, got {self.dtype}")
        selected = set(self.param_names)
        cast = functools.partial(cast_detached, dtype=self.dtype)
        self._theta: Params = {n: cast(named[n]) for n in self.param_names}
        self._frozen: Params = {n: cast(p) for n, p in named.items() if n not in selected}
        self._buffers: Params = {n: cast(b) for n, b in buffers.items()}
        self.param_shapes = {n: tuple(t.shape) for n, t in self._theta.items()}
        P = sum(t.numel() for t in self._theta.values())
        self.shape = (P, P)
        self.max_samples = max_samples
        self._batches = as_batches(data)
        counts: list[int] = []

        def count() -> int:
            for batch, n in self._raw_batches():  # one pass: count, and refuse NaN/inf early
                check_finite(batch)
                counts.append(n)
            return sum(counts)

        # under a process group: this rank's shard, N summed over ranks (data_parallel.py)
        self.process_group: Any = resolve_group(process_group)
        self.num_samples = count_across_ranks(self, count)
        self.local_samples, self.num_batches = sum(counts), len(counts)
        if self.num_samples == 0:
            raise ValueError("data is empty: it yielded no samples")
        self.num_matvecs = 0

    # ------------------------------------------------------------------ data passes

    def _raw_batches(self) -> Iterator[tuple[Any, int]]:
        seen = 0
        for batch in self._batches:
            n = self._count(batch)
            if self.max_samples is not None and seen + n > self.max_samples:
                n = self.max_samples - seen
                batch = self._truncate(batch, n)
            if n > 0:
                yield batch, n
            seen += n
            if self.max_samples is not None and seen >= self.max_samples:
                return

    def batches(self) -> Iterator[tuple[Any, int]]:
        """``(batch on device in dtype, sample count)`` over the data, in order."""
        for batch, n in self._raw_batches():
            yield to_device(batch, self.device, self.dtype), n

    def _state(self, theta: Params) -> Params:
        buffers = self._buffers
        if self.mode == "train":  # BatchNorm updates running statistics in place: use copies
            buffers = {n: b.clone() for n, b in buffers.items()}
        return {**self._frozen, **buffers, **theta}

    def _forward(self, theta: Params, inputs: Any) -> Any:
        if is_dict_batch(inputs):  # a language model's keyword arguments
            return functional_call(self.model, self._state(theta), (), dict(inputs))
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        return functional_call(self.model, self._state(theta), args)

    # ------------------------------------------------------------------ samples: rows or tokens

    @functools.cached_property
    def token_shift(self) -> bool:
        """Dict batches: whether target tokens are shifted (causal LM) or not (masked LM)."""
        return model_shift(self.model, self.loss_fn)

    def _count(self, batch: Any) -> int:
        """A batch's samples: its target tokens if it is a dict (see ``language``), else rows."""
        if self.batch_loss is None and is_dict_batch(batch):
            return count_tokens(split_labels(batch)[1], shift=self.token_shift)
        if self.batch_loss is None and self.loss_fn is None:
            raise TypeError(
                "loss_fn must be a callable loss(outputs, targets) -> scalar; it may be None "
                "only for dict batches of a language model (input_ids, ..., labels)"
            )
        return batch_size(batch)

    def _truncate(self, batch: Any, n: int) -> Any:
        """The batch's first ``n`` samples (a dict batch: later target tokens set to -100)."""
        if self.batch_loss is None and is_dict_batch(batch):
            labels = keep_tokens(split_labels(batch)[1], n, shift=self.token_shift)
            return type(batch)({**batch, "labels": labels})
        return truncate(batch, n)

    def _token_loss_fn(self) -> Callable[..., torch.Tensor]:
        """The loss of target tokens' logits [n, V] and ids [n] (default: cross-entropy)."""
        return self.loss_fn if self.loss_fn is not None else TokenLoss()

    def _token_output(self, batch: Any) -> tuple[Callable[[Params], torch.Tensor], torch.Tensor]:
        """``(θ → logits [n, V] of the target tokens, their ids [n])`` of a dict batch."""
        inputs, labels = split_labels(batch)
        shift = self.token_shift
        rows, targets = token_rows(labels, shift=shift)

        def output(theta: Params) -> torch.Tensor:
            out = self._forward(theta, inputs)
            logits = output_logits(out)
            if logits is None:
                raise no_logits(out, "logits [N, T, V] (or an output with .logits)")
            return token_logits(logits, rows, labels, shift=shift)

        return output, targets

    def _dict_loss(self, theta: Params, batch: Any) -> torch.Tensor:
        """A dict batch's mean token loss: from the logits, else the model's own ``.loss``."""
        inputs, labels = split_labels(batch)
        out = self._forward(theta, inputs)
        logits = output_logits(out)
        if logits is None:  # e.g. a wrapper that returns only its loss: give it the labels
            loss = output_loss(self._forward(theta, batch)) if self.loss_fn is None else None
            if loss is None:
                raise no_logits(out, "logits [N, T, V] or an output with .loss")
            return loss
        shift = self.token_shift
        rows, targets = token_rows(labels, shift=shift)
        return self._token_loss_fn()(token_logits(logits, rows, labels, shift=shift), targets)

    def _scale(self, n: int) -> float:
        """Weight of a batch's loss in L = (1/N) Σ ℓ."""
        return (n if self.reduction == "mean" else 1.0) / self.num_samples

    def _batch_loss(self, theta: Params, batch: Any, n: int) -> torch.Tensor:
        if self.batch_loss is not None:
            fmodel = functools.partial(functional_call, self.model, self._state(theta))
            loss = self.batch_loss(lambda *a, **k: fmodel(a, k), batch)
        elif is_dict_batch(batch):
            loss = self._dict_loss(theta, batch)
        else:
            inputs, targets = pair(batch)
            assert self.loss_fn is not None
            loss = self.loss_fn(self._forward(theta, inputs), targets)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"the loss must be a scalar tensor, got {shape}")
        return loss * self._scale(n)

    # ------------------------------------------------------------------ blocks

    def _split(self, rows: torch.Tensor) -> Params:
        """``[B, P]`` → ``{name: [B, *shape]}``, views of ``rows``."""
        out, start = {}, 0
        for n, shape in self.param_shapes.items():
            size = self._theta[n].numel()
            out[n] = rows[:, start : start + size].view(rows.shape[0], *shape)
            start += size
        return out

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Apply the operator to ``V`` [P, B]: :meth:`local_matmat` summed over ranks.

        One process: :meth:`local_matmat` itself. Under a process group: one all-reduce of it,
        the full-data product on every rank.
        """
        return reduce_product(self, self.local_matmat(V))

    def local_matmat(self, V: torch.Tensor) -> torch.Tensor:
        """This rank's term of the product with ``V`` [P, B]: one pass over its data.

        Weighted by the total sample count, so that the sum over ranks is the full-data
        product. The block is handled as ``B`` rows of length ``P``: when ``V`` is the
        transpose of a contiguous ``[B, P]`` tensor (eigsh's basis rows) nothing is copied, and
        the result is the transpose of a contiguous ``[B, P]`` tensor.
        """
        P = self.shape[0]
        if not isinstance(V, torch.Tensor) or V.dim() != 2 or V.shape[0] != P:
            got = tuple(V.shape) if isinstance(V, torch.Tensor) else type(V).__name__
            raise ValueError(f"V must be a [P, B] = [{P}, B] tensor, got {got}")
        if V.dtype != self.dtype or V.device != self.device:
            raise ValueError(
                f"V must be {self.dtype} on {self.device}, got {V.dtype} on {V.device}"
            )
        B = V.shape[1]
        agree_on_block(self, B)
        out = torch.zeros(B, P, dtype=self.dtype, device=self.device)
        if B > 0:
            with model_mode(self.model, self.mode), differentiable_kernels():
                self._accumulate(self._split(V.mT.contiguous()), self._split(out))
        self.num_matvecs += B
        return out.mT

    def _accumulate(self, V: Params, out: Params) -> None:
        """``out += (operator) V``."""
        raise NotImplementedError


def no_logits(out: Any, expected: str) -> TypeError:
    """The error for a model output with neither ``.loss`` nor logits."""
    return TypeError(
        f"the model's output ({type(out).__name__}) has neither .loss nor logits: dict batches "
        f"need a model that returns {expected}"
    )


@contextlib.contextmanager
def differentiable_kernels() -> Iterator[None]:
    """Attention kernels with every derivative, for the products.

    The math attention kernel and no fused ``nn.MultiheadAttention`` / transformer-layer fast path:
    the same functions with every derivative (flash attention on CPU has neither double backward nor
    forward-mode AD; the fast path, taken when no input requires grad, has no forward-mode AD). Both
    are process-wide flags: products switch them inside :func:`~fastspec.mode.model_mode`, which
    runs passes one at a time.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def add_into(out: Params, term: Params) -> None:
    """``out += term``, name by name."""
    for name, t in term.items():
        out[name] += t


class TwoMethods(ModelOperator):
    """Products by one of two exact methods.

    reverse-mode through a graph built per batch (``"double_backward"``), which is kept between
    products when all batches' graphs fit in memory, or a forward-mode one (``FORWARD``). ``"auto"``
    times one product of each on the first block and keeps the faster; ``method`` records the choice
    and ``method_timings`` the times.
    """

    FORWARD: str  # the forward-mode method's name
    OPTION: str  # the constructor argument that picks the method
    PRODUCT: str  # what the methods compute, for messages

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor] | None,
        data: Any,
        *,
        method: str,
        cache_graph: bool | None,
        **kwargs: Any,
    ) -> None:
        check_choice(self.OPTION, method, ("auto", *self.methods))
        if cache_graph is not None:
            cache_graph = check_bool("cache_graph", cache_graph)
        if cache_graph and method == self.FORWARD:
            raise ValueError(
                "cache_graph=True keeps reverse-mode graphs: use "
                f"{self.OPTION}='double_backward' or 'auto' with it"
            )
        super().__init__(model, loss_fn, data, **kwargs)
        self.method: str | None = None if method == "auto" else method
        self.method_timings: dict[str, float] = {}
        self.graph_cached: bool | None = False if method == self.FORWARD else cache_graph
        self._graphs: list[Any] = []

    @property
    def methods(self) -> tuple[str, str]:
        """The two exact product methods, timed against each other by ``"auto"``."""
        return ("double_backward", self.FORWARD)

    def _new_graph(self, batch: Any, n: int) -> Any:
        """The batch's reverse-mode graph: an object with ``apply(V, *, keep, out=None)``."""
        raise NotImplementedError

    def _forward_product(self, batch: Any, n: int, V: Params) -> Params:
        raise NotImplementedError

    def _accumulate(self, V: Params, out: Params) -> None:
        if self.method == "double_backward" and len(self._graphs) == self.num_batches:
            for graph in self._graphs:  # every batch's graph is kept: no pass over the data
                graph.apply(V, keep=True, out=out)
            return
        for index, (batch, n) in enumerate(self.batches()):
            add_into(out, self._batch_term(index, batch, n, V))

    def _batch_term(self, index: int, batch: Any, n: int, V: Params) -> Params:
        if self.method is None:
            return self._choose_method(index, batch, n, V)
        try:
            return self._product(self.method, index, batch, n, V)
        except (RuntimeError, NotImplementedError) as exc:
            self._raise_if_data_error(batch, n, exc)
            other = next(m for m in self.methods if m != self.method)
            raise RuntimeError(
                f"{self.OPTION}={self.method!r} failed for this model: {exc}. A layer may "
                f"lack {'double-backward' if self.method == 'double_backward' else 'forward-mode'}"
                f" support; try {self.OPTION}={other!r}"
            ) from exc

    def _choose_method(self, index: int, batch: Any, n: int, V: Params) -> Params:
        """Time one product of each method on the first block and keep the faster.

        a graph that is kept is built outside the timing (later products only run through it).
        """
        results: dict[str, Params] = {}
        errors: dict[str, str] = {}
        for method in self.methods:
            try:
                if method == "double_backward":
                    self._graph(index, batch, n)
                start = time.perf_counter()
                results[method] = self._product(method, index, batch, n, V)
                self.method_timings[method] = time.perf_counter() - start
            except (RuntimeError, NotImplementedError) as exc:
                errors[method] = str(exc)
        if not results:
            self._raise_if_data_error(batch, n, None)
            raise RuntimeError(
                f"no {self.PRODUCT} works for this model (a layer lacks both double-backward "
                f"and forward-mode support): {errors}"
            )
        self.method = min(results, key=lambda m: self.method_timings[m])
        if self.method != "double_backward":
            self._graphs, self.graph_cached = [], False
        return results[self.method]

    def _raise_if_data_error(self, batch: Any, n: int, exc: BaseException | None) -> None:
        """A clear error when the loss fails on the batch even without derivatives."""
        error = loss_error(lambda: self._batch_loss(self._theta, batch, n), batch)
        if error is not None:
            raise error from exc

    def _product(self, method: str, index: int, batch: Any, n: int, V: Params) -> Params:
        if method == self.FORWARD:
            return self._forward_product(batch, n, V)
        return self._graph(index, batch, n).apply(V, keep=bool(self.graph_cached))

    def _graph(self, index: int, batch: Any, n: int) -> Any:
        """Batch ``index``'s graph: the kept one, or a new one (kept if they fit)."""
        if index < len(self._graphs):
            return self._graphs[index]
        if self.graph_cached is None:  # decide once, from the first batch's saved tensors
            probe = saved_bytes(lambda: self._new_graph(batch, n)) + nbytes(self._theta)
            self.graph_cached = probe * self.local_samples / n <= GRAPH_CACHE_BYTES
        graph = self._new_graph(batch, n)
        if self.graph_cached and index == len(self._graphs):
            self._graphs.append(graph)
        return graph


GRAPH_CACHE_BYTES = 2 * 2**30


def saved_bytes(build: Callable[[], Any]) -> int:
    """Bytes of the tensors autograd saves while ``build()`` runs (a probe, then freed)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        build()
    return sum(storages.values())


def nbytes(tensors: Params) -> int:
    """Bytes held by ``tensors``."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def cast_detached(t: torch.Tensor, *, dtype: torch.dtype) -> torch.Tensor:
    """A detached copy of ``t``, floating-point tensors cast to ``dtype``."""
    t = t.detach()
    return t.to(dtype) if t.is_floating_point() else t
