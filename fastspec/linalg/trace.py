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
from fastspec.checkpoint import Resume, Store, as_checkpoint, check_resume, guard
from fastspec.linalg._random import make_generator
from fastspec.linalg.operator import aslinearoperator
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


def trace(
    op: Any,
    *,
    method: Literal["hutch++", "hutchinson"] = "hutch++",
    num_matvecs: int,
    seed: int | None = None,
    block_size: int | None = None,
    process_group: Any = None,
    checkpoint: Any = None,
    resume: Resume = False,
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

        checkpoint: a directory or a :class:`fastspec.checkpoint.Checkpoint`: the sketch, the
            terms so far and the generator are saved there at its interval and at the end,
            atomically (each rank its rows).
        resume: ``True`` continues from the checkpoint (it must exist), ``"if-present"`` when
            there is one; ``False`` starts, refusing a directory holding one (see
            :func:`fastspec.linalg.eigsh`). The result is bitwise that of an uninterrupted run.

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
    cp, resume = as_checkpoint(checkpoint), check_resume(resume)
    gen = make_generator(sh.shared_seed(seed))
    n, bs = int(num_matvecs), int(block_size)
    s = 0 if method == "hutchinson" else n // 3  # sketch and exact part of Hutch++
    n_probes = n - 2 * s
    dev = A.device
    exact = torch.zeros((), dtype=torch.float64, device=dev)
    terms = torch.zeros(n_probes, dtype=torch.float64, device=dev)
    S = sh.rademacher(gen, s, dtype=A.dtype, device=dev) if s else None
    Y = torch.empty(sh.n, s, dtype=A.dtype, device=dev) if s else None
    Q = None
    store, done = None, 0
    if cp is not None:
        settings = {"solver": "trace", "P": P, "dtype": str(A.dtype), "method": method,
                    "num_matvecs": n, "seed": seed, "block_size": bs}  # fmt: skip
        store = Store(cp, settings, resume=resume, group=sh.group)
        loaded = store.load()
        if loaded is not None:
            saved, meta = loaded
            done = int(meta["done"])
            gen.set_state(saved["gen"])
            exact, terms = saved["exact"].to(dev), saved["terms"].to(dev)
            if done < s:
                assert S is not None and Y is not None
                S, Y[:, :done] = saved["S"].to(dev), saved["Y"].to(dev)
            elif s:
                S, Y, Q = None, None, saved["Q"].to(dev)
    done0 = done
    with guard(store):
        while True:
            if store is not None and done > done0 and (done == n or store.due(done)):
                state = {"gen": gen.get_state(), "exact": exact, "terms": terms}
                if S is not None and Y is not None:
                    state.update(S=S, Y=Y[:, :done].contiguous())
                if Q is not None:
                    state["Q"] = Q
                store.save(state, {"done": done}, done)
            if done == n:
                break
            if done < s:  # the sketch Y = A S of Hutch++
                assert S is not None and Y is not None
                c = min(bs, s - done)
                Y[:, done : done + c] = sh.apply(A, S[:, done : done + c])
                done += c
                if done == s:
                    Q, _ = sh.qr(Y)
                    S = Y = None
            elif done < 2 * s:  # tr(QᵀAQ), exact given Q
                assert Q is not None
                c = min(bs, 2 * s - done)
                Qc = Q[:, done - s : done - s + c]  # Q has fewer columns than s when P < s
                if Qc.shape[1]:
                    quad = sh.sum((Qc * sh.apply(A, Qc.contiguous())).sum())
                    exact = exact + quad.to(torch.float64)
                done += c
            else:  # Hutchinson terms zᵀAz (on (I − QQᵀ) A (I − QQᵀ) for Hutch++)
                c0 = done - 2 * s
                c = min(bs, n_probes - c0)
                Z = sh.rademacher(gen, c, dtype=A.dtype, device=dev)
                if Q is not None:
                    Z = torch.addmm(Z, Q, sh.sum(Q.mT @ Z), alpha=-1.0)
                terms[c0 : c0 + c] = sh.sum((Z * sh.apply(A, Z)).sum(dim=0)).to(torch.float64)
                done += c
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
