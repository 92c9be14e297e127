"""Peak memory and time of eigsh with its Krylov basis in float64, float32, bfloat16 or spilled.

The operator is cheap so that the basis dominates memory: ``A = H diag(d) H`` with ``H`` one
Householder reflection (``O(P B)`` per block, exact spectrum ``d``: ``k + 20`` separated top
values ``2 · 0.985^i`` and a bulk in ``[0, 0.05)``), float64. Every configuration runs in a
fresh spawned process, so ``ru_maxrss`` is its own peak; a sampling thread also records the
peaks of ``RssAnon`` (heap) and ``RssFile`` (resident pages of mapped files, where a spilled
basis lives) from ``/proc/self/status``. The eigenvalues are checked against the exact top ``k``.

    python benchmarks/basis_storage_memory.py --configs float64 float32 bfloat16 spill-float64

Record: ``benchmarks/results/basis_storage_memory.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from typing import Any

import torch
import torch.multiprocessing as mp
from distributed_basis_memory import spectrum

from fastspec.linalg import LinearOperator, eigsh

#: name → (basis_dtype, spilled, store_products)
CONFIGS: dict[str, tuple[str, bool, bool | None]] = {
    "float64": ("float64", False, None),
    "float64-nostore": ("float64", False, False),
    "float32": ("float32", False, None),
    "bfloat16": ("bfloat16", False, None),
    "spill-float64": ("float64", True, None),
    "spill-float32": ("float32", True, None),
}


class Householder(LinearOperator):
    """``A = H diag(d) H``, ``H = I − 2uuᵀ``."""

    def __init__(self, d: torch.Tensor) -> None:
        P = d.shape[0]
        self.shape, self.dtype, self.device = (P, P), torch.float64, torch.device("cpu")
        u = torch.randn(P, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        self.u = (u / u.norm()).unsqueeze(1)
        self.d = d.unsqueeze(1)

    def _reflect(self, V: torch.Tensor) -> torch.Tensor:
        return V - 2.0 * self.u @ (self.u.mT @ V)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self._reflect(self.d * self._reflect(V))


def _status_kib() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1])
    return out


def _one(name: str, args: argparse.Namespace, q: Any) -> None:
    torch.set_num_threads(args.threads)
    basis_dtype, spilled, store = CONFIGS[name]
    op = Householder(spectrum(args.P, args.k))
    tol = args.tol_bf16 if basis_dtype == "bfloat16" else args.tol
    peaks = {"RssAnon": 0, "RssFile": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for key, v in _status_kib().items():
                if key in peaks:
                    peaks[key] = max(peaks[key], v)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    with tempfile.TemporaryDirectory(dir=args.spill_dir) as spill:
        sampler.start()
        t0 = time.perf_counter()
        res = eigsh(
            op,
            args.k,
            tol=tol,
            seed=0,
            basis_dtype=basis_dtype,
            basis_dir=spill if spilled else None,
            store_products=store,
        )
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
        left = os.listdir(spill)
    exact = torch.sort(spectrum(args.P, args.k), descending=True).values[: args.k]
    err = float(((res.eigenvalues - exact).abs() / exact).max())
    q.put(
        {
            "name": name,
            "tol": tol,
            "wall_s": wall,
            "num_matvecs": res.num_matvecs,
            "num_restarts": res.num_restarts,
            "max_basis": res.max_basis,
            "converged": res.num_converged,
            "max_residual": float(res.residuals.max()),
            "max_rel_err": err,
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "anon_mib": peaks["RssAnon"] / 1024,
            "file_mib": peaks["RssFile"] / 1024,
            "files_left": len(left),
            "dict": {k: v for k, v in res.to_dict().items() if k.startswith("basis")},
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--P", type=int, default=2_000_000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--tol-bf16", type=float, default=1e-2, help="tol of the bfloat16 run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spill-dir", default=None, help="where spilled runs map their basis")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--header", action="store_true", help="print the table header")
    args = ap.parse_args()
    if args.header:
        print(f"P = {args.P:,}, k = {args.k}, float64 operator, default block and basis")
        print(
            "| basis | tol | max_basis | basis MiB | store_products | peak RSS MiB "
            "| peak RssAnon MiB | peak RssFile MiB | wall s | products | restarts | converged "
            "| max residual | max rel err vs exact | files left |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ctx = mp.get_context("spawn")
    for name in args.configs:
        q = ctx.SimpleQueue()
        p = ctx.Process(target=_one, args=(name, args, q))
        p.start()
        o = q.get()
        p.join()
        basis_dtype, _, store = CONFIGS[name]
        # eigsh's default: products stored when the initial basis (B = 2 on CPU) of the
        # operator's dtype takes at most 1 GiB, never with a rounded basis
        m0 = max(2 * args.k + 4, args.k + 12, 24)
        o["store"] = store is not False and basis_dtype == "float64" and m0 * args.P * 8 <= 1 << 30
        size = {"float64": 8, "float32": 4, "bfloat16": 2}[basis_dtype]
        basis = o["max_basis"] * args.P * size * (2 if o["store"] else 1) / 2**20
        print(
            f"| {name} | {o['tol']:g} | {o['max_basis']} | {basis:.0f} | {o['store']} "
            f"| {o['maxrss_mib']:.0f} | {o['anon_mib']:.0f} | {o['file_mib']:.0f} "
            f"| {o['wall_s']:.1f} | {o['num_matvecs']} | {o['num_restarts']} "
            f"| {o['converged']}/{args.k} | {o['max_residual']:.1e} | {o['max_rel_err']:.1e} "
            f"| {o['files_left']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
