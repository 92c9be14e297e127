"""seq_gram: the fused native Gram of per-sample sequence-weight gradients against its pure-torch
twin (two GEMMs per row tile + an elementwise product and block sum), float64.

pytest benchmarks/bench_seq_gram.py                                  # timings
pytest benchmarks/bench_seq_gram.py --smoke --benchmark-disable      # CI: answers only
"""

from __future__ import annotations

import pytest
import torch

from fastspec import reference
from fastspec.ops import seq_gram

# (N, T, D_in, D_out): where the grads cost model keeps the implicit form (T² (D_in + D_out) below
# D_in·D_out, roughly), and one beyond it
SHAPES = [(512, 2, 512, 512), (512, 4, 512, 512), (512, 8, 256, 256), (256, 16, 128, 128)]


@pytest.fixture(params=SHAPES, ids=lambda s: "N{}xT{}xD{}x{}".format(*s))
def problem(request: pytest.FixtureRequest, smoke: bool, device: torch.device):  # type: ignore[no-untyped-def]
    N, T, d_in, d_out = (16, 3, 8, 5) if smoke else request.param
    g = torch.Generator().manual_seed(0)
    a = torch.randn(N, T, d_in, generator=g, dtype=torch.float64).to(device)
    b = torch.randn(N, T, d_out, generator=g, dtype=torch.float64).to(device)
    return a, b


@pytest.mark.parametrize("variant", ["native", "torch_reference"])
def test_seq_gram(benchmark, synchronized, problem, variant: str) -> None:  # type: ignore[no-untyped-def]
    a, g = problem
    fn = seq_gram if variant == "native" else reference.seq_gram
    K = benchmark(synchronized(lambda: fn(a, g, a, g), a.device))
    torch.testing.assert_close(K, reference.seq_gram(a, g, a, g), rtol=1e-12, atol=1e-9)
