"""P2's analysis of stochastic-gradient structure in one call.

:func:`analyze_gradients` → :class:`GradientReport`.

Xie et al., *On the Overlooked Structure of Stochastic Gradients*, NeurIPS 2023 (a
reconstruction: P2's exact protocol could not be read): the covariance spectrum of per-sample
gradients and of the minibatch noise (C/B) with P1's power-law fit and KS decision, and the
dimension-wise, iteration-wise and noise tail tests (power law vs Gaussian).

Nothing is computed here: :func:`fastspec.grads.gradient_covariance_spectrum`,
:func:`fastspec.stats.fit_spectrum` and the tests of :mod:`fastspec.grads` are called, and the
report records their results. The tail tests need minibatch gradients over iterations: pass the
:class:`~fastspec.grads.GradientRecorder` you filled during training, or let
:func:`analyze_gradients` draw ``num_steps`` random minibatches at the current parameters (the
minibatch gradient at fixed θ; its noise ξ = g_B − ∇L(θ) is then exactly the sampling noise).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastspec._checks import AsDict, check_bool, check_choice, check_int
from fastspec.analysis._progress import note
from fastspec.analysis.hessian import (
    Loss,
    fit_from_dict,
    load_report,
    open_checkpoint,
    stage_checkpoint,
    try_fit,
)
from fastspec.analysis.output import save_report, write_report_files
from fastspec.batches import SampleBatches
from fastspec.checkpoint import Resume
from fastspec.distributed import resolve_group, world
from fastspec.grads import (
    CovarianceSpectrum,
    GradientRecorder,
    dimension_wise_test,
    gradient_covariance_spectrum,
    iteration_wise_test,
    noise_test,
)
from fastspec.mode import model_mode
from fastspec.stats import SpectrumFit, TailTests, fit_spectrum
from fastspec.stats.inputs import check_level

__all__ = ["GradientReport", "analyze_gradients", "record_minibatch_gradients"]

TESTS = ("dimension_wise", "iteration_wise", "noise")


@dataclass(frozen=True, eq=False)
class GradientReport(AsDict):
    """P2's gradient-structure analysis of one model at one point.

    Attributes:
        label: the report's name.
        covariance: eigenvalues of the per-sample gradient covariance C.
        covariance_fit: P1's fit and KS decision on them (None when impossible; see notes).
        noise: eigenvalues of the minibatch-noise covariance C/B (None when not asked for).
        noise_fit: its fit (the same β and d_ks as ``covariance_fit`` up to rounding: a power
            law is scale-free; both are reported as computed).
        tails: ``"dimension_wise"``, ``"iteration_wise"``, ``"noise"`` →
            :class:`fastspec.stats.TailTests` (absent when not computed; see notes).
        settings, timings, notes, extra: as in :class:`~fastspec.analysis.HessianReport`.
    """

    label: str
    covariance: CovarianceSpectrum
    covariance_fit: SpectrumFit | None
    noise: CovarianceSpectrum | None
    noise_fit: SpectrumFit | None
    tails: dict[str, TailTests]
    settings: dict[str, Any]
    timings: dict[str, float]
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    _dict_properties = ("kind",)

    @property
    def kind(self) -> str:
        """What the report is, in its saved form: ``"gradients"``."""
        return "gradients"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradientReport:
        """Rebuild a report from :meth:`to_dict`'s output.

        Raises:
            ValueError: ``data`` is not a gradient report, or an entry is missing or malformed.
        """
        if not isinstance(data, dict) or data.get("kind") != "gradients":
            kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a gradient report (kind={kind!r})")
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a malformed gradient report: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> GradientReport:
        return cls(
            label=data["label"],
            covariance=_spectrum(data["covariance"]),
            covariance_fit=fit_from_dict(data["covariance_fit"]),
            noise=None if data["noise"] is None else _spectrum(data["noise"]),
            noise_fit=fit_from_dict(data["noise_fit"]),
            tails={n: _tails(t) for n, t in data["tails"].items()},
            settings=data["settings"],
            timings=data["timings"],
            notes=tuple(data["notes"]),
            extra=data["extra"],
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GradientReport:
        """Read a report saved by :meth:`save`.

        Read a report saved by :meth:`save` (errors name the file, as :meth:`HessianReport.load`).
        """
        return load_report(cls, path)

    def summary(self) -> str:
        """A readable multi-line summary for the console."""
        from fastspec.analysis.summary import gradient_summary

        return gradient_summary(self)

    def save(
        self, directory: str | os.PathLike[str], *, plots: bool = True, overwrite: bool = False
    ) -> Path:
        """Write the report's files into ``directory``, atomically.

        Write ``report.json``, ``summary.txt`` and (``plots``) ``covariance.png`` (rank plot and
        CCDF with the fit) and ``tails.png`` (fractions passing each test) atomically.
        """
        return save_report(self, directory, overwrite, plots=plots)

    def write_into(self, directory: Path, *, plots: bool = True) -> None:
        """Write the report's files into an existing directory."""
        write_report_files(directory, self)
        if plots:
            from fastspec.analysis import plots as P

            P.gradient_figures(self, directory)


def _spectrum(d: dict[str, Any]) -> CovarianceSpectrum:
    res = d.get("residuals")
    return CovarianceSpectrum(
        eigenvalues=torch.tensor(d["eigenvalues"], dtype=torch.float64),
        num_samples=d["num_samples"],
        num_params=d["num_params"],
        center=d["center"],
        noise_batch_size=d["noise_batch_size"],
        method=d["method"],
        residuals=None if res is None else torch.tensor(res, dtype=torch.float64),
    )


def _tails(d: dict[str, Any]) -> TailTests:
    fields: dict[str, Any] = {k: np.asarray(v) if isinstance(v, list) else v for k, v in d.items()}
    return TailTests(**fields)


def record_minibatch_gradients(
    model: nn.Module,
    loss_fn: Loss,
    data: Any,
    *,
    num_steps: int,
    batch_size: int,
    num_full: int = 4,
    num_coordinates: int = 1000,
    params: Any = None,
    seed: int = 0,
) -> GradientRecorder:
    """A :class:`~fastspec.grads.GradientRecorder` filled at fixed parameters.

    A :class:`~fastspec.grads.GradientRecorder` filled with the gradients of ``num_steps`` random
    minibatches (``batch_size`` samples drawn without replacement, mean loss, eval mode) at the
    model's current parameters; the whole gradient is kept for the first ``num_full``. The model's
    parameters are not changed; their ``.grad`` is restored afterwards.
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    num_full = check_int("num_full", num_full, minimum=0)
    seed = check_int("seed", seed)
    batches = list(SampleBatches(data))
    if any(isinstance(x, tuple) for x, _ in batches):
        raise TypeError("record_minibatch_gradients needs one input tensor per batch")
    X = torch.cat([x for x, _ in batches])
    y = torch.cat([t for _, t in batches])
    if batch_size > len(X):
        raise ValueError(f"batch_size={batch_size} exceeds the number of samples ({len(X)})")
    first = next(iter(model.parameters()))
    X = X.to(device=first.device, dtype=first.dtype if X.is_floating_point() else X.dtype)
    y = y.to(first.device)
    rec = GradientRecorder(
        model, params=params, num_coordinates=num_coordinates, seed=seed, loss_fn=loss_fn,
        data=[(X, y)], full_gradient_steps=range(num_full),
    )  # fmt: skip
    saved = [(p, p.grad) for p in model.parameters()]
    gen = torch.Generator().manual_seed(seed)
    try:
        with model_mode(model, "eval"):
            for t in range(num_steps):
                idx = torch.randperm(len(X), generator=gen)[:batch_size].to(X.device)
                for p in model.parameters():
                    p.grad = None
                loss_fn(model(X[idx]), y[idx]).backward()
                rec.record(t)
    finally:
        for p, g in saved:
            p.grad = g
    return rec


def analyze_gradients(
    model: nn.Module,
    loss_fn: Loss,
    data: Any,
    *,
    k: int | None = 100,
    noise_batch_size: int | None = 128,
    recorder: GradientRecorder | None = None,
    num_steps: int = 64,
    batch_size: int | None = None,
    num_coordinates: int = 1000,
    params: Any = None,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    alpha: float = 0.05,
    gaussian_test: str = "dagostino",
    seed: int = 0,
    label: str = "gradients",
    progress: bool = False,
    extra: dict[str, Any] | None = None,
    checkpoint: Any = None,
    resume: Resume = False,
) -> GradientReport:
    """P2's gradient-structure analysis of ``model`` on ``data``.

    Args:
        model: any ``nn.Module`` (as in :func:`fastspec.grads.gradient_covariance_spectrum`).
        loss_fn: ``loss(outputs, targets)``.
        data: a ``DataLoader``, an iterable of ``(inputs, targets)`` batches or one pair.
        k: top covariance eigenvalues computed and fitted (None: all min(N, P); the smallest
            are rounding-level when N > rank, so fitting all of them tests the noise floor).
        noise_batch_size: B of the minibatch-noise covariance C/B (None: skip it); also the
            minibatch size of the gradients drawn when no ``recorder`` is given.
        recorder: minibatch gradients recorded during training (for the iteration-wise and
            noise tests; the dimension-wise test uses its ``full_gradients``). When None,
            ``num_steps`` random minibatches are drawn at the current parameters
            (:func:`record_minibatch_gradients`).
        num_steps: minibatches drawn when no ``recorder`` is given (0 skips the tail tests).
        batch_size: size of those minibatches (default ``noise_batch_size``, or 128).
        num_coordinates: coordinates sampled by that recorder.
        params: parameter selection, as in :mod:`fastspec.grads`.
        mode: ``"eval"`` (default) or ``"train"``.
        dtype: compute dtype (default the parameters').
        alpha: level of every decision.
        gaussian_test: ``"dagostino"`` or ``"shapiro"``.
        seed: seeds the minibatches and coordinates.
        label: the report's name.
        progress: one line per step on stderr.
        extra: metadata stored in the report as given.
        checkpoint: a directory or a :class:`fastspec.checkpoint.Checkpoint` for the covariance
            spectra's Lanczos runs (subdirectories ``covariance/`` and ``noise/``; the Gram
            method has nothing to resume). See :func:`analyze_hessian`.
        resume: ``True``, ``"if-present"`` or ``False``, as in :func:`analyze_hessian`.

    Returns:
        A :class:`GradientReport`.
    """
    k = check_int("k", k, minimum=1, none_ok=True)
    noise_batch_size = check_int("noise_batch_size", noise_batch_size, minimum=1, none_ok=True)
    num_steps = check_int("num_steps", num_steps, minimum=0)
    batch_size = check_int("batch_size", batch_size, minimum=1, none_ok=True)
    num_coordinates = check_int("num_coordinates", num_coordinates, minimum=1)
    alpha = check_level(alpha)
    gaussian_test = check_choice("gaussian_test", gaussian_test, ("dagostino", "shapiro"))
    seed = check_int("seed", seed)
    progress = check_bool("progress", progress)
    if recorder is not None and not isinstance(recorder, GradientRecorder):
        raise TypeError(
            f"recorder must be a GradientRecorder or None, got {type(recorder).__name__}"
        )
    cp, stage_resume = open_checkpoint(
        checkpoint, resume, model=model, names=[n for n, _ in model.named_parameters()],
        data=data, num_samples=SampleBatches(data).num_samples, mode=mode, dtype=str(dtype),
        params=params if isinstance(params, str) or params is None else "custom",
    )  # fmt: skip
    t0 = time.perf_counter()
    given = recorder is not None
    notes: list[str] = []
    timings: dict[str, float] = {}
    opts: dict[str, Any] = {"params": params, "mode": mode, "dtype": dtype}
    note(f"{label}: covariance spectrum of per-sample gradients", enabled=progress)
    t = time.perf_counter()
    cov = gradient_covariance_spectrum(
        model, loss_fn, data, k=k, checkpoint=stage_checkpoint(cp, "covariance"),
        resume=stage_resume, **opts,
    )  # fmt: skip
    cov_fit = try_fit(fit_spectrum, cov.eigenvalues.numpy(), alpha, "covariance spectrum", notes)
    noise = noise_fit = None
    if noise_batch_size is not None:
        noise = gradient_covariance_spectrum(
            model, loss_fn, data, k=k, noise_batch_size=noise_batch_size,
            checkpoint=stage_checkpoint(cp, "noise"), resume=stage_resume, **opts,
        )  # fmt: skip
        noise_fit = try_fit(fit_spectrum, noise.eigenvalues.numpy(), alpha, "noise spectrum", notes)
    timings["spectra"] = time.perf_counter() - t

    tails: dict[str, TailTests] = {}
    t = time.perf_counter()
    if recorder is None and num_steps > 0:
        note(f"{label}: {num_steps} minibatch gradients at fixed parameters", enabled=progress)
        recorder = record_minibatch_gradients(
            model, loss_fn, data, num_steps=num_steps,
            batch_size=batch_size or noise_batch_size or 128, num_coordinates=num_coordinates, params=params,
            seed=seed,
        )  # fmt: skip
    world_size = world(resolve_group(None))[1]
    if recorder is not None and world_size > 1 and not given:
        notes.append(
            "tail tests: minibatches drawn from rank 0's share of the data (not from all ranks')"
        )
    if recorder is not None:
        note(f"{label}: tail tests", enabled=progress)
        options = {"alpha": alpha, "gaussian_test": gaussian_test}
        tests: tuple[Callable[..., TailTests], ...] = (
            dimension_wise_test, iteration_wise_test, noise_test,
        )  # fmt: skip
        for name, test in zip(TESTS, tests):
            try:
                tails[name] = test(recorder, **options)
            except ValueError as exc:
                notes.append(f"no {name.replace('_', '-')} test: {exc}")
    else:
        notes.append("no tail tests (no recorder and num_steps=0)")
    timings["tail_tests"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    settings = {
        "k": cov.eigenvalues.numel(),
        "num_samples": cov.num_samples,
        "world_size": world_size,
        "num_params": cov.num_params,
        "method": cov.method,
        "noise_batch_size": noise_batch_size,
        "alpha": alpha,
        "gaussian_test": gaussian_test,
        "seed": seed,
        "mode": mode,
        "dtype": str(next(model.parameters()).dtype if dtype is None else dtype).removeprefix(
            "torch."
        ),
        "recorded_steps": None if recorder is None else len(recorder.steps),
        "recorded_coordinates": None if recorder is None else len(recorder.coordinates),
        "full_gradients": None if recorder is None else len(recorder.full_gradients),
        "recorder": "given" if given else None if recorder is None else "drawn at fixed θ",
    }
    return GradientReport(
        label=label, covariance=cov, covariance_fit=cov_fit, noise=noise, noise_fit=noise_fit,
        tails=tails, settings=settings, timings=timings, notes=tuple(notes),
        extra=dict(extra or {}),
    )  # fmt: skip
