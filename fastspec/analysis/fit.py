"""``fastspec fit``: a power-law fit of a set of values.

P1's spectrum fit (:func:`fastspec.stats.fit_spectrum`) or the Clauset fit
(:meth:`fastspec.stats.PowerLaw.fit`, with :func:`fastspec.stats.gof_pvalue`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fastspec._checks import check_bool, check_choice
from fastspec.analysis._progress import CountBar
from fastspec.analysis.summary import fit_line
from fastspec.stats import GofResult, PowerLaw, SpectrumFit, fit_spectrum, gof_pvalue

__all__ = ["FitReport", "fit_values"]


@dataclass(frozen=True, eq=False)
class FitReport:
    """A fit of ``n`` values.

    ``spectrum`` (P1's method) or ``powerlaw`` (Clauset's), and the bootstrap goodness of fit
    when asked for.
    """

    method: str
    n: int
    spectrum: SpectrumFit | None
    powerlaw: PowerLaw | None
    gof: GofResult | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form: ``kind``, ``method``, ``n``, ``fit`` and ``gof``."""
        return {
            "kind": "fit",
            "method": self.method,
            "n": self.n,
            "fit": (self.spectrum or self.powerlaw).to_dict(),  # type: ignore[union-attr]
            "gof": None if self.gof is None else self.gof.to_dict(),
        }

    def summary(self) -> str:
        """The fit and its verdict in a line or two."""
        if self.spectrum is not None:
            return f"{self.n} values; " + fit_line(
                "P1 power-law fit of the top values", self.spectrum
            )
        pl = self.powerlaw
        assert pl is not None
        lines = [
            f"{self.n} values; Clauset power-law fit: alpha = {pl.alpha:.4f} ± {pl.sigma:.4f}, "
            f"xmin = {pl.xmin:.6g} ({pl.n_tail} values in the tail), KS D = {pl.ks:.4f}"
        ]
        if self.gof is not None:
            g = self.gof
            verdict = "ruled out (p <= 0.1)" if g.p <= 0.1 else "plausible (p > 0.1)"
            lines.append(
                f"bootstrap goodness of fit: p = {g.p:.4f} over {g.n_boot - g.n_failed} "
                f"replicates -> power law {verdict}"
            )
        return "\n".join(lines)


def fit_values(
    values: Any,
    *,
    method: Literal["p1", "clauset"] = "p1",
    k: int | None = None,
    alpha: float = 0.05,
    gof: bool = False,
    n_boot: int = 2500,
    seed: int | None = 0,
    discrete: bool = False,
    progress: bool = False,
) -> FitReport:
    """Fit ``values`` [N].

    Args:
        values: the numbers.
        method: ``"p1"`` (top-``k`` positive values, cutoff at the smallest, KS decision at
            ``alpha``) or ``"clauset"`` (xmin by minimum KS distance).
        k: P1's K (all positive values if None); only with ``"p1"``.
        alpha: the P1 decision's level.
        gof: bootstrap p-value (``"clauset"`` only).
        n_boot: bootstrap replicates.
        seed: bootstrap seed.
        discrete: the discrete power law (``"clauset"`` only).
        progress: a bar over the bootstrap replicates on stderr.
    """
    v = np.asarray(values)
    if v.dtype.kind == "c":
        raise ValueError("values: expected real numbers, got complex ones")
    v = v.astype(np.float64).reshape(-1)
    if method == "p1":
        if gof or discrete:
            raise ValueError("gof and discrete need method='clauset' (--method clauset)")
        return FitReport("p1", v.size, fit_spectrum(v, k, alpha=alpha), None, None)
    check_choice("method", method, ("p1", "clauset"))
    if k is not None:
        raise ValueError("k applies to method='p1' only; Clauset's fit chooses its own tail")
    pl = PowerLaw.fit(v, discrete=discrete)
    g = None
    if gof:
        bar = CountBar("bootstrap", "replicates") if check_bool("progress", progress) else None
        try:
            g = gof_pvalue(pl, n_boot, seed=seed, progress=bar)
        finally:
            if bar is not None:
                bar.close()
    return FitReport("clauset", v.size, None, pl, g)
