"""The GPU problem of the Hessian benchmarks: a ResNet-style CNN (BatchNorm, residual blocks,
float64) trained on scikit-learn's 8×8 digits, the Hessian taken with BatchNorm in eval mode."""

from __future__ import annotations

import torch
from digits_mlp import digits, train
from torch import nn


class Block(nn.Module):
    """The basic residual block: conv-BN-ReLU-conv-BN plus a (1×1 conv-BN when needed) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


def resnet(width: int = 32) -> nn.Module:
    """Stem and three stages (8×8, 4×4, 2×2) of widths w, 2w, 4w: 308,074 parameters at w = 32."""
    w = width
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10),
    ).double()  # fmt: skip


def trained_resnet(
    width: int = 32, epochs: int = 30, seed: int = 0, device: str = "cpu"
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    X, y = digits()
    X, y = X.to(device), y.to(device)
    torch.manual_seed(seed)
    return train(resnet(width).to(device), X, y, epochs=epochs, seed=seed), X, y
