"""Compact representations of the per-sample gradients of one parameter over a chunk of samples.

Each representation stands for the ``[n, p]`` matrix G of per-sample gradients (row i: sample
i's gradient of the parameter, flattened in the parameter's layout) and gives what the Gram and
covariance code needs without necessarily forming G:

- :class:`Dense`: G itself (norm layers, biases, the torch.func fallback, or a weight whose
  per-sample gradients are cheaper to form than to avoid).
- :class:`Outer`: a weight used as a linear map at T positions (Linear on sequences, Conv as
  im2col, in ``R`` independent groups): G_i = Σ_t g_it a_itᵀ per group, from the layer inputs
  a [n, R, T, D_in] and output gradients g [n, R, T, D_out]. Its Gram block is
  Σ_r Σ_{t,s} (a_it·a_js)(g_it·g_js) (:func:`fastspec.ops.seq_gram`; for T = 1 the two GEMMs
  (A Aᵀ)∘(G Gᵀ)).
- :class:`Index`: an embedding table: G_i = Σ_t e_{idx_it} g_itᵀ, Gram block
  Σ_{t,s} [idx_it = idx_js] (g_it·g_js).

Every representation offers ``materialise`` ([n, p]), ``select`` (a range of samples), ``gram`` with
another chunk's representation of the same parameter ([n, m]), ``rmatmul`` (Uᵀ G, [B, p]) and
``matmul`` (G Wᵀ, [n, B]) for the matrix-free covariance operator, and ``costs`` to choose
between the implicit form and materialising.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch

from fastspec import ops, reference

__all__ = ["Dense", "Feature", "Index", "Outer"]

_TILE = 2**24  # elements of any temporary tile


class Feature(abc.ABC):
    """Per-sample gradients G [n, p] of one parameter over a chunk of n samples."""

    n: int
    numel: int

    @abc.abstractmethod
    def materialise(self) -> torch.Tensor:
        """G [n, p]."""

    @abc.abstractmethod
    def gram(self, other: Feature) -> torch.Tensor:
        """G Hᵀ [n, m] with ``other`` (H [m, p]) of the same parameter and kind."""

    @abc.abstractmethod
    def rmatmul(self, U: torch.Tensor) -> torch.Tensor:
        """Uᵀ G [B, p] for U [n, B]."""

    @abc.abstractmethod
    def matmul(self, W: torch.Tensor) -> torch.Tensor:
        """G Wᵀ [n, B] for W [B, p]."""

    @abc.abstractmethod
    def select(self, lo: int, hi: int) -> Feature:
        """The same parameter's gradients for samples ``lo:hi``."""

    def costs(self, num_samples: int) -> float:
        """Flops of the full N × N Gram in this form (N = num_samples)."""
        return float(num_samples) ** 2 * self.numel

    def dense_costs(self, num_samples: int) -> tuple[float, float]:
        """(flops, bytes) of the N × N Gram when materialised: N²·p, N·p elements (8 bytes each.

        float64, an upper bound).
        """
        N = float(num_samples)
        return N * N * self.numel, N * self.numel * 8

    def dense(self) -> Dense:
        """This feature (already dense)."""
        return Dense(self.materialise())


def _seq_gram(
    a_i: torch.Tensor, g_i: torch.Tensor, a_j: torch.Tensor, g_j: torch.Tensor
) -> torch.Tensor:
    """Σ_{t,s} (a_it·a_js)(g_it·g_js).

    On CPU the fused native kernel from T·S >= 64 position pairs, where it beat the two-GEMM twin
    (benchmarks/results/ops_seq_gram.md: 1.5× at T = 8, 1.25× at T = 16, and without the twin's
    [rows·T, N_j·S] tiles), the twin below (BLAS wins at T <= 4); on CUDA the twin (cuBLAS; the CUDA
    kernel has not been timed on a GPU).
    """
    if a_i.device.type == "cpu" and a_i.shape[1] * a_j.shape[1] >= 64:
        return ops.seq_gram(a_i, g_i, a_j, g_j)
    return reference.seq_gram(a_i, g_i, a_j, g_j)


@dataclass(eq=False)
class Dense(Feature):
    """G [n, p] held explicitly."""

    G: torch.Tensor

    def __post_init__(self) -> None:
        self.n, self.numel = self.G.shape

    def materialise(self) -> torch.Tensor:
        """As :meth:`Feature.materialise`."""
        return self.G

    def select(self, lo: int, hi: int) -> Dense:
        """As :meth:`Feature.select`."""
        return Dense(self.G[lo:hi])

    def gram(self, other: Feature) -> torch.Tensor:
        """As :meth:`Feature.gram`."""
        return self.G @ other.materialise().T

    def rmatmul(self, U: torch.Tensor) -> torch.Tensor:
        """As :meth:`Feature.rmatmul`."""
        return U.T @ self.G

    def matmul(self, W: torch.Tensor) -> torch.Tensor:
        """As :meth:`Feature.matmul`."""
        return self.G @ W.T

    def dense(self) -> Dense:
        """This feature (already dense)."""
        return self


@dataclass(eq=False)
class Outer(Feature):
    """Weight gradients Σ_t g_it a_itᵀ in R groups; layout [R, D_out, D_in] (Linear, Conv).

    Attributes:
        a: [n, R, T, D_in] layer inputs (im2col columns for convolutions).
        g: [n, R, T, D_out] gradients of the per-sample losses with respect to the outputs.
    """

    a: torch.Tensor
    g: torch.Tensor

    def __post_init__(self) -> None:
        n, R, _, d_in = self.a.shape
        self.n, self.numel = n, R * d_in * self.g.shape[-1]

    def materialise(self) -> torch.Tensor:
        """As :meth:`Feature.materialise`."""
        return torch.einsum("nrto,nrti->nroi", self.g, self.a).reshape(self.n, -1)

    def select(self, lo: int, hi: int) -> Outer:
        """As :meth:`Feature.select`."""
        return Outer(self.a[lo:hi], self.g[lo:hi])

    def gram(self, other: Feature) -> torch.Tensor:
        """As :meth:`Feature.gram`."""
        if not isinstance(other, Outer):
            return self.materialise() @ other.materialise().T
        T = self.a.shape[2]
        out = None
        for r in range(self.a.shape[1]):
            a_i, g_i, a_j, g_j = self.a[:, r], self.g[:, r], other.a[:, r], other.g[:, r]
            if T == 1 and a_j.shape[1] == 1:  # (A Aᵀ)∘(G Gᵀ): two GEMMs, BLAS is at the limit
                block = (a_i[:, 0] @ a_j[:, 0].T).mul_(g_i[:, 0] @ g_j[:, 0].T)
            else:
                block = _seq_gram(a_i, g_i, a_j, g_j)
            out = block if out is None else out.add_(block)
        assert out is not None
        return out

    def rmatmul(self, U: torch.Tensor) -> torch.Tensor:
        """As :meth:`Feature.rmatmul`."""
        # Σ_i u_ib Σ_t g_it a_itᵀ: scale g by U, then one batched GEMM over (b, r)
        B = U.shape[1]
        gu = torch.einsum("nrto,nb->brnto", self.g, U).flatten(2, 3)  # [B, R, n·T, D_out]
        a = self.a.permute(1, 0, 2, 3).flatten(1, 2)  # [R, n·T, D_in]
        return torch.matmul(gu.transpose(-1, -2), a).reshape(B, -1)

    def matmul(self, W: torch.Tensor) -> torch.Tensor:
        """As :meth:`Feature.matmul`."""
        # (G Wᵀ)_ib = Σ_{r,t} g_itᵀ W_b a_it
        n, R, T, d_in = self.a.shape
        B = W.shape[0]
        Wr = W.reshape(B, R, -1, d_in)
        out = torch.zeros(n, B, dtype=W.dtype, device=W.device)
        step = max(1, _TILE // max(1, n * T * Wr.shape[2]))
        for lo in range(0, B, step):
            Wa = torch.einsum("broi,nrti->bnrto", Wr[lo : lo + step], self.a)
            out[:, lo : lo + step] = torch.einsum("bnrto,nrto->nb", Wa, self.g)
        return out

    def costs(self, num_samples: int) -> float:
        """As :meth:`Feature.costs`."""
        _, R, T, d_in = self.a.shape
        N = float(num_samples)
        return N * N * R * T * T * (d_in + self.g.shape[-1])

    def dense_costs(self, num_samples: int) -> tuple[float, float]:
        """N·T·p flops to form the gradients and N²·p for their Gram; N·p elements."""
        flops, nbytes = super().dense_costs(num_samples)
        return flops + float(num_samples) * self.a.shape[2] * self.numel, nbytes


@dataclass(eq=False)
class Index(Feature):
    """Embedding-table gradients Σ_t e_{idx_it} g_itᵀ; layout [V, D].

    Attributes:
        idx: [n, T] int64 rows looked up (positions at the padding index carry g = 0).
        g: [n, T, D] gradients with respect to the looked-up rows.
        num_embeddings: V.
    """

    idx: torch.Tensor
    g: torch.Tensor
    num_embeddings: int

    def __post_init__(self) -> None:
        self.n = self.idx.shape[0]
        self.numel = self.num_embeddings * self.g.shape[-1]

    def select(self, lo: int, hi: int) -> Index:
        """As :meth:`Feature.select`."""
        return Index(self.idx[lo:hi], self.g[lo:hi], self.num_embeddings)

    def materialise(self) -> torch.Tensor:
        """As :meth:`Feature.materialise`."""
        n, T, D = self.g.shape
        out = torch.zeros(n, self.num_embeddings, D, dtype=self.g.dtype, device=self.g.device)
        out.scatter_add_(1, self.idx[..., None].expand(n, T, D), self.g)
        return out.reshape(n, -1)

    def gram(self, other: Feature) -> torch.Tensor:
        """As :meth:`Feature.gram`."""
        if not isinstance(other, Index):
            return self.materialise() @ other.materialise().T
        n, T, D = self.g.shape
        m, S, _ = other.g.shape
        out = torch.empty(n, m, dtype=self.g.dtype, device=self.g.device)
        g_right = other.g.reshape(m * S, D).T
        idx_right = other.idx.reshape(1, m * S)
        rows = max(1, _TILE // max(1, T * m * S))
        for lo in range(0, n, rows):
            hi = min(n, lo + rows)
            gg = self.g[lo:hi].reshape(-1, D) @ g_right
            gg *= self.idx[lo:hi].reshape(-1, 1) == idx_right
            out[lo:hi] = gg.view(hi - lo, T, m, S).sum(dim=(1, 3))
        return out

    def rmatmul(self, U: torch.Tensor) -> torch.Tensor:
        """As :meth:`Feature.rmatmul`."""
        n, T, D = self.g.shape
        B = U.shape[1]
        out = torch.zeros(B, self.num_embeddings, D, dtype=U.dtype, device=U.device)
        gu = torch.einsum("ntd,nb->bntd", self.g, U).reshape(B, n * T, D)
        out.index_add_(1, self.idx.reshape(-1), gu)
        return out.reshape(B, -1)

    def matmul(self, W: torch.Tensor) -> torch.Tensor:
        """As :meth:`Feature.matmul`."""
        D = self.g.shape[-1]
        rows = W.reshape(W.shape[0], self.num_embeddings, D)[:, self.idx]  # [B, n, T, D]
        return torch.einsum("bntd,ntd->nb", rows, self.g)

    def costs(self, num_samples: int) -> float:
        """As :meth:`Feature.costs`."""
        _, T, D = self.g.shape
        return float(num_samples) ** 2 * T * T * D
