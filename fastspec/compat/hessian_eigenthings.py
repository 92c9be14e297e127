"""hessian-eigenthings' classic ``compute_hessian_eigenthings`` on fastspec's solver.

change ``from hessian_eigenthings import compute_hessian_eigenthings`` to ``from
fastspec.compat.hessian_eigenthings import compute_hessian_eigenthings``.

The signature and return value are those of the classic API (hessian-eigenthings 0.0.x, which
the 1.0 rewrite dropped): ``(eigenvals, eigenvecs)``, numpy arrays of shape ``[K]`` and
``[K, P]`` (row ``i`` is the eigenvector of ``eigenvals[i]``), in the model's dtype.

* ``mode="power_iter"`` (deflated power iteration there): the ``K`` eigenpairs of largest
  magnitude by :func:`fastspec.linalg.eigsh` (``which="LM"``), by descending magnitude (the order
  deflation finds them in). ``power_iter_err_threshold`` (default 1e-4) is the residual tolerance
  of every pair; ``power_iter_steps`` and ``momentum`` are checked and otherwise unused.
* ``mode="lanczos"`` (scipy's ARPACK there): the same solver with the classic ``which``
  (``"LM"``, ``"LA"`` or ``"SA"``; ``"SM"`` is refused: interior eigenvalues need shift-invert),
  ``tol`` (default 1e-6) and ``init_vec``; eigenvalues ascending, as ARPACK returns them.
  ``max_steps`` and ``num_lanczos_vectors`` are checked and otherwise unused.

The matrix is the Hessian of the full-data loss ``(1/N) Σ ℓ``, batches weighted by their sample
counts. Differences from hessian-eigenthings, all deliberate:

* **Uneven batches.** hessian-eigenthings (0.0.x and 1.0) averages the per-batch Hessians with
  equal weights, so a short last batch is over-weighted: its operator is not the full-data
  Hessian unless every batch has the same size. fastspec's is (tested against a dense Hessian).
* **Ghost eigenvalues.** hessian-eigenthings 1.0's ``lanczos`` runs an unrestarted Lanczos without
  reorthogonalisation beyond 50 steps; on the digits MLP its sorted top 100 was off by up to 63×
  (``benchmarks/results/hessian_vs_peers.md``). fastspec's pairs carry certified residuals.
* ``full_dataset=False`` there draws a new batch for every Hessian-vector product (a random
  operator); here it means the Hessian of the first batch only (a fixed operator).
* The model is evaluated in its current mode (as there) but never modified; ``mode="train"`` with
  dropout is refused (its Hessian would be random): call ``model.eval()`` first.
* ``use_gpu`` must agree with where the model lives; ``fp16=True`` is refused (fastspec computes in
  float32 or float64); ``max_possible_gpu_samples`` (a memory chunk size there) is checked and
  unused: fastspec processes the batches as the loader yields them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fastspec._checks import check_bool, check_choice, check_float, check_int
from fastspec.batches import as_batches
from fastspec.compat.common import check_device, check_tol, trainable_names
from fastspec.curvature import HessianOperator
from fastspec.linalg import eigsh

__all__ = ["compute_hessian_eigenthings"]

_POWER_ITER = {"power_iter_steps": 20, "power_iter_err_threshold": 1e-4, "momentum": 0.0}
_LANCZOS = {
    "which": "LM",
    "max_steps": 20,
    "tol": 1e-6,
    "num_lanczos_vectors": None,
    "init_vec": None,
}


def compute_hessian_eigenthings(
    model: nn.Module,
    dataloader: Any,
    loss: Any,
    num_eigenthings: int = 10,
    full_dataset: bool = True,
    mode: str = "power_iter",
    use_gpu: bool = True,
    fp16: bool = False,
    max_possible_gpu_samples: int = 2**16,
    *,
    seed: int | None = None,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``num_eigenthings`` Hessian eigenpairs, as hessian-eigenthings returns them.

    Top ``num_eigenthings`` Hessian eigenpairs of ``loss(model(inputs), targets)`` over
    ``dataloader``.

    Args:
        model: any ``nn.Module`` (its parameters with ``requires_grad``).
        dataloader: a ``DataLoader`` or re-iterable of ``(inputs, targets)`` batches.
        loss: a criterion ``loss(outputs, targets) -> scalar`` (reduction 'mean' or 'sum').
        num_eigenthings: ``K``.
        full_dataset: all batches (True) or the first batch only.
        mode: ``"power_iter"`` or ``"lanczos"``.
        use_gpu: whether the model is on a CUDA device (must agree with the model).
        fp16: must be False.
        max_possible_gpu_samples: accepted for compatibility (a positive int).
        seed: seed of the start block (None: fresh).
        **kwargs: the classic options of the chosen mode (see the module notes).

    Returns:
        ``(eigenvals [K], eigenvecs [K, P])`` numpy arrays.
    """
    check_device(model, use_gpu, "use_gpu")
    k = check_int("num_eigenthings", num_eigenthings, minimum=1)
    check_int("max_possible_gpu_samples", max_possible_gpu_samples, minimum=1)
    full_dataset = check_bool("full_dataset", full_dataset)
    if check_bool("fp16", fp16):
        raise ValueError("fp16=True is not supported: fastspec computes in float32 or float64")
    check_choice("mode", mode, ("power_iter", "lanczos"))
    allowed = _POWER_ITER if mode == "power_iter" else _LANCZOS
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {unknown} for mode={mode!r}; "
            f"expected some of {sorted(allowed)}"
        )
    opts = {**allowed, **kwargs}
    data: Any = dataloader
    if not full_dataset:
        data = [next(iter(as_batches(dataloader)))]
    names = trainable_names(model)
    op = HessianOperator(
        model, loss, data, params=names, mode="train" if model.training else "eval"
    )
    P = op.shape[0]
    if k >= P:
        raise ValueError(f"num_eigenthings must be < P = {P} (the number of parameters), got {k}")
    v0 = None
    which: Any
    if mode == "power_iter":
        check_int("power_iter_steps", opts["power_iter_steps"], minimum=1)
        tol = check_tol("power_iter_err_threshold", opts["power_iter_err_threshold"])
        check_float("momentum", opts["momentum"])
        which = "LM"
    else:
        check_int("max_steps", opts["max_steps"], minimum=1)
        check_int("num_lanczos_vectors", opts["num_lanczos_vectors"], minimum=1, none_ok=True)
        tol = check_tol("tol", opts["tol"])
        which = opts["which"]
        if which == "SM":
            raise ValueError("which='SM' is not supported: interior eigenvalues need shift-invert")
        check_choice("which", which, ("LM", "LA", "SA"))
        if opts["init_vec"] is not None:
            v0 = torch.as_tensor(opts["init_vec"]).reshape(-1).to(op.device, op.dtype)
            if v0.shape[0] != P:
                raise ValueError(f"init_vec must have P = {P} entries, got {v0.shape[0]}")
    res = eigsh(
        op,
        k,
        which=which,
        tol=tol,
        return_eigenvectors=True,
        seed=seed,
        v0=v0,
    )
    assert res.eigenvectors is not None
    values, vectors = res.eigenvalues, res.eigenvectors
    if mode == "lanczos":
        order = torch.argsort(values)
        values, vectors = values[order], vectors[:, order]
    return values.cpu().numpy(), vectors.T.contiguous().cpu().numpy()
