"""Gram matrix and covariance spectrum against explicit per-sample gradients (G Gᵀ, eigh)."""

from __future__ import annotations

import warnings

import pytest
import torch
from grads_models import make_case
from grads_oracle import loop_gradients

from fastspec.grads import (
    FallbackWarning,
    GramOperator,
    gradient_covariance_spectrum,
    gradient_gram,
)
from fastspec.grads.gram import GradientStore
from fastspec.grads.problem import GradProblem


def _explicit_gram(G: torch.Tensor, center: bool) -> torch.Tensor:
    if center:
        G = G - G.mean(0)
    return G @ G.T / G.shape[0]


def _batches(
    x: torch.Tensor, y: torch.Tensor, size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, y.shape[0], size)]


@pytest.mark.parametrize("name", ["linear_seq", "conv2d", "tokens", "norms", "attention"])
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("budget", [0, 2**40], ids=["implicit", "cheapest"])
def test_gram_matches_explicit(name: str, center: bool, budget: int) -> None:
    model, x, y, loss = make_case(name, n=11)
    G = loop_gradients(model, loss, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        K = gradient_gram(
            model, loss, _batches(x, y, 5), center=center, chunk_size=3, memory_budget=budget
        )
    ref = _explicit_gram(G, center)
    assert float((K - ref).abs().max()) <= 1e-12 * float(ref.abs().max())


def test_forms_follow_the_cost_model() -> None:
    model, x, y, loss = make_case("linear_seq", n=11)
    problem = GradProblem(model, loss, chunk_size=4)
    implicit = GradientStore(problem, (x, y), memory_budget=0).forms
    assert implicit == {
        "a.weight": "implicit", "a.bias": "materialised",
        "b.weight": "implicit", "b.bias": "materialised",
    }  # fmt: skip
    # T = 4 positions, D_in·D_out = 30 and 18, N = 11: materialising is cheaper here
    assert GradientStore(problem, (x, y), memory_budget=2**40).forms["a.weight"] == "materialised"


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("name", ["linear_seq", "tokens"])
def test_gram_operator_applies_the_gram(name: str, center: bool) -> None:
    model, x, y, loss = make_case(name, n=10)
    store = GradientStore(GradProblem(model, loss, chunk_size=4), (x, y), memory_budget=0)
    U = torch.randn(10, 3, dtype=torch.float64)
    ref = _explicit_gram(loop_gradients(model, loss, x, y), center) @ U
    got = GramOperator(store, center=center).matmat(U)
    assert float((got - ref).abs().max()) <= 1e-12 * float(ref.abs().max())


@pytest.mark.parametrize(("center", "noise_batch_size"), [(True, None), (False, None), (True, 4)])
def test_spectrum_matches_eigh(center: bool, noise_batch_size: int | None) -> None:
    model, x, y, loss = make_case("linear", n=30)
    G = loop_gradients(model, loss, x, y)
    ref = torch.linalg.eigvalsh(_explicit_gram(G, center)).flip(0)[: G.shape[1]]
    ref = ref / (noise_batch_size or 1)
    # the P × P covariance (or second moment) has the same spectrum: check that too
    Gc = G - G.mean(0) if center else G
    cov = torch.linalg.eigvalsh(Gc.T @ Gc / 30).flip(0)[:30] / (noise_batch_size or 1)
    res = gradient_covariance_spectrum(
        model, loss, (x, y), center=center, noise_batch_size=noise_batch_size, chunk_size=7
    )
    assert res.method == "gram" and res.num_samples == 30 and res.num_params == G.shape[1]
    assert res.eigenvalues.shape == (30,)  # min(N, P) = N
    torch.testing.assert_close(res.eigenvalues, ref, rtol=0, atol=1e-13)
    torch.testing.assert_close(res.eigenvalues, cov, rtol=0, atol=1e-12)
    top = gradient_covariance_spectrum(model, loss, (x, y), k=5, center=center,
                                       noise_batch_size=noise_batch_size)  # fmt: skip
    torch.testing.assert_close(top.eigenvalues, ref[:5], rtol=0, atol=1e-13)
    assert top.to_dict()["eigenvalues"] == top.eigenvalues.tolist()


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("gram_max_bytes", [0, 2**30], ids=["matrix-free", "assembled"])
def test_lanczos_path_matches_dense(center: bool, gram_max_bytes: int) -> None:
    model, x, y, loss = make_case("linear_seq", n=60)
    dense = gradient_covariance_spectrum(model, loss, (x, y), k=6, center=center)
    lanczos = gradient_covariance_spectrum(
        model, loss, (x, y), k=6, center=center, method="lanczos", tol=1e-10, chunk_size=16,
        gram_max_bytes=gram_max_bytes,
    )  # fmt: skip
    assert lanczos.method == "lanczos" and lanczos.residuals is not None
    assert bool((lanczos.residuals <= 1e-10).all())
    torch.testing.assert_close(lanczos.eigenvalues, dense.eigenvalues, rtol=1e-9, atol=0)
