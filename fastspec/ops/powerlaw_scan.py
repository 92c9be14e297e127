"""The Clauset xmin scan of a continuous power law, natively (CPU with OpenMP, CUDA).

For every candidate cutoff ``x[s]`` of the ascending data ``x`` (``s`` the first index of its
value, tail size ``n_t = N - s``) it returns the maximum-likelihood exponent and the
Kolmogorov-Smirnov distance of the tail, in the ``powerlaw`` package's convention:

    alpha = 1 + n_t / sum_{j >= s} log(x_j / x_s)                (Clauset et al. 2009, eq. 3.1)
    ks    = max_{j >= s} |F*(x_j) - Fhat(x_j)|,  F*(x) = 1 - (x / x_s)^(1 - alpha),
            Fhat(x_j) = #{tail values < x_j} / n_t

References: A. Clauset, C. R. Shalizi, M. E. J. Newman, *Power-law distributions in empirical
data*, SIAM Review 51 (2009); J. Alstott, E. Bullmore, D. Plenz, *powerlaw: a Python package for
analysis of heavy-tailed distributions*, PLoS ONE 9 (2014). Twin: :mod:`fastspec.reference`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fastspec._checks import check_bool, check_float
from fastspec.ops._dispatch import FLOAT_DTYPES, call, check_tensor, run_op

__all__ = ["check_alpha_range", "powerlaw_scan", "scan_inputs"]


def scan_inputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's inputs of ascending data ``x`` [N]; shared with the reference twin.

    Returns:
        ``log x`` [N], ``run_start`` [N] (first index of each value) and the float64 suffix
        sums of ``log x`` [N + 1].
    """
    logx = torch.log(x)
    _, counts = torch.unique_consecutive(x, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    run_start = torch.repeat_interleave(starts, counts)
    suffix = torch.zeros(x.numel() + 1, dtype=torch.float64, device=x.device)
    suffix[:-1] = torch.flip(torch.cumsum(torch.flip(logx.double(), (0,)), 0), (0,))
    return logx, run_start, suffix


def default_candidates(x: torch.Tensor) -> torch.Tensor:
    """First index of every distinct value but the two largest, as the ``powerlaw`` package scans.

    Its candidates are the distinct values below max(x), less the largest of those.
    """
    _, counts = torch.unique_consecutive(x, return_counts=True)
    return (torch.cumsum(counts, 0) - counts)[:-2]


@torch.library.custom_op("fastspec::powerlaw_scan", mutates_args=())
def _powerlaw_scan(
    logx: torch.Tensor,
    run_start: torch.Tensor,
    candidates: torch.Tensor,
    tail_logsum: torch.Tensor,
    alpha_lo: float,
    alpha_hi: float,
    prune: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    C = candidates.numel()
    alpha = torch.empty(C, dtype=logx.dtype, device=logx.device)
    ks = torch.empty(C, dtype=logx.dtype, device=logx.device)
    best = torch.full((1,), math.inf, dtype=torch.float32, device=logx.device)
    if C:
        call(
            "powerlaw_scan",
            logx.device,
            {
                "logx": logx,
                "run_start": run_start,
                "candidates": candidates,
                "tail_logsum": tail_logsum,
                "alpha": alpha,
                "ks": ks,
                "best": best,
                "n": logx.numel(),
                "num_candidates": C,
                "alpha_lo": alpha_lo,
                "alpha_hi": alpha_hi,
                "prune": prune,
                "dtype": logx.dtype,
            },
        )
        if prune:  # which losers were abandoned depends on scheduling: keep only the minimisers
            ks = torch.where(ks == ks.min(), ks, torch.full_like(ks, math.inf))
    return alpha, ks


@_powerlaw_scan.register_fake
def _(logx, run_start, candidates, tail_logsum, alpha_lo, alpha_hi, prune):
    C = candidates.shape[0]
    return logx.new_empty(C), logx.new_empty(C)


def powerlaw_scan(
    x: torch.Tensor,
    candidates: torch.Tensor | None = None,
    *,
    prune: bool = False,
    alpha_range: tuple[float, float] = (1.0, math.inf),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exponent and KS distance of a power-law tail above every candidate ``xmin``.

    Args:
        x: [N] ascending, positive, finite data; float32 or float64; cpu or cuda.
        candidates: [C] int64 ascending indices into ``x``, each the first index of its value and
            leaving at least two points in the tail. Default: every distinct value but the two
            largest (the ``powerlaw`` package's candidates).
        prune: find the minimum-KS candidate without computing every distance. Candidates whose
            alpha lies outside ``alpha_range`` (open interval) are skipped, and the returned ``ks``
            is +inf everywhere except at the candidates achieving the minimum (exact there).
        alpha_range: the valid exponents when ``prune`` is set.

    Returns:
        ``(alpha [C], ks [C])`` in the dtype of ``x``.
    """
    x = check_tensor("x", x, dtypes=FLOAT_DTYPES, ndim=1, min_numel=2)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite (no NaN or inf)")
    if not bool((x > 0).all()):
        raise ValueError("x must be positive: a power law is defined on x > 0")
    if not bool((x[1:] >= x[:-1]).all()):
        raise ValueError("x must be sorted ascending (use torch.sort)")
    prune = check_bool("prune", prune)
    lo, hi = check_alpha_range(alpha_range)
    logx, run_start, suffix = scan_inputs(x)
    if candidates is None:
        candidates = default_candidates(x)
    else:
        candidates = check_tensor(
            "candidates", candidates, dtypes=(torch.int64,), ndim=1, device=x.device, min_numel=0
        )
        _check_candidates(candidates, run_start, x.numel())
    return run_op(_powerlaw_scan, logx, run_start, candidates, suffix[candidates], lo, hi, prune)


def check_alpha_range(alpha_range: Any) -> tuple[float, float]:
    """``alpha_range`` as floats ``(low, high)`` with ``low < high``; ``high`` may be ``inf``.

    Raises:
        TypeError: not a pair of real numbers.
        ValueError: ``low`` not finite, ``high`` NaN or ``-inf``, or ``low >= high``.
    """
    if not isinstance(alpha_range, (tuple, list)) or len(alpha_range) != 2:
        raise TypeError(f"alpha_range must be a pair (low, high), got {alpha_range!r}")
    low, high = alpha_range
    lo = check_float("alpha_range[0]", low)
    unbounded = isinstance(high, (float, np.floating)) and high == math.inf
    hi = math.inf if unbounded else check_float("alpha_range[1]", high)
    if not lo < hi:
        raise ValueError(f"alpha_range must satisfy low < high, got {alpha_range!r}")
    return lo, hi


def _check_candidates(candidates: torch.Tensor, run_start: torch.Tensor, n: int) -> None:
    if candidates.numel() == 0:
        return
    if bool((candidates < 0).any()) or bool((candidates > n - 2).any()):
        raise ValueError(
            f"candidates must lie in [0, N - 2] = [0, {n - 2}] (a tail needs 2 points)"
        )
    if bool((candidates[1:] <= candidates[:-1]).any()):
        raise ValueError("candidates must be strictly ascending")
    if bool((run_start[candidates] != candidates).any()):
        raise ValueError("candidates must be first indices of their values in x (run starts)")
