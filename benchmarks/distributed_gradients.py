"""The gradient covariance spectrum of the digits MLP on 1 process against 2 gloo processes.

    python benchmarks/distributed_gradients.py [--problems mlp mlp8k mlp8k_free] [--smoke]
        [--memory-only]

Problems (float64, the 301,066-parameter ReLU MLP trained on the digits, benchmarks/digits_mlp.py):

- ``mlp``: all N = 1797 samples, every eigenvalue (the assembled Gram, ``eigvalsh``);
- ``mlp8k``: N = 8000 (the digits repeated with Gaussian jitter of 0.1), top 50 by Lanczos on
  the assembled Gram (blocks computed across ranks by the ring of layer factors);
- ``mlp8k_free``: the same samples, top 20 by the matrix-free Lanczos (``gram_max_bytes=0``).

One process runs with 2 threads; two processes (``python -m torch.distributed.run
--nproc_per_node=2``, gloo) with 1 thread each, each holding a balanced consecutive shard of the
samples. Every configuration runs in fresh processes after a warm-up call on 8 samples; time is
the slowest rank's wall time of ``gradient_covariance_spectrum``, peak RSS each rank's ``VmHWM``.
The parent checks that both give the same eigenvalues. Writes
benchmarks/results/distributed_gradients.md (or prints only, with --smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
OPTIONS: dict[str, dict[str, Any]] = {
    "mlp": {},
    "mlp8k": {"k": 50, "method": "lanczos", "tol": 1e-8},
    "mlp8k_free": {"k": 20, "method": "lanczos", "tol": 1e-8, "gram_max_bytes": 0},
}


def samples(name: str, smoke: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from digits_mlp import digits

    X, y = digits()
    if name == "mlp":
        return (X[:300], y[:300]) if smoke else (X, y)
    N = 600 if smoke else 8000
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(N) % len(X)
    return X[idx] + 0.1 * torch.randn(N, X.shape[1], generator=g, dtype=X.dtype), y[idx]


def peak_rss_mb() -> float:
    """Peak resident memory of this process image (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(name: str, smoke: bool, state: str, out: str) -> None:
    """One rank (or the one process): its shard, a warm-up, the timed spectrum."""
    import torch.distributed as dist
    from digits_mlp import mlp

    from fastspec.distributed import shard_range
    from fastspec.grads import gradient_covariance_spectrum

    W = int(os.environ.get("WORLD_SIZE", "1"))
    if W > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if W > 1 else 0
    model = mlp(width=32 if smoke else 512)
    model.load_state_dict(torch.load(state))
    model.eval()
    X, y = samples(name, smoke)
    lo, hi = shard_range(len(X), W, rank)
    loss = nn.CrossEntropyLoss()
    result: dict[str, Any] = {"baseline_mb": peak_rss_mb()}
    w_lo, w_hi = shard_range(8, W, rank)
    gradient_covariance_spectrum(model, loss, (X[w_lo:w_hi], y[w_lo:w_hi]))  # warm-up
    if W > 1:
        dist.barrier()
    start = time.perf_counter()
    res = gradient_covariance_spectrum(model, loss, (X[lo:hi], y[lo:hi]), **OPTIONS[name])
    result["seconds"] = time.perf_counter() - start
    result["peak_mb"] = peak_rss_mb()
    result["residual"] = None if res.residuals is None else float(res.residuals.max())
    if rank == 0:
        torch.save(res.eigenvalues, out + ".pt")
    Path(f"{out}.{rank}.json").write_text(json.dumps(result))
    if W > 1:
        dist.destroy_process_group()


def run(name: str, W: int, smoke: bool, state: str, tmp: str) -> dict[str, Any]:
    out = f"{tmp}/{name}.{W}"
    args = [__file__, "--worker", name, "--state", state, "--out", out] + (["--smoke"] * smoke)
    env = {**os.environ, "OMP_NUM_THREADS": "2" if W == 1 else "1"}
    if W == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={W}", *args]
    subprocess.run(cmd, env=env, check=True)
    ranks = [json.loads(Path(f"{out}.{r}.json").read_text()) for r in range(W)]
    print(f"{name}, {W} process(es): {ranks}", flush=True)
    return {"ranks": ranks, "values": torch.load(out + ".pt")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", nargs="*", default=list(OPTIONS))
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument(
        "--memory-only",
        action="store_true",
        help="record peak RSS and answers but no times (a run that shares the machine)",
    )
    ap.add_argument("--worker")
    ap.add_argument("--state")
    ap.add_argument("--out")
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    if a.worker:
        worker(a.worker, a.smoke, a.state, a.out)
        return
    from digits_mlp import digits, mlp, train

    X, y = digits()
    torch.manual_seed(0)
    model = train(mlp(width=32 if a.smoke else 512), X, y, epochs=2 if a.smoke else 30, seed=0)
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        state = f"{tmp}/state.pt"
        torch.save(model.state_dict(), state)
        for name in a.problems:
            one, two = run(name, 1, a.smoke, state, tmp), run(name, 2, a.smoke, state, tmp)
            ref = one["values"]
            diff = float((two["values"] - ref).abs().max() / ref[0])
            for W, r in ((1, one), (2, two)):
                secs = max(x["seconds"] for x in r["ranks"])
                peaks = " / ".join(f"{x['peak_mb']:.0f} MB" for x in r["ranks"])
                base = " / ".join(f"{x['baseline_mb']:.0f} MB" for x in r["ranks"])
                ratio = "" if W == 1 else f"{max(x['seconds'] for x in one['ranks']) / secs:.2f}×"
                residual = r["ranks"][0]["residual"]
                rows.append(
                    [
                        name,
                        W,
                        f"{secs:.2f} s",
                        ratio,
                        peaks,
                        base,
                        "—" if residual is None else f"{residual:.1e}",
                        f"{diff:.1e}" if W == 2 else "",
                    ]
                )
            notes.append(
                f"- {name}: N = {len(samples(name, a.smoke)[0])}, {OPTIONS[name] or 'every eigenvalue'}"
            )
    header = ["problem", "processes", "time", "speed-up", "peak RSS per rank", "RSS before",
              "max residual", "max |Δλ|/λ₁ vs 1 process"]  # fmt: skip
    text = "\n".join(notes) + (
        "\n\nOne process with OMP_NUM_THREADS=2; two gloo processes (torch.distributed.run) with "
        "1 thread each, each holding a balanced consecutive shard. Time: the slowest rank, after a "
        "warm-up call on 8 samples; peak RSS: each rank's VmHWM (torch, data and model are in the "
        "'before' column)."
    )
    if a.memory_only:
        header = [h for i, h in enumerate(header) if i not in (2, 3)]
        rows = [[c for i, c in enumerate(row) if i not in (2, 3)] for row in rows]
        text += "\n\nTimes not recorded: this run shared the machine with other work."
    if a.smoke:
        print(rows, text, sep="\n")
        return
    from record import write_markdown

    write_markdown(
        "distributed_gradients",
        "Gradient covariance spectrum: 1 process against 2 gloo processes",
        header,
        rows,
        text,
    )


if __name__ == "__main__":
    main()
