"""Top-k eigenpairs of a power-law operator: fastspec.linalg.eigsh vs scipy ARPACK vs
hessian-eigenthings' lanczos, side by side in one process on the same operator.

The operator is ``A = H D Hᵀ`` with ``D = diag(λ)``, ``λ_i = i^(−s)`` (randomly permuted) and ``H``
a product of three Householder reflections, applied implicitly (``O(P)`` per vector), float64.
The spectrum is known exactly, so every method's answer is checked against it. Matvecs are
counted at the operator; wall time is measured around each solver call only. Accuracy is
reported as the largest relative eigenvalue error over the top k and the largest relative
residual ``‖Av − θv‖/|θ|`` recomputed afterwards (outside the timing, not counted).

Usage::

    python benchmarks/side_by_side_eigsh.py --P 20000 --k 100 --out results.md
    python benchmarks/side_by_side_eigsh.py --smoke      # tiny sizes, for CI

hessian-eigenthings is optional (``pip install hessian-eigenthings==1.0.0a5 --no-deps``); its rows
are skipped when it is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy
import scipy.sparse.linalg as spla
import torch
from record import fair_blas_threads

import fastspec
from fastspec.linalg import LinearOperator, eigsh


class PowerLawOperator(LinearOperator):
    """``H diag(λ) Hᵀ`` with three implicit Householder reflections; counts matvecs."""

    def __init__(self, P: int, s: float, *, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.shape = (P, P)
        self.dtype = torch.float64
        self.device = torch.device("cpu")
        self.eigenvalues = torch.arange(1, P + 1, dtype=torch.float64) ** (-s)  # descending
        perm = torch.randperm(P, generator=gen)
        self.d = self.eigenvalues[perm].unsqueeze(1)
        U = torch.randn(3, P, generator=gen, dtype=torch.float64)
        self.U = U / U.norm(dim=1, keepdim=True)
        self.calls = 0

    def _reflect(self, V: torch.Tensor, order: range) -> torch.Tensor:
        for i in order:
            V = V - 2.0 * torch.outer(self.U[i], self.U[i] @ V)
        return V

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """Uncounted product (for the accuracy check)."""
        return self._reflect(self.d * self._reflect(V, range(3)), range(2, -1, -1))

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.calls += V.shape[1]
        return self.apply(V)


def accuracy(
    op: PowerLawOperator, theta: np.ndarray, vecs: torch.Tensor | None, k: int
) -> dict[str, Any]:
    """Relative eigenvalue error against the exact top k; recomputed residuals.

    ``theta[i]`` and ``vecs[:, i]`` are a returned pair; the residual is
    ``‖Av − θv‖ / (|θ| ‖v‖)`` with the returned ``θ``.
    """
    theta = np.asarray(theta, dtype=np.float64)
    srt = np.sort(theta)[::-1][:k]
    ref = op.eigenvalues[: srt.shape[0]].numpy()
    out: dict[str, Any] = {
        "num_returned": int(theta.shape[0]),
        "max_rel_err": float(np.max(np.abs(srt - ref) / ref)) if srt.shape[0] else float("nan"),
    }
    if vecs is not None:
        lam = torch.as_tensor(theta, dtype=torch.float64)
        nrm = torch.linalg.vector_norm(vecs, dim=0)
        res = torch.linalg.vector_norm(op.apply(vecs) - vecs * lam, dim=0) / (lam.abs() * nrm)
        out["max_rel_residual"] = float(res.max())
        out["num_residual_le_tol"] = int((res <= TOL).sum())
    return out


TOL = 1e-6


def run_fastspec(
    op: PowerLawOperator, k: int, seed: int, block_size: int | None = None
) -> dict[str, Any]:
    op.calls = 0
    t0 = time.perf_counter()
    res = eigsh(
        op, k, which="LA", tol=TOL, seed=seed, block_size=block_size, return_eigenvectors=True
    )
    wall = time.perf_counter() - t0
    assert res.eigenvectors is not None
    out = {
        "method": f"fastspec eigsh ({'default ' if block_size is None else ''}"
        f"B={res.block_size}, max_basis={res.max_basis})",
        "wall_s": wall,
        "matvecs": op.calls,
        "reported_converged": res.num_converged,
        "restarts": res.num_restarts,
    }
    out.update(accuracy(op, res.eigenvalues.numpy(), res.eigenvectors, k))
    return out


def run_arpack(op: PowerLawOperator, k: int, seed: int) -> dict[str, Any]:
    P = op.shape[0]

    def mv(x: np.ndarray) -> np.ndarray:
        X = torch.from_numpy(np.ascontiguousarray(x).reshape(P, -1))
        return op.matmat(X).numpy().reshape(x.shape)

    L = spla.LinearOperator((P, P), matvec=mv, matmat=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(P)
    op.calls = 0
    t0 = time.perf_counter()
    w, V = spla.eigsh(L, k=k, which="LA", tol=TOL, v0=v0)
    wall = time.perf_counter() - t0
    out = {
        "method": f"scipy.sparse.linalg.eigsh (ARPACK, ncv={min(P, max(2 * k + 1, 20))})",
        "wall_s": wall,
        "matvecs": op.calls,
        "reported_converged": k,  # ARPACK raises if it does not converge
        "restarts": None,
    }
    out.update(accuracy(op, w, torch.from_numpy(V), k))
    return out


def run_hessian_eigenthings(
    op: PowerLawOperator, k: int, seed: int, *, reorthogonalize: bool | None, max_iter: int | None
) -> dict[str, Any] | None:
    try:
        from hessian_eigenthings.algorithms.lanczos import lanczos
        from hessian_eigenthings.operators.base import LambdaOperator
    except ImportError:
        return None
    P = op.shape[0]
    he_op = LambdaOperator(
        lambda v: op.matmat(v.reshape(P, 1)).reshape(P), P, device="cpu", dtype=torch.float64
    )
    op.calls = 0
    t0 = time.perf_counter()
    res = lanczos(
        he_op,
        k=k,
        max_iter=max_iter,
        tol=TOL,
        which="LA",
        seed=seed,
        reorthogonalize=reorthogonalize,
    )
    wall = time.perf_counter() - t0
    steps = max_iter if max_iter is not None else min(2 * k, P - 1)
    reorth = reorthogonalize if reorthogonalize is not None else steps <= 50
    out = {
        "method": f"hessian-eigenthings lanczos (max_iter={steps}, reorthogonalize={reorth})",
        "wall_s": wall,
        "matvecs": op.calls,
        "reported_converged": int(res.converged.sum()),
        "restarts": None,
    }
    out.update(accuracy(op, res.eigenvalues.numpy(), res.eigenvectors.T.contiguous(), k))
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "fastspec": fastspec.__version__,
        "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset"),
    }
    try:
        import importlib.metadata as md

        info["hessian_eigenthings"] = md.version("hessian-eigenthings")
    except Exception:
        info["hessian_eigenthings"] = None
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = os.getloadavg()
    return info


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| method | matvecs | wall (s) | max rel. eigenvalue error | max rel. residual "
        "| residual ≤ tol | reported converged |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['matvecs']} | {r['wall_s']:.2f} | {r['max_rel_err']:.2e} "
            f"| {r.get('max_rel_residual', float('nan')):.2e} | {r.get('num_residual_le_tol')}"
            f"/{r['num_returned']} | {r['reported_converged']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--P", type=int, nargs="+", default=[20_000])
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--s", type=float, default=1.0, help="power-law exponent, λ_i = i^-s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--repeat", type=int, default=1, help="runs per method; the fastest is kept")
    ap.add_argument("--smoke", action="store_true", help="P=2000, k=10 (CI smoke run)")
    ap.add_argument("--out", default=None, help="write the markdown report here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.P, args.k = [2000], 10
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = machine()
    runners: list[Callable[[PowerLawOperator], dict[str, Any] | None]] = [
        lambda op: run_fastspec(op, args.k, args.seed),
        lambda op: run_fastspec(op, args.k, args.seed, block_size=1),
        lambda op: run_arpack(op, args.k, args.seed),
        lambda op: run_hessian_eigenthings(
            op, args.k, args.seed, reorthogonalize=None, max_iter=None
        ),
        lambda op: run_hessian_eigenthings(
            op, args.k, args.seed, reorthogonalize=True, max_iter=None
        ),
        lambda op: run_hessian_eigenthings(
            op, args.k, args.seed, reorthogonalize=True, max_iter=3 * args.k
        ),
    ]
    sections = []
    all_rows = {}
    for P in args.P:
        op = PowerLawOperator(P, args.s, seed=args.seed)
        rows = []
        for run in runners:
            best: dict[str, Any] | None = None
            for _ in range(args.repeat):
                r = run(op)
                if r is None:
                    break
                if best is None or r["wall_s"] < best["wall_s"]:
                    best = r
            if best is not None:
                rows.append(best)
                print(json.dumps(best), flush=True)
        # correctness before timing: fastspec must match the exact spectrum
        assert rows[0]["max_rel_err"] < 1e-8 and rows[0]["num_residual_le_tol"] == args.k, rows[0]
        all_rows[P] = rows
        sections.append(
            f"### P = {P}, top k = {args.k}, λ_i = i^-{args.s:g}, float64, tol = {TOL:g}\n\n"
            + table(rows)
        )
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = os.getloadavg()
    cmd = "python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])])
    report = (
        "## eigsh vs peers\n\n"
        f"Command: `{cmd}`\n\n"
        f"Machine: {json.dumps(info)}\n\n" + "\n\n".join(sections) + "\n"
    )
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    fair_blas_threads()
    raise SystemExit(main())
