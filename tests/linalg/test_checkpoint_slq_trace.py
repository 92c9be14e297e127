"""slq and trace checkpoints: a run stopped after any product resumes to bitwise the same result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fastspec.checkpoint import Checkpoint, CheckpointError
from fastspec.linalg import slq, trace
from tests.helpers.stopping import Stopping

P = 120


def matrix() -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(P, P, generator=gen, dtype=torch.float64)
    return X @ X.T / P


def cp(path: Path) -> Checkpoint:
    return Checkpoint(path, every_seconds=None, every_products=5)


def _resume_bitwise(tmp_path: Path, call: Any, stop_at: int, fields: tuple[str, ...]) -> None:
    A = matrix()
    ref = call(A, None, False)
    with pytest.raises(RuntimeError, match="stop"):
        call(Stopping(A, stop_at), cp(tmp_path), False)
    op = Stopping(A, None)
    res = call(op, cp(tmp_path), True)
    for name in fields:
        a, b = getattr(res, name), getattr(ref, name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, name
    assert op.count < ref.num_matvecs
    op2 = Stopping(A, None)
    call(op2, cp(tmp_path), True)  # finished: resumes to the end without products
    assert op2.count == 0


@pytest.mark.parametrize("reorthogonalize", [True, False])
@pytest.mark.parametrize("stop_at", [9, 33])
def test_slq_resumes_bitwise(tmp_path: Path, stop_at: int, reorthogonalize: bool) -> None:
    def call(op: Any, c: Any, resume: bool) -> Any:
        return slq(op, num_probes=3, num_steps=15, seed=2, reorthogonalize=reorthogonalize,
                   checkpoint=c, resume=resume)  # fmt: skip

    _resume_bitwise(tmp_path, call, stop_at, ("nodes", "weights", "lengths", "num_matvecs"))


@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
@pytest.mark.parametrize("stop_at", [7, 13, 24])
def test_trace_resumes_bitwise(tmp_path: Path, method: str, stop_at: int) -> None:
    def call(op: Any, c: Any, resume: bool) -> Any:
        return trace(op, method=method, num_matvecs=30, seed=4, block_size=3, checkpoint=c,
                     resume=resume)  # fmt: skip

    _resume_bitwise(tmp_path, call, stop_at, ("estimate", "std_error", "num_matvecs"))


def test_trace_and_slq_refuse_other_settings(tmp_path: Path) -> None:
    A = matrix()
    with pytest.raises(RuntimeError, match="stop"):
        trace(Stopping(A, 10), num_matvecs=30, seed=4, checkpoint=cp(tmp_path / "t"))
    with pytest.raises(CheckpointError, match="seed: 4 in the checkpoint, 5 now"):
        trace(A, num_matvecs=30, seed=5, checkpoint=cp(tmp_path / "t"), resume=True)
    with pytest.raises(RuntimeError, match="stop"):
        slq(Stopping(A, 10), num_probes=2, num_steps=9, seed=1, checkpoint=cp(tmp_path / "s"))
    with pytest.raises(CheckpointError, match="num_steps: 9 in the checkpoint, 10 now"):
        slq(A, num_probes=2, num_steps=10, seed=1, checkpoint=cp(tmp_path / "s"), resume=True)
    with pytest.raises(CheckpointError, match="solver: 'slq' in the checkpoint, 'trace' now"):
        trace(A, num_matvecs=30, seed=1, checkpoint=cp(tmp_path / "s"), resume=True)
