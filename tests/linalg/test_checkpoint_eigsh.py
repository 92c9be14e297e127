"""eigsh checkpoints: a run killed (SIGKILL) at any point resumes to bitwise the same result.

The worker at the bottom of this file runs in a subprocess and kills itself at a chosen point:
after product ``n`` (mid-cycle), inside a thick restart, inside the final certification, or
half-way through writing a checkpoint file. The test process then resumes from the directory
and compares with an uninterrupted run (same machine, same thread count).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from fastspec.checkpoint import Checkpoint, CheckpointError, tensor_digest
from fastspec.linalg import LinearOperator, eigsh

P, K = 300, 10
SETTINGS: dict[str, Any] = {"tol": 1e-8, "block_size": 2, "max_basis": 28, "seed": 3}


def problem() -> torch.Tensor:
    """A dense symmetric matrix with a power-law spectrum and one double eigenvalue."""
    gen = torch.Generator().manual_seed(0)
    evals = 1.0 / torch.arange(1, P + 1, dtype=torch.float64) ** 1.1
    evals[4] = evals[3]
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=gen, dtype=torch.float64))
    return (Q * evals) @ Q.T


class Counting(LinearOperator):
    """``A`` that counts its products and SIGKILLs its process after product ``kill_after``."""

    def __init__(self, A: torch.Tensor, kill_after: int | None = None) -> None:
        self.shape, self.dtype, self.device = (P, P), A.dtype, A.device
        self.A, self.kill_after, self.count = A, kill_after, 0

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.count += V.shape[1]
        if self.kill_after is not None and self.count >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.A @ V


def checkpoint(directory: Path, A: torch.Tensor, every: int = 6) -> Checkpoint:
    return Checkpoint(
        directory, every_seconds=None, every_products=every, fingerprint={"A": tensor_digest(A)}
    )


def same(a: Any, b: Any) -> bool:
    return (
        torch.equal(a.eigenvalues, b.eigenvalues)
        and torch.equal(a.residuals, b.residuals)
        and torch.equal(a.converged, b.converged)
        and torch.equal(a.eigenvectors, b.eigenvectors)
        and (a.num_matvecs, a.num_restarts) == (b.num_matvecs, b.num_restarts)
    )


@pytest.fixture(scope="module")
def reference() -> Any:
    A = problem()
    return eigsh(A, K, return_eigenvectors=True, **SETTINGS)


def run_worker(directory: Path, point: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, __file__, str(directory), point], env=env, capture_output=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    return proc.returncode


@pytest.mark.parametrize("point", ["product:9", "product:41", "restart:1", "restart:3",
                                   "certify:1", "write:3"])  # fmt: skip
def test_killed_run_resumes_bitwise(tmp_path: Path, point: str, reference: Any) -> None:
    assert reference.num_restarts >= 3  # the kill points exist in this run
    run_worker(tmp_path, point)
    assert (tmp_path / "manifest.json").exists()
    A = problem()
    op = Counting(A)
    res = eigsh(
        op, K, return_eigenvectors=True, checkpoint=checkpoint(tmp_path, A), resume=True,
        **SETTINGS,
    )  # fmt: skip
    assert same(res, reference)
    assert op.count < reference.num_matvecs  # work was kept, not redone
    # a finished run resumes to its stored result without a product
    op2 = Counting(A)
    again = eigsh(
        op2, K, return_eigenvectors=True, checkpoint=checkpoint(tmp_path, A), resume=True,
        **SETTINGS,
    )  # fmt: skip
    assert same(again, reference) and op2.count == 0


def test_uninterrupted_with_checkpoints_is_unchanged(tmp_path: Path, reference: Any) -> None:
    A = problem()
    res = eigsh(
        A, K, return_eigenvectors=True, checkpoint=checkpoint(tmp_path, A, every=2), **SETTINGS
    )
    assert same(res, reference)
    shards = [p.name for p in tmp_path.iterdir()]
    assert sorted(shards)[0] == "manifest.json" and len(shards) == 2  # the old shards removed
    assert all(".tmp-" not in name for name in shards)


def test_basis_growth_resumes_bitwise(tmp_path: Path) -> None:
    """A stalled default basis grows; a checkpoint written after growth restores the new size."""
    evals = torch.cat([torch.ones(6), torch.linspace(0.5, 0.01, 194)]).double()
    gen = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(200, 200, generator=gen, dtype=torch.float64))
    A = (Q * evals) @ Q.T
    kw: dict[str, Any] = {"block_size": 2, "seed": 0, "tol": 1e-8}
    ref = eigsh(A, 6, return_eigenvectors=True, **kw)
    cp = Checkpoint(tmp_path, every_seconds=None, every_products=4)
    with pytest.raises(RuntimeError, match="stop"):
        eigsh(_Stopping(A, ref.num_matvecs - 10), 6, checkpoint=cp, return_eigenvectors=True, **kw)
    res = eigsh(_Stopping(A, None), 6, checkpoint=cp, resume=True, return_eigenvectors=True, **kw)
    assert same(res, ref)
    assert ref.max_basis > 24  # the basis grew (from the default 24)


class _Stopping(LinearOperator):
    def __init__(self, A: torch.Tensor, after: int | None) -> None:
        self.shape, self.dtype, self.device = (A.shape[0], A.shape[1]), A.dtype, A.device
        self.A, self.after, self.count = A, after, 0

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.count += V.shape[1]
        if self.after is not None and self.count >= self.after:
            raise RuntimeError("stop")
        return self.A @ V


def _partial(tmp_path: Path) -> torch.Tensor:
    A = problem()
    with pytest.raises(RuntimeError, match="stop"):
        eigsh(_Stopping(A, 40), K, checkpoint=checkpoint(tmp_path, A), **SETTINGS)
    return A


def test_mismatched_checkpoint_names_what_differs(tmp_path: Path) -> None:
    A = _partial(tmp_path)
    with pytest.raises(CheckpointError, match=r"k: 10 in the checkpoint, 9 now"):
        eigsh(A, K - 1, checkpoint=checkpoint(tmp_path, A), resume=True, **SETTINGS)
    with pytest.raises(CheckpointError, match=r"tol: 1e-08 in the checkpoint, 1e-06 now"):
        eigsh(A, K, checkpoint=checkpoint(tmp_path, A), resume=True, **{**SETTINGS, "tol": 1e-6})
    B = A.clone()
    B[0, 0] += 1e-12
    with pytest.raises(CheckpointError, match=r"\bA: '[0-9a-f]+' in the checkpoint"):
        eigsh(B, K, checkpoint=checkpoint(tmp_path, B), resume=True, **SETTINGS)
    with pytest.raises(CheckpointError, match="dtype"):
        eigsh(A.float(), K, checkpoint=checkpoint(tmp_path, A), resume=True, **SETTINGS)


def _shard(tmp_path: Path) -> Path:
    (shard,) = [p for p in tmp_path.iterdir() if p.suffix == ".safetensors"]
    return shard


def test_corrupted_or_truncated_checkpoint_is_an_error(tmp_path: Path) -> None:
    A = _partial(tmp_path)
    shard = _shard(tmp_path)
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0x01
    shard.write_bytes(bytes(data))
    for resume in (True, "if-present"):  # never a silent restart
        with pytest.raises(CheckpointError, match="corrupted"):
            eigsh(A, K, checkpoint=checkpoint(tmp_path, A), resume=resume, **SETTINGS)
    shard.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match="truncated"):
        eigsh(A, K, checkpoint=checkpoint(tmp_path, A), resume=True, **SETTINGS)
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupted or truncated manifest"):
        eigsh(A, K, checkpoint=checkpoint(tmp_path, A), resume=True, **SETTINGS)


def test_world_size_and_resume_rules(tmp_path: Path) -> None:
    A = _partial(tmp_path)
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        eigsh(A, K, checkpoint=checkpoint(tmp_path, A), **SETTINGS)
    manifest = tmp_path / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "world_size": 2}))
    with pytest.raises(CheckpointError, match="written by 2 ranks, this run has 1"):
        eigsh(A, K, checkpoint=checkpoint(tmp_path, A), resume=True, **SETTINGS)
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        eigsh(A, K, checkpoint=tmp_path / "none", resume=True, **SETTINGS)
    res = eigsh(A, K, checkpoint=tmp_path / "new", resume="if-present", **SETTINGS)
    assert res.all_converged


def test_bad_arguments() -> None:
    A = problem()
    with pytest.raises(TypeError, match="checkpoint must be"):
        eigsh(A, K, checkpoint=5, **SETTINGS)
    with pytest.raises(ValueError, match="resume"):
        eigsh(A, K, checkpoint="x", resume="yes", **SETTINGS)
    with pytest.raises(TypeError, match="resume"):
        eigsh(A, K, checkpoint="x", resume=None, **SETTINGS)
    with pytest.raises(ValueError, match="every_products"):
        Checkpoint("x", every_products=0)
    with pytest.raises(ValueError, match="every_seconds"):
        Checkpoint("x", every_seconds=-1.0)


def _worker(directory: str, point: str) -> None:
    """Run eigsh with checkpoints and SIGKILL this process at ``point`` (``what:n``)."""
    import fastspec.checkpoint as fc
    from fastspec.linalg.lanczos import certify, restart_locking

    what, n = point.split(":")
    count = {"n": 0}

    def kill_on_nth() -> None:
        count["n"] += 1
        if count["n"] >= int(n):
            os.kill(os.getpid(), signal.SIGKILL)

    A = problem()
    op = Counting(A, int(n) if what == "product" else None)
    if what == "restart":
        orig = restart_locking.thick_restart

        def restart(st: Any, ck: Any) -> None:
            orig(st, ck)
            kill_on_nth()

        restart_locking.thick_restart = restart  # type: ignore[assignment]
    elif what == "certify":
        orig_rr = certify._rayleigh_residual

        def rr(*args: Any, **kwargs: Any) -> None:
            kill_on_nth()
            orig_rr(*args, **kwargs)

        certify._rayleigh_residual = rr  # type: ignore[assignment]
    elif what == "write":
        orig_w = fc._write_shard

        def write(f: Any, tensors: Any, meta: Any) -> int:
            count["n"] += 1
            nth = count["n"] >= int(n)

            class Half:  # the n-th save dies after its first large write
                def write(self, b: Any) -> None:
                    f.write(b)
                    if nth and len(b) > 1000:
                        f.flush()
                        os.kill(os.getpid(), signal.SIGKILL)

            return orig_w(Half(), tensors, meta)

        fc._write_shard = write  # type: ignore[assignment]
    eigsh(op, K, return_eigenvectors=True, checkpoint=checkpoint(Path(directory), A), **SETTINGS)
    sys.exit(3)  # not killed: the point was never reached


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
