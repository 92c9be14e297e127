"""P1's and P2's findings as one table, ``fastspec run --findings``.

P1: Xie et al., *On the Power-Law Hessian Spectrums in Deep Learning*, arXiv:2201.13011.
P2: Xie et al., *On the Overlooked Structure of Stochastic Gradients*, arXiv:2212.02083.

Every behaviour of methods.md §2 that runs on scikit-learn's digits is one row, plus P2's: each
row names the settings it needs (:data:`SETTINGS`: a model, its data and its training), trains
and analyses each of them once per seed, and reads P1's claim off each seed's KS decisions and
slopes. P2's heavy-against-Gaussian rows are read off the Gaussian test: the power-law tail
test alone does not separate them (a Clauset fit finds a passing tail in most Gaussian samples
too; tests/analysis/test_findings.py shows it). A row *agrees* when the claim holds in every seed, *disagrees* when it holds in none,
and is *undecided* otherwise; the count of seeds is reported with it. The verdicts are the
numbers' own: nothing is tuned to make a row agree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastspec._checks import AsDict, check_choice, check_float, check_int
from fastspec.analysis import digits
from fastspec.analysis._progress import JobProgress
from fastspec.analysis.output import (
    check_target,
    plain,
    save_report,
    write_report_files,
)
from fastspec.analysis.spread import count, spread
from fastspec.stats import SpectrumFit, fit_spectrum

__all__ = [
    "FINDINGS",
    "FINDINGS_QUICK",
    "SETTINGS",
    "Finding",
    "FindingsReport",
    "FindingsSettings",
    "Measurement",
    "Setting",
    "run_findings",
    "verdict",
]


@dataclass(frozen=True)
class Setting:
    """One model, its data and its training (the FCN of ``fastspec run`` unless changed).

    Attributes:
        name: the setting's key.
        depth, width, activation: the FCN (:func:`fastspec.analysis.digits.mlp`).
        num_train: train on the first ``num_train`` training samples (None: all 1437).
        batch_size, optimizer, lr: the training recipe (P1's otherwise).
        label_noise: fraction of training labels replaced by another class.
        trained: False: analysed at random initialisation.
        covariance: also compute the covariance spectrum of per-sample gradients (P2), as the
            minibatch-noise covariance C/B at B = ``batch_size``.
        tails: also record minibatch gradients during training for P2's tail tests.
        hessian: compute the top-K Hessian spectrum (False for settings only P2's rows read:
            their rows never look at it, and it is the costliest step of a setting).
    """

    name: str
    depth: int = 2
    width: int = 100
    activation: str = "relu"
    num_train: int | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    label_noise: float = 0.0
    trained: bool = True
    covariance: bool = False
    tails: bool = False
    hessian: bool = True


#: every setting a finding uses, by name
SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("init", trained=False),
        Setting("fcn"),
        Setting("depth1", depth=1),
        Setting("width30", width=30),
        Setting("width50", width=50),
        Setting("n600", num_train=600),
        Setting("n800", num_train=800),
        Setting("b512", batch_size=512),
        Setting("b640", batch_size=640),
        Setting("b768", batch_size=768),
        Setting("adam", optimizer="adam", lr=1e-3),
        Setting("noise40", label_noise=0.4),
        Setting("noise80", label_noise=0.8),
        Setting("linear", activation="linear"),
        Setting("batchnorm", activation="batchnorm"),
        Setting("grad_b100", batch_size=100, covariance=True, tails=True, hessian=False),
        Setting("grad_b200", batch_size=200, covariance=True, hessian=False),
        Setting("grad_b300", batch_size=300, covariance=True, hessian=False),
    )
}


@dataclass(frozen=True)
class Measurement(AsDict):
    """What one setting gave in one seed.

    Attributes:
        setting: its name; seed: the seed.
        eigenvalues: the top-K Hessian eigenvalues, descending (None when the setting
            computes none).
        fit: P1's fit and KS decision on them (None when impossible or not computed).
        test_error: the test error after training (or at init).
        covariance: top covariance eigenvalues of the minibatch noise (P2 settings), or None.
        covariance_fit: their fit.
        tails: kind → ``{"frac_power_law", "frac_gaussian"}`` (P2's tail tests), if run.
        seconds: wall time of this setting.
    """

    setting: str
    seed: int
    eigenvalues: np.ndarray | None
    fit: SpectrumFit | None
    test_error: float
    covariance: np.ndarray | None = None
    covariance_fit: SpectrumFit | None = None
    tails: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


Holds = Callable[[Mapping[str, Measurement]], bool]


@dataclass(frozen=True)
class Finding:
    """One row: a paper's claim and how to read it off one seed's measurements.

    Attributes:
        key: the row's name; paper: ``"P1"`` or ``"P2"``; claim: the claim, in words.
        settings: the settings it needs.
        holds: whether the claim holds in one seed (setting name → :class:`Measurement`).
        what: ``"hessian"`` (Hessian fits), ``"covariance"`` (gradient covariance fits) or
            ``"tails"`` (tail-test fractions): what the row's measurement shows.
    """

    key: str
    paper: str
    claim: str
    settings: tuple[str, ...]
    holds: Holds
    what: str = "hessian"


def _pl(m: Mapping[str, Measurement], name: str) -> bool:
    fit = m[name].fit
    return fit is not None and fit.is_power_law


def _s(m: Mapping[str, Measurement], name: str) -> float:
    fit = m[name].fit
    return float("nan") if fit is None else fit.s


def _cov_pl(m: Mapping[str, Measurement], name: str) -> bool:
    fit = m[name].covariance_fit
    return fit is not None and fit.is_power_law


def _frac(m: Mapping[str, Measurement], name: str, kind: str, test: str) -> float:
    return m[name].tails.get(kind, {}).get(test, float("nan"))


#: the table's rows, in methods.md §2's order, then P2's
FINDINGS: tuple[Finding, ...] = (
    Finding("random_vs_trained", "P1", "random init is not power-law; the trained FCN is",
            ("init", "fcn"), lambda m: not _pl(m, "init") and _pl(m, "fcn")),
    Finding("depth", "P1", "1 hidden layer is not power-law; 2 hidden layers are",
            ("depth1", "fcn"), lambda m: not _pl(m, "depth1") and _pl(m, "fcn")),
    Finding("width", "P1", "2 hidden layers of width 30 are not power-law; width 50 and 100 are",
            ("width30", "width50", "fcn"),
            lambda m: not _pl(m, "width30") and _pl(m, "width50") and _pl(m, "fcn")),
    Finding("data_size", "P1", "N = 600 training samples are not power-law; N = 800 and more are",
            ("n600", "n800", "fcn"),
            lambda m: not _pl(m, "n600") and _pl(m, "n800") and _pl(m, "fcn")),
    Finding("batch_slope", "P1", "a larger batch (same epochs) raises s: B = 128 < 512 < 640",
            ("fcn", "b512", "b640"),
            lambda m: _s(m, "fcn") < _s(m, "b512") < _s(m, "b640")),
    Finding("batch_break", "P1", "B = 128, 512, 640 are power-law; B = 768 breaks it",
            ("fcn", "b512", "b640", "b768"),
            lambda m: _pl(m, "fcn") and _pl(m, "b512") and _pl(m, "b640") and not _pl(m, "b768")),
    Finding("adam", "P1", "Adam gives a larger s than SGD", ("fcn", "adam"),
            lambda m: _s(m, "adam") > _s(m, "fcn")),
    Finding("label_noise", "P1", "0 % label noise is power-law; 40 % and 80 % are not",
            ("fcn", "noise40", "noise80"),
            lambda m: _pl(m, "fcn") and not _pl(m, "noise40") and not _pl(m, "noise80")),
    Finding("activation", "P1", "a linear network is not power-law; with ReLU or BatchNorm it is",
            ("linear", "fcn", "batchnorm"),
            lambda m: not _pl(m, "linear") and _pl(m, "fcn") and _pl(m, "batchnorm")),
    Finding("noise_covariance", "P2",
            "the gradient-noise covariance of the trained FCN is power-law at B = 100, 200, 300",
            ("grad_b100", "grad_b200", "grad_b300"),
            lambda m: all(_cov_pl(m, n) for n in ("grad_b100", "grad_b200", "grad_b300")),
            what="covariance"),
    Finding("dimension_wise", "P2",
            "dimension-wise gradients are heavy-tailed: most pass the power-law test, most fail "
            "the Gaussian one", ("grad_b100",),
            lambda m: _frac(m, "grad_b100", "dimension_wise", "frac_power_law") > 0.5
            and _frac(m, "grad_b100", "dimension_wise", "frac_gaussian") < 0.5,
            what="tails"),
    Finding("iteration_wise", "P2",
            "iteration-wise gradients and gradient noise are not heavy-tailed: most pass the "
            "Gaussian test", ("grad_b100",),
            lambda m: _frac(m, "grad_b100", "iteration_wise", "frac_gaussian") >= 0.5
            and _frac(m, "grad_b100", "noise", "frac_gaussian") >= 0.5,
            what="tails"),
)  # fmt: skip


def verdict(per_seed: Sequence[bool]) -> str:
    """A row's verdict from its per-seed outcomes.

    ``"agrees"`` when the claim held in every seed, ``"disagrees"`` in none, else ``"undecided"``.
    """
    if not per_seed:
        raise ValueError("per_seed must hold at least one seed's outcome")
    held = sum(bool(x) for x in per_seed)
    return "agrees" if held == len(per_seed) else "disagrees" if held == 0 else "undecided"


@dataclass(frozen=True)
class FindingsSettings:
    """What ``fastspec run --findings`` computes.

    Attributes:
        findings: the rows' keys (default every row of :data:`FINDINGS`).
        k: top Hessian eigenvalues per setting (P1: 1000).
        tol: eigsh's residual tolerance; dtype: compute dtype.
        epochs: training epochs (P1: 50).
        gradient_k: top covariance eigenvalues fitted (P2 rows).
        gradient_coordinates: coordinates tracked for the iteration-wise and noise tests.
        seed: the first seed; seeds: how many.
        alpha: the KS decision's level.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    """

    findings: tuple[str, ...] = tuple(f.key for f in FINDINGS)
    k: int = 200
    tol: float = 1e-4
    dtype: str = "float32"
    epochs: int = 50
    gradient_k: int = 200
    gradient_coordinates: int = 1000
    seed: int = 0
    seeds: int = 3
    alpha: float = 0.05
    device: str = "auto"

    def validated(self) -> FindingsSettings:
        """Check every field (a clear error naming it); returns ``self``."""
        keys = [f.key for f in FINDINGS]
        if not self.findings:
            raise ValueError(f"findings must name at least one of {keys}")
        for key in self.findings:
            check_choice("findings", key, keys)
        check_int("k", self.k, minimum=2)
        check_int("gradient_k", self.gradient_k, minimum=2)
        for name in ("epochs", "gradient_coordinates", "seeds"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("seed", self.seed)
        check_float("tol", self.tol, minimum=0.0, open_min=True)
        check_float("alpha", self.alpha, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
        check_choice("dtype", self.dtype, ("float32", "float64"))
        from fastspec.analysis.run import resolve_device

        resolve_device(self.device)
        return self

    @property
    def rows(self) -> tuple[Finding, ...]:
        """The chosen rows."""
        return tuple(f for f in FINDINGS if f.key in self.findings)


#: tiny settings for tests and a smoke check
FINDINGS_QUICK = FindingsSettings(
    k=6, tol=1e-3, epochs=2, gradient_k=6, gradient_coordinates=40, seeds=2
)


@dataclass(frozen=True, eq=False)
class FindingsReport:
    """The findings table.

    Attributes:
        settings: the :class:`FindingsSettings`.
        measurements: seed → setting name → :class:`Measurement`.
        environment: device, threads, versions.
        seconds: wall time.
    """

    settings: FindingsSettings
    measurements: dict[int, dict[str, Measurement]]
    environment: dict[str, Any]
    seconds: float

    def rows(self) -> list[dict[str, Any]]:
        """One dict per finding: claim, per-seed outcome, count, verdict and measurement."""
        out = []
        for f in self.settings.rows:
            per_seed = [f.holds(m) for m in self.measurements.values()]
            c = count(per_seed)
            out.append({
                "key": f.key, "paper": f.paper, "claim": f.claim, "settings": list(f.settings),
                "holds": c.to_dict(), "count": f"holds in {c.text()}",
                "verdict": verdict(per_seed), "measured": self._measured(f),
            })  # fmt: skip
        return out

    def _measured(self, f: Finding) -> str:
        parts: list[str] = []
        ms = list(self.measurements.values())
        for name in f.settings:
            if f.what == "tails":
                fr = {
                    kind: (
                        spread(m[name].tails.get(kind, {}).get("frac_power_law") for m in ms),
                        spread(m[name].tails.get(kind, {}).get("frac_gaussian") for m in ms),
                    )
                    for kind in ("dimension_wise", "iteration_wise", "noise")
                }
                parts.extend(
                    f"{k.replace('_', '-')} {a.text('.0f', 100, '%')} PL / "
                    f"{b.text('.0f', 100, '%')} Gauss"
                    for k, (a, b) in fr.items()
                )
                continue
            fits = [m[name].covariance_fit if f.what == "covariance" else m[name].fit for m in ms]
            s_hat = spread(None if x is None else x.s for x in fits)
            ks = spread(None if x is None else x.ks for x in fits)
            pl = count([x is not None and x.is_power_law for x in fits])
            parts.append(
                f"{name}: s {s_hat.text('.3f')}, d_ks {ks.text('.3f')}, PL {pl.holds}/{pl.of}"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (``report.json``): the rows and every per-seed measurement."""
        return plain(
            {
                "kind": "findings",
                "settings": asdict(self.settings),
                "setting_definitions": {
                    n: asdict(SETTINGS[n]) for n in self.measurements[self.seeds[0]]
                },
                "environment": self.environment,
                "seconds": self.seconds,
                "rows": self.rows(),
                "measurements": {
                    str(seed): {n: m.to_dict() for n, m in ms.items()}
                    for seed, ms in self.measurements.items()
                },
            }
        )

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds, in order."""
        return tuple(self.measurements)

    def summary(self) -> str:
        """The table as text."""
        s = self.settings
        env = self.environment
        lines = [
            f"fastspec run --findings: P1's and P2's findings on scikit-learn's digits, "
            f"{len(self.seeds)} seeds ({', '.join(map(str, self.seeds))})",
            f"  Hessian top-{s.k} (P1: 1000), gradient covariance top-{s.gradient_k}, "
            f"{s.dtype}, eigsh tol {s.tol:g}, {s.epochs} epochs, KS at alpha {s.alpha:g}, "
            f"device {env['device']} ({env['threads']} threads), {self.seconds / 60:.1f} min",
            "  verdict: agrees = the claim holds in every seed, disagrees = in none, "
            "undecided = in some; measured: mean±std over seeds, PL = seeds power-law",
            "",
        ]
        for r in self.rows():
            lines.append(f"  {r['paper']} {r['key']:18} {r['verdict']:10} {r['count']}")
            lines.append(f"      claim: {r['claim']}")
            lines.append(f"      measured: {r['measured']}")
        lines.append("")
        lines.append(
            "  Other CPUs round differently, so single digits move between machines: compare the "
            "counts and verdicts."
        )
        return "\n".join(lines)

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``report.json``, ``summary.txt`` and one figure per finding atomically.

        Args:
            directory: where to write (must not exist unless ``overwrite``).
            overwrite: replace an existing ``directory``.

        Returns:
            ``directory`` as a path.
        """
        return save_report(self, directory, overwrite)

    def write_into(self, directory: Path) -> None:
        """Write the report's files into the existing ``directory``."""
        from fastspec.analysis.plots import comparison_figure, fractions_figure

        write_report_files(directory, self)
        rows = {r["key"]: r for r in self.rows()}
        for f in self.settings.rows:
            title = f"{f.paper}: {f.claim} ({rows[f.key]['verdict']}, {rows[f.key]['count']})"
            path = directory / f"{f.key}.png"
            if f.what == "tails":
                fractions_figure(
                    {
                        f"seed {seed}": ms[f.settings[0]].tails
                        for seed, ms in self.measurements.items()
                    },
                    path,
                    title=title,
                )
                continue
            panels = []
            for name in f.settings:
                curves = []
                for seed, ms in self.measurements.items():
                    m = ms[name]
                    values, fit = (
                        (m.covariance, m.covariance_fit)
                        if f.what == "covariance"
                        else (m.eigenvalues, m.fit)
                    )
                    if values is not None:
                        curves.append((f"seed {seed}", values, fit))
                panels.append((name, curves))
            comparison_figure(
                panels,
                path,
                what="covariance eigenvalue" if f.what == "covariance" else "Hessian eigenvalue",
                suptitle=title,
            )


def run_findings(
    settings: FindingsSettings | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> FindingsReport:
    """Train and analyse every setting the chosen findings need, once per seed.

    Args:
        settings: what to compute (default :class:`FindingsSettings`; :data:`FINDINGS_QUICK`
            for a smoke run).
        out: report directory (checked before any work).
        overwrite: replace an existing ``out``.
        progress: one line per setting on stderr.

    Returns:
        The :class:`FindingsReport`.
    """
    from fastspec.analysis.run import environment_info, resolve_device

    s = (settings or FindingsSettings()).validated()
    if out is not None:
        from fastspec.analysis.plots import require_matplotlib

        check_target(out, overwrite=overwrite)
        require_matplotlib()
    device = resolve_device(s.device)
    names = list(dict.fromkeys(n for f in s.rows for n in f.settings))
    seeds = tuple(range(s.seed, s.seed + s.seeds))
    job = JobProgress(len(seeds) * len(names), enabled=progress)
    start = time.perf_counter()
    measurements: dict[int, dict[str, Measurement]] = {}
    for seed in seeds:
        measurements[seed] = {}
        for name in names:
            job.step(f"seed {seed}: {name}")
            measurements[seed][name] = measure(SETTINGS[name], s, seed, device)
    report = FindingsReport(
        settings=s,
        measurements=measurements,
        environment=environment_info(device),
        seconds=time.perf_counter() - start,
    )
    if out is not None:
        report.save(out, overwrite=overwrite)
    return report


def measure(setting: Setting, s: FindingsSettings, seed: int, device: torch.device) -> Measurement:
    """Train (unless at init) and analyse one setting with one seed.

    The seed fixes the data split, the label noise, the initialisation, the shuffling and the
    estimators' probes.

    Args:
        setting: the model, data and training.
        s: the table's settings (K, tolerance, dtype, epochs, ...).
        seed: the seed.
        device: where to compute.

    Returns:
        The :class:`Measurement`.
    """
    from fastspec.analysis.gradients import analyze_gradients
    from fastspec.curvature import hessian_eigs
    from fastspec.grads import GradientRecorder, gradient_covariance_spectrum

    start = time.perf_counter()
    dtype = getattr(torch, s.dtype)
    (Xtr, ytr), (Xte, yte) = digits.digits_split(dtype=dtype, seed=seed)
    if setting.num_train is not None:
        Xtr, ytr = Xtr[: setting.num_train], ytr[: setting.num_train]
    if setting.label_noise:
        ytr = digits.noisy_labels(ytr, setting.label_noise, seed=seed)
    train_set = (Xtr.to(device), ytr.to(device))
    test_set = (Xte.to(device), yte.to(device))
    loss_fn = nn.CrossEntropyLoss()
    torch.manual_seed(seed)
    model = digits.mlp(depth=setting.depth, width=setting.width, activation=setting.activation)
    model = model.to(device=device, dtype=dtype).eval()
    recorder = None
    on_step = None
    if setting.trained:
        if setting.tails:
            total = s.epochs * -(-len(Xtr) // setting.batch_size)
            first = total // 2  # the second half of training, as in fastspec run
            recorder = GradientRecorder(
                model, num_coordinates=s.gradient_coordinates, seed=seed, loss_fn=loss_fn,
                data=[train_set], full_gradient_steps=sorted({first, (first + total) // 2, total - 1}),
            )  # fmt: skip

            def on_step(step: int, _: nn.Module, rec: Any = recorder, first: int = first) -> None:
                if step >= first:
                    rec.record(step)

        result = digits.train(
            model, train_set, test_set, epochs=s.epochs, lr=setting.lr,
            batch_size=setting.batch_size, optimizer=setting.optimizer, seed=seed,
            on_step=on_step,
        )  # fmt: skip
        test_error = result.test_error
    else:
        test_error = digits.evaluate(model, *test_set)[1]
    eigenvalues = fit = None
    if setting.hessian:
        eig = hessian_eigs(
            model, loss_fn, [train_set], s.k, tol=s.tol, dtype=dtype, seed=seed,
            hvp=digits.REPRODUCIBLE_HVP,
        )  # fmt: skip
        eigenvalues = eig.eigenvalues.double().cpu().numpy()
        fit = _fit(eigenvalues, s.k, s.alpha)
    covariance = covariance_fit = None
    tails: dict[str, dict[str, float]] = {}
    if setting.covariance:
        cov = gradient_covariance_spectrum(
            model, loss_fn, [train_set], k=s.gradient_k, noise_batch_size=setting.batch_size,
            dtype=dtype, seed=seed,
        )  # fmt: skip
        covariance = cov.eigenvalues.double().cpu().numpy()
        covariance_fit = _fit(covariance, s.gradient_k, s.alpha)
    if recorder is not None:
        g = analyze_gradients(
            model, loss_fn, [train_set], k=s.gradient_k, noise_batch_size=None, recorder=recorder,
            num_coordinates=s.gradient_coordinates, dtype=dtype, alpha=s.alpha, seed=seed,
        )  # fmt: skip
        tails = {
            kind: {"frac_power_law": t.frac_power_law, "frac_gaussian": t.frac_gaussian}
            for kind, t in g.tails.items()
        }
    return Measurement(
        setting=setting.name, seed=seed, eigenvalues=eigenvalues, fit=fit,
        test_error=test_error, covariance=covariance, covariance_fit=covariance_fit,
        tails=tails, seconds=time.perf_counter() - start,
    )  # fmt: skip


def _fit(values: np.ndarray, k: int, alpha: float) -> SpectrumFit | None:
    """P1's fit on the top ``k`` positive values (None with fewer than 2)."""
    positive = values[values > 0]
    if len(positive) < 2:
        return None
    return fit_spectrum(positive, min(k, len(positive)), alpha=alpha)
