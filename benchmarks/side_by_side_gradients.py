"""The full covariance spectrum of per-sample gradients: fastspec against torch.func
``vmap(grad)`` + Gram, Opacus + Gram and BackPACK + Gram, side by side.

    python benchmarks/side_by_side_gradients.py [--problems mlp transformer] [--skip opacus] [--smoke]

Problems (float64):

- ``mlp``: the 301,066-parameter ReLU MLP trained on the 1797 digits (benchmarks/digits_mlp.py),
  all N = 1797 samples, per-sample mean cross-entropy.
- ``mlp20k``: the same trained MLP on N = 20,000 samples (the digits, repeated with Gaussian
  jitter of 0.1), top 100 eigenvalues (Lanczos on the assembled 20,000 × 20,000 Gram); fastspec
  only: the peers' G [N, P] alone would take 48 GB.
- ``transformer``: a 2-block GPT-style transformer (d = 64, 4 heads, token and position
  embeddings, LayerNorm, GELU MLP, causal ``scaled_dot_product_attention``; 81,728 parameters)
  on N = 512 random sequences of length T = 64, next-token cross-entropy averaged over a
  sequence's tokens as the per-sample loss.

Every method returns all N eigenvalues of the centred gradient covariance (the eigenvalues of
(1/N)(G − 1ḡᵀ)(G − 1ḡᵀ)ᵀ); the peers materialise G [N, P], centre it, form the Gram with one GEMM
and call ``eigvalsh``. Each method runs in its own subprocess so that its peak resident memory
(``VmHWM``, which counts torch's CPU tensors, unlike tracemalloc) is its own; the parent
compares every spectrum with fastspec's and times one full-data gradient pass as the unit of
cost. Writes benchmarks/results/gradients_vs_peers.md (or prints only, with --smoke).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
METHODS = ("fastspec", "torch.func", "opacus", "backpack")
EXTRA: dict[str, Any] = {}  # facts a runner reports besides its eigenvalues


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (t.reshape(n, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(n, T, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 64, T: int = 64, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(T, d)
        self.blocks = nn.Sequential(Block(d, heads), Block(d, heads))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, T = tokens.shape
        positions = torch.arange(T, device=tokens.device).expand(n, T)
        return self.head(self.ln(self.blocks(self.tok(tokens) + self.pos(positions))))


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def build(name: str, smoke: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor, Any]:
    """(model, inputs, targets, loss) of a problem, deterministic."""
    if name == "mlp":
        from digits_mlp import digits, mlp, trained_mlp

        if smoke:
            X, y = digits()
            torch.manual_seed(0)
            return mlp(width=32).eval(), X[:100], y[:100], nn.CrossEntropyLoss()
        model, X, y = trained_mlp()
        return model, X, y, nn.CrossEntropyLoss()
    if name == "mlp20k":
        from digits_mlp import trained_mlp

        model, X, y = trained_mlp()
        N = 200 if smoke else 20_000
        g = torch.Generator().manual_seed(0)
        idx = torch.arange(N) % len(X)
        X = X[idx] + 0.1 * torch.randn(N, X.shape[1], generator=g, dtype=X.dtype)
        return model, X, y[idx], nn.CrossEntropyLoss()
    torch.manual_seed(0)
    N, T = (16, 16) if smoke else (512, 64)
    model = TinyGPT(T=T).double().eval()
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 64, (N, T + 1), generator=g)
    return model, seq[:, :-1], seq[:, 1:], token_loss


# ---------------------------------------------------------------------------- the methods


def per_sample_loss_sum(loss: Any, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_i ℓ_i for a loss that averages over samples (and, for sequences, over positions)."""
    return loss(out, y) * y.shape[0]


def run_fastspec(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: Any) -> torch.Tensor:
    from fastspec.grads import gradient_covariance_spectrum

    k = 100 if len(X) > 6000 else None  # all N eigenvalues where eigvalsh is affordable
    res = gradient_covariance_spectrum(model, loss, (X, y), k=k)
    if res.residuals is not None:
        EXTRA["max_residual"] = float(res.residuals.max())
    return res.eigenvalues


def run_torch_func(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: Any) -> torch.Tensor:
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return loss(functional_call(model, p, (x[None],)), t[None])

    grads = vmap(grad(one), in_dims=(None, 0, 0))(params, X, y)
    G = torch.cat([g.reshape(len(X), -1) for g in grads.values()], dim=1)
    del grads
    return spectrum_of(G)


def run_opacus(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: Any) -> torch.Tensor:
    from opacus import GradSampleModule

    model.train()  # Opacus records activations in train mode only (no dropout/BN here: same function)
    gsm = GradSampleModule(model, loss_reduction="sum")
    per_sample_loss_sum(loss, gsm(X), y).backward()
    G = torch.cat([p.grad_sample.reshape(len(X), -1) for p in model.parameters()], dim=1)
    for p in model.parameters():
        p.grad_sample = None
    return spectrum_of(G)


def run_backpack(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: Any) -> torch.Tensor:
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad

    model = extend(model)
    lossfn = extend(nn.CrossEntropyLoss(reduction="sum"))
    T = y[0].numel()  # the per-sample loss averages over a sequence's T positions
    with backpack(BatchGrad()):
        lossfn(model(X).reshape(-1, 64 if T > 1 else 10), y.reshape(-1)).backward()
    G = torch.cat([p.grad_batch.reshape(len(X), -1) for p in model.parameters()], dim=1) / T
    return spectrum_of(G)


def spectrum_of(G: torch.Tensor) -> torch.Tensor:
    """All eigenvalues of the centred Gram (1/N) Gc Gcᵀ, descending (in place on G)."""
    G -= G.mean(0)
    return torch.linalg.eigvalsh(G @ G.T / G.shape[0]).flip(0)


RUNNERS = {
    "fastspec": run_fastspec,
    "torch.func": run_torch_func,
    "opacus": run_opacus,
    "backpack": run_backpack,
}


def peak_rss_mb() -> float:
    """Peak resident memory of this process image (VmHWM; unlike ru_maxrss it does not inherit
    the parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(method: str, name: str, smoke: bool, out: str) -> None:
    """Run one method in this (fresh) process; write its eigenvalues, time and peak RSS."""
    model, X, y, loss = build(name, smoke)
    result: dict[str, Any] = {"baseline_mb": peak_rss_mb()}
    try:
        RUNNERS[method](copy.deepcopy(model), X[:8], y[:8], loss)  # warm-up: first-call costs
        start = time.perf_counter()
        values = RUNNERS[method](model, X, y, loss)
        result["seconds"] = time.perf_counter() - start
        torch.save(values, out + ".pt")
    except Exception as exc:  # a peer that cannot run this model is a result
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    result["peak_mb"] = peak_rss_mb()
    result.update(EXTRA)
    Path(out).write_text(json.dumps(result))


def gradient_pass(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: Any) -> float:
    """Seconds of one forward/backward pass of the full-data loss (median of 5)."""
    params = list(model.parameters())
    times = []
    for _ in range(6):
        start = time.perf_counter()
        torch.autograd.grad(loss(model(X), y), params)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[2]


def gram_only(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: Any
) -> tuple[float, dict[str, str]]:
    """Seconds of fastspec's Gram matrix (what ``gradient_gram`` runs) and the form chosen
    for each parameter."""
    from fastspec.grads.gram import GradientStore
    from fastspec.grads.problem import GradProblem

    start = time.perf_counter()
    store = GradientStore(GradProblem(model, loss), (X, y))
    store.gram()
    return time.perf_counter() - start, store.forms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", nargs="*", default=["mlp", "transformer", "mlp20k"])
    ap.add_argument("--skip", nargs="*", default=[])
    ap.add_argument("--smoke", action="store_true", help="tiny problems, nothing recorded (CI)")
    ap.add_argument("--results", default="gradients_vs_peers", help="results/<name>.md")
    ap.add_argument(
        "--worker", nargs=3, metavar=("METHOD", "PROBLEM", "OUT"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.smoke, args.worker[2])
        return
    rows, notes = [], []
    for name in args.problems:
        model, X, y, loss = build(name, args.smoke)
        P = sum(p.numel() for p in model.parameters())
        t_grad = gradient_pass(model, X, y, loss)
        t_gram, forms = gram_only(model, X, y, loss) if len(X) <= 6000 else (math.nan, {})
        implicit = [k for k, v in forms.items() if v == "implicit"]
        print(f"{name}: N = {len(X)}, P = {P}, gradient pass {t_grad:.3f} s, Gram {t_gram:.2f} s")
        gram_note = (
            f"fastspec's Gram matrix alone {t_gram:.2f} s = {t_gram / t_grad:.1f} gradient passes; "
            f"weights kept in the implicit Σ_ts form: {', '.join(implicit) or 'none'} "
            "(the rest materialised per chunk, cheaper by the cost model)."
        )
        notes.append(
            f"- {name}: N = {len(X)}, P = {P:,}; one full-data gradient pass {t_grad * 1e3:.0f} ms; "
            + (gram_note if forms else "top 100 eigenvalues by Lanczos.")
        )
        results: dict[str, dict[str, Any]] = {}
        reference: torch.Tensor | None = None
        for method in METHODS:
            if method in args.skip:
                continue
            if name == "mlp20k" and method != "fastspec":
                gb = len(X) * P * 8 / 1e9
                results[method] = {"error": f"not run: G [N, P] alone would take {gb:.0f} GB"}
                continue
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "result.json")
                cmd = [sys.executable, __file__, "--worker", method, name, out]
                cmd += ["--smoke"] if args.smoke else []
                proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, check=False)
                if not os.path.exists(out):
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
                    results[method] = {"error": f"exit {proc.returncode}: {' '.join(tail)[:160]}"}
                    continue
                res = json.loads(Path(out).read_text())
                if "error" not in res:
                    values = torch.load(out + ".pt")
                    if reference is None:
                        reference = values
                    scale = float(reference[0])
                    res["max_rel_err"] = float((values - reference).abs().max()) / scale
                results[method] = res
            print(f"  {method}: {results[method]}", flush=True)
        ok = {m: r for m, r in results.items() if "error" not in r and m != "fastspec"}
        fs = results.get("fastspec", {})
        for method, res in results.items():
            if "error" in res:
                rows.append([name, method, "—", "—", "—", "—", res["error"]])
                continue
            speed = mem = ""
            if "max_residual" in res:
                speed = f"Lanczos residuals ≤ {res['max_residual']:.0e}"
            if method == "fastspec" and ok:
                fastest = min(ok.values(), key=lambda r: r["seconds"])
                leanest = min(ok.values(), key=lambda r: r["peak_mb"])
                speed = f"{fastest['seconds'] / res['seconds']:.1f}× faster than the fastest peer"
                mem = f"{leanest['peak_mb'] / res['peak_mb']:.1f}× less than the leanest peer"
            elif method != "fastspec" and "seconds" in fs:
                speed = f"{res['seconds'] / fs['seconds']:.1f}× fastspec's time"
                mem = f"{res['peak_mb'] / fs['peak_mb']:.1f}× fastspec's peak"
            rows.append([
                name, method, f"{res['seconds']:.2f} s", f"{res['peak_mb']:.0f} MB",
                f"{res['baseline_mb']:.0f} MB", f"{res['max_rel_err']:.1e}", "; ".join(filter(None, (speed, mem))),
            ])  # fmt: skip
        if reference is not None and args.smoke:
            assert all(r.get("max_rel_err", 0.0) < 1e-8 for r in results.values()), results
    header = ["problem", "method", "time", "peak RSS", "RSS before", "max |Δλ|/λ₁", "ratio"]
    note = "\n".join(
        [
            *notes,
            "",
            "Every method computes all N eigenvalues of the centred gradient covariance in "
            "float64 (fastspec: `gradient_covariance_spectrum`; peers: per-sample gradients "
            "[N, P] + centring + one Gram GEMM + `eigvalsh`), each in a fresh subprocess after a warm-up call on 8 samples; peak "
            "RSS is `VmHWM` of that process (torch, the data and the model are in the "
            "'before' column). max |Δλ|/λ₁: largest eigenvalue difference to fastspec's, relative "
            "to the top eigenvalue. OMP_NUM_THREADS as in the environment.",
        ]
    )
    if args.smoke:
        print(rows)
        return
    from record import write_markdown

    write_markdown(
        args.results, "Gradient covariance spectrum: fastspec vs peers", header, rows, note
    )


if __name__ == "__main__":
    main()
