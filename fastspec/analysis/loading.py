"""A user's model, data and loss from command-line specs, with clear errors.

- model: ``module:factory`` (an importable module or a ``path/to/file.py``, and a callable in it
  returning an ``nn.Module``), optionally with a checkpoint (a state dict) loaded into it; a
  file saved with ``torch.save(model)``; or a local transformers model directory (``config.json``
  and ``*.safetensors``, as ``save_pretrained`` writes them), loaded with
  ``from_pretrained(DIR, local_files_only=True, use_safetensors=True)``: nothing is downloaded
  and nothing is unpickled.
- data: ``module:loader`` — a callable returning a DataLoader, an iterable of ``(inputs,
  targets)`` batches or one such pair (or such an object itself); for a language model, dict
  batches (``input_ids``, ``attention_mask``, ``labels`` with -100 where not scored).
- loss: ``cross_entropy``, ``mse``, ``nll``, or ``module:function``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pickle  # its exception type only: files are read with torch.load(weights_only=True)
import re
import sys
from collections.abc import Callable, Mapping
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


def _call(obj: Any, *, option: str, spec: str, **kwargs: Any) -> Any:
    if not callable(obj) or isinstance(obj, (nn.Module, torch.utils.data.DataLoader)):
        return obj
    try:
        return obj(**kwargs)
    except Exception as exc:
        raise SpecError(f"{option}: calling {spec} failed: {_first_line(exc)}") from None


def load_model(
    spec: str, *, checkpoint: str | None = None, trust_pickle: bool = False
) -> nn.Module:
    """The model of ``--model`` (and ``--checkpoint``).

    Args:
        spec: ``module:factory`` (code the user names), or a file saved with
            ``torch.save(model)``.
        checkpoint: a state dict (``torch.save(model.state_dict())``, possibly inside a dict
            under ``state_dict``, ``model_state_dict`` or ``model``; or ``.safetensors``), read
            with ``torch.load(weights_only=True)``, which never runs code from the file.
        trust_pickle: allow arbitrary pickled objects: ``spec`` as a whole pickled model, a
            checkpoint holding more than tensors. Unpickling runs whatever code the file names,
            so this is for files the user trusts as much as code.
    """
    if Path(spec).is_dir():
        model = _load_pretrained(spec)
    elif ":" in spec and not Path(spec).is_file():
        model = _call(load_object(spec, option="--model"), option="--model", spec=spec)
    elif not Path(spec).exists() and not spec.endswith((".pt", ".pth", ".safetensors", ".bin")):
        raise SpecError(
            f"--model: no such file {spec!r}, nor a local model directory or module:factory; "
            "fastspec never downloads: save the model with save_pretrained(DIR) (or download "
            "it yourself) and pass --model DIR"
        )
    else:
        model = _load_model_file(spec, trust_pickle=trust_pickle)
    if not isinstance(model, nn.Module):
        raise SpecError(f"--model: {spec} gave a {type(model).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        state = _load_state(checkpoint, trust_pickle=trust_pickle)
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise SpecError(
                f"--checkpoint: {checkpoint} does not fit the model: {_first_line(exc)}"
            ) from None
    return model


def _load_pretrained(path: str) -> nn.Module:
    """A transformers model from a local directory: its config and safetensors weights."""
    import json

    config = Path(path) / "config.json"
    if not config.is_file():
        raise SpecError(f"--model: {path} has no config.json (save the model with save_pretrained)")
    if not any(Path(path).glob("*.safetensors")):
        raise SpecError(
            f"--model: {path} has no *.safetensors weights; fastspec reads only safetensors "
            "(save_pretrained(DIR, safe_serialization=True))"
        )
    try:
        import transformers
    except ImportError:
        raise SpecError(
            f"--model: loading {path} needs transformers and safetensors "
            "(pip install 'fastspec[lm]')"
        ) from None
    try:
        names = json.loads(config.read_text()).get("architectures") or []
        cls = getattr(transformers, names[0], None) if names else None
        if cls is None:
            raise SpecError(
                f"--model: {path}/config.json names no transformers model class "
                f"(architectures: {names})"
            )
        model = cls.from_pretrained(path, local_files_only=True, use_safetensors=True)
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"--model: cannot load {path}: {_first_line(exc)}") from None
    return model.eval()


def _load_model_file(path: str, *, trust_pickle: bool) -> Any:
    """A whole pickled model: unpickled only when ``trust_pickle``."""
    hint = f"pass --model module:factory --checkpoint {path}"
    if Path(path).suffix == ".safetensors":
        _exists(path, option="--model")
        raise SpecError(f"--model: {path} holds a state dict, not a model; {hint}")
    try:
        obj = _torch_load(path, option="--model", weights_only=True)
    except _Refused:
        if not trust_pickle:
            raise SpecError(
                f"--model: {path} is not a plain state dict; loading a pickled model can run "
                "code hidden in the file: pass --trust-pickle only if you trust it as code, or "
                "use --model module:factory --checkpoint with its state dict"
            ) from None
        obj = _torch_load(path, option="--model", weights_only=False)
    if isinstance(obj, dict):
        raise SpecError(f"--model: {path} holds a state dict, not a model; {hint}")
    return obj


def _load_state(path: str, *, trust_pickle: bool) -> dict[str, Any]:
    """The state dict in a checkpoint file, read without executing anything in it."""
    if Path(path).suffix == ".safetensors":
        _exists(path, option="--checkpoint")
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise SpecError(
                f"--checkpoint: reading {path} needs the safetensors package "
                "(pip install safetensors)"
            ) from None
        try:
            return dict(load_file(path, device="cpu"))
        except Exception as exc:
            raise SpecError(f"--checkpoint: cannot read {path}: {_first_line(exc)}") from None
    try:
        state = _torch_load(path, option="--checkpoint", weights_only=True)
    except _Refused as exc:
        if not trust_pickle:
            raise SpecError(
                f"--checkpoint: {path} holds more than tensors and plain containers ({exc}); "
                "checkpoints are read with torch.load(weights_only=True), which never runs code "
                "from the file: save model.state_dict(), use .safetensors, or pass "
                "--trust-pickle if you trust the file as code"
            ) from None
        state = _torch_load(path, option="--checkpoint", weights_only=False)
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise SpecError(f"--checkpoint: {path} holds no state dict")
    return state


def _exists(path: str, *, option: str) -> None:
    if not Path(path).exists():
        raise SpecError(f"{option}: no such file {path!r}")
    if not Path(path).is_file():
        raise SpecError(f"{option}: {path!r} is not a regular file")


class _Refused(SpecError):
    """``torch.load(weights_only=True)`` refused a file: it names more than tensors."""


def _torch_load(path: str, *, option: str, weights_only: bool) -> Any:
    _exists(path, option=option)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if weights_only and "weights only" in text.lower():
            found = re.search(r"GLOBAL (\S+)", text)
            raise _Refused(f"it names {found.group(1)}" if found else "weights_only") from None
        raise SpecError(f"{option}: cannot read {path}: {_first_line(exc)}") from None
    except Exception as exc:
        raise SpecError(f"{option}: cannot read {path}: {_first_line(exc)}") from None


def load_data(spec: str) -> Any:
    """The data of ``--data``."""
    return load_data_share(spec, 0, 1)[0]


def load_data_share(spec: str, rank: int, world_size: int) -> tuple[Any, bool]:
    """``(data, whether they are rank's share)``: ``--data`` for rank ``rank`` of ``world_size``.

    A factory whose signature takes ``rank`` and ``world_size`` keywords is called with them
    when ``world_size > 1`` and returns that rank's share itself; anything else gives the
    whole data (``False``).
    """
    obj = load_object(spec, option="--data")
    kwargs: dict[str, int] = {}
    if world_size > 1 and callable(obj) and _takes(obj, ("rank", "world_size")):
        kwargs = {"rank": rank, "world_size": world_size}
    data = _call(obj, option="--data", spec=spec, **kwargs)
    try:
        return as_batches(data), bool(kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"--data: {spec} gave unusable data: {exc}") from None


def _takes(fn: Any, names: tuple[str, ...]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return all(n in params and params[n].kind in kinds for n in names)


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
    device = next(model.parameters()).device
    if isinstance(first, Mapping):  # a language model's batch: the operators check it in full
        if "labels" not in first:
            raise SpecError(
                f"--data: a dict batch needs 'labels' (token ids, -100 where not scored), got "
                f"keys {sorted(first)}"
            )
        try:
            with torch.no_grad():
                model(**{k: v for k, v in to_device(first, device, dtype).items() if k != "labels"})
        except Exception as exc:
            raise SpecError(f"model and data do not fit together: {_first_line(exc)}") from None
        return
    if not (isinstance(first, (tuple, list)) and len(first) == 2):
        raise SpecError(
            f"--data: batches must be (inputs, targets) pairs or dicts, got {type(first).__name__}"
        )
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
    _exists(path, option="FILE")
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
    if values.dtype.kind == "c":
        raise SpecError(f"FILE: {path} holds complex numbers; a fit needs real values")
    if values.dtype.kind not in "fiu":
        raise SpecError(f"FILE: {path} holds {values.dtype} values, not real numbers")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise SpecError(f"FILE: {path} holds no values")
    return values
