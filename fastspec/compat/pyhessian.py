"""PyHessian's ``hessian`` class on fastspec's solvers.

change ``from pyhessian import hessian`` to ``from fastspec.compat.pyhessian import hessian`` and
keep the calls.

=================================  ===================================================================
PyHessian 0.1                      here
=================================  ===================================================================
``eigenvalues(maxIter, tol,        ``top_n`` eigenpairs of largest magnitude (what power iteration
top_n)``                           with deflation converges to) by :func:`fastspec.linalg.eigsh`,
                                   every pair with relative residual <= ``tol``, so every eigenvalue
                                   is within ``tol`` relative of the exact one (Bauer-Fike). Returns
                                   ``(list of floats, list of lists of per-parameter tensors)``,
                                   by descending magnitude, eigenvectors of unit norm.
``trace(maxIter, tol)``            Hutchinson's estimator (Rademacher probes, one per product on
                                   CPU, in blocks of 8 elsewhere) with
                                   PyHessian's stopping rule; returns the list of per-probe
                                   ``vᵀHv`` (their mean is the estimate).
``density(iter, n_v)``             stochastic Lanczos quadrature, :func:`fastspec.linalg.slq`
                                   (fully reorthogonalised); returns ``(eigen_list_full,
                                   weight_list_full)``: ``n_v`` lists of nodes and of weights.
=================================  ===================================================================

The matrix is the Hessian of the full-data loss ``(1/N) Σ ℓ`` at the model's parameters (those
with ``requires_grad``), in eval mode, exactly as PyHessian defines it: PyHessian weights each
batch's Hessian by its sample count, so an uneven last batch is handled correctly by both, and
the two coincide for any batching (tested). The Hessian-vector product is PyHessian's own,
reverse-over-reverse through a gradient graph kept between products (for ``dataloader=`` too,
one graph per batch, as long as they fit in ``GRAPH_CACHE_BYTES``; see
:class:`fastspec.curvature.HessianOperator`). Differences, all deliberate:

* the model is never modified: PyHessian calls ``model.eval()`` on it and leaves ``.grad``
  populated (with a graph) after ``data=``; fastspec evaluates in eval mode on copies.
* ``cuda`` must agree with where the model lives (fastspec computes on the model's device);
  PyHessian moves the data to ``'cuda'`` and fails later if the model is not there.
* ``eigenvalues``: PyHessian's ``tol`` bounds the relative change of the Rayleigh quotient
  between two power steps, not the error (measured on the digits MLP in
  ``benchmarks/results/compat_vs_originals.md``); here ``tol`` bounds each pair's residual.
  PyHessian also normalises by ``‖v‖ + 1e-6``, which biases its eigenvalues low by the factor
  ``(1 + 1e-6)⁻²`` at any tolerance (tested). ``maxIter`` is checked but the solver runs to
  ``tol`` (unconverged pairs raise :class:`fastspec.linalg.ConvergenceWarning`). Every real
  ``tol`` PyHessian accepts is accepted: it is clamped to ``[TIGHTEST_TOL, 0.5]`` (so ``tol=0``,
  "run every iteration" there, asks for the tightest residual the dtype allows).
* ``trace``: any real ``tol`` and any ``maxIter >= 0``, as in PyHessian (``tol <= 0`` runs all
  ``maxIter`` probes). PyHessian's stopping test divides by ``trace + 1e-6`` without an
  absolute value, so a negative trace stops it after two probes; here the denominator is
  ``|trace| + 1e-6``.
* ``density``: PyHessian 0.1 calls ``torch.eig``, removed in torch 1.13, so on current torch it
  raises; here it works. Nodes are ascending; a probe whose Krylov space closes early returns
  fewer than ``iter`` nodes (PyHessian would pad with zero-weight nodes).
* every method takes an optional keyword ``seed`` (PyHessian draws from torch's global RNG).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fastspec._checks import check_float, check_int
from fastspec.compat.common import check_device, trainable_names, unflatten
from fastspec.curvature import HessianOperator
from fastspec.linalg import eigsh, slq

__all__ = ["hessian"]

#: Hutchinson probes per batched Hessian-vector product in :meth:`hessian.trace` off the CPU; on
#: the CPU a block costs its vectors' products one by one, so probes go singly and the stopping
#: rule wastes none (benchmarks/results/compat_vs_originals.md)
TRACE_BLOCK = 8

#: the tightest residual tolerance :meth:`hessian.eigenvalues` asks of eigsh, per dtype: what
#: PyHessian's ``tol <= 0`` ("run every iteration") becomes; ``tol >= 1`` becomes 0.5
TIGHTEST_TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


class hessian:  # the original name
    """The Hessian of ``criterion(model(inputs), targets)`` over one batch or a data loader.

    Args:
        model: any ``nn.Module`` (its parameters with ``requires_grad`` are differentiated).
        criterion: a loss ``criterion(outputs, targets) -> scalar`` with reduction 'mean'
            (or 'sum').
        data: one ``(inputs, targets)`` batch, or
        dataloader: a ``DataLoader`` / re-iterable of ``(inputs, targets)`` batches (exactly one
            of the two).
        cuda: whether the model is on a CUDA device (must agree with the model).
        seed: default seed of the random probes and start vectors (None: fresh each call).
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Any,
        data: Any = None,
        dataloader: Any = None,
        cuda: bool = True,
        *,
        seed: int | None = None,
    ) -> None:
        if (data is None) == (dataloader is None):
            raise ValueError("pass exactly one of data=(inputs, targets) or dataloader=<batches>")
        check_device(model, cuda, "cuda")
        if data is not None and not (
            isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor)
        ):
            raise TypeError("data must be one (inputs, targets) pair of tensors")
        self.model = model
        self.criterion = criterion
        self.full_dataset = data is None
        self.device = "cuda" if cuda else "cpu"
        self.seed = seed
        names = trainable_names(model)
        named = dict(model.named_parameters())
        self.params = [named[n] for n in names]
        self.operator = HessianOperator(
            model, criterion, data if data is not None else dataloader, params=names, mode="eval",
            hvp="double_backward",
        )  # fmt: skip

    def _seed(self, seed: int | None) -> int | None:
        return self.seed if seed is None else seed

    def eigenvalues(
        self, maxIter: int = 100, tol: float = 1e-3, top_n: int = 1, *, seed: int | None = None
    ) -> tuple[list[float], list[list[torch.Tensor]]]:
        """The ``top_n`` eigenpairs of largest magnitude, by descending magnitude.

        Returns:
            ``(eigenvalues, eigenvectors)``: a list of ``top_n`` floats and a list of ``top_n``
            eigenvectors, each a list of tensors shaped like the parameters (unit norm overall).
        """
        check_int("maxIter", maxIter, minimum=0)
        tol = check_float("tol", tol)
        top_n = check_int("top_n", top_n, minimum=1)
        tol = min(max(tol, TIGHTEST_TOL[self.operator.dtype]), 0.5)
        P = self.operator.shape[0]
        if top_n >= P:
            raise ValueError(f"top_n must be < P = {P} (the number of parameters), got {top_n}")
        res = eigsh(
            self.operator, top_n, which="LM", tol=tol, return_eigenvectors=True,
            seed=self._seed(seed),
        )  # fmt: skip
        assert res.eigenvectors is not None
        values = [float(v) for v in res.eigenvalues]
        vectors = [unflatten(res.eigenvectors[:, i], self.params) for i in range(top_n)]
        return values, vectors

    def trace(
        self, maxIter: int = 100, tol: float = 1e-3, *, seed: int | None = None
    ) -> list[float]:
        """Hutchinson's per-probe terms ``vᵀHv``, with PyHessian's stopping rule.

        Hutchinson's per-probe terms ``vᵀHv`` until the running mean changes by less than ``tol``
        relative (or ``maxIter`` probes); ``np.mean`` of the list is the estimate.
        """
        maxIter = check_int("maxIter", maxIter, minimum=0)
        tol = check_float("tol", tol)
        gen = torch.Generator()
        seed = self._seed(seed)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(check_int("seed", seed))
        op = self.operator
        P = op.shape[0]
        terms: list[float] = []
        previous = 0.0
        per_call = 1 if op.device.type == "cpu" else TRACE_BLOCK
        while len(terms) < maxIter:
            block = min(per_call, maxIter - len(terms))
            signs = torch.randint(0, 2, (P, block), generator=gen, dtype=torch.int8)
            Z = (signs.to(op.dtype) * 2 - 1).to(op.device)  # Rademacher probes, as PyHessian's
            new = (Z * op.matmat(Z)).sum(dim=0).double()
            for value in new.tolist():
                terms.append(value)
                mean = sum(terms) / len(terms)
                if abs(mean - previous) / (abs(previous) + 1e-6) < tol:
                    return terms
                previous = mean
        return terms

    def density(
        self, iter: int = 100, n_v: int = 1, *, seed: int | None = None
    ) -> tuple[list[list[float]], list[list[float]]]:
        """Stochastic Lanczos quadrature with ``n_v`` probes of ``iter`` steps.

        Returns:
            ``(eigen_list_full, weight_list_full)``: for each probe, its Ritz values (ascending)
            and their weights (summing to 1).
        """
        iter = check_int("iter", iter, minimum=1)
        n_v = check_int("n_v", n_v, minimum=1)
        res = slq(self.operator, num_probes=n_v, num_steps=iter, seed=self._seed(seed))
        nodes: list[list[float]] = []
        weights: list[list[float]] = []
        for r in range(n_v):
            L = int(res.lengths[r])
            nodes.append(res.nodes[r, :L].tolist())
            weights.append(res.weights[r, :L].tolist())
        return nodes, weights
