"""Hessian, generalised Gauss–Newton and empirical-Fisher operators of a model, loss and data.

The matrices are those of the full-data loss L(θ) = (1/N) Σ_j ℓ(θ; x_j, y_j) over the N samples
of ``data`` (batches weighted by their sample counts, so an uneven last batch is exact):

- :class:`HessianOperator`: H = ∇²L(θ), exactly.
- :class:`GGNOperator`: G = (1/N) Σ_j J_jᵀ (∇²_z ℓ_j) J_j, J_j the Jacobian of the model output
  for sample j; the loss Hessian with respect to the outputs is taken by autograd, so any loss
  works (for the cross-entropy and squared losses G is the Fisher information).
- :class:`EmpiricalFisherOperator`: F = (1/N) Σ_j ∇ℓ_j ∇ℓ_jᵀ.

Every ``matmat`` runs one pass over the data for a whole block of vectors. The Hessian operator
has two exact block Hessian-vector products: reverse-over-reverse (``"double_backward"``: one
backward with ``create_graph`` per batch, then one backward through that graph per vector) and
forward-over-reverse (``"forward_over_reverse"``: ``vmap(jvp(grad))``). ``hvp="auto"`` times one
product of each on the first block and keeps the faster (the choice is in ``method``). When
the gradient graphs of all batches fit in memory (``cache_graph``), reverse-over-reverse keeps
them: every later product is one backward pass through a stored graph, with no forward pass and
no first backward (costs: ``benchmarks/results/hessian_vs_peers.md``, "Kept gradient graphs").

The GGN and empirical-Fisher operators have the same two choices (``jvp=``) for ``J v``: reverse
mode through the kept graphs of the output and of ``Jᵀ u`` (the double-backward trick), or
forward mode (``vmap(jvp)``, after a forward pass per block).

The model is run with ``torch.func.functional_call`` on detached copies of its parameters (cast
to ``dtype``) and of its buffers: the model itself is never modified, and the operator is
evaluated at the parameters it had when the operator was built.

References: B. A. Pearlmutter, *Fast exact multiplication by the Hessian*, Neural Computation 6
(1994); N. N. Schraudolph, *Fast curvature matrix-vector products for second-order gradient
descent*, Neural Computation 14 (2002); Z. Xie et al., *On the Power-Law Hessian Spectrums in Deep
Learning*, arXiv:2201.13011 (2022).
"""

from __future__ import annotations

from fastspec.curvature.hessian import HessianOperator
from fastspec.curvature.output_curvature import EmpiricalFisherOperator, GGNOperator

__all__ = ["EmpiricalFisherOperator", "GGNOperator", "HessianOperator"]
