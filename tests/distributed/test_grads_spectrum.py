"""Gram matrices and covariance spectra over sharded samples equal one process over their union."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fastspec.distributed import resolve_group
from fastspec.grads import gradient_covariance_spectrum, gradient_gram
from fastspec.grads.gram import GradientStore
from fastspec.grads.problem import GradProblem
from fastspec.grads.sharded import BlockGramOperator, ShardedGramOperator, shard_gradients
from tests.helpers.distributed import run_ranks
from tests.helpers.grads_models import make_case
from tests.helpers.grads_oracle import loop_gradients

GRAM_CASES = [  # (case, center, memory_budget): Outer, Index and Dense (fallback) features
    ("linear_seq", True, 0),
    ("linear_seq", False, 2**40),
    ("tokens", True, 0),
    ("conv2d", False, 0),
    ("attention", True, 2**40),
]


GRAM_SIZES, PRODUCT_SIZES, SPECTRUM_SIZES = [7, 4], [5, 8], [17, 12]  # uneven shards


def _two_ranks(rank: int, world_size: int) -> dict[str, Any]:
    """Everything the 2-rank tests check, from one spawn of the ranks."""
    return {
        "grams": _grams(rank, world_size, GRAM_SIZES, GRAM_CASES),
        "products": _products(rank, world_size, PRODUCT_SIZES),
        "spectra": _spectra(rank, world_size, SPECTRUM_SIZES),
        "mismatches": _mismatches(rank, world_size),
    }


@pytest.fixture(scope="module")
def two_ranks() -> list[dict[str, Any]]:
    return run_ranks(_two_ranks, timeout=300)


def _plain(t: torch.Tensor | None) -> Any:
    """A tensor as a numpy array: tensors cross the result queue by shared memory, which the
    spawned rank's exit removes before the parent reads it."""
    return None if t is None else t.numpy()


def _tensor(a: Any) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(a)


def _shard(name: str, sizes: list[int], rank: int) -> tuple[Any, Any, list[tuple[Any, Any]]]:
    """The same model on every rank, and rank ``rank``'s samples of the union, in batches of 3."""
    model, x, y, loss = make_case(name, n=sum(sizes))
    lo = sum(sizes[:rank])
    xs, ys = x[lo : lo + sizes[rank]], y[lo : lo + sizes[rank]]
    return model, loss, [(xs[i : i + 3], ys[i : i + 3]) for i in range(0, sizes[rank], 3)]


def _grams(rank: int, world_size: int, sizes: list[int], cases: list[Any]) -> list[Any]:
    out = []
    for name, center, budget in cases:
        model, loss, data = _shard(name, sizes, rank)
        K = gradient_gram(model, loss, data, center=center, chunk_size=2, memory_budget=budget)
        out.append(_plain(K))
    return out


def _one_process_gram(name: str, n: int, center: bool, budget: int) -> torch.Tensor:
    model, x, y, loss = make_case(name, n=n)
    K = gradient_gram(model, loss, (x, y), center=center, chunk_size=2, memory_budget=budget)
    G = loop_gradients(model, loss, x, y)  # the oracle, independent of the Gram code
    G = G - G.mean(0) if center else G
    torch.testing.assert_close(K, G @ G.T / n, rtol=1e-10, atol=1e-14)
    return K


def _check_grams(per_rank: list[Any], sizes: list[int], cases: list[Any]) -> None:
    for i, (name, center, budget) in enumerate(cases):
        ref = _one_process_gram(name, sum(sizes), center, budget)
        for grams in per_rank:  # every rank returns the full N × N matrix
            torch.testing.assert_close(_tensor(grams[i]), ref, rtol=1e-10, atol=1e-14)


def test_gram_equals_one_process(two_ranks: list[dict[str, Any]]) -> None:
    _check_grams([r["grams"] for r in two_ranks], GRAM_SIZES, GRAM_CASES)


def test_gram_on_three_ranks_equals_one_process() -> None:
    sizes, cases = [4, 2, 5], GRAM_CASES[:2]
    _check_grams(run_ranks(_grams, sizes, cases, world_size=3), sizes, cases)


def _products(rank: int, world_size: int, sizes: list[int]) -> list[Any]:
    """K V from both data-parallel operators, and the sum over ranks of their local shares."""
    model, loss, data = _shard("linear_seq", sizes, rank)
    group = resolve_group(None)

    def problem() -> GradProblem:
        return GradProblem(model, loss, chunk_size=2)

    sharded = shard_gradients(group, "test", problem, data, memory_budget=0)
    sharded.compute_blocks()
    V = torch.randn(sum(sizes), 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = []
    for center in (True, False):
        for op in (
            BlockGramOperator(sharded, center=center),
            ShardedGramOperator(sharded, center=center),
        ):
            assert op.process_group is group and op.shape == (sum(sizes), sum(sizes))
            local = op.local_matmat(V)
            torch.distributed.all_reduce(local)
            out += [_plain(op.matmat(V)), _plain(local)]
    return out


def test_operators_apply_the_union_gram(two_ranks: list[dict[str, Any]]) -> None:
    per_rank = [r["products"] for r in two_ranks]
    model, x, y, loss = make_case("linear_seq", n=sum(PRODUCT_SIZES))
    store = GradientStore(GradProblem(model, loss), (x, y))
    V = torch.randn(
        sum(PRODUCT_SIZES), 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    refs = [store.gram(center=c) @ V for c in (True, False) for _ in range(4)]
    for products in per_rank:
        for got, ref in zip(products, refs, strict=True):
            torch.testing.assert_close(_tensor(got), ref, rtol=1e-10, atol=1e-14)


SPECTRUM_OPTIONS: list[dict[str, Any]] = [
    {"center": True},  # every eigenvalue of the assembled Gram
    {"center": False, "k": 5, "method": "gram"},
    {"center": True, "noise_batch_size": 4, "k": 6, "method": "lanczos"},  # assembled blocks
    {"center": True, "k": 6, "method": "lanczos", "gram_max_bytes": 0},  # matrix-free
    {"center": False, "k": 4, "method": "lanczos", "gram_max_bytes": 0},
]


def _spectra(rank: int, world_size: int, sizes: list[int]) -> list[tuple[Any, ...]]:
    model, loss, data = _shard("linear_seq", sizes, rank)
    out = []
    for options in SPECTRUM_OPTIONS:
        res = gradient_covariance_spectrum(model, loss, data, tol=1e-11, chunk_size=4, **options)
        values, residuals = _plain(res.eigenvalues), _plain(res.residuals)
        out.append((values, residuals, res.method, res.num_samples, res.num_params))
    return out


def test_spectrum_equals_one_process(two_ranks: list[dict[str, Any]]) -> None:
    per_rank = [r["spectra"] for r in two_ranks]
    model, x, y, loss = make_case("linear_seq", n=sum(SPECTRUM_SIZES))
    for i, options in enumerate(SPECTRUM_OPTIONS):
        ref = gradient_covariance_spectrum(model, loss, (x, y), tol=1e-11, **options)
        for values, residuals, method, n, p in (r[i] for r in per_rank):
            assert (method, n, p) == (ref.method, ref.num_samples, ref.num_params)
            scale = float(ref.eigenvalues[0])
            torch.testing.assert_close(
                _tensor(values), ref.eigenvalues, rtol=1e-10, atol=1e-12 * scale
            )
            if method == "lanczos":
                assert residuals is not None and bool((residuals <= 1e-11).all())
    assert (per_rank[0][3][0] == per_rank[1][3][0]).all()  # ranks agree to the bit


class _Wider(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(5, 4, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _mismatches(rank: int, world_size: int) -> list[str]:
    """What each rank raises for: another model, another option, one rank's empty data."""
    model, loss, data = _shard("linear", [6, 5], rank)
    attempts: list[tuple[Any, dict[str, Any]]] = [
        (_Wider() if rank == 1 else model, {}),
        (model, {"k": 3 + rank}),
        (model, {"data": [] if rank == 1 else data}),
    ]
    out = []
    for m, options in attempts:
        options = {"data": data, **options}
        try:
            gradient_covariance_spectrum(m, loss, options.pop("data"), **options)
        except (ValueError, TypeError) as exc:
            out.append(f"{type(exc).__name__}: {exc}")
        else:
            out.append("no error")
    return out


def test_mismatched_ranks_raise_the_named_error(two_ranks: list[dict[str, Any]]) -> None:
    rank0, rank1 = (r["mismatches"] for r in two_ranks)
    for messages in (rank0, rank1):
        assert "ranks disagree on parameters" in messages[0]
        assert "ranks disagree on k (rank 0: 3, rank 1: 4)" in messages[1]
    assert "ranks disagree on error" in rank0[2] and "data is empty" in rank0[2]
    assert rank1[2].startswith("ValueError: data is empty")
