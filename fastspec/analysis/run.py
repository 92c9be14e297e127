"""The main job, ``fastspec run``: P1's Hessian-spectrum analysis of its reference models.

The models are trained on a real data set that ships with scikit-learn and analysed at random
initialisation and after training, once per seed.

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

from fastspec._checks import check_choice, check_int
from fastspec.analysis import digits
from fastspec.analysis._progress import JobProgress
from fastspec.analysis.gradients import GradientReport, analyze_gradients
from fastspec.analysis.hessian import (
    HessianReport,
    analyze_hessian,
    pipeline_checkpoint,
    stage_checkpoint,
)
from fastspec.analysis.output import (
    check_target,
    plain,
    save_report,
    write_report_files,
)
from fastspec.analysis.spread import Spread, count, spread
from fastspec.analysis.summary import decision
from fastspec.analysis.tracker import SpectrumTracker
from fastspec.checkpoint import Checkpoint, Resume
from fastspec.grads import GradientRecorder
from fastspec.stats import min_k

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
        seed: the first seed; each seed fixes the data split, the initialisation, the
            shuffling and the estimators' probes.
        seeds: how many seeds (``seed``, ``seed + 1``, ...): the job is run once per seed and
            reported as mean ± standard deviation and as counts of seeds.
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
    seeds: int = 3
    device: str = "auto"

    def validated(self) -> RunSettings:
        """Check every field (a clear error naming it); returns ``self``."""
        unknown = [m for m in self.models if m not in digits.MODELS]
        if not self.models or unknown:
            raise ValueError(f"models must be among {sorted(digits.MODELS)}, got {self.models}")
        check_int("k", self.k, minimum=2)
        # a checkpoint's fit needs min_k values; with fewer the tracker's columns are all NaN
        check_int("tracker_k", self.tracker_k, minimum=min_k())
        for name in ("epochs", "density_probes", "gradient_k", "gradient_coordinates",
                     "gradient_steps", "seeds"):  # fmt: skip
            check_int(name, getattr(self, name), minimum=1)
        check_int("trace_matvecs", self.trace_matvecs, minimum=4)
        check_int("seed", self.seed)
        check_choice("dtype", self.dtype, ("float32", "float64"))
        if any(e < 0 or e > self.epochs for e in self.tracker_epochs):
            raise ValueError(f"tracker_epochs must lie in [0, epochs={self.epochs}]")
        resolve_device(self.device)
        return self


#: tiny settings for tests and a smoke check (seconds, not minutes)
QUICK = RunSettings(
    k=8, tol=1e-3, epochs=2, trace_matvecs=6, density_probes=2, density_steps=8,
    tracker_k=6, tracker_epochs=(0, 1, 2), max_samples=128, block_size=4, gradient_k=8,
    gradient_coordinates=40, gradient_steps=12, seeds=2,
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
    """Everything ``fastspec run`` computed, for every seed.

    Attributes:
        settings: the :class:`RunSettings`.
        runs: seed → model name → :class:`ModelRun`.
        environment: device, threads, versions.
        seconds: wall time of the job (without writing the report).
        data: the data set's name and sizes.
    """

    settings: RunSettings
    runs: dict[int, dict[str, ModelRun]]
    environment: dict[str, Any]
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds run, in order."""
        return tuple(self.runs)

    @property
    def models(self) -> dict[str, ModelRun]:
        """The first seed's runs (model name → :class:`ModelRun`)."""
        return self.runs[self.seeds[0]]

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form, what :meth:`save` writes as ``report.json``.

        Every per-seed value, the spreads over seeds and the findings' counts.
        """
        return plain(
            {
                "kind": "run",
                "settings": asdict(self.settings),
                "environment": self.environment,
                "data": self.data,
                "seconds": self.seconds,
                "seed_list": list(self.seeds),
                "spread": self.spreads(),
                "findings": self.findings(),
                "seeds": {
                    str(seed): {n: m.to_dict() for n, m in runs.items()}
                    for seed, runs in self.runs.items()
                },
            }
        )

    def not_learned(self, name: str) -> list[int]:
        """The seeds in which model ``name``'s training failed (:attr:`TrainResult.learned`)."""
        return [seed for seed, runs in self.runs.items() if not runs[name].training.learned]

    def _stage_runs(self, name: str, stage: str) -> list[ModelRun]:
        # a model left at chance is not "trained": its seeds stay out of the trained rows
        runs = [r[name] for r in self.runs.values()]
        return runs if stage == "random_init" else [m for m in runs if m.training.learned]

    def spreads(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Model → stage → measured number → its :class:`Spread` over seeds, as dicts.

        Each stage also has the :class:`Count` of seeds in which the eigenvalues
        (``power_law``) and eigengaps (``gaps_power_law``) are power-law. The trained stages
        count only the seeds in which the model learned (:meth:`not_learned` lists the others).
        """
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name in self.settings.models:
            out[name] = {}
            for stage, attr in (
                ("random_init", "gradients_init"),
                ("trained", "gradients_trained"),
            ):
                runs = self._stage_runs(name, stage)
                out[name][stage] = _hessian_spread([getattr(m, stage) for m in runs])
                greps = [getattr(m, attr) for m in runs]
                if all(g is not None for g in greps):
                    out[name][f"gradients_{stage}"] = _gradient_spread(greps)
        return out

    def findings(self) -> dict[str, dict[str, Any]]:
        """P1's first finding per model, counted over seeds.

        In each seed in which the model learned it is read off the KS decisions: random init
        not power-law and trained power-law (``shown``).
        """
        out = {}
        for name in self.settings.models:
            c = count([_finding_1(m) for m in self._stage_runs(name, "trained")])
            out[name] = {
                "p1_finding_1": f"shown in {c.text()}",
                "shown": c.to_dict(),
                "not_learned": self.not_learned(name),
                "random_init": [decision(r[name].random_init.spectrum_fit)
                                for r in self.runs.values()],
                "trained": [decision(r[name].trained.spectrum_fit) for r in self.runs.values()],
            }  # fmt: skip
        return out

    def summary(self) -> str:
        """The console summary: mean ± std over seeds of each model's two analyses, counts."""
        s = self.settings
        env = self.environment
        n = len(self.seeds)
        lines = [
            f"fastspec run: P1's Hessian-spectrum analysis on scikit-learn's digits "
            f"({self.data.get('num_train')} train / {self.data.get('num_test')} test samples)",
            f"  K = {s.k} top eigenvalues (P1: 1000), {s.dtype}, eigsh tol {s.tol:g}, "
            f"{s.epochs} epochs of P1's recipe, {n} seeds ({', '.join(map(str, self.seeds))}), "
            f"device {env['device']} ({env['threads']} threads), {self.seconds / 60:.1f} min",
            f"  mean ± standard deviation over the {n} seeds; 'power-law': seeds with d_ks < d_c",
            "",
            f"  {'model':7} {'stage':12} {'test err':>11} {'lambda_1':>13} {'Tr(H)':>11} "
            f"{'s':>11} {'d_ks':>15} {'d_c':>7}  {'power-law':11} {'s_gap':>9} {'gaps PL':11}",
        ]
        spreads = self.spreads()
        for name in s.models:
            for stage, label in (("random_init", "random init"), ("trained", "trained")):
                sp = spreads[name][stage]
                lines.append(
                    f"  {name:7} {label:12} {_t(sp['test_error'], '.1f', 100, '%'):>11} "
                    f"{_t(sp['lambda_max'], '.3g'):>13} {_t(sp['trace'], '.3g'):>11} "
                    f"{_t(sp['s'], '.3f'):>11} {_t(sp['ks'], '.4f'):>15} "
                    f"{_t(sp['ks_critical'], '.4f').split('±')[0]:>7}  "
                    f"{_c(sp['power_law']):11} {_t(sp['s_gap'], '.2f'):>9} "
                    f"{_c(sp['gaps_power_law']):11}"
                )
        lines.append("")
        for name in s.models:
            for seed in self.not_learned(name):
                t = self.runs[seed][name].training
                lines.append(
                    f"  {name}, seed {seed}: training failed (train error {100 * t.train_error:.1f}%, "
                    f"loss {t.train_loss:.3f}); left out of the trained rows and the counts"
                )
        for name, f in self.findings().items():
            lines.append(
                f"  P1 finding 1 (random init not power-law, trained power-law), {name}: "
                f"{f['p1_finding_1']}"
            )
        for name in s.models:
            trackers = [r[name].tracker for r in self.runs.values()]
            if all(t is not None and len(t.rows) >= 3 for t in trackers):
                rs = [t.correlations("test_loss") for t in trackers if t is not None]
                cols = {c: spread(r[c] for r in rs) for c in ("lambda_max", "trace", "s", "ks")}
                lines.append(
                    f"  {name} tracker, Pearson r with test loss over "
                    f"{len(trackers[0].rows) if trackers[0] else 0} checkpoints "
                    f"(top-{s.tracker_k}), mean±std over seeds: "
                    f"lambda_1 {cols['lambda_max'].text('+.2f')}, "
                    f"Tr(H) {cols['trace'].text('+.2f')}, s {cols['s'].text('+.2f')}, "
                    f"d_ks {cols['ks'].text('+.2f')}"
                )
        grad_lines = []
        for name in s.models:
            for stage, label in (("random_init", "random init"), ("trained", "trained")):
                g = spreads[name].get(f"gradients_{stage}")
                if g is None:
                    continue
                tails = ", ".join(
                    f"{kind.replace('_', '-')} {_t(g[kind]['frac_power_law'], '.0f', 100, '%')}"
                    f"/{_t(g[kind]['frac_gaussian'], '.0f', 100, '%')}"
                    for kind in ("dimension_wise", "iteration_wise", "noise")
                    if kind in g
                )
                grad_lines.append(
                    f"  {name:7} {label:12} covariance top-{s.gradient_k}: s "
                    f"{_t(g['s'], '.3f')}, d_ks {_t(g['ks'], '.4f')}, power-law in "
                    f"{_c(g['power_law'])}; power-law/Gaussian: {tails}"
                )
        if grad_lines:
            lines.append("")
            lines.append(
                "  P2 gradient structure (covariance spectrum of per-sample gradients; fraction "
                "of samples passing the power-law / Gaussian tests, mean±std over seeds)"
            )
            lines.extend(grad_lines)
        notes = sorted({f"{n}/{st}: {x}" for r in self.runs.values() for n, m in r.items()
                        for st, rep in (("random_init", m.random_init), ("trained", m.trained))
                        for x in rep.notes})  # fmt: skip
        lines.extend(f"  note: {x}" for x in notes)
        lines.append("")
        lines.append(
            "  Other CPUs round differently, so a single seed's digits (and a verdict near d_c) "
            "move between machines: compare the counts and the spreads."
        )
        return "\n".join(line.rstrip() for line in lines)

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the run into ``directory`` atomically.

        ``report.json`` (everything, every seed), ``summary.txt``, ``spectra.png`` (every model's
        random-init and trained spectra of every seed with their fits), and per seed and model
        ``seed<N>/<model>/random_init/``, ``trained/``, ``gradients_*/`` and ``tracker/``.

        Args:
            directory: where to write (must not exist unless ``overwrite``).
            overwrite: replace an existing ``directory``.

        Returns:
            ``directory`` as a path.
        """
        return save_report(self, directory, overwrite)

    def write_into(self, directory: Path) -> None:
        """Write the report's files into the existing ``directory``."""
        from fastspec.analysis.plots import comparison_figure

        write_report_files(directory, self)
        panels = []
        for name in self.settings.models:
            curves = [
                (f"{label}, seed {seed}{_failed(runs[name], stage)}", rep.eigenvalues,
                 rep.spectrum_fit)
                for label, stage in (("random init", "random_init"), ("trained", "trained"))
                for seed, runs in self.runs.items()
                for rep in (getattr(runs[name], stage),)
            ]  # fmt: skip
            params = self.models[name].num_params
            panels.append((f"{name} ({params:,} parameters), digits", curves))
        for seed, runs in self.runs.items():
            for name, m in runs.items():
                _write_model(directory / f"seed{seed}" / name, name, m)
        comparison_figure(
            panels, directory / "spectra.png",
            suptitle=f"Top-{self.settings.k} Hessian eigenvalues, rank–value, log–log, "
            "with P1's power-law fits",
        )  # fmt: skip


def _write_model(directory: Path, name: str, m: ModelRun) -> None:
    for stage, rep in (("random_init", m.random_init), ("trained", m.trained)):
        (directory / stage).mkdir(parents=True)
        rep.write_into(directory / stage)
    for stage, grep in (("random_init", m.gradients_init), ("trained", m.gradients_trained)):
        if grep is not None:
            (directory / f"gradients_{stage}").mkdir(parents=True)
            grep.write_into(directory / f"gradients_{stage}")
    if m.tracker is not None:
        (directory / "tracker").mkdir(parents=True)
        m.tracker.write_into(
            directory / "tracker",
            title=f"{name}: top-{m.tracker.k} Hessian spectrum over training (dashed: d_c)",
            xlabel="epoch",
        )


def _failed(m: ModelRun, stage: str) -> str:
    return " (did not learn)" if stage == "trained" and not m.training.learned else ""


def _finding_1(m: ModelRun) -> bool:
    init, trained = m.random_init.spectrum_fit, m.trained.spectrum_fit
    return (
        init is not None and trained is not None and not init.is_power_law and trained.is_power_law
    )


def _fit_value(fit: Any, attr: str) -> float | None:
    return None if fit is None else float(getattr(fit, attr))


def _hessian_spread(reps: list[HessianReport]) -> dict[str, Any]:
    fits = [r.spectrum_fit for r in reps]
    gaps = [r.eigengap_fit for r in reps]
    return {
        "test_error": spread(r.extra.get("test_error") for r in reps).to_dict(),
        "test_loss": spread(r.extra.get("test_loss") for r in reps).to_dict(),
        "lambda_max": spread(r.lambda_max for r in reps).to_dict(),
        "trace": spread(None if r.trace is None else r.trace.estimate for r in reps).to_dict(),
        "s": spread(_fit_value(f, "s") for f in fits).to_dict(),
        "ks": spread(_fit_value(f, "ks") for f in fits).to_dict(),
        "ks_critical": spread(_fit_value(f, "ks_critical") for f in fits).to_dict(),
        "power_law": count([f is not None and f.is_power_law for f in fits]).to_dict(),
        "s_gap": spread(_fit_value(f, "s") for f in gaps).to_dict(),
        "gaps_power_law": count([f is not None and f.is_power_law for f in gaps]).to_dict(),
    }


def _gradient_spread(reps: list[GradientReport]) -> dict[str, Any]:
    fits = [r.covariance_fit for r in reps]
    out: dict[str, Any] = {
        "s": spread(_fit_value(f, "s") for f in fits).to_dict(),
        "ks": spread(_fit_value(f, "ks") for f in fits).to_dict(),
        "power_law": count([f is not None and f.is_power_law for f in fits]).to_dict(),
    }
    for kind in ("dimension_wise", "iteration_wise", "noise"):
        if all(kind in r.tails for r in reps):
            out[kind] = {
                "frac_power_law": spread(r.tails[kind].frac_power_law for r in reps).to_dict(),
                "frac_gaussian": spread(r.tails[kind].frac_gaussian for r in reps).to_dict(),
            }
    return out


def _t(d: dict[str, Any], fmt: str, scale: float = 1.0, unit: str = "") -> str:
    return Spread(tuple(d["values"]), d["mean"], d["std"]).text(fmt, scale, unit)


def _c(d: dict[str, Any]) -> str:
    return f"{d['holds']} of {d['of']}"


def run_main_job(
    settings: RunSettings | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    checkpoint: Any = None,
    resume: Resume = False,
) -> RunReport:
    """Run the main job; when ``out`` is given, save the report there (atomically).

    Args:
        settings: what to compute (default :class:`RunSettings`; :data:`QUICK` for a smoke run).
        out: report directory (checked before any work: it must not exist unless
            ``overwrite``).
        overwrite: replace an existing ``out``.
        progress: progress bars and step lines on stderr.
        checkpoint: a directory or a :class:`fastspec.checkpoint.Checkpoint`: every analysis
            saves its solvers' state in ``seed<N>/<model>/<stage>/``.
        resume: ``True`` continues from ``checkpoint`` (it must hold one): finished analyses
            return their stored results without operator products, the interrupted one
            continues where it was saved (training is deterministic and is run again).
            ``"if-present"``: the same when there is a checkpoint. ``False``: start, refusing a
            directory that holds one.

    Returns:
        The :class:`RunReport`.
    """
    s = (settings or RunSettings()).validated()
    if out is not None:
        from fastspec.analysis.plots import require_matplotlib

        check_target(out, overwrite=overwrite)
        require_matplotlib()
    cp, stage_resume = pipeline_checkpoint(checkpoint, resume)
    device = resolve_device(s.device)
    start = time.perf_counter()
    seeds = tuple(range(s.seed, s.seed + s.seeds))
    stages = 2 + 2 * s.gradients
    job = JobProgress(len(seeds) * len(s.models) * stages, enabled=progress)
    runs: dict[int, dict[str, ModelRun]] = {}
    data: dict[str, Any] = {}
    for seed in seeds:
        runs[seed] = {}
        for name in s.models:
            ck = (stage_checkpoint(cp, f"seed{seed}/{name}"), stage_resume)
            runs[seed][name], data = _run_model(name, s, seed, device, job, progress, ck)
    report = RunReport(
        settings=s,
        runs=runs,
        environment=environment_info(device),
        seconds=time.perf_counter() - start,
        data=data,
    )
    if out is not None:
        report.save(out, overwrite=overwrite)
    return report


def _run_model(
    name: str,
    s: RunSettings,
    seed: int,
    device: torch.device,
    job: JobProgress,
    progress: bool,
    ck: tuple[Checkpoint | None, Resume] = (None, False),
) -> tuple[ModelRun, dict[str, Any]]:
    """One model, one seed.

    The seed fixes the data split, the initialisation, the shuffling and the estimators' probes.
    """
    dtype = getattr(torch, s.dtype)
    (Xtr, ytr), (Xte, yte) = digits.digits_split(dtype=dtype, seed=seed)
    train_set = (Xtr.to(device), ytr.to(device))
    test_set = (Xte.to(device), yte.to(device))
    loss_fn = nn.CrossEntropyLoss()
    common = {
        "tol": s.tol, "dtype": dtype, "trace_matvecs": s.trace_matvecs, "seed": seed,
        "max_samples": s.max_samples, "block_size": s.block_size, "hvp": digits.REPRODUCIBLE_HVP,
    }  # fmt: skip
    tag = f"{name}, seed {seed}"

    def stage(name: str) -> dict[str, Any]:
        return {"checkpoint": stage_checkpoint(ck[0], name), "resume": ck[1]}

    torch.manual_seed(seed)
    model = digits.MODELS[name]().to(device=device, dtype=dtype).eval()
    init_loss, init_err = digits.evaluate(model, *test_set)
    job.step(f"{tag}: Hessian at random init (K = {s.k})")
    init = analyze_hessian(
        model, loss_fn, [train_set], k=s.k, density_probes=s.density_probes,
        density_steps=s.density_steps, label=f"{name}/random_init", progress=progress,
        extra={"test_loss": init_loss, "test_error": init_err}, **common, **stage("random_init"),
    )  # fmt: skip
    grads_data = [
        train_set
        if s.max_samples is None
        else (train_set[0][: s.max_samples], train_set[1][: s.max_samples])
    ]
    grad_common = {
        "k": s.gradient_k, "noise_batch_size": 128, "num_coordinates": s.gradient_coordinates,
        "dtype": dtype, "seed": seed, "progress": progress,
    }  # fmt: skip
    grads_init = grads_trained = None
    recorder = None
    first = 0
    if s.gradients:
        job.step(f"{tag}: gradients at random init")
        grads_init = analyze_gradients(
            model, loss_fn, grads_data, num_steps=s.gradient_steps,
            label=f"{name}/random_init", **grad_common, **stage("gradients_random_init"),
        )  # fmt: skip
        steps_per_epoch = -(-len(train_set[0]) // 128)
        total = s.epochs * steps_per_epoch
        first = total // 2  # record the second half of training
        recorder = GradientRecorder(
            model, num_coordinates=s.gradient_coordinates, seed=seed, loss_fn=loss_fn,
            data=grads_data,
            full_gradient_steps=sorted({first, (first + total) // 2, total - 1}),
        )  # fmt: skip
    tracker = None
    if name in s.tracker_models:
        tracker = SpectrumTracker(model, loss_fn, [train_set], k=s.tracker_k, **common)

    def on_epoch(epoch: int, m: nn.Module) -> None:
        if tracker is not None and epoch in s.tracker_epochs:
            test_loss, test_error = digits.evaluate(m, *test_set)
            train_loss, _ = digits.evaluate(m, *train_set)
            tracker.record(epoch, test_loss=test_loss, test_error=test_error, train_loss=train_loss)

    job.step(f"{tag}: training ({s.epochs} epochs of P1's recipe), then its Hessian")
    result = digits.train(
        model, train_set, test_set, epochs=s.epochs, seed=seed, on_epoch=on_epoch,
        on_step=None if recorder is None else _recording(recorder, first),
        progress=progress, desc=f"{tag}: train",
    )  # fmt: skip
    trained = analyze_hessian(
        model, loss_fn, [train_set], k=s.k, density_probes=s.density_probes,
        density_steps=s.density_steps, label=f"{name}/trained", progress=progress,
        extra={"test_loss": result.test_loss, "test_error": result.test_error}, **common,
        **stage("trained"),
    )  # fmt: skip
    if recorder is not None:
        job.step(f"{tag}: gradients of the trained model")
        grads_trained = analyze_gradients(
            model, loss_fn, grads_data, recorder=recorder, label=f"{name}/trained",
            **grad_common, **stage("gradients_trained"),
        )  # fmt: skip
    run = ModelRun(
        name=name,
        num_params=sum(p.numel() for p in model.parameters()),
        training=result,
        random_init=init,
        trained=trained,
        tracker=tracker,
        gradients_init=grads_init,
        gradients_trained=grads_trained,
    )
    return run, {"name": "sklearn digits", "num_train": len(Xtr), "num_test": len(Xte)}


def _recording(recorder: GradientRecorder, first: int) -> Any:
    def on_step(step: int, _: nn.Module) -> None:
        if step >= first:
            recorder.record(step)

    return on_step


def environment_info(device: torch.device) -> dict[str, Any]:
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
