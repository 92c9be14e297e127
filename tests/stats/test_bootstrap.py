"""fastspec.stats.gof_pvalue: Clauset's semi-parametric bootstrap, checked replicate by replicate
against a plain numpy re-implementation, and for calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from stats_oracles import continuous_fit_at, numpy_scan, pareto_above_lognormal

from fastspec.stats import PowerLaw, gof_pvalue
from fastspec.stats import continuous as cont


def _replicates_by_hand(fit: PowerLaw, n_boot: int, seed: int, fixed: bool) -> np.ndarray:
    """The replicates rebuilt from the documented recipe (same seeds), refitted by numpy loops."""
    x = np.sort(fit.data)
    n = x.size
    body = x[x < fit.xmin]
    out = []
    for ss in np.random.SeedSequence(seed).spawn(n_boot):
        g = np.random.default_rng(ss)
        nt = g.binomial(n, fit.n_tail / n)
        tail = fit.xmin * (1 - g.random(nt)) ** (-1 / (fit.alpha - 1))
        head = body[g.integers(0, body.size, size=n - nt)]
        xb = np.concatenate([head, tail])
        if fixed:
            out.append(continuous_fit_at(xb, fit.xmin)[1])
        else:
            ref = numpy_scan(xb)
            out.append(ref["ks"][ref["best"]])
    return np.array(out)


@pytest.mark.parametrize("fixed", [False, True])
def test_replicates_match_a_plain_reimplementation(fixed: bool) -> None:
    x = pareto_above_lognormal(600, seed=0)
    fit = PowerLaw.fit(x, xmin=3.0) if fixed else PowerLaw.fit(x)
    res = fit.gof_pvalue(12, seed=42)
    expected = _replicates_by_hand(fit, 12, 42, fixed)
    np.testing.assert_allclose(res.ks_boot, expected, rtol=1e-9)
    assert res.n_failed == 0 and res.n_boot == 12
    assert res.p == np.mean(expected >= fit.ks)
    assert res.ks == fit.ks


def test_deterministic_for_a_seed_and_independent_of_workers() -> None:
    fit = PowerLaw.fit(pareto_above_lognormal(1000, seed=1))
    a = gof_pvalue(fit, 40, seed=7)
    b = fit.gof_pvalue(40, seed=7, workers=1)
    c = fit.gof_pvalue(40, seed=np.random.SeedSequence(7))
    np.testing.assert_array_equal(a.ks_boot, b.ks_boot)
    np.testing.assert_array_equal(a.ks_boot, c.ks_boot)
    assert a.p == b.p
    assert not np.array_equal(a.ks_boot, fit.gof_pvalue(40, seed=8).ks_boot)
    assert set(a.to_dict()) == {"p", "ks", "n_boot", "n_failed"}


def test_rejects_non_power_laws_accepts_power_laws() -> None:
    g = np.random.default_rng(2)
    expo = g.exponential(1.0, size=2000) + 1.0
    assert PowerLaw.fit(expo, xmin=1.0).gof_pvalue(100, seed=0).p == 0.0
    pareto = 1.0 + g.pareto(1.5, size=2000)  # Pareto with alpha = 2.5, xmin = 1
    assert PowerLaw.fit(pareto).gof_pvalue(100, seed=0).p >= 0.1
    # a steep (alpha = 3.5) tail: Clauset's fit passes; the fit the alpha < 3 cap of the
    # powerlaw package forces (xmin in the lognormal body) is rejected
    steep = pareto_above_lognormal(2000, seed=0, alpha=3.5)
    assert PowerLaw.fit(steep).gof_pvalue(100, seed=0).p >= 0.1
    capped = PowerLaw.fit(steep, alpha_range=(0, 3))
    assert capped.gof_pvalue(100, seed=0).p <= 0.01


def test_discrete_bootstrap_is_seeded() -> None:
    g = np.random.default_rng(3)
    x = stats.zipf.rvs(2.5, size=400, random_state=g).astype(float)
    fit = PowerLaw.fit(x, discrete=True, discrete_estimator="approx")
    a = fit.gof_pvalue(15, seed=1)
    np.testing.assert_array_equal(a.ks_boot, fit.gof_pvalue(15, seed=1).ks_boot)
    assert a.n_failed == 0 and 0.0 <= a.p <= 1.0 and a.p > 0.05


@pytest.mark.slow
def test_p_values_are_calibrated_under_the_null() -> None:
    """Pure power-law data: the p-values spread over (0, 1) (roughly uniform)."""
    g = np.random.default_rng(4)
    ps = []
    for _ in range(40):
        x = 1.0 + g.pareto(1.5, size=300)
        ps.append(PowerLaw.fit(x).gof_pvalue(50, seed=int(g.integers(1 << 30))).p)
    ps_arr = np.array(ps)
    assert 0.3 < ps_arr.mean() < 0.75
    assert np.mean(ps_arr <= 0.1) <= 0.25


@pytest.mark.parametrize("alpha_range", [(1.0, np.inf), (0.0, 3.0)])
def test_batched_refits_equal_the_per_replicate_path(alpha_range: tuple[float, float]) -> None:
    """Continuous fits over the default candidates refit the replicates in native batches; the
    answers are those of refitting each replicate alone, bit for bit, chunking included."""
    from fastspec.stats import bootstrap

    fit = PowerLaw.fit(pareto_above_lognormal(800, seed=4), alpha_range=alpha_range)
    assert fit.options is not None and bootstrap.batchable(fit.options)
    res = gof_pvalue(fit, 50, seed=11)
    n, body = fit.n, fit.data[: fit.n - fit.n_tail]

    def draw(ss: np.random.SeedSequence) -> np.ndarray:
        g = np.random.default_rng(ss)
        nt = int(g.binomial(n, fit.n_tail / n))
        tail = cont.sample(nt, fit.alpha, fit.xmin, g)  # the module's own draws
        return np.concatenate([body[g.integers(0, body.size, size=n - nt)], tail])

    seeds = np.random.SeedSequence(11).spawn(50)
    loop = bootstrap.ks_boot_per_replicate(draw, seeds, fit.options, 2)
    np.testing.assert_array_equal(res.ks_boot, loop)
    for chunk, workers in [(7, 1), (64, 2)]:
        batched = bootstrap.ks_boot_batched(draw, seeds, alpha_range, workers, chunk=chunk)
        np.testing.assert_array_equal(batched, loop)
    assert res.n_failed == 0 and res.p == np.mean(loop >= fit.ks)


def test_batched_path_marks_unfittable_replicates_failed() -> None:
    from fastspec.stats import bootstrap

    seeds = np.random.SeedSequence(0).spawn(3)
    data = {
        0: np.array([1.0, 2.0, 3.0, 5.0, 8.0]),  # fittable
        1: np.array([1.0, 1.0, 2.0, 2.0, 2.0]),  # two distinct values: no candidate
        2: np.array([1.0, 2.0, 3.0, 5.0, np.inf]),  # an overflowing draw
    }
    order = {id(s): i for i, s in enumerate(seeds)}
    ks = bootstrap.ks_boot_batched(lambda ss: data[order[id(ss)]], seeds, (1.0, np.inf), 1)
    assert np.isfinite(ks[0]) and np.isnan(ks[1]) and np.isnan(ks[2])


@pytest.mark.parametrize("discrete", [False, True])
def test_progress_counts_every_replicate_in_memory_bounded_chunks(
    discrete: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are capped by _CHUNK_BYTES; progress reports each chunk (each replicate when
    discrete), ending at n_boot, and does not change the result."""
    from fastspec.stats import bootstrap

    g = np.random.default_rng(3)
    x = np.floor(g.pareto(1.5, 400) + 1) if discrete else g.pareto(1.5, 400) + 1
    fit = PowerLaw.fit(x, discrete=discrete)
    monkeypatch.setattr(bootstrap, "_CHUNK_BYTES", 3 * bootstrap._BYTES_PER_POINT * x.size)
    calls: list[tuple[int, int]] = []
    res = gof_pvalue(fit, 10, seed=4, progress=lambda done, total: calls.append((done, total)))
    step = 1 if discrete else 3
    assert calls == [(min(d, 10), 10) for d in range(step, 10 + step, step)]
    np.testing.assert_array_equal(res.ks_boot, gof_pvalue(fit, 10, seed=4).ks_boot)
    with pytest.raises(TypeError, match="progress"):
        gof_pvalue(fit, 10, seed=4, progress=3)  # type: ignore[arg-type]
