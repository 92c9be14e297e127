"""P1's Hessian-spectrum analysis in one call: :func:`analyze_hessian` → :class:`HessianReport`.

Xie, Tang, Cai, Sun, Li, *On the Power-Law Hessian Spectrums in Deep Learning*, arXiv:2201.13011
(2022): the top K eigenvalues of the full-training-loss Hessian, the power-law
fit with the cutoff at λ_K and its KS decision, the same for the eigengaps, λ_1, Tr(H) and the
spectral density.

Nothing is computed here: one :class:`~fastspec.curvature.HessianOperator` is built and
:func:`fastspec.linalg.eigsh`, :func:`fastspec.linalg.trace`, :func:`fastspec.linalg.slq`,
:func:`fastspec.stats.fit_spectrum` and :func:`fastspec.stats.fit_eigengaps` are called on it
(the same calls :func:`fastspec.curvature.hessian_eigs` / ``hessian_trace`` /
``hessian_density`` make); the report holds their results, timings and product counts.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastspec._checks import AsDict, check_bool, check_choice, check_float, check_int
from fastspec.analysis._progress import PairsBar, note
from fastspec.analysis.output import read_json, save_report, write_report_files
from fastspec.batches import as_batches
from fastspec.checkpoint import (
    Checkpoint,
    Resume,
    as_checkpoint,
    check_resume,
    model_data_fingerprint,
    read_record,
    write_record,
)
from fastspec.curvature.operators import HessianOperator
from fastspec.distributed import world
from fastspec.linalg import (
    ConvergenceWarning,
    SLQResult,
    TraceResult,
    eigsh,
    pooled_ritz_values,
    slq,
    trace,
)
from fastspec.stats import SpectrumFit, fit_eigengaps, fit_spectrum
from fastspec.stats.inputs import check_level

__all__ = ["HessianReport", "analyze_hessian"]

#: grid points of the density curve stored in the report
DENSITY_GRID = 400


@dataclass(frozen=True, eq=False)
class HessianReport(AsDict):
    """The Hessian-spectrum analysis of one model at one point.

    Attributes:
        label: a name for the report (e.g. ``"fcn/trained"``).
        eigenvalues: [K] the top-K eigenvalues, descending.
        residuals: [K] their recomputed relative residuals (see :class:`fastspec.linalg.EigshResult`).
        converged: [K] residual <= tol.
        spectrum_fit: P1's fit and KS decision on the positive eigenvalues (None when fewer than
            2 are positive; ``notes`` says why).
        eigengap_fit: the same on the eigengaps (None when it cannot be fitted).
        trace: Tr(H) with its standard error (None when not requested).
        density: the SLQ quadrature (None when not requested).
        density_grid, density_values: [G] the Gaussian-broadened density
            (:meth:`fastspec.linalg.SLQResult.density`) on a grid spanning the nodes (empty when
            there is no density).
        density_sigma: the broadening used.
        settings: what was computed and how (k, tol, dtype, device, seed, P, N, processes, HVP
            method, ...).
        timings: seconds per step (``eigsh``, ``trace``, ``density``, ``fits``, ``total``).
        matvecs: Hessian-vector products per step.
        notes: anything the reader should know (unconverged pairs, fits that could not be made).
        extra: caller's metadata (training summary, ...), stored as given.
    """

    _dict_properties = ("kind", "lambda_max")

    label: str
    eigenvalues: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    spectrum_fit: SpectrumFit | None
    eigengap_fit: SpectrumFit | None
    trace: TraceResult | None
    density: SLQResult | None
    density_grid: np.ndarray
    density_values: np.ndarray
    density_sigma: float | None
    settings: dict[str, Any]
    timings: dict[str, float]
    matvecs: dict[str, int]
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """What the report is, in its saved form: ``"hessian"``."""
        return "hessian"

    @property
    def lambda_max(self) -> float:
        """λ_1."""
        return float(self.eigenvalues[0])

    @property
    def k(self) -> int:
        """Number of eigenvalues computed."""
        return int(self.eigenvalues.shape[0])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HessianReport:
        """Rebuild a report from :meth:`to_dict`'s output (e.g. a saved ``report.json``).

        Raises:
            ValueError: ``data`` is not a Hessian report, or an entry is missing or malformed.
        """
        if not isinstance(data, dict) or data.get("kind") != "hessian":
            kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a Hessian report (kind={kind!r})")
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a malformed Hessian report: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> HessianReport:
        dens = data["density"]
        # saved before the density curve's fields were stored flat: a "density_curve" object
        curve = data.get("density_curve") or {
            "grid": data["density_grid"],
            "values": data["density_values"],
            "sigma": data["density_sigma"],
        }
        return cls(
            label=data["label"],
            eigenvalues=np.asarray(data["eigenvalues"], dtype=np.float64),
            residuals=np.asarray(data["residuals"], dtype=np.float64),
            converged=np.asarray(data["converged"], dtype=bool),
            spectrum_fit=fit_from_dict(data["spectrum_fit"]),
            eigengap_fit=fit_from_dict(data["eigengap_fit"]),
            trace=None if data["trace"] is None else TraceResult(**data["trace"]),
            density=None
            if dens is None
            else SLQResult(
                nodes=torch.tensor(dens["nodes"], dtype=torch.float64),
                weights=torch.tensor(dens["weights"], dtype=torch.float64),
                lengths=torch.tensor(dens["lengths"], dtype=torch.int64),
                dim=dens["dim"],
                num_matvecs=dens["num_matvecs"],
                reorthogonalized=dens["reorthogonalized"],
            ),
            density_grid=np.asarray(curve["grid"], dtype=np.float64),
            density_values=np.asarray(curve["values"], dtype=np.float64),
            density_sigma=curve["sigma"],
            settings=data["settings"],
            timings=data["timings"],
            matvecs=data["matvecs"],
            notes=tuple(data["notes"]),
            extra=data["extra"],
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HessianReport:
        """Read a report saved by :meth:`save` (its directory or its ``report.json``).

        Raises:
            FileNotFoundError: no report at ``path``.
            ValueError: the file is not JSON, or not a complete Hessian report (the message
                names the file).
        """
        return load_report(cls, path)

    def summary(self) -> str:
        """A readable multi-line summary for the console."""
        from fastspec.analysis.summary import hessian_summary

        return hessian_summary(self)

    def save(
        self, directory: str | os.PathLike[str], *, plots: bool = True, overwrite: bool = False
    ) -> Path:
        """Write the report's files into ``directory``, atomically.

        Write ``report.json``, ``summary.txt`` and (``plots``) ``spectrum.png`` (rank– eigenvalue on
        log–log axes with the fitted law, eigenvalues and eigengaps), ``ccdf.png`` and
        ``density.png`` into ``directory``, atomically.

        Returns:
            The directory.
        """
        return save_report(self, directory, overwrite, plots=plots)

    def write_into(self, directory: Path, *, plots: bool = True) -> None:
        """Write the report's files into an existing directory.

        Write the report's files into an existing directory (used by :meth:`save` and by reports
        that contain this one).
        """
        write_report_files(directory, self)
        if plots:
            from fastspec.analysis import plots as P

            P.hessian_figures(self, directory)


def fit_from_dict(d: dict[str, Any] | None) -> SpectrumFit | None:
    """A :class:`~fastspec.stats.SpectrumFit` from its ``to_dict()`` form (``None`` stays)."""
    return None if d is None else SpectrumFit(**d)


def load_report(cls: Any, path: str | os.PathLike[str]) -> Any:
    """``cls.from_dict`` of the JSON at ``path``, with errors that name the file."""
    try:
        data = read_json(path)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a report (invalid JSON: {exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a report (not a text file)") from None
    try:
        return cls.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


Loss = Callable[..., torch.Tensor]


@dataclass
class _Top:
    """The top-k step of :func:`analyze_hessian`, by either method."""

    eigenvalues: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    num_matvecs: int
    settings: dict[str, Any]
    notes: list[str]


def _certified(op: HessianOperator, k: int, **kw: Any) -> _Top:
    """The top ``k`` by eigsh, each pair certified; its ConvergenceWarnings become notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        eig = eigsh(op, k, **kw)
    notes = []
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            notes.append(str(w.message))  # it starts with "eigsh:"
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return _Top(
        eig.eigenvalues.detach().cpu().double().numpy(),
        eig.residuals.detach().cpu().double().numpy(),
        eig.converged.detach().cpu().numpy().astype(bool),
        eig.num_matvecs,
        {"block_size": eig.block_size, "max_basis": eig.max_basis,
         "num_restarts": eig.num_restarts},
        notes,
    )  # fmt: skip


def _pooled_slq(
    op: HessianOperator, k: int, runs: int, nodes: int, seed: int, checkpoint: Any, resume: Any
) -> _Top:
    """P1's LLM protocol: ``runs`` SLQ runs of ``nodes`` nodes, Ritz values pooled, top ``k``."""
    pool = slq(op, num_probes=runs, num_steps=nodes, seed=seed, checkpoint=checkpoint,
               resume=resume)  # fmt: skip
    what = f"eigenvalues: the top {k} of {runs} SLQ runs' pooled Ritz values (P1's LLM protocol)"
    return _Top(
        pooled_ritz_values(pool, k).numpy(),
        np.full(k, np.nan),  # Ritz values of SLQ runs carry no residual: not certified
        np.zeros(k, dtype=bool),
        pool.num_matvecs,
        {"block_size": None, "max_basis": None, "num_restarts": None},
        [what + ": not certified"],
    )


def analyze_hessian(
    model: nn.Module,
    loss_fn: Loss | None,
    data: Any,
    *,
    k: int = 100,
    tol: float = 1e-6,
    dtype: torch.dtype | None = None,
    params: Any = None,
    mode: str = "eval",
    hvp: str = "auto",
    batch_loss: Any = None,
    max_samples: int | None = None,
    block_size: int | None = None,
    max_basis: int | None = None,
    eigenvalues: str = "eigsh",
    slq_runs: int = 3,
    slq_nodes: int = 1000,
    alpha: float = 0.05,
    trace_matvecs: int | None = 99,
    trace_method: str = "hutch++",
    density_probes: int | None = 4,
    density_steps: int = 80,
    seed: int = 0,
    label: str = "hessian",
    progress: bool = False,
    extra: dict[str, Any] | None = None,
    checkpoint: Any = None,
    resume: Resume = False,
) -> HessianReport:
    """P1's analysis of the Hessian of the full-data loss of ``model`` on ``data``.

    Computes the top ``k`` eigenpairs (certified by residuals), fits the power law to the
    positive eigenvalues and to their eigengaps with P1's KS decision, estimates Tr(H) with a
    standard error and the spectral density by SLQ.

    Args:
        model: any ``nn.Module`` (not modified).
        loss_fn: ``loss(outputs, targets) -> scalar`` (mean or sum reduction).
        data: a DataLoader, an iterable of ``(inputs, targets)`` batches or one such pair.
        k: eigenvalues to compute (P1: 1000 for FCN/LeNet); ``2 <= k < P``.
        tol: eigsh's relative residual tolerance (float32 reaches about 1e-4 at best).
        dtype: compute dtype, float32 or float64 (default: the parameters').
        params: parameter selection (:class:`fastspec.curvature.HessianOperator`, as the four
            options below).
        mode: ``"eval"`` (default) or ``"train"``.
        hvp: ``"auto"``, ``"double_backward"`` or ``"forward_over_reverse"``.
        batch_loss: hook ``batch_loss(model, batch) -> scalar`` for batches that are not pairs.
        max_samples: use only the first ``max_samples`` samples of ``data``.
        block_size: eigsh's block size (default: its choice).
        max_basis: eigsh's largest basis (default: its choice).
        eigenvalues: ``"eigsh"`` (default): the top ``k`` eigenpairs by block Lanczos, each
            certified by its residual. ``"slq"``: P1's protocol for language models
            (``methods.md`` §1): ``slq_runs`` stochastic-Lanczos-quadrature runs of ``slq_nodes``
            nodes, their Ritz values pooled, sorted and the top ``k`` kept
            (:func:`~fastspec.linalg.pooled_ritz_values`). It takes ``slq_runs · slq_nodes``
            products whatever ``k`` is, but its values are not certified (residuals NaN,
            converged False), and an eigenvalue found by every run appears once per run, as in
            the paper.
        slq_runs: the ``"slq"`` protocol's runs (P1: 3).
        slq_nodes: Lanczos nodes per run (P1: 1000; at most P).
        alpha: level of the KS decisions.
        trace_matvecs: products for Tr(H) (None: no trace).
        trace_method: ``"hutch++"`` or ``"hutchinson"``.
        density_probes: SLQ probes (None: no density).
        density_steps: Lanczos steps per probe (capped at P).
        seed: eigsh uses ``seed``, the trace ``seed + 1``, SLQ ``seed + 2``.
        label: the report's name.
        progress: progress bar for eigsh and one line per step on stderr.
        extra: metadata stored in the report as given.
        checkpoint: a directory or a :class:`fastspec.checkpoint.Checkpoint`: eigsh, the trace
            and SLQ save their state in its subdirectories ``eigsh/``, ``trace/`` and
            ``density/``, fingerprinted with the model's parameters, the data and the settings.
        resume: ``True`` continues from ``checkpoint`` (it must hold one): finished steps
            return their stored results, the interrupted one continues where it was saved.
            ``"if-present"`` does so when there is a checkpoint. ``False`` (default) starts and
            refuses a directory that holds one.

    Returns:
        A :class:`HessianReport`.

    Raises:
        TypeError, ValueError: bad arguments (``k`` outside ``[2, P)``, ...), or model and data
            that do not fit together.
    """
    k = check_int("k", k, minimum=2)
    tol = check_float("tol", tol, minimum=0.0, maximum=1.0, open_min=True, open_max=True)
    eigenvalues = check_choice("eigenvalues", eigenvalues, ("eigsh", "slq"))
    slq_runs = check_int("slq_runs", slq_runs, minimum=1)
    slq_nodes = check_int("slq_nodes", slq_nodes, minimum=1)
    alpha = check_level(alpha)
    trace_matvecs = check_int("trace_matvecs", trace_matvecs, minimum=1, none_ok=True)
    trace_method = check_choice("trace_method", trace_method, ("hutch++", "hutchinson"))
    density_probes = check_int("density_probes", density_probes, minimum=1, none_ok=True)
    density_steps = check_int("density_steps", density_steps, minimum=1)
    seed = check_int("seed", seed)
    progress = check_bool("progress", progress)
    t_start = time.perf_counter()
    op = HessianOperator(
        model, loss_fn, data, params=params, mode=mode, dtype=dtype, hvp=hvp,
        batch_loss=batch_loss, max_samples=max_samples,
    )  # fmt: skip
    P = op.shape[0]
    if not 2 <= k < P:
        raise ValueError(f"k must satisfy 2 <= k < P = {P} (the number of parameters), got {k}")
    nodes = min(slq_nodes, P)
    if eigenvalues == "slq" and k > slq_runs * nodes:
        raise ValueError(
            f"k must be at most slq_runs · slq_nodes = {slq_runs} · {nodes} (the pooled Ritz "
            f"values), got {k}"
        )
    cp, stage_resume = open_checkpoint(
        checkpoint, resume, model=model, names=op.param_names, data=data,
        num_samples=op.num_samples, mode=mode, dtype=str(op.dtype), hvp=hvp,
        max_samples=max_samples, batch_loss=getattr(batch_loss, "__qualname__", None),
    )  # fmt: skip
    if cp is not None:
        _fix_product_method(op, cp)
    notes: list[str] = []
    timings: dict[str, float] = {}
    matvecs: dict[str, int] = {}

    t = time.perf_counter()
    if eigenvalues == "slq":
        note(f"{label}: P1's LLM protocol, {slq_runs} SLQ runs × {nodes} nodes (P = {P:,})",
             enabled=progress)  # fmt: skip
        top = _pooled_slq(op, k, slq_runs, nodes, seed, stage_checkpoint(cp, "eigenvalues"),
                          stage_resume)  # fmt: skip
    else:
        note(f"{label}: top-{k} Hessian eigenpairs (P = {P:,})", enabled=progress)
        bar = PairsBar(k, f"{label}: eigsh") if progress else None
        try:
            top = _certified(
                op, k, tol=tol, block_size=block_size, max_basis=max_basis, seed=seed,
                progress=bar or False, checkpoint=stage_checkpoint(cp, "eigsh"), resume=stage_resume,
            )  # fmt: skip
        finally:
            if bar is not None:
                bar.close()
    timings["eigsh"] = time.perf_counter() - t
    matvecs["eigsh"] = top.num_matvecs
    notes += top.notes
    ev, residuals, converged = top.eigenvalues, top.residuals, top.converged

    t = time.perf_counter()
    spectrum_fit = try_fit(fit_spectrum, ev, alpha, "eigenvalues", notes)
    eigengap_fit = try_fit(fit_eigengaps, ev, alpha, "eigengaps", notes)
    timings["fits"] = time.perf_counter() - t

    tr = None
    if trace_matvecs is not None:
        note(f"{label}: Hessian trace ({trace_method}, {trace_matvecs} HVPs)", enabled=progress)
        t = time.perf_counter()
        tr = trace(
            op, method=trace_method, num_matvecs=trace_matvecs, seed=seed + 1,  # type: ignore[arg-type]
            checkpoint=stage_checkpoint(cp, "trace"), resume=stage_resume,
        )  # fmt: skip
        timings["trace"] = time.perf_counter() - t
        matvecs["trace"] = tr.num_matvecs

    dens, grid, values, sigma = None, np.zeros(0), np.zeros(0), None
    if density_probes is not None:
        steps = min(density_steps, P)
        note(f"{label}: spectral density (SLQ, {density_probes}×{steps} HVPs)", enabled=progress)
        t = time.perf_counter()
        dens = slq(
            op, num_probes=density_probes, num_steps=steps, seed=seed + 2,
            checkpoint=stage_checkpoint(cp, "density"), resume=stage_resume,
        )  # fmt: skip
        grid, sigma = _density_grid(dens)
        values = dens.density(grid, sigma=sigma).numpy()
        timings["density"] = time.perf_counter() - t
        matvecs["density"] = dens.num_matvecs
    timings["total"] = time.perf_counter() - t_start

    settings = {
        "k": k,
        "tol": tol,
        "alpha": alpha,
        "seed": seed,
        "dtype": str(op.dtype).removeprefix("torch."),
        "device": str(op.device),
        "num_params": P,
        "num_samples": op.num_samples,
        "world_size": world(op.process_group)[1],
        "mode": mode,
        "params": params if isinstance(params, str) or params is None else "custom",
        "hvp_method": op.method,
        "graph_cached": op.graph_cached,
        "eigenvalues": eigenvalues,
        "slq_runs": slq_runs if eigenvalues == "slq" else None,
        "slq_nodes": nodes if eigenvalues == "slq" else None,
        **top.settings,
        "trace_method": None if tr is None else tr.method,
        "density_probes": density_probes,
        "density_steps": None if dens is None else min(density_steps, P),
    }
    return HessianReport(
        label=label,
        eigenvalues=ev,
        residuals=residuals,
        converged=converged,
        spectrum_fit=spectrum_fit,
        eigengap_fit=eigengap_fit,
        trace=tr,
        density=dens,
        density_grid=np.asarray(grid, dtype=np.float64),
        density_values=np.asarray(values, dtype=np.float64),
        density_sigma=sigma,
        settings=settings,
        timings=timings,
        matvecs=matvecs,
        notes=tuple(notes),
        extra=dict(extra or {}),
    )


def pipeline_checkpoint(checkpoint: Any, resume: Any) -> tuple[Checkpoint | None, Resume]:
    """A pipeline's checkpoint and how its steps resume, checked before any work.

    ``resume=True`` needs a checkpoint in the directory, ``resume=False`` refuses one. Steps
    then resume ``"if-present"`` (a step not reached before the interruption starts) or not at
    all.

    Raises:
        FileNotFoundError: ``resume=True`` and the directory holds no checkpoint.
        ValueError: ``resume=False`` and it holds one.
    """
    cp, resume = as_checkpoint(checkpoint), check_resume(resume)
    if cp is None:
        return None, False
    present = cp.directory.is_dir() and any(cp.directory.rglob("manifest.json"))
    if resume is True and not present:
        raise FileNotFoundError(f"no checkpoint to resume in {cp.directory}")
    if resume is False and present:
        raise ValueError(
            f"{cp.directory} already holds a checkpoint: resume it (resume=True, --resume) or "
            "remove it to start again"
        )
    return cp, "if-present" if resume else False


def open_checkpoint(
    checkpoint: Any,
    resume: Any,
    *,
    model: nn.Module,
    names: Any,
    data: Any,
    num_samples: int,
    **settings: Any,
) -> tuple[Checkpoint | None, Resume]:
    """:func:`pipeline_checkpoint`, fingerprinted with the model, its data and ``settings``."""
    cp, stage_resume = pipeline_checkpoint(checkpoint, resume)
    if cp is None:
        return None, False
    first = next(iter(as_batches(data)), None)
    fingerprint = model_data_fingerprint(model, names, first, num_samples)
    return cp.with_fingerprint(**fingerprint, **settings), stage_resume


def _fix_product_method(op: HessianOperator, cp: Checkpoint) -> None:
    """Keep the product method of the checkpointed run, so that a resumed run is bitwise equal.

    ``hvp="auto"`` times the methods on the first product; a resumed run takes the method
    recorded then instead of timing again (one product of each method, made here once).
    """
    path = cp.directory / "hvp_method.json"
    record = read_record(path)
    if record is not None:
        op.method = record["method"]
    elif op.method is None:
        op.matmat(torch.zeros(op.shape[0], 1, dtype=op.dtype, device=op.device))
        write_record(path, {"method": op.method})


def stage_checkpoint(cp: Checkpoint | None, name: str) -> Checkpoint | None:
    """The checkpoint of one step of a pipeline (``None`` stays)."""
    return None if cp is None else cp.sub(name)


def try_fit(
    fit: Callable[..., SpectrumFit], ev: np.ndarray, alpha: float, what: str, notes: list[str]
) -> SpectrumFit | None:
    """The fit, or None with a note when the values admit none (too few positive values)."""
    try:
        return fit(ev, alpha=alpha)
    except ValueError as exc:
        notes.append(f"no power-law fit of the {what}: {exc}")
        return None


def _density_grid(dens: SLQResult) -> tuple[np.ndarray, float]:
    """A grid spanning the quadrature nodes with a margin, and a broadening of 1/200 of it."""
    nodes = dens.nodes[dens.weights > 0]
    lo, hi = float(nodes.min()), float(nodes.max())
    width = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    sigma = width / 200.0
    return np.linspace(lo - 0.05 * width, hi + 0.05 * width, DENSITY_GRID), sigma
