"""Data sets and independent oracles shared by the fastspec.stats tests: plain numpy loops (the
pure-numpy twins of the fast paths) and a quiet wrapper around the ``powerlaw`` package."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import special, stats

# -- data sets -------------------------------------------------------------------------------


def pareto_above_lognormal(
    n: int, *, seed: int, alpha: float = 2.5, xmin: float = 3.0, body_frac: float = 0.7
) -> np.ndarray:
    """A Pareto(alpha) tail above xmin under a lognormal body (unsorted)."""
    g = np.random.default_rng(seed)
    body = g.lognormal(0.0, 0.5, size=int(n * body_frac))
    tail = xmin * (1.0 - g.random(n - body.size)) ** (-1.0 / (alpha - 1.0))
    return g.permutation(np.concatenate([body, tail]))


def rank_law(k: int, s: float) -> np.ndarray:
    """The exact rank law lambda_i = i^-s, i = 1..k (descending)."""
    return np.arange(1, k + 1, dtype=np.float64) ** (-s)


def noisy_spectrum(k: int, *, s: float, seed: int, bulk: int = 200) -> np.ndarray:
    """A real-looking spectrum: a noisy rank-law top part, a small positive bulk, a few negative
    eigenvalues, shuffled."""
    g = np.random.default_rng(seed)
    top = np.arange(1, k + 1) ** (-s) * np.exp(0.05 * g.standard_normal(k))
    low = g.uniform(0.0, top.min(), size=bulk) * 0.5
    neg = -g.uniform(0.0, 1e-3, size=20)
    return g.permutation(np.concatenate([top, low, neg]))


def discrete_tail_above_uniform(
    n_tail: int, *, seed: int, alpha: float = 2.5, xmin: int = 15, n_body: int = 1400
) -> np.ndarray:
    """Integers: a Zipf(alpha) tail conditioned on x >= xmin (scipy.stats.zipf), above a uniform
    body on 1..xmin-1."""
    g = np.random.default_rng(seed)
    tail: list[np.ndarray] = []
    while sum(t.size for t in tail) < n_tail:
        z = stats.zipf.rvs(alpha, size=20 * n_tail, random_state=g)
        tail.append(z[z >= xmin])
    t = np.concatenate(tail)[:n_tail]
    body = g.integers(1, xmin, size=n_body)
    return g.permutation(np.concatenate([body, t])).astype(np.float64)


# -- plain numpy oracles ---------------------------------------------------------------------


def candidates(x: np.ndarray) -> np.ndarray:
    """The powerlaw package's candidate cutoffs: distinct values below max(x), less the largest."""
    return np.unique(x[x < x.max()])[:-1]


def ks_loop(tail: np.ndarray, cdf: Any) -> float:
    """max |F*(x) - #{tail < x}/n| over the tail, one value at a time."""
    tail = np.sort(tail)
    n = tail.size
    d = 0.0
    for i, v in enumerate(tail):
        below = i
        while below > 0 and tail[below - 1] == v:
            below -= 1
        d = max(d, abs(cdf(v) - below / n))
    return d


def continuous_fit_at(x: np.ndarray, xmin: float) -> tuple[float, float]:
    """(alpha, D) of the continuous fit above xmin, by the textbook formulas."""
    tail = np.sort(x[x >= xmin])
    alpha = 1.0 + tail.size / np.sum(np.log(tail / xmin))
    emp = np.searchsorted(tail, tail, side="left") / tail.size
    fit = 1.0 - (tail / xmin) ** (1.0 - alpha)
    return float(alpha), float(np.max(np.abs(fit - emp)))


def numpy_scan(
    x: np.ndarray, alpha_range: tuple[float, float] = (1.0, math.inf), cands: Any = None
) -> dict[str, Any]:
    """Exhaustive continuous xmin scan with a loop over candidates: the reference twin of the
    native scan + selection."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    xmins = candidates(x) if cands is None else np.asarray(cands)
    alphas = np.empty(xmins.size)
    ks = np.empty(xmins.size)
    for i, c in enumerate(xmins):
        alphas[i], ks[i] = continuous_fit_at(x, c)
    valid = (alphas > alpha_range[0]) & (alphas < alpha_range[1])
    best = int(np.argmin(np.where(valid, ks, np.inf)))
    return {"xmins": xmins, "alphas": alphas, "ks": ks, "valid": valid, "best": best}


def discrete_loglik(tail: np.ndarray, alpha: float, xmin: float) -> float:
    return float(-alpha * np.sum(np.log(tail)) - tail.size * np.log(special.zeta(alpha, xmin)))


# -- the powerlaw package ---------------------------------------------------------------------


def package_fit(data: np.ndarray, **kwargs: Any) -> Any:
    """``powerlaw.Fit(data, verbose=0, **kwargs)`` with its warnings silenced."""
    import powerlaw

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return powerlaw.Fit(np.asarray(data, dtype=np.float64), verbose=0, **kwargs)


def quietly(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)
