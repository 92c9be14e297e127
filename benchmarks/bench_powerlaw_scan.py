"""powerlaw_scan: the native xmin scan (exhaustive and pruned) against its pure-torch twin.

pytest benchmarks/bench_powerlaw_scan.py                      # timings
pytest benchmarks/bench_powerlaw_scan.py --smoke --benchmark-disable   # CI: answers only
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastspec import reference
from fastspec.ops import powerlaw_scan


def data(n: int, device: torch.device) -> torch.Tensor:
    g = np.random.default_rng(0)
    body = g.lognormal(0.0, 1.0, size=n - n // 3)
    tail = 3.0 * (1.0 - g.random(n // 3)) ** (-1.0 / 1.5)
    return torch.from_numpy(np.sort(np.concatenate([body, tail]))).to(device)


@pytest.fixture(params=[2_000, 20_000])
def x(request: pytest.FixtureRequest, smoke: bool, device: torch.device) -> torch.Tensor:
    return data(300 if smoke else request.param, device)


@pytest.mark.parametrize("variant", ["native", "native_pruned", "torch_reference"])
def test_powerlaw_scan(benchmark, synchronized, x: torch.Tensor, variant: str) -> None:  # type: ignore[no-untyped-def]
    if variant == "torch_reference" and x.numel() > 5_000:
        pytest.skip("the [C, N] reference is quadratic in memory traffic; small sizes only")
    fn = {
        "native": lambda: powerlaw_scan(x),
        "native_pruned": lambda: powerlaw_scan(x, prune=True),
        "torch_reference": lambda: reference.powerlaw_scan(x),
    }[variant]
    alpha, ks = benchmark(synchronized(fn, x.device))
    _, ref_ks = powerlaw_scan(x) if variant != "native" else (alpha, ks)
    assert int(torch.argmin(ks)) == int(torch.argmin(ref_ks))
    if x.numel() <= 5_000:  # correctness before timing: check against the twin once
        torch.testing.assert_close(torch.min(ks), torch.min(reference.powerlaw_scan(x)[1]))
