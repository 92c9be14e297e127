"""The main job's data, models and training recipe.

scikit-learn's bundled handwritten digits (1797 8×8 images, no download), the papers' reference
models scaled to it, and the papers' training recipe.

P1 (Xie et al., *On the Power-Law Hessian Spectrums in Deep Learning*, arXiv:2201.13011) studies
a 2-hidden-layer ReLU FCN (100 units per layer) and LeNet on MNIST, trained with SGD, momentum
0.9, lr 0.1, batch 128, weight decay 5e-4, 50 epochs, lr ÷ 10 at 40 % and 80 % of training
(methods.md §2). Here the FCN is 64-100-100-10 and the LeNet-style CNN has LeNet-5's layer
sequence (two conv + max-pool stages, three fully connected layers) sized for 8×8 inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from fastspec._checks import check_choice, check_float, check_int

__all__ = [
    "MODELS",
    "REPRODUCIBLE_HVP",
    "TrainResult",
    "digits_split",
    "evaluate",
    "fcn",
    "lenet",
    "mlp",
    "noisy_labels",
    "train",
    "train_data",
]

#: samples held out for the test loss / error (the rest, 1437, are the training set)
NUM_TEST = 360


def digits_split(
    *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The digits as ``((X_train [1437, 64], y_train), (X_test [360, 64], y_test))``.

    Pixels are scaled to [0, 1]; the split is a seeded permutation.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "the digits data set comes with scikit-learn: pip install 'fastspec[plots]'"
        ) from exc
    X, y = load_digits(return_X_y=True)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    Xt = torch.tensor(X / 16.0, dtype=dtype)[perm]
    yt = torch.tensor(y)[perm]
    n = len(X) - NUM_TEST
    return (Xt[:n], yt[:n]), (Xt[n:], yt[n:])


def train_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits training set ``(X [1437, 64] float32, y [1437])``, a ``--data`` loader."""
    return digits_split()[0]


def fcn(width: int = 100) -> nn.Module:
    """P1's 2-hidden-layer ReLU FCN on 64 pixels: 64-``width``-``width``-10."""
    return mlp(depth=2, width=width)


def mlp(*, depth: int = 2, width: int = 100, activation: str = "relu") -> nn.Module:
    """An FCN on 64 pixels: ``depth`` hidden layers of ``width`` units, each with ``activation``.

    ``activation`` is ``"relu"``, ``"linear"`` (none: a linear network) or ``"batchnorm"``
    (BatchNorm1d without ReLU: P1's linear network plus BatchNorm).
    """
    check_int("depth", depth, minimum=1)
    check_int("width", width, minimum=1)
    check_choice("activation", activation, ("relu", "linear", "batchnorm"))
    layers: list[nn.Module] = []
    fan_in = 64
    for _ in range(depth):
        layers.append(nn.Linear(fan_in, width))
        if activation == "relu":
            layers.append(nn.ReLU())
        elif activation == "batchnorm":
            layers.append(nn.BatchNorm1d(width))
        fan_in = width
    layers.append(nn.Linear(fan_in, 10))
    return nn.Sequential(*layers)


def noisy_labels(y: torch.Tensor, fraction: float, *, seed: int = 0) -> torch.Tensor:
    """P1's label noise: a copy of ``y`` [N] with a random ``fraction`` of it changed.

    Each chosen label is replaced by a different class drawn uniformly.
    """
    check_float("fraction", fraction, minimum=0.0, maximum=1.0)
    gen = torch.Generator().manual_seed(seed)
    n = round(fraction * len(y))
    idx = torch.randperm(len(y), generator=gen)[:n]
    shift = torch.randint(1, 10, (n,), generator=gen)
    out = y.clone()
    out[idx] = (y[idx] + shift.to(y.device)) % 10
    return out


class LeNet(nn.Module):
    """LeNet-5's layer sequence for 8×8 digits; inputs ``[N, 64]`` or ``[N, 1, 8, 8]``.

    conv 3×3 (6) - ReLU - max-pool 2 - conv 3×3 (16) - ReLU - max-pool 2 - FC 120 - ReLU - FC 84
    - ReLU - FC 10.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(16 * 2 * 2, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.reshape(-1, 1, 8, 8)).flatten(1))


def lenet() -> nn.Module:
    """The LeNet-style CNN (see :class:`LeNet`), a ``--model`` factory."""
    return LeNet()


MODELS: dict[str, Callable[[], nn.Module]] = {"fcn": fcn, "lenet": lenet}

#: the Hessian-product method of the jobs on these models: ``"auto"`` picks the faster method by
#: timing, which machine load can flip, and the two methods round differently, so a seed alone
#: would not fix a run's numbers
REPRODUCIBLE_HVP = "double_backward"


#: a final train error at or above this means training failed (chance on the 10 digits is 90 %):
#: P1's recipe (lr 0.1, momentum 0.9) leaves LeNet at chance in some seeds
#: (benchmarks/results/fastspec_run.md)
NOT_LEARNED = 0.8


@dataclass(frozen=True)
class TrainResult:
    """What training did and reached.

    Attributes:
        epochs: epochs run; steps: optimizer steps; optimizer: ``"sgd"`` or ``"adam"``;
        lr, momentum, weight_decay, batch_size: the recipe;
        lr_milestones: epochs at which lr was divided by 10;
        train_loss, train_error, test_loss, test_error: at the end, in eval mode;
        seconds: wall time of training.
    """

    epochs: int
    steps: int
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    lr_milestones: tuple[int, ...]
    train_loss: float
    train_error: float
    test_loss: float
    test_error: float
    seconds: float

    @property
    def learned(self) -> bool:
        """Whether the model learned at all: final train error below :data:`NOT_LEARNED`."""
        return self.train_error < NOT_LEARNED

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return {**asdict(self), "learned": self.learned}


@torch.no_grad()
def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and error rate of ``model`` (eval mode) on ``(X, y)``."""
    was = model.training
    model.eval()
    out = model(X)
    model.train(was)
    loss = float(nn.functional.cross_entropy(out, y))
    return loss, float((out.argmax(dim=1) != y).double().mean())


def train(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int = 50,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 128,
    optimizer: str = "sgd",
    seed: int = 0,
    on_epoch: Callable[[int, nn.Module], Any] | None = None,
    on_step: Callable[[int, nn.Module], Any] | None = None,
    progress: bool = False,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place with P1's recipe.

    SGD with momentum, weight decay, lr ÷ 10 at 40 % and 80 % of the epochs, shuffled minibatches.

    Args:
        model: the network (on the device and in the dtype of the data).
        train: the training ``(X, y)``.
        test: the test ``(X, y)``.
        epochs: epochs to run (P1: 50).
        lr: learning rate (P1: 0.1).
        momentum: SGD's momentum (P1: 0.9).
        weight_decay: L2 weight decay (P1: 5e-4).
        batch_size: minibatch size (P1: 128).
        optimizer: ``"sgd"`` (P1's recipe) or ``"adam"`` (Adam with ``lr``, its betas and the
            same weight decay and schedule; ``momentum`` unused).
        seed: seed of the shuffling.
        on_epoch: called as ``on_epoch(epoch, model)`` before the first epoch (epoch 0) and
            after each epoch ``1..epochs`` (for checkpoint analyses such as a tracker).
        on_step: called as ``on_step(step, model)`` after each ``backward()``, before the
            optimizer step (e.g. a :class:`fastspec.grads.GradientRecorder`'s ``record``).
        progress: show progress over epochs (stderr).
        desc: the progress label.

    Returns:
        What training did and reached.
    """
    import time

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    X, y = train
    milestones = tuple(sorted({round(0.4 * epochs), round(0.8 * epochs)} - {0}))
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=0.1)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    steps = 0
    if on_epoch is not None:
        on_epoch(0, model)
    bar = _epochs(epochs, progress, desc)
    for epoch in bar:
        model.train()
        perm = torch.randperm(len(X), generator=gen).to(X.device)
        for i in range(0, len(X), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            if on_step is not None:
                on_step(steps, model)
            opt.step()
            steps += 1
        sched.step()
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch + 1, model)
    model.eval()
    seconds = time.perf_counter() - start
    train_loss, train_error = evaluate(model, X, y)
    test_loss, test_error = evaluate(model, *test)
    return TrainResult(
        epochs=epochs, steps=steps, optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
        batch_size=batch_size, lr_milestones=milestones, train_loss=train_loss,
        train_error=train_error, test_loss=test_loss, test_error=test_error, seconds=seconds,
    )  # fmt: skip


def _epochs(epochs: int, progress: bool, desc: str) -> Any:
    if not progress:
        return range(epochs)
    from fastspec.analysis._progress import bar

    return bar(range(epochs), desc=desc, unit="epoch")
