"""The findings table: each row's verdict logic on synthetic spectra and samples whose answer is
known, the verdict over seeds, and a smoke run of the table."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fastspec.analysis.findings import (
    FINDINGS,
    FINDINGS_QUICK,
    SETTINGS,
    FindingsReport,
    Measurement,
    run_findings,
    verdict,
)
from fastspec.stats import fit_spectrum, tail_tests

K = 200
RANKS = np.arange(1, K + 1, dtype=np.float64)


def power_law(s: float = 1.0) -> np.ndarray:
    """An exact rank law lambda_k = k^-s: power-law for P1's test."""
    return RANKS**-s


def not_power_law() -> np.ndarray:
    """An exponentially decaying spectrum: not power-law for P1's test."""
    return np.exp(-RANKS / 40.0)


def test_the_synthetic_spectra_are_what_they_claim() -> None:
    for s in (1.0, 1.1, 1.2, 1.3):
        assert fit_spectrum(power_law(s)).is_power_law
    assert not fit_spectrum(not_power_law()).is_power_law
    assert fit_spectrum(power_law(1.0)).s < fit_spectrum(power_law(1.1)).s


def _tails(kind_heavy: dict[str, bool], seed: int = 0) -> dict[str, dict[str, float]]:
    """Tail fractions measured by P2's tests on Pareto (heavy) or Gaussian samples."""
    rng = np.random.default_rng(seed)
    out = {}
    for kind, heavy in kind_heavy.items():
        if heavy:
            samples = (rng.pareto(1.5, (20, 2000)) + 1.0) * rng.choice([-1, 1], (20, 2000))
        else:
            samples = rng.normal(size=(20, 2000))
        t = tail_tests(samples)
        out[kind] = {"frac_power_law": t.frac_power_law, "frac_gaussian": t.frac_gaussian}
    return out


def _m(name: str, eig: np.ndarray | None = None, cov: np.ndarray | None = None,
       tails: dict[str, dict[str, float]] | None = None) -> Measurement:  # fmt: skip
    eig = power_law() if eig is None else eig
    return Measurement(
        setting=name, seed=0, eigenvalues=eig, fit=fit_spectrum(eig), test_error=0.0,
        covariance=cov, covariance_fit=None if cov is None else fit_spectrum(cov),
        tails=tails or {},
    )  # fmt: skip


PL, NOT = power_law(), not_power_law()
HEAVY_DIM = {"dimension_wise": True, "iteration_wise": False, "noise": False}
ALL_HEAVY = {"dimension_wise": True, "iteration_wise": True, "noise": True}
NONE_HEAVY = {"dimension_wise": False, "iteration_wise": False, "noise": False}

#: finding → (a world where P1's / P2's claim holds, a world where it does not)
WORLDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "random_vs_trained": ({"init": NOT, "fcn": PL}, {"init": PL, "fcn": NOT}),
    "depth": ({"depth1": NOT, "fcn": PL}, {"depth1": PL, "fcn": PL}),
    "width": ({"width30": NOT, "width50": PL, "fcn": PL},
              {"width30": NOT, "width50": NOT, "fcn": PL}),
    "data_size": ({"n600": NOT, "n800": PL, "fcn": PL}, {"n600": PL, "n800": PL, "fcn": PL}),
    "batch_slope": ({"fcn": power_law(1.0), "b512": power_law(1.1), "b640": power_law(1.2)},
                    {"fcn": power_law(1.2), "b512": power_law(1.1), "b640": power_law(1.0)}),
    "batch_break": ({"fcn": PL, "b512": PL, "b640": PL, "b768": NOT},
                    {"fcn": PL, "b512": PL, "b640": PL, "b768": PL}),
    "adam": ({"fcn": power_law(1.0), "adam": power_law(1.3)},
             {"fcn": power_law(1.3), "adam": power_law(1.0)}),
    "label_noise": ({"fcn": PL, "noise40": NOT, "noise80": NOT},
                    {"fcn": PL, "noise40": PL, "noise80": NOT}),
    "activation": ({"linear": NOT, "fcn": PL, "batchnorm": PL},
                   {"linear": PL, "fcn": PL, "batchnorm": PL}),
    "noise_covariance": ({"grad_b100": ("cov", PL), "grad_b200": ("cov", PL),
                          "grad_b300": ("cov", PL)},
                         {"grad_b100": ("cov", PL), "grad_b200": ("cov", NOT),
                          "grad_b300": ("cov", PL)}),
    "dimension_wise": ({"grad_b100": ("tails", HEAVY_DIM)},
                       {"grad_b100": ("tails", NONE_HEAVY)}),
    "iteration_wise": ({"grad_b100": ("tails", HEAVY_DIM)},
                       {"grad_b100": ("tails", ALL_HEAVY)}),
}  # fmt: skip


def _world(spec: dict[str, Any]) -> dict[str, Measurement]:
    out = {}
    for name, v in spec.items():
        if isinstance(v, tuple) and v[0] == "cov":
            out[name] = _m(name, cov=v[1])
        elif isinstance(v, tuple):
            out[name] = _m(name, tails=_tails(v[1]))
        else:
            out[name] = _m(name, eig=v)
    return out


def test_every_finding_has_worlds() -> None:
    assert {f.key for f in FINDINGS} == set(WORLDS)
    for f in FINDINGS:
        assert set(f.settings) <= set(SETTINGS)


def test_hessian_spectra_are_computed_exactly_where_a_row_reads_them() -> None:
    """A setting skips its Hessian (the costliest step) only when no Hessian row reads it."""
    read = {n for f in FINDINGS if f.what == "hessian" for n in f.settings}
    assert {n for n, s in SETTINGS.items() if s.hessian} == read
    assert not SETTINGS["grad_b100"].hessian and SETTINGS["fcn"].hessian


@pytest.mark.parametrize("finding", FINDINGS, ids=lambda f: f.key)
def test_verdict_logic_on_known_worlds(finding: Any) -> None:
    true_world, false_world = (_world(w) for w in WORLDS[finding.key])
    assert finding.holds(true_world) is True
    assert finding.holds(false_world) is False
    outcomes = {
        "agrees": [true_world, true_world, true_world],
        "disagrees": [false_world, false_world, false_world],
        "undecided": [true_world, false_world, true_world],
    }
    for expected, seeds in outcomes.items():
        report = FindingsReport(
            settings=replace(FINDINGS_QUICK, findings=(finding.key,), seeds=3),
            measurements=dict(enumerate(seeds)),
            environment={"device": "cpu", "threads": 1},
            seconds=0.0,
        )
        (row,) = report.rows()
        assert row["verdict"] == expected
        assert row["holds"]["per_seed"] == [w is true_world for w in seeds]


def test_verdict() -> None:
    assert verdict([True, True]) == "agrees"
    assert verdict([False]) == "disagrees"
    assert verdict([True, False, False]) == "undecided"
    with pytest.raises(ValueError, match="per_seed"):
        verdict([])


@pytest.mark.parametrize(
    ("change", "error"),
    [({"findings": ("nope",)}, ValueError), ({"seeds": 0}, ValueError), ({"k": 2.0}, TypeError),
     ({"findings": ()}, ValueError), ({"alpha": 1.5}, ValueError)],
)  # fmt: skip
def test_bad_settings(change: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(change))):
        replace(FINDINGS_QUICK, **change).validated()


def test_quick_table_smoke(tmp_path: Any) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    s = replace(FINDINGS_QUICK, findings=("random_vs_trained", "dimension_wise"), epochs=1)
    report = run_findings(s, out=tmp_path / "f")
    assert report.seeds == (0, 1)
    text = report.summary()
    for row in report.rows():
        assert row["verdict"] in ("agrees", "disagrees", "undecided")
        assert row["key"] in text
        assert (tmp_path / "f" / f"{row['key']}.png").is_file()
    # the rows are read off the measurements the report keeps
    init = [report.measurements[seed]["init"].fit for seed in report.seeds]
    trained = [report.measurements[seed]["fcn"].fit for seed in report.seeds]
    expected = [not a.is_power_law and b.is_power_law for a, b in zip(init, trained)]
    assert report.rows()[0]["holds"]["per_seed"] == expected
    assert (tmp_path / "f" / "report.json").is_file()
    # the P2-only setting computes no Hessian; its tails are measured all the same
    for seed in report.seeds:
        m = report.measurements[seed]["grad_b100"]
        assert m.eigenvalues is None and m.fit is None and set(m.tails) == set(HEAVY_DIM)


def test_power_law_tail_test_alone_does_not_separate_gaussian_samples() -> None:
    """Why P2's rows read the Gaussian test: Gaussian samples pass the power-law tail test too."""
    gauss = _tails({"x": False})["x"]
    heavy = _tails({"x": True})["x"]
    assert gauss["frac_power_law"] > 0.5 and heavy["frac_power_law"] > 0.5
    assert gauss["frac_gaussian"] > 0.5 > heavy["frac_gaussian"]
