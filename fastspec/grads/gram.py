"""The N × N Gram matrix of per-sample gradients, layer by layer, without forming N × P.

With G [N, P] the per-sample gradients (row i: sample i's gradient, see
:mod:`fastspec.grads.problem`), the Gram matrix is K = (1/N) G Gᵀ, and the centred one
K_c = (1/N) (G − 1ḡᵀ)(G − 1ḡᵀ)ᵀ = H K H with H = I − 11ᵀ/N. Since the parameters are disjoint
coordinates, G Gᵀ = Σ_p G_p G_pᵀ over parameters, and each parameter's term is computed in its
cheaper form (:mod:`fastspec.grads.features`): a Linear or Conv weight with inputs a and output
gradients g at T positions gives ⟨G_i, G_j⟩ = Σ_{t,s} (a_it·a_js)(g_it·g_js) at cost
N²·T²·(D_in + D_out), against N·T·D_in·D_out to materialise plus N²·D_in·D_out for the Gram; the
store keeps whichever is cheaper (the implicit form whenever materialising would exceed the
memory budget). For T = 1 the implicit form is (A Aᵀ)∘(G Gᵀ), two GEMMs.

:class:`GradientStore` holds one such representation per chunk of samples and parameter (memory:
N·Σ_layers T·(D_in + D_out) for implicit weights, N·p for materialised ones); the Gram is
assembled block by block over chunk pairs, and :class:`GramOperator` applies K (or K_c) without
forming it, for the Lanczos path of :func:`fastspec.grads.gradient_covariance_spectrum`.

Reference: Z. Xie et al., *On the Overlooked Structure of Stochastic Gradients*, NeurIPS 2023.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from fastspec._checks import check_bool, check_int
from fastspec.batches import SampleBatches
from fastspec.distributed import resolve_group
from fastspec.grads.features import Dense, Feature
from fastspec.grads.problem import GradProblem
from fastspec.linalg import LinearOperator
from fastspec.params import ParamSpec

__all__ = ["GradientStore", "GramOperator", "gradient_gram"]

DEFAULT_MEMORY_BUDGET = 4 * 2**30  # bytes of materialised per-sample gradients per parameter


class GradientStore:
    """Per-sample gradient representations of every chunk of ``data``.

    Args:
        problem: the model, loss and selected parameters.
        data: the samples: :class:`fastspec.batches.SampleBatches`, or what it accepts.
        memory_budget: bytes above which a parameter's per-sample gradients are never
            materialised (the implicit form is kept).
        total_samples: the N of the cost model (default the samples of ``data``; the union's
            N when ``data`` is one rank's shard).

    Attributes:
        num_samples: N.
        forms: parameter name → ``"implicit"`` or ``"materialised"``.
        chunks: one ``{name: Feature}`` per chunk.
    """

    def __init__(
        self,
        problem: GradProblem,
        data: SampleBatches | Any,
        *,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        total_samples: int | None = None,
    ) -> None:
        memory_budget = check_int("memory_budget", memory_budget, minimum=0)
        self.problem = problem
        data = SampleBatches(data)  # no work when already checked
        self.num_samples = data.num_samples
        total = (
            check_int("total_samples", total_samples, minimum=1, none_ok=True) or data.num_samples
        )
        self.forms: dict[str, str] = {}
        self.chunks: list[dict[str, Feature]] = []
        for inputs, targets in problem.chunks(data):
            feats = problem.features(inputs, targets)
            if not self.forms:
                self.forms = {n: _choose(f, total, memory_budget) for n, f in feats.items()}
            self.chunks.append(
                {n: f if self.forms[n] == "implicit" else f.dense() for n, f in feats.items()}
            )
        self.sizes = [next(iter(c.values())).n for c in self.chunks]
        self.dtype, self.device = problem.dtype, problem.device

    def gram(self, *, center: bool = True) -> torch.Tensor:
        """(1/N) G Gᵀ [N, N], or (1/N) (G − 1ḡᵀ)(G − 1ḡᵀ)ᵀ when ``center``."""
        N = self.num_samples
        K = torch.empty(N, N, dtype=self.dtype, device=self.device)
        offsets = [0]
        for s in self.sizes:
            offsets.append(offsets[-1] + s)
        for a, ca in enumerate(self.chunks):
            for b in range(a, len(self.chunks)):
                cb = self.chunks[b]
                block = sum(ca[n].gram(cb[n]) for n in ca)
                assert isinstance(block, torch.Tensor)
                K[offsets[a] : offsets[a + 1], offsets[b] : offsets[b + 1]] = block
                if b != a:
                    K[offsets[b] : offsets[b + 1], offsets[a] : offsets[a + 1]] = block.T
        if center:
            K = _center(K)
        return K.div_(N)

    def rmatmul(self, U: torch.Tensor) -> dict[str, torch.Tensor]:
        """Uᵀ G per parameter ({name: [B, p]}) for U [N, B]."""
        out: dict[str, torch.Tensor] = {}
        lo = 0
        for chunk, n in zip(self.chunks, self.sizes):
            for name, f in chunk.items():
                part = f.rmatmul(U[lo : lo + n])
                out[name] = part if name not in out else out[name].add_(part)
            lo += n
        return out

    def matmul(self, W: dict[str, torch.Tensor]) -> torch.Tensor:
        """G Wᵀ [N, B] for W = {name: [B, p]}."""
        rows = []
        for chunk in self.chunks:
            part = sum(f.matmul(W[name]) for name, f in chunk.items())
            assert isinstance(part, torch.Tensor)
            rows.append(part)
        return torch.cat(rows)


class GramOperator(LinearOperator):
    """U ↦ K U with K the (centred) Gram matrix / N, without an N × N matrix.

    U ↦ K U with K the (centred) Gram matrix / N, applied as G (Gᵀ U) / N from a
    :class:`GradientStore` (no N × N matrix): one pass over the stored chunks per block.
    """

    def __init__(self, store: GradientStore, *, center: bool = True) -> None:
        self.store, self.center = store, center
        N = store.num_samples
        self.shape = (N, N)
        self.dtype, self.device = store.dtype, store.device

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Apply K (or K_c) to ``V`` [N, B]: one pass over the stored chunks."""
        if self.center:
            V = V - V.mean(0, keepdim=True)
        out = self.store.matmul(self.store.rmatmul(V))
        if self.center:
            out -= out.mean(0, keepdim=True)
        return out / self.shape[0]


def gradient_gram(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: Any,
    *,
    center: bool = True,
    params: ParamSpec = None,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    process_group: Any = None,
) -> torch.Tensor:
    """The N × N Gram matrix (1/N) G Gᵀ of per-sample gradients over all samples of ``data``.

    Under a process group (``process_group``, or the default group when it has more than one
    rank) ``data`` is this rank's shard; the samples are the union of the shards in rank order,
    and every rank returns the full N × N matrix (see :mod:`fastspec.grads.sharded` for the
    exchange and its memory).

    Args:
        model: any ``nn.Module`` (layer rules for Linear, Conv1d/2d, Embedding, LayerNorm,
            GroupNorm, eval-mode BatchNorm; the torch.func fallback for other parameters).
        loss_fn: ``loss(outputs, targets)``; the per-sample term of sample i is its value on
            the one-sample batch i (for a mean-reduced loss: the sample's own loss).
        data: a ``DataLoader``, an iterable of ``(inputs, targets)`` batches or one pair.
        center: use G − 1ḡᵀ (the covariance's Gram) instead of G.
        params: parameter selection as in :mod:`fastspec.curvature` (names, tensors, regex,
            predicate); default every parameter that requires grad.
        mode: ``"eval"`` (default) or ``"train"`` (refused with BatchNorm).
        dtype: compute dtype (default the parameters'; float64 for exact spectra).
        chunk_size: samples per forward/backward pass.
        memory_budget: bytes above which a parameter's per-sample gradients are never
            materialised.
        process_group: a ``torch.distributed`` process group over which the samples are
            sharded (default: the default group if initialised with more than one rank).

    Returns:
        [N, N] symmetric positive semi-definite, in ``dtype``.

    Raises:
        ValueError: under a process group, ranks select different parameters, dtypes or
            options, or one rank's data or model fails (every rank raises).
    """
    center = check_bool("center", center)
    memory_budget = check_int("memory_budget", memory_budget, minimum=0)
    group = resolve_group(process_group)

    def make_problem() -> GradProblem:
        return GradProblem(
            model, loss_fn, params=params, mode=mode, dtype=dtype, chunk_size=chunk_size
        )

    if group is not None:
        from fastspec.grads.sharded import shard_gradients  # it builds on this module

        sharded = shard_gradients(
            group, "gradient_gram", make_problem, data, memory_budget=memory_budget, center=center
        )
        sharded.compute_blocks()
        K = sharded.gram(center=center)
        assert K is not None
        return K
    problem = make_problem()
    samples = SampleBatches(data)
    return GradientStore(problem, samples, memory_budget=memory_budget).gram(center=center)


def _choose(f: Feature, num_samples: int, memory_budget: int) -> str:
    if isinstance(f, Dense):
        return "materialised"
    dense_flops, dense_bytes = f.dense_costs(num_samples)
    if dense_bytes > memory_budget or f.costs(num_samples) <= dense_flops:
        return "implicit"
    return "materialised"


def _center(K: torch.Tensor) -> torch.Tensor:
    """H K H with H = I − 11ᵀ/N, in place (no second N × N matrix)."""
    K.sub_(K.mean(0, keepdim=True))
    return K.sub_(K.mean(1, keepdim=True))
