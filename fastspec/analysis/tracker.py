"""Spectral summaries at training checkpoints: :class:`SpectrumTracker`.

P1 (Xie et al., arXiv:2201.13011) tracks λ_1, Tr(H), the power-law slope ŝ and
the KS distance d_ks over training and correlates them with the test loss / error (Pearson r up
to 0.98 between d_ks and test loss). Each :meth:`SpectrumTracker.record` runs
:func:`~fastspec.analysis.analyze_hessian` (no density) at the model's current parameters and
keeps its numbers; :meth:`SpectrumTracker.correlations` gives scipy's Pearson r.
"""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fastspec._checks import check_int, to_plain
from fastspec.analysis.hessian import HessianReport, analyze_hessian
from fastspec.analysis.output import save_report, write_json
from fastspec.params import select_parameters

__all__ = ["SpectrumTracker"]

#: what ``**options`` may hold: analyze_hessian's keywords but those the tracker sets itself
OPTIONS = frozenset(inspect.signature(analyze_hessian).parameters) - {
    "model", "loss_fn", "data", "k", "density_probes", "density_steps", "extra",
}  # fmt: skip

#: the spectral columns every row has
SPECTRAL = ("lambda_max", "trace", "trace_se", "s", "beta", "ks", "ks_critical", "is_power_law")


class SpectrumTracker:
    """Record λ_1, Tr(H), ŝ and d_ks of ``model`` at the steps you choose.

    Args:
        model: the network being trained (read at every :meth:`record`, never modified).
        loss_fn, data: the loss and the data whose Hessian is analysed (usually the training set).
        k: eigenvalues per checkpoint (the fit uses the positive ones).
        **options: passed to :func:`analyze_hessian` (``tol``, ``dtype``, ``params``,
            ``trace_matvecs``, ``seed``, ``alpha``, ...); the density is never computed.

    Example::

        tracker = SpectrumTracker(model, nn.CrossEntropyLoss(), train_data, k=100)
        for epoch in range(epochs):
            train_one_epoch(...)
            tracker.record(epoch, test_loss=evaluate(model, test_data))
        tracker.correlations("test_loss")   # {"lambda_max": r, "trace": r, "s": r, "ks": r}
    """

    def __init__(self, model: nn.Module, loss_fn: Any, data: Any, *, k: int = 100, **options: Any):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if "density_probes" in options or "density_steps" in options:
            raise ValueError("SpectrumTracker computes no density; drop density_probes")
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise TypeError(
                f"SpectrumTracker got unknown option(s) {unknown}; it accepts {sorted(OPTIONS)}"
            )
        k = check_int("k", k, minimum=2)
        P = sum(
            p.numel()
            for n, p in model.named_parameters()
            if n in set(select_parameters(model, options.get("params")))
        )
        if k >= P:
            raise ValueError(f"k must satisfy 2 <= k < P = {P} (the number of parameters), got {k}")
        self.model, self.loss_fn, self.data, self.k = model, loss_fn, data, k
        self.options = options
        self.rows: list[dict[str, Any]] = []

    def record(self, step: int, **metrics: float) -> HessianReport:
        """Analyse the model now and store a row ``{step, λ_1, Tr(H), ŝ, d_ks, ..., **metrics}``.

        Args:
            step: the training step or epoch of this checkpoint.
            **metrics: numbers to correlate with (``test_loss=...``, ``test_error=...``).

        Returns:
            The checkpoint's :class:`HessianReport`.
        """
        step = check_int("step", step)
        for name, value in metrics.items():
            if name in SPECTRAL or name in ("step", "num_converged", "matvecs", "seconds"):
                raise ValueError(f"metric name {name!r} clashes with a tracked column")
            try:
                float(value)
            except (TypeError, ValueError):
                raise TypeError(f"metric {name} must be a real number, got {value!r}") from None
        options = {"label": f"step {step}", **self.options}
        report = analyze_hessian(
            self.model, self.loss_fn, self.data, k=self.k, density_probes=None, **options
        )
        fit = report.spectrum_fit
        row: dict[str, Any] = {
            "step": step,
            "lambda_max": report.lambda_max,
            "trace": math.nan if report.trace is None else report.trace.estimate,
            "trace_se": math.nan if report.trace is None else report.trace.std_error,
            "s": math.nan if fit is None else fit.s,
            "beta": math.nan if fit is None else fit.beta,
            "ks": math.nan if fit is None else fit.ks,
            "ks_critical": math.nan if fit is None else fit.ks_critical,
            "is_power_law": None if fit is None else fit.is_power_law,
            "num_converged": int(report.converged.sum()),
            "matvecs": sum(report.matvecs.values()),
            "seconds": report.timings["total"],
        }
        row.update({name: float(value) for name, value in metrics.items()})
        self.rows.append(row)
        return report

    @property
    def steps(self) -> np.ndarray:
        """[T] the recorded steps."""
        return self.column("step")

    def column(self, name: str) -> np.ndarray:
        """[T] one column over the recorded steps (NaN where a row lacks it)."""
        if self.rows and all(name not in r for r in self.rows):
            raise KeyError(f"no column {name!r}; columns: {sorted(self.rows[0])}")
        return np.array([np.nan if r.get(name) is None else r[name] for r in self.rows], float)

    def correlations(self, metric: str = "test_loss") -> dict[str, float]:
        """Pearson r of λ_1, Tr(H), ŝ and d_ks with ``metric`` over the checkpoints.

        Pearson r (``scipy.stats.pearsonr``) of λ_1, Tr(H), ŝ and d_ks with ``metric`` over the
        checkpoints where both are finite (NaN with fewer than 3 such, or a constant column).
        """
        from scipy import stats

        y = self.column(metric)
        out = {}
        for name in ("lambda_max", "trace", "s", "ks"):
            x = self.column(name)
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
                out[name] = math.nan
            else:
                out[name] = float(stats.pearsonr(x[ok], y[ok]).statistic)
        return out

    def metrics(self) -> list[str]:
        """Names of the caller's metrics."""
        fixed = {"step", "num_converged", "matvecs", "seconds", *SPECTRAL}
        return sorted({n for r in self.rows for n in r} - fixed)

    def to_dict(self) -> dict[str, Any]:
        """Rows, settings and the correlations with every metric."""
        return to_plain(
            {
                "kind": "tracker",
                "k": self.k,
                "options": {n: v for n, v in self.options.items() if _jsonable(v)},
                "rows": self.rows,
                "correlations": {m: self.correlations(m) for m in self.metrics()},
            }
        )

    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``report.json`` and ``curves.png`` into ``directory`` atomically."""
        return save_report(self, directory, overwrite)

    def write_into(
        self, directory: Path, *, plots: bool = True, title: str = "", xlabel: str = "step"
    ) -> None:
        """Write the tracker's files into an existing directory."""
        write_json(directory / "report.json", self.to_dict())
        if plots and self.rows:
            from fastspec.analysis.plots import series_figure

            crit = self.column("ks_critical")
            series: list[tuple[str, Any, float | None]] = [
                ("λ_1", self.column("lambda_max"), None),
                ("Tr(H) (Hutch++)", self.column("trace"), None),
                ("power-law slope ŝ", self.column("s"), None),
                ("KS distance d_ks", self.column("ks"), _finite_max(crit)),
            ]
            series += [(m, self.column(m), None) for m in self.metrics()]
            series_figure(
                self.steps, series, directory / "curves.png", xlabel=xlabel,
                title=title or f"spectrum over training (top-{self.k}; dashed: d_c)",
            )  # fmt: skip


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _finite_max(x: np.ndarray) -> float | None:
    """The largest finite value (no fit at any checkpoint, e.g. k below min_k: ``None``)."""
    finite = x[np.isfinite(x)]
    return float(finite.max()) if finite.size else None
