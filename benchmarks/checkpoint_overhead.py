"""Cost of checkpointing eigsh on the digits-MLP top-100 run, and the work a kill loses.

The problem of ``side_by_side_hessian.py`` (``digits_mlp.py``: a 301k-parameter float64 MLP
trained on scikit-learn's digits, the Hessian of the full-data loss, k = 100, tol = 1e-6),
run once per mode, each in its own process under the exclusive lock:

    python checkpoint_overhead.py --mode none        # no checkpoint (the reference)
    python checkpoint_overhead.py --mode default     # Checkpoint(dir) at the default interval
    python checkpoint_overhead.py --mode products --every 150   # a save every 150 products

Each mode checks its eigenvalues bitwise against the reference's (saved by ``--mode none``),
prints the wall time, the number and size of the saves and their time, and the products a
SIGKILL at a uniformly random moment of the run would have lost (products made since the last
save, from the log of product and save times).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from digits_mlp import trained_mlp
from torch import nn

import fastspec.checkpoint as fc
from fastspec.checkpoint import Checkpoint
from fastspec.curvature import HessianOperator
from fastspec.linalg import eigsh

CACHE = Path(tempfile.gettempdir()) / "fastspec-bench-digits-mlp"


def problem() -> HessianOperator:
    CACHE.mkdir(exist_ok=True)
    state_file = CACHE / "mlp.pt"
    model, X, y = None, None, None
    if state_file.exists():
        from digits_mlp import digits, mlp

        model = mlp()
        model.load_state_dict(torch.load(state_file, weights_only=True))
        model.eval()
        X, y = digits()
    else:
        model, X, y = trained_mlp()
        torch.save(model.state_dict(), state_file)
    return HessianOperator(model, nn.functional.cross_entropy, [(X, y)], hvp="double_backward")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("none", "default", "products"), required=True)
    ap.add_argument("--every", type=int, default=150, help="products between saves")
    ap.add_argument("--dir", default=str(CACHE / "ck"), help="checkpoint directory")
    args = ap.parse_args()
    op = problem()
    op.matmat(torch.zeros(op.shape[0], 1, dtype=op.dtype))  # build the gradient graph
    product_times: list[tuple[float, int]] = []
    save_log: list[tuple[float, int, float]] = []
    matmat = op.matmat
    count = [0]

    def logged(V: torch.Tensor) -> torch.Tensor:
        out = matmat(V)
        count[0] += V.shape[1]
        product_times.append((time.perf_counter(), count[0]))
        return out

    op.matmat = logged  # type: ignore[method-assign]
    save = fc.Store.save

    def timed_save(self: fc.Store, tensors, meta, products) -> None:  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        save(self, tensors, meta, products)
        nbytes = sum((self.dir / n).stat().st_size for n in self.manifest_shards())
        save_log.append((time.perf_counter(), int(products), time.perf_counter() - t))
        print(f"  save at {products} products: {nbytes / 2**20:.0f} MiB in "
              f"{time.perf_counter() - t:.2f} s", flush=True)  # fmt: skip

    fc.Store.save = timed_save  # type: ignore[method-assign]
    fc.Store.manifest_shards = lambda self: [  # type: ignore[attr-defined]
        p.name for p in self.dir.iterdir() if p.suffix == ".safetensors"
    ]
    cp = None
    if args.mode != "none":
        shutil.rmtree(args.dir, ignore_errors=True)
        cp = (
            Checkpoint(args.dir)
            if args.mode == "default"
            else Checkpoint(args.dir, every_seconds=None, every_products=args.every)
        )
    t0 = time.perf_counter()
    res = eigsh(op, 100, tol=1e-6, seed=0, checkpoint=cp)
    wall = time.perf_counter() - t0
    ref_file = CACHE / "eigenvalues.pt"
    if args.mode == "none":
        torch.save(res.eigenvalues, ref_file)
    else:
        ref = torch.load(ref_file, weights_only=True)
        assert torch.equal(ref, res.eigenvalues), "checkpointed run differs from the reference"
    print(f"mode {args.mode}: {wall:.1f} s, {res.num_matvecs} products, "
          f"{res.num_restarts} restarts, all converged {res.all_converged}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    writes = sum(s[2] for s in save_log)
    print(
        f"  {len(save_log)} saves, {writes:.2f} s writing ({100 * writes / wall:.1f} % of the run)"
    )
    if product_times:
        rng = np.random.default_rng(0)
        times = np.array([t for t, _ in product_times])
        made = np.array([n for _, n in product_times])
        saves_t = np.array([t0] + [s[0] for s in save_log])
        saves_n = np.array([0] + [s[1] for s in save_log])
        kills = rng.uniform(t0, t0 + wall, 10000)
        done = np.concatenate([[0], made])[np.searchsorted(times, kills, side="right")]
        kept = saves_n[np.searchsorted(saves_t, kills, side="right") - 1]
        lost = done - kept
        print(f"  a kill at a random moment loses {lost.mean():.0f} products on average "
              f"(median {np.median(lost):.0f}, max {lost.max()}) of {res.num_matvecs}")  # fmt: skip


if __name__ == "__main__":
    main()
