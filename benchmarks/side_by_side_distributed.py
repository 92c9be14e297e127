"""Top Hessian eigenpairs of the digits MLP on 1 process against 2 data-parallel gloo ranks, and
hessian-eigenthings' DDP operator with its lanczos on the same ranks.

    python benchmarks/side_by_side_distributed.py [--k 100] [--tol 1e-6] [--steps 300]
    python benchmarks/side_by_side_distributed.py --smoke          # CI: a tiny model, seconds

The problem: benchmarks/digits_mlp.py's 301,066-parameter float64 MLP trained on the digits; the
Hessian of the mean cross-entropy over the first 1796 digits in 4 batches of 449 (batch i on
rank i mod 2: equal shards, which hessian-eigenthings' operator needs, as it averages the ranks'
means). Each configuration runs in fresh processes: 1 process with 2 threads, or 2 ranks with
1 thread each (this machine has 2 cores). Reported per configuration: wall time of the solver,
products, peak RSS of each rank. Accuracy: each returned pair's residual ‖Hv − λv‖/|λ|
recomputed with fastspec's one-process operator. Writes benchmarks/results/distributed_hessian.md
(not with --smoke).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from digits_mlp import digits, mlp, train, trained_mlp
from record import write_markdown
from torch import nn

from fastspec.curvature import HessianOperator
from fastspec.linalg import eigsh

NUM_BATCHES = 4


def batches(X: torch.Tensor, y: torch.Tensor, rank: int, world_size: int) -> list[Any]:
    """Rank ``rank``'s batches: batch i of the 4 goes to rank i mod ``world_size``."""
    n = len(X) // NUM_BATCHES
    every = [(X[i * n : (i + 1) * n], y[i * n : (i + 1) * n]) for i in range(NUM_BATCHES)]
    return every[rank::world_size]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fastspec_run(rank: int, world_size: int, problem: Path, opts: dict[str, Any]) -> dict:
    model, X, y = torch.load(problem, weights_only=False)
    op = HessianOperator(model, nn.CrossEntropyLoss(), batches(X, y, rank, world_size))
    before = peak_rss_mib()
    start = time.perf_counter()
    res = eigsh(op, opts["k"], tol=opts["tol"], seed=0, return_eigenvectors=True)
    seconds = time.perf_counter() - start
    vectors = res.gather_eigenvectors(dst=0)  # the sharded basis's rows, whole on rank 0
    if rank == 0:
        torch.save((res.eigenvalues, vectors), opts["out"])
    return {"seconds": seconds, "matvecs": res.num_matvecs, "rss_setup": before,
            "rss": peak_rss_mib(), "note": f"block {res.block_size}, basis {res.max_basis}"}  # fmt: skip


def eigenthings_run(rank: int, world_size: int, problem: Path, opts: dict[str, Any]) -> dict:
    import hessian_eigenthings as he
    from hessian_eigenthings.operators.distributed.ddp import DDPHessianOperator

    model, X, y = torch.load(problem, weights_only=False)
    data = batches(X, y, rank, world_size)
    loss = he.supervised_loss(nn.CrossEntropyLoss())
    if world_size > 1:
        op = DDPHessianOperator(model, data, loss)
    else:
        op = he.HessianOperator(model, data, loss)
    before = peak_rss_mib()
    start = time.perf_counter()
    out = he.lanczos(op, k=opts["k"], max_iter=opts["steps"], which="LA", tol=opts["tol"], seed=0)
    seconds = time.perf_counter() - start
    if rank == 0:
        vecs = torch.as_tensor(out.eigenvectors, dtype=torch.float64)
        torch.save((torch.as_tensor(out.eigenvalues, dtype=torch.float64), vecs), opts["out"])
    return {"seconds": seconds, "matvecs": opts["steps"], "rss_setup": before,
            "rss": peak_rss_mib(), "note": "single-vector Lanczos, no restart"}  # fmt: skip


def _entry(
    rank: int, fn: Any, world_size: int, threads: int, init: str, args: tuple, q: Any
) -> None:
    torch.set_num_threads(threads)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    q.put((rank, fn(rank, world_size, *args)))
    if world_size > 1:
        dist.destroy_process_group()


def spawn(fn: Any, world_size: int, threads: int, *args: Any) -> list[dict]:
    """``fn(rank, world_size, *args)`` on ``world_size`` fresh processes of ``threads`` each."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{tmp}/store"
        procs = [
            ctx.Process(target=_entry, args=(r, fn, world_size, threads, init, args, q))
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        results = dict(q.get() for _ in procs)
        for p in procs:
            p.join()
    return [results[r] for r in range(world_size)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=None, help="default 100 (4 with --smoke)")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--steps", type=int, default=None, help="eigenthings' steps (default 3k)")
    parser.add_argument("--smoke", action="store_true", help="a 16-wide MLP on 400 digits")
    parser.add_argument("--skip", nargs="*", default=[], help="eigenthings")
    args = parser.parse_args(argv)
    k = args.k or (4 if args.smoke else 100)
    steps = args.steps or 3 * k
    if args.smoke:
        X, y = digits()
        torch.manual_seed(0)
        model, X, y = train(mlp(16), X[:400], y[:400], epochs=1, seed=0), X[:400], y[:400]
    else:
        model, X, y = trained_mlp()
    n = len(X) // NUM_BATCHES * NUM_BATCHES
    X, y = X[:n], y[:n]
    full = HessianOperator(model, nn.CrossEntropyLoss(), batches(X, y, 0, 1))
    P = full.shape[0]
    configs = [("fastspec eigsh", fastspec_run, 1, 2), ("fastspec eigsh", fastspec_run, 2, 1)]
    if "eigenthings" not in args.skip:
        configs += [("hessian-eigenthings lanczos", eigenthings_run, 1, 2),
                    ("hessian-eigenthings lanczos (DDPHessianOperator)", eigenthings_run, 2, 1)]  # fmt: skip
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        problem = Path(tmp) / "problem.pt"
        torch.save((model, X, y), problem)
        for name, fn, world_size, threads in configs:
            opts = {"k": k, "tol": args.tol, "steps": steps, "out": Path(tmp) / "pairs.pt"}
            ranks = spawn(fn, world_size, threads, problem, opts)
            values, vectors = torch.load(opts["out"])
            if vectors.shape[0] != P:  # hessian-eigenthings returns [k, P]
                vectors = vectors.T
            order = torch.argsort(values, descending=True)
            values, vectors = values[order], vectors[:, order]
            HV = torch.cat([full.matmat(vectors[:, i : i + 25]) for i in range(0, k, 25)], 1)
            res = torch.linalg.norm(HV - vectors * values, dim=0) / values.abs()
            if reference is None:
                reference = values
            diff = float(((values - reference) / reference).abs().max())
            print(name, world_size, ranks, float(res.max()), flush=True)
            rows.append([
                name, f"{world_size} × {threads} thread{'s' if threads > 1 else ''}",
                f"{max(r['seconds'] for r in ranks):.1f}", ranks[0]["matvecs"],
                " / ".join(f"{r['rss']:.0f}" for r in ranks),
                " / ".join(f"{r['rss_setup']:.0f}" for r in ranks),
                f"{float(res.max()):.1e}", f"{diff:.1e}", ranks[0]["note"],
            ])  # fmt: skip
    header = ["method", "processes", "seconds", "products", "peak RSS per rank (MiB)",
              "RSS before the solver (MiB)", "max residual (recomputed)",
              "max rel. eigenvalue diff vs 1 process", "notes"]  # fmt: skip
    notes = f"P = {P}; N = {n} in {NUM_BATCHES} batches (batch i on rank i mod W); k = {k}; tol = {args.tol}."
    if not args.smoke:
        write_markdown("distributed_hessian", f"Top-{k} Hessian eigenpairs of the digits MLP, "
                       "1 process against 2 data-parallel ranks (gloo)", header, rows, notes)  # fmt: skip
    else:
        print(header, *rows, notes, sep="\n")


if __name__ == "__main__":
    main()
