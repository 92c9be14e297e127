"""fastspec.stats.compare: likelihood-ratio tests against the powerlaw package (same parameters:
to rounding; own MLE: at least the package's likelihood), scipy's MLEs and mpmath densities."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats
from stats_oracles import discrete_tail_above_uniform, package_fit, pareto_above_lognormal, quietly

from fastspec.stats import ALTERNATIVES, PowerLaw, compare
from fastspec.stats.alternatives import loglikelihoods
from fastspec.stats.special import log_lerch_phi, log_upper_gamma_scaled

CONTINUOUS = {
    "pareto_lognormal": lambda: pareto_above_lognormal(2000, seed=0),
    "lognormal": lambda: np.random.default_rng(3).lognormal(1.0, 1.0, 3000),
    "shifted_exponential": lambda: np.random.default_rng(4).exponential(2.0, 2000) + 1.0,
    "weibull": lambda: np.random.default_rng(5).weibull(0.6, 2000),
}


def _fits(x: np.ndarray, discrete: bool = False) -> tuple[Any, PowerLaw]:
    pkg = package_fit(x, discrete=discrete)
    ours = PowerLaw.fit(x, discrete=discrete, alpha_range=(0, 3), discrete_estimator="auto")
    assert ours.xmin == pkg.xmin
    return pkg, ours


@pytest.mark.parametrize("data", list(CONTINUOUS))
def test_continuous_parity(data: str) -> None:
    pytest.importorskip("powerlaw")
    pkg, ours = _fits(CONTINUOUS[data]())
    for name in ALTERNATIVES:
        r_pkg, p_pkg = quietly(pkg.distribution_compare, "power_law", name)
        alt = quietly(getattr, pkg, name)
        # 1. the same parameters: the same likelihoods, R and p (to rounding)
        same = compare(ours, name, params=alt.parameters)
        assert same.R == pytest.approx(r_pkg, rel=1e-8, abs=1e-9)
        assert same.p == pytest.approx(p_pkg, rel=1e-8, abs=1e-15)
        assert same.loglikelihood_alternative == pytest.approx(alt.loglikelihood, rel=1e-10)
        r_norm, _ = quietly(pkg.distribution_compare, "power_law", name, normalized_ratio=True)
        assert same.R_normalized == pytest.approx(r_norm, rel=1e-8, abs=1e-12)
        # 2. fastspec's own MLE: a likelihood at least the package's, so R is at most its R,
        # and the difference is exactly the likelihood gained
        own = compare(ours, name)
        gain = own.loglikelihood_alternative - alt.loglikelihood
        assert gain >= -1e-9 * abs(alt.loglikelihood)
        assert r_pkg - own.R == pytest.approx(gain, abs=1e-7)


def test_own_mle_equals_package_where_its_optimiser_converges() -> None:
    """On data with an interior optimum the package's Nelder-Mead (tol=1e-4) lands next to the
    exact MLE, and R agrees to its tolerance."""
    pytest.importorskip("powerlaw")
    pkg, ours = _fits(CONTINUOUS["lognormal"]())
    for name in ALTERNATIVES:
        r_pkg, p_pkg = quietly(pkg.distribution_compare, "power_law", name)
        own = compare(ours, name)
        assert own.R == pytest.approx(r_pkg, abs=1e-4 * max(1.0, abs(r_pkg)))
        assert own.p == pytest.approx(p_pkg, rel=1e-3, abs=1e-12)


def test_discrete_parity() -> None:
    pytest.importorskip("powerlaw")
    x = discrete_tail_above_uniform(600, seed=1, alpha=2.3)
    pkg, ours = _fits(x, discrete=True)
    params = {  # moderate parameters (the package's round approximation loses digits at extremes)
        "lognormal": {"mu": 1.5, "sigma": 1.2},
        "exponential": {"Lambda": 0.05},
        "stretched_exponential": {"Lambda": 0.2, "beta": 0.5},
        "truncated_power_law": {"alpha": 2.1, "Lambda": 0.002},
    }
    import powerlaw

    tail = ours.tail()
    for name, p in params.items():
        dist = {
            "lognormal": powerlaw.Lognormal,
            "exponential": powerlaw.Exponential,
            "stretched_exponential": powerlaw.Stretched_Exponential,
            "truncated_power_law": powerlaw.Truncated_Power_Law,
        }[name](xmin=ours.xmin, discrete=True, parameters=p, verbose=0)
        ll_pkg = quietly(dist.loglikelihoods, tail)
        ll = loglikelihoods(tail, ours.xmin, name, np.array(list(p.values())), discrete=True)
        # per point to 1e-6: the package's erfc / 1 - exp differences cancel in the far tail
        np.testing.assert_allclose(ll, ll_pkg, rtol=1e-6)
        same = compare(ours, name, params=p)
        l_pl = pkg.power_law.loglikelihoods(pkg.data)
        r_pkg, p_pkg = powerlaw.loglikelihood_ratio(
            l_pl, ll_pkg, nested=name == "truncated_power_law"
        )
        assert same.R == pytest.approx(r_pkg, rel=1e-8)
        assert same.p == pytest.approx(p_pkg, rel=1e-7, abs=1e-15)
    for name in ALTERNATIVES:  # own MLE never below the package's
        alt = quietly(getattr, pkg, name)
        own = compare(ours, name)
        assert own.loglikelihood_alternative >= alt.loglikelihood - 1e-9 * abs(alt.loglikelihood)


# -- the MLEs against scipy's fits (xmin far below the data: the truncation vanishes) ------------


def test_mles_match_scipy_untruncated_fits() -> None:
    g = np.random.default_rng(6)
    tiny = 1e-12
    # lognormal: closed-form MLE (mean and std of log x)
    x = g.lognormal(0.7, 0.8, 3000)
    c = compare(PowerLaw.fit(x, xmin=tiny), "lognormal")
    shape, _, scale = stats.lognorm.fit(x, floc=0)
    assert c.parameters["sigma"] == pytest.approx(shape, rel=1e-7)
    assert c.parameters["mu"] == pytest.approx(math.log(scale), rel=1e-7)
    # exponential: closed form 1 / mean
    x = g.exponential(2.5, 3000)
    c = compare(PowerLaw.fit(x, xmin=tiny), "exponential")
    assert c.parameters["Lambda"] == pytest.approx(1 / stats.expon.fit(x, floc=0)[1], rel=1e-10)
    # stretched exponential = Weibull
    x = g.weibull(0.7, 3000) * 3.0
    c = compare(PowerLaw.fit(x, xmin=tiny), "stretched_exponential")
    k, _, lam = stats.weibull_min.fit(x, floc=0)
    assert c.parameters["beta"] == pytest.approx(k, rel=1e-4)
    assert c.parameters["Lambda"] == pytest.approx(1 / lam, rel=1e-4)
    ll_scipy = stats.weibull_min.logpdf(x, k, 0, lam).sum()
    assert c.loglikelihood_alternative >= ll_scipy - 1e-9 * abs(ll_scipy)
    # truncated power law with alpha < 1 = gamma(1 - alpha, rate Lambda)
    x = g.gamma(1.8, 1 / 0.4, 3000)
    c = compare(PowerLaw.fit(x, xmin=tiny), "truncated_power_law")
    a, _, scale = stats.gamma.fit(x, floc=0)
    assert c.parameters["alpha"] == pytest.approx(1 - a, rel=1e-4)
    assert c.parameters["Lambda"] == pytest.approx(1 / scale, rel=1e-4)
    ll_scipy = stats.gamma.logpdf(x, a, 0, scale).sum()
    assert c.loglikelihood_alternative >= ll_scipy - 1e-9 * abs(ll_scipy)


def test_truncated_power_law_nests_the_power_law() -> None:
    x = 1.0 + np.random.default_rng(7).pareto(1.5, 1500)  # a pure power law
    fit = PowerLaw.fit(x, xmin=1.0)
    c = compare(fit, "truncated_power_law")
    assert c.nested
    assert c.loglikelihood_alternative >= fit.loglikelihood - 1e-9  # never below the nested model
    assert c.R <= 1e-9 and c.p == pytest.approx(stats.chi2.sf(2 * abs(c.R), 1), rel=1e-12)
    assert c.p > 0.05
    at_zero = compare(fit, "truncated_power_law", params={"alpha": fit.alpha, "Lambda": 0.0})
    assert at_zero.R == pytest.approx(0.0, abs=1e-8)  # Lambda = 0 is the power law itself


def test_vuong_statistic_by_hand() -> None:
    fit = PowerLaw.fit(pareto_above_lognormal(1500, seed=8))
    c = compare(fit, "exponential")
    tail = fit.tail()
    lam = 1 / (tail.mean() - fit.xmin)
    l_alt = np.log(lam) - lam * (tail - fit.xmin)
    l_pl = np.log((fit.alpha - 1) / fit.xmin) - fit.alpha * np.log(tail / fit.xmin)
    d = l_pl - l_alt
    assert c.parameters["Lambda"] == pytest.approx(lam, rel=1e-13)
    assert c.R == pytest.approx(d.sum(), rel=1e-12)
    assert c.R_normalized == pytest.approx(d.sum() / math.sqrt(d.size * d.var()), rel=1e-12)
    assert c.p == pytest.approx(2 * stats.norm.sf(abs(c.R_normalized)), rel=1e-10)
    assert c.R > 0 and c.p < 0.05  # a power-law tail beats the exponential
    assert set(c.to_dict()) >= {"R", "R_normalized", "p", "parameters", "alternative"}


# -- densities against mpmath, and normalisation --------------------------------------------------

CASES = [
    ("lognormal", [0.4, 1.3]),
    ("lognormal", [-3.0, 2.5]),
    ("exponential", [0.3]),
    ("stretched_exponential", [0.5, 0.6]),
    ("stretched_exponential", [2.0, 1.7]),
    ("truncated_power_law", [2.2, 0.05]),
    ("truncated_power_law", [0.6, 1.5]),
    ("truncated_power_law", [1.7, 0.0]),
]


@pytest.mark.parametrize(("name", "theta"), CASES)
def test_continuous_densities_against_mpmath(name: str, theta: list[float]) -> None:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    xmin = 2.0
    x = np.array([2.0, 2.7, 10.0, 55.5])
    ours = loglikelihoods(x, xmin, name, np.array(theta))
    mp = mpmath.mpf
    for xi, li in zip(x, ours):
        v, m = mp(float(xi)), mp(xmin)
        if name == "lognormal":
            mu, s = (mp(t) for t in theta)
            dens = mpmath.npdf(mpmath.log(v), mu, s) / v
            norm = 1 - mpmath.ncdf(mpmath.log(m), mu, s)
        elif name == "exponential":
            lam = mp(theta[0])
            dens, norm = lam * mpmath.exp(-lam * v), mpmath.exp(-lam * m)
        elif name == "stretched_exponential":
            lam, b = (mp(t) for t in theta)
            dens = b * lam * (lam * v) ** (b - 1) * mpmath.exp(-((lam * v) ** b))
            norm = mpmath.exp(-((lam * m) ** b))
        else:
            a, lam = (mp(t) for t in theta)
            dens = v ** (-a) * mpmath.exp(-lam * v)
            norm = mpmath.quad(
                lambda t, a=a, lam=lam: t ** (-a) * mpmath.exp(-lam * t), [m, mpmath.inf]
            )
        assert li == pytest.approx(float(mpmath.log(dens / norm)), rel=1e-12, abs=1e-12)
    total, _ = integrate.quad(
        lambda t: math.exp(loglikelihoods(np.array([t]), xmin, name, np.array(theta))[0]),
        xmin,
        math.inf,
        epsabs=1e-12,
        limit=500,
    )
    assert total == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize(("name", "theta"), CASES)
def test_discrete_pmfs_sum_to_one_and_match_mpmath(name: str, theta: list[float]) -> None:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    xmin = 3.0
    k = np.arange(3, 400001, dtype=np.float64)
    pmf = np.exp(loglikelihoods(k, xmin, name, np.array(theta), discrete=True))
    if not (name == "truncated_power_law" and theta[1] == 0.0):  # (a slow zeta tail otherwise)
        assert pmf.sum() == pytest.approx(1.0, abs=1e-6)
    mp, m = mpmath.mpf, mpmath.mpf(xmin)
    if name == "lognormal":  # the package's "round" approximation: P(x -+ 1/2) / P(X >= xmin - 1/2)
        mu, s = (mp(t) for t in theta)

        def ref(v: Any) -> Any:
            F = lambda y: mpmath.ncdf(mpmath.log(y), mu, s)  # noqa: E731
            return (F(v + 0.5) - F(v - 0.5)) / (1 - F(m - 0.5))
    elif name == "exponential":
        lam = mp(theta[0])

        def ref(v: Any) -> Any:
            return (1 - mpmath.exp(-lam)) * mpmath.exp(-lam * (v - m))
    elif name == "stretched_exponential":
        lam, b = (mp(t) for t in theta)

        def ref(v: Any) -> Any:
            S = lambda y: mpmath.exp(-((lam * y) ** b))  # noqa: E731
            return (S(v - 0.5) - S(v + 0.5)) / S(m - 0.5)
    else:
        a, lam = (mp(t) for t in theta)
        phi = mpmath.lerchphi(mpmath.exp(-lam), a, m) if lam > 0 else mpmath.zeta(a, m)

        def ref(v: Any) -> Any:
            return v**-a * mpmath.exp(-lam * (v - m)) / phi

    pts = np.array([3.0, 10.0, 77.0, 5000.0])
    ours = loglikelihoods(pts, xmin, name, np.array(theta), discrete=True)
    expected = [float(mpmath.log(ref(mp(v)))) for v in pts]
    np.testing.assert_allclose(ours, expected, rtol=1e-10)


def test_special_functions_against_mpmath() -> None:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    for a in (-2.5, -1.0, -0.2, 0.0, 0.4, 1.0, 3.0):
        for z in (1e-9, 1e-3, 0.5, 4.0, 200.0, 1e5):
            ref = mpmath.log(mpmath.gammainc(a, z)) - a * mpmath.log(z) + z
            assert log_upper_gamma_scaled(a, z) == pytest.approx(float(ref), rel=1e-12, abs=1e-12)
    assert log_upper_gamma_scaled(-1.5, 0.0) == pytest.approx(math.log(1 / 1.5))
    assert log_upper_gamma_scaled(0.5, 0.0) == math.inf
    for lam in (1e-7, 1e-3, 0.1, 2.0):
        for a in (0.5, 1.0, 2.5):
            for q in (1.0, 10.0, 1000.0):
                ref = mpmath.log(mpmath.lerchphi(mpmath.exp(-lam), a, q))
                assert log_lerch_phi(lam, a, q) == pytest.approx(float(ref), rel=1e-11, abs=1e-12)
