"""The Krylov basis of eigsh stored in a lower precision or spilled to a memory-mapped file.

Oracles: ``torch.linalg.eigvalsh`` of the dense matrix, and the residuals ``‖Ax − θx‖`` of the
returned vectors recomputed here; a spilled basis against the in-memory run of the same seed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from fastspec.checkpoint import Checkpoint, CheckpointError
from fastspec.linalg import ConvergenceWarning, EigshResult, eigsh
from fastspec.linalg.lanczos import certify
from tests.helpers.distributed import run_ranks
from tests.helpers.stopping import Stopping

P, K = 600, 8
#: the known spectrum, ascending: a bulk in [0, 1] and 12 separated values in [2, 5]
EVALS = torch.cat(
    [
        torch.linspace(0.0, 1.0, P - 12, dtype=torch.float64),
        torch.linspace(2.0, 5.0, 12, dtype=torch.float64),
    ]
)


def _matrix(dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    """``Q diag(EVALS) Qᵀ`` with a random orthogonal ``Q``."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=gen, dtype=torch.float64))
    return ((Q * EVALS) @ Q.T).to(dtype)


@pytest.fixture(scope="module")
def A() -> torch.Tensor:
    return _matrix()


def _recomputed_residuals(A: torch.Tensor, res: EigshResult) -> torch.Tensor:
    """``‖Ax − θx‖ / max(|θ|, √ε‖A‖)`` of the returned pairs, in float64."""
    assert res.eigenvectors is not None
    X = res.eigenvectors.to(torch.float64)
    theta = res.eigenvalues.to(torch.float64)
    R = A.to(torch.float64) @ X - X * theta
    anorm = float(EVALS.abs().max())  # eigsh's estimate of ‖A‖ only matters near 0
    floor = math.sqrt(torch.finfo(A.dtype).eps) * anorm
    return torch.linalg.vector_norm(R, dim=0) / theta.abs().clamp_min(floor)


def _check_certified(
    A: torch.Tensor, res: EigshResult, tol: float, which: str = "LA", sign: float = 1.0
) -> None:
    """All pairs converged, residuals as recomputed here, eigenvalues as the known spectrum."""
    assert res.all_converged, res.residuals
    assert res.eigenvectors is not None and res.eigenvectors.dtype == A.dtype
    norms = torch.linalg.vector_norm(res.eigenvectors.to(torch.float64), dim=0)
    eps = torch.finfo(A.dtype).eps
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=10 * eps)
    mine = _recomputed_residuals(A, res)
    # a float32 operator's residuals are computed in float32
    rtol = 1e-6 if A.dtype == torch.float64 else 1e-4
    torch.testing.assert_close(res.residuals, mine, rtol=rtol, atol=1e-12)
    assert bool((mine <= tol).all()), mine
    true = (sign * EVALS).sort().values
    want = true.flip(0)[:K] if which == "LA" else true[:K]
    # a Rayleigh quotient with relative residual r is within r·|θ| of an eigenvalue
    err = (res.eigenvalues.to(torch.float64) - want).abs()
    assert bool((err <= tol * want.abs() + 1e-12).all()), (err, want)


@pytest.mark.parametrize(
    ("basis_dtype", "tol"), [("float32", 1e-5), (torch.float32, 1e-6), ("bfloat16", 1e-2)]
)
def test_rounded_basis_certified(A: torch.Tensor, basis_dtype: Any, tol: float) -> None:
    known = torch.linalg.eigvalsh(A)  # the builder's spectrum is the matrix's
    torch.testing.assert_close(known, EVALS, rtol=0, atol=1e-12)
    res = eigsh(A, K, tol=tol, seed=0, basis_dtype=basis_dtype, return_eigenvectors=True)
    assert res.basis_dtype == str(basis_dtype).removeprefix("torch.")
    assert not res.basis_spilled
    _check_certified(A, res, tol)


def test_rounded_basis_float32_op_smallest() -> None:
    # the bottom of -A is the top of A: separated from the bulk
    A32 = -_matrix(torch.float32, seed=1)
    res = eigsh(
        A32, K, which="SA", tol=1e-2, seed=1, basis_dtype=torch.bfloat16, return_eigenvectors=True
    )
    assert res.basis_dtype == "bfloat16"
    _check_certified(A32, res, 1e-2, which="SA", sign=-1.0)


def test_rounded_basis_with_locking_is_certified(
    A: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small basis locks pairs: the final Rayleigh–Ritz on rounded rows still certifies."""
    calls: list[bool] = []
    real = certify._finish_rounded

    def spy(*args: Any, **kw: Any) -> None:
        calls.append(kw["rayleigh_ritz"])
        real(*args, **kw)

    monkeypatch.setattr(certify, "_finish_rounded", spy)
    res = eigsh(
        A, K, tol=1e-5, seed=2, basis_dtype="float32", max_basis=K + 6, return_eigenvectors=True
    )
    assert calls == [True]
    assert res.num_restarts > 0
    _check_certified(A, res, 1e-5)


def _same(a: EigshResult, b: EigshResult) -> bool:
    assert a.eigenvectors is not None and b.eigenvectors is not None
    return (
        torch.equal(a.eigenvalues, b.eigenvalues)
        and torch.equal(a.residuals, b.residuals)
        and torch.equal(a.eigenvectors, b.eigenvectors)
        and a.num_matvecs == b.num_matvecs
        and a.num_restarts == b.num_restarts
    )


@pytest.mark.parametrize("basis_dtype", [None, "float32"])
@pytest.mark.parametrize("store_products", [None, False])
def test_spilled_equals_in_memory(
    A: torch.Tensor, tmp_path: Path, basis_dtype: str | None, store_products: bool | None
) -> None:
    kw: dict[str, Any] = {
        "tol": 1e-5,
        "seed": 4,
        "basis_dtype": basis_dtype,
        "store_products": store_products,
        "return_eigenvectors": True,
    }
    ref = eigsh(A, K, **kw)
    res = eigsh(A, K, basis_dir=tmp_path, **kw)
    assert _same(res, ref)
    assert res.basis_spilled and not ref.basis_spilled
    assert res.basis_dtype == ref.basis_dtype == (basis_dtype or "float64")
    assert list(tmp_path.iterdir()) == []


def test_spilled_basis_grows(tmp_path: Path) -> None:
    """A stalled default basis is doubled: the new buffer is spilled as well."""
    # a cluster at the top stalls the default basis (see test_eigsh's growth tests)
    evals = torch.cat(
        [torch.full((6,), 1.0, dtype=torch.float64), torch.linspace(0.0, 0.99, P - 6).double()]
    )
    gen = torch.Generator().manual_seed(5)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=gen, dtype=torch.float64))
    B = (Q * (evals + 1e-4 * torch.arange(P) / P)) @ Q.T
    kw: dict[str, Any] = {"tol": 1e-6, "seed": 5, "return_eigenvectors": True, "block_size": 1}
    ref = eigsh(B, 6, **kw)
    res = eigsh(B, 6, basis_dir=str(tmp_path), **kw)
    assert _same(res, ref)
    assert list(tmp_path.iterdir()) == []


def test_spilled_file_removed_when_eigsh_raises(A: torch.Tensor, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="stop"):
        eigsh(Stopping(A, 40), K, seed=0, basis_dir=tmp_path, basis_dtype="float32")
    assert list(tmp_path.iterdir()) == []


def test_tol_below_attainable_ends_unconverged(A: torch.Tensor) -> None:
    """bfloat16 rows cannot reach 1e-5: unconverged pairs and a warning, within max_restarts."""
    with pytest.warns(ConvergenceWarning, match="did not reach tol"):
        res = eigsh(
            A, K, tol=1e-5, seed=0, basis_dtype="bfloat16", max_restarts=6,
            return_eigenvectors=True,
        )  # fmt: skip
    assert res.num_restarts <= 6
    assert not res.all_converged
    mine = _recomputed_residuals(A, res)
    torch.testing.assert_close(res.residuals, mine, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(res.converged, mine <= 1e-5)


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"basis_dtype": torch.float16}, ValueError, "basis_dtype"),
        ({"basis_dtype": torch.int64}, ValueError, "basis_dtype"),
        ({"basis_dtype": 32}, TypeError, "basis_dtype"),
        ({"basis_dtype": "float128"}, ValueError, "basis_dtype"),
        ({"basis_dtype": "float16"}, ValueError, "basis_dtype"),
        ({"basis_dir": 3}, TypeError, "basis_dir"),
        ({"basis_dir": "/nonexistent/fastspec-basis"}, ValueError, "basis_dir"),
        (
            {"basis_dtype": "float32", "store_products": True},
            ValueError,
            "store_products=True needs basis_dtype",
        ),
    ],
)
def test_bad_inputs(A: torch.Tensor, kw: dict[str, Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        eigsh(A, K, **kw)


def test_basis_dtype_above_op_dtype() -> None:
    A32 = _matrix(torch.float32)
    with pytest.raises(ValueError, match="basis_dtype must be the operator's dtype or a lower"):
        eigsh(A32, K, basis_dtype=torch.float64)
    with pytest.raises(ValueError, match="bfloat16 for a float32 operator"):
        eigsh(A32, K, basis_dtype="float64")


def test_basis_dir_file_or_unwritable(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ValueError, match="basis_dir must be an existing directory"):
        eigsh(_matrix(), K, basis_dir=f)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="basis_dir must be a writable directory"):
            eigsh(_matrix(), K, basis_dir=ro)


def test_to_dict_carries_storage(A: torch.Tensor, tmp_path: Path) -> None:
    d = eigsh(A, K, tol=1e-4, seed=0, basis_dtype="float32", basis_dir=tmp_path).to_dict()
    assert d["basis_dtype"] == "float32" and d["basis_spilled"] is True
    d = eigsh(A, K, tol=1e-4, seed=0).to_dict()
    assert d["basis_dtype"] == "float64" and d["basis_spilled"] is False
    small = eigsh(torch.diag(torch.arange(1.0, 11.0)), 3).to_dict()  # dense path
    assert small["method"] == "dense" and small["basis_dtype"] == "float32"


def test_checkpoint_resume_float32_basis(A: torch.Tensor, tmp_path: Path) -> None:
    kw: dict[str, Any] = {
        "tol": 1e-6, "seed": 3, "basis_dtype": "float32", "max_basis": 24,
        "return_eigenvectors": True,
    }  # fmt: skip
    ref = eigsh(A, K, **kw)
    assert ref.num_matvecs > 30
    cp = Checkpoint(tmp_path / "cp", every_seconds=None, every_products=6)
    with pytest.raises(RuntimeError, match="stop"):
        eigsh(Stopping(A, 25), K, checkpoint=cp, **kw)
    op = Stopping(A, None)
    res = eigsh(op, K, checkpoint=cp, resume=True, basis_dir=tmp_path, **kw)
    assert _same(res, ref)
    assert op.count < ref.num_matvecs
    assert [p.name for p in tmp_path.iterdir()] == ["cp"]
    done = eigsh(Stopping(A, 0), K, checkpoint=cp, resume=True, **kw)  # the stored result
    assert _same(done, ref) and done.basis_dtype == "float32"
    with pytest.raises(CheckpointError, match="basis_dtype"):
        eigsh(Stopping(A, 0), K, checkpoint=cp, resume=True, **{**kw, "basis_dtype": None})


def _two_ranks(rank: int, world_size: int, directory: str) -> dict[str, Any]:
    A = _matrix()
    res = eigsh(
        A, K, tol=1e-5, seed=6, basis_dtype="float32", basis_dir=directory,
        return_eigenvectors=True,
    )  # fmt: skip
    X = res.gather_eigenvectors()
    assert X is not None
    mine = _recomputed_residuals(A, dataclasses.replace(res, eigenvectors=X, sharding=None))
    return {  # plain lists: tensors would travel through shared memory
        "values": res.eigenvalues.tolist(),
        "residuals": res.residuals.tolist(),
        "mine": mine.tolist(),
        "spilled": res.basis_spilled,
        "rows": res.eigenvectors.shape[0] if res.eigenvectors is not None else 0,
    }


def test_two_ranks_float32_spilled(A: torch.Tensor, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        one = eigsh(A, K, tol=1e-5, seed=6, basis_dtype="float32")
    out = run_ranks(_two_ranks, str(tmp_path), world_size=2, timeout=120)
    assert out[0]["rows"] + out[1]["rows"] == P
    for r in out:
        assert r["spilled"]
        values, residuals, mine = (
            torch.tensor(r[key], dtype=torch.float64) for key in ("values", "residuals", "mine")
        )
        assert r["values"] == out[0]["values"]
        torch.testing.assert_close(residuals, mine, rtol=1e-6, atol=1e-12)
        assert bool((mine <= 1e-5).all())
        # the numbers equal one process's up to rounding (of a float32 basis here)
        torch.testing.assert_close(values, one.eigenvalues, rtol=1e-8, atol=0)
    assert list(tmp_path.iterdir()) == []
