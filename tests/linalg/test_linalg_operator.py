"""The LinearOperator contract and aslinearoperator's adapters."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from fastspec.linalg import (
    CallableOperator,
    DenseOperator,
    LinearOperator,
    MatmulOperator,
    ScipyOperator,
    aslinearoperator,
    eigsh,
)

P = 50


@pytest.fixture
def A(spectrum_matrix) -> torch.Tensor:
    return spectrum_matrix(torch.linspace(-1.0, 3.0, P, dtype=torch.float64), seed=0)


@pytest.fixture
def V() -> torch.Tensor:
    return torch.randn(P, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


class MatmulOnly:
    """A curvlinops-style object: shape/dtype/device attributes and ``@`` on tensors."""

    def __init__(self, A: torch.Tensor) -> None:
        self._A = A
        self.shape = tuple(A.shape)
        self.dtype = A.dtype
        self.device = A.device

    def __matmul__(self, X: torch.Tensor) -> torch.Tensor:
        return self._A @ X


class WithMatmat:
    def __init__(self, A: torch.Tensor) -> None:
        self._A = A
        self.shape = tuple(A.shape)

    def matmat(self, X: torch.Tensor) -> torch.Tensor:
        return self._A @ X


def adapters(A: torch.Tensor) -> dict[str, LinearOperator]:
    An = A.numpy()
    return {
        "tensor": aslinearoperator(A),
        "numpy": aslinearoperator(An),
        "callable": aslinearoperator(lambda X: A @ X, shape=A.shape, dtype=A.dtype),
        "callable_vec": CallableOperator(
            lambda x: A @ x, shape=A.shape, dtype=A.dtype, batched=False
        ),
        "scipy_linop": aslinearoperator(spla.aslinearoperator(An)),
        "scipy_matvec_only": aslinearoperator(
            spla.LinearOperator(An.shape, matvec=lambda x: An @ x, dtype=np.float64)
        ),
        "scipy_sparse": aslinearoperator(sp.csr_matrix(An)),
        "matmul_only": aslinearoperator(MatmulOnly(A)),
        "matmat": aslinearoperator(WithMatmat(A), dtype=torch.float64),
    }


def test_adapters_agree_with_dense(A, V):
    for name, op in adapters(A).items():
        assert isinstance(op, LinearOperator), name
        assert op.shape == (P, P) and op.size == P, name
        assert op.dtype == torch.float64, name
        assert op.device == torch.device("cpu"), name
        torch.testing.assert_close(op.matmat(V), A @ V, msg=name)
        torch.testing.assert_close(op.matvec(V[:, 0]), A @ V[:, 0], msg=name)
        torch.testing.assert_close(op @ V, A @ V, msg=name)
        torch.testing.assert_close(op @ V[:, 0], A @ V[:, 0], msg=name)
        torch.testing.assert_close(op.to_dense(block_size=7), A, msg=name)


def test_adapter_kinds(A):
    ops = adapters(A)
    assert isinstance(ops["tensor"], DenseOperator)
    assert isinstance(ops["numpy"], DenseOperator)
    assert isinstance(ops["callable"], CallableOperator)
    assert isinstance(ops["scipy_linop"], ScipyOperator)
    assert isinstance(ops["scipy_sparse"], ScipyOperator)
    assert isinstance(ops["matmul_only"], MatmulOperator)
    assert aslinearoperator(ops["tensor"]) is ops["tensor"]


def test_eigsh_through_every_adapter(A):
    ref = torch.linalg.eigvalsh(A).flip(0)[:4]
    for name, op in adapters(A).items():
        # max_basis keeps P > max_basis + B, so the Lanczos path (not the dense one) runs
        res = eigsh(op, 4, block_size=2, max_basis=20, tol=1e-10, seed=0)
        assert res.method == "block-lanczos", name
        assert res.all_converged, name
        torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-9, atol=0, msg=name)


def test_conversion_options(A):
    op = aslinearoperator(A, dtype=torch.float32)
    assert op.dtype == torch.float32 and isinstance(op, DenseOperator)
    sop = aslinearoperator(spla.aslinearoperator(A.numpy().astype(np.float32)))
    assert sop.dtype == torch.float32
    assert sop.matmat(torch.ones(P, 1)).dtype == torch.float32
    cop = aslinearoperator(lambda X: X, shape=(4, 4))
    assert cop.dtype == torch.get_default_dtype()


def test_contradictions_and_missing_shape(A):
    op = aslinearoperator(A)
    with pytest.raises(ValueError, match="dtype"):
        aslinearoperator(op, dtype=torch.float32)
    with pytest.raises(ValueError, match="shape"):
        aslinearoperator(op, shape=(3, 3))
    with pytest.raises(ValueError, match="shape"):
        aslinearoperator(A, shape=(3, 3))
    with pytest.raises(ValueError, match="shape=\\(P, P\\)"):
        aslinearoperator(lambda X: X)
    with pytest.raises(ValueError, match="pass shape"):
        aslinearoperator(WithoutShape())
    with pytest.raises(ValueError, match="square"):
        aslinearoperator(np.zeros((3, 4)))
    with pytest.raises(TypeError, match="real floating"):
        aslinearoperator(lambda X: X, shape=(3, 3), dtype=torch.int32)
    with pytest.raises(ValueError, match="x must be"):
        op @ torch.zeros(P, 1, 1, dtype=torch.float64)


class WithoutShape:
    def matmat(self, X: torch.Tensor) -> torch.Tensor:
        return X


def test_repr(A):
    assert "DenseOperator(shape=(50, 50)" in repr(aslinearoperator(A))


def test_solvers_on_device(device, spectrum_matrix):
    """The pure-torch solvers keep everything on the operator's device (CUDA when present)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    from fastspec.linalg import slq, trace

    evals = torch.linspace(-1.0, 3.0, 300, dtype=torch.float64)
    A = spectrum_matrix(evals, seed=0).to(device)
    res = eigsh(A, 5, which="BE", block_size=2, tol=1e-9, seed=0, return_eigenvectors=True)
    assert res.method == "block-lanczos" and res.all_converged
    assert res.eigenvalues.device == A.device and res.eigenvectors.device == A.device
    expect = torch.cat([evals.flip(0)[:3], evals[:2].flip(0)])
    torch.testing.assert_close(res.eigenvalues.cpu(), expect, atol=1e-9, rtol=0)
    op = CallableOperator(lambda X: A @ X, shape=A.shape, dtype=A.dtype, device=device.type)
    assert op.device == A.device  # "cuda" is normalised to "cuda:<current>"
    assert eigsh(op, 3, block_size=2, seed=0).all_converged
    sres = slq(A, num_probes=2, num_steps=10, seed=0)
    torch.testing.assert_close(sres.weights.sum(1), torch.ones(2, dtype=torch.float64))
    t = trace(A, num_matvecs=30, seed=0)
    assert abs(t.estimate - float(evals.sum())) < 6 * t.std_error + 1e-9
