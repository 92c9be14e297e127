"""What :func:`~fastspec.linalg.eigsh` returns and reports: the result, progress, the warning.

:func:`make_result` turns final Ritz values and absolute residuals into relative residuals and
``converged`` flags, and warns (:class:`ConvergenceWarning`) when a pair missed ``tol``; nothing
is dropped silently.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch

from fastspec._checks import AsDict
from fastspec.linalg.lanczos.storage import dtype_name
from fastspec.linalg.operator import LinearOperator
from fastspec.linalg.sharded import Sharding

__all__ = [
    "ConvergenceWarning",
    "EigshProgress",
    "EigshResult",
    "ProgressArg",
    "Reporter",
    "make_result",
    "warn_unconverged",
]


class ConvergenceWarning(UserWarning):
    """Some requested eigenpairs did not reach the tolerance; see ``result.converged``."""


@dataclass(frozen=True)
class EigshProgress:
    """A progress report, passed to a ``progress`` callback at every convergence check.

    Attributes:
        num_matvecs: operator-vector products so far.
        num_converged: wanted pairs whose residual estimate is below the tolerance.
        k: pairs requested.
        num_restarts: restarts so far.
        basis_size: vectors stored (locked + active + pending block).
    """

    num_matvecs: int
    num_converged: int
    k: int
    num_restarts: int
    basis_size: int


ProgressArg = Union[bool, Callable[[EigshProgress], Any]]


@dataclass(frozen=True)
class EigshResult(AsDict):
    """Eigenpairs from :func:`eigsh`.

    Attributes:
        eigenvalues: ``[K]``, ordered as ``which`` asks: ``"LA"`` descending, ``"SA"``
            ascending, ``"LM"`` by descending magnitude, ``"BE"`` descending.
        eigenvectors: ``[P, K]`` (column ``i`` belongs to ``eigenvalues[i]``) or ``None``. Under
            a process group, this rank's rows ``[sharding.start, sharding.stop)`` of them
            (see :meth:`gather_eigenvectors`).
        residuals: ``[K]`` float64, ``‖A v − λ v‖ / max(|λ|, √ε ‖A‖)`` recomputed from the
            returned vectors (``ε`` the dtype's machine epsilon, ``‖A‖`` estimated by the
            largest Ritz value in magnitude; the floor only matters for eigenvalues near 0).
        converged: ``[K]`` bool, ``residuals <= tol``.
        num_matvecs: operator-vector products, including the final residual check.
        num_restarts: thick restarts performed.
        which: the ``which`` argument.
        tol: the ``tol`` argument.
        block_size: block size used.
        max_basis: basis cap used (vectors of length ``P``).
        method: ``"block-lanczos"`` or ``"dense"`` (small problems, see :func:`eigsh`).
        basis_dtype: the dtype the Krylov basis was stored in (``"float64"``, ``"float32"`` or
            ``"bfloat16"``; the operator's dtype on the dense path, which stores no basis).
        basis_spilled: whether the basis lived in a memory-mapped file (``basis_dir``).
        sharding: ``None`` on one process; under a process group, which rows of ``P`` this
            rank's ``eigenvectors`` hold (a :class:`~fastspec.linalg.sharded.Sharding`). Every
            other field is the same on every rank.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor | None = field(metadata={"serialize": False})
    residuals: torch.Tensor
    converged: torch.Tensor
    num_matvecs: int
    num_restarts: int
    which: str
    tol: float
    block_size: int
    max_basis: int
    method: str
    basis_dtype: str = "float64"
    basis_spilled: bool = False
    sharding: Sharding | None = field(
        default=None, repr=False, compare=False, metadata={"serialize": False}
    )

    @property
    def k(self) -> int:
        """Number of pairs returned."""
        return int(self.eigenvalues.shape[0])

    @property
    def num_converged(self) -> int:
        """Number of pairs with ``residual <= tol``."""
        return int(self.converged.sum())

    @property
    def all_converged(self) -> bool:
        """Whether every returned pair converged."""
        return bool(self.converged.all())

    def gather_eigenvectors(
        self, columns: Sequence[int] | None = None, *, dst: int | None = None
    ) -> torch.Tensor | None:
        """Whole eigenvectors ``[P, K']`` from the rows every rank holds.

        On one process this is ``eigenvectors[:, columns]``. Under a process group every rank
        must call it (a collective); it moves ``P · K'`` elements to each receiving rank.

        Args:
            columns: which eigenvectors (indices into ``eigenvalues``); default all.
            dst: ``None`` gathers on every rank; a rank of the group gathers there only and
                the other ranks get ``None``.

        Raises:
            ValueError: the result holds no eigenvectors (``return_eigenvectors=False``).
        """
        if self.eigenvectors is None:
            raise ValueError(
                "eigenvectors: none returned; call eigsh with return_eigenvectors=True"
            )
        X = self.eigenvectors
        if columns is not None:
            X = X[:, torch.as_tensor(list(columns), dtype=torch.long, device=X.device)]
        if self.sharding is None:
            return X
        return self.sharding.gather(X, dst=dst)


class Reporter:
    """Dispatch progress reports to a callback, tqdm, or stderr."""

    def __init__(self, progress: ProgressArg, k: int) -> None:
        self.callback: Callable[[EigshProgress], Any] | None = None
        self.bar: Any = None
        if callable(progress):
            self.callback = progress
        elif progress:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=k, desc="eigsh", unit="pair")
            except ImportError:
                self.callback = self._print

    @staticmethod
    def _print(p: EigshProgress) -> None:
        print(
            f"eigsh: {p.num_converged}/{p.k} converged, {p.num_matvecs} matvecs, "
            f"{p.num_restarts} restarts, basis {p.basis_size}",
            file=sys.stderr,
        )

    def __call__(self, p: EigshProgress) -> None:
        """Pass one report on."""
        if self.callback is not None:
            self.callback(p)
        if self.bar is not None:
            self.bar.n = p.num_converged
            self.bar.set_postfix(matvecs=p.num_matvecs, restarts=p.num_restarts, refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        """Close the progress bar, if any."""
        if self.bar is not None:
            self.bar.close()


def make_result(
    theta: np.ndarray,
    res_abs: np.ndarray,
    eigvecs: torch.Tensor | None,
    *,
    anorm: float,
    eps: float,
    A: LinearOperator,
    num_matvecs: int,
    num_restarts: int,
    which: str,
    tol: float,
    block_size: int,
    max_basis: int,
    method: str,
    sharding: Sharding | None = None,
    basis_dtype: str | None = None,
    basis_spilled: bool = False,
) -> EigshResult:
    """The result from final Ritz values and absolute residuals (relative residuals, flags).

    ``basis_dtype`` defaults to the operator's dtype.
    """
    scale = np.maximum(np.abs(theta), math.sqrt(eps) * anorm)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, res_abs / np.where(scale > 0, scale, 1.0), res_abs)
    converged = rel <= tol
    dev = A.device
    return EigshResult(
        eigenvalues=torch.as_tensor(theta.copy(), dtype=A.dtype, device=dev),
        eigenvectors=eigvecs,
        residuals=torch.as_tensor(rel.copy(), dtype=torch.float64, device=dev),
        converged=torch.as_tensor(converged.copy(), dtype=torch.bool, device=dev),
        num_matvecs=num_matvecs,
        num_restarts=num_restarts,
        which=which,
        tol=float(tol),
        block_size=block_size,
        max_basis=max_basis,
        method=method,
        basis_dtype=dtype_name(A.dtype) if basis_dtype is None else basis_dtype,
        basis_spilled=basis_spilled,
        sharding=sharding,
    )


def warn_unconverged(result: EigshResult, *, stacklevel: int) -> None:
    """Warn (:class:`ConvergenceWarning`) when some returned pair missed the tolerance."""
    if result.all_converged:
        return
    bad = result.k - result.num_converged
    warnings.warn(
        f"eigsh: {bad} of {result.k} eigenpairs did not reach tol={result.tol:g} "
        f"(worst relative residual {float(result.residuals.max()):.3g}, {result.num_matvecs} "
        f"matvecs, {result.num_restarts} restarts); they are marked converged=False. Raise "
        "max_restarts or max_basis, or loosen tol (float32 cannot resolve eigenvalues much "
        "smaller than ‖A‖ to relative tolerances near its epsilon).",
        ConvergenceWarning,
        stacklevel=stacklevel + 1,
    )
