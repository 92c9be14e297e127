"""The covariance spectrum of stochastic gradients, from the N × N Gram matrix.

At fixed θ, with per-sample gradients g_i (i = 1..N), the second moment is
M = (1/N) Σ g_i g_iᵀ and the covariance C = M − ḡḡᵀ; the minibatch-noise covariance of a batch of
B samples drawn with replacement is C/B. The nonzero eigenvalues of C (of M) are those of the
centred (uncentred) Gram matrix (1/N)(G − 1ḡᵀ)(G − 1ḡᵀ)ᵀ ((1/N) G Gᵀ), so they are computed from
an N × N matrix, never from a P × P one (a reconstruction of P2's analysis).

Two methods: ``"gram"`` assembles the Gram matrix chunk pair by chunk pair and takes every
eigenvalue with ``torch.linalg.eigvalsh`` in float64 (O(N³)); ``"lanczos"`` finds the top ``k``
with :func:`fastspec.linalg.eigsh` (certified residuals), on the assembled Gram matrix while it
fits in ``gram_max_bytes``, and beyond that on the matrix-free operator U ↦ G(GᵀU)/N applied from
the stored per-layer representations (:class:`~fastspec.grads.GramOperator`; memory
N·(stored features) + the Lanczos basis, no N × N matrix). Over samples sharded across the ranks
of a process group, the same two paths run on the union of the shards
(:mod:`fastspec.grads.sharded`).

Reference: Z. Xie et al., *On the Overlooked Structure of Stochastic Gradients*, NeurIPS 2023.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from fastspec._checks import AsDict, check_bool, check_choice, check_float, check_int
from fastspec.batches import SampleBatches
from fastspec.checkpoint import Resume, as_checkpoint, check_resume, model_data_fingerprint
from fastspec.distributed import resolve_group
from fastspec.grads.gram import DEFAULT_MEMORY_BUDGET, GradientStore, GramOperator
from fastspec.grads.problem import GradProblem
from fastspec.grads.sharded import (
    BlockGramOperator,
    ShardedGradients,
    ShardedGramOperator,
    shard_gradients,
)
from fastspec.linalg import DenseOperator, LinearOperator, eigsh
from fastspec.params import ParamSpec

__all__ = ["CovarianceSpectrum", "gradient_covariance_spectrum"]

GRAM_MAX_BYTES = 8 * 2**30  # largest N × N Gram matrix formed by default
EIGH_MAX_N = 6000  # "auto" beyond this N with k given: Lanczos (eigvalsh is O(N³))


@dataclass(frozen=True, eq=False)
class CovarianceSpectrum(AsDict):
    """Eigenvalues of the gradient covariance.

    Attributes:
        eigenvalues: [K] descending, of C (``center``) or M, divided by ``noise_batch_size``
            when given (the minibatch-noise covariance C/B); float64.
        num_samples: N.
        num_params: P.
        center: whether C (True) or M (False).
        noise_batch_size: B, or ``None``.
        method: ``"gram"`` (dense eigendecomposition of the Gram matrix) or ``"lanczos"``.
        residuals: [K] Lanczos residuals (``None`` for ``"gram"``).
    """

    eigenvalues: torch.Tensor
    num_samples: int
    num_params: int
    center: bool
    noise_batch_size: int | None
    method: str
    residuals: torch.Tensor | None = None


def gradient_covariance_spectrum(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: Any,
    *,
    k: int | None = None,
    center: bool = True,
    noise_batch_size: int | None = None,
    params: ParamSpec = None,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    method: str = "auto",
    gram_max_bytes: int = GRAM_MAX_BYTES,
    tol: float = 1e-8,
    seed: int = 0,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    process_group: Any = None,
    checkpoint: Any = None,
    resume: Resume = False,
) -> CovarianceSpectrum:
    """Descending eigenvalues of the covariance (or second moment) of per-sample gradients.

    Args:
        model: any ``nn.Module`` (as in :func:`fastspec.grads.gradient_gram`).
        loss_fn: ``loss(outputs, targets)``; per-sample terms are its one-sample values.
        data: a ``DataLoader``, an iterable of ``(inputs, targets)`` batches or one pair.
        params: parameter selection (names, tensors, regex, predicate; default all).
        mode: ``"eval"`` (default) or ``"train"`` (refused with BatchNorm).
        dtype: compute dtype (default the parameters'; float64 for exact spectra).
        chunk_size: samples per forward/backward pass.
        memory_budget: bytes above which a parameter's per-sample gradients are never
            materialised.
        k: number of top eigenvalues (default all min(N, P)).
        center: covariance C (default) or uncentred second moment M.
        noise_batch_size: B: return the eigenvalues of the minibatch-noise covariance C/B
            (requires ``center=True``).
        method: ``"gram"`` (every eigenvalue of the assembled Gram matrix), ``"lanczos"``
            (the top ``k < N``), or ``"auto"``: ``"gram"`` when ``k`` is None or N <= 6000,
            else ``"lanczos"``.
        gram_max_bytes: largest N × N Gram matrix to form (default 8 GiB); Lanczos beyond it
            runs on the matrix-free operator.
        tol: Lanczos residual tolerance.
        seed: Lanczos start-block seed.
        process_group: a ``torch.distributed`` process group over which the samples are
            sharded (default: the default group if initialised with more than one rank).
            ``data`` is then this rank's shard, the samples are the union of the shards in
            rank order, and every rank returns the eigenvalues of one process over that union:
            ``"gram"`` assembles the Gram matrix from blocks computed across ranks (rank 0
            takes its eigenvalues and broadcasts them); Lanczos applies the Gram matrix from
            the blocks each rank computed, or matrix-free from each rank's factors, with one
            all-reduce per block of products (:mod:`fastspec.grads.sharded`).
        checkpoint: with ``"lanczos"``, a directory or :class:`fastspec.checkpoint.Checkpoint`
            where :func:`fastspec.linalg.eigsh` saves its state (fingerprinted with the model's
            parameters, the data and these settings). ``"gram"`` is one pass over the data and
            one dense eigendecomposition: there is nothing to resume, the argument is unused.
        resume: continue the ``"lanczos"`` run saved in ``checkpoint`` (see
            :func:`fastspec.linalg.eigsh`).

    Returns:
        A :class:`CovarianceSpectrum`.

    Raises:
        ValueError: under a process group, ranks select different parameters, dtypes or
            options, or one rank's data or model fails (every rank raises).
    """
    method = check_choice("method", method, ("auto", "gram", "lanczos"))
    center = check_bool("center", center)
    noise_batch_size = check_int("noise_batch_size", noise_batch_size, minimum=1, none_ok=True)
    if noise_batch_size is not None and not center:
        raise ValueError(
            "noise_batch_size gives the minibatch-noise covariance C/B, which is centred: "
            "use center=True"
        )
    k = check_int("k", k, minimum=1, none_ok=True)
    gram_max_bytes = check_int("gram_max_bytes", gram_max_bytes, minimum=0)
    memory_budget = check_int("memory_budget", memory_budget, minimum=0)
    tol = check_float("tol", tol, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
    seed = check_int("seed", seed)
    group = resolve_group(process_group)
    cp, resume = as_checkpoint(checkpoint), check_resume(resume)
    if cp is not None and group is not None:
        raise ValueError(
            "checkpoint is not supported for gradient_covariance_spectrum under a process group"
        )

    def make_problem() -> GradProblem:
        return GradProblem(
            model, loss_fn, params=params, mode=mode, dtype=dtype, chunk_size=chunk_size
        )

    if group is None:
        problem = make_problem()
        samples = SampleBatches(data)
        N, P = samples.num_samples, problem.num_params
    else:
        sharded = shard_gradients(
            group,
            "gradient_covariance_spectrum",
            make_problem,
            data,
            memory_budget=memory_budget,
            k=k,
            center=center,
            method=method,
            gram_max_bytes=gram_max_bytes,
            tol=tol,
            seed=seed,
        )
        problem = sharded.store.problem
        N, P = sharded.num_samples, problem.num_params
    rank = min(N, P)
    if k is not None and k > rank:
        raise ValueError(f"k must be at most min(N, P) = {rank}, got {k}")
    if method == "auto":
        method = "gram" if k is None or N <= EIGH_MAX_N else "lanczos"
    if method == "lanczos" and (k is None or k >= N):
        raise ValueError(f"method='lanczos' needs k < N = {N}, got k={k}")
    dense = N * N * torch.finfo(problem.dtype).bits // 8 <= gram_max_bytes
    if method == "gram" and not dense:
        raise ValueError(
            f"the {N} × {N} Gram matrix exceeds gram_max_bytes = {gram_max_bytes}: pass k and "
            "method='lanczos' (matrix-free), or raise gram_max_bytes"
        )
    residuals = None
    if group is not None:
        if dense:
            sharded.compute_blocks()
        if method == "gram":
            values = _sharded_eigvalsh(sharded, center, rank if k is None else k)
        else:
            assert k is not None
            op: LinearOperator = (
                BlockGramOperator(sharded, center=center)
                if dense
                else ShardedGramOperator(sharded, center=center)
            )
            res = eigsh(op, k, tol=tol, seed=seed)
            values, residuals = res.eigenvalues.double(), res.residuals
    else:
        store = GradientStore(problem, samples, memory_budget=memory_budget)
        if method == "gram":
            K = store.gram(center=center).double()
            values = torch.linalg.eigvalsh(K).flip(0)[: rank if k is None else k]
        else:
            assert k is not None
            op = (
                DenseOperator(store.gram(center=center))
                if dense
                else GramOperator(store, center=center)
            )
            if cp is not None:
                cp = cp.with_fingerprint(
                    covariance=model_data_fingerprint(
                        model, problem.names, next(iter(samples)), N
                    ),
                    center=center, mode=mode, dtype=str(problem.dtype), matrix_free=not dense,
                )  # fmt: skip
            res = eigsh(op, k, tol=tol, seed=seed, checkpoint=cp, resume=resume)
            values, residuals = res.eigenvalues.double(), res.residuals
    if noise_batch_size is not None:
        values = values / noise_batch_size
    return CovarianceSpectrum(
        eigenvalues=values.cpu(),
        num_samples=N,
        num_params=P,
        center=center,
        noise_batch_size=noise_batch_size,
        method=method,
        residuals=residuals,
    )


def _sharded_eigvalsh(sharded: ShardedGradients, center: bool, count: int) -> torch.Tensor:
    """The top ``count`` eigenvalues of the Gram, assembled on rank 0 only; every rank gets them."""
    K = sharded.gram(center=center, root=0)
    values = torch.empty(count, dtype=torch.float64, device=sharded.device)
    if K is not None:
        values.copy_(torch.linalg.eigvalsh(K.double()).flip(0)[:count])
    del K
    dist.broadcast(values, sharded.global_rank(0), group=sharded.group)
    return values
