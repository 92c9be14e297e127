"""powerlaw_scan_batch: the batched pruned xmin scan (bootstrap refits) against a loop of the
single-row op and, on small sizes, the pure-torch twin.

pytest benchmarks/bench_powerlaw_scan_batch.py                      # timings
pytest benchmarks/bench_powerlaw_scan_batch.py --smoke --benchmark-disable   # CI: answers only
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastspec import reference
from fastspec.ops import powerlaw_scan, powerlaw_scan_batch


def data(r: int, n: int, device: torch.device) -> torch.Tensor:
    """[r, n] ascending rows: Pareto tails (alpha 2.5) above lognormal bodies."""
    g = np.random.default_rng(0)
    out = []
    for _ in range(r):
        body = g.lognormal(0.0, 1.0, size=n - n // 3)
        tail = 3.0 * (1.0 - g.random(n // 3)) ** (-1.0 / 1.5)
        out.append(np.sort(np.concatenate([body, tail])))
    return torch.from_numpy(np.stack(out)).to(device)


def loop_of_single_op(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([powerlaw_scan(row, prune=True)[1].min() for row in x])


@pytest.fixture(params=[(32, 2_000), (32, 10_000)], ids=lambda p: f"R{p[0]}xN{p[1]}")
def x(request: pytest.FixtureRequest, smoke: bool, device: torch.device) -> torch.Tensor:
    r, n = (4, 300) if smoke else request.param
    return data(r, n, device)


@pytest.mark.parametrize("variant", ["native_batch", "loop_of_single_op", "torch_reference"])
def test_powerlaw_scan_batch(benchmark, synchronized, x: torch.Tensor, variant: str) -> None:  # type: ignore[no-untyped-def]
    if variant == "torch_reference" and x.numel() > 20_000:
        pytest.skip("the reference is an exhaustive [C, N] scan per row; small sizes only")
    fn = {
        "native_batch": lambda: powerlaw_scan_batch(x)[2],
        "loop_of_single_op": lambda: loop_of_single_op(x),
        "torch_reference": lambda: reference.powerlaw_scan_batch(x)[2],
    }[variant]
    ks = benchmark(synchronized(fn, x.device))
    # correctness before timing: the batched op against the single-row op, row by row
    torch.testing.assert_close(ks, loop_of_single_op(x))
