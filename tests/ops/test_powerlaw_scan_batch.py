"""fastspec.ops.powerlaw_scan_batch: native kernels against the pure-torch twin and against the
single-row op (pruned) row by row."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fastspec import reference
from fastspec.ops import powerlaw_scan, powerlaw_scan_batch


def rows(r: int, n: int, *, seed: int, ties: bool = False) -> torch.Tensor:
    """[r, n] ascending rows: Pareto tails (alpha 2..3.5) above lognormal bodies."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(r):
        alpha = g.uniform(2.0, 3.5)
        nt = n // 3
        body = g.lognormal(0.0, 1.0, size=n - nt)
        tail = 3.0 * (1.0 - g.random(nt)) ** (-1.0 / (alpha - 1.0))
        x = np.sort(np.concatenate([body, tail]))
        out.append(np.round(x, 1) + 0.1 if ties else x)
    return torch.from_numpy(np.stack(out))


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    return (
        {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    )


def single_op_rowwise(
    x: torch.Tensor, alpha_range: tuple[float, float] = (1.0, math.inf)
) -> tuple[list[int], list[float]]:
    """First index of the minimal finite pruned ks of every row, and that ks (-1, inf if none)."""
    index, ks = [], []
    for row in x:
        first = torch.unique(torch.searchsorted(row, row, side="left"))[:-2]
        _, d = powerlaw_scan(row, prune=True, alpha_range=alpha_range)
        if d.numel() == 0 or not bool(torch.isfinite(d).any()):
            index.append(-1)
            ks.append(math.inf)
            continue
        c = int(torch.argmin(d))
        index.append(int(first[c]))
        ks.append(float(d[c]))
    return index, ks


@pytest.mark.parametrize("ties", [False, True])
def test_native_matches_reference_and_single_op(
    ties: bool, device: torch.device, dtype: torch.dtype
) -> None:
    x = rows(7, 600, seed=1, ties=ties).to(device=device, dtype=dtype)
    index, alpha, ks = powerlaw_scan_batch(x)
    assert index.dtype == torch.int64 and alpha.dtype == dtype and ks.dtype == dtype
    assert index.shape == alpha.shape == ks.shape == (7,) and ks.device == x.device
    ref_index, ref_alpha, ref_ks = reference.powerlaw_scan_batch(x)
    torch.testing.assert_close(ks, ref_ks, **tolerances(dtype))
    torch.testing.assert_close(alpha, ref_alpha, **tolerances(dtype))
    if dtype == torch.float64:  # float32 near-ties may legitimately pick another cutoff
        assert torch.equal(index, ref_index)
    single_index, single_ks = single_op_rowwise(x)
    assert index.tolist() == single_index
    if device.type == "cpu":  # the same arithmetic: bitwise
        assert ks.tolist() == single_ks
    else:
        torch.testing.assert_close(
            ks.cpu(), torch.tensor(single_ks, dtype=dtype), **tolerances(dtype)
        )
    assert bool(torch.isfinite(ks).all()) and bool((index >= 0).all())


def test_rows_with_different_candidate_sets(device: torch.device, dtype: torch.dtype) -> None:
    x = rows(5, 400, seed=2).to(dtype)
    x[1] = torch.round(x[1] * 4) / 4 + 0.25  # heavy ties: few candidates
    x[2, :398] = 1.0  # three distinct values: one candidate (index 0)
    x[3, :399] = 1.0  # two distinct values: no candidate
    x[4] = 2.0  # one distinct value: no candidate
    x = torch.sort(x, dim=1).values.to(device)
    index, alpha, ks = powerlaw_scan_batch(x)
    ref_index, ref_alpha, ref_ks = reference.powerlaw_scan_batch(x)
    assert index.tolist() == ref_index.tolist()
    assert index[2] == 0 and index[3] == -1 and index[4] == -1
    assert math.isinf(float(ks[3])) and math.isinf(float(ks[4])) and math.isnan(float(alpha[4]))
    torch.testing.assert_close(ks, ref_ks, **tolerances(dtype))
    torch.testing.assert_close(alpha, ref_alpha, equal_nan=True, **tolerances(dtype))
    assert index.tolist() == single_op_rowwise(x)[0]


def test_ties_resolve_to_the_smallest_index(device: torch.device) -> None:
    # identical rows, and a row whose best ks is attained twice
    x = rows(1, 500, seed=3).expand(4, -1).contiguous().to(device)
    index, _, ks = powerlaw_scan_batch(x)
    assert len(set(index.tolist())) == 1 and len(set(ks.tolist())) == 1
    # 1, 2, 4, 8: every candidate of a geometric row fits perfectly up to the last gap
    geo = (2.0 ** torch.arange(12, dtype=torch.float64)).repeat_interleave(3)[None].to(device)
    gi, _, gk = powerlaw_scan_batch(geo)
    ri, _, rk = reference.powerlaw_scan_batch(geo)
    assert int(gi[0]) == int(ri[0]) and float(gk[0]) == pytest.approx(float(rk[0]), rel=1e-12)


def test_alpha_range(device: torch.device) -> None:
    x = rows(6, 500, seed=4).to(device)
    for lo, hi in [(1.5, 2.2), (2.8, 3.0), (0.0, 3.0), (50.0, 60.0)]:
        index, alpha, ks = powerlaw_scan_batch(x, alpha_range=(lo, hi))
        ref_index, _, ref_ks = reference.powerlaw_scan_batch(x, alpha_range=(lo, hi))
        assert index.tolist() == ref_index.tolist()
        assert index.tolist() == single_op_rowwise(x, (lo, hi))[0]
        torch.testing.assert_close(ks, ref_ks, rtol=1e-12, atol=1e-12)
        found = index >= 0
        assert bool(((alpha[found] > lo) & (alpha[found] < hi)).all())
        assert bool(torch.isinf(ks[~found]).all())
    assert bool((powerlaw_scan_batch(x, alpha_range=(50.0, 60.0))[0] == -1).all())


def test_empty_batch_and_strided_input() -> None:
    x = rows(3, 300, seed=5)
    index, alpha, ks = powerlaw_scan_batch(x[:0])
    assert index.shape == alpha.shape == ks.shape == (0,)
    wide = torch.stack([x, x + 1], dim=2)  # [R, N, 2]: [..., 0] is not contiguous
    assert not wide[..., 0].is_contiguous()
    for a, b in zip(powerlaw_scan_batch(wide[..., 0]), powerlaw_scan_batch(x)):
        assert torch.equal(a, b)


def test_opcheck() -> None:
    from fastspec.ops.powerlaw_scan_batch import _powerlaw_scan_batch, scan_batch_inputs

    logx, run_start, tail = scan_batch_inputs(rows(3, 200, seed=6))
    torch.library.opcheck(_powerlaw_scan_batch, (logx, run_start, tail, 1.0, math.inf))


# ----------------------------------------------------------------------------- bad inputs


def good_x() -> torch.Tensor:
    return rows(3, 100, seed=9)


def with_value(value: float) -> torch.Tensor:
    x = good_x()
    x[1, -1] = value
    return x


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: good_x().numpy(), TypeError, "x must be a torch.Tensor"),
        (lambda: good_x().to(torch.int64), TypeError, "x must have dtype float32 or float64"),
        (lambda: good_x().half(), TypeError, "x must have dtype"),
        (lambda: good_x()[0], ValueError, "x must be 2-dimensional"),
        (lambda: good_x()[None], ValueError, "x must be 2-dimensional"),
        (lambda: good_x()[:, :1], ValueError, "x must have at least 2 columns"),
        (lambda: good_x()[:, :0], ValueError, "x must have at least 2 columns"),
        (lambda: with_value(math.nan), ValueError, "x must be finite"),
        (lambda: with_value(math.inf), ValueError, "x must be finite"),
        (lambda: torch.cat([good_x()[:, :1] * 0, good_x()], 1), ValueError, "x must be positive"),
        (lambda: torch.cat([-good_x()[:, :1], good_x()], 1), ValueError, "x must be positive"),
        (lambda: good_x().flip(1), ValueError, "x must have every row sorted ascending"),
        (lambda: torch.stack([good_x()[0], good_x()[1].flip(0)]), ValueError, "sorted ascending"),
    ],
)
def test_bad_x(make, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        powerlaw_scan_batch(make())


@pytest.mark.parametrize(
    ("alpha_range", "error", "match"),
    [
        ((3.0, 1.0), ValueError, "alpha_range must satisfy low < high"),
        ((math.nan, 3.0), ValueError, r"alpha_range\[0\] must be finite"),
        ((1.0, "3"), TypeError, r"alpha_range\[1\] must be a real number"),
        (3.0, TypeError, "alpha_range must be a pair"),
    ],
)
def test_bad_alpha_range(alpha_range: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        powerlaw_scan_batch(good_x(), alpha_range=alpha_range)  # type: ignore[arg-type]


def test_numpy_alpha_range_is_accepted() -> None:
    x = good_x()
    got = powerlaw_scan_batch(x, alpha_range=(np.float32(1.5), np.float64(np.inf)))
    want = powerlaw_scan_batch(x, alpha_range=(1.5, math.inf))
    assert [t.tolist() for t in got] == [t.tolist() for t in want]
