"""Hutchinson and Hutch++ against exact traces, with variance-derived bands."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastspec.linalg import CallableOperator, TraceResult, trace

P = 120


def hutchinson_sd(A: torch.Tensor, n: int) -> float:
    """Exact sd of the n-probe Rademacher estimator: √(2(‖A‖_F² − Σ A_ii²) / n), A symmetric."""
    var = 2 * (float((A**2).sum()) - float((torch.diagonal(A) ** 2).sum()))
    return math.sqrt(var / n)


@pytest.fixture
def A(spectrum_matrix) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return spectrum_matrix(torch.randn(P, generator=gen, dtype=torch.float64) + 0.5, seed=1)


def test_hutchinson_unbiased_with_the_predicted_spread(A):
    n, reps = 16, 300
    sd = hutchinson_sd(A, n)
    res = [trace(A, method="hutchinson", num_matvecs=n, seed=s) for s in range(reps)]
    est = np.array([r.estimate for r in res])
    se = np.array([r.std_error for r in res])
    tr = float(torch.trace(A))
    # mean within 4 standard errors of the mean of `reps` estimates
    assert abs(est.mean() - tr) < 4 * sd / math.sqrt(reps)
    # empirical sd of the estimates matches the formula: sd of a sample sd ≈ sd/√(2(reps−1))
    assert abs(est.std(ddof=1) / sd - 1) < 4 / math.sqrt(2 * (reps - 1))
    # the reported standard errors are, on average, the true sd (E[s] ≈ sd for n = 16, c4 ≈ 0.98)
    assert abs(np.sqrt((se**2).mean()) / sd - 1) < 0.1
    assert all(r.num_matvecs == n and r.num_probes == n for r in res)


def test_hutchinson_single_run_band(A):
    n = 400
    r = trace(A, method="hutchinson", num_matvecs=n, seed=42, block_size=7)
    assert abs(r.estimate - float(torch.trace(A))) < 4 * hutchinson_sd(A, n)


def test_hutchpp_exact_on_low_rank(spectrum_matrix):
    ev = torch.zeros(P, dtype=torch.float64)
    ev[:6] = torch.tensor([5.0, 3.0, 2.0, -1.0, 0.5, 0.25])
    A = spectrum_matrix(ev, seed=2)
    r = trace(A, num_matvecs=30, seed=0)  # sketch of 10 columns >= rank 6
    assert r.method == "hutch++" and r.num_probes == 10 and r.num_matvecs == 30
    assert abs(r.estimate - float(ev.sum())) < 1e-10
    assert r.std_error < 1e-10


def test_hutchpp_beats_hutchinson_on_decaying_spectrum(spectrum_matrix):
    ev = torch.arange(1, P + 1, dtype=torch.float64) ** -1.5
    A = spectrum_matrix(ev, seed=3)
    tr = float(ev.sum())
    budget, reps = 36, 60
    err_pp = np.array([trace(A, num_matvecs=budget, seed=s).estimate - tr for s in range(reps)])
    err_h = np.array(
        [
            trace(A, method="hutchinson", num_matvecs=budget, seed=s).estimate - tr
            for s in range(reps)
        ]
    )
    rms_pp, rms_h = np.sqrt((err_pp**2).mean()), np.sqrt((err_h**2).mean())
    # Hutchinson's rms matches its formula (4 sd of a 60-sample rms ≈ 4/√120 ≈ 0.37 relative)
    assert abs(rms_h / hutchinson_sd(A, budget) - 1) < 0.4
    # Hutch++ deflates the top 12 directions: the remaining ‖A − A_12‖_F is ~10× smaller
    assert rms_pp < rms_h / 5


def test_hutchpp_standard_error_covers(spectrum_matrix):
    ev = torch.arange(1, P + 1, dtype=torch.float64) ** -0.5
    A = spectrum_matrix(ev, seed=4)
    tr = float(ev.sum())
    reps = 200
    z = np.array(
        [
            (r.estimate - tr) / r.std_error
            for r in (trace(A, num_matvecs=60, seed=s) for s in range(reps))
        ]
    )
    # 20 deflated Hutchinson terms: |t_19| <= 2.09 with probability 0.95; binomial sd over 200
    # runs is 1.5 %, so >= 88 % coverage is a 4.5-sd band
    assert np.mean(np.abs(z) <= 2.09) >= 0.88


def test_non_symmetric_and_callable():
    gen = torch.Generator().manual_seed(5)
    B = torch.randn(P, P, generator=gen, dtype=torch.float64) + 3 * torch.eye(
        P, dtype=torch.float64
    )
    op = CallableOperator(lambda V: B @ V, shape=B.shape, dtype=B.dtype)
    n = 400
    r = trace(op, method="hutchinson", num_matvecs=n, seed=0)
    # Rademacher variance for a general matrix: Σ_{i≠j} (B_ij² + B_ij B_ji)
    off = B - torch.diag(torch.diagonal(B))
    var = float((off**2).sum() + (off * off.T).sum())
    assert abs(r.estimate - float(torch.trace(B))) < 4 * math.sqrt(var / n)
    r2 = trace(op, num_matvecs=n, seed=0)
    assert abs(r2.estimate - float(torch.trace(B))) < 5 * r2.std_error + 1e-9


def test_float32_seeded_and_serialisable(A):
    r1 = trace(A.float(), num_matvecs=24, seed=9)
    r2 = trace(A.float(), num_matvecs=24, seed=9)
    assert r1 == r2
    assert isinstance(r1, TraceResult)
    assert r1.to_dict()["method"] == "hutch++"
    r64 = trace(A, num_matvecs=24, seed=9)
    assert abs(r1.estimate - r64.estimate) < 1e-3 * (1 + abs(r64.estimate))
