"""How P1's verdict on the trained reference models depends on K, and what K costs.

Trains ``fastspec run``'s models (digits, P1's recipe, float32) with several seeds, computes the
top-1000 Hessian eigenvalues once per trained model (eigsh tol 1e-4, as ``fastspec run``) and
fits P1's power law to the top K ∈ {100, 200, 500, 1000} of them (converged eigenvalues, so a
prefix is what a run with that K computes); ``--time-each-k`` times one eigsh per K.
Record: benchmarks/results/run_k_dependence.md.

    python benchmarks/run_k_dependence.py [--seeds 0,1,2] [--models fcn,lenet] [--time-each-k]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from fastspec.analysis import digits
from fastspec.curvature import hessian_eigs
from fastspec.stats import fit_spectrum

KS = (100, 200, 500, 1000)


def main() -> None:
    """Print one line per (model, seed, K) and the per-K cost."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default="fcn,lenet")
    ap.add_argument("--time-each-k", action="store_true", help="also time one eigsh per K")
    args = ap.parse_args()
    loss = nn.CrossEntropyLoss()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            (Xtr, ytr), test = digits.digits_split(seed=seed)
            torch.manual_seed(seed)
            model = digits.MODELS[name]()
            res = digits.train(model, (Xtr, ytr), test, seed=seed)
            common = {"tol": 1e-4, "dtype": torch.float32, "seed": seed}
            if args.time_each_k and seed == int(args.seeds.split(",")[0]):
                for k in KS:
                    t = time.perf_counter()
                    hessian_eigs(model, loss, [(Xtr, ytr)], k, **common)
                    print(f"cost {name} K={k}: {time.perf_counter() - t:.1f} s", flush=True)
            t = time.perf_counter()
            eig = hessian_eigs(model, loss, [(Xtr, ytr)], max(KS), **common).eigenvalues
            print(f"{name} seed {seed}: top-{max(KS)} in {time.perf_counter() - t:.0f} s")
            for k in KS:
                f = fit_spectrum(eig, k)
                print(
                    f"{name} seed {seed} test err {res.test_error:.3f} K={k:4d}: "
                    f"s {f.s:.3f} d_ks {f.ks:.4f} d_c {f.ks_critical:.4f} "
                    f"{'power-law' if f.is_power_law else 'not power-law'}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
