"""Top Hessian eigenvalues of a digits model: fastspec against curvlinops + scipy eigsh,
hessian-eigenthings' lanczos and PyHessian, side by side in one process.

    python benchmarks/side_by_side_hessian.py [--k 100] [--tol 1e-6] [--skip rebuilt pyhessian ...]
    python benchmarks/side_by_side_hessian.py --device cuda                  # the same on a GPU
    python benchmarks/side_by_side_hessian.py --device cuda --model resnet   # the GPU's CNN
    python benchmarks/side_by_side_hessian.py --smoke --model resnet --skip curvlinops  # CI

The problems: `--model mlp` (benchmarks/digits_mlp.py), a 301,066-parameter float64 ReLU MLP;
`--model resnet` (benchmarks/digits_resnet.py), a 308,074-parameter float64 ResNet-style CNN with
BatchNorm (eval mode); both trained on the 1797 digits. The Hessian is that of the full-data
mean cross-entropy. Accuracy is judged by one certificate for every method: each returned
eigenpair's residual ‖Hv − λv‖/|λ| recomputed with fastspec's operator (methods that return no
vectors are compared on eigenvalues with the most accurate run). Writes
benchmarks/results/hessian_vs_peers.md (MLP on the CPU) or hessian_vs_peers_<model>_<device>.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import warnings

import numpy as np
import torch
from digits_mlp import digits, mlp, train, trained_mlp
from digits_resnet import trained_resnet
from record import fair_blas_threads, write_markdown
from torch import nn

from fastspec.curvature import HessianOperator
from fastspec.linalg import eigsh


def residuals(op: HessianOperator, values: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    HV = torch.cat([op.matmat(vectors[:, i : i + 25]) for i in range(0, vectors.shape[1], 25)], 1)
    return torch.linalg.norm(HV - vectors * values, dim=0) / values.abs()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def graph_note(op: HessianOperator) -> str:
    """What the operator decided about the gradient graph (known after its first product)."""
    if op.graph_cached:
        return ", gradient graph kept"
    return ", graph rebuilt per product" if op.method == "double_backward" else ""


def problem(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The trained model and the data of the Hessian (the first ``--samples`` digits)."""
    device = torch.device(args.device)
    epochs = 1 if args.smoke else 30
    if args.model == "resnet":
        model, X, y = trained_resnet(4 if args.smoke else 32, epochs, device=args.device)
    elif args.smoke:
        X, y = digits()
        torch.manual_seed(0)
        model = train(mlp(16), X, y, epochs=epochs, seed=0)
    else:
        model, X, y = trained_mlp()
    n = args.samples or (200 if args.smoke else len(X))
    return model.to(device), X[:n].to(device), y[:n].to(device)


def hvp_cost(
    model: nn.Module, loss: nn.Module, data: list, X: torch.Tensor, y: torch.Tensor
) -> list[list[str]]:
    """Seconds per Hessian-vector product, in blocks of 1 and 16, per gradient."""
    params = list(model.parameters())

    def gradient() -> None:
        torch.autograd.grad(nn.functional.cross_entropy(model(X), y), params)

    gradient()
    sync(X.device)
    start = time.perf_counter()
    for _ in range(5):
        gradient()
    sync(X.device)
    t_grad = (time.perf_counter() - start) / 5
    rows = []
    for label, options in [
        ("double_backward, gradient graph kept", {"hvp": "double_backward", "cache_graph": True}),
        ("double_backward, graph rebuilt", {"hvp": "double_backward", "cache_graph": False}),
        ("forward_over_reverse", {"hvp": "forward_over_reverse"}),
    ]:
        op = HessianOperator(model, loss, data, **options)
        for B in (1, 16):
            V = torch.randn(op.shape[0], B, dtype=torch.float64, device=X.device)
            op.matmat(V)
            sync(X.device)
            start = time.perf_counter()
            op.matmat(V)
            sync(X.device)
            per = (time.perf_counter() - start) / B
            rows.append([label, B, f"{per * 1e3:.0f} ms", f"{per / t_grad:.2f}"])
    rows.append(["gradient (reference)", 1, f"{t_grad * 1e3:.0f} ms", "1.00"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=None, help="default 100 (4 with --smoke)")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--eigenthings-steps", type=int, default=None, help="default 3k")
    parser.add_argument("--model", choices=["mlp", "resnet"], default="mlp")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=None, help="default all (200 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny model and data (CI)")
    args = parser.parse_args(argv)
    k, tol = args.k or (4 if args.smoke else 100), args.tol
    steps = args.eigenthings_steps or 3 * k
    device = torch.device(args.device)
    for peer, module in [("curvlinops", "curvlinops"), ("eigenthings", "hessian_eigenthings"),
                         ("pyhessian", "pyhessian")]:  # fmt: skip
        if peer not in args.skip and importlib.util.find_spec(module) is None:
            print(f"{module} is not installed: its row is skipped", flush=True)
            args.skip.append(peer)
    model, X, y = problem(args)
    loss = nn.CrossEntropyLoss()
    data = [(X, y)]
    op = HessianOperator(model, loss, data)
    P = op.shape[0]
    with torch.no_grad():
        print(f"P = {P}, N = {len(X)}, train loss = {float(loss(model(X), y)):.4f}", flush=True)
    runs: dict[str, dict] = {}

    def fastspec_run(name: str, operator: HessianOperator, pairs: int, note: str = "") -> None:
        start = time.perf_counter()
        r = eigsh(operator, pairs, tol=tol, seed=0, return_eigenvectors=True)
        sync(device)
        runs[name] = {
            "time": time.perf_counter() - start, "values": r.eigenvalues, "vectors": r.eigenvectors,
            "matvecs": r.num_matvecs,
            "note": f"block {r.block_size}, basis {r.max_basis}, hvp {operator.method}"
            + graph_note(operator) + note,
        }  # fmt: skip
        print(name, runs[name]["time"], r.num_matvecs, flush=True)

    fastspec_run("fastspec eigsh", op, k)
    if "rebuilt" not in args.skip:  # the same solver with the graph rebuilt for every product
        fresh = HessianOperator(model, loss, data, cache_graph=False)
        fastspec_run("fastspec eigsh, cache_graph=False", fresh, k)

    if "curvlinops" not in args.skip:
        from curvlinops import HessianLinearOperator
        from scipy.sparse.linalg import eigsh as scipy_eigsh

        H = HessianLinearOperator(model, loss, list(model.parameters()), data).to_scipy()
        counter = {"n": 0}
        matvec = H.matvec

        def counted(v):  # type: ignore[no-untyped-def]
            counter["n"] += 1
            return matvec(v)

        H.matvec = counted  # type: ignore[method-assign]
        start = time.perf_counter()
        vals, vecs = scipy_eigsh(H, k=k, which="LA", tol=tol)
        order = np.argsort(vals)[::-1]
        runs["curvlinops + scipy eigsh"] = {
            "time": time.perf_counter() - start,
            "values": torch.from_numpy(vals[order].copy()).to(device),
            "vectors": torch.from_numpy(vecs[:, order].copy()).to(device),
            "matvecs": counter["n"], "note": "ARPACK, one HVP at a time",
        }  # fmt: skip
        print("curvlinops", runs["curvlinops + scipy eigsh"]["time"], flush=True)

    if "eigenthings" not in args.skip:
        import hessian_eigenthings as he

        hop = he.HessianOperator(model, data, he.supervised_loss(loss))
        start = time.perf_counter()
        out = he.lanczos(hop, k=k, max_iter=steps, which="LA", tol=tol, seed=0)
        sync(device)
        vals = torch.as_tensor(out.eigenvalues, dtype=torch.float64, device=device)
        vecs = torch.as_tensor(out.eigenvectors, dtype=torch.float64, device=device)
        if vecs.shape[0] != P:
            vecs = vecs.T
        order = torch.argsort(vals, descending=True)
        runs[f"hessian-eigenthings lanczos ({steps} steps)"] = {
            "time": time.perf_counter() - start, "values": vals[order], "vectors": vecs[:, order],
            "matvecs": steps, "note": "single-vector Lanczos, no restart",
        }  # fmt: skip
        print("eigenthings", time.perf_counter() - start, flush=True)

    if "pyhessian" not in args.skip:
        from pyhessian import hessian as pyhessian

        top = min(10, k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            ph = pyhessian(model, loss, data=(X, y), cuda=device.type == "cuda")
            vals, vecs = ph.eigenvalues(maxIter=100, tol=1e-3, top_n=top)
            sync(device)
        vecs = torch.stack([torch.cat([t.reshape(-1) for t in v]) for v in vecs], 1)
        runs[f"PyHessian (top {top} only)"] = {
            "time": time.perf_counter() - start,
            "values": torch.tensor(vals, dtype=torch.float64, device=device),
            "vectors": vecs.double(), "matvecs": None, "note": "power iteration + deflation, its tol 1e-3",
        }  # fmt: skip
        fastspec_run(f"fastspec eigsh (top {top})", op, top, ", for the PyHessian row")

    ref = runs["fastspec eigsh"]["values"]
    rows = []
    for name, r in runs.items():
        n = len(r["values"])
        err = float(((r["values"] - ref[:n]).abs() / ref[:n].abs()).max())
        r["same_answers"] = err <= 10 * tol
        res_max = (
            float(residuals(op, r["values"], r["vectors"]).max())
            if r["vectors"] is not None
            else float("nan")
        )
        rows.append([name, n, f"{r['time']:.1f}", r["matvecs"] if r["matvecs"] is not None else "?",
                     f"{res_max:.1e}", f"{err:.1e}", r["note"]])  # fmt: skip
    t_fs = runs["fastspec eigsh"]["time"]
    notes = [f"P = {P}; N = {len(X)}; k = {k}; tol = {tol}."]
    for name, r in runs.items():
        if name.startswith(("fastspec", "PyHessian")) or len(r["values"]) != k:
            continue
        if r["same_answers"]:
            notes.append(f"- speed-up of fastspec over {name}: **{r['time'] / t_fs:.1f}x**")
        else:
            notes.append(
                f"- {name} did not reach the same answers (its sorted eigenvalues differ from the "
                f"converged top {k} by up to {float(((r['values'] - ref).abs() / ref.abs()).max()):.0e} "
                "relative), so it is not compared on time"
            )
    cost = hvp_cost(model, loss, data, X, y)
    notes.append("\nCost of one Hessian-vector product (fastspec, full data), per vector:\n")
    notes.append("| method | block | time per vector | in gradients |\n|---|---|---|---|")
    notes += ["| " + " | ".join(str(c) for c in row) + " |" for row in cost]
    name = "hessian_vs_peers"
    if (args.model, device.type) != ("mlp", "cpu"):
        name += f"_{args.model}_{device.type}"
    label = {"mlp": "MLP", "resnet": "ResNet-style CNN"}[args.model]
    write_markdown(
        name + ("_smoke" if args.smoke else ""),
        f"Top-{k} Hessian eigenvalues of the digits {label} ({device.type}), fastspec vs peers",
        [
            "method",
            "pairs",
            "seconds",
            "matvecs",
            "max residual (recomputed)",
            "max rel. eigenvalue diff vs fastspec",
            "notes",
        ],
        rows,
        "\n".join(notes),
    )


if __name__ == "__main__":
    fair_blas_threads()
    main()
