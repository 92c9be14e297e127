"""Writing reports: JSON that numpy and torch values survive, and directories that appear only
when complete (written next to the target under a temporary name, then renamed)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["atomic_dir", "check_target", "plain", "read_json", "write_json"]


def plain(value: Any) -> Any:
    """``value`` with tensors, arrays, numpy scalars, tuples and dataclasses' dicts made plain
    Python (lists, floats, ints, bools, str, None, dicts)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, torch.device):
        return str(value)
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (NaN and inf written as the JSON extensions ``NaN``,
    ``Infinity``, which Python's ``json`` reads back)."""
    path.write_text(json.dumps(plain(data), indent=1, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a report's JSON."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise FileNotFoundError(f"no report at {p}")
    data = json.loads(p.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{p} does not hold a report (a JSON object)")
    return data


def check_target(target: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Validate an output directory before any work: it may not exist unless ``overwrite``, and
    then it must be a directory; its parent must be creatable."""
    path = Path(target)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"out: {path} exists and is not a directory")
        if not overwrite:
            raise ValueError(f"out: {path} already exists; pass overwrite=True (--overwrite)")
    return path


@contextmanager
def atomic_dir(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``target``; on success it replaces ``target``
    (an existing one only when ``overwrite``), on any error it is removed. An interrupted write
    leaves at most a hidden ``.<name>.tmp-*`` directory, never a finished-looking report."""
    path = check_target(target, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
