"""Hessian, generalised Gauss–Newton and empirical-Fisher operators of a model, loss and data.

The matrices are those of the full-data loss L(θ) = (1/N) Σ_j ℓ(θ; x_j, y_j) over the N samples
of ``data`` (batches weighted by their sample counts, so an uneven last batch is exact):

- :class:`HessianOperator`: H = ∇²L(θ), exactly.
- :class:`GGNOperator`: G = (1/N) Σ_j J_jᵀ (∇²_z ℓ_j) J_j, J_j the Jacobian of the model output
  for sample j; the loss Hessian with respect to the outputs is taken by autograd, so any loss
  works (for the cross-entropy and squared losses G is the Fisher information).
- :class:`EmpiricalFisherOperator`: F = (1/N) Σ_j ∇ℓ_j ∇ℓ_jᵀ.

Every ``matmat`` runs one pass over the data for a whole block of vectors. The Hessian operator
has two exact block Hessian-vector products: reverse-over-reverse (``"double_backward"``: one
backward with ``create_graph`` per batch, then one backward through that graph per vector) and
forward-over-reverse (``"forward_over_reverse"``: ``vmap(jvp(grad))``). ``hvp="auto"`` times one
product of each on the first block and keeps the faster (the choice is in ``method``). When
the gradient graphs of all batches fit in memory (``cache_graph``), reverse-over-reverse keeps
them: every later product is one backward pass through a stored graph, with no forward pass and
no first backward (costs: ``benchmarks/results/hessian_vs_peers.md``, "Kept gradient graphs").

The GGN and empirical-Fisher operators have the same two choices (``jvp=``) for ``J v``: reverse
mode through the kept graphs of the output and of ``Jᵀ u`` (the double-backward trick), or
forward mode (``vmap(jvp)``, after a forward pass per block).

The model is run with ``torch.func.functional_call`` on detached copies of its parameters (cast
to ``dtype``) and of its buffers: the model itself is never modified, and the operator is
evaluated at the parameters it had when the operator was built.

References: B. A. Pearlmutter, *Fast exact multiplication by the Hessian*, Neural Computation 6
(1994); N. N. Schraudolph, *Fast curvature matrix-vector products for second-order gradient
descent*, Neural Computation 14 (2002); Z. Xie et al., *On the Power-Law Hessian Spectrums in Deep
Learning*, arXiv:2201.13011 (2022).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap
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
from fastspec.curvature.finite_difference import (
    any_attention_kernel,
    difference,
    distance,
    step_size,
)
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

__all__ = ["EmpiricalFisherOperator", "GGNOperator", "HessianOperator"]

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


class _ModelOperator(LinearOperator):
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
        cast = functools.partial(_cast, dtype=self.dtype)
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
                raise _no_logits(out, "logits [N, T, V] (or an output with .logits)")
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
                raise _no_logits(out, "logits [N, T, V] or an output with .loss")
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
            with model_mode(self.model, self.mode), _differentiable_kernels():
                self._accumulate(self._split(V.mT.contiguous()), self._split(out))
        self.num_matvecs += B
        return out.mT

    def _accumulate(self, V: Params, out: Params) -> None:
        """``out += (operator) V``."""
        raise NotImplementedError


def _no_logits(out: Any, expected: str) -> TypeError:
    return TypeError(
        f"the model's output ({type(out).__name__}) has neither .loss nor logits: dict batches "
        f"need a model that returns {expected}"
    )


@contextlib.contextmanager
def _differentiable_kernels() -> Iterator[None]:
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


def _add(out: Params, term: Params) -> None:
    for name, t in term.items():
        out[name] += t


class _TwoMethods(_ModelOperator):
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
            _add(out, self._batch_term(index, batch, n, V))

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
    return sum(t.numel() * t.element_size() for t in tensors.values())


class HessianOperator(_TwoMethods):
    """The Hessian of the full-data loss, exactly.

    Args:
        model: any ``nn.Module``.
        loss_fn: a criterion ``loss(outputs, targets) -> scalar`` with reduction 'mean' (read
            from its ``reduction`` attribute; plain callables are taken as means) or 'sum'.
        data: a ``DataLoader``, any re-iterable of ``(inputs, targets)`` batches, or one
            ``(inputs, targets)`` pair. ``inputs`` may be a tuple of model arguments.
            Or dict batches of a language model (``input_ids``, ``attention_mask``, ...,
            ``labels`` with -100 where not scored; a ``BatchEncoding`` too): the samples are
            then the target tokens, and ``loss_fn`` is ``None`` (token cross-entropy of the
            logits, or the output's ``.loss``), :func:`~fastspec.curvature.lm_loss` or any
            per-token loss of ``(logits [n, V], targets [n])``; see
            :mod:`fastspec.curvature.language`.
        params: all parameters (default), a list of names or tensors, a regex, or a predicate
            ``(name, parameter) -> bool``: the Hessian block of those parameters.
        mode: ``"eval"`` (default: running BatchNorm statistics, dropout off) or ``"train"``
            (batch statistics; stochastic layers refused unless ``allow_stochastic``).
        dtype: compute dtype (default: the parameters'); float64 for exact spectra.
        hvp: ``"auto"``, ``"double_backward"`` or ``"forward_over_reverse"`` (exact; the choice
            is in ``method``), or ``"finite_difference"``: central differences of two gradients
            with the memory of one training step (:mod:`fastspec.curvature.finite_difference`;
            ``error_estimates`` holds the relative error estimate of each vector of the first
            block).
        batch_loss: hook ``batch_loss(model, batch) -> scalar mean loss of the batch`` for
            models that take dicts (language models); ``model`` runs the operator's parameters.
        max_samples: use only the first ``max_samples`` samples of ``data`` (``num_samples``
            records how many were used).
        allow_stochastic: allow dropout-like layers with ``mode="train"`` (with a cached graph,
            every product sees the dropout masks drawn when the graph was built).
        cache_graph: keep the gradient graph of every batch between products (reverse-over-
            reverse only): ``None`` (default) keeps them when their estimated size, measured
            from the tensors autograd saves for the first batch, is at most
            ``GRAPH_CACHE_BYTES`` (2 GiB) in all; ``True`` always, ``False`` never. The data
            are then read once, on the first product. ``graph_cached`` records the outcome.
        process_group: a ``torch.distributed`` group, or ``None``: the default group when it
            is initialised with more than one rank. Under a group, ``data`` is this rank's
            shard, ``num_samples`` counts all ranks' samples (``local_samples`` this rank's),
            ``max_samples`` limits this rank's shard, and every product is the full-data one
            (:mod:`fastspec.curvature.data_parallel`).
    """

    FORWARD = "forward_over_reverse"
    OPTION = "hvp"
    PRODUCT = "Hessian-vector product"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor] | None,
        data: Any,
        *,
        params: ParamSpec = None,
        mode: str = "eval",
        dtype: torch.dtype | None = None,
        hvp: str = "auto",
        batch_loss: BatchLoss | None = None,
        max_samples: int | None = None,
        allow_stochastic: bool = False,
        cache_graph: bool | None = None,
        process_group: Any = None,
    ) -> None:
        check_choice("hvp", hvp, ("auto", "double_backward", self.FORWARD, FINITE))
        finite = hvp == FINITE
        if finite and cache_graph:
            raise ValueError(
                "cache_graph=True keeps reverse-mode graphs; hvp='finite_difference' keeps none"
            )
        super().__init__(
            model, loss_fn, data, method=self.FORWARD if finite else hvp,
            cache_graph=None if finite else cache_graph, params=params, mode=mode, dtype=dtype,
            batch_loss=batch_loss, max_samples=max_samples, allow_stochastic=allow_stochastic,
            process_group=process_group,
        )  # fmt: skip
        self.error_estimates: list[float] = []
        if finite:
            self.method, self.graph_cached, self.attention_backend = FINITE, False, "default"

    def _accumulate(self, V: Params, out: Params) -> None:
        if self.method != FINITE:
            super()._accumulate(V, out)
            return
        # the first block also takes D(2ε): its vectors' relative error estimates
        B = next(iter(V.values())).shape[0]
        vs = [{k: t[b] for k, t in V.items()} for b in range(B)]
        steps = [step_size(self._theta, v) for v in vs]
        wide = (
            [{k: torch.zeros_like(t) for k, t in v.items()} for v in vs]
            if not self.error_estimates
            else None
        )
        with any_attention_kernel():
            for batch, n in self.batches():
                gradient = functools.partial(self._gradient, batch=batch, n=n)
                for b, v in enumerate(vs):
                    _add_grads(
                        out, b, self._theta, difference(gradient, self._theta, v, steps[b]).values()
                    )
                    if wide is not None:
                        _add(wide[b], difference(gradient, self._theta, v, 2 * steps[b]))
        if wide is not None:
            for b in range(B):
                d1 = {k: t[b] for k, t in out.items()}
                self.error_estimates.append(
                    distance(wide[b], d1)
                    / max(distance(d1, {k: 0 * t for k, t in d1.items()}), 1e-300)
                )

    def _gradient(self, theta: Params, *, batch: Any, n: int) -> Params:
        leaves = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
        with torch.enable_grad():
            loss = self._batch_loss(leaves, batch, n)
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        return {
            k: torch.zeros_like(t) if g is None else g for (k, t), g in zip(leaves.items(), grads)
        }

    def _forward_product(self, batch: Any, n: int, V: Params) -> Params:
        def one(v: Params) -> Params:
            g = grad(lambda theta: self._batch_loss(theta, batch, n))
            return jvp(g, (self._theta,), (v,))[1]

        # contiguous tangents: vmap's batching rules copy strided ones in every op
        return vmap(one)({k: v.contiguous() for k, v in V.items()})

    def _new_graph(self, batch: Any, n: int) -> GradientGraph:
        return GradientGraph(lambda theta: self._batch_loss(theta, batch, n), self._theta)


FINITE = "finite_difference"


class GradientGraph:
    """The gradient of one batch's loss, built with ``create_graph``.

    each Hessian-vector product is one backward pass through it (reverse-over-reverse).
    """

    def __init__(self, loss: Callable[[Params], torch.Tensor], theta: Params) -> None:
        self.leaves = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
        grads = torch.autograd.grad(
            loss(self.leaves), list(self.leaves.values()), create_graph=True, allow_unused=True
        )
        # a gradient that does not depend on the parameters (e.g. of a last linear bias) has a
        # zero Hessian row: it is left out of the backward pass
        self.live = [
            (name, g) for name, g in zip(self.leaves, grads) if g is not None and g.requires_grad
        ]

    def apply(self, V: Params, *, keep: bool, out: Params | None = None) -> Params:
        """``{name.

        [B, *shape]}`` → the Hessian times each of the ``B`` vectors, added to ``out`` (default:
        zeros); ``keep=False`` frees the graph after the last vector.
        """
        if out is None:
            out = {k: torch.zeros_like(v) for k, v in V.items()}
        if not self.live:
            return out
        B = next(iter(V.values())).shape[0]
        leaves = list(self.leaves.values())
        for b in range(B):  # one vector at a time: see hessian_vs_peers.md, "Kept gradient graphs"
            hv = torch.autograd.grad(
                [g for _, g in self.live], leaves,
                grad_outputs=[V[name][b] for name, _ in self.live],
                retain_graph=keep or b < B - 1, allow_unused=True,
            )  # fmt: skip
            _add_grads(out, b, self.leaves, hv)
        return out


def _add_grads(out: Params, b: int, names: Params, grads: Any) -> None:
    """``out[name][b] += g`` for each gradient ``g`` (``None``: zero)."""
    for name, g in zip(names, grads):
        if g is not None:
            out[name][b] += g


class _OutputCurvature(_TwoMethods):
    """``Jᵀ M J`` with ``J`` the Jacobian of the model's output and ``M`` an output curvature.

    ``Jᵀ M J`` with ``J`` the Jacobian of the model's output ``z`` and ``M`` a curvature in output
    space; no per-sample gradient is ever formed. ``J v`` is taken in reverse mode, as the
    derivative of ``Jᵀ u`` with respect to ``u`` through the graph of ``Jᵀ u`` (the double-backward
    trick: ``"double_backward"``, graphs kept like the Hessian's), or in forward mode
    (``"forward"``: a forward pass per block, then ``vmap(jvp)``); then ``M`` in output space and a
    backward ``Jᵀ w``.
    """

    FORWARD = "forward"
    OPTION = "jvp"
    PRODUCT = "Jacobian-vector product"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor] | None,
        data: Any,
        *,
        jvp: str = "auto",
        cache_graph: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("batch_loss") is not None:
            raise ValueError(
                f"{type(self).__name__} needs loss_fn(outputs, targets); batch_loss is not supported"
            )
        super().__init__(model, loss_fn, data, method=jvp, cache_graph=cache_graph, **kwargs)

    def _output_fn(self, inputs: Any) -> Callable[[Params], torch.Tensor]:
        def output(theta: Params) -> torch.Tensor:
            out = self._forward(theta, inputs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"{type(self).__name__} needs a model that returns one tensor")
            return out

        return output

    def _output_and_targets(self, batch: Any) -> tuple[Callable[[Params], torch.Tensor], Any]:
        """``(θ → output z, targets)``: a dict batch's are its target tokens' logits and ids."""
        if self.batch_loss is None and is_dict_batch(batch):
            return self._token_output(batch)
        inputs, targets = pair(batch)
        return self._output_fn(inputs), targets

    def _forward_product(self, batch: Any, n: int, V: Params) -> Params:
        output, targets = self._output_and_targets(batch)
        primal = vjp(output, self._theta)
        z, pullback = primal[0].detach(), primal[1]
        V = {k: v.contiguous() for k, v in V.items()}  # vmap copies strided tangents in every op
        Jv = vmap(lambda v: jvp(output, (self._theta,), (v,))[1])(V)
        return vmap(pullback)(self._output_curvature(z, targets, n)(Jv))[0]

    def _new_graph(self, batch: Any, n: int) -> _OutputGraph:
        output, targets = self._output_and_targets(batch)
        return _OutputGraph(output, self._theta, lambda z: self._output_curvature(z, targets, n))

    def _output_curvature(
        self, z: torch.Tensor, targets: Any, n: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``M`` for this batch.

        a function applying it to ``B`` output-space vectors ``[B, *z.shape]``.
        """
        raise NotImplementedError


class _OutputGraph:
    """One batch's output ``z = f(θ)`` and the graph of ``Jᵀ u``, for ``Jᵀ M J`` products.

    One batch's output ``z = f(θ)`` with its graph, and the graph of ``Jᵀ u`` built with
    ``create_graph`` at a free ``u``: per vector, ``J v = ∂⟨Jᵀu, v⟩/∂u`` is one backward through the
    second, ``w = M J v`` is formed in output space, and ``Jᵀ w`` is one backward through the first.
    """

    def __init__(
        self,
        output: Callable[[Params], torch.Tensor],
        theta: Params,
        curvature: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]],
    ) -> None:
        self.leaves = {k: t.detach().requires_grad_(True) for k, t in theta.items()}
        self.z = output(self.leaves)
        self.u = torch.zeros_like(self.z, requires_grad=True)
        jtu = torch.autograd.grad(
            self.z, list(self.leaves.values()), grad_outputs=self.u, create_graph=True,
            allow_unused=True,
        )  # fmt: skip
        self.live = [(name, g) for name, g in zip(self.leaves, jtu) if g is not None]
        # built on the first product: torch.func (used by M) refuses the size probe's hooks
        self.curvature = curvature
        self.M: Callable[[torch.Tensor], torch.Tensor] | None = None

    def apply(self, V: Params, *, keep: bool, out: Params | None = None) -> Params:
        """``{name.

        [B, *shape]}`` → ``Jᵀ M J`` times each of the ``B`` vectors, added to ``out`` (default:
        zeros); ``keep=False`` frees the graphs after the last vector.
        """
        if out is None:
            out = {k: torch.zeros_like(v) for k, v in V.items()}
        if not self.live:
            return out
        if self.M is None:
            self.M = self.curvature(self.z.detach())
        B = next(iter(V.values())).shape[0]
        leaves = list(self.leaves.values())
        # one vector at a time through each graph, as for the Hessian's; M once for the block
        JV = torch.stack([
            torch.autograd.grad(
                [g for _, g in self.live], self.u,
                grad_outputs=[V[name][b] for name, _ in self.live], retain_graph=keep or b < B - 1,
            )[0]
            for b in range(B)
        ])  # fmt: skip
        W = self.M(JV)
        for b in range(B):
            jtw = torch.autograd.grad(
                self.z, leaves, grad_outputs=W[b], retain_graph=keep or b < B - 1, allow_unused=True
            )
            _add_grads(out, b, self.leaves, jtw)
        return out


class GGNOperator(_OutputCurvature):
    """The generalised Gauss–Newton matrix G = (1/N) Σ_j J_jᵀ (∇²_z ℓ_j) J_j.

    Same arguments as :class:`HessianOperator`, with ``jvp`` (``"auto"``, ``"double_backward"``
    or ``"forward"``: how ``J v`` is taken, see :class:`_OutputCurvature`; the choice is in
    ``method``) in place of ``hvp``, and no ``batch_loss``: the loss must be a function of the
    model's output tensor and the targets. ``cache_graph`` keeps the graphs of the output and of
    ``Jᵀ u`` (costs: ``benchmarks/results/fisher_vs_curvlinops.md``, "Kept output graphs").
    """

    def _output_curvature(
        self, z: torch.Tensor, targets: Any, n: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        loss_fn, scale = self._token_loss_fn(), self._scale(n)

        # the loss Hessian in output space is symmetric: apply it reverse-over-reverse
        def loss_of_output(out: torch.Tensor) -> torch.Tensor:
            return loss_fn(out, targets) * scale

        loss_hvp = vjp(grad(loss_of_output), z)[1]
        return lambda Jv: vmap(loss_hvp)(Jv)[0]


class EmpiricalFisherOperator(_OutputCurvature):
    """The empirical Fisher F = (1/N) Σ_j ∇ℓ_j ∇ℓ_jᵀ.

    The empirical Fisher F = (1/N) Σ_j ∇ℓ_j ∇ℓ_jᵀ (uncentred second moment of per-sample gradients;
    ℓ_j is ``loss_fn`` on the one-sample batch j).

    Same arguments as :class:`GGNOperator`. Since ∇ℓ_j = J_jᵀ g_j with g_j = ∇_z ℓ_j the
    per-sample gradient in output space, F v = (1/N) Jᵀ [g_j (g_jᵀ (J v)_j)]_j: a product costs
    what a GGN product costs, and no per-sample gradient of length P is formed. This needs the
    model to treat samples independently; under ``mode="train"`` BatchNorm makes per-sample
    gradients undefined, so that is refused.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor] | None,
        data: Any,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("mode", "eval") == "train" and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            raise ValueError(
                "per-sample gradients are undefined under train-mode BatchNorm: use mode='eval'"
            )
        super().__init__(model, loss_fn, data, **kwargs)

    def _output_curvature(
        self, z: torch.Tensor, targets: Any, n: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        loss_fn = self._token_loss_fn()

        def sample_loss(zj: torch.Tensor, yj: Any) -> torch.Tensor:
            return loss_fn(zj[None], yj[None])

        g = vmap(grad(sample_loss))(z, targets)  # [n, *out]: ∇_z ℓ_j, row j

        def apply(Jv: torch.Tensor) -> torch.Tensor:
            B = Jv.shape[0]
            s = (Jv * g).reshape(B, n, -1).sum(-1)  # [B, n]: g_jᵀ (J v)_j
            return s.reshape(B, n, *([1] * (g.dim() - 1))) * g / self.num_samples

        return apply


def _cast(t: torch.Tensor, *, dtype: torch.dtype) -> torch.Tensor:
    t = t.detach()
    return t.to(dtype) if t.is_floating_point() else t
