"""Shared plumbing of the native-op wrappers: tensor checks and the one call into ``fastspec._C``.

Every wrapper in :mod:`fastspec.ops` validates its tensors here (a ``TypeError``/``ValueError``
naming the argument and what was expected), makes them contiguous, allocates outputs with torch,
and hands them to :func:`call` by the field names of the op's ``<Op>Args`` struct
(``csrc/include/fastspec/<op>.h``): the extension takes each tensor's address, the dtype becomes
the extension's own ``_C.DType`` (checked against torch's when this module is imported), and the
kernel runs on the tensors' device with the current CUDA stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch._C._functorch import is_functorch_wrapped_tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from fastspec._native import loaded, native

#: dtypes the kernels take (each must be in the extension's ``_C.DType``)
FLOAT_DTYPES = (torch.float32, torch.float64)


def dtype_table(dtype_enum: Any) -> dict[torch.dtype, Any]:
    """Map torch dtypes to the members of the extension's dtype enum, checking that they agree.

    Args:
        dtype_enum: ``fastspec._C.DType``; its members are named as torch names its dtypes and
            carry their ``itemsize``.

    Returns:
        ``{torch.float32: _C.DType.float32, ...}``.

    Raises:
        ImportError: a member names no torch dtype of its size, or a dtype of
            :data:`FLOAT_DTYPES` has no member (the extension and the package disagree).
    """
    table: dict[torch.dtype, Any] = {}
    for name, code in dtype_enum.__members__.items():
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype) or dtype.itemsize != code.itemsize:
            raise ImportError(
                f"fastspec._C.DType.{name} ({code.itemsize} bytes) is no torch dtype of that "
                "size: the extension does not match this fastspec; reinstall it"
            )
        table[dtype] = code
    missing = [str(d) for d in FLOAT_DTYPES if d not in table]
    if missing:
        raise ImportError(f"fastspec._C.DType lacks {', '.join(missing)}: reinstall fastspec")
    return table


#: torch dtype → ``_C.DType`` (empty when the extension failed to load: :func:`call` raises then)
_C = loaded()
DTYPE_CODES: dict[torch.dtype, Any] = {} if _C is None else dtype_table(_C.DType)


def check_tensor(
    name: str,
    value: Any,
    *,
    dtypes: Sequence[torch.dtype],
    ndim: int,
    device: torch.device | None = None,
    min_numel: int = 1,
) -> torch.Tensor:
    """Validate one tensor argument; return it contiguous.

    Raises:
        TypeError: ``value`` is not a tensor, or has none of ``dtypes``.
        ValueError: wrong number of dimensions, too few elements, or the wrong device.
    """
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


def run_op(op: Any, *args: Any) -> Any:
    """``op(*args)`` for a ``torch.library.custom_op``; in plain eager mode, its function directly.

    torch runs a custom op's kernel under a dynamo guard whose first call imports
    ``torch._dynamo``: 1.4 s of a process's first native call (``benchmarks/results/
    stats_shapes.md``). Plain tensors in eager mode need none of the dispatcher's work, so they
    go straight to the op's function; under ``torch.compile``, a dispatch mode (fake tensors),
    functorch transforms or autograd the call goes through the dispatcher as registered.
    """
    fn = getattr(op, "_init_fn", None)
    if (
        fn is None
        or torch.compiler.is_compiling()
        or _get_current_dispatch_mode() is not None
        or any(
            type(a) is not torch.Tensor or a.requires_grad or is_functorch_wrapped_tensor(a)
            for a in args
            if isinstance(a, torch.Tensor)
        )
    ):
        return op(*args)
    return fn(*args)


def call(op: str, device: torch.device, fields: dict[str, Any]) -> None:
    """Run native ``op`` on ``device``, its ``<Op>Args`` filled from ``fields`` by name.

    Args:
        op: the op's name (``_C.ops[op]`` lists its fields).
        device: where the tensors live: ``_C.<op>_cpu(fields)``, or ``_C.<op>_cuda(fields,
            index, stream)`` on torch's current stream of that device.
        fields: every field of the Args struct: tensors for the addresses, contiguous (as
            :func:`check_tensor` returns them; the extension reads their ``data_ptr()``), ``dtype`` as a ``torch.dtype`` (replaced here
            by its ``_C.DType``), ints, floats and bools.
    """
    C = native()
    fields["dtype"] = DTYPE_CODES[fields["dtype"]]
    if device.type == "cpu":
        getattr(C, f"{op}_cpu")(fields)
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    getattr(C, f"{op}_cuda")(fields, index, torch.cuda.current_stream(device).cuda_stream)
