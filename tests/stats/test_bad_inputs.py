"""Every public function of fastspec.stats refuses bad input with an error that names the
argument: TypeError for a wrong type, ValueError for a wrong value."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from stats_oracles import pareto_above_lognormal, rank_law

from fastspec.stats import (
    PowerLaw,
    compare,
    fit_eigengaps,
    fit_spectrum,
    gof_pvalue,
    hill_estimator,
    ks_critical_value,
    tail_tests,
)

GOOD = pareto_above_lognormal(300, seed=0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.array([1.0, 2.0, np.nan, 4.0]), "data must be finite"),
        (np.array([1.0, 2.0, np.inf, 4.0]), "data must be finite"),
        (np.array([1.0, 0.0, 3.0, 4.0]), "data must be positive"),
        (np.array([1.0, -2.0, 3.0, 4.0]), "data must be positive"),
        (np.array([1.0]), "data must have at least 2"),
        (np.ones((3, 3)), "data must be 1-dimensional"),
        (["a", "b"], "data must be a 1-D array of real numbers"),
        (np.array([1.0, 2.0, 2.0, 1.0]), "at least 3 distinct values"),
    ],
)
def test_powerlaw_fit_data(data: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PowerLaw.fit(data)


def test_powerlaw_fit_options() -> None:
    with pytest.raises(ValueError, match="data must hold integers when discrete=True"):
        PowerLaw.fit(GOOD, discrete=True)
    with pytest.raises(ValueError, match="xmin must be an integer when discrete=True"):
        PowerLaw.fit(np.arange(1.0, 50.0), discrete=True, xmin=2.5)
    with pytest.raises(ValueError, match="xmin must be > 0"):
        PowerLaw.fit(GOOD, xmin=-1.0)
    with pytest.raises(ValueError, match="xmin must be finite"):
        PowerLaw.fit(GOOD, xmin=math.nan)
    with pytest.raises(TypeError, match="xmin must be a real number or None"):
        PowerLaw.fit(GOOD, xmin="3")
    with pytest.raises(ValueError, match=r"xmin=.* leaves 1 data point"):
        PowerLaw.fit(GOOD, xmin=float(GOOD.max()))
    with pytest.raises(ValueError, match=r"xmin=.* leaves 0 data point"):
        PowerLaw.fit(GOOD, xmin=2 * float(GOOD.max()))
    with pytest.raises(ValueError, match="every tail value equals xmin"):
        PowerLaw.fit(np.array([1.0, 2.0, 3.0, 3.0]), xmin=3.0)
    with pytest.raises(ValueError, match="alpha_range must satisfy low < high"):
        PowerLaw.fit(GOOD, alpha_range=(3.0, 1.0))
    with pytest.raises(ValueError, match="alpha_range must be a pair"):
        PowerLaw.fit(GOOD, alpha_range=3.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no candidate xmin gives an exponent in alpha_range"):
        PowerLaw.fit(GOOD, alpha_range=(50.0, 60.0))
    with pytest.raises(ValueError, match="discrete_estimator must be"):
        PowerLaw.fit(GOOD, discrete_estimator="mle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="xmin_candidates must be >= 1"):
        PowerLaw.fit(GOOD, xmin_candidates=0)
    with pytest.raises(ValueError, match="xmin_candidates must be positive"):
        PowerLaw.fit(GOOD, xmin_candidates=[-1.0, 2.0])
    with pytest.raises(ValueError, match="xmin_candidates must be finite"):
        PowerLaw.fit(GOOD, xmin_candidates=[np.nan])
    with pytest.raises(ValueError, match="xmin_candidates: every candidate leaves"):
        PowerLaw.fit(GOOD, xmin_candidates=[10 * float(GOOD.max())])


def test_powerlaw_methods() -> None:
    fit = PowerLaw.fit(GOOD)
    with pytest.raises(ValueError, match="n must be >= 0"):
        fit.sample(-1)
    with pytest.raises(TypeError, match="n must be an int"):
        fit.sample(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_boot must be >= 1"):
        gof_pvalue(fit, 0)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        fit.gof_pvalue(5, workers=0)
    bare = PowerLaw(
        alpha=2.0, xmin=1.0, sigma=0.1, ks=0.1, n_tail=10, n=10, loglikelihood=0.0, discrete=False
    )
    with pytest.raises(ValueError, match=r"fit must come from PowerLaw\.fit"):
        bare.gof_pvalue(5)
    with pytest.raises(ValueError, match=r"fit must come from PowerLaw\.fit"):
        compare(bare, "exponential")


def test_compare() -> None:
    fit = PowerLaw.fit(GOOD)
    with pytest.raises(ValueError, match="alternative must be one of"):
        compare(fit, "gamma")
    with pytest.raises(ValueError, match="params for lognormal must be a mapping with keys"):
        compare(fit, "lognormal", params={"mu": 1.0})
    with pytest.raises(ValueError, match=r"params\['sigma'\] must be positive"):
        compare(fit, "lognormal", params={"mu": 1.0, "sigma": -1.0})
    with pytest.raises(ValueError, match="params must be finite"):
        compare(fit, "exponential", params={"Lambda": math.inf})


@pytest.mark.parametrize("fn", [fit_spectrum, fit_eigengaps])
def test_spectrum_inputs(fn: Callable[..., Any]) -> None:
    f = fn
    ev = rank_law(100, 1.0)
    with pytest.raises(ValueError, match="eigenvalues must be finite"):
        f(np.append(ev, np.nan))
    with pytest.raises(ValueError, match="eigenvalues must be finite"):
        f(np.append(ev, -np.inf))
    with pytest.raises(ValueError, match="at least 2 positive"):
        f(np.array([1.0, 0.0, -1.0]))
    with pytest.raises(ValueError, match="k must be >= 2"):
        f(ev, 1)
    with pytest.raises(ValueError, match="k=500 exceeds the number of positive"):
        f(ev, 500)
    with pytest.raises(TypeError, match="k must be an int"):
        f(ev, 10.5)
    with pytest.raises(ValueError, match="alpha must be one of the tabulated KS levels"):
        f(ev, alpha=0.07)
    with pytest.raises(ValueError, match="eigenvalues must have at least 1"):
        f(np.array([]))


def test_spectrum_k_counts_positive_values_only() -> None:
    ev = np.concatenate([rank_law(10, 1.0), -np.ones(50)])
    with pytest.raises(ValueError, match="k=11 exceeds the number of positive eigenvalues"):
        fit_spectrum(ev, 11)
    with pytest.raises(ValueError, match="cannot decide: the top k=6 values are all equal"):
        fit_spectrum(np.full(6, 2.0))
    with pytest.raises(ValueError, match="at least 2 positive gaps"):
        fit_eigengaps(np.array([2.0, 2.0, 1.0]))


def test_ks_critical_value_inputs() -> None:
    with pytest.raises(ValueError, match="alpha must be one of the tabulated KS levels"):
        ks_critical_value(100, alpha=0.5)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        ks_critical_value(100, alpha="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be >= 1"):
        ks_critical_value(0)
    with pytest.raises(TypeError, match="n must be an int"):
        ks_critical_value(True)


def test_tail_tests_inputs() -> None:
    good = np.random.default_rng(0).standard_normal((2, 50))
    with pytest.raises(ValueError, match=r"samples\[1\] must be finite"):
        tail_tests([good[0], np.append(good[1], np.nan)])
    with pytest.raises(ValueError, match=r"samples\[0\] must have at least 8"):
        tail_tests([good[0][:5]])
    with pytest.raises(ValueError, match="samples must be a 2-D array"):
        tail_tests(good[0])
    with pytest.raises(ValueError, match="samples must hold at least one sample"):
        tail_tests([])
    with pytest.raises(ValueError, match="alpha must be one of"):
        tail_tests(good, alpha=0.3)
    with pytest.raises(ValueError, match="gaussian_test must be"):
        tail_tests(good, gaussian_test="anderson")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hill_fraction must lie in"):
        tail_tests(good, hill_fraction=1.5)


def test_hill_inputs() -> None:
    with pytest.raises(ValueError, match="k must be at most len"):
        hill_estimator(np.arange(1.0, 11.0), 10)
    with pytest.raises(ValueError, match="k must be >= 1"):
        hill_estimator(np.arange(1.0, 11.0), 0)
    with pytest.raises(ValueError, match="x must be positive"):
        hill_estimator(np.array([1.0, -1.0, 2.0]), 1)
