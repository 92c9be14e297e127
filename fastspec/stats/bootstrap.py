"""Goodness of fit of a power law.

the semi-parametric bootstrap p-value of Clauset, Shalizi & Newman (2009, section 4.1).

Each replicate has as many points as the data: n_tail' ~ Binomial(n, n_tail / n) of them drawn
from the fitted power law above xmin, the other n - n_tail' drawn with replacement from the data
below xmin. The replicate is refitted exactly as the data were (xmin searched again over the same
kind of candidates, with the same alpha_range and estimator, or held at a fixed xmin), and
p = the fraction of replicates whose KS distance is >= the observed one. About 2500 replicates
give p to +-0.01 (their eq. 4.2). Continuous refits over the default candidates (a pruned scan)
go in chunks of replicates through the batched native scan
(:func:`fastspec.ops.powerlaw_scan_batch`: one call refits a whole chunk, OpenMP over replicates);
other refits (discrete data, a fixed xmin, explicit candidates or grids, exhaustive scans) run one
replicate at a time (:func:`fastspec.stats.powerlaw.fit_ks`). Both give the same KS distances.

Replicate i is generated from ``SeedSequence(seed).spawn(n_boot)[i]``, so the result depends on
the seed only, not on ``workers``. References: A. Clauset, C. R. Shalizi, M. E. J. Newman (2009),
SIAM Review 51; J. Alstott et al. (2014), PLoS ONE 9.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from fastspec._checks import AsDict, check_int
from fastspec.stats import continuous as cont
from fastspec.stats import discrete as disc

if TYPE_CHECKING:
    from fastspec.stats.powerlaw import FitOptions, PowerLaw

_CHUNK_ROWS = 128  # replicates per batched refit, at most
# a batched refit holds about 100 bytes per point of each replicate (draws, sorted rows, log x,
# run starts, suffix sums and their temporaries): rows per chunk are capped to fit this budget
_CHUNK_BYTES = 512 << 20
_BYTES_PER_POINT = 100

__all__ = ["GofResult", "gof_pvalue"]


@dataclass(frozen=True, eq=False)
class GofResult(AsDict):
    """The bootstrap goodness-of-fit test.

    Attributes:
        p: fraction of fitted replicates with KS distance >= ``ks`` (the power law is ruled out
            when p <= 0.1, Clauset et al.).
        ks: the observed KS distance.
        n_boot: replicates drawn.
        n_failed: replicates that could not be refitted (left out of p).
        ks_boot: [n_boot] the replicates' KS distances (NaN where refitting failed).
    """

    p: float
    ks: float
    n_boot: int
    n_failed: int
    ks_boot: np.ndarray = field(repr=False, metadata={"serialize": False})


def gof_pvalue(
    fit: PowerLaw,
    n_boot: int = 2500,
    *,
    seed: int | np.random.SeedSequence | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> GofResult:
    """Semi-parametric bootstrap p-value of a power-law fit (Clauset et al. 2009, sec. 4.1).

    Args:
        fit: a :class:`~fastspec.stats.PowerLaw` from :meth:`PowerLaw.fit`.
        n_boot: number of replicates (2500 for p to within +-0.01).
        seed: seed of the replicates (an int or a ``numpy.random.SeedSequence``); None draws
            fresh entropy.
        workers: threads generating and refitting replicates concurrently on the per-replicate
            path (the native scan releases the GIL; the default 2:
            ``benchmarks/results/stats_vs_powerlaw.md``, "Bootstrap workers"). The batched path
            (continuous data, default candidates) parallelises over replicates with OpenMP and
            draws with ``workers`` threads. The result does not depend on it.
        progress: called as ``progress(done, n_boot)`` after each chunk of replicates (each
            replicate on the per-replicate path).

    Returns:
        The p-value and the replicate KS distances.
    """
    n_boot = check_int("n_boot", n_boot, minimum=1)
    workers = check_int("workers", workers, minimum=1)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable (done, total) or None, got {progress!r}")
    if fit.options is None or fit.data.size != fit.n:
        raise ValueError("fit must come from PowerLaw.fit (it carries its data and options)")
    opts = fit.options
    x = fit.data
    n = x.size
    body = x[: n - fit.n_tail]
    p_tail = fit.n_tail / n
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    seeds = root.spawn(n_boot)

    def draw(ss: np.random.SeedSequence) -> np.ndarray:  # [n] one replicate, unsorted
        rng = np.random.default_rng(ss)
        nt = int(rng.binomial(n, p_tail))
        if fit.discrete:
            tail = disc.sample(nt, fit.alpha, fit.xmin, rng)
        else:
            tail = cont.sample(nt, fit.alpha, fit.xmin, rng)
        head = body[rng.integers(0, body.size, size=n - nt)] if n > nt else body[:0]
        return np.concatenate([head, tail])

    if batchable(opts):
        rows = max(1, min(_CHUNK_ROWS, _CHUNK_BYTES // (_BYTES_PER_POINT * n)))
        ks_boot = ks_boot_batched(draw, seeds, opts.alpha_range, workers, progress, rows)
    else:
        ks_boot = ks_boot_per_replicate(draw, seeds, opts, workers, progress)
    ok = np.isfinite(ks_boot)
    n_ok = int(ok.sum())
    p = float(np.mean(ks_boot[ok] >= fit.ks)) if n_ok else math.nan
    return GofResult(p=p, ks=fit.ks, n_boot=n_boot, n_failed=n_boot - n_ok, ks_boot=ks_boot)


def batchable(opts: FitOptions) -> bool:
    """Whether a replicate refit is what :func:`fastspec.ops.powerlaw_scan_batch` computes.

    a continuous pruned xmin scan over the default candidates.
    """
    return (
        not opts.discrete
        and opts.xmin is None
        and opts.xmin_candidates is None
        and not opts.exhaustive
    )


def ks_boot_per_replicate(
    draw: Callable[[np.random.SeedSequence], np.ndarray],
    seeds: list[np.random.SeedSequence],
    opts: FitOptions,
    workers: int,
    report: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """[n_boot] replicate KS distances, each replicate refitted on its own (NaN where it fails)."""
    from fastspec.stats.powerlaw import fit_ks

    def replicate(ss: np.random.SeedSequence) -> float:
        return fit_ks(np.sort(draw(ss)), opts)

    out = []
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for ks in pool.map(replicate, seeds) if pool is not None else map(replicate, seeds):
            out.append(ks)
            if report is not None:
                report(len(out), len(seeds))
    finally:
        if pool is not None:
            pool.shutdown()
    return np.array(out)


def ks_boot_batched(
    draw: Callable[[np.random.SeedSequence], np.ndarray],
    seeds: list[np.random.SeedSequence],
    alpha_range: tuple[float, float],
    workers: int,
    report: Callable[[int, int], None] | None = None,
    chunk: int = _CHUNK_ROWS,
) -> np.ndarray:
    """[n_boot] replicate KS distances, refitted ``chunk`` replicates per native call.

    NaN where a replicate has no valid candidate or non-finite draws; equal to the per-replicate
    path.
    """
    from fastspec.ops.powerlaw_scan_batch import powerlaw_scan_batch

    out = np.full(len(seeds), np.nan)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        for lo in range(0, len(seeds), chunk):
            part = seeds[lo : lo + chunk]
            rows = list(pool.map(draw, part)) if pool is not None else [draw(s) for s in part]
            block = np.sort(np.stack(rows), axis=1)  # [chunk, n]
            ok = np.isfinite(block).all(axis=1) & (block[:, 0] > 0)
            if ok.any():
                _, _, ks = powerlaw_scan_batch(torch.from_numpy(block[ok]), alpha_range=alpha_range)
                k = ks.numpy()
                out[lo + np.flatnonzero(ok)] = np.where(np.isfinite(k), k, np.nan)
            if report is not None:
                report(lo + len(part), len(seeds))
    finally:
        if pool is not None:
            pool.shutdown()
    return out
