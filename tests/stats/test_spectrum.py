"""fastspec.stats.fit_spectrum / fit_eigengaps / ks_critical_value: P1's method
against its calibration values, a plain numpy loop, scipy and the powerlaw package."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from stats_oracles import ks_loop, noisy_spectrum, package_fit, rank_law

from fastspec.cli import main
from fastspec.stats import fit_eigengaps, fit_spectrum, ks_critical_value, min_k
from fastspec.stats.spectrum import sup_ks_distance

# -- calibration (exact rank law lambda_k = k^-s, K = 1000) ----------------


def test_calibration_s1() -> None:
    f = fit_spectrum(rank_law(1000, 1.0))
    assert f.k == 1000 and f.xmin == pytest.approx(1e-3, rel=1e-12)
    assert round(f.beta, 4) == 2.0044
    assert round(f.beta_se, 4) == 0.0318
    assert round(f.s, 4) == 0.9956
    assert round(f.ks, 4) == 0.0016
    assert round(f.ks_critical, 5) == 0.04301
    assert f.is_power_law


@pytest.mark.parametrize(("s", "beta"), [(0.5, 3.0088), (2.0, 1.5022)])
def test_calibration_other_slopes(s: float, beta: float) -> None:
    f = fit_spectrum(rank_law(1000, s))
    assert round(f.beta, 4) == beta
    # the MLE of s is biased low by about log(2 pi K) / (2K) relative
    assert f.s / s - 1 == pytest.approx(-math.log(2 * math.pi * 1000) / 2000, abs=1e-3)


def test_critical_values() -> None:
    assert round(ks_critical_value(1000), 5) == 0.04301
    assert round(ks_critical_value(50), 5) == 0.19233
    for level, c in [(0.20, 1.07), (0.15, 1.14), (0.10, 1.22), (0.05, 1.36), (0.01, 1.63)]:
        assert ks_critical_value(400, alpha=level) == pytest.approx(c / 20, rel=1e-15)
    # the table approximates the Kolmogorov distribution's quantiles
    for level in (0.2, 0.1, 0.05, 0.01):
        assert ks_critical_value(1, alpha=level) == pytest.approx(
            stats.kstwobign.isf(level), abs=0.01
        )


# -- against independent oracles ---------------------------------------------------------------


@pytest.mark.parametrize("k", [50, 300, 1000])
def test_matches_numpy_loop(k: int) -> None:
    ev = noisy_spectrum(1000, s=0.9, seed=k)
    f = fit_spectrum(ev, k)
    top = sorted((v for v in ev if v > 0), reverse=True)[:k]
    xmin = top[-1]
    beta = 1 + k / sum(math.log(v / xmin) for v in top)
    assert f.xmin == xmin and f.lambda_max == top[0]
    assert f.beta == pytest.approx(beta, rel=1e-12)
    assert f.beta_se == pytest.approx((beta - 1) / math.sqrt(k), rel=1e-12)
    assert f.s == pytest.approx(1 / (beta - 1), rel=1e-12)
    # P1: empirical CDF (i - 1)/K at the i-th smallest value
    d = max(abs(1 - (v / xmin) ** (1 - beta) - i / k) for i, v in enumerate(reversed(top)))
    assert f.ks == pytest.approx(d, rel=1e-10)
    assert f.ks == pytest.approx(ks_loop(np.array(top), lambda v: 1 - (v / xmin) ** (1 - beta)))
    assert f.ks_critical == pytest.approx(1.36 / math.sqrt(k), rel=1e-15)
    assert f.is_power_law == (f.ks < f.ks_critical)


@pytest.mark.parametrize(("k", "seed"), [(50, 0), (1000, 1)])
def test_matches_powerlaw_package_fixed_xmin(k: int, seed: int) -> None:
    pytest.importorskip("powerlaw")
    ev = noisy_spectrum(1000, s=0.8, seed=seed)  # beta ~ 2.25: the package's analytic path
    f = fit_spectrum(ev, k)
    top = np.sort(ev)[::-1][:k]
    pkg = package_fit(top, xmin=top[-1])
    assert pkg.power_law.alpha == pytest.approx(f.beta, rel=1e-12)
    assert pkg.power_law.D == pytest.approx(f.ks, rel=1e-10)
    assert pkg.power_law.standard_err == pytest.approx(f.beta_se, rel=1e-12)


def test_least_squares_extra_matches_scipy() -> None:
    ev = noisy_spectrum(500, s=1.2, seed=3)
    f = fit_spectrum(ev, 300)
    top = np.sort(ev)[::-1][:300]
    reg = stats.linregress(np.log(np.arange(1, 301)), np.log(top))
    assert f.lsq_slope == pytest.approx(reg.slope, rel=1e-10)
    assert f.lsq_r2 == pytest.approx(reg.rvalue**2, rel=1e-10)
    assert f.lsq_slope != pytest.approx(-f.s, rel=1e-3)  # a different estimator


# -- input handling ------------------------------------------------------------------------


def test_order_sign_and_container_invariance() -> None:
    ev = noisy_spectrum(400, s=1.0, seed=5)
    a = fit_spectrum(ev, 100)
    b = fit_spectrum(np.sort(ev), 100)  # any order
    c = fit_spectrum(torch.from_numpy(ev), 100)  # a tensor
    d = fit_spectrum([*ev, 0.0, -5.0, -1e9], 100)  # non-positive values are dropped
    for other in (b, c, d):
        assert other.to_dict() == a.to_dict()
    full = fit_spectrum(ev)  # k=None: every positive value
    assert full.k == int((ev > 0).sum())


def test_power_law_decision_fails_on_a_flat_spectrum() -> None:
    g = np.random.default_rng(0)
    flat = g.uniform(1.0, 2.0, size=1000)  # not heavy-tailed: the MLE fit is poor
    f = fit_spectrum(flat)
    assert not f.is_power_law and f.ks > 3 * f.ks_critical
    assert fit_spectrum(rank_law(1000, 1.0), alpha=0.01).is_power_law


def test_alpha_level_changes_only_the_critical_value() -> None:
    ev = rank_law(200, 1.0)
    a, b = fit_spectrum(ev, alpha=0.05), fit_spectrum(ev, alpha=0.20)
    assert a.beta == b.beta and a.ks == b.ks
    assert b.ks_critical == pytest.approx(1.07 / math.sqrt(200)) and b.alpha == 0.2


# -- eigengaps ----------------------------------------------------------------------------------


def test_eigengaps_are_resorted_gaps() -> None:
    ev = noisy_spectrum(300, s=1.0, seed=7)
    pos = np.sort(ev[ev > 0])[::-1]
    gaps = sorted((pos[i] - pos[i + 1] for i in range(pos.size - 1)), reverse=True)
    gaps = [v for v in gaps if v > 0]
    f = fit_eigengaps(ev, 100)
    assert f.to_dict() == fit_spectrum(np.array(gaps), 100).to_dict()
    assert fit_eigengaps(ev).k == len(gaps)


def test_eigengap_slope_of_a_rank_law_is_s_plus_one() -> None:
    # delta_k ~ s k^-(s+1) for lambda_k = k^-s (P1 reports s_gap ~ s + 1)
    for s in (0.5, 1.0):
        f = fit_eigengaps(rank_law(1000, s))
        assert f.s == pytest.approx(s + 1, rel=0.02)


# -- input that admits no decision ------------------------------------------------------------


def _fitted_ks(values: np.ndarray) -> float:
    """d_ks of ``values`` fitted by their own MLE with xmin at the smallest (the oracle: the
    formulas of P1 written out, not fastspec's)."""
    x = np.sort(values)
    beta = 1.0 + x.size / np.sum(np.log(x / x[0]))
    emp = np.searchsorted(x, x, side="left") / x.size
    return float(np.max(np.abs(1.0 - (x / x[0]) ** (1.0 - beta) - emp)))


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 9, 20])
def test_sup_ks_distance_bounds_and_is_approached(k: int) -> None:
    """No random set of k values exceeds sup_d(k); the extremal configurations come close."""
    rng = np.random.default_rng(k)
    worst = 0.0
    for _ in range(3000):
        logs = np.minimum(np.abs(rng.standard_cauchy(k - 1)) * rng.choice([1e-3, 1.0, 30.0]), 600)
        worst = max(worst, _fitted_ks(np.exp(np.concatenate([[0.0], logs]))))
    bound = sup_ks_distance(k)
    assert worst <= bound + 1e-12
    cluster = 1e-9 * np.arange(1, k - 1)  # k - 2 distinct values just above xmin
    spread = np.exp(np.concatenate([[0.0], cluster, [60.0]]))  # d_ks -> 1 - 2/k
    pair_ = np.exp(np.concatenate([[0.0], np.full(k - 1, 1.0)]))  # 1 - e^(-k/(k-1)) - 1/k
    assert max(_fitted_ks(spread), _fitted_ks(pair_)) == pytest.approx(bound, abs=1e-6)
    assert worst >= bound - 0.05  # random search gets near it too


@pytest.mark.parametrize("alpha", [0.20, 0.15, 0.10, 0.05, 0.01])
def test_min_k_is_where_the_test_can_first_reject(alpha: float) -> None:
    k = min_k(alpha)
    crit = ks_critical_value(k, alpha)
    assert crit < sup_ks_distance(k) and ks_critical_value(k - 1, alpha) >= sup_ks_distance(k - 1)
    with pytest.raises(ValueError, match=f"cannot decide with k={k - 1} values"):
        fit_spectrum(rank_law(100, 1.0), k - 1, alpha=alpha)
    # a set of k values the test rejects exists: K - 2 values just above xmin, one far above
    bad = np.exp(np.concatenate([[0.0], 1e-6 * np.arange(1, k - 1), [60.0]]))
    assert not fit_spectrum(bad, alpha=alpha).is_power_law


def test_k_equal_two_no_longer_always_passes() -> None:
    with pytest.raises(ValueError, match="cannot decide with k=2"):
        fit_spectrum(np.array([1.0, 50.0]))


@pytest.mark.parametrize("noise", ["1e-10", "ulp"])
def test_values_equal_to_rounding_cannot_be_decided(noise: str, tmp_path: Path) -> None:
    """100 values equal to 2.5 up to 1e-10 (or one ulp) are refused, not fitted as a power law
    with beta ~ 1e12; ``fastspec fit`` gives the same answer (exit 2, the same message)."""
    g = np.random.default_rng(0)
    v = 2.5 + g.uniform(0.0, 1e-10, 100) if noise == "1e-10" else np.full(100, 2.5)
    if noise == "ulp":
        v[::2] = np.nextafter(2.5, 3.0)
    with pytest.raises(ValueError, match="cannot decide: the top k=100 values are all equal"):
        fit_spectrum(v)
    np.savetxt(tmp_path / "v.txt", v)
    assert main(["fit", str(tmp_path / "v.txt")]) == 2
    # just above the resolution the fit is made (and decided by the KS test)
    assert fit_spectrum(2.5 * np.exp(np.linspace(0.0, 1e-6, 100))).k == 100
