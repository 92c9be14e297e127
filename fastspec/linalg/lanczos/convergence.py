"""When to check, what counts as converged, and when a converged run may stop.

*The check.* The active projected matrix ``T`` is diagonalised, ``T = S diag(θ) Sᵀ``; the
residual estimate of Ritz pair ``i`` is ``‖C S[c0:m, i]‖`` (the coupling of the pending block to
the active basis, Lanczos' classical bound). A pair is *converged* when its estimate is below
``_SAFETY · tol · max(|θ|, √ε‖A‖)`` and *lockable* when it is below that times the smallest
wanted ``max(|θ|, √ε‖A‖)`` (hard locking neglects a locked vector's coupling to the others,
which then enters their residuals; with power-law spectra the top pairs would otherwise spoil
the small ones).

*Cadence.* A check costs an ``eigh`` of the ``m × m`` projected matrix (about ``10 m³`` flops),
a block step the basis sweeps of the orthogonalisation (taken as four, ``8 P n B``). Checks are
spaced so that they cost at most ``_CHECK_COST_SHARE`` of the steps between them, and at least
``_MIN_CHECKS_PER_CYCLE`` happen per restart cycle (:func:`check_interval`).

*Confirmation.* A block Krylov space holds at most ``B`` vectors of one eigenspace. When the
space became invariant (breakdown), when ``B >= 2`` equal values sit among the wanted ones, or
whenever ``B = 1`` (one start vector shows one copy of every eigenvalue, whatever its
multiplicity), a wanted eigenvalue may have copies the space never saw. Such runs are confirmed by a fresh
start (:func:`~fastspec.linalg.lanczos.restart_locking.fresh_start`): every wanted pair is
locked and a new random block, orthogonal to them, is iterated until its most wanted Ritz pair
outside the wanted set has converged. If that brings no new wanted pair, the wanted set is
complete; otherwise the confirmation is repeated (:func:`confirm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fastspec.linalg.lanczos.ordering import priority
from fastspec.linalg.lanczos.result import EigshProgress
from fastspec.linalg.lanczos.state import LanczosState

__all__ = ["Check", "check", "check_interval", "confirm"]

#: a Ritz pair counts as converged inside the iteration when its residual estimate is below
#: ``_SAFETY * tol``; the margin absorbs rounding so that the recomputed residual is below ``tol``
_SAFETY = 0.5
#: convergence checks (one eigh of the projected matrix each) may cost this share of the block
#: steps between them; at least this many checks happen per restart cycle
_CHECK_COST_SHARE = 0.25
_MIN_CHECKS_PER_CYCLE = 4


@dataclass
class Check:
    """Outcome of one convergence check on the active projected matrix."""

    theta: np.ndarray  # [m] active Ritz values (float64, host)
    S: torch.Tensor  # [m, m] their eigenvectors (float64)
    conv: np.ndarray  # [m] bool, estimate <= _SAFETY * tol * scale
    lockable: np.ndarray  # [m] bool, estimate <= _SAFETY * tol * (smallest wanted scale)
    union_wanted: np.ndarray  # indices into concat(locked, active): the k most wanted
    done: bool
    num_converged: int
    top_unwanted_converged: bool  # the most wanted active Ritz pair outside the wanted set


def check(st: LanczosState) -> Check:
    """Diagonalise the active projected matrix and judge every Ritz pair (one host read)."""
    s = st.s
    m = s.m
    theta_d, S = torch.linalg.eigh(st.T[:m, :m])
    assert s.C is not None
    est_d = torch.linalg.vector_norm(s.C @ S[s.c0 : m], dim=0)
    host = torch.stack([theta_d, est_d]).cpu().numpy()
    theta, est = host[0], host[1]
    if not np.isfinite(theta).all():
        raise ValueError("op returned NaN or inf (non-finite projected matrix)")
    s.anorm = max(s.anorm, float(np.abs(theta).max(initial=0.0)))
    scale = np.maximum(np.abs(theta), math.sqrt(st.eps) * s.anorm)
    conv = est <= _SAFETY * st.tol * scale
    nl = s.n_lock
    union = np.concatenate([s.locked_theta, theta])
    wanted = priority(union, st.which)[: st.k]
    active_wanted = wanted[wanted >= nl] - nl
    # lock only below what the most demanding wanted pair tolerates (see the module docstring)
    floor = float(np.maximum(np.abs(union[wanted]), math.sqrt(st.eps) * s.anorm).min())
    lockable = est <= _SAFETY * st.tol * np.minimum(scale, floor)
    num_conv = int((wanted < nl).sum() + conv[active_wanted].sum())
    enough = union.shape[0] >= st.k and m >= st.k - nl + st.b
    done = bool(enough and conv[active_wanted].all())
    is_wanted = np.zeros(m, dtype=bool)
    is_wanted[active_wanted] = True
    unwanted = [int(i) for i in priority(theta, st.which) if not is_wanted[i]]
    top_unwanted_converged = bool(unwanted and conv[unwanted[0]])
    st.report(
        EigshProgress(
            num_matvecs=s.num_matvecs,
            num_converged=num_conv,
            k=st.k,
            num_restarts=s.num_restarts,
            basis_size=nl + m + st.b,
        )
    )
    return Check(theta, S, conv, lockable, wanted, done, num_conv, top_unwanted_converged)


def check_interval(st: LanczosState) -> int:
    """Block steps between convergence checks (see *Cadence* in the module docstring)."""
    s, b = st.s, st.b
    steps = max(1, (st.M - s.n_lock - s.m - b) // b)
    m = st.M - s.n_lock - b  # projected size near the end of the cycle
    step_cost = 8.0 * st.P * (st.M - b) * b
    by_cost = math.ceil(10.0 * m**3 / (_CHECK_COST_SHARE * step_cost))
    return max(1, min(by_cost, math.ceil(steps / _MIN_CHECKS_PER_CYCLE)))


def confirm(st: LanczosState, ck: Check) -> Literal["stop", "iterate", "fresh-start"]:
    """What a run whose wanted pairs all converged does next (see *Confirmation* above).

    Returns:
        ``"stop"`` when the wanted set is complete, ``"iterate"`` to go on (some wanted pair is
        not lockable yet, or a confirmation start is under way), ``"fresh-start"`` to lock every
        wanted pair and confirm from a fresh random block.
    """
    s = st.s
    union = np.concatenate([s.locked_theta, ck.theta])
    vals = np.sort(union[ck.union_wanted])
    scale = np.maximum(np.abs(vals), math.sqrt(st.eps) * s.anorm)
    may_hide_copies = st.b == 1 or _full_cluster(st.b, st.tol, vals, scale)
    if not s.broke and s.verify_values is None and not may_hide_copies:
        return "stop"
    prev = s.verify_values
    same = (
        prev is not None
        and prev.shape == vals.shape
        and bool((np.abs(prev - vals) <= st.tol * scale).all())
    )
    if same and ck.top_unwanted_converged:
        return "stop"
    nl = s.n_lock
    active_wanted = ck.union_wanted[ck.union_wanted >= nl] - nl
    if not ck.lockable[active_wanted].all():
        return "iterate"  # iterate on until every wanted pair can be locked
    if not same and s.num_restarts < st.max_restarts:
        s.verify_values = vals
        return "fresh-start"
    return "iterate"


def _full_cluster(b: int, tol: float, vals: np.ndarray, scale: np.ndarray) -> bool:
    """Whether ``B >= 2`` equal (within ``tol``) values sit among the sorted wanted ``vals``.

    One start block shows at most ``B`` copies of an eigenvalue, so ``B`` copies are the
    signature of a possibly larger multiplicity.
    """
    if vals.shape[0] < b:
        return False
    same = np.diff(vals) <= tol * scale[1:]
    run = 1
    for eq in same:
        run = run + 1 if eq else 1
        if run >= b:
            return True
    return False
