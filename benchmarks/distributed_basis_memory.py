"""Peak memory per rank of eigsh's sharded Krylov basis: 1 process against W gloo ranks.

The operator is cheap so that the basis dominates memory: ``A = H diag(d) H`` with ``H`` one
Householder reflection (``O(P B)`` per block, exact spectrum ``d``), split across ranks as a
data-parallel operator: rank ``r`` holds ``d_r = d ⊙ s_r`` with random shares ``s_r`` summing
to 1, implements ``local_matmat`` (its unreduced share) and ``matmat`` (the all-reduce). Every
run starts in fresh processes (spawned, one gloo process per rank), so ``ru_maxrss`` / ``VmHWM``
are the run's own peaks. The answer is checked against the exact top ``k`` of ``d``.

    python benchmarks/distributed_basis_memory.py --world-sizes 1 2
    python benchmarks/distributed_basis_memory.py --collectives  # gloo reduce-scatter, 3 ways

Record: ``benchmarks/results/distributed_basis_memory.md``.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastspec.distributed import resolve_group, shard_range
from fastspec.linalg import LinearOperator, eigsh


def spectrum(P: int, k: int) -> torch.Tensor:
    """``d``: ``k + 20`` separated top values (ratio 0.985), a bulk in ``[0, 0.05)`` below."""
    gen = torch.Generator().manual_seed(0)
    n_top = k + 20
    top = 2.0 * 0.985 ** torch.arange(n_top, dtype=torch.float64)
    bulk = 0.05 * torch.rand(P - n_top, generator=gen, dtype=torch.float64)
    return torch.cat([top, bulk])[torch.randperm(P, generator=gen)]


class SplitHouseholder(LinearOperator):
    """``A = H diag(d) H`` with this rank holding ``d_r`` (``Σ_r d_r = d``)."""

    def __init__(self, P: int, k: int, rank: int, world_size: int, group: Any) -> None:
        self.shape, self.dtype, self.device = (P, P), torch.float64, torch.device("cpu")
        self.process_group = group
        gen = torch.Generator().manual_seed(1)
        u = torch.randn(P, generator=gen, dtype=torch.float64)
        self.u = (u / u.norm()).unsqueeze(1)
        d = spectrum(P, k)
        shares = torch.rand(world_size, P, generator=gen, dtype=torch.float64) + 0.5
        self.d = (d * shares[rank] / shares.sum(dim=0)).unsqueeze(1)

    def _reflect(self, V: torch.Tensor) -> torch.Tensor:
        return V - 2.0 * self.u @ (self.u.mT @ V)

    def local_matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self._reflect(self.d * self._reflect(V))

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = self.local_matmat(V)
        if self.process_group is not None:
            dist.all_reduce(out, group=self.process_group)
        return out


def _vm_hwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def _rank(rank: int, world_size: int, init: str, args: argparse.Namespace, q: Any) -> None:
    torch.set_num_threads(args.threads if world_size == 1 else 1)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    group = resolve_group(None)
    op = SplitHouseholder(args.P, args.k, rank, world_size, group)
    if group is not None:
        dist.barrier(group=group)
    t0 = time.perf_counter()
    res = eigsh(op, args.k, block_size=args.block_size, seed=0, tol=args.tol)
    wall = time.perf_counter() - t0
    n = op.shape[0] if res.sharding is None else res.sharding.stop - res.sharding.start
    q.put(
        {
            "rank": rank,
            "wall_s": wall,
            "num_matvecs": res.num_matvecs,
            "num_restarts": res.num_restarts,
            "max_basis": res.max_basis,
            "rows": n,
            "converged": res.num_converged,
            "values": res.eigenvalues.tolist(),  # plain: tensors cannot outlive the rank
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "vmhwm_mib": _vm_hwm_kib() / 1024,
        }
    )
    if world_size > 1:
        dist.destroy_process_group()


def _collectives(rank: int, world_size: int, init: str, args: argparse.Namespace, q: Any) -> None:
    """Median times of the reduce-scatter of one ``[P, B]`` product, three ways."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    P, B = args.P, args.block_size
    lo, hi = shard_range(P, world_size, rank)
    full = torch.randn(P, B, dtype=torch.float64, generator=torch.Generator().manual_seed(rank))
    want = full.clone()
    dist.all_reduce(want)
    times: dict[str, list[float]] = {
        "all_reduce + slice": [],
        "reduce_scatter": [],
        "reduce per slice": [],
    }
    for _ in range(args.repeats):
        for name in times:
            x = full.clone()
            dist.barrier()
            t0 = time.perf_counter()
            if name == "all_reduce + slice":
                dist.all_reduce(x)
                out = x[lo:hi]
            elif name == "reduce_scatter":  # P even here: no padding
                out = torch.empty(hi - lo, B, dtype=x.dtype)
                dist.reduce_scatter_single(out, x)
            else:
                for r in range(world_size):
                    a, b = shard_range(P, world_size, r)
                    dist.reduce(x[a:b], dst=r)
                out = x[lo:hi]
            times[name].append(time.perf_counter() - t0)
            torch.testing.assert_close(out, want[lo:hi], rtol=1e-12, atol=1e-12)
    q.put({"rank": rank, **{k: sorted(v)[len(v) // 2] for k, v in times.items()}})
    dist.destroy_process_group()


def run(world_size: int, args: argparse.Namespace, target: Any = None) -> list[dict[str, Any]]:
    """One eigsh run (or ``target``) on ``world_size`` fresh processes; each rank's report."""
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{tmp}/store"
        procs = [
            ctx.Process(target=target or _rank, args=(r, world_size, init, args, q))
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        out = [q.get() for _ in procs]
        for p in procs:
            p.join()
    return sorted(out, key=lambda o: o["rank"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--P", type=int, default=2_000_000)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--block-size", type=int, default=8)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the 1-process run")
    ap.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--collectives", action="store_true", help="time the reduce-scatter only")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.collectives:
        print(f"reduce-scatter of a [P, B] = [{args.P:,}, {args.block_size}] float64 block, gloo")
        for o in run(2, args, _collectives):
            print(
                ", ".join(
                    f"{k}: {v * 1e3:.1f} ms" if k != "rank" else f"rank {v}" for k, v in o.items()
                )
            )
        return
    exact = torch.sort(spectrum(args.P, args.k), descending=True).values[: args.k]
    print(f"P = {args.P:,}, k = {args.k}, B = {args.block_size}, float64, tol = {args.tol:g}")
    print(
        "| ranks | rank | rows | max_basis | basis MiB (M·rows·8) | peak RSS MiB | VmHWM MiB "
        "| wall s | products | restarts | converged | max rel err vs exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    peaks: dict[int, float] = {}
    for W in args.world_sizes:
        for o in run(W, args):
            err = float(
                ((torch.tensor(o["values"], dtype=torch.float64) - exact).abs() / exact.abs()).max()
            )
            basis = o["max_basis"] * o["rows"] * 8 / 2**20
            print(
                f"| {W} | {o['rank']} | {o['rows']:,} | {o['max_basis']} | {basis:.0f} "
                f"| {o['maxrss_mib']:.0f} | {o['vmhwm_mib']:.0f} | {o['wall_s']:.1f} "
                f"| {o['num_matvecs']} | {o['num_restarts']} | {o['converged']}/{args.k} "
                f"| {err:.1e} |"
            )
            peaks[W] = max(peaks.get(W, 0.0), o["maxrss_mib"])
    if 1 in peaks:
        for W, peak in sorted(peaks.items()):
            ratio = peak / peaks[1]
            print(f"ranks {W}: largest peak RSS per rank / 1 process = {ratio:.2f}")
    print(f"(1 MiB = 2^20 bytes; ceil(P/W) rows per rank = {math.ceil(args.P / 2):,} at W = 2)")


if __name__ == "__main__":
    main()
