"""pytest-benchmark suites. ``--smoke`` shrinks every problem (CI runs it with
``--benchmark-disable``: each benchmark runs once and checks its answer)."""

from __future__ import annotations

import pytest
import torch

import fastspec


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--smoke", action="store_true", help="tiny problem sizes (CI)")


@pytest.fixture
def smoke(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--smoke"))


BENCH_DEVICES = ["cpu"] + (["cuda"] if fastspec.cuda_available() else [])


@pytest.fixture(params=BENCH_DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def synchronized():  # type: ignore[no-untyped-def]
    """``synchronized(fn, device)`` wraps ``fn`` so that CUDA timings include the kernels."""

    def wrap(fn, device: torch.device):  # type: ignore[no-untyped-def]
        if device.type != "cuda":
            return fn

        def run(*args, **kwargs):  # type: ignore[no-untyped-def]
            out = fn(*args, **kwargs)
            torch.cuda.synchronize(device)
            return out

        return run

    return wrap
