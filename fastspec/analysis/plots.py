"""PNG figures of the reports (matplotlib, Agg backend, imported on use).

Every figure draws numbers read from a report: the computed eigenvalues (or gradient-covariance
eigenvalues), and the power law that :func:`fastspec.stats.fit_spectrum` fitted to them. The
fitted law is drawn from the fit's own parameters: the MLE density p(λ) ∝ λ^(−β) for λ ≥ λ_K has
the CCDF (λ/λ_K)^(1−β) and, read as ranks among the K values, the rank law
λ_k = λ_K (K/k)^s with s = 1/(β − 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastspec.analysis.summary import decision

if TYPE_CHECKING:
    from fastspec.analysis.gradients import GradientReport
    from fastspec.analysis.hessian import HessianReport
    from fastspec.stats import SpectrumFit

__all__ = [
    "ccdf_axes",
    "comparison_figure",
    "gradient_figures",
    "hessian_figures",
    "rank_axes",
    "require_matplotlib",
    "series_figure",
]

_DPI = 120


def require_matplotlib() -> None:
    """Raise the clear ``ImportError`` now, before minutes of computing, if plots cannot be drawn."""
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            "plots need matplotlib: pip install 'fastspec[plots]' (or save with plots=False / "
            "--no-plots)"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 8.5})
    return plt


def positive_gaps(eigenvalues: np.ndarray) -> np.ndarray:
    """The eigengaps :func:`fastspec.stats.fit_eigengaps` fits.

    Gaps of the positive eigenvalues (descending), zero gaps dropped, re-sorted descending.
    """
    pos = np.sort(eigenvalues[eigenvalues > 0])[::-1]
    gaps = np.sort(pos[:-1] - pos[1:])[::-1]
    return gaps[gaps > 0]


def _fit_label(fit: SpectrumFit) -> str:
    return f"fit: s = {fit.s:.2f}, d_ks = {fit.ks:.3f} (d_c {fit.ks_critical:.3f}): {decision(fit)}"


def rank_axes(
    ax: Any,
    values: np.ndarray,
    fit: SpectrumFit | None,
    *,
    label: str,
    color: str | None = None,
    what: str = "eigenvalue",
) -> None:
    """Rank k against the k-th largest value on log–log axes.

    With the fitted rank law over the K fitted values.
    """
    v = np.sort(values[values > 0])[::-1]
    ranks = np.arange(1, v.size + 1)
    (line,) = ax.loglog(ranks, v, ".", ms=3, color=color, label=label)
    if fit is not None:
        kk = np.arange(1, fit.k + 1, dtype=np.float64)
        law = fit.xmin * (fit.k / kk) ** fit.s
        ax.loglog(kk, law, "-", lw=1.4, color=line.get_color(), alpha=0.8, label=_fit_label(fit))
    ax.set_xlabel("rank k")
    ax.set_ylabel(f"{what} (k-th largest)")
    ax.grid(True, which="major", alpha=0.3)
    # the axis spans the data points drawn so far (not the fitted lines, which are clipped)
    points = [
        np.asarray(ln.get_ydata(), float) for ln in ax.get_lines() if ln.get_linestyle() == "None"
    ]
    ys = np.concatenate(points)
    ax.set_ylim(ys.min() / 2, ys.max() * 2)
    _legend_below(ax)


def ccdf_axes(
    ax: Any,
    values: np.ndarray,
    fit: SpectrumFit | None,
    *,
    label: str,
    color: str | None = None,
    what: str = "eigenvalue",
) -> None:
    """Empirical CCDF P(X >= x) of the fitted values on log–log axes.

    With the fitted (x / x_min)^(1 − β).
    """
    v = np.sort(values[values > 0])[::-1]
    if fit is not None:
        v = v[: fit.k]
    ccdf = np.arange(1, v.size + 1) / v.size
    (line,) = ax.loglog(v, ccdf, ".", ms=3, color=color, label=label)
    if fit is not None:
        x = np.geomspace(fit.xmin, fit.lambda_max, 200)
        ax.loglog(
            x, (x / fit.xmin) ** (1.0 - fit.beta), "-", lw=1.4, color=line.get_color(),
            alpha=0.8, label=_fit_label(fit),
        )  # fmt: skip
    ax.set_xlabel(what)
    ax.set_ylabel(f"P({what} ≥ x)  among the top K")
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(ax)


def _legend_below(ax: Any) -> None:
    """The legend under the axes, where it hides no data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


def hessian_figures(report: HessianReport, directory: Path) -> list[Path]:
    """A Hessian report's figures.

    ``spectrum.png`` (rank plots of eigenvalues and eigengaps with their fits), ``ccdf.png`` and,
    when the report has a density, ``density.png``.
    """
    plt = _pyplot()
    out = []
    gaps = positive_gaps(report.eigenvalues)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    rank_axes(axes[0], report.eigenvalues, report.spectrum_fit, label="Hessian eigenvalues")
    axes[0].set_title(f"{report.label}: top-{report.k} Hessian eigenvalues")
    rank_axes(axes[1], gaps, report.eigengap_fit, label="eigengaps", color="C2", what="eigengap")
    axes[1].set_title(f"{report.label}: eigengaps λ_k − λ_(k+1), sorted")
    out.append(directory / "spectrum.png")
    _save(fig, out[-1])

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ccdf_axes(axes[0], report.eigenvalues, report.spectrum_fit, label="eigenvalues")
    ccdf_axes(axes[1], gaps, report.eigengap_fit, label="eigengaps", color="C2", what="eigengap")
    axes[0].set_title(f"{report.label}: CCDF of the top eigenvalues")
    axes[1].set_title(f"{report.label}: CCDF of the eigengaps")
    out.append(directory / "ccdf.png")
    _save(fig, out[-1])

    if report.density is not None and report.density_grid.size:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        floor = 1e-12 * max(float(report.density_values.max()), 1e-300)
        ax.semilogy(report.density_grid, np.maximum(report.density_values, floor), lw=1.2)
        ax.set_xlabel("eigenvalue λ")
        ax.set_ylabel("density (SLQ, Gaussian-broadened)")
        d = report.density
        ax.set_title(
            f"{report.label}: spectral density ({d.num_probes} probes × "
            f"{report.settings['density_steps']} steps, σ = {report.density_sigma:.2g})"
        )
        ax.set_ylim(bottom=max(floor, 1e-8 * float(report.density_values.max())))
        ax.grid(True, alpha=0.3)
        out.append(directory / "density.png")
        _save(fig, out[-1])
    return out


def comparison_figure(
    panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, SpectrumFit | None]]]],
    path: Path,
    *,
    what: str = "Hessian eigenvalue",
    suptitle: str | None = None,
) -> Path:
    """One rank–value panel per entry of ``panels``: ``(title, [(label, values, fit), ...])``.

    Several spectra with their fitted laws on each.
    """
    plt = _pyplot()
    n = len(panels)
    entries = max(len(curves) for _, curves in panels) * 2  # the legends below: points and fit
    fig, axes = plt.subplots(1, n, figsize=(5.6 * n, 4.0 + 0.22 * entries), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels):
        for i, (label, values, fit) in enumerate(curves):
            rank_axes(ax, values, fit, label=label, color=f"C{i}", what=what)
        ax.set_title(title)
    if suptitle:
        fig.suptitle(suptitle)
    _save(fig, path)
    return path


def series_figure(
    steps: Any,
    series: Sequence[tuple[str, Any, float | None]],
    path: Path,
    *,
    xlabel: str,
    title: str,
) -> Path:
    """One small panel per series ``(name, values, reference line or None)`` against ``steps``."""
    plt = _pyplot()
    n = len(series)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, values, ref) in zip(axes.flat, series):
        ax.plot(steps, values, "o-", ms=4)
        if ref is not None:
            ax.axhline(ref, color="C3", ls="--", lw=1, label=f"{ref:.3g}")
            ax.legend(loc="best")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    _save(fig, path)
    return path


def gradient_figures(report: GradientReport, directory: Path) -> list[Path]:
    """A gradient report's figures.

    ``covariance.png`` (rank plot and CCDF of the covariance spectrum with the fit) and, with tail
    tests, ``tails.png`` (fraction of samples passing each test).
    """
    plt = _pyplot()
    out = []
    ev = report.covariance.eigenvalues.numpy()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    what = "covariance eigenvalue"
    rank_axes(axes[0], ev, report.covariance_fit, label="gradient covariance", what=what)
    ccdf_axes(axes[1], ev, report.covariance_fit, label="gradient covariance", what=what)
    axes[0].set_title(f"{report.label}: gradient-covariance spectrum")
    axes[1].set_title(f"{report.label}: CCDF of the covariance spectrum")
    out.append(directory / "covariance.png")
    _save(fig, out[-1])
    if report.tails:
        names = list(report.tails)
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(7, 4.2))
        t = [report.tails[n] for n in names]
        ax.bar(x - 0.2, [s.frac_power_law for s in t], 0.4, label="power law (KS < d_c)")
        ax.bar(x + 0.2, [s.frac_gaussian for s in t], 0.4,
               label=f"Gaussian ({t[0].gaussian_test}, p > α)")  # fmt: skip
        ax.set_xticks(x, [f"{n.replace('_', '-')}\n({len(s.n)} samples)" for n, s in zip(names, t)])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("fraction of samples passing")
        ax.set_title(f"{report.label}: heavy tail or Gaussian? (P2's tests)")
        _legend_below(ax)
        ax.grid(True, axis="y", alpha=0.3)
        out.append(directory / "tails.png")
        _save(fig, out[-1])
    return out


def fractions_figure(
    groups: dict[str, dict[str, dict[str, float]]], path: Path, *, title: str
) -> Path:
    """Bars of P2's tail-test fractions, one group of bars per tail kind and one bar per entry.

    Args:
        groups: label (e.g. a seed) → tail kind → ``{"frac_power_law", "frac_gaussian"}``.
        path: the PNG to write.
        title: the figure's title.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    kinds = list(dict.fromkeys(k for g in groups.values() for k in g))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(kinds))
    for ax, test, name in (
        (axes[0], "frac_power_law", "power law (KS < d_c)"),
        (axes[1], "frac_gaussian", "Gaussian (p > α)"),
    ):
        for i, (label, g) in enumerate(groups.items()):
            vals = [g.get(k, {}).get(test, np.nan) for k in kinds]
            ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=label)
        ax.set_xticks(x, [k.replace("_", "-") for k in kinds])
        ax.set_ylim(0, 1.05)
        ax.set_title(f"fraction passing: {name}")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("fraction of samples passing")
    _legend_below(axes[0])
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    return path
