"""The benchmark problem of the Hessian side-by-sides: a ~301k-parameter float64 ReLU MLP
(64-512-512-10) trained on scikit-learn's bundled handwritten digits (1797 samples)."""

from __future__ import annotations

import torch
from torch import nn


def digits(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=dtype), torch.tensor(y)


def mlp(width: int = 512) -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    ).double()


def trained_mlp(epochs: int = 30, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The papers' recipe, shortened: SGD, momentum 0.9, lr 0.1, batch 128, weight decay 5e-4."""
    X, y = digits()
    torch.manual_seed(seed)
    return train(mlp(), X, y, epochs=epochs, seed=seed), X, y


def train(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int
) -> nn.Module:
    """SGD, momentum 0.9, lr 0.1, batch 128, weight decay 5e-4; returns the model in eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), 128):
            idx = perm[i : i + 128].to(X.device)
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    return model.eval()
