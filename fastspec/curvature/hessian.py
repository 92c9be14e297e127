"""The Hessian operator: exact block Hessian-vector products, or central differences.

See :mod:`fastspec.curvature.operators` for the matrices and the product methods.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import grad, jvp, vmap

from fastspec._checks import check_choice
from fastspec.curvature.finite_difference import (
    any_attention_kernel,
    difference,
    distance,
    step_size,
)
from fastspec.curvature.model_operator import BatchLoss, Params, TwoMethods, add_into
from fastspec.params import ParamSpec


class HessianOperator(TwoMethods):
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
            is in ``method``; ``"auto"`` times both on the first block, so fix one where runs
            must agree bitwise), or ``"finite_difference"``: central differences of two gradients
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
                    add_grads(
                        out, b, self._theta, difference(gradient, self._theta, v, steps[b]).values()
                    )
                    if wide is not None:
                        add_into(wide[b], difference(gradient, self._theta, v, 2 * steps[b]))
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
            add_grads(out, b, self.leaves, hv)
        return out


def add_grads(out: Params, b: int, names: Params, grads: Any) -> None:
    """``out[name][b] += g`` for each gradient ``g`` (``None``: zero)."""
    for name, g in zip(names, grads):
        if g is not None:
            out[name][b] += g
