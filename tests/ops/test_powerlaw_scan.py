"""fastspec.ops.powerlaw_scan: native kernels against the pure-torch twin and the powerlaw package."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from fastspec import reference
from fastspec.ops import powerlaw_scan


def pareto_above_lognormal(
    n: int, *, seed: int, alpha: float = 2.5, ties: bool = False
) -> torch.Tensor:
    g = np.random.default_rng(seed)
    body = g.lognormal(0.0, 1.0, size=n - n // 3)
    tail = 3.0 * (1.0 - g.random(n // 3)) ** (-1.0 / (alpha - 1.0))
    x = np.sort(np.concatenate([body, tail]))
    return torch.from_numpy(np.round(x, 1) + 0.1 if ties else x)


def rank_law(k: int, s: float) -> torch.Tensor:
    return torch.sort(torch.arange(1, k + 1, dtype=torch.float64) ** (-s)).values


def pure_pareto(n: int, *, seed: int) -> torch.Tensor:
    """Every cutoff fits about equally well: the spans of the KS bound are halved deepest."""
    g = np.random.default_rng(seed)
    return torch.from_numpy(np.sort((1.0 - g.random(n)) ** (-1.0 / 1.5)))


def pareto_above_exponential(n: int, *, seed: int) -> torch.Tensor:
    g = np.random.default_rng(seed)
    body = g.exponential(1.0, size=n - n // 3)
    return torch.from_numpy(np.sort(np.concatenate([body, 3.0 * g.pareto(1.5, n // 3) + 3.0])))


def zipf(n: int, *, seed: int) -> torch.Tensor:
    """Integer data: a few long runs of ties at the bottom."""
    return torch.from_numpy(np.sort(np.random.default_rng(seed).zipf(2.5, n).astype(np.float64)))


DATASETS = {
    "pareto_lognormal": lambda: pareto_above_lognormal(1500, seed=1),
    "with_ties": lambda: pareto_above_lognormal(1500, seed=2, ties=True),
    "rank_law": lambda: rank_law(1000, 1.0),
    "pure_pareto": lambda: pure_pareto(3000, seed=8),
    "pareto_exponential": lambda: pareto_above_exponential(3000, seed=9),
    "zipf": lambda: zipf(5000, seed=10),
}


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    return (
        {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    )


@pytest.mark.parametrize("name", list(DATASETS))
def test_native_matches_reference(name: str, device: torch.device, dtype: torch.dtype) -> None:
    x = DATASETS[name]().to(device=device, dtype=dtype)
    alpha, ks = powerlaw_scan(x)
    ref_alpha, ref_ks = reference.powerlaw_scan(x)
    assert alpha.dtype == dtype and alpha.device == x.device and alpha.shape == ref_alpha.shape
    torch.testing.assert_close(alpha, ref_alpha, **tolerances(dtype))
    torch.testing.assert_close(ks, ref_ks, **tolerances(dtype))
    assert torch.isfinite(ks).all() and (ks > 0).all() and (ks < 1).all()


@pytest.mark.parametrize("name", list(DATASETS))
def test_prune_finds_the_exact_minimiser(
    name: str, device: torch.device, dtype: torch.dtype
) -> None:
    x = DATASETS[name]().to(device=device, dtype=dtype)
    _, ks = powerlaw_scan(x)
    alpha_p, ks_p = powerlaw_scan(x, prune=True)
    best = int(torch.argmin(ks))
    assert int(torch.argmin(ks_p)) == best
    assert float(ks_p[best]) == float(ks[best])
    finite = torch.isfinite(ks_p)
    assert torch.equal(ks_p[finite], ks[finite])  # only minimisers survive, and they are exact
    assert bool((ks_p[finite] == ks[best]).all())
    torch.testing.assert_close(alpha_p, powerlaw_scan(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("data", [pure_pareto, pareto_above_exponential])
def test_long_tails_are_exact(data, device: torch.device) -> None:  # type: ignore[no-untyped-def]
    """Tails of 10^4 to 4·10^4 points, whose KS maxima the kernel finds by halving spans."""
    x = data(40_000, seed=11).to(device)
    first = torch.searchsorted(x, x, side="left")
    cands = torch.unique(first)[:30_000:150].contiguous()
    alpha, ks = powerlaw_scan(x, cands)
    ref_alpha, ref_ks = reference.powerlaw_scan(x, cands, chunk=16)
    torch.testing.assert_close(alpha, ref_alpha, rtol=1e-12, atol=0)
    torch.testing.assert_close(ks, ref_ks, rtol=1e-12, atol=0)
    _, ks_p = powerlaw_scan(x, cands, prune=True)
    best = int(torch.argmin(ks))
    assert int(torch.argmin(ks_p)) == best and float(ks_p[best]) == float(ks[best])


def test_prune_honours_alpha_range(device: torch.device) -> None:
    x = pareto_above_lognormal(1500, seed=3).to(device)
    alpha, ks = powerlaw_scan(x)
    lo, hi = 1.5, 2.2
    valid = (alpha > lo) & (alpha < hi)
    assert valid.any() and (~valid).any()
    _, ks_p = powerlaw_scan(x, prune=True, alpha_range=(lo, hi))
    expected = int(torch.argmin(torch.where(valid, ks, torch.full_like(ks, math.inf))))
    assert int(torch.argmin(ks_p)) == expected
    assert not torch.isfinite(ks_p[~valid]).any()


def test_explicit_candidates_subset(device: torch.device) -> None:
    x = pareto_above_lognormal(800, seed=4, ties=True).to(device)
    all_alpha, all_ks = powerlaw_scan(x)
    first = torch.searchsorted(x, x, side="left")
    cands = torch.unique(first)[:-2][::7].contiguous()
    alpha, ks = powerlaw_scan(x, cands)
    where = torch.searchsorted(torch.unique(first)[:-2], cands)
    torch.testing.assert_close(alpha, all_alpha[where], rtol=0, atol=0)
    torch.testing.assert_close(ks, all_ks[where], rtol=0, atol=0)
    empty_alpha, empty_ks = powerlaw_scan(x, cands[:0])
    assert empty_alpha.shape == (0,) and empty_ks.shape == (0,)


def test_strided_input_gives_the_same_answer(device: torch.device) -> None:
    x = pareto_above_lognormal(1000, seed=5).to(device)
    wide = torch.stack([x, x + 1], dim=1)  # [N, 2]: column 0 is a non-contiguous view of x
    assert not wide[:, 0].is_contiguous()
    for a, b in zip(powerlaw_scan(wide[:, 0]), powerlaw_scan(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_matches_the_powerlaw_package() -> None:
    """The package's own scan (analytic alpha when 1.5 < alpha <= 3) is an independent oracle."""
    powerlaw = pytest.importorskip("powerlaw")
    x = pareto_above_lognormal(300, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(x.numpy(), verbose=0)
    res = fit.xmin_fitting_results
    alpha, ks = powerlaw_scan(x)
    assert np.array_equal(res["xmins"], x[torch.unique(torch.searchsorted(x, x))[:-2]].numpy())
    analytic = (alpha.numpy() > 1.5) & (alpha.numpy() < 3)
    assert analytic.sum() > 100
    np.testing.assert_allclose(alpha.numpy()[analytic], res["alphas"][analytic], rtol=1e-12)
    np.testing.assert_allclose(ks.numpy()[analytic], res["distances"][analytic], rtol=1e-10)


def test_opcheck() -> None:
    x = pareto_above_lognormal(400, seed=7)
    from fastspec.ops.powerlaw_scan import _powerlaw_scan, default_candidates, scan_inputs

    logx, run_start, suffix = scan_inputs(x)
    cands = default_candidates(x)
    for prune in (False, True):
        args = (logx, run_start, cands, suffix[cands], 1.0, math.inf, prune)
        torch.library.opcheck(_powerlaw_scan, args)


def test_compiles_with_torch_compile() -> None:
    x = pareto_above_lognormal(400, seed=8)
    from fastspec.ops.powerlaw_scan import _powerlaw_scan, default_candidates, scan_inputs

    logx, run_start, suffix = scan_inputs(x)
    cands = default_candidates(x)
    fn = torch.compile(lambda *a: _powerlaw_scan(*a), backend="aot_eager", fullgraph=True)
    got = fn(logx, run_start, cands, suffix[cands], 1.0, math.inf, False)
    want = _powerlaw_scan(logx, run_start, cands, suffix[cands], 1.0, math.inf, False)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------- bad inputs


def good_x() -> torch.Tensor:
    return pareto_above_lognormal(100, seed=9)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: good_x().numpy(), TypeError, "x must be a torch.Tensor"),
        (lambda: good_x().to(torch.int64), TypeError, "x must have dtype float32 or float64"),
        (lambda: good_x().half(), TypeError, "x must have dtype"),
        (lambda: good_x()[None, :], ValueError, "x must be 1-dimensional"),
        (lambda: good_x()[:1], ValueError, "x must have at least 2 elements"),
        (lambda: good_x()[:0], ValueError, "x must have at least 2 elements"),
        (
            lambda: torch.cat([good_x(), torch.tensor([math.nan], dtype=torch.float64)]),
            ValueError,
            "x must be finite",
        ),
        (
            lambda: torch.cat([good_x(), torch.tensor([math.inf], dtype=torch.float64)]),
            ValueError,
            "x must be finite",
        ),
        (
            lambda: torch.cat([torch.zeros(1, dtype=torch.float64), good_x()]),
            ValueError,
            "x must be positive",
        ),
        (
            lambda: torch.cat([-torch.ones(1, dtype=torch.float64), good_x()]),
            ValueError,
            "x must be positive",
        ),
        (lambda: good_x().flip(0), ValueError, "x must be sorted ascending"),
    ],
)
def test_bad_x(make, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        powerlaw_scan(make())


@pytest.mark.parametrize(
    ("cands", "error", "match"),
    [
        (torch.tensor([0, 1], dtype=torch.int32), TypeError, "candidates must have dtype int64"),
        (torch.tensor([[0, 1]]), ValueError, "candidates must be 1-dimensional"),
        (torch.tensor([-1, 3]), ValueError, r"candidates must lie in \[0, N - 2\]"),
        (torch.tensor([0, 99]), ValueError, r"candidates must lie in \[0, N - 2\]"),
        (torch.tensor([5, 3]), ValueError, "candidates must be strictly ascending"),
        (torch.tensor([3, 3]), ValueError, "candidates must be strictly ascending"),
        ([0, 1], TypeError, "candidates must be a torch.Tensor"),
    ],
)
def test_bad_candidates(cands, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        powerlaw_scan(good_x(), cands)


def test_candidates_must_be_run_starts() -> None:
    x = torch.tensor([1.0, 2.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="candidates must be first indices"):
        powerlaw_scan(x, torch.tensor([2]))


def test_bad_alpha_range_and_prune() -> None:
    with pytest.raises(ValueError, match="alpha_range must satisfy low < high"):
        powerlaw_scan(good_x(), prune=True, alpha_range=(3.0, 1.0))
    with pytest.raises(TypeError, match=r"alpha_range\[0\] must be a real number"):
        powerlaw_scan(good_x(), prune=True, alpha_range=("1", 3.0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prune must be True or False"):
        powerlaw_scan(good_x(), prune="yes")  # type: ignore[arg-type]


@pytest.mark.cuda
def test_device_mismatch() -> None:
    with pytest.raises(ValueError, match="candidates must be on cuda"):
        powerlaw_scan(good_x().cuda(), torch.tensor([0, 1]))
