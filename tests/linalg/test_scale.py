"""Operators whose entries are finite but huge or tiny: sums of squares of their products
overflow or underflow, so eigsh and slq work on an exactly scaled copy (a power of two)."""

from __future__ import annotations

import pytest
import torch

from fastspec.linalg import eigsh, slq

#: finite but huge or tiny entries, in each dtype
SCALES = [
    (torch.float32, 1e20),
    (torch.float32, 1e-25),
    (torch.float64, 1e160),
    (torch.float64, 1e-170),
]

#: exact power-of-two factors that push each dtype's products out of the safe window
FACTOR = {torch.float32: 2.0**120, torch.float64: 2.0**1000}


def operator(P: int, scale: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=gen, dtype=torch.float64))
    d = torch.linspace(1.0, 2.0, P, dtype=torch.float64) ** 3
    A = ((Q * (d * scale)) @ Q.T).to(dtype)
    return 0.5 * (A + A.T), d.flip(0)


@pytest.mark.parametrize(("dtype", "scale"), SCALES)
@pytest.mark.parametrize("P", [20, 300])  # the dense path (P <= basis) and block Lanczos
def test_huge_and_tiny_operators(dtype: torch.dtype, scale: float, P: int) -> None:
    A, exact = operator(P, scale, dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-8
    res = eigsh(A, 3, tol=tol, seed=0, return_eigenvectors=True)
    assert res.method == ("dense" if P == 20 else "block-lanczos")
    assert res.all_converged
    torch.testing.assert_close(res.eigenvalues.double() / scale, exact[:3], rtol=tol, atol=0)
    # the certificate is that of the returned vectors, recomputed in float64 on A / scale
    V = res.eigenvectors.double()
    lam = res.eigenvalues.double() / scale
    direct = torch.linalg.vector_norm((A.double() / scale) @ V - V * lam, dim=0) / lam.abs()
    assert bool((direct <= 2 * tol).all()), direct
    assert bool((res.residuals > 0).all())  # no residual underflowed to an exact 0
    # they agree up to the rounding of one product in the operator's dtype (ε‖A‖/|λ|, ‖A‖ ≤ 8)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(res.residuals, direct, rtol=0.5, atol=16 * eps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scaling_is_exact(dtype: torch.dtype) -> None:
    """Scaled by a power of two, the run is the same run: same products, scaled eigenvalues."""
    A, _ = operator(300, 1.0, dtype)
    factor = FACTOR[dtype]
    big = A * factor
    r1 = eigsh(A, 3, tol=1e-4, seed=0)
    r2 = eigsh(big, 3, tol=1e-4, seed=0)
    assert r1.num_matvecs == r2.num_matvecs
    torch.testing.assert_close(r2.eigenvalues / factor, r1.eigenvalues, rtol=0, atol=0)
    torch.testing.assert_close(r2.residuals, r1.residuals, rtol=0, atol=0)


@pytest.mark.parametrize(("dtype", "scale"), SCALES)
def test_slq_on_huge_and_tiny_operators(dtype: torch.dtype, scale: float) -> None:
    A, _ = operator(300, scale, dtype)
    reference = slq(operator(300, 1.0, dtype)[0], num_probes=2, num_steps=30, seed=0)
    res = slq(A, num_probes=2, num_steps=30, seed=0)
    assert bool((res.lengths == 30).all())  # no β underflowed into a false invariant subspace
    rtol = 1e-3 if dtype == torch.float32 else 1e-9  # the two matrices differ by rounding
    torch.testing.assert_close(res.nodes / scale, reference.nodes, rtol=rtol, atol=0)
    assert float(reference.nodes.max()) > 7.9  # the top of the spectrum (λ_max = 8) is there


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slq_scaling_is_exact(dtype: torch.dtype) -> None:
    A, _ = operator(300, 1.0, dtype)
    factor = FACTOR[dtype]
    r1 = slq(A, num_probes=2, num_steps=20, seed=0)
    r2 = slq(A * factor, num_probes=2, num_steps=20, seed=0)
    torch.testing.assert_close(r2.nodes / factor, r1.nodes, rtol=0, atol=0)
    torch.testing.assert_close(r2.weights, r1.weights, rtol=0, atol=0)


#: float32 operators at the ends of the range: subnormal entries (whose scale, ≥ 2¹²⁸, does not
#: fit in float32) and entries near float32's maximum
EXTREME_F32 = [1e-40, 3e37]


@pytest.mark.parametrize("scale", EXTREME_F32)
def test_extreme_float32_operators(scale: float) -> None:
    """eigsh and slq on tiny and huge float32 operators give the float64 answer."""
    A, _ = operator(300, scale, torch.float32)
    exact = torch.linalg.eigvalsh(A.double()).flip(0)  # the float64 answer for these entries
    # subnormal entries and products carry fewer bits (about 2⁻¹⁴⁹ · √P / scale relative)
    rtol = 1e-4 if scale > 1.0 else 2e-2
    res = eigsh(A, 3, tol=1e-3, seed=0)
    assert res.all_converged
    torch.testing.assert_close(res.eigenvalues.double(), exact[:3], rtol=rtol, atol=0)
    dens = slq(A, num_probes=2, num_steps=20, seed=0)
    reference = slq(A.double(), num_probes=2, num_steps=20, seed=0)
    torch.testing.assert_close(dens.nodes, reference.nodes, rtol=rtol, atol=0)
