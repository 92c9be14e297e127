"""``fastspec hessian --checkpoint-dir DIR [--resume]``: a run stopped by SIGINT/SIGTERM saves
its state and says how to resume; a run killed by SIGKILL resumes from the last save; either
way the resumed report equals the uninterrupted one, bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fastspec.curvature.operators as operators
from fastspec.cli import main
from tests.helpers.user_module import user_module

USER_MODULE = """
import os
import signal

import torch
from torch import nn

import fastspec.curvature.operators as operators

AT = int(os.environ.get("FASTSPEC_TEST_KILL_AT", "0"))
if AT:  # SIGKILL after product AT: a deterministic point in the run
    # one product method, as in the test process ("auto" times both: choices may differ)
    operators.HessianOperator.methods = property(lambda self: ("double_backward",))
    _matmat = operators.HessianOperator.matmat
    _count = [0]

    def matmat(self, V):
        _count[0] += V.shape[1]
        if _count[0] >= AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return _matmat(self, V)

    operators.HessianOperator.matmat = matmat


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=g)
    return [(x[:20], torch.arange(20) % 3), (x[20:], torch.arange(20) % 3)]
"""

ARGS = ["--k", "6", "--trace-matvecs", "12", "--no-density", "--no-progress", "--no-plots",
        "--tol", "1e-8"]  # fmt: skip


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # the reference and the resumed run use the same product method (the module does the same)
    monkeypatch.setattr(
        operators.HessianOperator, "methods", property(lambda self: ("double_backward",))
    )
    return user_module(tmp_path, monkeypatch, USER_MODULE)


def hessian(*extra: str) -> list[str]:
    return ["hessian", "--model", "usermod:model", "--data", "usermod:data", *ARGS, *extra]


def numbers(report: Path) -> dict[str, Any]:
    d = json.loads((report / "report.json").read_text())
    return {key: d[key] for key in ("eigenvalues", "residuals", "trace", "matvecs")}


def signal_at(monkeypatch: pytest.MonkeyPatch, sig: int, at: int) -> None:
    """Send ``sig`` to this process during product ``at`` of the Hessian operator."""
    original = operators.HessianOperator.matmat
    count = [0]

    def matmat(self: Any, V: Any) -> Any:
        count[0] += V.shape[1]
        if count[0] == at or (count[0] > at and count[0] - V.shape[1] < at):
            os.kill(os.getpid(), sig)
        return original(self, V)

    monkeypatch.setattr(operators.HessianOperator, "matmat", matmat)


def cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code  # type: ignore[assignment]
    return int(rc), capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("sig", "where", "code"),
    [(signal.SIGTERM, "eigsh", 143), (signal.SIGINT, "trace", 130)],
)
def test_stopped_run_saves_and_resumes_to_the_same_report(
    user: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    sig: int, where: str, code: int,
) -> None:  # fmt: skip
    assert cli(capsys, hessian("--out", "ref"))[0] == 0
    ref = numbers(user / "ref")
    eig = ref["matvecs"]["eigsh"]
    at = eig // 2 if where == "eigsh" else eig + 1 + 6  # + the product choosing the method
    with monkeypatch.context() as m:
        signal_at(m, sig, at)
        rc, err = cli(capsys, hessian("--out", "rep", "--checkpoint-dir", "ck"))
    assert rc == code, err
    (line,) = err.splitlines()
    assert "no report written" in line
    assert "state saved in ck: run the same command with --resume to continue" in line
    assert (user / "ck" / where / "manifest.json").exists()
    assert not list((user / "ck").rglob(".*tmp-*")) and not (user / "rep").exists()
    rc, err = cli(capsys, hessian("--out", "rep", "--checkpoint-dir", "ck", "--resume"))
    assert rc == 0, err
    assert numbers(user / "rep") == ref


def test_killed_run_resumes_skipping_finished_steps(
    user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, hessian("--out", "ref"))[0] == 0
    ref = numbers(user / "ref")
    env = {**os.environ, "FASTSPEC_TEST_KILL_AT": str(ref["matvecs"]["eigsh"] + 1 + 6)}
    env["PYTHONPATH"] = os.pathsep.join([str(user), *sys.path])
    killed = subprocess.run(
        [sys.executable, "-m", "fastspec", *hessian("--out", "rep", "--checkpoint-dir", "ck")],
        capture_output=True, text=True, cwd=user, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (user / "ck" / "eigsh" / "manifest.json").exists()  # the finished step is stored
    products = [0]
    original = operators.HessianOperator.matmat

    def counting(self: Any, V: Any) -> Any:
        products[0] += V.shape[1]
        return original(self, V)

    operators.HessianOperator.matmat = counting  # type: ignore[method-assign]
    try:
        rc, err = cli(capsys, hessian("--out", "rep", "--checkpoint-dir", "ck", "--resume"))
    finally:
        operators.HessianOperator.matmat = original  # type: ignore[method-assign]
    assert rc == 0, err
    assert numbers(user / "rep") == ref
    assert products[0] == ref["matvecs"]["trace"]  # eigsh came from its checkpoint


def test_resume_options_are_checked(
    user: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(argv: list[str], match: str) -> None:
        rc, err = cli(capsys, argv)
        assert rc == 2 and len(err.splitlines()) == 1 and match in err, err

    fails(hessian("--out", "a", "--resume"), "--resume needs --checkpoint-dir")
    fails(hessian("--out", "a", "--checkpoint-dir", "ck", "--resume"), "no checkpoint to resume")
    with monkeypatch.context() as m:
        signal_at(m, signal.SIGTERM, 20)
        assert cli(capsys, hessian("--out", "rep", "--checkpoint-dir", "ck"))[0] == 143
    fails(hessian("--out", "a", "--checkpoint-dir", "ck"), "already holds a checkpoint")
    fails(
        hessian("--out", "a", "--checkpoint-dir", "ck", "--resume", "--k", "7"),
        "k: 6 in the checkpoint, 7 now",
    )
    fails(
        hessian("--out", "a", "--checkpoint-dir", "ck", "--resume", "--max-samples", "30"),
        "in the checkpoint, 30 now",
    )
    fails(
        hessian("--out", "a", "--checkpoint-dir", "ck", "--resume", "--dtype", "float32"),
        "dtype",
    )


def test_signal_numbers() -> None:
    assert (signal.SIGINT, signal.SIGTERM) == (2, 15)
