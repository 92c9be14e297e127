"""Bad inputs to eigsh / slq / trace raise clear errors naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastspec.linalg import CallableOperator, eigsh, slq, trace


@pytest.fixture
def A(spectrum_matrix) -> torch.Tensor:
    return spectrum_matrix(torch.linspace(0.1, 2.0, 80, dtype=torch.float64), seed=0)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"k": 0}, ValueError, "k must lie in"),
        ({"k": -3}, ValueError, "k must lie in"),
        ({"k": 80}, ValueError, "k must lie in"),
        ({"k": 200}, ValueError, "k must lie in"),
        ({"k": 2.0}, TypeError, "k must be an int"),
        ({"k": True}, TypeError, "k must be an int"),
        ({"k": 3, "which": "LR"}, ValueError, "which must be one of"),
        ({"k": 3, "which": "la"}, ValueError, "which must be one of"),
        ({"k": 3, "tol": 0.0}, ValueError, "tol must"),
        ({"k": 3, "tol": -1e-6}, ValueError, "tol must"),
        ({"k": 3, "tol": float("nan")}, ValueError, "tol must"),
        ({"k": 3, "tol": "1e-6"}, TypeError, "tol must be a real number"),
        ({"k": 3, "tol": 2.0}, ValueError, r"tol must lie in \(0, 1\)"),
        ({"k": 3, "tol": 1.0}, ValueError, r"tol must lie in \(0, 1\)"),
        ({"k": 3, "which": 1}, TypeError, "which must be one of"),
        ({"k": 3, "max_restarts": 2.0}, TypeError, "max_restarts must be an int"),
        ({"k": 3, "seed": 1.5}, TypeError, "seed must be an int"),
        ({"k": 3, "return_eigenvectors": "yes"}, TypeError, "return_eigenvectors must be True"),
        ({"k": 3, "progress": "yes"}, TypeError, "progress must be True, False or a callable"),
        ({"k": 3, "block_size": 0}, ValueError, "block_size must be"),
        ({"k": 3, "block_size": 2.5}, TypeError, "block_size must be"),
        ({"k": 3, "max_basis": 0}, ValueError, "max_basis must be"),
        ({"k": 10, "block_size": 4, "max_basis": 12}, ValueError, "max_basis must be >="),
        ({"k": 3, "max_restarts": -1}, ValueError, "max_restarts"),
    ],
)
def test_eigsh_bad_arguments(A, kwargs, exc, match):
    k = kwargs.pop("k")
    with pytest.raises(exc, match=match):
        eigsh(A, k, **kwargs)


def test_eigsh_accepts_numpy_scalars(A):
    """numpy scalars are taken like Python's, with the same answer."""
    kw = dict(tol=1e-8, seed=0, block_size=1, max_basis=24, max_restarts=50)
    ref = eigsh(A, 3, **kw)
    np_kw = {n: (np.float64(v) if isinstance(v, float) else np.int64(v)) for n, v in kw.items()}
    res = eigsh(A, np.int64(3), **np_kw)
    assert torch.equal(res.eigenvalues, ref.eigenvalues) and res.all_converged


def test_eigsh_non_square_and_not_2d():
    with pytest.raises(ValueError, match="square"):
        eigsh(torch.zeros(5, 4, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="2-D"):
        eigsh(torch.zeros(5, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="square"):
        eigsh(CallableOperator(lambda V: V, shape=(5, 6)), 1)


def test_eigsh_non_symmetric_dense(A):
    B = A.clone()
    B[0, 1] += 0.1
    with pytest.raises(ValueError, match="not symmetric"):
        eigsh(B, 3)
    with pytest.raises(ValueError, match="not symmetric"):
        slq(B, num_probes=2, num_steps=5)
    # trace does not need symmetry
    assert trace(B, method="hutchinson", num_matvecs=4, seed=0).num_matvecs == 4


def test_eigsh_non_symmetric_detected_in_dense_fallback(A):
    B = A.clone()
    B[0, 1] += 0.1
    op = CallableOperator(lambda V: B @ V, shape=B.shape, dtype=B.dtype)
    with pytest.raises(ValueError, match="not symmetric"):
        eigsh(op, 70)  # P <= max_basis + B: the dense path sees the whole matrix


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_from_operator(A, bad):
    calls = {"n": 0}

    def fn(V: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = A @ V
        if calls["n"] >= 3:
            out[7, 0] = bad
        return out

    op = CallableOperator(fn, shape=A.shape, dtype=A.dtype)
    with pytest.raises(ValueError, match="NaN or inf"):
        eigsh(op, 3, block_size=2, seed=0)
    calls["n"] = 0
    with pytest.raises(ValueError, match="NaN or inf"):
        eigsh(op, 70, seed=0)  # dense fallback
    calls["n"] = 0
    with pytest.raises(ValueError, match="NaN or inf"):
        slq(op, num_probes=2, num_steps=10, seed=0)
    for method in ("hutch++", "hutchinson"):
        calls["n"] = 0
        with pytest.raises(ValueError, match="NaN or inf"):
            trace(op, method=method, num_matvecs=12, block_size=2, seed=0)


def test_nan_in_dense_matrix(A):
    B = A.clone()
    B[3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        eigsh(B, 3)


def test_operator_output_dtype_and_device_mismatch(A):
    wrong_dtype = CallableOperator(lambda V: (A @ V).float(), shape=A.shape, dtype=torch.float64)
    with pytest.raises(TypeError, match="dtype"):
        eigsh(wrong_dtype, 3, seed=0)
    with pytest.raises(TypeError, match="dtype"):
        trace(wrong_dtype, num_matvecs=6, seed=0)
    wrong_device = CallableOperator(
        lambda V: torch.empty(V.shape, dtype=V.dtype, device="meta"), shape=A.shape, dtype=A.dtype
    )
    with pytest.raises(TypeError, match="meta"):
        eigsh(wrong_device, 3, seed=0)
    with pytest.raises(TypeError, match="meta"):
        slq(wrong_device, num_probes=1, num_steps=3, seed=0)


def test_vector_only_callable_gets_a_hint(A):
    op = CallableOperator(lambda v: A @ v[:, 0], shape=A.shape, dtype=A.dtype)  # drops B
    with pytest.raises(ValueError, match="batched=False"):
        eigsh(op, 3, block_size=2, seed=0)


def test_v0_mismatches(A):
    with pytest.raises(TypeError, match=r"v0\.dtype"):
        eigsh(A, 3, v0=torch.ones(80, dtype=torch.float32))
    with pytest.raises(TypeError, match="v0 is on"):
        eigsh(A, 3, v0=torch.ones(80, dtype=torch.float64, device="meta"))
    with pytest.raises(ValueError, match="v0 must have shape"):
        eigsh(A, 3, v0=torch.ones(79, dtype=torch.float64))
    with pytest.raises(ValueError, match="v0 must have shape"):
        eigsh(A, 3, block_size=2, v0=torch.ones(80, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="v0 contains NaN"):
        eigsh(A, 3, v0=torch.full((80,), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="zero column"):
        eigsh(A, 3, v0=torch.zeros(80, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"v0 must be a torch\.Tensor"):
        eigsh(A, 3, v0=[1.0] * 80)


def test_unsupported_dtypes(A):
    with pytest.raises(TypeError, match="real floating"):
        eigsh(A.to(torch.int64), 3)
    with pytest.raises(TypeError, match="float32 or float64"):
        eigsh(A.to(torch.float16), 3)
    with pytest.raises(TypeError, match="float32 or float64"):
        slq(A.to(torch.bfloat16), num_probes=1, num_steps=2)
    with pytest.raises(TypeError, match="real floating"):
        eigsh(A.to(torch.complex128), 3)


def test_unsupported_operator_kind():
    with pytest.raises(TypeError, match="cannot use a str"):
        eigsh("not an operator", 1)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"num_probes": 0, "num_steps": 5}, ValueError, "num_probes must be >= 1"),
        ({"num_probes": 2, "num_steps": 0}, ValueError, "num_steps must be >= 1"),
        ({"num_probes": 2, "num_steps": 81}, ValueError, "num_steps must be <= P"),
        ({"num_probes": 2.0, "num_steps": 5}, TypeError, "num_probes must be an int"),
        ({"num_probes": 2, "num_steps": 5, "reorthogonalize": 1}, TypeError, "reorthogonalize"),
        ({"num_probes": 2, "num_steps": 5, "seed": "0"}, TypeError, "seed must be an int"),
    ],
)
def test_slq_bad_arguments(A, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        slq(A, **kwargs)


def test_density_bad_arguments(A):
    res = slq(A, num_probes=2, num_steps=5, seed=0)
    for sigma in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            res.density(torch.linspace(0, 1, 5), sigma=sigma)
    with pytest.raises(ValueError, match="grid"):
        res.density([0.0, float("nan")], sigma=0.1)
    with pytest.raises(TypeError, match="sigma must be a real number"):
        res.density([0.0], sigma="0.1")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"method": "hutch", "num_matvecs": 10}, ValueError, "method must be one of"),
        ({"method": "hutch++", "num_matvecs": 3}, ValueError, "num_matvecs must be >= 4"),
        ({"method": "hutchinson", "num_matvecs": 1}, ValueError, "num_matvecs must be >= 2"),
        ({"num_matvecs": 10.0}, TypeError, "num_matvecs must be an int"),
        ({"num_matvecs": 10, "block_size": 0}, ValueError, "block_size must be >= 1"),
        ({"num_matvecs": 10, "block_size": 2.0}, TypeError, "block_size must be an int"),
        ({"method": 3, "num_matvecs": 10}, TypeError, "method must be one of"),
    ],
)
def test_trace_bad_arguments(A, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        trace(A, **kwargs)


@pytest.mark.parametrize(
    ("shape", "exc", "match"),
    [
        ("ab", TypeError, "shape must be a pair"),
        (5, TypeError, "shape must be a pair"),
        ((5, 5, 5), ValueError, "shape must be a pair"),
        ((5.0, 5.0), TypeError, r"shape\[0\] must be an int"),
        ((5, 4), ValueError, "square"),
    ],
)
def test_callable_operator_bad_shape(shape, exc, match):
    with pytest.raises(exc, match=match):
        CallableOperator(lambda V: V, shape=shape, dtype=torch.float64)


def test_operator_flags_are_checked(A):
    with pytest.raises(TypeError, match="batched must be True or False"):
        CallableOperator(lambda V: V, shape=(4, 4), batched="no")
    op = CallableOperator(lambda V: A @ V, shape=(np.int64(80), np.int64(80)), dtype=A.dtype)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        op.to_dense(block_size=0)
    torch.testing.assert_close(op.to_dense(block_size=np.int64(7)), A, rtol=0, atol=1e-15)
