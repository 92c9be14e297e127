"""fastspec.compat.powerlaw.Fit against powerlaw 2.0.0 (the original) and closed forms."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from stats_oracles import discrete_tail_above_uniform, package_fit, pareto_above_lognormal, quietly

from fastspec.compat import powerlaw as compat

DATASETS: dict[str, tuple[Any, dict[str, Any]]] = {
    "continuous": (lambda: pareto_above_lognormal(1500, seed=3), {}),
    "continuous_fixed_xmin": (lambda: pareto_above_lognormal(1500, seed=3), {"xmin": 2.5}),
    "continuous_xmin_range": (lambda: pareto_above_lognormal(1500, seed=3), {"xmin": (1.0, 6.0)}),
    "continuous_alpha_range": (
        lambda: pareto_above_lognormal(1500, seed=4, alpha=2.2),
        {"parameter_ranges": {"alpha": (1.5, 2.4)}},
    ),
    "discrete": (lambda: discrete_tail_above_uniform(600, seed=1), {"discrete": True}),
    "discrete_fixed_xmin": (
        lambda: discrete_tail_above_uniform(600, seed=1),
        {"discrete": True, "xmin": 15.0},
    ),
}
ALTERNATIVES = ["lognormal", "exponential", "stretched_exponential", "truncated_power_law"]


@pytest.mark.parametrize("name", list(DATASETS))
def test_power_law_matches_package(name: str) -> None:
    """xmin, alpha, sigma, D, the tail log-likelihood and the tail size, to 1e-8 relative."""
    pytest.importorskip("powerlaw")
    make, kwargs = DATASETS[name]
    x = make()
    pkg = package_fit(x, **kwargs)
    ours = compat.Fit(x, **kwargs)
    assert ours.xmin == pkg.xmin and ours.n == pkg.n and ours.n_tail == pkg.n_tail
    for attr in ("alpha", "xmin", "sigma", "D"):
        assert getattr(ours.power_law, attr) == pytest.approx(
            getattr(pkg.power_law, attr), rel=1e-8
        )
        assert getattr(ours, attr) == getattr(ours.power_law, attr)
    assert ours.power_law.standard_err == pytest.approx(pkg.power_law.standard_err, rel=1e-8)
    ll = float(np.sum(pkg.power_law.loglikelihoods(pkg.data)))
    assert ours.power_law.loglikelihood == pytest.approx(ll, rel=1e-8)
    np.testing.assert_array_equal(ours.data, pkg.data)
    np.testing.assert_allclose(
        ours.power_law.loglikelihoods(), pkg.power_law.loglikelihoods(pkg.data), rtol=1e-10
    )
    if not kwargs.get("discrete"):
        grid = np.unique(ours.data)
        np.testing.assert_allclose(ours.power_law.pdf(grid), pkg.power_law.pdf(grid), rtol=1e-10)
        np.testing.assert_allclose(ours.power_law.ccdf(grid), pkg.power_law.ccdf(grid), rtol=1e-10)
        np.testing.assert_allclose(
            ours.power_law.cdf(grid), pkg.power_law.cdf(grid), rtol=1e-10, atol=1e-15
        )


def test_steep_tail_fixed_xmin_package_caps_alpha_at_3() -> None:
    """A Pareto tail of exponent 4 with xmin fixed: the package's bounded optimiser returns 3;
    fastspec returns the closed-form MLE 1 + n / Σ log(x / xmin)."""
    pytest.importorskip("powerlaw")
    x = (1.0 - np.random.default_rng(0).random(2000)) ** (-1.0 / 3.0)
    pkg = package_fit(x, xmin=1.0)
    ours = compat.Fit(x, xmin=1.0)
    mle = 1.0 + x.size / np.sum(np.log(x))
    assert pkg.power_law.alpha == pytest.approx(3.0, abs=1e-9)
    assert ours.power_law.alpha == pytest.approx(mle, rel=1e-12)
    assert abs(ours.power_law.alpha - 4.0) < 0.1
    with pytest.raises(ValueError, match="alpha"):
        compat.Fit(x)  # every candidate has alpha >= 3: no valid xmin in the package's range
    wide = compat.Fit(x, parameter_ranges={"alpha": (1.0, math.inf)})
    assert abs(wide.alpha - 4.0) < 0.2


@pytest.mark.parametrize("discrete", [False, True])
def test_distribution_compare(discrete: bool) -> None:
    """(R, p) by the package's definitions; fastspec's alternatives are exact MLEs, so their
    likelihood is at least the package's and R differs from the package's by exactly the
    likelihood gained."""
    pytest.importorskip("powerlaw")
    x = (
        discrete_tail_above_uniform(600, seed=1, alpha=2.3)
        if discrete
        else pareto_above_lognormal(1500, seed=3)
    )
    pkg = package_fit(x, discrete=discrete)
    ours = compat.Fit(x, discrete=discrete)
    for name in ALTERNATIVES:
        r_pkg, _ = quietly(pkg.distribution_compare, "power_law", name)
        alt_pkg = quietly(getattr, pkg, name)
        alt = getattr(ours, name)
        assert set(alt.parameters) == set(alt_pkg.parameters)
        gain = alt.loglikelihood - alt_pkg.loglikelihood
        assert gain >= -1e-9 * abs(alt_pkg.loglikelihood)
        r, p = ours.distribution_compare("power_law", name)
        assert isinstance(r, float) and 0.0 <= p <= 1.0
        assert r_pkg - r == pytest.approx(gain, abs=1e-7)
        assert ours.distribution_compare(name, "power_law") == pytest.approx((-r, p), rel=1e-12)
        r_norm, p_norm = ours.distribution_compare("power_law", name, normalized_ratio=True)
        assert p_norm == p and np.sign(r_norm) == np.sign(r)
        assert ours.loglikelihood_ratio("power_law", name) == (r, p)
    # nested by name: the truncated power law nests the power law -> chi2 p-value
    r, p = ours.distribution_compare("power_law", "truncated_power_law")
    from scipy import stats

    assert p == pytest.approx(stats.chi2.sf(abs(2 * r), 1), rel=1e-10)


def test_empirical_distributions_and_plots() -> None:
    pytest.importorskip("powerlaw")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = pareto_above_lognormal(800, seed=5)
    pkg = package_fit(x)
    ours = compat.Fit(x)
    for method in ("cdf", "ccdf"):
        for original in (False, True):
            a, b = (
                getattr(ours, method)(original_data=original),
                getattr(pkg, method)(original_data=original),
            )
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_allclose(a[1], b[1], rtol=1e-14, atol=1e-15)
    bins = np.logspace(np.log10(ours.xmin), np.log10(x.max()), 12)
    for a, b in zip(ours.pdf(bins=bins), pkg.pdf(bins=bins)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    edges, density = ours.pdf()
    assert np.sum(density * np.diff(edges)) == pytest.approx(1.0, rel=1e-12)
    fig, ax = plt.subplots()
    try:
        assert ours.plot_ccdf(ax=ax, color="b") is ax
        assert ours.power_law.plot_ccdf(ax=ax, linestyle="--") is ax
        assert ours.plot_pdf(ax=ax) is ax and ours.plot_cdf(ax=ax) is ax
        assert ours.lognormal.plot_pdf(ax=ax) is ax and ours.power_law.plot_pdf(ax=ax) is ax
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        emp, fitted = ax.lines[0], ax.lines[1]
        np.testing.assert_array_equal(emp.get_ydata(), ours.ccdf()[1])
        grid = np.unique(ours.data)
        np.testing.assert_allclose(fitted.get_ydata(), pkg.power_law.ccdf(grid), rtol=1e-10)
    finally:
        plt.close(fig)


def test_non_positive_values_dropped() -> None:
    """With a 0 present the package drops the non-positive values too: the same fit."""
    pytest.importorskip("powerlaw")
    x = np.concatenate([pareto_above_lognormal(1000, seed=6), [0.0, -1.0, -2.5]])
    pkg = package_fit(x)
    with pytest.warns(RuntimeWarning, match="dropping 3 values"):
        ours = compat.Fit(x)
    assert ours.xmin == pkg.xmin and ours.alpha == pytest.approx(pkg.alpha, rel=1e-12)


def test_supported_distributions_and_bad_inputs() -> None:
    x = pareto_above_lognormal(500, seed=7)
    assert set(compat.Fit.supported_distributions) == {"power_law", *ALTERNATIVES}
    fit = compat.Fit(x)
    with pytest.raises(ValueError, match="distribution"):
        fit.distribution_compare("power_law", "gamma")
    for kwargs in (
        {"xmax": 10.0}, {"fit_method": "KS"}, {"xmin_distance": "V"}, {"sigma_threshold": 0.1},
        {"discrete_normalization": "ceil"}, {"xmin_distribution": "lognormal"},
    ):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            compat.Fit(x, **kwargs)
    assert compat.Fit(x, fit_method="Likelihood").alpha == fit.alpha
    with pytest.raises(ValueError, match="xmin"):
        compat.Fit(x, xmin=(5.0, 1.0))
    with pytest.raises(ValueError, match="candidate"):
        compat.Fit(x, xmin=(x.max() - 1e-9, x.max() + 1.0))
    with pytest.raises(ValueError, match="parameter_ranges"):
        compat.Fit(x, parameter_ranges={"beta": (0, 1)})
    with pytest.raises(TypeError, match="estimate_discrete"):
        compat.Fit(x, estimate_discrete="yes")
    with pytest.raises(ValueError, match=r"NaN|finite"):
        compat.Fit(np.array([1.0, 2.0, np.nan, 4.0]))
    with pytest.raises(ValueError, match="integers"):
        compat.Fit(x, discrete=True)
