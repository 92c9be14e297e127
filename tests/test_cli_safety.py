"""The `fastspec` command against hostile input: files that try to run code, report targets that
would destroy the user's files, concurrent runs, signals, malformed options. Every failure is
one line on stderr and a documented exit code; nothing half-written is left behind."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fastspec.analysis import HessianReport
from fastspec.analysis.fit import fit_values
from fastspec.analysis.loading import SpecError, load_model
from fastspec.analysis.output import MARKER, claimed
from fastspec.cli import main
from tests.helpers.user_module import user_module

USER_MODULE = """
import os
import signal
import time
from pathlib import Path

import torch
from torch import nn

import fastspec.analysis.plots as plots

SIGNAL = getattr(signal, os.environ.get("FASTSPEC_TEST_SIGNAL", "SIGTERM"))
WHEN = os.environ.get("FASTSPEC_TEST_WHEN", "never")


class Net(nn.Sequential):
    calls = 0

    def forward(self, x):
        Net.calls += 1
        if WHEN == "compute" and Net.calls == 3:  # in the middle of the Hessian products
            os.kill(os.getpid(), SIGNAL)
        if WHEN == "wait" and Net.calls == 3:  # a long computation, until the test says "go"
            for _ in range(600):
                if Path("go").exists():
                    break
                time.sleep(0.1)
        return super().forward(x)


def model():
    torch.manual_seed(0)
    return Net(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 5, generator=g)
    return [(x[:12], torch.arange(12) % 3), (x[12:], torch.arange(12) % 3)]


def _figures_then_signal(report, directory):
    (Path(directory) / "spectrum.png").write_bytes(b"half a figure")
    os.kill(os.getpid(), SIGNAL)
    time.sleep(60)


if WHEN == "write":  # the signal arrives while the report is being written
    plots.hessian_figures = _figures_then_signal
if WHEN == "after":  # ... or once it is in place, while the summary is printed
    from fastspec.analysis.hessian import HessianReport

    _summary = HessianReport.summary
    _calls = []

    def _summary_then_signal(self):
        _calls.append(1)
        if len(_calls) == 2:  # the first call writes summary.txt
            os.kill(os.getpid(), SIGNAL)
        return _summary(self)

    HessianReport.summary = _summary_then_signal
"""

TINY = ["--k", "3", "--no-density", "--trace-matvecs", "6", "--no-progress"]


class Payload:
    """Unpickling this creates the file ``marker``: a stand-in for any code a file can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return user_module(tmp_path, monkeypatch, USER_MODULE)


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], match: str, code: int = 2) -> None:
    """``fastspec argv`` exits ``code`` with exactly one line on stderr containing ``match``."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert len(err.splitlines()) == 1, err
    assert match in err, err


def _hessian(*extra: str) -> list[str]:
    return ["hessian", "--model", "usermod:model", "--data", "usermod:data", *TINY, *extra]


# ---- loading: nothing in a data file runs --------------------------------------------------


def test_a_malicious_checkpoint_does_not_run(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = user / "pwned"
    torch.save({"0.weight": Payload(marker)}, user / "evil.pt")
    _fails(capsys, _hessian("--checkpoint", "evil.pt", "--out", "rep"), "weights_only=True")
    assert not marker.exists()
    assert not (user / "rep").exists()


def test_a_pickled_model_needs_the_opt_in(user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = user / "pwned"
    torch.save(Payload(marker), user / "evil.pt")
    argv = ["hessian", "--model", "evil.pt", "--data", "usermod:data", *TINY, "--out", "rep"]
    _fails(capsys, argv, "--trust-pickle")
    assert not marker.exists()
    # with the flag the file is unpickled, and its code runs: the documented risk of the flag
    _fails(capsys, [*argv, "--trust-pickle"], "not a torch.nn.Module")
    assert marker.exists()
    assert not (user / "rep").exists()


def test_checkpoints_load_their_weights(user: Path) -> None:
    torch.manual_seed(7)
    source = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    state = source.state_dict()
    torch.save({"model_state_dict": state}, user / "sd.pt")
    for path in ("sd.pt", *(["sd.safetensors"] if _save_safetensors(state, user) else [])):
        model = load_model("usermod:model", checkpoint=path)
        for name, value in model.state_dict().items():
            assert torch.equal(value, state[name]), (path, name)
    # a training checkpoint with more than tensors loads only with the opt-in
    torch.save({"model": state, "args": argparse.Namespace(lr=0.1)}, user / "full.pt")
    with pytest.raises(SpecError, match=r"it names argparse\.Namespace.*--trust-pickle"):
        load_model("usermod:model", checkpoint="full.pt")
    model = load_model("usermod:model", checkpoint="full.pt", trust_pickle=True)
    assert torch.equal(model.state_dict()["0.weight"], state["0.weight"])


def _save_safetensors(state: dict[str, torch.Tensor], where: Path) -> bool:
    try:
        from safetensors.torch import save_file
    except ImportError:
        return False
    save_file(state, str(where / "sd.safetensors"))
    return True


def test_safetensors_errors(
    user: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(user / "w.safetensors"))
    argv = ["hessian", "--model", "w.safetensors", "--data", "usermod:data", "--out", "rep"]
    _fails(capsys, argv, "holds a state dict, not a model")
    (user / "bad.safetensors").write_bytes(b"\x00" * 20)
    _fails(capsys, _hessian("--checkpoint", "bad.safetensors"), "cannot read bad.safetensors")
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    _fails(capsys, _hessian("--checkpoint", "w.safetensors"), "pip install safetensors")


# ---- the report directory -------------------------------------------------------------------


@pytest.mark.parametrize("out", [".", "CWD", "../victim"])
def test_overwrite_never_takes_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], out: str
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("mine")
    monkeypatch.chdir(victim)
    target = str(victim) if out == "CWD" else out
    argv = ["hessian", "--model", "m:f", "--data", "d:f", "--out", target, "--overwrite"]
    _fails(capsys, argv, "working directory")
    assert sorted(p.name for p in victim.iterdir()) == ["notes.txt"]


def test_overwrite_replaces_only_fastspecs_reports(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (user / "data").mkdir()
    (user / "data" / "results.csv").write_text("1,2,3")
    _fails(capsys, _hessian("--out", "data", "--overwrite"), "not written by fastspec")
    assert (user / "data" / "results.csv").read_text() == "1,2,3"
    assert main(_hessian("--out", "rep", "--no-plots")) == 0
    assert (user / "rep" / MARKER).is_file()
    assert main(_hessian("--out", "rep", "--no-plots", "--overwrite", "--label", "again")) == 0
    assert HessianReport.load(user / "rep").label == "again"


def test_unwritable_out_fails_before_the_computation(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (user / "afile").write_text("")
    _fails(capsys, _hessian("--out", "afile/rep"), "afile is not a directory")
    _fails(capsys, ["run", "--quick", "--out", "afile/rep"], "afile is not a directory")
    _fails(capsys, _hessian("--out", ""), "empty string")


def test_two_runs_with_one_out_never_both_succeed(
    user: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_into = HessianReport.write_into
    raced: list[bool] = []

    def racing(self: HessianReport, directory: Path, *, plots: bool = True) -> None:
        write_into(self, directory, plots=plots)
        if not raced:  # another run with the same --out finishes while this one writes
            raced.append(True)
            replace(self, label="first").save(user / "rep", plots=False)

    monkeypatch.setattr(HessianReport, "write_into", racing)
    _fails(capsys, _hessian("--out", "rep", "--no-plots", "--label", "second"), "appeared", 1)
    assert raced and HessianReport.load(user / "rep").label == "first"  # the first survives
    assert sorted(p.name for p in user.iterdir() if p.name.startswith(".rep")) == []


def test_a_second_run_on_the_same_out_fails_at_once(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with claimed(user / "rep", overwrite=False):  # a first run is computing
        _fails(capsys, _hessian("--out", "rep"), "another fastspec run is writing")
    assert sorted(p.name for p in user.iterdir() if p.name.startswith(".rep")) == []


def test_two_processes_with_one_out(user: Path) -> None:
    env = {**os.environ, "FASTSPEC_TEST_WHEN": "wait"}
    env["PYTHONPATH"] = os.pathsep.join([str(user), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "fastspec", *_hessian("--out", "rep", "--no-plots")]
    first = subprocess.Popen(argv, cwd=user, env=env, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if (user / ".rep.lock").exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        second = subprocess.run(
            argv, cwd=user, env=env, capture_output=True, text=True, timeout=300, check=False
        )
    finally:
        (user / "go").touch()
        out, _ = first.communicate(timeout=300)
    assert second.returncode == 2, second.stderr
    assert "another fastspec run is writing rep" in second.stderr
    assert first.returncode == 0 and "report written to rep/" in out
    assert HessianReport.load(user / "rep").k == 3
    assert sorted(p.name for p in user.iterdir() if p.name.startswith(".rep")) == []


# ---- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "when", "code"),
    [
        ("SIGTERM", "compute", 143),
        ("SIGTERM", "write", 143),
        ("SIGINT", "compute", 130),
        ("SIGINT", "write", 130),
        ("SIGTERM", "after", 143),
    ],
)
def test_signals_stop_cleanly(user: Path, sig: str, when: str, code: int) -> None:
    env = {**os.environ, "FASTSPEC_TEST_SIGNAL": sig, "FASTSPEC_TEST_WHEN": when}
    env["PYTHONPATH"] = os.pathsep.join([str(user), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "fastspec", *_hessian("--out", "rep")],
        capture_output=True, text=True, cwd=user, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    left = sorted(p.name for p in user.iterdir() if p.name != "__pycache__")
    if when == "after":
        assert "the report in rep was complete" in lines[0]
        assert left == ["rep", "usermod.py"] and HessianReport.load(user / "rep").k == 3
    else:
        assert "no report written" in lines[0]
        assert left == ["usermod.py"]


# ---- malformed options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--params", "("], "argument --params: not a regular expression"),
        (["--params", "[a-"], "argument --params: not a regular expression"),
        (["--seed", "-1"], "expected a seed in [0, 2**63)"),
        (["--seed", str(2**70)], "expected a seed in [0, 2**63)"),
        (["--seed", "1.5"], "expected an integer seed"),
        (["--model", "."], "--model: . has no config.json"),
    ],
)
def test_bad_options_are_one_line(
    user: Path, capsys: pytest.CaptureFixture[str], args: list[str], match: str
) -> None:
    _fails(capsys, [*_hessian("--out", "rep"), *args], match)
    assert not (user / "rep").exists()


def test_fit_refuses_what_is_not_real_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = np.arange(1.0, 60.0) ** -1.2
    np.save(tmp_path / "c.npy", values + 1j * values)
    np.save(tmp_path / "b.npy", values > 0.1)
    np.save(tmp_path / "s.npy", values.astype(str))
    _fails(capsys, ["fit", str(tmp_path / "c.npy")], "holds complex numbers")
    _fails(capsys, ["fit", str(tmp_path / "b.npy")], "holds bool values, not real numbers")
    _fails(capsys, ["fit", str(tmp_path / "s.npy")], "values, not real numbers")
    _fails(capsys, ["fit", str(tmp_path)], "is not a regular file")
    _fails(capsys, ["fit", str(tmp_path / "c.npy"), "--seed", "-3"], "expected a seed")
    with pytest.raises(ValueError, match="expected real numbers, got complex"):
        fit_values(values + 1j * values)
    with pytest.raises(ValueError, match="expected real numbers, got complex"):
        fit_values(torch.tensor(values, dtype=torch.complex128))
