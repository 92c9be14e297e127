"""Pure-torch twin of :func:`fastspec.ops.powerlaw_scan_batch` (the tests' oracle).

Every row is scanned exhaustively by :func:`fastspec.reference.powerlaw_scan`, then the first
valid minimiser is taken.
"""

from __future__ import annotations

import math

import torch

from fastspec.reference.powerlaw_scan import powerlaw_scan


def powerlaw_scan_batch(
    x: torch.Tensor, *, alpha_range: tuple[float, float] = (1.0, math.inf)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(xmin_index [R], alpha [R], ks [R])`` for ascending positive rows ``x`` [R, N]."""
    R = x.shape[0]
    lo, hi = alpha_range
    index = torch.full((R,), -1, dtype=torch.int64, device=x.device)
    alpha = torch.full((R,), math.nan, dtype=x.dtype, device=x.device)
    ks = torch.full((R,), math.inf, dtype=x.dtype, device=x.device)
    for r in range(R):
        row = x[r]
        first = torch.searchsorted(row, row, side="left")
        candidates = torch.unique(first)[:-2]
        if candidates.numel() == 0:
            continue
        a, d = powerlaw_scan(row, candidates)
        valid = (a.double() > lo) & (a.double() < hi)
        if not bool(valid.any()):
            continue
        c = int(torch.argmin(torch.where(valid, d, torch.full_like(d, math.inf))))
        index[r], alpha[r], ks[r] = candidates[c], a[c], d[c]
    return index, alpha, ks
