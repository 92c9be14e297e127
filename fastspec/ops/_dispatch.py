"""Shared plumbing of the native-op wrappers: argument checks and the call into ``fastspec._C``.

Every wrapper in :mod:`fastspec.ops` validates its tensors here (a ``TypeError``/``ValueError``
naming the argument and what was expected), makes them contiguous, allocates outputs with torch,
and hands raw addresses to the torch-free kernels with the current CUDA stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fastspec._native import native

FLOAT_DTYPES = (torch.float32, torch.float64)
_DTYPE_CODE = {torch.float32: 0, torch.float64: 1}  # csrc/include/fastspec/common.h: DType


def dtype_code(dtype: torch.dtype) -> int:
    return _DTYPE_CODE[dtype]


def check_tensor(
    name: str,
    value: Any,
    *,
    dtypes: Sequence[torch.dtype],
    ndim: int,
    device: torch.device | None = None,
    min_numel: int = 1,
) -> torch.Tensor:
    """Validate one tensor argument; return it contiguous."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in dtypes:
        allowed = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(
            f"{name} must have dtype {allowed}, got {str(value.dtype).replace('torch.', '')}"
        )
    if value.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {tuple(value.shape)}")
    if value.numel() < min_numel:
        raise ValueError(f"{name} must have at least {min_numel} elements, got {value.numel()}")
    if device is not None and value.device != device:
        raise ValueError(f"{name} must be on {device} like the data, got {value.device}")
    if value.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be on a cpu or cuda device, got {value.device}")
    return value.contiguous()


def addr(t: torch.Tensor) -> int:
    return int(t.data_ptr())


def call(op: str, device: torch.device, *args: Any) -> None:
    """Run ``_C.<op>_cpu(*args)`` or ``_C.<op>_cuda(*args, device_index, stream)``."""
    C = native()
    if device.type == "cpu":
        getattr(C, f"{op}_cpu")(*args)
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(device).cuda_stream
    getattr(C, f"{op}_cuda")(*args, index, stream)
