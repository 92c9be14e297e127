"""Small float64 models covering every layer rule and the fallback, for the grads tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Case = tuple[nn.Module, Any, torch.Tensor, Callable[..., torch.Tensor]]


class Seq(nn.Module):
    """Linear layers on a sequence [n, T, D] (per-token cross-entropy, mean over tokens)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


class ConvNet(nn.Module):
    def __init__(self, conv: nn.Module, width: int) -> None:
        super().__init__()
        self.conv = conv
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).flatten(1))


class Tokens(nn.Module):
    """Embedding (padding index, repeated tokens) → LayerNorm → GroupNorm → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 6, padding_idx=0)
        self.ln = nn.LayerNorm(6)
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Linear(6, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.emb(tokens))  # [n, T=4, 6]
        h = self.gn(h)  # [n, C=4, 6]: the positions act as GroupNorm channels
        return self.head(torch.tanh(h).mean(1))


class Norms(nn.Module):
    """Eval-mode BatchNorm1d on [n, C] and [n, C, L], BatchNorm2d on [n, C, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        self.bn2 = nn.BatchNorm2d(2)
        self.bn1 = nn.BatchNorm1d(4)
        self.bnl = nn.BatchNorm1d(2)
        self.ln = nn.LayerNorm([2, 2])
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [n, 2, 2, 2]
        h = torch.tanh(self.bn2(x))
        h = self.ln(h).sum(-1)  # [n, 2, 2]
        h = torch.tanh(self.bnl(h)).flatten(1)  # [n, 4]
        return self.head(self.bn1(h))


class Scale(nn.Module):
    """A custom layer with its own parameter (no rule: the fallback)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.linspace(0.5, 1.5, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.s


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.att = nn.MultiheadAttention(4, 2, batch_first=True)
        self.scale = Scale(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = self.att(h, h, h, need_weights=False)[0]
        return self.head(self.scale(h).mean(1))


class Tied(nn.Module):
    """Output projection tied to the embedding and used functionally (outside its module)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.mix = nn.Linear(4, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.mix(self.emb(tokens))).mean(1)
        return h @ self.emb.weight.T


class Shared(nn.Module):
    """One Linear called twice, followed by an in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.lin(x))
        h = self.act(self.lin(h))
        return self.head(h)


class SeqFirst(nn.Module):
    """Positions embedded from an unbatched ``arange(T)``, and a Linear on [T, n, D] (samples
    not first): both must leave the hook path."""

    def __init__(self, T: int) -> None:
        super().__init__()
        self.pos = nn.Embedding(T, 3)
        self.lin = nn.Linear(3, 3)
        self.head = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [n, T, 3]
        h = x + self.pos(torch.arange(x.shape[1]))
        h = torch.tanh(self.lin(h.transpose(0, 1))).transpose(0, 1)
        return self.head(h.mean(1))


def _seq_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.flatten(0, 1), y.flatten())


def make_case(name: str, n: int = 9, seed: int = 0) -> Case:
    """(model in eval mode, float64; inputs; targets; loss) for a named case."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    ce = nn.CrossEntropyLoss()
    y = torch.randint(0, 3, (n,), generator=g)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(n, *shape, generator=g, dtype=torch.float64)

    model: nn.Module
    if name == "linear":
        model, x = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)), randn(5)
        loss: Callable[..., torch.Tensor] = ce
    elif name == "linear_seq":
        model, x, loss = Seq(), randn(4, 5), _seq_loss
        y = torch.randint(0, 3, (n, 4), generator=g)
    elif name == "linear_4d":
        model = nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Flatten(), nn.Linear(18, 3))
        x, loss = randn(2, 3, 5), ce
    elif name == "mse_sum":
        model, x = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)), randn(5)
        loss, y = nn.MSELoss(reduction="sum"), randn(2)
    elif name == "conv1d":
        conv = nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
        model, x, loss = ConvNet(conv, 6 * 4), randn(4, 9), ce
    elif name == "conv1d_same_reflect":
        conv = nn.Conv1d(2, 3, 4, padding="same", padding_mode="reflect")
        model, x, loss = ConvNet(conv, 3 * 7), randn(2, 7), ce
    elif name == "conv2d":
        conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
        model, x, loss = ConvNet(conv, 6 * 3 * 5), randn(4, 5, 3), ce
    elif name == "conv2d_circular":
        conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", bias=False)
        model, x, loss = ConvNet(conv, 3 * 4 * 4), randn(2, 4, 4), ce
    elif name == "depthwise":
        conv = nn.Conv2d(3, 6, 3, groups=3)
        model, x, loss = ConvNet(conv, 6 * 2 * 2), randn(3, 4, 4), ce
    elif name == "tokens":
        model, loss = Tokens(), ce
        x = torch.randint(0, 7, (n, 4), generator=g)
        x[:, 0] = 0  # padding index
        x[:, 1] = x[:, 2]  # repeated tokens within a sample
    elif name == "norms":
        model, x, loss = Norms(), randn(2, 2, 2), ce
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
    elif name == "attention":
        model, x, loss = Attention(), randn(4, 3), ce
    elif name == "tied":
        model, loss = Tied(), nn.CrossEntropyLoss()
        x = torch.randint(0, 5, (n, 3), generator=g)
        y = torch.randint(0, 5, (n,), generator=g)
    elif name == "seq_first":  # T = n: only the one-sample check can tell samples apart
        model, x, loss = SeqFirst(n), randn(n, 3), ce
    elif name == "shared":
        model, x, loss = Shared(), randn(4), ce
    else:
        raise KeyError(name)
    return model.double().eval(), x, y, loss


CASES = [
    "linear", "linear_seq", "linear_4d", "mse_sum", "conv1d", "conv1d_same_reflect", "conv2d",
    "conv2d_circular", "depthwise", "tokens", "norms", "attention", "tied", "seq_first", "shared",
]  # fmt: skip
