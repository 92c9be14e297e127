"""The main job (``fastspec run``): P1's Hessian-spectrum analysis of its reference models on a
real data set that ships with scikit-learn, at random initialisation and after training.

For each reference model (:mod:`fastspec.analysis.digits`: the 2-hidden-layer ReLU FCN and the
LeNet-style CNN) the job

1. analyses the Hessian of the training loss at random initialisation
   (:func:`~fastspec.analysis.analyze_hessian`: top-K spectrum, P1's fits and KS decisions for
   eigenvalues and eigengaps, Tr(H), SLQ density);
2. trains it with P1's recipe (SGD, momentum 0.9, lr 0.1, batch 128, weight decay 5e-4, 50
   epochs, lr ÷ 10 at 40 % and 80 %), with a :class:`~fastspec.analysis.SpectrumTracker` at
   checkpoints (λ_1, Tr(H), ŝ, d_ks against the test loss and error);
3. analyses the trained model the same way;

and writes every report, the figures and a summary into one directory, atomically. It reports
what the numbers say: whether P1's first finding (random init not power-law, trained power-law)
shows on this data is read off the KS decisions, never tuned.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastspec.analysis import digits
from fastspec.analysis._io import atomic_dir, check_target, plain, write_json
from fastspec.analysis._progress import note
from fastspec.analysis.gradients import GradientReport, analyze_gradients
from fastspec.analysis.hessian import HessianReport, analyze_hessian
from fastspec.analysis.summary import decision
from fastspec.analysis.tracker import SpectrumTracker
from fastspec.grads import GradientRecorder

__all__ = ["QUICK", "RunReport", "RunSettings", "run_main_job"]


@dataclass(frozen=True)
class RunSettings:
    """What ``fastspec run`` computes.

    The defaults fit the README's budget (the whole job in a few minutes on 2 CPU cores; see the
    README for the measured time): K = 500 top eigenvalues (P1 uses K = 1000 for FCN and LeNet;
    K = 1000 took ~45-50 s per float64 FCN analysis here, and LeNet's convolutions make each of
    its Hessian-vector products ~3× dearer), float32 with eigsh tolerance 1e-4 (float64 LeNet
    products cost 3× more), and P1's full 50 epochs (training takes about a second).

    Attributes:
        models: reference models to run (``"fcn"``, ``"lenet"``).
        k: top eigenvalues per analysis; tol: eigsh's residual tolerance; dtype: compute dtype.
        epochs: training epochs (P1: 50).
        trace_matvecs: Hutch++ products for Tr(H).
        density_probes, density_steps: SLQ settings.
        tracker_models: models tracked during training; tracker_k: their K;
        tracker_epochs: the checkpoints (epochs; 0 = initialisation).
        max_samples: Hessian of the first ``max_samples`` training samples only (None: all 1437).
        block_size: eigsh's block size (None: its default).
        gradients: also run P2's gradient analysis (:func:`~fastspec.analysis.analyze_gradients`)
            at random init (``gradient_steps`` minibatch gradients drawn at fixed θ) and after
            training (the minibatch gradients and their noise recorded at every step of the
            second half of training, the whole gradient at three of them);
            gradient_k: covariance eigenvalues fitted; gradient_coordinates: coordinates
            tracked for the iteration-wise and noise tests.
        seed: seeds the initialisation, the data split, the shuffling and the estimators.
        device: ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"``, ``"cuda"``, ...
    """

    models: tuple[str, ...] = ("fcn", "lenet")
    k: int = 500
    tol: float = 1e-4
    dtype: str = "float32"
    epochs: int = 50
    trace_matvecs: int = 99
    density_probes: int = 4
    density_steps: int = 80
    tracker_models: tuple[str, ...] = ("fcn",)
    tracker_k: int = 50
    tracker_epochs: tuple[int, ...] = (0, 5, 10, 20, 35, 50)
    max_samples: int | None = None
    block_size: int | None = None
    gradients: bool = True
    gradient_k: int = 500
    gradient_coordinates: int = 1000
    gradient_steps: int = 64
    seed: int = 0
    device: str = "auto"

    def validated(self) -> RunSettings:
        """Check every field (clear ``ValueError`` naming it); returns ``self``."""
        unknown = [m for m in self.models if m not in digits.MODELS]
        if not self.models or unknown:
            raise ValueError(f"models must be among {sorted(digits.MODELS)}, got {self.models}")
        for name in (
            "k",
            "tracker_k",
            "epochs",
            "trace_matvecs",
            "density_probes",
            "gradient_k",
            "gradient_coordinates",
            "gradient_steps",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (4 if "trace" in name else 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.k < 2 or self.tracker_k < 2:
            raise ValueError(f"k and tracker_k must be >= 2, got {self.k}, {self.tracker_k}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if any(e < 0 or e > self.epochs for e in self.tracker_epochs):
            raise ValueError(f"tracker_epochs must lie in [0, epochs={self.epochs}]")
        resolve_device(self.device)
        return self


#: tiny settings for tests and a smoke check (seconds, not minutes)
QUICK = RunSettings(
    k=8, tol=1e-3, epochs=2, trace_matvecs=6, density_probes=2, density_steps=8,
    tracker_k=4, tracker_epochs=(0, 1, 2), max_samples=128, block_size=4, gradient_k=8,
    gradient_coordinates=40, gradient_steps=12,
)  # fmt: skip


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when torch sees a GPU, else CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but torch sees no CUDA GPU")
    return dev


@dataclass(frozen=True, eq=False)
class ModelRun:
    """One reference model's part of the run."""

    name: str
    num_params: int
    training: digits.TrainResult
    random_init: HessianReport
    trained: HessianReport
    tracker: SpectrumTracker | None
    gradients_init: GradientReport | None = None
    gradients_trained: GradientReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_params": self.num_params,
            "training": self.training.to_dict(),
            "random_init": self.random_init.to_dict(),
            "trained": self.trained.to_dict(),
            "tracker": None if self.tracker is None else self.tracker.to_dict(),
            "gradients_random_init": _d(self.gradients_init),
            "gradients_trained": _d(self.gradients_trained),
        }


def _d(x: Any) -> Any:
    return None if x is None else x.to_dict()


@dataclass(frozen=True, eq=False)
class RunReport:
    """Everything ``fastspec run`` computed.

    Attributes:
        settings: the :class:`RunSettings`.
        models: one :class:`ModelRun` per reference model.
        environment: device, threads, versions.
        seconds: wall time of the job (without writing the report).
    """

    settings: RunSettings
    models: dict[str, ModelRun]
    environment: dict[str, Any]
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return plain(
            {
                "kind": "run",
                "settings": asdict(self.settings),
                "environment": self.environment,
                "data": self.data,
                "seconds": self.seconds,
                "findings": self.findings(),
                "models": {n: m.to_dict() for n, m in self.models.items()},
            }
        )

    def findings(self) -> dict[str, dict[str, Any]]:
        """P1's first finding per model, read off the KS decisions: random init not power-law
        and trained power-law (``"shown"``), or what was seen instead."""
        out = {}
        for name, m in self.models.items():
            init, trained = m.random_init.spectrum_fit, m.trained.spectrum_fit
            shown = (
                init is not None
                and trained is not None
                and not init.is_power_law
                and trained.is_power_law
            )
            out[name] = {
                "random_init": decision(init),
                "trained": decision(trained),
                "p1_finding_1": "shown" if shown else "not shown",
            }
        return out

    def summary(self) -> str:
        """The console summary: a table of both analyses of each model, and the finding."""
        s = self.settings
        env = self.environment
        lines = [
            f"fastspec run: P1's Hessian-spectrum analysis on scikit-learn's digits "
            f"({self.data.get('num_train')} train / {self.data.get('num_test')} test samples)",
            f"  K = {s.k} top eigenvalues (P1: 1000), {s.dtype}, eigsh tol {s.tol:g}, "
            f"{s.epochs} epochs of P1's recipe, device {env['device']} "
            f"({env['threads']} threads), {self.seconds / 60:.1f} min",
            "",
            f"  {'model':7} {'stage':12} {'test err':>8} {'lambda_1':>9} {'Tr(H)':>14} "
            f"{'s':>6} {'d_ks':>7} {'d_c':>7}  {'eigenvalues':14} {'s_gap':>6} {'gaps':14}",
        ]
        for name, m in self.models.items():
            for stage, rep in (("random init", m.random_init), ("trained", m.trained)):
                fit, gap = rep.spectrum_fit, rep.eigengap_fit
                err = rep.extra.get("test_error")
                tr = rep.trace
                lines.append(
                    f"  {name:7} {stage:12} {_pct(err):>8} {rep.lambda_max:9.4g} "
                    f"{'' if tr is None else f'{tr.estimate:.4g}±{tr.std_error:.1g}':>14} "
                    f"{_num(fit, 's', 6, 3)} {_num(fit, 'ks', 7, 4)} "
                    f"{_num(fit, 'ks_critical', 7, 4)}  {decision(fit):14} "
                    f"{_num(gap, 's', 6, 2)} {decision(gap):14}"
                )
        lines.append("")
        for name, f in self.findings().items():
            lines.append(
                f"  P1 finding 1 (random init not power-law, trained power-law), {name}: "
                f"{f['p1_finding_1']} (random init: {f['random_init']}; trained: {f['trained']})"
            )
        for name, m in self.models.items():
            if m.tracker is not None and len(m.tracker.rows) >= 3:
                r = m.tracker.correlations("test_loss")
                lines.append(
                    f"  {name} tracker, Pearson r with test loss over {len(m.tracker.rows)} "
                    f"checkpoints (top-{m.tracker.k}): lambda_1 {r['lambda_max']:+.2f}, "
                    f"Tr(H) {r['trace']:+.2f}, s {r['s']:+.2f}, d_ks {r['ks']:+.2f}"
                )
        grad_lines = []
        for name, m in self.models.items():
            for stage, g in (("random init", m.gradients_init), ("trained", m.gradients_trained)):
                if g is None:
                    continue
                fit = g.covariance_fit
                fit_text = "no fit" if fit is None else (
                    f"s {fit.s:.3f}, d_ks {fit.ks:.4f} vs {fit.ks_critical:.4f}: {decision(fit)}"
                )  # fmt: skip
                tails = ", ".join(
                    f"{n.replace('_', '-')} {t.frac_power_law:.0%}/{t.frac_gaussian:.0%}"
                    for n, t in g.tails.items()
                )
                grad_lines.append(
                    f"  {name:7} {stage:12} covariance top-{fit.k if fit else '?'}: {fit_text}; "
                    f"power-law/Gaussian: {tails}"
                )
        if grad_lines:
            lines.append("")
            lines.append(
                "  P2 gradient structure (covariance spectrum of per-sample gradients; fraction "
                "of samples passing the power-law / Gaussian tests)"
            )
            lines.extend(grad_lines)
        notes = [f"{n}/{st}: {x}" for n, m in self.models.items()
                 for st, rep in (("random_init", m.random_init), ("trained", m.trained))
                 for x in rep.notes]  # fmt: skip
        lines.extend(f"  note: {x}" for x in notes)
        return "\n".join(line.rstrip() for line in lines)

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the run into ``directory`` atomically: ``report.json`` (everything),
        ``summary.txt``, ``spectra.png`` (every model's random-init and trained spectra with
        their fits), and per model ``<model>/random_init/``, ``<model>/trained/`` (Hessian
        reports with their figures) and ``<model>/tracker/``."""
        with atomic_dir(directory, overwrite=overwrite) as tmp:
            self.write_into(tmp)
        return Path(directory)

    def write_into(self, directory: Path) -> None:
        from fastspec.analysis.plots import comparison_figure

        write_json(directory / "report.json", self.to_dict())
        (directory / "summary.txt").write_text(self.summary() + "\n")
        panels = []
        for name, m in self.models.items():
            curves = [
                ("random init", m.random_init.eigenvalues, m.random_init.spectrum_fit),
                ("trained", m.trained.eigenvalues, m.trained.spectrum_fit),
            ]
            panels.append((f"{name} ({m.num_params:,} parameters), digits", curves))
            for stage, rep in (("random_init", m.random_init), ("trained", m.trained)):
                (directory / name / stage).mkdir(parents=True)
                rep.write_into(directory / name / stage)
            for stage, grep in (
                ("random_init", m.gradients_init),
                ("trained", m.gradients_trained),
            ):
                if grep is not None:
                    (directory / name / f"gradients_{stage}").mkdir(parents=True)
                    grep.write_into(directory / name / f"gradients_{stage}")
            if m.tracker is not None:
                (directory / name / "tracker").mkdir(parents=True)
                m.tracker.write_into(
                    directory / name / "tracker",
                    title=f"{name}: top-{m.tracker.k} Hessian spectrum over training (dashed: d_c)",
                    xlabel="epoch",
                )
        comparison_figure(
            panels, directory / "spectra.png",
            suptitle=f"Top-{self.settings.k} Hessian eigenvalues, rank–value, log–log, "
            "with P1's power-law fits",
        )  # fmt: skip


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _num(fit: Any, attr: str, width: int, digits_: int) -> str:
    return " " * width if fit is None else f"{getattr(fit, attr):{width}.{digits_}f}"


def run_main_job(
    settings: RunSettings | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> RunReport:
    """Run the main job; when ``out`` is given, save the report there (atomically).

    Args:
        settings: what to compute (default :class:`RunSettings`; :data:`QUICK` for a smoke run).
        out: report directory (checked before any work: it must not exist unless
            ``overwrite``).
        overwrite: replace an existing ``out``.
        progress: progress bars and step lines on stderr.

    Returns:
        The :class:`RunReport`.
    """
    s = (settings or RunSettings()).validated()
    if out is not None:
        from fastspec.analysis.plots import require_matplotlib

        check_target(out, overwrite=overwrite)
        require_matplotlib()
    device = resolve_device(s.device)
    dtype = getattr(torch, s.dtype)
    start = time.perf_counter()
    (Xtr, ytr), (Xte, yte) = digits.digits_split(dtype=dtype, seed=s.seed)
    train_set = (Xtr.to(device), ytr.to(device))
    test_set = (Xte.to(device), yte.to(device))
    loss_fn = nn.CrossEntropyLoss()
    common = {
        "tol": s.tol, "dtype": dtype, "trace_matvecs": s.trace_matvecs, "seed": s.seed,
        "max_samples": s.max_samples, "block_size": s.block_size,
    }  # fmt: skip
    runs: dict[str, ModelRun] = {}
    for name in s.models:
        torch.manual_seed(s.seed)
        model = digits.MODELS[name]().to(device=device, dtype=dtype).eval()
        init_loss, init_err = digits.evaluate(model, *test_set)
        init = analyze_hessian(
            model, loss_fn, [train_set], k=s.k, density_probes=s.density_probes,
            density_steps=s.density_steps, label=f"{name}/random_init", progress=progress,
            extra={"test_loss": init_loss, "test_error": init_err}, **common,
        )  # fmt: skip
        grads_data = [
            train_set
            if s.max_samples is None
            else (train_set[0][: s.max_samples], train_set[1][: s.max_samples])
        ]
        grad_common = {
            "k": s.gradient_k, "noise_batch_size": 128, "num_coordinates": s.gradient_coordinates,
            "dtype": dtype, "seed": s.seed, "progress": progress,
        }  # fmt: skip
        grads_init = grads_trained = None
        recorder = None
        if s.gradients:
            grads_init = analyze_gradients(
                model, loss_fn, grads_data, num_steps=s.gradient_steps,
                label=f"{name}/random_init", **grad_common,
            )  # fmt: skip
            steps_per_epoch = -(-len(train_set[0]) // 128)
            total = s.epochs * steps_per_epoch
            first = total // 2  # record the second half of training
            recorder = GradientRecorder(
                model, num_coordinates=s.gradient_coordinates, seed=s.seed, loss_fn=loss_fn,
                data=grads_data,
                full_gradient_steps=sorted({first, (first + total) // 2, total - 1}),
            )  # fmt: skip
        tracker = None
        if name in s.tracker_models:
            tracker = SpectrumTracker(model, loss_fn, [train_set], k=s.tracker_k, **common)

        def on_epoch(epoch: int, m: nn.Module, tracker: Any = tracker) -> None:
            if tracker is not None and epoch in s.tracker_epochs:
                test_loss, test_error = digits.evaluate(m, *test_set)
                train_loss, _ = digits.evaluate(m, *train_set)
                tracker.record(
                    epoch, test_loss=test_loss, test_error=test_error, train_loss=train_loss
                )

        note(f"{name}: training ({s.epochs} epochs of P1's recipe)", enabled=progress)
        result = digits.train(
            model, train_set, test_set, epochs=s.epochs, seed=s.seed, on_epoch=on_epoch,
            on_step=None if recorder is None else _recording(recorder, first),
            progress=progress, desc=f"{name}: train",
        )  # fmt: skip
        trained = analyze_hessian(
            model, loss_fn, [train_set], k=s.k, density_probes=s.density_probes,
            density_steps=s.density_steps, label=f"{name}/trained", progress=progress,
            extra={"test_loss": result.test_loss, "test_error": result.test_error}, **common,
        )  # fmt: skip
        if recorder is not None:
            grads_trained = analyze_gradients(
                model, loss_fn, grads_data, recorder=recorder, label=f"{name}/trained",
                **grad_common,
            )  # fmt: skip
        runs[name] = ModelRun(
            name=name,
            num_params=sum(p.numel() for p in model.parameters()),
            training=result,
            random_init=init,
            trained=trained,
            tracker=tracker,
            gradients_init=grads_init,
            gradients_trained=grads_trained,
        )
    report = RunReport(
        settings=s,
        models=runs,
        environment=_environment(device),
        seconds=time.perf_counter() - start,
        data={"name": "sklearn digits", "num_train": len(Xtr), "num_test": len(Xte)},
    )
    if out is not None:
        report.save(out, overwrite=overwrite)
    return report


def _recording(recorder: GradientRecorder, first: int) -> Any:
    def on_step(step: int, _: nn.Module) -> None:
        if step >= first:
            recorder.record(step)

    return on_step


def _environment(device: torch.device) -> dict[str, Any]:
    from fastspec import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device": str(device),
        "device_name": name or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "fastspec": __version__,
        "python": platform.python_version(),
    }
