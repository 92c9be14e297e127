"""fastspec.stats.tail_tests / hill_estimator: per-sample statistics against scipy, a numpy loop
and the plain numpy xmin scan."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from stats_oracles import numpy_scan

from fastspec.stats import hill_estimator, tail_tests


def _hill_loop(x: np.ndarray, k: int) -> float:
    v = sorted(x, reverse=True)
    xi = sum(math.log(v[i] / v[k]) for i in range(k)) / k
    return 1 + 1 / xi


def test_hill_matches_loop_and_recovers_the_exponent() -> None:
    g = np.random.default_rng(0)
    x = 1.0 + g.pareto(1.5, 100_000)  # density exponent 2.5
    for k in (10, 500, 1000):
        assert hill_estimator(x, k) == pytest.approx(_hill_loop(x, k), rel=1e-12)
    # Hill's xi has standard error xi / sqrt(k): alpha - 1 within a few of those
    assert hill_estimator(x, 1000) == pytest.approx(2.5, abs=4 * 1.5 / math.sqrt(1000))
    assert hill_estimator(np.array([1.0, 2.0, 2.0, 2.0]), 2) == math.inf


def _rows() -> np.ndarray:
    g = np.random.default_rng(1)
    gauss = g.standard_normal((6, 2000))
    heavy = g.standard_t(1.5, size=(6, 2000))  # power-law tails, alpha = 2.5
    return np.vstack([gauss, heavy])


def test_statistics_match_independent_computations() -> None:
    rows = _rows()
    res = tail_tests(rows)
    assert res.n.tolist() == [2000] * 12
    for i, v in enumerate(rows):
        ref = numpy_scan(np.abs(v))
        b = ref["best"]
        assert res.pl_xmin[i] == ref["xmins"][b]
        assert res.pl_alpha[i] == pytest.approx(ref["alphas"][b], rel=1e-12)
        assert res.pl_ks[i] == pytest.approx(ref["ks"][b], rel=1e-10)
        assert res.pl_n_tail[i] == np.sum(np.abs(v) >= ref["xmins"][b])
        assert res.pl_ks_critical[i] == pytest.approx(1.36 / math.sqrt(res.pl_n_tail[i]))
        assert res.pl_pass[i] == (res.pl_ks[i] < res.pl_ks_critical[i])
        ks = stats.kstest(v, "norm", args=(v.mean(), v.std(ddof=1)))
        assert res.gauss_ks[i] == pytest.approx(ks.statistic, rel=1e-12)
        assert res.gauss_ks_p[i] == pytest.approx(ks.pvalue, rel=1e-10)
        nt = stats.normaltest(v)
        assert res.normal_stat[i] == pytest.approx(nt.statistic, rel=1e-12)
        assert res.normal_p[i] == pytest.approx(nt.pvalue, rel=1e-10, abs=1e-300)
        assert res.hill_alpha[i] == pytest.approx(_hill_loop(np.abs(v), 200), rel=1e-12)
    assert res.frac_power_law == pytest.approx(res.pl_pass.mean())
    assert res.frac_gaussian == pytest.approx(res.normal_pass.mean())
    assert res.frac_gaussian_ks == pytest.approx(res.gauss_ks_pass.mean())


def test_separates_gaussian_from_heavy_tailed_samples() -> None:
    rows = _rows()
    gauss, heavy = tail_tests(rows[:6]), tail_tests(rows[6:])
    assert gauss.frac_gaussian >= 5 / 6 and gauss.frac_gaussian_ks >= 5 / 6
    assert heavy.frac_gaussian == 0.0 and heavy.frac_gaussian_ks == 0.0
    assert heavy.frac_power_law >= 5 / 6
    assert np.all(np.abs(heavy.pl_alpha - 2.5) < 0.6)
    assert np.all(heavy.hill_alpha < gauss.hill_alpha)


def test_inputs_list_ragged_tensor_and_zeros() -> None:
    torch = pytest.importorskip("torch")
    rows = _rows()[:3]
    a = tail_tests(rows, gaussian_test="shapiro")
    b = tail_tests([r for r in rows], gaussian_test="shapiro")
    c = tail_tests(torch.from_numpy(rows), gaussian_test="shapiro")
    assert a.to_dict() == b.to_dict() == c.to_dict()
    sw = stats.shapiro(rows[1])
    assert a.normal_stat[1] == pytest.approx(sw.statistic) and a.normal_p[1] == pytest.approx(
        sw.pvalue
    )
    ragged = tail_tests([rows[0][:500], rows[1]])
    assert ragged.n.tolist() == [500, 2000]
    # zeros are dropped from the magnitudes (a power law lives on x > 0), not from the Gaussian tests
    z = np.concatenate([rows[2], np.zeros(300)])
    with_zeros = tail_tests([z])
    assert with_zeros.pl_xmin[0] == a.pl_xmin[2] and with_zeros.pl_ks[0] == a.pl_ks[2]
    assert with_zeros.normal_p[0] != a.normal_p[2]
    json.dumps(a.to_dict())


def test_degenerate_sample_is_reported_not_raised() -> None:
    res = tail_tests([np.array([1.0, -1.0] * 10), np.linspace(-1, 1, 50)])
    assert math.isnan(res.pl_alpha[0]) and not res.pl_pass[0] and res.pl_n_tail[0] == 0
    assert math.isfinite(res.pl_alpha[1])


def test_alpha_level_sets_both_decisions() -> None:
    rows = _rows()
    strict = tail_tests(rows, alpha=0.01)
    assert np.allclose(strict.pl_ks_critical, 1.63 / np.sqrt(strict.pl_n_tail))
    assert np.array_equal(strict.normal_pass, strict.normal_p > 0.01)
    assert strict.alpha == 0.01
