"""A user's model, data and loss from command-line specs, with clear errors.

- model: ``module:factory`` (an importable module or a ``path/to/file.py``, and a callable in it
  returning an ``nn.Module``), optionally with a checkpoint (a state dict) loaded into it; or a
  file saved with ``torch.save(model)``.
- data: ``module:loader`` — a callable returning a DataLoader, an iterable of ``(inputs,
  targets)`` batches or one such pair (or such an object itself).
- loss: ``cross_entropy``, ``mse``, ``nll``, or ``module:function``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastspec.batches import as_batches, to_device

__all__ = ["SpecError", "check_compatible", "load_data", "load_loss", "load_model", "load_values"]

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "mse": nn.MSELoss,
    "nll": nn.NLLLoss,
}


class SpecError(ValueError):
    """A command-line spec (``--model``, ``--data``, ``--loss``, a file) that cannot be used."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_object(spec: str, *, option: str) -> Any:
    """The attribute named by ``module:attr`` (a dotted module name or a ``.py`` file path)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise SpecError(f"{option}: expected 'module:name' (or 'path/file.py:name'), got {spec!r}")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise SpecError(f"{option}: no such file {module_name!r}")
            name = f"_fastspec_user_{path.stem}"
            loader_spec = importlib.util.spec_from_file_location(name, path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # like `python -m`: the working directory
            module = importlib.import_module(module_name)
    except SpecError:
        raise
    except ModuleNotFoundError as exc:
        raise SpecError(f"{option}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # the user's module failed while importing
        raise SpecError(f"{option}: importing {module_name!r} failed: {_first_line(exc)}") from None
    if not hasattr(module, attr):
        raise SpecError(f"{option}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def _call(obj: Any, *, option: str, spec: str) -> Any:
    if not callable(obj) or isinstance(obj, (nn.Module, torch.utils.data.DataLoader)):
        return obj
    try:
        return obj()
    except Exception as exc:
        raise SpecError(f"{option}: calling {spec} failed: {_first_line(exc)}") from None


def load_model(spec: str, *, checkpoint: str | None = None) -> nn.Module:
    """The model of ``--model`` (and ``--checkpoint``)."""
    if ":" in spec and not Path(spec).is_file():
        model = _call(load_object(spec, option="--model"), option="--model", spec=spec)
    else:
        model = _torch_load(spec, option="--model")
        if isinstance(model, dict):
            raise SpecError(
                f"--model: {spec} holds a state dict, not a model; pass --model module:factory "
                f"--checkpoint {spec}"
            )
    if not isinstance(model, nn.Module):
        raise SpecError(f"--model: {spec} gave a {type(model).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        state = _torch_load(checkpoint, option="--checkpoint")
        if isinstance(state, nn.Module):
            state = state.state_dict()
        if isinstance(state, dict):
            for key in ("state_dict", "model_state_dict", "model"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
        if not isinstance(state, dict):
            raise SpecError(f"--checkpoint: {checkpoint} holds no state dict")
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise SpecError(
                f"--checkpoint: {checkpoint} does not fit the model: {_first_line(exc)}"
            ) from None
    return model


def _torch_load(path: str, *, option: str) -> Any:
    if not Path(path).is_file():
        raise SpecError(f"{option}: no such file {path!r}")
    try:
        # a whole pickled model needs weights_only=False: only load files you trust
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise SpecError(f"{option}: cannot read {path}: {_first_line(exc)}") from None


def load_data(spec: str) -> Any:
    """The data of ``--data``."""
    data = _call(load_object(spec, option="--data"), option="--data", spec=spec)
    try:
        return as_batches(data)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"--data: {spec} gave unusable data: {exc}") from None


def load_loss(spec: str) -> Callable[..., torch.Tensor]:
    """The loss of ``--loss``: a name in :data:`LOSSES` or ``module:function``."""
    if spec in LOSSES:
        return LOSSES[spec]()
    if ":" not in spec:
        raise SpecError(
            f"--loss: expected one of {sorted(LOSSES)} or 'module:function', got {spec!r}"
        )
    loss = load_object(spec, option="--loss")
    if isinstance(loss, type) and issubclass(loss, nn.Module):
        loss = loss()
    if not callable(loss):
        raise SpecError(f"--loss: {spec} is not callable")
    return loss


def check_compatible(model: nn.Module, loss_fn: Any, data: Any, *, dtype: torch.dtype) -> None:
    """Run the model and the loss on the first batch; a clear error when they do not fit."""
    batches = as_batches(data)
    first = next(iter(batches), None)
    if first is None:
        raise SpecError("--data: the data yielded no batch")
    if not (isinstance(first, (tuple, list)) and len(first) == 2):
        raise SpecError(
            f"--data: batches must be (inputs, targets) pairs, got {type(first).__name__}"
        )
    device = next(model.parameters()).device
    inputs, targets = to_device(first, device, dtype)
    try:
        with torch.no_grad():
            out = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
            loss = loss_fn(out, targets)
    except Exception as exc:
        raise SpecError(f"model and data do not fit together: {_first_line(exc)}") from None
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise SpecError("--loss: the loss of a batch must be a scalar tensor")


def load_values(path: str) -> Any:
    """The numbers in a ``.npy``, ``.txt`` or ``.csv`` file (any shape, flattened)."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"FILE: no such file {path!r}")
    try:
        if p.suffix == ".npy":
            values = np.load(p, allow_pickle=False)
        elif p.suffix in (".txt", ".csv", ".tsv", ".dat", ""):
            text = p.read_text().replace(",", " ").replace(";", " ").replace("\t", " ")
            values = np.array(text.split(), dtype=np.float64)
        else:
            raise SpecError(f"FILE: {path} is not .npy, .txt or .csv")
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"FILE: cannot read numbers from {path}: {_first_line(exc)}") from None
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise SpecError(f"FILE: {path} holds no values")
    return values
