"""The pruned Clauset xmin scan of many data sets at once, natively: bootstrap refits in one call.

CPU with OpenMP over rows, CUDA with one block per row.

Row ``r`` of ``x`` [R, N] is an ascending data set. Its candidate cutoffs are the first indices of
every distinct value but the two largest (the default of :func:`fastspec.ops.powerlaw_scan` and
of the ``powerlaw`` package); a candidate is valid when its exponent lies in ``alpha_range``. Per
row the op returns the valid candidate of minimal Kolmogorov-Smirnov distance, with

    alpha = 1 + n_t / sum_{j >= s} log(x_j / x_s)                (Clauset et al. 2009, eq. 3.1)
    ks    = max_{j >= s} |F*(x_j) - Fhat(x_j)|                   (the ``powerlaw`` convention)

exactly as ``powerlaw_scan(x[r], prune=True, alpha_range=...)`` finds it (bitwise on CPU), and
the smallest index on ties.

References: A. Clauset, C. R. Shalizi, M. E. J. Newman, *Power-law distributions in empirical
data*, SIAM Review 51 (2009), section 4.1; J. Alstott et al., PLoS ONE 9 (2014).
Twin: :func:`fastspec.reference.powerlaw_scan_batch`.
"""

from __future__ import annotations

import math

import torch

from fastspec.ops._dispatch import FLOAT_DTYPES, call, check_tensor, run_op
from fastspec.ops.powerlaw_scan import check_alpha_range

__all__ = ["powerlaw_scan_batch", "scan_batch_inputs"]


def scan_batch_inputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's inputs of ascending rows ``x`` [R, N].

    Returns:
        ``log x`` [R, N], ``run_start`` [R, N] (first index of each value in its row) and the
        float64 suffix sums of ``log x`` along each row [R, N].
    """
    logx = torch.log(x)
    n = x.shape[1]
    idx = torch.arange(n, device=x.device).expand_as(x)
    is_start = torch.ones_like(x, dtype=torch.bool)
    is_start[:, 1:] = x[:, 1:] != x[:, :-1]
    run_start = torch.cummax(torch.where(is_start, idx, torch.zeros_like(idx)), dim=1).values
    tail_logsum = torch.flip(torch.cumsum(torch.flip(logx.double(), (1,)), 1), (1,))
    return logx, run_start.contiguous(), tail_logsum.contiguous()


@torch.library.custom_op("fastspec::powerlaw_scan_batch", mutates_args=())
def _powerlaw_scan_batch(
    logx: torch.Tensor,
    run_start: torch.Tensor,
    tail_logsum: torch.Tensor,
    alpha_lo: float,
    alpha_hi: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    R, N = logx.shape
    xmin_index = torch.empty(R, dtype=torch.int64, device=logx.device)
    alpha = torch.empty(R, dtype=logx.dtype, device=logx.device)
    ks = torch.empty(R, dtype=logx.dtype, device=logx.device)
    if R:
        call(
            "powerlaw_scan_batch",
            logx.device,
            {
                "logx": logx,
                "run_start": run_start,
                "tail_logsum": tail_logsum,
                "xmin_index": xmin_index,
                "alpha": alpha,
                "ks": ks,
                "rows": R,
                "n": N,
                "alpha_lo": alpha_lo,
                "alpha_hi": alpha_hi,
                "dtype": logx.dtype,
            },
        )
    return xmin_index, alpha, ks


@_powerlaw_scan_batch.register_fake
def _(logx, run_start, tail_logsum, alpha_lo, alpha_hi):
    R = logx.shape[0]
    return logx.new_empty(R, dtype=torch.int64), logx.new_empty(R), logx.new_empty(R)


def powerlaw_scan_batch(
    x: torch.Tensor, *, alpha_range: tuple[float, float] = (1.0, math.inf)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The minimum-KS power-law fit of every row of ``x`` over its default candidate cutoffs.

    Args:
        x: [R, N] rows of ascending, positive, finite data (N >= 2); float32 or float64; cpu or
            cuda.
        alpha_range: open interval of valid exponents; other candidates are skipped.

    Returns:
        ``(xmin_index [R] int64, alpha [R], ks [R])`` in the dtype of ``x``: the first index in
        its row of the chosen cutoff (the smallest on ties), its exponent and KS distance; -1,
        NaN and +inf for a row without a valid candidate (fewer than three distinct values, or no
        exponent in ``alpha_range``).
    """
    x = check_tensor("x", x, dtypes=FLOAT_DTYPES, ndim=2, min_numel=0)
    if x.shape[1] < 2:
        raise ValueError(f"x must have at least 2 columns (data points per row), got {x.shape[1]}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite (no NaN or inf)")
    if not bool((x > 0).all()):
        raise ValueError("x must be positive: a power law is defined on x > 0")
    if not bool((x[:, 1:] >= x[:, :-1]).all()):
        raise ValueError("x must have every row sorted ascending (use torch.sort(x, dim=1))")
    lo, hi = check_alpha_range(alpha_range)
    logx, run_start, tail_logsum = scan_batch_inputs(x)
    return run_op(_powerlaw_scan_batch, logx, run_start, tail_logsum, lo, hi)
