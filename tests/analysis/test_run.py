"""fastspec run over seeds: deterministic, its spreads are those of direct API calls, its
progress stays plain off a terminal, and it refuses bad settings."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fastspec.analysis import QUICK, RunReport, analyze_hessian, digits, run_main_job
from fastspec.analysis.spread import count, spread

pytest.importorskip("sklearn")

#: the smallest job that still trains and analyses: one model, two seeds
TINY = replace(
    QUICK, models=("fcn",), tracker_models=(), tracker_epochs=(), gradients=False, seeds=2, k=8, epochs=1,
    max_samples=64, density_probes=1, density_steps=4, seed=3,
)  # fmt: skip


def _strip_times(d: Any) -> Any:
    if isinstance(d, dict):
        return {
            k: _strip_times(v)
            for k, v in d.items()
            if k not in ("seconds", "timings", "environment")
        }
    if isinstance(d, list):
        return [_strip_times(v) for v in d]
    return d


@pytest.fixture(scope="module")
def report() -> RunReport:
    return run_main_job(TINY)


def test_same_seed_same_report(report: RunReport) -> None:
    again = run_main_job(TINY)
    assert _strip_times(again.to_dict()) == _strip_times(report.to_dict())
    assert report.seeds == (3, 4)


def test_spreads_are_those_of_direct_calls(report: RunReport) -> None:
    s = TINY
    direct: dict[str, list[Any]] = {"init": [], "trained": []}
    for seed in (3, 4):
        train_set, test_set = digits.digits_split(seed=seed)
        torch.manual_seed(seed)
        model = digits.fcn().eval()
        opts = {
            "k": s.k, "tol": s.tol, "dtype": torch.float32, "trace_matvecs": s.trace_matvecs,
            "seed": seed, "max_samples": s.max_samples, "block_size": s.block_size,
            "density_probes": s.density_probes, "density_steps": s.density_steps,
            "hvp": "double_backward",
        }  # fmt: skip
        loss = nn.CrossEntropyLoss()
        direct["init"].append(analyze_hessian(model, loss, [train_set], **opts))
        digits.train(model, train_set, test_set, epochs=s.epochs, seed=seed)
        direct["trained"].append(analyze_hessian(model, loss, [train_set], **opts))
    spreads = report.spreads()["fcn"]
    for stage, key in (("random_init", "init"), ("trained", "trained")):
        reps = direct[key]
        lam = [r.lambda_max for r in reps]
        s_hat = [r.spectrum_fit.s for r in reps]
        ks = [r.spectrum_fit.ks for r in reps]
        trace = [r.trace.estimate for r in reps]
        for name, values in (("lambda_max", lam), ("s", s_hat), ("ks", ks), ("trace", trace)):
            got = spreads[stage][name]
            np.testing.assert_allclose(got["values"], values, rtol=0, atol=0)
            np.testing.assert_allclose(got["mean"], np.mean(values), rtol=1e-12)
            np.testing.assert_allclose(got["std"], np.std(values, ddof=1), rtol=1e-9)
        pl = [r.spectrum_fit.is_power_law for r in reps]
        assert spreads[stage]["power_law"]["holds"] == sum(pl)
        assert spreads[stage]["power_law"]["of"] == 2
    shown = [
        (not a.spectrum_fit.is_power_law) and b.spectrum_fit.is_power_law
        for a, b in zip(direct["init"], direct["trained"])
    ]
    assert report.findings()["fcn"]["shown"]["per_seed"] == shown
    assert f"shown in {sum(shown)} of 2 seeds" in report.summary()


def test_a_seed_that_did_not_learn_is_left_out_of_the_trained_rows(report: RunReport) -> None:
    assert all(r["fcn"].training.learned for r in report.runs.values())
    assert report.not_learned("fcn") == []
    runs = dict(report.runs)
    failed = runs[4]["fcn"]
    runs[4] = {"fcn": replace(failed, training=replace(failed.training, train_error=0.9))}
    broken = replace(report, runs=runs)
    assert broken.not_learned("fcn") == [4]
    sp, full = broken.spreads()["fcn"], report.spreads()["fcn"]
    assert sp["random_init"] == full["random_init"]  # every seed has a random init
    assert sp["trained"]["lambda_max"]["values"] == [report.runs[3]["fcn"].trained.lambda_max]
    assert sp["trained"]["power_law"]["of"] == 1
    f = broken.findings()["fcn"]
    assert f["shown"]["of"] == 1 and f["not_learned"] == [4]
    assert "fcn, seed 4: training failed (train error 90.0%" in broken.summary()
    assert broken.to_dict()["seeds"]["4"]["fcn"]["training"]["learned"] is False


def test_report_json_keeps_every_seed(report: RunReport) -> None:
    d = report.to_dict()
    assert set(d["seeds"]) == {"3", "4"}
    for seed in ("3", "4"):
        assert d["seeds"][seed]["fcn"]["trained"]["eigenvalues"]


def test_progress_off_a_terminal_is_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    run_main_job(replace(TINY, seeds=1), progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "[1/2, " in err and "[2/2, " in err
    assert len(err.splitlines()) < 60


def test_spread_and_count() -> None:
    sp = spread([1.0, 2.0, None, 3.0])
    assert sp.mean == 2.0 and sp.std == 1.0 and math.isnan(sp.values[2])
    assert spread([5.0]).std == 0.0
    assert math.isnan(spread([None]).mean) and spread([None]).text() == "-"
    assert count([True, False, True]).text() == "2 of 3 seeds"


@pytest.mark.parametrize(
    ("change", "error"),
    [({"seeds": 0}, ValueError), ({"seeds": 1.5}, TypeError), ({"k": 1}, ValueError),
     ({"dtype": "float16"}, ValueError), ({"tracker_k": 5}, ValueError)],
)  # fmt: skip
def test_bad_settings(change: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(change))):
        replace(TINY, **change).validated()


def test_quick_tracker_fits_every_checkpoint() -> None:
    """--quick's tracker K admits P1's fit (K >= min_k), so its slope and d_ks are numbers."""
    report = run_main_job(replace(QUICK, models=("fcn",), gradients=False, seeds=1))
    tracker = report.models["fcn"].tracker
    assert tracker is not None and len(tracker.rows) == len(QUICK.tracker_epochs)
    assert np.isfinite(tracker.column("s")).all() and np.isfinite(tracker.column("ks")).all()
