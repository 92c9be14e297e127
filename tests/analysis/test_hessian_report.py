"""analyze_hessian: its numbers are the underlying API's, its report round-trips, it writes
atomically, and it refuses bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from curvature_models import dense_hessian, make_data, make_model
from torch import nn

from fastspec.analysis import HessianReport, analyze_hessian
from fastspec.curvature import hessian_density, hessian_eigs, hessian_trace
from fastspec.stats import fit_eigengaps, fit_spectrum

OPTS = {"hvp": "double_backward", "dtype": torch.float64}


@pytest.fixture(scope="module")
def problem() -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    return make_model("mlp"), nn.CrossEntropyLoss(), make_data("mlp", 40)


@pytest.fixture(scope="module")
def report(problem: tuple) -> HessianReport:
    model, loss, data = problem
    return analyze_hessian(
        model, loss, data, k=12, tol=1e-10, trace_matvecs=12, density_probes=3,
        density_steps=10, seed=5, label="mlp", **OPTS,
    )  # fmt: skip


def test_numbers_are_the_underlying_api_calls(problem: tuple, report: HessianReport) -> None:
    model, loss, data = problem
    eig = hessian_eigs(model, loss, data, 12, tol=1e-10, seed=5, **OPTS)
    np.testing.assert_array_equal(report.eigenvalues, eig.eigenvalues.numpy())
    np.testing.assert_array_equal(report.residuals, eig.residuals.numpy())
    assert report.matvecs["eigsh"] == eig.num_matvecs
    assert report.spectrum_fit == fit_spectrum(eig.eigenvalues)
    assert report.eigengap_fit == fit_eigengaps(eig.eigenvalues)
    tr = hessian_trace(model, loss, data, num_matvecs=12, seed=6, **OPTS)
    assert report.trace == tr
    dens = hessian_density(model, loss, data, num_probes=3, num_steps=10, seed=7, **OPTS)
    torch.testing.assert_close(report.density.nodes, dens.nodes, rtol=0, atol=0)  # type: ignore[union-attr]
    grid = torch.as_tensor(report.density_grid)
    np.testing.assert_array_equal(
        report.density_values, dens.density(grid, sigma=report.density_sigma).numpy()
    )
    assert report.settings["num_params"] == sum(p.numel() for p in model.parameters())
    assert report.lambda_max == report.eigenvalues[0]


def test_eigenvalues_match_a_dense_oracle(problem: tuple, report: HessianReport) -> None:
    model, loss, data = problem
    H = dense_hessian(model, loss, *data)
    top = torch.linalg.eigvalsh(H).flip(0)[:12].numpy()
    np.testing.assert_allclose(report.eigenvalues, top, rtol=1e-8, atol=1e-10)


def test_save_round_trip(report: HessianReport, tmp_path: Path) -> None:
    out = report.save(tmp_path / "rep")
    assert json.loads((out / "report.json").read_text()) == report.to_dict()
    assert HessianReport.load(out).to_dict() == report.to_dict()
    for name in ("spectrum.png", "ccdf.png", "density.png", "summary.txt"):
        assert (out / name).stat().st_size > 1000 or name == "summary.txt"
    assert (out / "summary.txt").read_text().strip() == report.summary()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no temporary left


def test_existing_target_and_failed_writes_leave_no_report(
    report: HessianReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        report.save(tmp_path / "taken")
    report.save(tmp_path / "taken", plots=False, overwrite=True)
    assert (tmp_path / "taken" / "report.json").is_file()

    from fastspec.analysis import plots

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "hessian_figures", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        report.save(tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_summary_states_the_decisions(report: HessianReport) -> None:
    text = report.summary()
    fit = report.spectrum_fit
    assert fit is not None
    assert f"d_ks = {fit.ks:.4f}" in text
    assert ("-> power-law" in text) == (fit.is_power_law or report.eigengap_fit.is_power_law)  # type: ignore[union-attr]


def test_no_trace_no_density(problem: tuple) -> None:
    model, loss, data = problem
    r = analyze_hessian(model, loss, data, k=4, trace_matvecs=None, density_probes=None, **OPTS)
    assert r.trace is None and r.density is None and r.density_grid.size == 0
    assert HessianReport.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()


@pytest.mark.parametrize(
    ("k", "error", "match"),
    [(1, ValueError, "k must be >= 2"), (75, ValueError, "k must satisfy"),
     (2.5, TypeError, "k must be an int"), (True, TypeError, "k must be an int")],
)  # fmt: skip
def test_bad_k(problem: tuple, k: object, error: type, match: str) -> None:
    model, loss, data = problem
    with pytest.raises(error, match=match):
        analyze_hessian(model, loss, data, k=k, **OPTS)  # type: ignore[arg-type]


def test_progress_goes_to_stderr(problem: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    model, loss, data = problem
    analyze_hessian(model, loss, data, k=3, trace_matvecs=4, density_probes=1, density_steps=4,
                    progress=True, label="mlp", **OPTS)  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out == ""
    for step in ("top-3 Hessian eigenpairs", "Hessian trace", "spectral density"):
        assert step in captured.err


def test_load_names_the_file_and_what_is_wrong(report: HessianReport, tmp_path: Path) -> None:
    """Raw KeyError / JSONDecodeError used to escape from load."""
    out = report.save(tmp_path / "rep", plots=False)
    good = json.loads((out / "report.json").read_text())
    cases = {
        "truncated": (out / "report.json").read_text()[:200],
        "missing": json.dumps({k: v for k, v in good.items() if k != "eigenvalues"}),
        "wrong kind": json.dumps({**good, "kind": "gradients"}),
        "not an object": "[1, 2]",
    }
    for name, text in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(text)
        with pytest.raises(ValueError, match=str(path)) as info:
            HessianReport.load(path)
        assert not isinstance(info.value.__cause__, (KeyError, json.JSONDecodeError))
    with pytest.raises(ValueError, match="invalid JSON"):
        HessianReport.load(tmp_path / "truncated.json")
    with pytest.raises(ValueError, match="eigenvalues"):
        HessianReport.load(tmp_path / "missing.json")


def test_reports_saved_with_a_nested_density_curve_still_load(report: HessianReport) -> None:
    d = report.to_dict()
    d["density_curve"] = {
        "grid": d.pop("density_grid"), "values": d.pop("density_values"),
        "sigma": d.pop("density_sigma"),
    }  # fmt: skip
    assert HessianReport.from_dict(d).to_dict() == report.to_dict()


def test_slq_protocol_pools_each_runs_full_spectrum(problem: tuple, tmp_path: Path) -> None:
    """With as many nodes as parameters every SLQ run finds every eigenvalue: the pooled top
    3·m are the dense top m, each once per run (P1's LLM protocol, not deduplicated)."""
    model, loss, data = problem
    r = analyze_hessian(
        model, loss, data, k=30, eigenvalues="slq", slq_runs=3, slq_nodes=500,
        trace_matvecs=None, density_probes=None, seed=2, **OPTS,
    )  # fmt: skip
    P = r.settings["num_params"]
    H = dense_hessian(model, loss, *data)
    top = torch.linalg.eigvalsh(H).flip(0)[:10].numpy()
    np.testing.assert_allclose(r.eigenvalues, np.repeat(top, 3), rtol=1e-8, atol=1e-10)
    assert np.isnan(r.residuals).all() and not r.converged.any()
    assert (r.settings["eigenvalues"], r.settings["slq_runs"], r.settings["slq_nodes"]) == (
        "slq", 3, P,
    )  # fmt: skip
    assert r.matvecs["eigsh"] == 3 * P
    assert "not certified" in r.summary() and any("not certified" in n for n in r.notes)
    assert r.spectrum_fit == fit_spectrum(r.eigenvalues)
    back = HessianReport.load(r.save(tmp_path / "rep", plots=False))
    np.testing.assert_array_equal(back.eigenvalues, r.eigenvalues)
    assert np.isnan(back.residuals).all()


def test_slq_protocol_finds_the_top_eigenvalue_in_every_run(problem: tuple) -> None:
    model, loss, data = problem
    r = analyze_hessian(
        model, loss, data, k=3, eigenvalues="slq", slq_nodes=30, trace_matvecs=None,
        density_probes=None, **OPTS,
    )  # fmt: skip
    lam1 = float(torch.linalg.eigvalsh(dense_hessian(model, loss, *data))[-1])
    np.testing.assert_allclose(r.eigenvalues, [lam1] * 3, rtol=1e-8)
    assert r.matvecs["eigsh"] == 3 * 30


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"eigenvalues": "lanczos"}, "eigenvalues must be one of"),
     ({"eigenvalues": "slq", "slq_runs": 1, "slq_nodes": 5}, r"k must be at most slq_runs · slq_nodes = 1 · 5"),
     ({"eigenvalues": "slq", "slq_runs": 0}, "slq_runs must be >= 1")],
)  # fmt: skip
def test_bad_slq_protocol_settings(problem: tuple, kw: dict, match: str) -> None:
    model, loss, data = problem
    with pytest.raises(ValueError, match=match):
        analyze_hessian(model, loss, data, k=10, **kw, **OPTS)
