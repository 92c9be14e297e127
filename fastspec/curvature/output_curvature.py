"""The generalised Gauss–Newton and empirical-Fisher operators: curvature in output space.

See :mod:`fastspec.curvature.operators` for the matrices and the product methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import grad, jvp, vjp, vmap

from fastspec.batches import (
    pair,
)
from fastspec.curvature.hessian import add_grads
from fastspec.curvature.language import (
    is_dict_batch,
)
from fastspec.curvature.model_operator import Params, TwoMethods


class OutputCurvature(TwoMethods):
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

    def _new_graph(self, batch: Any, n: int) -> OutputGraph:
        output, targets = self._output_and_targets(batch)
        return OutputGraph(output, self._theta, lambda z: self._output_curvature(z, targets, n))

    def _output_curvature(
        self, z: torch.Tensor, targets: Any, n: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``M`` for this batch.

        a function applying it to ``B`` output-space vectors ``[B, *z.shape]``.
        """
        raise NotImplementedError


class OutputGraph:
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
            add_grads(out, b, self.leaves, jtw)
        return out


class GGNOperator(OutputCurvature):
    """The generalised Gauss–Newton matrix G = (1/N) Σ_j J_jᵀ (∇²_z ℓ_j) J_j.

    Same arguments as :class:`HessianOperator`, with ``jvp`` (``"auto"``, ``"double_backward"``
    or ``"forward"``: how ``J v`` is taken, see :class:`OutputCurvature`; the choice is in
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


class EmpiricalFisherOperator(OutputCurvature):
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
