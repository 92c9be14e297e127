r"""The ``LinearOperator`` contract of :mod:`fastspec.linalg` and adapters to it.

Every algorithm in :mod:`fastspec.linalg` takes an operator, never a model. The contract follows
scipy's ``LinearOperator`` (``shape``, ``dtype``, ``matvec``, ``matmat``), with torch tensors
instead of numpy arrays and with the *block* product as the primitive:

- ``shape``: ``(P, P)``;
- ``dtype``: a real floating ``torch.dtype``;
- ``device``: the ``torch.device`` that ``matmat`` reads and writes;
- ``matmat(V)``: ``V`` of shape ``[P, B]`` → ``A @ V`` of shape ``[P, B]``, same dtype and device;
- ``matvec(v)``: ``[P]`` → ``[P]`` (derived from ``matmat``).

*Data-parallel operators.* An operator whose data is split over the ranks of a
``torch.distributed`` group carries ``process_group`` (the group, or ``None``) and implements
``local_matmat(V)``: ``[P, B]`` → this rank's unreduced ``[P, B]`` share, weighted so that the
sum over ranks is the full-data product (a fresh tensor: the solvers reduce it in place); its
``matmat`` is the all-reduce of that. The solvers
(``eigsh``, ``slq``, ``trace``) under a group never call its ``matmat``: they reduce-scatter
``local_matmat`` to the rows each rank keeps (:mod:`fastspec.linalg.sharded`). An operator
without ``local_matmat`` under a group is taken as replicated (the same on every rank).

Block products are the primitive because every consumer here (block Lanczos, batched SLQ probes,
Hutch++) applies the operator to several vectors at once, and because batched Hessian-vector
products are much cheaper per vector than one at a time.

:func:`aslinearoperator` adapts dense tensors and numpy arrays, callables acting on blocks,
scipy ``LinearOperator``\\ s and sparse matrices, and any object with a compatible ``matmat`` or
``@`` (curvlinops' PyTorch operators, for instance).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from fastspec._checks import check_bool, check_int

__all__ = [
    "CallableOperator",
    "DenseOperator",
    "LinearOperator",
    "MatmulOperator",
    "ScipyOperator",
    "aslinearoperator",
]

_REAL_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _as_torch_dtype(dtype: Any, *, name: str) -> torch.dtype:
    """Map a torch or numpy dtype (or a type) to a real floating ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        try:
            out = torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype
        except TypeError as exc:
            raise TypeError(f"{name}: cannot interpret {dtype!r} as a dtype") from exc
    if out not in _REAL_FLOATING:
        raise TypeError(
            f"{name} must be a real floating dtype (float16/bfloat16/float32/float64), got {out}"
        )
    return out


def _as_device(device: torch.device | str | None) -> torch.device:
    """``torch.device`` with the index filled in (``"cuda"`` → ``cuda:<current>``).

    So that it compares equal to the device of the tensors it produces.
    """
    dev = torch.device("cpu" if device is None else device)
    if dev.type not in ("cpu", "meta") and dev.index is None:
        dev = torch.empty(0, device=dev).device
    return dev


def _as_shape(shape: Any, *, name: str) -> tuple[int, int]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Iterable):
        raise TypeError(f"{name} must be a pair (P, P), got {shape!r}")
    items = tuple(shape)
    if len(items) != 2:
        raise ValueError(f"{name} must be a pair (P, P), got {shape!r}")
    rows, cols = (check_int(f"{name}[{i}]", v) for i, v in enumerate(items))
    if rows != cols:
        raise ValueError(f"{name}: the operator must be square, got shape {(rows, cols)}")
    if rows < 1:
        raise ValueError(f"{name}: the operator must have P >= 1, got shape {(rows, cols)}")
    return rows, cols


class LinearOperator(abc.ABC):
    """A square linear operator ``A`` of shape ``(P, P)`` acting on torch tensors.

    Subclasses set ``shape``, ``dtype`` and ``device`` and implement :meth:`matmat`.
    The algorithms in :mod:`fastspec.linalg` that need symmetry (``eigsh``, ``slq``) assume it;
    :func:`fastspec.linalg.trace` does not.

    Attributes:
        shape: ``(P, P)``.
        dtype: real floating dtype of inputs and outputs.
        device: device of inputs and outputs.
    """

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    @abc.abstractmethod
    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Apply the operator to a block.

        Args:
            V: ``[P, B]`` block, ``self.dtype`` on ``self.device``, in any memory layout
                (eigsh passes the transpose of its contiguous basis rows; the adapters of
                foreign code below make it contiguous first).

        Returns:
            ``A @ V``, ``[P, B]``.
        """

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Apply the operator to one vector ``v`` of shape ``[P]``; returns ``[P]``."""
        return self.matmat(v.reshape(-1, 1)).reshape(-1)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1:
            return self.matvec(x)
        if x.dim() == 2:
            return self.matmat(x)
        raise ValueError(f"operator @ x: x must be [P] or [P, B], got shape {tuple(x.shape)}")

    @property
    def size(self) -> int:
        """``P``, the dimension the operator acts on."""
        return self.shape[0]

    def to_dense(self, *, block_size: int = 256) -> torch.Tensor:
        """Materialise the ``[P, P]`` matrix by applying the operator to identity blocks.

        Costs ``P`` matrix-vector products and ``P**2`` elements of memory.

        Args:
            block_size: columns of the identity applied per :meth:`matmat` call.
        """
        block_size = check_int("block_size", block_size, minimum=1)
        P = self.shape[0]
        out = torch.empty(P, P, dtype=self.dtype, device=self.device)
        for start in range(0, P, block_size):
            stop = min(P, start + block_size)
            E = torch.zeros(P, stop - start, dtype=self.dtype, device=self.device)
            E[start:stop].fill_diagonal_(1.0)
            out[:, start:stop] = checked_matmat(self, E)
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, device={self.device})"
        )


class DenseOperator(LinearOperator):
    """An explicit ``[P, P]`` matrix.

    Args:
        matrix: ``[P, P]`` real floating tensor.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        if not isinstance(matrix, torch.Tensor):
            raise TypeError(f"matrix must be a torch.Tensor, got {type(matrix).__name__}")
        if matrix.dim() != 2:
            raise ValueError(f"op: a dense operator must be 2-D, got shape {tuple(matrix.shape)}")
        self.shape = _as_shape(matrix.shape, name="op")
        self.dtype = _as_torch_dtype(matrix.dtype, name="op.dtype")
        self.device = matrix.device
        self.matrix = matrix

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A @ V`` for ``V`` ``[P, B]``."""
        return self.matrix @ V

    def to_dense(self, *, block_size: int = 256) -> torch.Tensor:
        """The matrix itself."""
        return self.matrix

    def asymmetry(self) -> float:
        """``max |A - Aᵀ| / max |A|`` (0 for an exactly symmetric matrix).

        Computed by row blocks, so that no second ``[P, P]`` matrix is allocated.
        """
        A = self.matrix
        scale = max(float(A.amax()), -float(A.amin()))
        if scale == 0.0 or not math.isfinite(scale):
            return 0.0 if scale == 0.0 else math.inf
        P, rows = A.shape[0], max(1, 2**22 // A.shape[0])
        worst = max(
            float((A[lo : lo + rows] - A[:, lo : lo + rows].mT).abs().max())
            for lo in range(0, P, rows)
        )
        return worst / scale


class CallableOperator(LinearOperator):
    """A Python callable as an operator.

    Args:
        fn: the product. With ``batched=True`` (default) it maps a ``[P, B]`` block to
            ``[P, B]``; with ``batched=False`` it maps a ``[P]`` vector to ``[P]`` and is
            called once per column.
        shape: ``(P, P)``.
        dtype: dtype ``fn`` reads and writes (default: ``torch.get_default_dtype()``).
        device: device ``fn`` reads and writes (default: CPU).
        batched: whether ``fn`` accepts blocks.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        shape: tuple[int, int],
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        batched: bool = True,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.shape = _as_shape(shape, name="shape")
        self.dtype = _as_torch_dtype(
            torch.get_default_dtype() if dtype is None else dtype, name="dtype"
        )
        self.device = _as_device(device)
        self.batched = check_bool("batched", batched)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A @ V`` for ``V`` ``[P, B]``."""
        V = V.contiguous()
        if self.batched:
            return self.fn(V)
        return torch.stack([self.fn(V[:, j]) for j in range(V.shape[1])], dim=1)


class ScipyOperator(LinearOperator):
    """A scipy ``LinearOperator`` (or sparse matrix) evaluated on the host through numpy.

    Args:
        op: a ``scipy.sparse.linalg.LinearOperator``.
        dtype: torch dtype of the adapter (default: ``op.dtype`` mapped to torch).
        device: device of the adapter's inputs/outputs (default: CPU); data goes to the host
            for every product.
    """

    def __init__(
        self,
        op: Any,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.op = op
        self.shape = _as_shape(op.shape, name="op.shape")
        self.dtype = _as_torch_dtype(op.dtype if dtype is None else dtype, name="dtype")
        self.device = _as_device(device)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A @ V`` for ``V`` ``[P, B]``."""
        out = np.asarray(self.op.matmat(V.detach().cpu().numpy()))
        return torch.as_tensor(out).to(dtype=self.dtype, device=self.device)


class MatmulOperator(LinearOperator):
    """Any object with a torch-compatible ``matmat(V)`` or ``obj @ V`` (e.g. curvlinops).

    Args:
        obj: the object; ``obj.matmat`` is used when present, else ``obj @ V``.
        shape: ``(P, P)`` (default: ``obj.shape``).
        dtype: default ``obj.dtype``.
        device: default ``obj.device`` or CPU.
    """

    def __init__(
        self,
        obj: Any,
        *,
        shape: tuple[int, int] | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if shape is None:
            shape = getattr(obj, "shape", None)
            if shape is None:
                raise ValueError(
                    f"shape: {type(obj).__name__} has no .shape; pass shape=(P, P) explicitly"
                )
        self.obj = obj
        self.shape = _as_shape(shape, name="shape")
        if dtype is None:
            dtype = getattr(obj, "dtype", None)
        self.dtype = _as_torch_dtype(
            torch.get_default_dtype() if dtype is None else dtype, name="dtype"
        )
        if device is None:
            device = getattr(obj, "device", None)
        self.device = _as_device(device)
        self._use_matmat = callable(getattr(obj, "matmat", None))

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A @ V`` for ``V`` ``[P, B]``."""
        V = V.contiguous()
        if self._use_matmat:
            return self.obj.matmat(V)
        return self.obj @ V


def _is_scipy_linear_operator(obj: Any) -> bool:
    try:
        import scipy.sparse.linalg as spla
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return isinstance(obj, spla.LinearOperator)


def _is_scipy_sparse(obj: Any) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover
        return False
    return bool(sp.issparse(obj))


def aslinearoperator(
    obj: Any,
    *,
    shape: tuple[int, int] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> LinearOperator:
    """Adapt ``obj`` to the :class:`LinearOperator` contract.

    Accepted:

    - a :class:`LinearOperator` (returned unchanged; ``shape``/``dtype``/``device``, if given,
      must match it);
    - a ``[P, P]`` ``torch.Tensor`` or numpy array (converted to ``dtype``/``device`` if given);
    - a scipy sparse matrix or ``scipy.sparse.linalg.LinearOperator`` (products go through the
      host);
    - any object with a ``matmat`` method or ``@`` taking a ``[P, B]`` torch tensor (curvlinops'
      PyTorch operators); ``shape``/``dtype``/``device`` default to its attributes;
    - a callable mapping a ``[P, B]`` block to ``[P, B]`` (``shape`` required). A callable that
      only takes vectors must be wrapped as ``CallableOperator(fn, ..., batched=False)``.

    Args:
        obj: the operator-like object.
        shape: ``(P, P)``.
        dtype: real floating dtype the operator reads and writes.
        device: device the operator reads and writes.

    Returns:
        A :class:`LinearOperator`.

    Raises:
        TypeError: ``obj`` is of an unsupported kind or ``dtype`` is not real floating.
        ValueError: the shape is missing, not 2-D or not square, or contradicts ``obj``.
    """
    if isinstance(obj, LinearOperator):
        for arg, want, have in (
            ("shape", None if shape is None else tuple(int(s) for s in shape), obj.shape),
            ("dtype", dtype, obj.dtype),
            ("device", None if device is None else _as_device(device), obj.device),
        ):
            if want is not None and want != have:
                raise ValueError(f"{arg}={want} contradicts the operator's {arg} {have}")
        return obj
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(obj)
    if isinstance(obj, torch.Tensor):
        if obj.dim() != 2:
            raise ValueError(f"op: a dense operator must be 2-D, got shape {tuple(obj.shape)}")
        if shape is not None and tuple(int(s) for s in shape) != tuple(obj.shape):
            raise ValueError(f"shape={tuple(shape)} contradicts the tensor's {tuple(obj.shape)}")
        if dtype is not None:
            obj = obj.to(_as_torch_dtype(dtype, name="dtype"))
        if device is not None:
            obj = obj.to(_as_device(device))
        return DenseOperator(obj)
    if _is_scipy_sparse(obj):
        import scipy.sparse.linalg as spla

        obj = spla.aslinearoperator(obj)
    if _is_scipy_linear_operator(obj):
        if shape is not None and tuple(int(s) for s in shape) != tuple(obj.shape):
            raise ValueError(f"shape={tuple(shape)} contradicts the operator's {obj.shape}")
        return ScipyOperator(obj, dtype=dtype, device=device)
    if callable(getattr(obj, "matmat", None)) or hasattr(type(obj), "__matmul__"):
        return MatmulOperator(obj, shape=shape, dtype=dtype, device=device)
    if callable(obj):
        if shape is None:
            raise ValueError("shape: a callable operator needs shape=(P, P)")
        return CallableOperator(obj, shape=shape, dtype=dtype, device=device)
    raise TypeError(
        f"op: cannot use a {type(obj).__name__} as a linear operator (expected a LinearOperator, "
        "a 2-D tensor or array, a scipy LinearOperator, an object with matmat/@, or a callable)"
    )


def checked_matmat(op: LinearOperator, V: torch.Tensor, *, local: bool = False) -> torch.Tensor:
    """``op.matmat(V)`` (``op.local_matmat(V)`` with ``local``), the output's type, shape, dtype and device checked.

    Finiteness is not checked here (that would synchronise with the device); the algorithms
    check it once per block step.

    Raises:
        TypeError: the output is not a tensor or has the wrong dtype or device.
        ValueError: the output has the wrong shape.
    """
    name = "local_matmat" if local else "matmat"
    out = op.local_matmat(V) if local else op.matmat(V)  # type: ignore[attr-defined]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"op.{name} returned {type(out).__name__}, expected a torch.Tensor")
    if out.shape != V.shape:
        if out.dim() == 1 and V.dim() == 2 and V.shape[1] == 1 and out.shape[0] == V.shape[0]:
            out = out.reshape(V.shape)
        else:
            raise ValueError(
                f"op.{name} returned shape {tuple(out.shape)} for an input of shape "
                f"{tuple(V.shape)}; a callable that only takes vectors must be wrapped as "
                "CallableOperator(fn, shape=..., batched=False)"
            )
    if out.dtype != op.dtype:
        raise TypeError(f"op.{name} returned dtype {out.dtype}, but the operator says {op.dtype}")
    if out.device != op.device and not (
        out.device.type == op.device.type and op.device.index is None
    ):
        raise TypeError(
            f"op.{name} returned a tensor on {out.device}, but the operator says {op.device}"
        )
    return out


def safe_scale(peak: float, dtype: torch.dtype, P: int) -> float:
    """``1``, or the power of two that brings an operator's largest entry ``peak`` near 1.

    Sums of squares of length-``P`` vectors overflow (or underflow to 0) long before their
    entries do: products reaching ``√(max / P)`` (about 1e16 in float32 at P = 10⁶) would be
    reported as inf, and tiny ones would get residuals of exactly 0. Outside that window the
    solvers work on ``2^e A``: scaling by a power of two is exact, so the run is the same run,
    and eigenvalues and residuals are scaled back at the end.
    """
    info = torch.finfo(dtype)
    if peak == 0.0 or 1024.0 * math.sqrt(info.tiny) <= peak <= math.sqrt(info.max / (64.0 * P)):
        return 1.0
    return math.ldexp(1.0, -math.frexp(peak)[1])


def apply_scale(W: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale · W`` for a power of two ``scale`` from :func:`safe_scale` (``W`` itself at 1).

    The scale of a tiny float32 operator (``≥ 2¹²⁸`` when its entries are subnormal) does not
    fit in float32, nor does that of a huge one in its normal range: such a scale is applied as
    two powers of two, each representable, which is just as exact.
    """
    if scale == 1.0:
        return W
    info = torch.finfo(W.dtype)
    if info.tiny <= scale <= info.max:
        return W * scale
    half = math.ldexp(1.0, (math.frexp(scale)[1] - 1) // 2)
    return W * half * (scale / half)


def check_symmetric(A: LinearOperator) -> None:
    """Refuse a dense operator that is not symmetric (others cannot be checked cheaply).

    Raises:
        ValueError: the matrix holds NaN or inf, or ``max|A − Aᵀ| / max|A| > √ε``.
    """
    if isinstance(A, DenseOperator):
        asym = A.asymmetry()
        eps = torch.finfo(A.dtype).eps
        if not math.isfinite(asym):
            raise ValueError("op contains NaN or inf")
        if asym > math.sqrt(eps):
            raise ValueError(
                f"op is not symmetric: max|A - Aᵀ| / max|A| = {asym:.3g} "
                f"(allowed {math.sqrt(eps):.3g}); eigsh needs a symmetric operator"
            )
