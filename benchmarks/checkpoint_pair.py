"""Checkpoint overhead, paired: eigsh of the digits-MLP Hessian with and without a checkpoint.

    python benchmarks/checkpoint_pair.py [--k 20] [--repeat 3]

The two modes alternate in one process on one operator (``hvp="double_backward"`` fixed), so the
machine's drift between separate processes does not enter the comparison; each checkpointed run
writes into a fresh directory at the default interval (``Checkpoint(dir)``).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from digits_mlp import trained_mlp

from fastspec.curvature import HessianOperator
from fastspec.linalg import eigsh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    model, X, y = trained_mlp()
    loss = torch.nn.functional.cross_entropy
    op = HessianOperator(model, loss, [(X, y)], hvp="double_backward")
    op.matmat(torch.randn(op.shape[0], 2, dtype=torch.float64))  # build the kept graph first
    total = {"none": 0.0, "default": 0.0}
    for _ in range(args.repeat):
        for mode in total:
            with tempfile.TemporaryDirectory() as d:
                start = time.perf_counter()
                r = eigsh(op, args.k, tol=1e-6, seed=0, checkpoint=None if mode == "none" else d)
                seconds = time.perf_counter() - start
            total[mode] += seconds
            print(
                f"{mode:8s} {seconds:7.2f} s  {r.num_matvecs} products  λ1 {r.eigenvalues[0]:.15g}"
            )
    print(
        f"overhead of the default checkpoint: {100 * (total['default'] / total['none'] - 1):+.1f} %"
    )


if __name__ == "__main__":
    main()
