"""``run_main_job(checkpoint=..., resume=True)``: a job stopped by SIGINT in its second analysis
resumes with the finished analysis taken from its checkpoint (no products) and gives the
uninterrupted job's numbers, bit for bit."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import fastspec.curvature.operators as operators
from fastspec.analysis.run import QUICK, run_main_job

SETTINGS = replace(
    QUICK, models=("fcn",), seeds=1, gradients=False, tracker_models=(), tracker_epochs=(0, 1),
    epochs=1, k=4, max_samples=48, density_probes=1, density_steps=6,
)  # fmt: skip


def numbers(report: Any) -> list[Any]:
    out = []
    for stage in ("random_init", "trained"):
        rep = getattr(report.runs[0]["fcn"], stage)
        out.append((rep.eigenvalues.tolist(), rep.residuals.tolist(), rep.trace.estimate,
                    rep.density.nodes.tolist(), rep.matvecs))  # fmt: skip
    return out


def test_stopped_job_resumes_to_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one product method: "auto" times both, and two runs may choose differently
    monkeypatch.setattr(
        operators.HessianOperator, "methods", property(lambda self: ("double_backward",))
    )
    original = operators.HessianOperator.matmat
    count = {"n": 0, "at": 0}

    def matmat(self: Any, V: Any) -> Any:
        count["n"] += V.shape[1]
        if count["at"] and count["n"] - V.shape[1] < count["at"] <= count["n"]:
            os.kill(os.getpid(), signal.SIGINT)  # held until the next save point
        return original(self, V)

    monkeypatch.setattr(operators.HessianOperator, "matmat", matmat)
    ref = run_main_job(SETTINGS)
    total = count["n"]
    init = ref.runs[0]["fcn"].random_init.matvecs
    count.update(n=0, at=sum(init.values()) + 1 + 10)  # inside the trained model's eigsh
    with pytest.raises(KeyboardInterrupt):
        run_main_job(SETTINGS, checkpoint=tmp_path / "ck")
    assert (
        tmp_path / "ck" / "seed0" / "fcn" / "random_init" / "density" / "manifest.json"
    ).exists()
    assert (tmp_path / "ck" / "seed0" / "fcn" / "trained" / "eigsh" / "manifest.json").exists()
    count.update(n=0, at=0)
    resumed = run_main_job(SETTINGS, checkpoint=tmp_path / "ck", resume=True)
    assert numbers(resumed) == numbers(ref)
    assert count["n"] < total - sum(init.values())  # the finished analysis made no product
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        run_main_job(SETTINGS, checkpoint=tmp_path / "ck")
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        run_main_job(SETTINGS, checkpoint=tmp_path / "none", resume=True)
