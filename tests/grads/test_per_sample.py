"""Per-sample gradients against a loop of single-sample autograd.grad (float64, <= 1e-10)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from grads_models import CASES, make_case
from grads_oracle import loop_gradients
from threads import run_in_threads
from torch import nn

from fastspec.grads import FallbackWarning, gradient_plan, per_sample_gradients

TOL = 1e-10


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    err = float((a - b).abs().max())
    assert err <= TOL * max(1.0, float(b.abs().max())), err


@pytest.mark.parametrize("name", CASES)
def test_matches_single_sample_loop(name: str) -> None:
    model, x, y, loss = make_case(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        got = per_sample_gradients(model, loss, x, y, chunk_size=4)  # three chunks
    _close(got, loop_gradients(model, loss, x, y))


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("linear_seq", []),
        ("conv2d", []),
        ("tokens", []),
        ("norms", []),
        ("attention", ["att", "att.out_proj", "scale"]),
    ],
)
def test_plan_reports_the_fallback(name: str, fallback: list[str]) -> None:
    model, x, y, loss = make_case(name)
    assert gradient_plan(model).fallback_modules == fallback
    if fallback:
        with pytest.warns(FallbackWarning, match="att, att.out_proj, scale"):
            per_sample_gradients(model, loss, x, y)


def test_parameter_used_outside_its_module_moves_to_fallback() -> None:
    model, x, y, loss = make_case("tied")
    assert gradient_plan(model).fallback == {}
    with pytest.warns(FallbackWarning, match="emb.weight"):
        got = per_sample_gradients(model, loss, x, y)
    _close(got, loop_gradients(model, loss, x, y))


@pytest.mark.parametrize("chunk_size", [4, 9])
def test_layers_that_do_not_see_samples_first_move_to_fallback(chunk_size: int) -> None:
    model, x, y, loss = make_case("seq_first")  # T = n = 9
    with pytest.warns(FallbackWarning, match="lin.weight"):
        got = per_sample_gradients(model, loss, x, y, chunk_size=chunk_size)
    _close(got, loop_gradients(model, loss, x, y))


@pytest.mark.parametrize("params", ["^b\\.", ["a.bias", "b.weight"], lambda n, p: p.dim() == 2])
def test_parameter_subsets(params: object) -> None:
    model, x, y, loss = make_case("linear_seq")
    named = dict(model.named_parameters())
    if isinstance(params, str):
        names = [n for n in named if n.startswith("b.")]
    elif isinstance(params, list):
        names = params
    else:
        names = [n for n, p in named.items() if p.dim() == 2]
    got = per_sample_gradients(model, loss, x, y, params=params)  # type: ignore[arg-type]
    _close(got, loop_gradients(model, loss, x, y, names))


def test_per_parameter_output_and_dtype() -> None:
    model, x, y, loss = make_case("conv1d")
    model32, x32 = copy.deepcopy(model).float(), x.float()
    model.load_state_dict(model32.state_dict())  # float64 copy of the float32 values
    got = per_sample_gradients(model32, loss, x32, y, dtype=torch.float64, flatten=False)
    assert isinstance(got, dict)
    assert list(got) == [n for n, _ in model.named_parameters()]
    for n, p in model.named_parameters():
        assert got[n].shape == (9, *p.shape) and got[n].dtype == torch.float64
    flat = torch.cat([g.reshape(9, -1) for g in got.values()], dim=1)
    _close(flat, loop_gradients(model, loss, x32.double(), y))


def test_tuple_inputs_and_train_mode_without_batchnorm() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(2, 3)

        def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self.a(u) * self.b(v)

    model = Two().double()
    u, v = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    loss = nn.CrossEntropyLoss()
    got = per_sample_gradients(model, loss, (u, v), y, mode="train")
    _close(got, loop_gradients(model, loss, (u, v), y))


def test_weighted_loss_uses_each_samples_own_loss() -> None:
    model, x, y, _ = make_case("linear")
    loss = nn.CrossEntropyLoss(weight=torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64))
    _close(per_sample_gradients(model, loss, x, y), loop_gradients(model, loss, x, y))


@pytest.mark.parametrize("name", ["attention", "norms"])
def test_threads(name: str) -> None:
    """Per-sample gradients of one model from several threads at once (hooked layers and the
    torch.func fallback): each call holds the model for its pass and reads the model's own
    parameters, so every result is right (without the lock: results up to 2.2 off, torch.func
    errors, and a wrong number of columns)."""
    model, x, y, loss = make_case(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        expected = loop_gradients(model, loss, x, y)

        def run() -> None:
            for _ in range(5):
                _close(per_sample_gradients(model, loss, x, y, chunk_size=4), expected)

        run_in_threads(run)
