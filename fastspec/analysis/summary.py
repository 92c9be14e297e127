"""Console summaries of the reports (text only; every number is read from the report)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastspec.analysis.gradients import GradientReport
    from fastspec.analysis.hessian import HessianReport
    from fastspec.stats import SpectrumFit

__all__ = ["decision", "fit_line", "gradient_summary", "hessian_summary"]


def decision(fit: SpectrumFit | None) -> str:
    """``"power-law"`` / ``"not power-law"`` (P1's KS decision) or ``"no fit"``."""
    if fit is None:
        return "no fit"
    return "power-law" if fit.is_power_law else "not power-law"


def fit_line(name: str, fit: SpectrumFit | None) -> str:
    """One line: the P1 fit and its KS decision."""
    if fit is None:
        return f"{name}: no power-law fit (see notes)"
    op = "<" if fit.is_power_law else ">="
    return (
        f"{name} (K={fit.k}): s = {fit.s:.3f} (beta = {fit.beta:.3f} ± {fit.beta_se:.3f}), "
        f"d_ks = {fit.ks:.4f} {op} d_c = {fit.ks_critical:.4f} -> {decision(fit)}"
    )


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _top_line(report: HessianReport) -> str:
    st, t, m, k = report.settings, report.timings, report.matvecs, report.k
    cost = f"{m['eigsh']:,} HVPs, {_fmt_seconds(t['eigsh'])}"
    if st.get("eigenvalues") == "slq":
        return (
            f"  top-{k} eigenvalues: {st['slq_runs']} SLQ runs × {st['slq_nodes']} nodes pooled "
            f"(P1's LLM protocol; not certified), {cost}"
        )
    return (
        f"  top-{k} eigenpairs: {int(report.converged.sum())}/{k} converged "
        f"(max residual {float(report.residuals.max()):.1e}, tol {st['tol']:g}), {cost}"
    )


def hessian_summary(report: HessianReport) -> str:
    """The multi-line console summary of a :class:`HessianReport`."""
    st: dict[str, Any] = report.settings
    t = report.timings
    lines = [
        f"{report.label}: Hessian of the loss over N = {st['num_samples']:,} samples, "
        f"P = {st['num_params']:,} parameters ({st['dtype']}, {st['device']})",
        _top_line(report),
        f"  lambda_1 = {report.lambda_max:.5g}, lambda_K = {float(report.eigenvalues[-1]):.5g}",
    ]
    if report.trace is not None:
        tr = report.trace
        lines.append(
            f"  Tr(H) = {tr.estimate:.5g} ± {tr.std_error:.2g} ({tr.method}, "
            f"{tr.num_matvecs} HVPs, {_fmt_seconds(t['trace'])})"
        )
    lines.append("  " + fit_line("power law, eigenvalues", report.spectrum_fit))
    lines.append("  " + fit_line("power law, eigengaps  ", report.eigengap_fit))
    if report.density is not None:
        d = report.density
        lines.append(
            f"  density: SLQ, {d.num_probes} probes × {st['density_steps']} steps, "
            f"{d.num_matvecs} HVPs, {_fmt_seconds(t['density'])}"
        )
    lines.extend(f"  note: {n}" for n in report.notes)
    return "\n".join(lines)


def gradient_summary(report: GradientReport) -> str:
    """The multi-line console summary of a :class:`GradientReport`."""
    st = report.settings
    cov = report.covariance
    lines = [
        f"{report.label}: per-sample gradients of N = {cov.num_samples:,} samples, "
        f"P = {cov.num_params:,} parameters ({st['dtype']})",
        f"  covariance spectrum: {cov.eigenvalues.numel()} eigenvalues ({cov.method}), "
        f"largest {float(cov.eigenvalues[0]):.5g}",
        "  " + fit_line("power law, covariance", report.covariance_fit),
    ]
    if report.noise is not None:
        lines.append(
            "  " + fit_line(f"power law, noise C/B (B={report.noise.noise_batch_size})",
                            report.noise_fit)
        )  # fmt: skip
    if report.tails:
        src = st.get("recorder")
        lines.append(
            f"  tail tests ({st['recorded_steps']} minibatch gradients, "
            f"{st['recorded_coordinates']} coordinates, {src}); fraction passing:"
        )
        for name, t in report.tails.items():
            lines.append(
                f"    {name.replace('_', '-'):15} {len(t.n):5} samples: power-law "
                f"{t.frac_power_law:6.1%}, Gaussian ({t.gaussian_test}) {t.frac_gaussian:6.1%}, "
                f"Gaussian (KS) {t.frac_gaussian_ks:6.1%}"
            )
    lines.extend(f"  note: {n}" for n in report.notes)
    return "\n".join(lines)
