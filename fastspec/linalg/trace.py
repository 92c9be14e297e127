"""Randomised trace estimation: Hutchinson and Hutch++.

- M. F. Hutchinson, *A stochastic estimator of the trace of the influence matrix for Laplacian
  smoothing splines*, Commun. Statist. Simul. Comput. 18(3), 1989: ``tr(A) ≈ (1/n) Σ zᵢᵀ A zᵢ``
  with Rademacher ``zᵢ``; variance per probe ``2(‖A‖_F² − Σ A_ii²)`` for symmetric ``A``.
- R. A. Meyer, C. Musco, C. Musco & D. P. Woodruff, *Hutch++: optimal stochastic trace
  estimation*, SOSA 2021: a third of the products sketch the top range ``Q = orth(A S)``, a third
  compute ``tr(QᵀAQ)`` exactly, and a third run Hutchinson on ``(I − QQᵀ) A (I − QQᵀ)``. The
  error falls as ``1/n`` instead of ``1/√n`` when the spectrum decays (Hessians).

Neither estimator needs symmetry. Probes are processed in blocks of ``block_size`` columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from fastspec._checks import AsDict, check_choice, check_int
from fastspec.linalg._random import make_generator
from fastspec.linalg.operator import LinearOperator, aslinearoperator
from fastspec.linalg.sharded import Sharding, run_group

__all__ = ["TraceResult", "trace"]

_METHODS = ("hutch++", "hutchinson")


@dataclass(frozen=True)
class TraceResult(AsDict):
    """A trace estimate.

    Attributes:
        estimate: the estimate of ``tr(A)``.
        std_error: its standard error, from the spread of the Hutchinson terms (for Hutch++,
            of the terms on the deflated operator; the ``tr(QᵀAQ)`` part is exact given ``Q``).
        num_matvecs: operator-vector products used.
        method: ``"hutch++"`` or ``"hutchinson"``.
        num_probes: Hutchinson probes behind ``std_error``.
    """

    estimate: float
    std_error: float
    num_matvecs: int
    method: str
    num_probes: int


def _quadratic_forms(
    A: LinearOperator,
    n: int,
    *,
    gen: torch.Generator,
    block_size: int,
    Q: torch.Tensor | None,
    sh: Sharding,
) -> torch.Tensor:
    """``zᵢᵀ A zᵢ`` for ``n`` Rademacher ``zᵢ`` (projected by ``I − QQᵀ`` when ``Q`` is given)."""
    out = []
    for c0 in range(0, n, block_size):
        c = min(block_size, n - c0)
        Z = sh.rademacher(gen, c, dtype=A.dtype, device=A.device)
        if Q is not None:
            Z = torch.addmm(Z, Q, sh.sum(Q.mT @ Z), alpha=-1.0)
        out.append(sh.sum((Z * sh.apply(A, Z)).sum(dim=0)).to(torch.float64))
    return torch.cat(out)


def trace(
    op: Any,
    *,
    method: Literal["hutch++", "hutchinson"] = "hutch++",
    num_matvecs: int,
    seed: int | None = None,
    block_size: int | None = None,
    process_group: Any = None,
) -> TraceResult:
    """Estimate ``tr(A)`` from matrix-vector products.

    Args:
        op: a square operator (anything :func:`~fastspec.linalg.aslinearoperator` takes).
        method: ``"hutch++"`` (default; needs ``num_matvecs >= 4``) or ``"hutchinson"``
            (needs ``num_matvecs >= 2``).
        num_matvecs: total operator-vector products. Hutch++ uses ``s = num_matvecs // 3`` for
            the sketch, ``s`` for ``tr(QᵀAQ)`` and the rest for the deflated Hutchinson part.
        seed: seed of the Rademacher probes; ``None`` draws a fresh one.
        block_size: probes per operator call (default ``min(num_matvecs, 32)``); Hutch++'s
            sketch keeps ``s`` vectors of length ``P`` in memory.
        process_group: a ``torch.distributed`` group to run over (default: ``op``'s, else the
            default group of more than one rank; see :func:`~fastspec.linalg.eigsh`). Each rank
            keeps its slice of the probes and of the sketch; the probes are drawn whole as on
            one process, so a seed gives the same estimate (up to rounding) on any number of
            ranks.

    Returns:
        A :class:`TraceResult`.

    Raises:
        TypeError: bad argument types or an unsupported operator dtype.
        ValueError: unknown ``method``, too few ``num_matvecs``, or NaN/inf from the operator.
    """
    A = aslinearoperator(op)
    if A.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"op.dtype must be float32 or float64 for trace, got {A.dtype}")
    method = check_choice("method", method, _METHODS)  # type: ignore[assignment]
    # a standard error needs two Hutchinson probes (Hutch++: after its sketch and exact part)
    num_matvecs = check_int("num_matvecs", num_matvecs, minimum=4 if method == "hutch++" else 2)
    block_size = check_int("block_size", block_size, minimum=1, none_ok=True)
    if block_size is None:
        block_size = min(num_matvecs, 32)
    check_int("seed", seed, none_ok=True)
    P = A.shape[0]
    sh = Sharding(P, run_group(A, process_group))
    sh.agree(
        "trace",
        dtype=str(A.dtype),
        method=method,
        num_matvecs=num_matvecs,
        seed=seed,
        block_size=block_size,
        local_matmat=callable(getattr(A, "local_matmat", None)),
    )
    gen = make_generator(sh.shared_seed(seed))
    n = int(num_matvecs)
    exact = torch.zeros((), dtype=torch.float64, device=A.device)
    Q = None
    if method == "hutchinson":
        n_probes = n
    else:
        s = n // 3
        n_probes = n - 2 * s
        S = sh.rademacher(gen, s, dtype=A.dtype, device=A.device)
        Y = torch.cat(
            [sh.apply(A, S[:, c0 : c0 + block_size]) for c0 in range(0, s, block_size)],
            dim=1,
        )
        del S
        Q, _ = sh.qr(Y)
        del Y
        for c0 in range(0, s, block_size):
            Qc = Q[:, c0 : c0 + block_size]
            quad = sh.sum((Qc * sh.apply(A, Qc.contiguous())).sum())
            exact = exact + quad.to(torch.float64)
    terms = _quadratic_forms(A, n_probes, gen=gen, block_size=block_size, Q=Q, sh=sh)
    vals = torch.cat([exact.reshape(1), terms]).cpu().numpy()
    if not np.isfinite(vals).all():
        raise ValueError("op returned NaN or inf; trace needs a finite operator")
    t = vals[1:]
    estimate = float(vals[0] + t.mean())
    std_error = float(t.std(ddof=1) / math.sqrt(t.shape[0]))
    return TraceResult(
        estimate=estimate,
        std_error=std_error,
        num_matvecs=n,
        method=str(method),
        num_probes=n_probes,
    )
