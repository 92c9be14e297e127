"""hessian-eigenthings 1.0's API on fastspec's operators and solvers.

Change ``from hessian_eigenthings import HessianOperator, lanczos, trace, ...`` to
``from fastspec.compat.eigenthings import HessianOperator, lanczos, trace, ...`` and keep the
calls: every argument of the original is accepted under the same name with the same default,
and the results are frozen dataclasses with the original's fields (:class:`EigenResult`,
:class:`TraceResult`, :class:`SpectralDensityResult`), same shapes, dtypes and order. The
module does not need hessian-eigenthings installed.

Under the hood:

* :class:`HessianOperator`, :class:`GGNOperator` and :class:`EmpiricalFisherOperator` are
  :class:`fastspec.curvature.HessianOperator` / ``GGNOperator`` / ``EmpiricalFisherOperator``
  over the same ``(model, dataloader, loss)``: exact products, a block of vectors per pass over
  the data, the gradient graphs kept when they fit. The user's ``loss_fn(model, batch)``,
  ``forward_fn`` / ``loss_of_output_fn`` and ``per_sample_loss_fn(model, sample)`` are called
  with the real module (its parameters swapped by ``torch.func.functional_call``), so the
  hessian-eigenthings helpers (:func:`supervised_loss`, :func:`hf_lm_loss`,
  :func:`hf_lm_loss_of_output`, ...) and hand-written ones work unchanged.
* :func:`lanczos` is :func:`fastspec.linalg.eigsh` (thick-restarted block Lanczos, full
  reorthogonalisation): every returned pair has a residual recomputed from the returned vector,
  and ``converged`` is ``residual <= tol · |λ|``.
* :func:`trace` is :func:`fastspec.linalg.trace` (Hutch++ or Hutchinson);
  :func:`spectral_density` is :func:`fastspec.linalg.slq` with the original's grid and
  bandwidth rule.

Differences from hessian-eigenthings 1.0, all deliberate:

* **Converged pairs instead of a fixed number of steps.** The original's ``lanczos`` runs
  ``max_iter`` steps (default ``2k``) once and reports what it has: on the digits MLP its top 10
  were 6e-3 off (``benchmarks/results/compat_vs_originals.md``). Here the solver runs until every
  pair meets ``tol``; ``max_iter`` and ``reorthogonalize`` are checked and otherwise unused
  (reorthogonalisation is always full), ``iterations`` counts operator-vector products, and
  ``residuals`` are ``‖Av − λv‖`` of the returned vectors (relative residual times
  ``max(|λ|, √ε · max|λ|)``, the solver's scale).
* **Uneven batches.** The original averages per-batch curvatures with equal weights, so a short
  last batch is over-weighted. Here batches are weighted by their sample counts (the leading
  size of the batch's first tensor, or its size along ``sample_dim`` for the empirical Fisher):
  the operator is the curvature of the full-data mean loss. With equal batches the two agree.
* ``full_dataset=False`` there draws a new batch for every ``HessianOperator`` product (a random
  operator); here every operator then uses the first batch only (a fixed operator).
* ``method="finite_difference"`` (and ``fd_eps``) are accepted; products are exact (the
  central-difference bias of the original is absent). ``microbatch_size`` /
  ``microbatch_unsafe`` (memory chunking there) and ``backend`` (vector arithmetic there) are
  checked and unused: fastspec processes batches as the loader yields them and does its own
  arithmetic.
* The model is evaluated in its current mode but never modified; train mode with dropout is
  refused (its curvature would be random): call ``model.eval()`` first.
* :func:`trace`: probes are always Rademacher (``distribution="gaussian"`` is checked and
  unused; the original ignores it for Hutch++ too), Hutch++ spends all ``num_matvecs``
  (the original ``3 · (num_matvecs // 3)``), and at least 2 (Hutchinson) or 4 (Hutch++)
  products are needed for a standard error.
* ``seed=None`` draws a fresh seed in every algorithm (the original's unseeded generators
  always start from the same state).
* The LM helpers (``hf_*``, ``tlens_*``) are the original's loss callables; they need the
  model to return what they read (``.loss``, ``.logits``), as there.

Not served here: ``lanczos_tridiagonal``, ``power_iteration_one`` / ``deflated_power_iteration``
(use :func:`lanczos`), ``DDPHessianOperator``, and the flat-vector helpers of ``param_utils``.
"""

from __future__ import annotations

from fastspec.compat.eigenthings.algorithms import (
    hutch_plus_plus,
    hutchinson,
    lanczos,
    spectral_density,
    trace,
)
from fastspec.compat.eigenthings.losses import (
    ParamFilter,
    hf_lm_forward,
    hf_lm_loss,
    hf_lm_loss_of_output,
    hf_seq2seq_loss,
    match_names,
    match_regex,
    supervised_forward,
    supervised_loss,
    supervised_loss_of_output,
    supervised_per_sample_loss,
    tlens_forward,
    tlens_loss,
    tlens_loss_of_output,
)
from fastspec.compat.eigenthings.operators import (
    CurvatureOperator,
    EmpiricalFisherOperator,
    GGNOperator,
    HessianOperator,
    LambdaOperator,
)
from fastspec.compat.eigenthings.results import EigenResult, SpectralDensityResult, TraceResult

__all__ = [
    "CurvatureOperator",
    "EigenResult",
    "EmpiricalFisherOperator",
    "GGNOperator",
    "HessianOperator",
    "LambdaOperator",
    "ParamFilter",
    "SpectralDensityResult",
    "TraceResult",
    "hf_lm_forward",
    "hf_lm_loss",
    "hf_lm_loss_of_output",
    "hf_seq2seq_loss",
    "hutch_plus_plus",
    "hutchinson",
    "lanczos",
    "match_names",
    "match_regex",
    "spectral_density",
    "supervised_forward",
    "supervised_loss",
    "supervised_loss_of_output",
    "supervised_per_sample_loss",
    "tlens_forward",
    "tlens_loss",
    "tlens_loss_of_output",
    "trace",
]
