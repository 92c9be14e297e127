"""The BatchNorm/dropout policy of the curvature operators and per-sample gradients.

``mode="eval"`` (the default) evaluates the model as in ``model.eval()``: BatchNorm uses its
running statistics and dropout is off, so the loss is a deterministic function of the parameters
and the Hessian is that of the model a user deploys. ``mode="train"`` uses batch statistics (the
loss then depends on how data is batched, and the Hessian is of the loss as batched); it refuses
stochastic layers (dropout, RReLU) unless ``allow_stochastic=True``, since their Hessian would be
a random matrix. Each module's ``training`` flag is restored afterwards, and running statistics
are never updated: the operators run the model on copies of its buffers.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from fastspec._checks import check_bool, check_choice

_STOCHASTIC = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def stochastic_layers(model: nn.Module) -> list[str]:
    """Names of modules that are random in train mode."""
    found: list[str] = []
    for name, m in model.named_modules():
        if isinstance(m, _STOCHASTIC) and m.p > 0:
            found.append(f"{name or type(m).__name__} (p={m.p})")
        elif isinstance(m, nn.RReLU):
            found.append(f"{name} (RReLU)")
        elif isinstance(m, (nn.MultiheadAttention, nn.RNNBase)) and getattr(m, "dropout", 0) > 0:
            found.append(f"{name} (dropout={m.dropout})")
    return found


def mode_dependent_layers(model: nn.Module) -> list[str]:
    """Names of modules that compute differently in train and eval mode."""
    norms = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
    found = [
        name or type(m).__name__
        for name, m in model.named_modules()
        if isinstance(m, norms) and m.track_running_stats
    ]
    return found + stochastic_layers(model)


def check_mode(model: nn.Module, mode: str, allow_stochastic: bool) -> None:
    """Validate the policy before any computation (clear errors, one warning)."""
    check_choice("mode", mode, ("eval", "train"))
    allow_stochastic = check_bool("allow_stochastic", allow_stochastic)
    if mode == "train" and not allow_stochastic:
        layers = stochastic_layers(model)
        if layers:
            raise ValueError(
                "mode='train' with stochastic layers makes the curvature a random matrix: "
                f"{', '.join(layers)}. Use mode='eval' (dropout off, the default) or pass "
                "allow_stochastic=True"
            )
    if mode == "eval" and model.training and mode_dependent_layers(model):
        warnings.warn(
            "the model is in train mode; fastspec evaluates it in eval mode (mode='eval', the "
            "default): BatchNorm uses running statistics and dropout is off. Pass mode='train' "
            f"for batch statistics. Layers affected: {', '.join(mode_dependent_layers(model))}",
            UserWarning,
            stacklevel=4,
        )


#: held by :func:`model_mode` for the whole of every pass fastspec makes over a model (curvature
#: products, per-sample gradients), so passes run one at a time in a process, and while fastspec
#: reads a model's parameters. torch.func's transforms are not thread-safe (two threads running
#: GGN products got an internal assertion in one and wrong numbers, up to 44× off, in the other;
#: per-sample gradients came back up to 2.2 off); during a pass ``functional_call`` swaps the
#: model's parameters for the pass's own tensors (a constructor reading them then would capture
#: those), hooks sit on its modules, its mode is switched, and products switch process-wide
#: attention flags
MODEL_LOCK = threading.RLock()


@contextmanager
def model_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Put ``model`` in ``mode`` and restore every module's ``training`` flag afterwards.

    holds :data:`MODEL_LOCK` meanwhile.
    """
    with MODEL_LOCK:
        flags = [(m, m.training) for m in model.modules()]
        try:
            model.train(mode == "train")
            yield
        finally:
            for m, flag in flags:
                m.training = flag
