"""fastspec.stats.PowerLaw: Clauset fits against the powerlaw package 2.0, plain numpy loops and
scipy; the package's quirks are pinned here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize, special, stats
from stats_oracles import (
    continuous_fit_at,
    discrete_loglik,
    discrete_tail_above_uniform,
    noisy_spectrum,
    numpy_scan,
    package_fit,
    pareto_above_lognormal,
    rank_law,
)

from fastspec.stats import PowerLaw


def _spectrum() -> np.ndarray:
    ev = noisy_spectrum(800, s=0.7, seed=3)
    return ev[ev > 0]


CONTINUOUS = {
    "pareto_lognormal": lambda: pareto_above_lognormal(2000, seed=0),
    "pareto_lognormal_b": lambda: pareto_above_lognormal(1500, seed=1, alpha=2.2, xmin=5.0),
    "with_ties": lambda: np.round(pareto_above_lognormal(1500, seed=2), 1) + 0.1,
    "rank_law": lambda: rank_law(1000, 1.0),
    "spectrum": _spectrum,
    # alpha <= 1.5: the package's Nelder-Mead path (see the test below)
    "alpha_1.3": lambda: pareto_above_lognormal(1000, seed=4, alpha=1.3),
}


# -- continuous: parity with the powerlaw package -----------------------------------------------


@pytest.mark.parametrize("name", list(CONTINUOUS))
def test_continuous_parity_with_powerlaw(name: str) -> None:
    pytest.importorskip("powerlaw")
    x = CONTINUOUS[name]()
    pkg = package_fit(x)
    ours = PowerLaw.fit(x, alpha_range=(0, 3), exhaustive=True)
    assert ours.xmin == pkg.xmin  # the same candidate
    assert ours.n_tail == pkg.n_tail
    assert ours.alpha == pytest.approx(pkg.alpha, rel=1e-12)
    assert ours.alpha == pytest.approx(pkg.power_law.alpha, rel=1e-12)
    assert ours.sigma == pytest.approx(pkg.power_law.standard_err, rel=1e-12)
    assert ours.ks == pytest.approx(pkg.D, rel=1e-10)
    assert ours.ks == pytest.approx(pkg.power_law.D, rel=1e-10)
    ll = np.sum(pkg.power_law.loglikelihoods(pkg.data))
    assert ours.loglikelihood == pytest.approx(ll, rel=1e-12)
    # the whole scan curve
    res = pkg.xmin_fitting_results
    assert ours.scan is not None
    np.testing.assert_array_equal(ours.scan.xmins, res["xmins"])
    np.testing.assert_array_equal(ours.scan.valid, res["valid_fits"])
    v = res["valid_fits"]
    np.testing.assert_allclose(ours.scan.alphas[v], res["alphas"][v], rtol=1e-12)
    np.testing.assert_allclose(ours.scan.ks[v], res["distances"][v], rtol=1e-9, atol=1e-15)
    # the pruned scan (default) picks the same cutoff
    pruned = PowerLaw.fit(x, alpha_range=(0, 3))
    assert pruned.to_dict() | {"scan": None} == ours.to_dict() | {"scan": None}


def test_package_caps_alpha_at_3_clauset_does_not() -> None:
    """powerlaw 2.0's Power_Law has alpha in (0, 3): candidates with alpha >= 3 are invalid in its
    xmin scan, so on a steep tail it picks a cutoff deep in the body. fastspec's default is
    Clauset's method (any alpha > 1), which finds the tail; alpha_range=(0, 3) reproduces the
    package."""
    pytest.importorskip("powerlaw")
    x = pareto_above_lognormal(2000, seed=0, alpha=3.5)
    pkg = package_fit(x)
    clauset = PowerLaw.fit(x)
    capped = PowerLaw.fit(x, alpha_range=(0, 3))
    ref = numpy_scan(x)
    assert clauset.xmin == ref["xmins"][ref["best"]]
    assert clauset.alpha > 3 and clauset.alpha == pytest.approx(3.5, abs=0.3)
    assert clauset.ks < pkg.D / 2  # a much better fit than the package's
    assert pkg.alpha < 2 and pkg.xmin < 1  # the package lands in the lognormal body
    assert capped.xmin == pkg.xmin and capped.alpha == pytest.approx(pkg.alpha, rel=1e-12)


def test_package_nelder_mead_below_1_5_starts_at_the_exact_mle() -> None:
    """For alpha <= 1.5 the package replaces the closed form by a Nelder-Mead (tol=1e-4) started
    at the closed form. That start is the exact continuous MLE, so the simplex never leaves it:
    the package's alpha equals the closed form here too (the 'alpha_1.3' parity case above)."""
    pytest.importorskip("powerlaw")
    x = CONTINUOUS["alpha_1.3"]()
    pkg = package_fit(x)
    assert pkg.alpha <= 1.5
    assert pkg.alpha == pytest.approx(continuous_fit_at(x, pkg.xmin)[0], rel=1e-13)
    assert PowerLaw.fit(x).xmin == pkg.xmin


def test_fixed_xmin_parity() -> None:
    pytest.importorskip("powerlaw")
    x = pareto_above_lognormal(1500, seed=5)
    for xmin in (2.0, 3.0, float(np.sort(x)[1200])):
        pkg = package_fit(x, xmin=xmin)
        ours = PowerLaw.fit(x, xmin=xmin)
        assert ours.scan is None and ours.xmin == xmin and ours.n_tail == pkg.n_tail
        assert ours.alpha == pytest.approx(pkg.power_law.alpha, rel=1e-12)
        assert ours.ks == pytest.approx(pkg.power_law.D, rel=1e-10)
        assert ours.sigma == pytest.approx(pkg.power_law.standard_err, rel=1e-12)


# -- continuous: the native scan against the plain numpy loop ------------------------------------


@pytest.mark.parametrize("alpha_range", [(1.0, math.inf), (0.0, 3.0), (1.8, 2.6)])
@pytest.mark.parametrize("name", ["pareto_lognormal", "with_ties", "rank_law"])
def test_scan_matches_numpy_loop(name: str, alpha_range: tuple[float, float]) -> None:
    x = CONTINUOUS[name]()
    ref = numpy_scan(x, alpha_range)
    best = ref["best"]
    for exhaustive in (False, True):
        ours = PowerLaw.fit(x, alpha_range=alpha_range, exhaustive=exhaustive)
        assert ours.xmin == ref["xmins"][best]
        assert ours.alpha == pytest.approx(ref["alphas"][best], rel=1e-12)
        assert ours.ks == pytest.approx(ref["ks"][best], rel=1e-10)
    assert ours.scan is not None
    np.testing.assert_array_equal(ours.scan.xmins, ref["xmins"])
    np.testing.assert_array_equal(ours.scan.valid, ref["valid"])
    np.testing.assert_allclose(ours.scan.alphas, ref["alphas"], rtol=1e-12)
    np.testing.assert_allclose(ours.scan.ks, ref["ks"], rtol=1e-9, atol=1e-15)


def test_candidate_grid_and_explicit_values() -> None:
    x = np.sort(pareto_above_lognormal(1500, seed=6))
    cands = np.unique(x[x < x.max()])[:-1]
    # explicit candidates (data values; any value snaps to the smallest data value >= it)
    pick = cands[::37]
    ours = PowerLaw.fit(x, xmin_candidates=pick, exhaustive=True)
    ref = numpy_scan(x, cands=pick)
    assert ours.xmin == ref["xmins"][ref["best"]]
    assert ours.scan is not None
    np.testing.assert_array_equal(ours.scan.xmins, pick)
    snapped = PowerLaw.fit(x, xmin_candidates=pick * (1 - 1e-9))
    assert snapped.xmin == ours.xmin and snapped.alpha == ours.alpha
    # an integer asks for a log-spaced grid of cutoffs
    grid = PowerLaw.fit(x, xmin_candidates=40, exhaustive=True)
    assert grid.scan is not None and 20 <= grid.scan.xmins.size <= 40
    assert np.isin(grid.scan.xmins, cands).all()
    ref = numpy_scan(x, cands=grid.scan.xmins)
    assert grid.xmin == ref["xmins"][ref["best"]]
    # each grid point is the smallest candidate >= a log-spaced target
    targets = np.exp(np.linspace(np.log(cands[0]), np.log(cands[-1]), 40))
    expected = np.unique([cands[np.argmax(cands >= t * (1 - 1e-12))] for t in targets])
    np.testing.assert_array_equal(grid.scan.xmins, expected)


def test_float32_and_tensor_inputs_are_fitted_in_float64() -> None:
    torch = pytest.importorskip("torch")
    x = pareto_above_lognormal(1000, seed=7)
    a = PowerLaw.fit(x)
    b = PowerLaw.fit(torch.from_numpy(x))
    assert a.to_dict() == b.to_dict()
    c = PowerLaw.fit(x.astype(np.float32))
    ref = numpy_scan(x.astype(np.float32).astype(np.float64))
    assert c.xmin == ref["xmins"][ref["best"]]


# -- the fitted distribution ------------------------------------------------------------------


def test_continuous_distribution_functions_match_scipy_pareto() -> None:
    fit = PowerLaw.fit(pareto_above_lognormal(2000, seed=8))
    ref = stats.pareto(b=fit.alpha - 1, scale=fit.xmin)
    x = np.array([0.5 * fit.xmin, fit.xmin, 1.3 * fit.xmin, 10 * fit.xmin, 1e4 * fit.xmin])
    np.testing.assert_allclose(fit.pdf(x), ref.pdf(x), rtol=1e-12)
    np.testing.assert_allclose(fit.cdf(x), ref.cdf(x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(fit.ccdf(x), ref.sf(x), rtol=1e-12)


def test_continuous_sample_follows_the_fit() -> None:
    fit = PowerLaw.fit(pareto_above_lognormal(2000, seed=9))
    s = fit.sample(20000, seed=1)
    assert s.min() >= fit.xmin
    assert stats.kstest(s, stats.pareto(b=fit.alpha - 1, scale=fit.xmin).cdf).pvalue > 1e-3
    np.testing.assert_array_equal(s, fit.sample(20000, seed=1))  # seeded
    assert not np.array_equal(s, fit.sample(20000, seed=2))
    refit = PowerLaw.fit(s, xmin=fit.xmin)
    assert refit.alpha == pytest.approx(fit.alpha, abs=4 * refit.sigma)


def test_to_dict_is_json() -> None:
    fit = PowerLaw.fit(pareto_above_lognormal(500, seed=10), exhaustive=True)
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["alpha"] == fit.alpha and d["n_tail"] == fit.n_tail
    assert fit.scan is not None and len(d["scan"]["ks"]) == fit.scan.ks.size
    assert PowerLaw.fit(pareto_above_lognormal(500, seed=10)).to_dict()["scan"] is None


# -- discrete --------------------------------------------------------------------------------


def test_discrete_parity_with_powerlaw_auto_estimator() -> None:
    """xmin >= 10: the package uses Clauset's eq. (3.7), alpha = 1 + n / sum log(x/(xmin-1/2));
    discrete_estimator='auto' is its rule, so xmin, alpha, sigma and D agree to rounding. Below
    10 the package runs a Nelder-Mead (tol=1e-4) on the Hurwitz-zeta likelihood started at the
    continuous formula: its alpha is ~1e-4 accurate there, fastspec's exact MLE has a likelihood
    at least as high."""
    pytest.importorskip("powerlaw")
    x = discrete_tail_above_uniform(600, seed=1)
    pkg = package_fit(x, discrete=True)
    ours = PowerLaw.fit(x, discrete=True, alpha_range=(0, 3), discrete_estimator="auto")
    assert pkg.xmin >= 10 and ours.xmin == pkg.xmin and ours.n_tail == pkg.n_tail
    assert ours.alpha == pytest.approx(pkg.alpha, rel=1e-12)
    assert ours.sigma == pytest.approx(pkg.power_law.standard_err, rel=1e-12)
    assert ours.ks == pytest.approx(pkg.D, rel=1e-9)
    res = pkg.xmin_fitting_results
    scan = ours.scan
    assert scan is not None
    np.testing.assert_array_equal(scan.xmins, res["xmins"])
    np.testing.assert_array_equal(scan.valid, res["valid_fits"])
    approx = (res["xmins"] >= 10) & res["valid_fits"]
    np.testing.assert_allclose(scan.alphas[approx], res["alphas"][approx], rtol=1e-12)
    np.testing.assert_allclose(scan.ks[approx], res["distances"][approx], rtol=1e-9)
    numeric = (res["xmins"] < 10) & res["valid_fits"]
    assert numeric.sum() == 9
    np.testing.assert_allclose(scan.alphas[numeric], res["alphas"][numeric], atol=1e-3)
    xs = np.sort(x)
    for q, a_pkg, a_ours in zip(
        res["xmins"][numeric], res["alphas"][numeric], scan.alphas[numeric]
    ):
        tail = xs[xs >= q]
        assert discrete_loglik(tail, a_ours, q) >= discrete_loglik(tail, a_pkg, q) - 1e-9


def test_discrete_exact_mle_matches_scipy_optimizer() -> None:
    x = discrete_tail_above_uniform(500, seed=2, alpha=2.2, xmin=4, n_body=300)
    for q in (1.0, 4.0, 7.0, 30.0):
        fit = PowerLaw.fit(x, xmin=q, discrete=True)
        tail = np.sort(x[x >= q])
        res = optimize.minimize_scalar(
            lambda a, t=tail, q=q: -discrete_loglik(t, a, q),
            bounds=(1.0001, 10.0),
            method="bounded",
            options={"xatol": 1e-12},
        )
        assert fit.alpha == pytest.approx(res.x, rel=1e-7)
        assert fit.loglikelihood >= -res.fun - 1e-9
        assert fit.loglikelihood == pytest.approx(discrete_loglik(tail, fit.alpha, q), rel=1e-13)
        approx = PowerLaw.fit(x, xmin=q, discrete=True, discrete_estimator="approx")
        expected = 1 + tail.size / np.sum(np.log(tail / (q - 0.5)))
        assert approx.alpha == pytest.approx(expected, rel=1e-13)


def test_discrete_exact_vs_package_numerical_fit() -> None:
    pytest.importorskip("powerlaw")
    x = discrete_tail_above_uniform(800, seed=3, alpha=2.4, xmin=3, n_body=0)
    pkg = package_fit(x, discrete=True, xmin=3.0, estimate_discrete=False)
    ours = PowerLaw.fit(x, discrete=True, xmin=3)
    assert ours.alpha == pytest.approx(pkg.power_law.alpha, abs=1e-3)  # the package's NM tol
    tail = np.sort(x)
    assert ours.loglikelihood >= discrete_loglik(tail, pkg.power_law.alpha, 3.0) - 1e-9
    assert ours.ks == pytest.approx(pkg.power_law.D, abs=1e-3)


def test_discrete_scan_matches_loop() -> None:
    x = discrete_tail_above_uniform(400, seed=4, alpha=2.6, xmin=6, n_body=300)
    fit = PowerLaw.fit(x, discrete=True, discrete_estimator="approx")
    xs = np.sort(x)
    best = (math.inf, 0.0)
    for q in np.unique(xs[xs < xs.max()])[:-1]:
        tail = xs[xs >= q]
        a = 1 + tail.size / np.sum(np.log(tail / (q - 0.5)))
        d = max(
            abs(1 - special.zeta(a, v) / special.zeta(a, q) - np.sum(tail < v) / tail.size)
            for v in np.unique(tail)
        )
        if a > 1 and d < best[0]:
            best = (d, q)
    assert fit.xmin == best[1] and fit.ks == pytest.approx(best[0], rel=1e-10)


def test_discrete_distribution_functions_and_sample() -> None:
    x = discrete_tail_above_uniform(600, seed=5)
    fit = PowerLaw.fit(x, discrete=True, xmin=15)
    k = np.arange(15, 200000, dtype=np.float64)
    pmf = fit.pdf(k)
    np.testing.assert_allclose(
        pmf[:5], k[:5] ** -fit.alpha / special.zeta(fit.alpha, 15), rtol=1e-13
    )
    assert pmf.sum() + special.zeta(fit.alpha, 200000) / special.zeta(
        fit.alpha, 15
    ) == pytest.approx(1.0, rel=1e-12)
    assert fit.pdf(np.array([14.0, 15.5])).tolist() == [0.0, 0.0]
    np.testing.assert_allclose(fit.cdf(k[:50]), np.cumsum(pmf[:50]), rtol=1e-12)
    np.testing.assert_allclose(fit.cdf(k[:50] + 0.5), fit.cdf(k[:50]), rtol=1e-15)
    s = fit.sample(30000, seed=3)
    assert (s >= 15).all() and np.array_equal(s, np.round(s))
    # frequencies of 15..24 and of >= 25 against the exact pmf
    obs = np.array([np.sum(s == v) for v in range(15, 25)] + [np.sum(s >= 25)])
    p = np.append(pmf[:10], 1 - pmf[:10].sum())
    assert stats.chisquare(obs, p * s.size).pvalue > 1e-3
    np.testing.assert_array_equal(s, fit.sample(30000, seed=3))


def test_discrete_sample_with_heavy_tail_reaches_large_values() -> None:
    fit = PowerLaw.fit(np.array([1.0, 1, 1, 2, 2, 3, 5, 9, 40, 300]), discrete=True, xmin=1)
    s = fit.sample(5000, seed=0)
    # P(X >= x) = zeta(alpha, x)/zeta(alpha, 1): check the empirical tail at three points
    for v in (2.0, 10.0, 100.0):
        p = special.zeta(fit.alpha, v) / special.zeta(fit.alpha, 1)
        assert abs(np.mean(s >= v) - p) < 5 * math.sqrt(p * (1 - p) / s.size)
