"""eigsh against dense torch.linalg.eigh on matrices with known spectra."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from fastspec.linalg import ConvergenceWarning, EigshProgress, EigshResult, eigsh

P = 400


def power_law(P: int, s: float) -> torch.Tensor:
    return torch.arange(1, P + 1, dtype=torch.float64) ** (-s)


def independent_residuals(A: torch.Tensor, res: EigshResult) -> torch.Tensor:
    """``‖Av − λv‖ / |λ|`` in float64, from the returned pairs only."""
    assert res.eigenvectors is not None
    A64 = A.to(torch.float64)
    V = res.eigenvectors.to(torch.float64)
    lam = res.eigenvalues.to(torch.float64)
    return torch.linalg.vector_norm(A64 @ V - V * lam, dim=0) / lam.abs()


def check_pairs(A: torch.Tensor, res: EigshResult, ref: torch.Tensor, *, tol: float) -> None:
    """Converged pairs: recomputed residual <= tol, eigenvalue within the residual bound."""
    assert res.eigenvectors is not None
    V = res.eigenvectors.to(torch.float64)
    k = res.k
    # orthonormal eigenvectors
    torch.testing.assert_close(V.T @ V, torch.eye(k, dtype=torch.float64), atol=1e-5, rtol=0)
    ind = independent_residuals(A, res)
    conv = res.converged
    # the solver's claim and an independent float64 recomputation agree up to the rounding of
    # one product in the operator's dtype (about eps · ‖A‖ absolute, so eps · ‖A‖ / |λ| here)
    eps = torch.finfo(res.eigenvalues.dtype).eps
    slack = 20 * eps * float(A.double().abs().sum(0).max()) / res.eigenvalues.double().abs()
    assert bool((ind[conv] <= tol + slack[conv]).all()), (ind[conv] - tol).max()
    assert bool(((res.residuals - ind).abs() <= 0.05 * ind + slack).all())
    # |θ − λ| <= ‖r‖ (Weyl / Bauer–Fike for symmetric matrices): the i-th returned value is
    # within its residual of the i-th reference value when all pairs converged
    if res.all_converged:
        err = (res.eigenvalues.to(torch.float64) - ref).abs() / ref.abs()
        assert bool((err <= 2 * tol + 1e-12).all()), err.max()


@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_power_law_top_float64(spectrum_matrix, expected, s, k):
    evals = power_law(P, s)
    A = spectrum_matrix(evals, seed=1)
    res = eigsh(A, k, tol=1e-8, seed=0, return_eigenvectors=True)
    assert res.method == "block-lanczos"
    assert res.all_converged
    ref = expected(torch.linalg.eigvalsh(A), k, "LA")
    check_pairs(A, res, ref, tol=1e-8)
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-10, atol=0)


@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
def test_power_law_float32(spectrum_matrix, s):
    evals = power_law(P, s)
    A = spectrum_matrix(evals, seed=2, dtype=torch.float32)
    tol = 1e-4
    res = eigsh(A, 20, tol=tol, seed=0, return_eigenvectors=True)
    assert res.eigenvalues.dtype == torch.float32
    assert res.all_converged
    ref = torch.linalg.eigvalsh(A.double()).flip(0)[:20]
    check_pairs(A, res, ref, tol=tol)


@pytest.mark.parametrize("which", ["LA", "SA", "LM", "BE"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indefinite_all_which(spectrum_matrix, expected, which, dtype):
    # cubic spacing: distinct, indefinite, |min| > max so that LM and LA differ
    evals = torch.linspace(-3.0, 2.0, P, dtype=torch.float64) ** 3
    A = spectrum_matrix(evals, seed=3, dtype=dtype)
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    k = 9
    res = eigsh(A, k, which=which, tol=tol, seed=0, return_eigenvectors=True)
    assert res.all_converged
    ref = expected(torch.linalg.eigvalsh(A.double()), k, which)
    check_pairs(A, res, ref, tol=tol)
    if which == "LM":
        assert bool((res.eigenvalues < 0).all())  # the large-magnitude end is negative
    if which == "BE":
        assert int((res.eigenvalues > 0).sum()) == 5 and int((res.eigenvalues < 0).sum()) == 4


@pytest.mark.parametrize(("mult", "block_size"), [(6, 8), (8, 8), (3, 1), (12, 4)])
def test_exactly_degenerate(spectrum_matrix, mult, block_size):
    gen = torch.Generator().manual_seed(4)
    evals = torch.rand(P, generator=gen, dtype=torch.float64)
    evals[:mult] = 2.0
    A = spectrum_matrix(evals, seed=4)
    k = mult + 3
    res = eigsh(A, k, block_size=block_size, tol=1e-8, seed=0, return_eigenvectors=True)
    assert res.all_converged
    ref = torch.linalg.eigvalsh(A).flip(0)[:k]
    check_pairs(A, res, ref, tol=1e-8)
    # the whole eigenspace is found: the returned vectors for 2.0 span it
    V = res.eigenvectors[:, :mult]
    U_ref = torch.linalg.eigh(A).eigenvectors
    U = U_ref[:, -mult:]
    sv = torch.linalg.svdvals(U.T @ V)
    torch.testing.assert_close(sv, torch.ones(mult, dtype=torch.float64), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("k", "block_size", "which", "counts"),
    [
        (12, 2, "LA", [12, 0, 0, 0, 0]),
        (3, 1, "LA", [3, 0, 0, 0, 0]),
        (30, 4, "LA", [30, 0, 0, 0, 0]),
        (100, 8, "LA", [80, 20, 0, 0, 0]),
        (12, 2, "BE", [6, 0, 0, 0, 6]),
        (5, 1, "SA", [0, 0, 0, 0, 5]),
    ],
)
def test_invariant_subspace_breakdown(spectrum_matrix, k, block_size, which, counts):
    """5 distinct eigenvalues of multiplicity 80: the block Krylov space becomes invariant
    after 5 steps (breakdown) holding only B copies of each; the solver must inject fresh
    directions and confirm that the wanted set is complete (all copies of the top value)."""
    distinct = [5.0, 4.0, 3.0, 2.0, 1.0]
    A = spectrum_matrix(torch.tensor(distinct, dtype=torch.float64).repeat_interleave(80), seed=0)
    res = eigsh(
        A, k, which=which, block_size=block_size, tol=1e-10, seed=0, return_eigenvectors=True
    )
    assert res.all_converged
    got = [int(((res.eigenvalues - v).abs() < 1e-8).sum()) for v in distinct]
    assert got == counts
    V = res.eigenvectors
    torch.testing.assert_close(V.T @ V, torch.eye(k, dtype=torch.float64), atol=1e-12, rtol=0)
    assert float(independent_residuals(A, res).max()) <= 1e-10


@pytest.mark.parametrize(
    ("k", "block_size", "which", "n_zero"),
    [(10, 2, "SA", 10), (10, 1, "SA", 10), (30, 4, "LA", 10), (6, 3, "BE", 3)],
)
def test_low_rank_psd(spectrum_matrix, k, block_size, which, n_zero):
    """Rank 20 in P = 400 (a GGN-like operator): the zero eigenvalue has multiplicity 380.

    SA must return zeros only (not 2 zeros and the smallest nonzero values), and the zeros
    are judged on the absolute scale √ε‖A‖.
    """
    gen = torch.Generator().manual_seed(0)
    evals = torch.zeros(P, dtype=torch.float64)
    evals[:20] = torch.rand(20, generator=gen, dtype=torch.float64) + 0.5
    A = spectrum_matrix(evals, seed=0)
    res = eigsh(A, k, which=which, block_size=block_size, seed=0, return_eigenvectors=True)
    assert res.all_converged
    assert int((res.eigenvalues.abs() < 1e-10).sum()) == n_zero
    nonzero = torch.sort(evals, descending=True).values[: k - n_zero]
    got = torch.sort(res.eigenvalues[res.eigenvalues.abs() >= 1e-10], descending=True).values
    torch.testing.assert_close(got, nonzero, atol=1e-12, rtol=0)
    # absolute residuals: ‖Av − λv‖ <= tol · max(|λ|, √ε‖A‖)
    V = res.eigenvectors
    r = torch.linalg.vector_norm(A @ V - V * res.eigenvalues, dim=0)
    scale = res.eigenvalues.abs().clamp_min(math.sqrt(torch.finfo(A.dtype).eps) * evals.max())
    assert bool((r <= res.tol * scale * 1.01).all())


def test_clustered(spectrum_matrix):
    gen = torch.Generator().manual_seed(5)
    evals = torch.rand(P, generator=gen, dtype=torch.float64)
    evals[:10] = 1.5 + 1e-7 * torch.arange(10, dtype=torch.float64)
    A = spectrum_matrix(evals, seed=5)
    res = eigsh(A, 12, tol=1e-9, seed=0, return_eigenvectors=True)
    assert res.all_converged
    ref = torch.linalg.eigvalsh(A).flip(0)[:12]
    check_pairs(A, res, ref, tol=1e-9)
    torch.testing.assert_close(res.eigenvalues, ref, atol=1e-10, rtol=0)


def test_k_close_to_P_uses_dense(spectrum_matrix, expected):
    evals = torch.linspace(-1.0, 1.0, 60, dtype=torch.float64)
    A = spectrum_matrix(evals, seed=6)
    res = eigsh(A, 58, which="SA", return_eigenvectors=True)
    assert res.method == "dense"
    ref = expected(evals, 58, "SA")
    torch.testing.assert_close(res.eigenvalues, ref, atol=1e-12, rtol=0)
    assert res.all_converged
    assert res.num_matvecs == 58  # DenseOperator: only the residual check multiplies


def test_P_smaller_than_block(spectrum_matrix):
    evals = torch.tensor([3.0, -1.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    A = spectrum_matrix(evals, seed=7)
    res = eigsh(A, 2, block_size=8, return_eigenvectors=True)
    assert res.method == "dense"
    torch.testing.assert_close(res.eigenvalues, torch.tensor([3.0, 2.0], dtype=torch.float64))


def test_half_spectrum_with_tight_basis(spectrum_matrix):
    """k = P/4 with the smallest allowed basis: many restarts, locking, still exact."""
    evals = power_law(P, 0.5)
    A = spectrum_matrix(evals, seed=8)
    k, b = 100, 8
    res = eigsh(A, k, block_size=b, max_basis=k + 3 * b, tol=1e-8, seed=0, return_eigenvectors=True)
    assert res.method == "block-lanczos"
    assert res.num_restarts > 5
    assert res.all_converged
    ref = torch.linalg.eigvalsh(A).flip(0)[:k]
    check_pairs(A, res, ref, tol=1e-8)


def test_implicit_operator_counts_matvecs(householder_diag):
    d = power_law(3000, 1.0)[torch.randperm(3000, generator=torch.Generator().manual_seed(0))]
    A = householder_diag(d, seed=1)
    res = eigsh(A, 30, seed=0)
    assert res.all_converged
    assert res.num_matvecs == A.calls
    torch.testing.assert_close(res.eigenvalues, power_law(3000, 1.0)[:30], rtol=1e-10, atol=0)


def test_unconverged_is_reported_not_hidden(spectrum_matrix):
    # SA of a power law: the bottom is a dense cluster at 0+, hopeless in 0 restarts
    A = spectrum_matrix(power_law(P, 1.0), seed=9)
    with pytest.warns(ConvergenceWarning, match="did not reach tol"):
        res = eigsh(A, 10, which="SA", max_restarts=0, seed=0, return_eigenvectors=True)
    assert not res.all_converged
    ind = torch.linalg.vector_norm(
        A @ res.eigenvectors - res.eigenvectors * res.eigenvalues, dim=0
    ) / res.eigenvalues.abs().clamp_min(math.sqrt(torch.finfo(A.dtype).eps))
    # flags agree with an independent recomputation, both ways
    assert torch.equal(res.converged, ind <= res.tol * (1 + 1e-6))
    assert bool((res.residuals[~res.converged] > res.tol).all())
    assert res.num_restarts == 0


def test_default_basis_grows_on_a_hard_end(spectrum_matrix):
    """SA of a power law (a dense cluster at 0+): the default basis of 24 makes no progress
    from restart to restart, so it is doubled up to P/4 = 100 and converges to the exact
    values; kept at 24 (given explicitly) it has not converged after more products."""
    A = spectrum_matrix(power_law(P, 1.0), seed=9)
    res = eigsh(A, 10, which="SA", seed=0)
    assert res.max_basis == P // 4 and res.all_converged
    torch.testing.assert_close(res.eigenvalues, torch.linalg.eigvalsh(A)[:10], rtol=0, atol=1e-12)
    with pytest.warns(ConvergenceWarning, match="did not reach tol"):
        fixed = eigsh(A, 10, which="SA", seed=0, max_basis=24, max_restarts=250)
    assert fixed.max_basis == 24 and not fixed.all_converged
    assert fixed.num_matvecs > res.num_matvecs
    easy = eigsh(A, 10, seed=0)  # the top of the same spectrum: converges without growing
    assert easy.max_basis == 24 and easy.all_converged


def test_float32_tight_tol_is_flagged(spectrum_matrix):
    # float32 cannot give 1e-9 relative residuals: the pairs must come back unconverged
    A = spectrum_matrix(power_law(P, 1.0), seed=10, dtype=torch.float32)
    with pytest.warns(ConvergenceWarning):
        res = eigsh(A, 10, tol=1e-9, max_restarts=3, seed=0, return_eigenvectors=True)
    assert not res.all_converged
    ind = (
        torch.linalg.vector_norm(
            A.double() @ res.eigenvectors.double()
            - res.eigenvectors.double() * res.eigenvalues.double(),
            dim=0,
        )
        / res.eigenvalues.double().abs()
    )
    assert bool((ind[~res.converged] > 1e-9).all())


def test_seed_reproducible_and_v0(spectrum_matrix):
    A = spectrum_matrix(power_law(P, 1.0), seed=11)
    r1 = eigsh(A, 10, seed=123, return_eigenvectors=True)
    r2 = eigsh(A, 10, seed=123, return_eigenvectors=True)
    assert torch.equal(r1.eigenvalues, r2.eigenvalues)
    assert torch.equal(r1.eigenvectors, r2.eigenvectors)
    assert r1.num_matvecs == r2.num_matvecs
    # a start vector equal to the top eigenvector: still correct
    v0 = torch.linalg.eigh(A).eigenvectors[:, -1].clone()
    r3 = eigsh(A, 10, seed=0, v0=v0)
    torch.testing.assert_close(r3.eigenvalues, r1.eigenvalues, rtol=1e-10, atol=0)


def test_progress_callback_and_bar(spectrum_matrix, capsys):
    A = spectrum_matrix(power_law(P, 1.0), seed=12)
    seen: list[EigshProgress] = []
    res = eigsh(A, 20, seed=0, progress=seen.append)
    assert seen, "the callback was never called"
    mv = [p.num_matvecs for p in seen]
    assert mv == sorted(mv) and mv[-1] <= res.num_matvecs
    assert seen[-1].num_converged == 20 and all(p.k == 20 for p in seen)
    eigsh(A, 5, seed=0, progress=True)  # tqdm (or stderr) must not break anything
    eigsh(A, 5, seed=0)
    out = capsys.readouterr()
    assert out.out == ""


def test_result_is_frozen_and_serialisable(spectrum_matrix):
    A = spectrum_matrix(power_law(100, 1.0), seed=13)
    res = eigsh(A, 3, seed=0)
    assert res.eigenvectors is None
    d = res.to_dict()
    assert d["eigenvalues"] == res.eigenvalues.tolist()
    assert set(d) >= {"residuals", "converged", "num_matvecs", "num_restarts", "which", "tol"}
    with pytest.raises(AttributeError):
        res.k = 4  # type: ignore[misc]


def test_no_warning_when_converged(spectrum_matrix):
    A = spectrum_matrix(power_law(P, 1.0), seed=14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eigsh(A, 10, seed=0)
