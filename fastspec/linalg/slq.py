"""Stochastic Lanczos quadrature (SLQ): spectral density of a symmetric operator.

S. Ubaru, J. Chen & Y. Saad, *Fast estimation of tr(f(A)) via stochastic Lanczos quadrature*,
SIAM J. Matrix Anal. Appl. 38(4), 2017; for Hessian spectra, B. Ghorbani, S. Krishnan & Y. Xiao,
*An investigation into neural net optimization via Hessian eigenvalue density*, ICML 2019.

For each of ``R`` random unit probes ``v`` (Rademacher, scaled by ``1/√P``), ``m`` Lanczos steps
started at ``v`` give a tridiagonal ``T_m = U diag(θ) Uᵀ``; the nodes ``θ_j`` and weights
``τ_j = U[0, j]²`` form a Gauss quadrature of the spectral measure seen from ``v``, whose
expectation over ``v`` is the normalised spectral measure ``(1/P) Σ_i δ(t − λ_i)``. The ``R``
runs go together: the operator is applied to a ``[P, R]`` block per step, each column with its
own recurrence.

Pooling (P1 of ``methods.md`` §1, for large models): the top Ritz values of several runs are
pooled, sorted, and the top ``K`` kept (:func:`pooled_ritz_values`). Well-separated top
eigenvalues converge in every run, so each appears once per run in the pool; this is what the
papers do, and ``dedupe_rtol`` offers to merge such copies. For exact top eigenpairs with
residuals use :func:`fastspec.linalg.eigsh`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fastspec._checks import AsDict, check_bool, check_float, check_int
from fastspec.linalg import _kernels
from fastspec.linalg._random import make_generator
from fastspec.linalg.operator import apply_scale, aslinearoperator, check_symmetric, safe_scale
from fastspec.linalg.sharded import Sharding, run_group

__all__ = ["SLQResult", "pooled_ritz_values", "slq"]

#: elements of the [grid, nodes] temporary of :meth:`SLQResult.density`
_DENSITY_CHUNK_ELEMS = 1 << 22


@dataclass(frozen=True)
class SLQResult(AsDict):
    """Quadrature nodes and weights from :func:`slq`.

    Attributes:
        nodes: ``[R, m]`` float64 (CPU), Ritz values of each probe's Lanczos run, ascending;
            entries past ``lengths[r]`` are padding (0 with weight 0).
        weights: ``[R, m]`` float64 (CPU), squared first components of the Ritz vectors;
            each row sums to 1.
        lengths: ``[R]`` int64, Lanczos steps each probe actually took (fewer than ``m`` when
            it found an invariant subspace).
        dim: ``P``.
        num_matvecs: operator-vector products.
        reorthogonalized: whether each run was fully reorthogonalised.
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    lengths: torch.Tensor
    dim: int
    num_matvecs: int
    reorthogonalized: bool

    @property
    def num_probes(self) -> int:
        """``R``."""
        return int(self.nodes.shape[0])

    def density(self, grid: Any, *, sigma: float) -> torch.Tensor:
        """Gaussian-broadened spectral density on ``grid``.

        ``φ(t) = (1/R) Σ_r Σ_j τ_rj N(t; θ_rj, σ²)``, an estimate of
        ``(1/P) Σ_i N(t; λ_i, σ²)``; it integrates to 1 (multiply by ``P`` for eigenvalue
        counts per unit).

        Args:
            grid: ``[G]`` points (tensor, array or sequence).
            sigma: standard deviation of the Gaussian kernel, > 0.

        Returns:
            ``[G]`` float64 (CPU).
        """
        sigma = check_float("sigma", sigma, minimum=0.0, open_min=True)
        t = torch.as_tensor(grid, dtype=torch.float64).reshape(-1).cpu()
        if not bool(torch.isfinite(t).all()):
            raise ValueError("grid contains NaN or inf")
        nodes = self.nodes.reshape(-1)
        w = self.weights.reshape(-1) / self.num_probes
        keep = w > 0
        nodes, w = nodes[keep], w[keep]
        out = torch.zeros_like(t)
        chunk = max(1, _DENSITY_CHUNK_ELEMS // max(1, nodes.shape[0]))
        norm = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
        for g0 in range(0, t.shape[0], chunk):
            d = (t[g0 : g0 + chunk, None] - nodes[None, :]) / sigma
            out[g0 : g0 + chunk] = torch.exp(-0.5 * d * d) @ w * norm
        return out


def slq(
    op: Any,
    *,
    num_probes: int,
    num_steps: int,
    seed: int | None = None,
    reorthogonalize: bool = True,
    process_group: Any = None,
) -> SLQResult:
    """Stochastic Lanczos quadrature of a symmetric operator.

    Args:
        op: a symmetric operator (anything :func:`~fastspec.linalg.aslinearoperator` takes),
            float32 or float64.
        num_probes: ``R`` random probes, run together as one ``[P, R]`` block per step.
        num_steps: ``m`` Lanczos steps per probe (``1 <= m <= P``); ``m`` nodes per probe.
        seed: seed of the Rademacher probes; ``None`` draws a fresh one.
        reorthogonalize: fully reorthogonalise each run against its own earlier vectors (two
            Gram–Schmidt passes). Keeps the nodes free of spurious copies ("ghosts"), at a
            memory of ``R · m · P`` elements; without it only ``3 · R · P`` elements are
            stored and the quadrature is still valid (Knizhnerman's result) but top nodes
            may repeat.
        process_group: a ``torch.distributed`` group to run over (default: ``op``'s, else the
            default group of more than one rank; see :func:`~fastspec.linalg.eigsh`). Each rank
            keeps its slice of every Lanczos vector (``R · m · P / W`` elements with
            ``reorthogonalize``); the probes are drawn whole as on one process, so a seed gives
            the same nodes and weights (up to rounding) on any number of ranks.

    Returns:
        An :class:`SLQResult`.

    Raises:
        TypeError: bad argument types or an unsupported operator dtype.
        ValueError: ``num_probes``/``num_steps`` out of range, a non-symmetric dense
            operator, or NaN/inf produced by the operator.
    """
    A = aslinearoperator(op)
    if A.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"op.dtype must be float32 or float64 for slq, got {A.dtype}")
    R = check_int("num_probes", num_probes, minimum=1)
    m = check_int("num_steps", num_steps, minimum=1)
    check_int("seed", seed, none_ok=True)
    check_bool("reorthogonalize", reorthogonalize)
    P = A.shape[0]
    if m > P:
        raise ValueError(f"num_steps must be <= P = {P} (the Krylov space is full), got {m}")
    check_symmetric(A)
    sh = Sharding(P, run_group(A, process_group))
    sh.agree(
        "slq",
        dtype=str(A.dtype),
        num_probes=R,
        num_steps=m,
        seed=seed,
        reorthogonalize=bool(reorthogonalize),
        local_matmat=callable(getattr(A, "local_matmat", None)),
    )
    gen = make_generator(sh.shared_seed(seed))
    eps = torch.finfo(A.dtype).eps
    v = sh.rademacher(gen, R, dtype=A.dtype, device=A.device) / math.sqrt(P)
    v_prev = torch.zeros_like(v)
    beta = torch.zeros(R, dtype=A.dtype, device=A.device)
    alphas = torch.zeros(m, R, dtype=torch.float64, device=A.device)
    betas = torch.zeros(m, R, dtype=torch.float64, device=A.device)
    finite = torch.ones((), dtype=torch.bool, device=A.device)
    # a run stops (invariant subspace found) when β <= √ε ‖A‖ (‖A‖ estimated by the largest
    # ‖Av‖ so far): dropping such a β perturbs the tridiagonal matrix by √ε ‖A‖
    anorm = torch.zeros((), dtype=A.dtype, device=A.device)
    cut = math.sqrt(eps)
    basis = torch.empty(R, m, sh.n, dtype=A.dtype, device=A.device) if reorthogonalize else None
    scale = 1.0
    for j in range(m):
        if basis is not None:
            basis[:, j] = v.mT
        w = sh.apply(A, v)
        if j == 0:  # one host read: huge or tiny operators run exactly scaled (safe_scale)
            peak = float(sh.max(w.abs().amax() if w.numel() else w.new_zeros(())))
            if not math.isfinite(peak):
                raise ValueError("op returned NaN or inf; slq needs a finite operator")
            scale = safe_scale(peak, A.dtype, P)
        if scale != 1.0:
            w = apply_scale(w, scale)
        ref = sh.vector_norms(w, dim=0)
        finite &= torch.isfinite(ref).all()
        w, alpha = _kernels.lanczos_step_batched(
            w, v, v_prev, beta, None if basis is None else basis[:, : j + 1], reduce=sh.reduce
        )
        beta_new = sh.vector_norms(w, dim=0)
        anorm = torch.maximum(anorm, ref.max())
        alive = beta_new > cut * anorm
        beta_new = torch.where(alive, beta_new, torch.zeros_like(beta_new))
        v_prev = v
        v = torch.where(alive, w / torch.where(alive, beta_new, 1.0), torch.zeros_like(w))
        beta = beta_new
        alphas[j] = alpha.to(torch.float64)
        betas[j] = beta_new.to(torch.float64)
    if not bool(finite):
        raise ValueError("op returned NaN or inf; slq needs a finite operator")
    a_h = alphas.cpu().numpy()
    b_h = betas.cpu().numpy()
    nodes = np.zeros((R, m))
    weights = np.zeros((R, m))
    lengths = np.zeros(R, dtype=np.int64)
    for r in range(R):
        zero = np.nonzero(b_h[:, r] == 0.0)[0]
        L = int(zero[0]) + 1 if zero.shape[0] else m
        T = np.diag(a_h[:L, r]) + np.diag(b_h[: L - 1, r], 1) + np.diag(b_h[: L - 1, r], -1)
        theta, U = np.linalg.eigh(T)
        nodes[r, :L] = theta / scale
        weights[r, :L] = U[0] ** 2
        lengths[r] = L
    return SLQResult(
        nodes=torch.from_numpy(nodes),
        weights=torch.from_numpy(weights),
        lengths=torch.from_numpy(lengths),
        dim=P,
        num_matvecs=R * m,
        reorthogonalized=bool(reorthogonalize),
    )


def pooled_ritz_values(
    results: SLQResult | Sequence[SLQResult],
    k: int,
    *,
    dedupe_rtol: float | None = None,
) -> torch.Tensor:
    """Pool the Ritz values (nodes) of several SLQ runs, sort descending, keep the top ``k``.

    This is how P1 (``methods.md`` §1) gets 1000 top eigenvalues of an LLM: three SLQ runs of
    1000 nodes each, pooled, sorted, top 1000 kept. Every probe of every result counts as one
    run.

    Args:
        results: one :class:`SLQResult` or several.
        k: number of values returned (at most the pool size).
        dedupe_rtol: ``None`` (default) pools exactly as the papers do, so an eigenvalue that
            converged in ``n`` runs appears ``n`` times. With a tolerance, values of different
            runs within ``dedupe_rtol · |value|`` of each other are merged into one cluster,
            which keeps as many copies as the most any single run has in it (their mean).

    Returns:
        ``[k]`` float64 (CPU), descending.
    """
    res_list = [results] if isinstance(results, SLQResult) else list(results)
    if not res_list or not all(isinstance(r, SLQResult) for r in res_list):
        raise TypeError("results must be an SLQResult or a non-empty sequence of them")
    k = check_int("k", k, minimum=1)
    dedupe_rtol = check_float("dedupe_rtol", dedupe_rtol, minimum=0.0, open_min=True, none_ok=True)
    values: list[np.ndarray] = []
    run_ids: list[np.ndarray] = []
    run = 0
    for res in res_list:
        for r in range(res.num_probes):
            L = int(res.lengths[r])
            values.append(res.nodes[r, :L].numpy())
            run_ids.append(np.full(L, run))
            run += 1
    vals = np.concatenate(values)
    ids = np.concatenate(run_ids)
    order = np.argsort(-vals, kind="stable")
    vals, ids = vals[order], ids[order]
    if dedupe_rtol is not None:
        merged: list[float] = []
        start = 0
        n = vals.shape[0]
        while start < n:
            stop = start + 1
            while stop < n and vals[start] - vals[stop] <= dedupe_rtol * abs(vals[start]):
                stop += 1
            copies = int(np.bincount(ids[start:stop]).max())
            merged.extend([float(vals[start:stop].mean())] * copies)
            start = stop
        vals = np.asarray(merged)
    if k > vals.shape[0]:
        raise ValueError(f"k={k} exceeds the {vals.shape[0]} pooled Ritz values")
    return torch.from_numpy(vals[:k].copy())
