"""Which parameters the curvature operators and per-sample gradients differentiate.

all, names, a regex or a predicate (shared by :mod:`fastspec.curvature` and :mod:`fastspec.grads`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Union

import torch
from torch import nn

from fastspec.mode import MODEL_LOCK

ParamSpec = Union[
    None, str, Sequence[Union[str, torch.Tensor]], Callable[[str, torch.Tensor], bool]
]


def select_parameters(model: nn.Module, params: ParamSpec) -> list[str]:
    """Names of the selected parameters, in ``model.named_parameters()`` order.

    Args:
        model: the module.
        params: ``None`` (every parameter that requires grad), a regex matched with
            ``re.search`` against parameter names, a sequence of names or of the parameter
            tensors themselves, or a predicate ``(name, parameter) -> bool``.
    """
    with MODEL_LOCK:
        named = dict(model.named_parameters())
    if not named:
        raise ValueError("model has no parameters")
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
        if not names:
            raise ValueError("no parameter of the model requires grad; pass params explicitly")
        return names
    if isinstance(params, str):
        pattern = re.compile(params)
        names = [n for n in named if pattern.search(n)]
        if not names:
            raise ValueError(f"params regex {params!r} matches no parameter of the model")
    elif callable(params):
        names = [n for n, p in named.items() if params(n, p)]
        if not names:
            raise ValueError("the params predicate selected no parameter of the model")
    elif isinstance(params, Sequence):
        by_id = {id(p): n for n, p in named.items()}
        wanted: list[str] = []
        for item in params:
            if isinstance(item, torch.Tensor):
                if id(item) not in by_id:
                    raise ValueError("params: a tensor in the list is not a parameter of the model")
                wanted.append(by_id[id(item)])
            elif isinstance(item, str):
                if item not in named:
                    raise ValueError(f"params: {item!r} is not a parameter of the model")
                wanted.append(item)
            else:
                raise TypeError(
                    f"params entries must be names or tensors, got {type(item).__name__}"
                )
        if not wanted:
            raise ValueError("params is empty")
        chosen = set(wanted)
        names = [n for n in named if n in chosen]
    else:
        raise TypeError(
            f"params must be None, a regex, a list or a predicate, got {type(params).__name__}"
        )
    frozen = [n for n in names if not named[n].requires_grad]
    if frozen:
        raise ValueError(
            f"params selects parameters that do not require grad: {frozen}; "
            "set requires_grad=True or leave them out"
        )
    return names
