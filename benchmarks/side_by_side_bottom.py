"""The bottom of the digits-MLP Hessian spectrum (``which="SA"``): fastspec's eigsh against scipy's
ARPACK on the same operator, side by side in one process.

    python benchmarks/side_by_side_bottom.py [--k 10] [--tol 1e-6] [--cap 3000]

The problem of side_by_side_hessian.py (301,066-parameter float64 MLP trained on the 1797
digits). Its most negative eigenvalues sit in a cluster near −0.02, a hard end for restarted
Krylov methods. Both solvers multiply by the same fastspec ``HessianOperator`` (gradient graph
kept), so the comparison is of the solvers alone: fastspec with its defaults (a basis that grows
when restarts stall), ARPACK with its default ``ncv = 2k + 1`` and with ``ncv = 128`` (the size
fastspec's basis grows to). ARPACK runs are stopped after ``--cap`` products. Every returned
pair's residual ‖Hv − λv‖/|λ| is recomputed. Writes benchmarks/results/hessian_bottom.md.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np
import torch
from digits_mlp import trained_mlp
from record import fair_blas_threads, write_markdown
from scipy.sparse.linalg import LinearOperator as ScipyOperator
from scipy.sparse.linalg import eigsh as scipy_eigsh
from side_by_side_hessian import residuals
from torch import nn

from fastspec.curvature import HessianOperator
from fastspec.linalg import eigsh

HEADER = ["solver", "seconds", "products", "converged", "max residual", "most negative eigenvalue"]


class _Cap(Exception):
    pass


def arpack(op: HessianOperator, k: int, tol: float, ncv: int, cap: int) -> list[Any]:
    count = {"n": 0}

    def matvec(v: np.ndarray) -> np.ndarray:
        if count["n"] >= cap:
            raise _Cap
        count["n"] += 1
        x = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).reshape(-1, 1)
        return op.matmat(x).numpy().ravel()

    P = op.shape[0]
    H = ScipyOperator((P, P), matvec=matvec, dtype=np.float64)
    start = time.perf_counter()
    try:
        vals, vecs = scipy_eigsh(H, k=k, which="SA", tol=tol, ncv=ncv)
    except _Cap:
        seconds = time.perf_counter() - start
        return [f"ARPACK, ncv {ncv}", f"{seconds:.1f}", count["n"], f"stopped at {cap} products",
                "", ""]  # fmt: skip
    seconds = time.perf_counter() - start
    values, vectors = torch.from_numpy(vals), torch.from_numpy(np.ascontiguousarray(vecs))
    res = residuals(op, values, vectors)
    return [f"ARPACK, ncv {ncv}", f"{seconds:.1f}", count["n"], f"{int((res <= tol).sum())}/{k}",
            f"{float(res.max()):.1e}", f"{float(values.min()):.6f}"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--cap", type=int, default=3000, help="ARPACK's product budget")
    args = parser.parse_args()
    model, X, y = trained_mlp()
    op = HessianOperator(model, nn.CrossEntropyLoss(), [(X, y)])
    rows = []
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = eigsh(op, args.k, which="SA", tol=args.tol, seed=0, return_eigenvectors=True)
    seconds = time.perf_counter() - start
    assert res.eigenvectors is not None
    check = residuals(op, res.eigenvalues, res.eigenvectors)
    rows.append([f"fastspec eigsh (block {res.block_size}, basis {res.max_basis})", f"{seconds:.1f}",
                 res.num_matvecs, f"{int((check <= args.tol).sum())}/{args.k}",
                 f"{float(check.max()):.1e}", f"{float(res.eigenvalues.min()):.6f}"])  # fmt: skip
    print(rows[-1], flush=True)
    for ncv in (2 * args.k + 1, 128):
        rows.append(arpack(op, args.k, args.tol, ncv, args.cap))
        print(rows[-1], flush=True)
    write_markdown(
        "hessian_bottom",
        f"Bottom {args.k} of the digits-MLP Hessian (which='SA', tol {args.tol:g}): fastspec eigsh "
        "vs ARPACK on the same operator",
        HEADER,
        rows,
        "P = 301066; N = 1797, one batch; float64. Both solvers call the same fastspec "
        "HessianOperator (gradient graph kept), ARPACK one vector at a time through a scipy "
        "LinearOperator; residuals are recomputed with it for both.",
    )


if __name__ == "__main__":
    fair_blas_threads()
    main()
