"""SpectrumTracker and analyze_gradients: numbers from the underlying API, round trips."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from curvature_models import make_data, make_model
from scipy import stats
from torch import nn

from fastspec.analysis import GradientReport, SpectrumTracker, analyze_gradients, analyze_hessian
from fastspec.analysis.gradients import record_minibatch_gradients
from fastspec.grads import (
    dimension_wise_test,
    gradient_covariance_spectrum,
    iteration_wise_test,
    noise_test,
)
from fastspec.stats import fit_spectrum

OPTS = {"hvp": "double_backward", "dtype": torch.float64, "trace_matvecs": 8, "seed": 3}


def test_tracker_rows_are_analyze_hessian_numbers(tmp_path: Path) -> None:
    model = make_model("mlp")
    data = make_data("mlp", 30)
    loss = nn.CrossEntropyLoss()
    tracker = SpectrumTracker(model, loss, data, k=6, **OPTS)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    snapshots = []
    for step in range(4):
        snapshots.append(copy.deepcopy(model))
        report = tracker.record(step, test_loss=float(loss(model(data[0]), data[1]).detach()))
        assert report.density is None
        opt.zero_grad()
        loss(model(data[0]), data[1]).backward()
        opt.step()
    assert tracker.steps.tolist() == [0, 1, 2, 3]
    for row, snap in zip(tracker.rows, snapshots):
        again = analyze_hessian(snap, loss, data, k=6, density_probes=None, **OPTS)
        fit = again.spectrum_fit
        assert fit is not None and again.trace is not None
        assert row["lambda_max"] == again.lambda_max
        assert (row["ks"], row["s"], row["beta"]) == (fit.ks, fit.s, fit.beta)
        assert (row["trace"], row["trace_se"]) == (again.trace.estimate, again.trace.std_error)
    r = tracker.correlations("test_loss")
    y = tracker.column("test_loss")
    for name in ("lambda_max", "trace", "s", "ks"):
        assert r[name] == pytest.approx(stats.pearsonr(tracker.column(name), y).statistic)
    out = tracker.save(tmp_path / "t")
    assert json.loads((out / "report.json").read_text()) == json.loads(
        json.dumps(tracker.to_dict())
    )
    assert (out / "curves.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="clashes"):
        tracker.record(9, ks=1.0)
    with pytest.raises(ValueError, match="no density"):
        SpectrumTracker(model, loss, data, density_probes=2)


def test_correlations_need_three_points() -> None:
    model = make_model("mlp")
    tracker = SpectrumTracker(model, nn.CrossEntropyLoss(), make_data("mlp", 20), k=4, **OPTS)
    tracker.record(0, test_loss=1.0)
    assert all(math.isnan(v) for v in tracker.correlations().values())


def test_gradient_report_is_the_grads_api(tmp_path: Path) -> None:
    model = make_model("mlp")
    data = make_data("mlp", 48)
    loss = nn.CrossEntropyLoss()
    report = analyze_gradients(
        model, loss, data, k=10, noise_batch_size=8, num_steps=12, num_coordinates=20, seed=1
    )
    cov = gradient_covariance_spectrum(model, loss, data, k=10)
    torch.testing.assert_close(report.covariance.eigenvalues, cov.eigenvalues, rtol=0, atol=0)
    assert report.covariance_fit == fit_spectrum(cov.eigenvalues)
    noise = gradient_covariance_spectrum(model, loss, data, k=10, noise_batch_size=8)
    torch.testing.assert_close(report.noise.eigenvalues, noise.eigenvalues, rtol=0, atol=0)  # type: ignore[union-attr]
    rec = record_minibatch_gradients(
        model, loss, data, num_steps=12, batch_size=8, num_coordinates=20, seed=1
    )
    for name, test in (("dimension_wise", dimension_wise_test),
                       ("iteration_wise", iteration_wise_test), ("noise", noise_test)):  # fmt: skip
        assert report.tails[name].to_dict() == test(rec).to_dict()
    # the noise is the minibatch gradient minus the full gradient, at fixed parameters
    torch.testing.assert_close(
        rec.noise, rec.minibatch - rec.full_gradient()[rec.coordinates], rtol=1e-10, atol=1e-12
    )
    assert all(p.grad is None for p in model.parameters())  # restored
    out = report.save(tmp_path / "g")
    loaded = json.loads((out / "report.json").read_text())
    assert loaded == json.loads(json.dumps(report.to_dict()))
    assert GradientReport.load(out).to_dict() == report.to_dict()
    assert (out / "covariance.png").is_file() and (out / "tails.png").is_file()
    assert "covariance" in report.summary()


def test_gradient_bad_inputs() -> None:
    model, data, loss = make_model("mlp"), make_data("mlp", 16), nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match="batch_size"):
        record_minibatch_gradients(model, loss, data, num_steps=4, batch_size=17)
    with pytest.raises(ValueError, match="num_steps"):
        record_minibatch_gradients(model, loss, data, num_steps=0, batch_size=4)
    r = analyze_gradients(model, loss, data, k=5, noise_batch_size=None, num_steps=4, batch_size=4)
    assert r.noise is None and "iteration_wise" not in r.tails  # 4 steps < 8: noted, not run
    assert any("iteration-wise" in n for n in r.notes)
    assert np.isfinite(r.covariance.eigenvalues.numpy()).all()


def test_tracker_refuses_bad_settings_at_construction() -> None:
    """k=0, k > P and unknown options used to fail only at the first record()."""
    model, loss, data = make_model("mlp"), nn.CrossEntropyLoss(), make_data("mlp", 20)
    P = sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="k must be >= 2"):
        SpectrumTracker(model, loss, data, k=0)
    with pytest.raises(ValueError, match=f"k must satisfy 2 <= k < P = {P}"):
        SpectrumTracker(model, loss, data, k=P + 1)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['tolerance'\]"):
        SpectrumTracker(model, loss, data, k=4, tolerance=1e-6)


def test_a_bad_step_leaves_the_tracker_savable(tmp_path: Path) -> None:
    """record(step="a") used to be stored, after which save() always failed."""
    model, loss, data = make_model("mlp"), nn.CrossEntropyLoss(), make_data("mlp", 20)
    tracker = SpectrumTracker(
        model, loss, data, k=6, trace_matvecs=None, dtype=torch.float64, hvp="double_backward"
    )
    with pytest.raises(TypeError, match="step must be an int"):
        tracker.record("a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metric test_loss"):
        tracker.record(0, test_loss="low")  # type: ignore[arg-type]
    assert tracker.rows == []
    tracker.record(np.int64(1), test_loss=0.5)
    tracker.save(tmp_path / "t", overwrite=False)
    assert json.loads((tmp_path / "t" / "report.json").read_text())["rows"][0]["step"] == 1
