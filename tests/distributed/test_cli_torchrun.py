"""``python -m torch.distributed.run --nproc_per_node=2 -m fastspec hessian`` against one process.

The command runs in subprocesses on a small MLP whose data (5 uneven batches) is shared batch i →
rank i mod 2; its report must equal the one-process report, and faults must end every rank
with the failing rank's message within the timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

PROBLEM = textwrap.dedent(
    """
    import torch
    from torch import nn

    SIZES = [5, 4, 6, 3, 5]

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def data():
        g = torch.Generator().manual_seed(3)
        x = torch.randn(sum(SIZES), 5, generator=g)
        y = torch.randint(0, 3, (sum(SIZES),), generator=g)
        return list(zip(x.split(SIZES), y.split(SIZES)))

    def one_batch():
        return data()[0]

    def bad_on_rank_one(rank, world_size):
        if rank == 1:
            raise OSError("cannot read shard-1.pt: file is truncated")
        return data()[rank::world_size]
    """
)
ARGS = ["--model", "problem.py:model", "--k", "4", "--tol", "1e-12", "--trace-matvecs", "8"]
ARGS += ["--density-probes", "1", "--no-plots", "--no-progress"]
TIMEOUT = 180


def _run(tmp: Path, ranks: int, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--standalone"]
    cmd = [sys.executable, *(launcher if ranks > 1 else []), "-m", "fastspec", "hessian", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    start = time.monotonic()
    done = subprocess.run(
        cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    return done, time.monotonic() - start


@pytest.fixture
def problem(tmp_path: Path) -> Path:
    (tmp_path / "problem.py").write_text(PROBLEM)
    return tmp_path


def test_two_ranks_write_the_report_of_one_process(problem: Path) -> None:
    args = [*ARGS, "--data", "problem.py:data", "--max-samples", "20"]
    one, _ = _run(problem, 1, *args, "--out", "one")
    assert one.returncode == 0, one.stderr
    two, _ = _run(problem, 2, *args, "--out", "two")
    assert two.returncode == 0, two.stderr
    a = json.loads((problem / "one" / "report.json").read_text())
    b = json.loads((problem / "two" / "report.json").read_text())
    assert a["settings"]["world_size"] == 1 and b["settings"]["world_size"] == 2
    # --max-samples 20 cuts the last batch to 2 samples before the batches are shared
    assert a["settings"]["num_samples"] == b["settings"]["num_samples"] == 20
    for key in ("eigenvalues",):
        assert np.allclose(b[key], a[key], rtol=1e-10, atol=0), (a[key], b[key])
    assert np.isclose(b["trace"]["estimate"], a["trace"]["estimate"], rtol=1e-10, atol=0)
    assert np.allclose(b["density"]["nodes"], a["density"]["nodes"], rtol=1e-10, atol=1e-12)
    assert two.stdout.count("report written to two/") == 1  # rank 0 alone reports


def test_a_failing_rank_ends_every_rank_with_its_message(problem: Path) -> None:
    done, seconds = _run(problem, 2, *ARGS, "--data", "problem.py:bad_on_rank_one", "--out", "x")
    assert done.returncode != 0
    assert "cannot read shard-1.pt: file is truncated" in done.stderr
    # the agent's summary names the failing rank's error as the root cause
    assert "cannot read shard-1.pt" in done.stderr.split("Root Cause")[-1]
    assert seconds < TIMEOUT
    assert not (problem / "x").exists()


def test_fewer_batches_than_ranks_is_an_error(problem: Path) -> None:
    done, _ = _run(problem, 2, *ARGS, "--data", "problem.py:one_batch", "--out", "x")
    assert done.returncode != 0
    assert "1 batch cannot be shared by 2 ranks" in done.stderr
