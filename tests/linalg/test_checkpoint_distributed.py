"""Checkpoints under a process group: every rank writes its shard, rank 0 the manifest; a run
stopped on 2 gloo ranks resumes to bitwise the uninterrupted 2-rank result, and a checkpoint of
2 ranks is refused by 1 process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fastspec.checkpoint import Checkpoint, CheckpointError
from fastspec.linalg import eigsh, trace
from tests.helpers.distributed import run_ranks
from tests.helpers.stopping import Stopping

P, K = 201, 6
KW: dict[str, Any] = {"tol": 1e-8, "block_size": 2, "max_basis": 20, "seed": 3}


def _matrix() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    evals = 1.0 / torch.arange(1, P + 1, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=gen, dtype=torch.float64))
    return (Q * evals) @ Q.T


def _stop_and_resume(rank: int, world_size: int, directory: str) -> dict[str, Any]:
    A = _matrix()
    ref = eigsh(A, K, return_eigenvectors=True, **KW)
    cp = Checkpoint(directory, every_seconds=None, every_products=6)
    try:
        eigsh(Stopping(A, 30), K, checkpoint=cp, **KW, return_eigenvectors=True)
    except RuntimeError:
        pass
    op = Stopping(A, None)
    res = eigsh(op, K, checkpoint=cp, resume=True, return_eigenvectors=True, **KW)
    tr_ref = trace(A, num_matvecs=30, seed=1, block_size=4)
    tcp = Checkpoint(Path(directory) / "trace", every_seconds=None, every_products=4)
    try:
        trace(Stopping(A, 17), num_matvecs=30, seed=1, block_size=4, checkpoint=tcp)
    except RuntimeError:
        pass
    tr = trace(A, num_matvecs=30, seed=1, block_size=4, checkpoint=tcp, resume=True)
    return {
        "same": torch.equal(res.eigenvalues, ref.eigenvalues)
        and torch.equal(res.residuals, ref.residuals)
        and torch.equal(res.eigenvectors, ref.eigenvectors)
        and res.num_matvecs == ref.num_matvecs,
        "redone": op.count,
        "total": ref.num_matvecs,
        "trace": (tr.estimate, tr.std_error) == (tr_ref.estimate, tr_ref.std_error),
    }


def test_two_ranks_resume_bitwise(tmp_path: Path) -> None:
    out = run_ranks(_stop_and_resume, str(tmp_path), world_size=2, timeout=300)
    for r in out:
        assert r["same"] and r["trace"], out
        assert r["redone"] < r["total"], out
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert names[0] == "manifest.json"
    assert [n.split(".", 1)[1] for n in names[1:]] == [
        "rank0-of-2.safetensors",
        "rank1-of-2.safetensors",
    ]
    with pytest.raises(CheckpointError, match="written by 2 ranks, this run has 1"):
        eigsh(_matrix(), K, checkpoint=tmp_path, resume=True, **KW)
