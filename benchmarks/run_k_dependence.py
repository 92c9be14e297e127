"""How P1's verdict on ``fastspec run``'s models depends on K, and what K costs.

Trains ``fastspec run``'s models (digits, P1's recipe, float32) with several seeds, computes the
top-1000 Hessian eigenvalues once per model and stage (eigsh tol 1e-4, as ``fastspec run``) and
fits P1's power law to the top K ∈ {100, 300, 500, 1000} of them (converged eigenvalues, so a
prefix is what a run with that K computes); the last lines count, per model, stage and K, the
seeds in which the spectrum is power-law. ``--time-each-k`` times one eigsh per K.
Record: benchmarks/results/run_k_dependence.md.

    python benchmarks/run_k_dependence.py [--seeds 0,1,2] [--models fcn,lenet]
        [--stages trained,random_init] [--time-each-k]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch import nn

from fastspec.analysis import digits
from fastspec.curvature import hessian_eigs
from fastspec.stats import fit_spectrum

KS = (100, 300, 500, 1000)


def main() -> None:
    """Print one line per (model, stage, seed, K), the per-K cost and the counts over seeds."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default="fcn,lenet")
    ap.add_argument("--stages", default="trained", help="trained and/or random_init")
    ap.add_argument("--time-each-k", action="store_true", help="also time one eigsh per K")
    args = ap.parse_args()
    loss = nn.CrossEntropyLoss()
    seeds = [int(s) for s in args.seeds.split(",")]
    stages = args.stages.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    power_law: dict[tuple[str, str, int], list[bool]] = defaultdict(list)
    for name in args.models.split(","):
        for seed in seeds:
            (Xtr, ytr), test = digits.digits_split(seed=seed)
            torch.manual_seed(seed)
            model = digits.MODELS[name]().eval()
            for stage in ("random_init", "trained"):
                if stage == "trained":
                    res = digits.train(model, (Xtr, ytr), test, seed=seed)
                    err = res.test_error
                else:
                    err = digits.evaluate(model, *test)[1]
                if stage not in stages:
                    continue
                common = {"tol": 1e-4, "dtype": torch.float32, "seed": seed}
                if args.time_each_k and seed == seeds[0]:
                    for k in KS:
                        t = time.perf_counter()
                        hessian_eigs(model, loss, [(Xtr, ytr)], k, **common)
                        print(f"cost {name} {stage} K={k}: {time.perf_counter() - t:.1f} s")
                t = time.perf_counter()
                eig = hessian_eigs(model, loss, [(Xtr, ytr)], max(KS), **common)
                print(
                    f"{name} {stage} seed {seed}: top-{max(KS)} in {time.perf_counter() - t:.0f} s, "
                    f"{eig.num_matvecs} products, {int(eig.converged.sum())} converged",
                    flush=True,
                )
                values = eig.eigenvalues.double().numpy()
                for k in KS:
                    f = fit_spectrum(values[values > 0], k)
                    power_law[name, stage, k].append(f.is_power_law)
                    print(
                        f"{name} {stage} seed {seed} test err {err:.3f} K={k:4d}: "
                        f"s {f.s:.3f} d_ks {f.ks:.4f} d_c {f.ks_critical:.4f} "
                        f"{'power-law' if f.is_power_law else 'not power-law'}",
                        flush=True,
                    )
    for (name, stage, k), pl in power_law.items():
        print(f"count {name} {stage} K={k:4d}: power-law in {sum(pl)} of {len(pl)} seeds")


if __name__ == "__main__":
    main()
