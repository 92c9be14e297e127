"""Small models and a dense torch.func oracle shared by the curvature tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.bn(self.conv(x))).flatten(1))


class EmbedLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.norm(self.emb(tokens))).mean(dim=1))


class TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.block = nn.TransformerEncoderLayer(
            4, 2, dim_feedforward=6, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(4, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.emb(tokens)).mean(dim=1))


def make_data(name: str, n: int = 20, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if name == "mlp":
        x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    elif name == "cnn":
        x = torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)
    else:
        x = torch.randint(0, 11, (n, 5), generator=g)
    return x, torch.randint(0, 3, (n,), generator=g)


def make_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = {
        "mlp": mlp,
        "cnn": SmallCNN,
        "embed_layernorm": EmbedLayerNorm,
        "transformer": TinyTransformer,
    }[name]().double()
    if name == "cnn":  # non-trivial running statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def flat_fn(
    model: nn.Module, names: list[str]
) -> tuple[Callable[[torch.Tensor], Any], torch.Tensor]:
    """(f, theta): f maps the flat selected parameters to the model's state dict."""
    named = dict(model.named_parameters())
    shapes = [named[n].shape for n in names]
    state = {**{k: v.detach() for k, v in named.items()}, **dict(model.named_buffers())}

    def f(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = dict(state), 0
        for n, s in zip(names, shapes):
            out[n] = flat[i : i + s.numel()].reshape(s)
            i += s.numel()
        return out

    return f, torch.cat([named[n].detach().reshape(-1) for n in names])


def dense_hessian(model, loss_fn, x, y, names=None, scale=None):  # type: ignore[no-untyped-def]
    """∇² of (1/N) Σ ℓ over the whole data set at once, by torch.autograd.functional.hessian
    (reverse-over-reverse on one graph of all the data, math attention kernel).

    Not torch.func.hessian: in torch 2.13 its jacfwd(jacrev(f)) is wrong by ~3 % for the
    Embedding + LayerNorm model here (finite differences agree with this oracle to 2e-10;
    test_hessian_matches_finite_differences keeps checking that)."""
    names = names or [n for n, _ in model.named_parameters()]
    state, theta = flat_fn(model, names)
    scale = scale if scale is not None else 1.0

    def loss(flat: torch.Tensor) -> torch.Tensor:
        return scale * loss_fn(functional_call(model, state(flat), (x,)), y)

    with sdpa_kernel(SDPBackend.MATH):
        return torch.autograd.functional.hessian(loss, theta, vectorize=True)


def finite_difference_hessian(model, loss_fn, x, y):  # type: ignore[no-untyped-def]
    """Central differences of the full-data gradient (plain autograd), step 1e-5."""
    names = [n for n, _ in model.named_parameters()]
    state, theta = flat_fn(model, names)

    def gradient(flat: torch.Tensor) -> torch.Tensor:
        flat = flat.detach().requires_grad_(True)
        with sdpa_kernel(SDPBackend.MATH):
            loss = loss_fn(functional_call(model, state(flat), (x,)), y)
        return torch.autograd.grad(loss, flat)[0]

    eps = 1e-5
    eye = torch.eye(theta.numel(), dtype=theta.dtype)
    return torch.stack(
        [(gradient(theta + eps * e) - gradient(theta - eps * e)) / (2 * eps) for e in eye]
    )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())
