"""The ``fastspec`` command. Parses arguments and calls the library; nothing else.

Bad input (a missing file, a bad ``module:factory``, a model that does not fit the data, a bad
``--k``) ends with one line on stderr, ``fastspec <command>: error: ...``, and exit code 2; a
computation that fails exits 1. SIGINT and SIGTERM stop a run with one line on stderr and exit
codes 130 and 143. Reports are written atomically, so a failed or stopped command leaves no
report and no temporary directory behind. With ``--checkpoint-dir`` the solvers' state is saved
there as they go and when a signal stops them (at the next block step); the same command with
``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, NoReturn

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # SIGINT; SIGTERM exits 143 (128 + the signal number)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**63), got {value}")
    return value


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression ({exc}): {text!r}") from None
    return text


def _info(_: argparse.Namespace) -> int:
    from fastspec._info import format_build_info

    print(format_build_info())
    return 0


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fastspec.analysis.run import QUICK, RunSettings, run_main_job

    if args.findings:
        return _findings(args)
    settings = QUICK if args.quick else RunSettings()
    changes: dict[str, Any] = {"device": args.device, "seed": args.seed}
    if args.no_gradients:
        changes["gradients"] = False
    for name in ("k", "epochs", "dtype", "seeds"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.models is not None:
        changes["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
        changes["tracker_models"] = tuple(
            m for m in settings.tracker_models if m in changes["models"]
        )
    if args.epochs is not None:
        changes["tracker_epochs"] = tuple(e for e in settings.tracker_epochs if e < args.epochs)
        changes["tracker_epochs"] += (args.epochs,)
    report = run_main_job(
        replace(settings, **changes), out=args.out, overwrite=args.overwrite,
        progress=not args.no_progress, **_checkpoint(args),
    )  # fmt: skip
    print(report.summary())
    print(f"\nreport written to {args.out}/ (summary.txt, report.json, spectra.png, per model)")
    return 0


def _findings(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fastspec.analysis.findings import FINDINGS_QUICK, FindingsSettings, run_findings

    if args.checkpoint_dir is not None:
        raise ValueError("--checkpoint-dir and --resume do not apply to --findings")
    settings = FINDINGS_QUICK if args.quick else FindingsSettings()
    changes: dict[str, Any] = {"device": args.device, "seed": args.seed}
    for name in ("k", "epochs", "dtype", "seeds"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.only is not None:
        changes["findings"] = tuple(f.strip() for f in args.only.split(",") if f.strip())
    out = "fastspec_findings" if args.out == "fastspec_report" else args.out
    report = run_findings(
        replace(settings, **changes), out=out, overwrite=args.overwrite,
        progress=not args.no_progress,
    )  # fmt: skip
    print(report.summary())
    print(f"\nreport written to {out}/ (summary.txt, report.json, one figure per finding)")
    return 0


def _hessian(args: argparse.Namespace) -> int:
    from fastspec.analysis import analyze_hessian

    with _user_problem(args) as (model, loss_fn, data, dtype, run):
        report = analyze_hessian(
            model, loss_fn, data, k=args.k, tol=args.tol, dtype=dtype, params=args.params,
            mode=args.mode, max_samples=args.max_samples if run.world_size == 1 else None,
            eigenvalues=args.eigenvalues, slq_runs=args.slq_runs, slq_nodes=args.slq_nodes,
            trace_matvecs=args.trace_matvecs, seed=args.seed, label=args.label,
            density_probes=None if args.no_density else args.density_probes,
            progress=not args.no_progress and run.is_root, **_checkpoint(args),
        )  # fmt: skip
        return _write(args, report, run.is_root)


def _gradients(args: argparse.Namespace) -> int:
    from fastspec.analysis import analyze_gradients

    with _user_problem(args) as (model, loss_fn, data, dtype, run):
        report = analyze_gradients(
            model, loss_fn, data, k=args.k, noise_batch_size=args.batch_size, num_steps=args.steps,
            num_coordinates=args.coordinates, params=args.params, mode=args.mode, dtype=dtype,
            seed=args.seed, label=args.label, progress=not args.no_progress and run.is_root,
            **_checkpoint(args),
        )  # fmt: skip
        return _write(args, report, run.is_root)


def _lm(args: argparse.Namespace) -> int:
    from fastspec.analysis.pydoc_lm import pydoc_lm

    _check_out(args)
    report = pydoc_lm(
        steps=args.steps, checkpoints=args.checkpoints, block=args.block,
        batch_size=args.batch_size, n_layer=args.n_layer, n_embd=args.n_embd,
        n_head=args.n_head, hessian_blocks=args.hessian_blocks, k=args.k,
        slq_runs=args.slq_runs, slq_nodes=args.slq_nodes, dtype=args.dtype, seed=args.seed,
        progress=not args.no_progress,
    )  # fmt: skip
    return _write(args, report, True)


def _write(args: argparse.Namespace, report: Any, root: bool) -> int:
    """Save and show the report (on rank 0 only, under torchrun)."""
    if root:
        report.save(args.out, plots=not args.no_plots, overwrite=args.overwrite)
        print(report.summary())
        print(f"\nreport written to {args.out}/")
    return 0


def _checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """``checkpoint=`` and ``resume=`` of the analysis call."""
    return {"checkpoint": args.checkpoint_dir, "resume": bool(args.resume)}


def _check_out(args: argparse.Namespace) -> None:
    """Fail before any work when the report cannot be written."""
    from fastspec.analysis.output import check_target

    check_target(args.out, overwrite=args.overwrite)
    if not args.no_plots:
        from fastspec.analysis.plots import require_matplotlib

        require_matplotlib()


@contextmanager
def _user_problem(args: argparse.Namespace) -> Iterator[tuple[Any, Any, Any, Any, Any]]:
    """``(model, loss, this rank's data, dtype, Launch)``, in torchrun's group if launched so."""
    import torch

    from fastspec.analysis.launch import launched
    from fastspec.analysis.loading import check_compatible, load_data_share, load_loss, load_model
    from fastspec.analysis.run import resolve_device

    with launched(args, resolve_device(args.device)) as run:
        if run.is_root:
            _check_out(args)
        torch.manual_seed(args.seed)
        model = load_model(args.model, checkpoint=args.checkpoint, trust_pickle=args.trust_pickle)
        dtype = getattr(torch, args.dtype)
        model = model.to(device=run.device, dtype=dtype)
        data, shared = load_data_share(args.data, run.rank, run.world_size)
        data = run.share(data, shared=shared, max_samples=args.max_samples)
        loss_fn = load_loss(args.loss)
        check_compatible(model, loss_fn, data, dtype=dtype)
        yield model, loss_fn, data, dtype, run


def _fit(args: argparse.Namespace) -> int:
    from fastspec.analysis.fit import fit_values
    from fastspec.analysis.loading import load_values

    report = fit_values(
        load_values(args.file), method=args.method, k=args.k, alpha=args.alpha, gof=args.gof,
        n_boot=args.n_boot, seed=args.seed, discrete=args.discrete,
        progress=not args.no_progress,
    )  # fmt: skip
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.summary())
    return 0


def _add_user_problem(p: argparse.ArgumentParser, *, out: str) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument("--model", required=True,
                   help="module:factory (or path/file.py:factory) returning an nn.Module, or a "
                   "file saved with torch.save(model) (needs --trust-pickle)")  # fmt: skip
    g.add_argument("--checkpoint",
                   help="a state dict to load: torch.save(model.state_dict()) (read with "
                   "torch.load(weights_only=True)) or .safetensors")  # fmt: skip
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow --model FILE (a whole pickled model) and a --checkpoint holding "
                   "more than tensors: unpickling runs code named in the file, so pass it only "
                   "for files you trust as much as code")  # fmt: skip
    g.add_argument("--data", required=True,
                   help="module:loader returning a DataLoader, a list of (inputs, targets) "
                   "batches or one (inputs, targets) pair")  # fmt: skip
    g.add_argument("--loss", default="cross_entropy",
                   help="cross_entropy (default), mse, nll or module:function")  # fmt: skip
    g.add_argument("--params", type=_regex,
                   help="regex of the parameter names to analyse (default: all)")  # fmt: skip
    g.add_argument("--mode", choices=("eval", "train"), default="eval",
                   help="BatchNorm/dropout policy (default eval)")  # fmt: skip
    g.add_argument("--max-samples", type=_positive_int, help="use the first N samples only")
    _add_common(p, out=out)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="compute dtype (default float64)")  # fmt: skip
    p.add_argument("--label", default="model", help="the report's name in titles")
    p.add_argument("--no-plots", action="store_true", help="write JSON and text only")
    from fastspec.analysis.launch import add_launch_options

    add_launch_options(p)


def _add_common(p: argparse.ArgumentParser, *, out: str) -> None:
    p.add_argument("--out", default=out, help=f"report directory (default {out})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out written by fastspec (or an empty one); "
                   "never other files, the working directory or its parents")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="save the solvers' state in DIR as they go (every 5 min, at most 2%% of "
                   "the time) and when SIGINT/SIGTERM stop the run")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue from the state in --checkpoint-dir (same command, same "
                   "model, data and settings; anything else is refused)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="fastspec", description="Fast Hessian and stochastic-gradient spectra.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("run", help="the main job: P1's analyses of the reference models on digits",
                       description="Train P1's reference models (2-hidden-layer ReLU FCN, "
                       "LeNet-style CNN) on scikit-learn's bundled digits with P1's recipe and "
                       "analyse their Hessian spectra at random initialisation and after "
                       "training.")  # fmt: skip
    _add_common(p, out="fastspec_report")
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke test: seconds)")
    p.add_argument("--models", help="comma-separated subset of fcn,lenet")
    p.add_argument("--k", type=_positive_int, help="top eigenvalues per analysis (default 500; "
                   "P1: 1000)")  # fmt: skip
    p.add_argument("--seeds", type=_positive_int,
                   help="seeds, --seed onwards; reported as mean ± std and counts (default 3)")  # fmt: skip
    p.add_argument("--epochs", type=_positive_int, help="training epochs (default 50, P1's)")
    p.add_argument(
        "--dtype", choices=("float32", "float64"), help="compute dtype (default float32)"
    )
    p.add_argument("--no-gradients", action="store_true", help="skip P2's gradient analysis")
    p.add_argument("--findings", action="store_true",
                   help="P1's and P2's findings as one table over seeds (out: fastspec_findings; "
                   "--k defaults to 200 there)")  # fmt: skip
    p.add_argument("--only", help="with --findings: comma-separated rows (default all)")
    p.set_defaults(func=_run)

    p = sub.add_parser("hessian", help="P1's Hessian-spectrum analysis of your model",
                       description="Top-k Hessian spectrum with residuals, P1's power-law fits "
                       "and KS decisions (eigenvalues, eigengaps), trace, SLQ density.")  # fmt: skip
    _add_user_problem(p, out="fastspec_hessian")
    p.add_argument("--k", type=_positive_int, default=100, help="top eigenvalues (default 100)")
    p.add_argument("--tol", type=float, default=1e-6, help="eigsh residual tolerance")
    p.add_argument("--eigenvalues", choices=("eigsh", "slq"), default="eigsh",
                   help="eigsh: certified top-k eigenpairs (default); slq: P1's protocol for "
                   "language models, the Ritz values of --slq-runs SLQ runs of --slq-nodes "
                   "nodes pooled, top k kept (not certified; with --params for a layer)")  # fmt: skip
    p.add_argument("--slq-runs", type=_positive_int, default=3, help="with --eigenvalues slq (3)")
    p.add_argument("--slq-nodes", type=_positive_int, default=1000,
                   help="with --eigenvalues slq: nodes per run (1000)")  # fmt: skip
    p.add_argument("--trace-matvecs", type=_positive_int, default=99, help="Hutch++ products")
    p.add_argument("--density-probes", type=_positive_int, default=4, help="SLQ probes")
    p.add_argument("--no-density", action="store_true", help="skip the SLQ density")
    p.set_defaults(func=_hessian)

    p = sub.add_parser("gradients", help="P2's gradient-structure analysis of your model",
                       description="Covariance spectrum of per-sample gradients and of the "
                       "minibatch noise with P1's fit and KS decision; dimension-wise, "
                       "iteration-wise and noise tail tests on minibatch gradients drawn at the "
                       "model's parameters.")  # fmt: skip
    _add_user_problem(p, out="fastspec_gradients")
    p.add_argument("--k", type=_positive_int, default=100,
                   help="top covariance eigenvalues (default 100)")  # fmt: skip
    p.add_argument("--batch-size", type=_positive_int, default=128,
                   help="minibatch size B (noise covariance C/B, drawn minibatches)")  # fmt: skip
    p.add_argument("--steps", type=_positive_int, default=64,
                   help="minibatch gradients drawn for the tail tests (default 64)")  # fmt: skip
    p.add_argument("--coordinates", type=_positive_int, default=1000,
                   help="coordinates tracked for the iteration-wise and noise tests")  # fmt: skip
    p.set_defaults(func=_gradients)

    p = sub.add_parser("lm", help="P1's LLM protocol on a small GPT-2 trained on Python's docs",
                       description="Train a small GPT-2 (transformers, bytes as tokens) on the "
                       "documentation bundled with Python (pydoc_data, held-out topics) and run "
                       "P1's LLM protocol on its last layer at checkpoints from random "
                       "initialisation to the end: 3 SLQ runs pooled, top k, power-law fit and KS "
                       "decision, Pearson r with the test loss. Needs fastspec[lm].")  # fmt: skip
    p.add_argument("--steps", type=_int_at_least(0), default=2000,
                   help="AdamW training steps (default 2000)")  # fmt: skip
    p.add_argument("--checkpoints", type=_positive_int, default=5,
                   help="analyses from step 0 to --steps, >= 2 (default 5)")  # fmt: skip
    p.add_argument("--block", type=_positive_int, default=64, help="tokens per block (64)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="blocks per step (16)")
    p.add_argument("--n-layer", type=_positive_int, default=2, help="GPT-2 blocks (2)")
    p.add_argument("--n-embd", type=_positive_int, default=32, help="embedding width (32)")
    p.add_argument("--n-head", type=_positive_int, default=4, help="attention heads (4)")
    p.add_argument("--hessian-blocks", type=_positive_int, default=8,
                   help="training blocks in the Hessian batch (8)")  # fmt: skip
    p.add_argument("--k", type=_positive_int, default=1000, help="top pooled values kept (1000)")
    p.add_argument("--slq-runs", type=_positive_int, default=3, help="SLQ runs (3)")
    p.add_argument("--slq-nodes", type=_positive_int, default=1000, help="nodes per run (1000)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="the Hessian's compute dtype (default float64)")  # fmt: skip
    p.add_argument("--out", default="fastspec_lm", help="report directory (default fastspec_lm)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out written by fastspec (or an empty one)")  # fmt: skip
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--no-plots", action="store_true", help="write JSON and text only")
    p.set_defaults(func=_lm)

    p = sub.add_parser("fit", help="power-law fit of the values in a file (npy, txt, csv)",
                       description="P1's fit (top-K, cutoff at the K-th value, KS decision) or "
                       "the Clauset fit (xmin by minimum KS) with a bootstrap p-value.")  # fmt: skip
    p.add_argument("file", metavar="FILE", help=".npy, .txt or .csv of numbers")
    p.add_argument("--method", choices=("p1", "clauset"), default="p1")
    p.add_argument("--k", type=_positive_int, help="P1's K (default: all positive values)")
    p.add_argument("--alpha", type=float, default=0.05, help="KS decision level (P1: 0.05)")
    p.add_argument("--gof", action="store_true", help="bootstrap p-value (Clauset)")
    p.add_argument("--n-boot", type=_positive_int, default=2500, help="bootstrap replicates")
    p.add_argument("--discrete", action="store_true", help="discrete power law (Clauset)")
    p.add_argument("--seed", type=_seed, default=0, help="bootstrap seed")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_fit)

    p = sub.add_parser("info", help="what fastspec was built with and the devices it sees")
    p.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastspec argv`` and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    prog = f"fastspec {args.command}"
    if getattr(args, "resume", False) and not getattr(args, "checkpoint_dir", None):
        parser.exit(EXIT_USAGE, f"{prog}: error: --resume needs --checkpoint-dir\n")
    from fastspec.analysis.signals import Terminated, exit_code, signals_as_exceptions

    before = _identity(args)
    try:
        with signals_as_exceptions(), _claim(args):
            return int(args.func(args))
    except (KeyboardInterrupt, Terminated) as exc:
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped ({exc})"
        after = _identity(args)
        done = f"the report in {args.out} was complete" if after not in (None, before) else ""
        print(f"{prog}: {what}; {done or 'no report written'}{_how_to_resume(args)}",
              file=sys.stderr)  # fmt: skip
        return exit_code(exc)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        _record(exc)
        return EXIT_USAGE
    except (RuntimeError, OSError, MemoryError) as exc:
        print(f"{prog}: failed: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        _record(exc)
        return EXIT_FAILED


def _how_to_resume(args: argparse.Namespace) -> str:
    """``; resume with ...`` when the stopped run left a checkpoint, else nothing."""
    directory = getattr(args, "checkpoint_dir", None)
    if not directory or not any(Path(directory).rglob("manifest.json")):
        return ""
    return f"; state saved in {directory}: run the same command with --resume to continue"


def _record(exc: BaseException) -> None:
    """Under torchrun, this rank's error goes to the agent's summary too."""
    from fastspec.analysis.launch import record_failure

    record_failure(exc)


def _claim(args: argparse.Namespace) -> AbstractContextManager[object]:
    """The command's ``--out``, validated and held against other runs until it is written."""
    from fastspec.analysis.launch import env_world

    if getattr(args, "out", None) is None or env_world()[0] != 0:  # rank 0 writes the report
        return nullcontext()
    from fastspec.analysis.output import claimed

    return claimed(args.out, overwrite=args.overwrite)


def _identity(args: argparse.Namespace) -> tuple[int, int] | None:
    """Which directory ``--out`` names now (None if none): tells a report written by this run."""
    try:
        st = os.stat(args.out)
    except (AttributeError, TypeError, OSError):
        return None
    return (st.st_dev, st.st_ino)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
