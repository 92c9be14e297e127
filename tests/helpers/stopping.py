"""A matrix operator that raises after a number of products: a stand-in for a killed run."""

from __future__ import annotations

import torch

from fastspec.linalg import LinearOperator


class Stopping(LinearOperator):
    """``A @ V``, raising ``RuntimeError("stop")`` once more than ``after`` products were asked."""

    def __init__(self, A: torch.Tensor, after: int | None) -> None:
        self.shape, self.dtype, self.device = tuple(A.shape), A.dtype, A.device
        self.A, self.after, self.count = A, after, 0

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.count += V.shape[1]
        if self.after is not None and self.count > self.after:
            raise RuntimeError("stop")
        return self.A @ V
