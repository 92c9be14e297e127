"""Where the Krylov basis lives: its storage dtype, and memory or a memory-mapped file.

The basis ``V`` ``[M, P]`` (and the stored products ``AV``) may be kept in a precision below
the operator's (``basis_dtype``: float32 or bfloat16 for a float64 operator, bfloat16 for a
float32 one) and/or spilled to a memory-mapped file (``basis_dir``), so that a large ``k`` is
not capped by RAM: the basis takes ``M · P · sizeof(storage)`` bytes
(``benchmarks/results/basis_storage_memory.md``).

Arithmetic stays in the operator's dtype: a stored row block is upcast when it is read
(:mod:`fastspec.linalg._kernels` reads a basis of another dtype or device in row blocks, so the
transient is a block, not the basis), and only results are rounded when written. A basis whose
storage matches the operator's dtype and device is used as it is, in memory or in the file, so
a spilled run equals an in-memory one bitwise.

A spilled basis is a ``tempfile`` name in ``basis_dir`` (one per buffer and rank), mapped with
:func:`torch.from_file` and unlinked at once: the mapping keeps the data, the kernel writes its
pages back to the disk under memory pressure, and nothing is left in the directory when eigsh
returns, raises or the process dies.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

from fastspec._checks import check_choice

__all__ = ["BasisStorage", "basis_dtype_for", "check_basis_dir"]

#: storage dtypes allowed for each operator dtype (the operator's own first)
_ALLOWED = {
    torch.float64: (torch.float64, torch.float32, torch.bfloat16),
    torch.float32: (torch.float32, torch.bfloat16),
}
#: the storage dtypes by name
_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` → ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def basis_dtype_for(basis_dtype: Any, op_dtype: torch.dtype) -> torch.dtype:
    """The storage dtype of ``basis_dtype`` (``None``: the operator's) for an operator dtype.

    Raises:
        TypeError: ``basis_dtype`` is neither ``None``, a ``torch.dtype`` nor a string.
        ValueError: a dtype other than float64/float32/bfloat16, or one above ``op_dtype``.
    """
    if basis_dtype is None:
        return op_dtype
    allowed = _ALLOWED[op_dtype]
    if isinstance(basis_dtype, torch.dtype):
        if basis_dtype not in _DTYPES.values():
            raise ValueError(
                "basis_dtype must be one of 'float64', 'float32', 'bfloat16' (or the torch "
                f"dtypes), got {basis_dtype}"
            )
        dtype = basis_dtype
    elif isinstance(basis_dtype, str):
        dtype = _DTYPES[
            check_choice("basis_dtype", basis_dtype.removeprefix("torch."), tuple(_DTYPES))
        ]
    else:
        raise TypeError(
            f"basis_dtype must be a torch.dtype, a dtype name or None, got {basis_dtype!r}"
        )
    if dtype not in allowed:
        raise ValueError(
            f"basis_dtype must be the operator's dtype or a lower precision "
            f"({', '.join(map(dtype_name, allowed))} for a {dtype_name(op_dtype)} operator), "
            f"got {dtype_name(dtype)}"
        )
    return dtype


def check_basis_dir(basis_dir: Any) -> str | None:
    """``basis_dir`` as a path string: ``None``, or an existing writable directory.

    Raises:
        TypeError: not a ``str``, an ``os.PathLike`` or ``None``.
        ValueError: not an existing directory, or not writable.
    """
    if basis_dir is None:
        return None
    if not isinstance(basis_dir, (str, os.PathLike)):
        raise TypeError(f"basis_dir must be a directory path or None, got {basis_dir!r}")
    path = os.fspath(basis_dir)
    if not isinstance(path, str):
        raise TypeError(f"basis_dir must be a str path, got {path!r}")
    if not os.path.isdir(path):
        raise ValueError(f"basis_dir must be an existing directory, got {path!r}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"basis_dir must be a writable directory, got {path!r}")
    return path


class BasisStorage:
    """Allocates the basis buffers: in memory, or memory-mapped files in ``directory``.

    Args:
        dtype: storage dtype.
        device: the operator's device (in-memory buffers live there; files on the host).
        directory: where spilled buffers are created, or ``None`` for memory.
        rank: this process's rank (in the file names).
    """

    def __init__(
        self, dtype: torch.dtype, device: torch.device, directory: str | None, rank: int = 0
    ) -> None:
        self.dtype, self.directory, self.rank = dtype, directory, rank
        self.device = device if directory is None else torch.device("cpu")

    @property
    def spilled(self) -> bool:
        """Whether buffers are memory-mapped files."""
        return self.directory is not None

    @property
    def name(self) -> str:
        """The storage dtype's name (``"float32"``)."""
        return dtype_name(self.dtype)

    def empty(self, rows: int, cols: int) -> torch.Tensor:
        """An uninitialised ``[rows, cols]`` buffer (a mapped file when spilled)."""
        if self.directory is None:
            return torch.empty(rows, cols, dtype=self.dtype, device=self.device)
        size = rows * cols
        nbytes = size * self.dtype.itemsize
        fd, path = tempfile.mkstemp(prefix=f"fastspec-basis-rank{self.rank}-", dir=self.directory)
        try:
            os.ftruncate(fd, max(nbytes, 1))
            os.close(fd)
            fd = -1
            flat = torch.from_file(path, shared=True, size=size, dtype=self.dtype)
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(path)  # the mapping keeps the data; nothing is left behind
        return flat.view(rows, cols)
