"""Peak memory of one Hessian-vector product of a GPT-2-small-size model against a training step.

    python benchmarks/lm_product_memory.py [--layers 12] [--batch 4] [--tokens 64]

Each measurement runs in a fresh process: the model (``transformers.GPT2LMHeadModel`` from its
default config, 124M parameters, float32, SDPA attention, built from the config, no download)
and one dict batch of random tokens, then either one training step (forward, backward and an SGD
update) or two products ``H v`` through ``fastspec.curvature.HessianOperator(model, None,
[batch], hvp=...)`` (the token-mean loss of ``model(**batch).loss``). Peak RSS is the process's
``VmHWM``; "after build" is the RSS once the model and batch exist, so the difference is what the
step or the product adds. Writes benchmarks/results/lm_product_memory.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from record import write_markdown

MODES = ("train step", "double_backward", "forward_over_reverse", "finite_difference")


def rss_gib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(mode: str, layers: int, batch: int, tokens: int) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=layers))
    ids = torch.randint(0, model.config.vocab_size, (batch, tokens))
    data = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}]
    P = sum(p.numel() for p in model.parameters())
    built = rss_gib("VmRSS")
    times = []
    if mode == "train step":
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        start = time.perf_counter()
        model(**data[0]).loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        method = "-"
    else:
        from fastspec.curvature import HessianOperator

        op = HessianOperator(model, None, data, hvp=mode)
        v = torch.randn(op.shape[0], 1)
        for _ in range(2):
            start = time.perf_counter()
            op.matmat(v)
            times.append(time.perf_counter() - start)
        method = str(op.method)
    out = {"P": P, "built": built, "peak": rss_gib("VmHWM"), "times": times, "method": method}
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.layers, args.batch, args.tokens)
        return
    rows, train_peak, P = [], None, 0
    for mode in MODES:
        cmd = [sys.executable, __file__, "--child", mode, "--layers", str(args.layers),
               "--batch", str(args.batch), "--tokens", str(args.tokens)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append([mode, "failed: " + proc.stderr.strip().splitlines()[-1], "", "", "", ""])
            print(rows[-1], flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        P = r["P"]
        if mode == "train step":
            train_peak = r["peak"]
        ratio = f"{r['peak'] / train_peak:.2f}x" if train_peak else ""
        rows.append([mode, r["method"], f"{r['built']:.2f}", f"{r['peak']:.2f}", ratio,
                     " / ".join(f"{t:.1f}" for t in r["times"])])  # fmt: skip
        print(rows[-1], flush=True)
    write_markdown(
        "lm_product_memory",
        f"One Hessian-vector product of GPT-2 ({P / 1e6:.0f}M parameters, {args.layers} layers, "
        f"batch {args.batch} x {args.tokens} tokens, float32) against one training step",
        ["what", "method", "RSS after build GiB", "peak RSS GiB", "peak vs train step",
         "seconds (first / second product)"],
        rows,
        "Each row is a fresh process (peak = VmHWM). The product's vector and result add "
        f"2 x {4 * P / 2**30:.2f} GiB (float32) to what the method itself needs.",
    )  # fmt: skip


if __name__ == "__main__":
    main()
