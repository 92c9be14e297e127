"""Pure-torch twin of :func:`fastspec.ops.powerlaw_scan` (the tests' oracle).

Same definitions, computed independently of the op's preprocessing: the empirical CDF by
``searchsorted``, the tail sums directly, and the [C, N] matrix of CDF differences in chunks.
"""

from __future__ import annotations

import torch


def powerlaw_scan(
    x: torch.Tensor, candidates: torch.Tensor | None = None, *, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha [C], ks [C])`` for ascending positive ``x`` [N]; no pruning, every ks exact."""
    n = x.numel()
    first = torch.searchsorted(x, x, side="left")  # [N] first index of each value
    if candidates is None:
        candidates = torch.unique(first)[:-2]
    logx = torch.log(x)
    logx64 = logx.double()
    nt = (n - candidates).to(torch.float64)
    tail = torch.stack([logx64[int(s) :].sum() for s in candidates]) if len(candidates) else nt
    alpha = 1.0 + nt / (tail - nt * logx64[candidates])
    j = torch.arange(n, device=x.device)
    ks = torch.empty(candidates.numel(), dtype=x.dtype, device=x.device)
    for lo in range(0, candidates.numel(), chunk):
        s = candidates[lo : lo + chunk, None]  # [c, 1]
        e = (1.0 - alpha[lo : lo + chunk, None]).to(x.dtype)
        inv = (1.0 / nt[lo : lo + chunk, None]).to(x.dtype)
        fit = 1.0 - torch.exp(e * (logx[None, :] - logx[s]))
        emp = (first[None, :] - s).to(x.dtype) * inv
        dev = torch.where(j[None, :] >= s, (fit - emp).abs(), torch.zeros_like(fit))
        ks[lo : lo + chunk] = dev.amax(dim=1)
    return alpha.to(x.dtype), ks
