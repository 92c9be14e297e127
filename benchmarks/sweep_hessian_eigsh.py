"""Products and wall time of eigsh on the digits-MLP Hessian across block sizes and basis sizes.

    python benchmarks/sweep_hessian_eigsh.py [--k 100] [--blocks 1 2 4] [--basis 204 300]

The problem of side_by_side_hessian.py (top ``k`` at tol 1e-6, 301,066-parameter float64 MLP);
one fresh operator per setting (gradient graph kept). Prints one line per setting; records
nothing (the measured sweep is quoted in benchmarks/results/hessian_vs_peers.md).
"""

from __future__ import annotations

import argparse
import time

from digits_mlp import trained_mlp
from torch import nn

from fastspec.curvature import HessianOperator
from fastspec.linalg import eigsh


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--blocks", type=int, nargs="+", default=[2])
    parser.add_argument("--basis", type=int, nargs="+", default=[0], help="0: eigsh's default")
    args = parser.parse_args()
    model, X, y = trained_mlp()
    for block in args.blocks:
        for basis in args.basis:
            op = HessianOperator(model, nn.CrossEntropyLoss(), [(X, y)])
            start = time.perf_counter()
            res = eigsh(op, args.k, tol=1e-6, seed=0, block_size=block, max_basis=basis or None)
            print(
                f"B={res.block_size} basis={res.max_basis}: {time.perf_counter() - start:.1f} s, "
                f"{res.num_matvecs} products, {res.num_restarts} restarts, "
                f"max residual {float(res.residuals.max()):.1e}, hvp {op.method}, "
                f"graph kept {op.graph_cached}",
                flush=True,
            )


if __name__ == "__main__":
    main()
