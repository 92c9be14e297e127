"""The `fastspec` command end to end on tiny settings: every subcommand, every error path (one
line on stderr, exit code 2, no report left behind), and one `python -m fastspec` subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastspec.analysis import HessianReport
from fastspec.cli import main
from fastspec.stats import PowerLaw, fit_spectrum, gof_pvalue
from tests.helpers.user_module import user_module

USER_MODULE = """
import torch
from torch import nn

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))

def wide():
    return nn.Sequential(nn.Linear(7, 3))

def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 5, generator=g)
    return [(x[:12], torch.arange(12) % 3), (x[12:], torch.arange(12) % 3)]

def broken():
    raise RuntimeError("cannot build")

not_a_model = 3
"""


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return user_module(tmp_path, monkeypatch, USER_MODULE)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], match: str) -> None:
    """``fastspec argv`` fails with exit code 2 and exactly one line on stderr (argparse's usage
    errors exit through SystemExit, the others return the code)."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code  # type: ignore[assignment]
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert match in err, err


def test_run_quick_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["run", "--quick", "--out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "P1 finding 1" in stdout and "random init" in stdout and "trained" in stdout
    data = json.loads((out / "report.json").read_text())
    for i, seed in enumerate(("0", "1")):
        for name in ("fcn", "lenet"):
            for stage in ("random_init", "trained"):
                rep = HessianReport.load(out / f"seed{seed}" / name / stage)
                assert rep.to_dict() == data["seeds"][seed][name][stage]
                assert rep.spectrum_fit == fit_spectrum(rep.eigenvalues)
                finding = data["findings"][name][stage][i]
                pl = rep.spectrum_fit.is_power_law
                assert finding == ("power-law" if pl else "not power-law")
                for png in ("spectrum.png", "ccdf.png", "density.png"):
                    assert (out / f"seed{seed}" / name / stage / png).stat().st_size > 1000
                assert (
                    out / f"seed{seed}" / name / f"gradients_{stage}" / "covariance.png"
                ).is_file()
        assert (out / f"seed{seed}" / "fcn" / "tracker" / "curves.png").is_file()
    assert (out / "spectra.png").stat().st_size > 1000
    assert (out / "summary.txt").read_text().strip() in stdout
    # a second run refuses to overwrite, and leaves the report as it was
    _error(capsys, ["run", "--quick", "--out", str(out)], "already exists")
    assert json.loads((out / "report.json").read_text()) == data


def test_hessian_and_gradients_of_a_user_model(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--model", "usermod:model", "--data", "usermod:data", "--no-progress"]
    assert main(["hessian", *common, "--k", "5", "--out", "h", "--tol", "1e-9"]) == 0
    rep = HessianReport.load(user / "h")
    assert rep.k == 5 and rep.settings["num_params"] == 57 and rep.settings["num_samples"] == 24
    assert rep.settings["dtype"] == "float64"
    assert "Tr(H)" in capsys.readouterr().out
    # the same model from a state-dict checkpoint and from a whole pickled model
    torch.manual_seed(0)
    import usermod  # type: ignore[import-not-found]

    m = usermod.model()
    torch.save(m.state_dict(), user / "sd.pt")
    torch.save(m, user / "whole.pt")
    assert main(["hessian", *common, "--k", "5", "--out", "h2", "--checkpoint", "sd.pt",
                 "--tol", "1e-9", "--no-plots"]) == 0  # fmt: skip
    spec = ["--model", "whole.pt", "--trust-pickle", "--data", "usermod:data", "--no-progress",
            "--tol", "1e-9"]  # fmt: skip
    assert main(["hessian", *spec, "--k", "5", "--out", "h3", "--no-density"]) == 0
    ev = rep.eigenvalues
    np.testing.assert_allclose(HessianReport.load(user / "h2").eigenvalues, ev, rtol=1e-8)
    np.testing.assert_allclose(HessianReport.load(user / "h3").eigenvalues, ev, rtol=1e-8)
    assert not (user / "h2" / "spectrum.png").exists()

    # P1's LLM protocol: the pooled Ritz values of SLQ runs, here the first layer only
    argv = ["hessian", *common, "--k", "6", "--out", "h4", "--eigenvalues", "slq", "--slq-runs",
            "2", "--slq-nodes", "20", "--params", "^0\\.", "--no-plots", "--no-density"]  # fmt: skip
    assert main(argv) == 0
    slq_rep = HessianReport.load(user / "h4")
    assert slq_rep.settings["eigenvalues"] == "slq" and slq_rep.matvecs["eigsh"] == 40
    assert slq_rep.settings["slq_nodes"] == 20 and np.isnan(slq_rep.residuals).all()
    assert "SLQ runs × 20 nodes pooled" in capsys.readouterr().out

    args = ["gradients", *common, "--k", "6", "--batch-size", "6", "--steps", "8"]
    assert main([*args, "--coordinates", "10", "--out", "g"]) == 0
    g = json.loads((user / "g" / "report.json").read_text())
    assert g["kind"] == "gradients" and len(g["covariance"]["eigenvalues"]) == 6
    assert "iteration-wise" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--model", "nosuchmodule:f"], "cannot import module 'nosuchmodule'"),
        (["--model", "usermod:nope"], "has no attribute 'nope'"),
        (["--model", "usermod"], "no such file 'usermod'"),
        (["--model", "usermod:broken"], "calling usermod:broken failed: RuntimeError"),
        (["--model", "usermod:not_a_model"], "not a torch.nn.Module"),
        (["--model", "missing.pt"], "no such file 'missing.pt'"),
        (["--model", "usermod:wide"], "model and data do not fit together"),
        (["--data", "usermod:model"], "--data: batches must be (inputs, targets) pairs"),
        (["--data", "nofile.py:data"], "no such file 'nofile.py'"),
        (["--loss", "hinge"], "--loss: expected one of"),
        (["--checkpoint", "missing.pt"], "--checkpoint: no such file"),
        (["--k", "57"], "k must satisfy 2 <= k < P = 57"),
        (["--k=0"], "expected a positive integer, got 0"),
        (["--device", "tpu"], "device: 'tpu' is not a torch device"),
    ],
)
def test_hessian_errors(
    user: Path, capsys: pytest.CaptureFixture[str], args: list[str], match: str
) -> None:
    base = {"--model": "usermod:model", "--data": "usermod:data", "--k": "3"}
    flags = [a for a in args if a.startswith("--")]
    argv = ["hessian", "--out", "rep", "--no-progress"]
    for key, value in base.items():
        if key not in flags and not any(f.startswith(key + "=") for f in flags):
            argv += [key, value]
    _error(capsys, [*argv, *args], match)
    assert not (user / "rep").exists()
    assert not [p for p in user.iterdir() if p.name.startswith(".rep")]


def test_checkpoint_that_does_not_fit(user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import usermod

    torch.save(usermod.wide().state_dict(), user / "wide.pt")
    torch.save(usermod.model().state_dict(), user / "sd.pt")
    argv = ["hessian", "--model", "usermod:model", "--data", "usermod:data", "--out", "rep"]
    _error(capsys, [*argv, "--checkpoint", "wide.pt"], "does not fit the model")
    _error(capsys, ["hessian", "--model", "sd.pt", "--data", "usermod:data"], "holds a state dict")
    assert not (user / "rep").exists()


def test_fit_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = np.random.default_rng(0).pareto(1.5, 300) + 1.0
    np.save(tmp_path / "v.npy", values)
    np.savetxt(tmp_path / "v.txt", values)
    (tmp_path / "v.csv").write_text(",".join(f"{v:.17g}" for v in values))
    for name in ("v.npy", "v.txt", "v.csv"):
        assert main(["fit", str(tmp_path / name), "--k", "100", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["fit"] == fit_spectrum(values, 100).to_dict()
    assert main(["fit", str(tmp_path / "v.npy"), "--method", "clauset", "--gof", "--n-boot",
                 "20", "--seed", "3", "--json"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    pl = PowerLaw.fit(values)
    assert got["fit"]["alpha"] == pl.alpha and got["fit"]["xmin"] == pl.xmin
    assert got["gof"] == gof_pvalue(pl, 20, seed=3).to_dict()
    assert main(["fit", str(tmp_path / "v.npy")]) == 0
    assert "d_ks" in capsys.readouterr().out

    (tmp_path / "bad.txt").write_text("1 2 x")
    (tmp_path / "v.bin").write_text("1 2")
    _error(capsys, ["fit", str(tmp_path / "none.npy")], "no such file")
    _error(capsys, ["fit", str(tmp_path / "bad.txt")], "cannot read numbers")
    _error(capsys, ["fit", str(tmp_path / "v.bin")], "is not .npy, .txt or .csv")
    _error(capsys, ["fit", str(tmp_path / "v.npy"), "--gof"], "need method='clauset'")
    _error(capsys, ["fit", str(tmp_path / "v.npy"), "--k", "1"], "k must be")


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["hessian", "--data", "x:y"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model" in err
    assert main([]) == 2


def test_python_dash_m(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.arange(1.0, 50.0) ** -1.0)
    ok = subprocess.run(
        [sys.executable, "-m", "fastspec", "fit", "v.npy"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert ok.returncode == 0 and "power-law" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "fastspec", "hessian", "--model", "no_such:m", "--data", "a:b"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "fastspec hessian: error: --model: cannot import module 'no_such' "
        "(No module named 'no_such')"
    ]


@pytest.mark.parametrize(
    ("module", "match"), [("matplotlib", "plots need matplotlib"), ("sklearn.datasets", "digits")]
)
def test_run_without_the_plots_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    module: str, match: str,
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    _error(capsys, ["run", "--quick", "--out", str(tmp_path / "r")], match)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--models", "mlp"], "models must be among"),
        (["--k", "1"], "k must be >= 2"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--models", ""],
         "torch sees no CUDA GPU" if not torch.cuda.is_available() else "models must be among"),
    ],
)  # fmt: skip
def test_run_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], match: str
) -> None:
    _error(capsys, ["run", "--quick", "--out", str(tmp_path / "r"), *args], match)
    assert list(tmp_path.iterdir()) == []
