"""Power-law fits by the method of Clauset, Shalizi & Newman.

maximum likelihood for the exponent, the cutoff xmin chosen by minimising the Kolmogorov-Smirnov
distance, the standard error, and (in :mod:`fastspec.stats.bootstrap`) the semi-parametric bootstrap
goodness-of-fit p-value.

The answers are those of the ``powerlaw`` package 2.0 (Alstott et al. 2014) -- the same candidate
cutoffs, the same exponent formula, the same KS convention (empirical CDF at each tail value =
the fraction of tail values strictly below it) -- with the continuous xmin scan done by the native
op :func:`fastspec.ops.powerlaw_scan`. Where fastspec differs from the package, on purpose:

* **Valid exponents.** fastspec accepts any candidate whose alpha lies in ``alpha_range`` (open
  interval, default (1, inf): Clauset's method). ``powerlaw`` 2.0's ``Power_Law`` has
  ``DEFAULT_PARAMETER_RANGES = {'alpha': [0, 3]}``: in its scan a candidate with alpha >= 3 is
  marked invalid and skipped by the argmin. Pass ``alpha_range=(0, 3)`` to select as it does.
* **Exponent.** fastspec always uses the closed form alpha = 1 + n / sum log(x/xmin), the exact
  continuous MLE. The package uses it for 1.5 < alpha <= 3 and otherwise runs a bounded
  Nelder-Mead (tol=1e-4, alpha in [0, 3]) *started at the closed form*: below 1.5 that start is
  already the optimum, so the simplex returns it and the answers agree (tested); above 3 the
  bound pins it near 3 and the candidate is marked invalid (the cap above).
* **Discrete exponent.** ``discrete_estimator="exact"`` (default) maximises the Hurwitz-zeta
  likelihood to ~1e-10; ``"approx"`` is Clauset's eq. (3.7), alpha = 1 + n / sum
  log(x/(xmin - 1/2)); ``"auto"`` is the package's rule (eq. 3.7 when xmin >= 10 and its value
  lies in (1.5, 3], the numerical MLE otherwise -- the package's own numerical MLE being a
  Nelder-Mead with tol=1e-4).
* **Candidates.** By default both scan the distinct data values except the two largest (the
  package drops the largest value and then the largest remaining one); an integer asks for a
  log-spaced grid of that many cutoffs, an array for explicit cutoffs (each snapped to the
  smallest data value >= it).
* **Inputs.** The package silently drops non-positive values (only when a zero is present) and
  warns on non-integers with ``discrete=True``; fastspec raises ``ValueError`` for both.

References: A. Clauset, C. R. Shalizi, M. E. J. Newman, *Power-law distributions in empirical
data*, SIAM Review 51 (2009) 661-703; J. Alstott, E. Bullmore, D. Plenz, *powerlaw: a Python
package for analysis of heavy-tailed distributions*, PLoS ONE 9 (2014) e85777.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
import torch

from fastspec._checks import AsDict, check_bool, check_choice, check_float, check_int
from fastspec.ops.powerlaw_scan import powerlaw_scan
from fastspec.stats import continuous as cont
from fastspec.stats import discrete as disc
from fastspec.stats.inputs import as_float_vector, require_positive

if TYPE_CHECKING:
    from fastspec.stats.alternatives import Comparison
    from fastspec.stats.bootstrap import GofResult

__all__ = ["DiscreteEstimator", "PowerLaw", "XminScan"]

DiscreteEstimator = Literal["exact", "approx", "auto"]
CandidateSpec = Union[None, int, Sequence[float], np.ndarray]


@dataclass(frozen=True)
class FitOptions:
    """How a fit was made; the bootstrap refits every replicate the same way."""

    xmin: float | None
    discrete: bool
    xmin_candidates: int | tuple[float, ...] | None
    alpha_range: tuple[float, float]
    exhaustive: bool
    discrete_estimator: DiscreteEstimator


@dataclass(frozen=True, eq=False)
class XminScan(AsDict):
    """The exponent and KS distance at every candidate cutoff (an exhaustive scan).

    Attributes:
        xmins: [C] candidate cutoffs, ascending.
        alphas: [C] the MLE exponent of the tail above each (NaN where it could not be fitted).
        ks: [C] the KS distance of each tail fit.
        valid: [C] whether alpha lies in the fit's ``alpha_range`` (only those enter the argmin).
    """

    xmins: np.ndarray
    alphas: np.ndarray
    ks: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True, eq=False)
class PowerLaw(AsDict):
    """A fitted power-law tail p(x) ~ x^-alpha for x >= xmin; build it with :meth:`PowerLaw.fit`.

    Attributes:
        alpha: the exponent (maximum likelihood).
        xmin: the cutoff (chosen by minimum KS distance unless given).
        sigma: standard error of alpha, (alpha - 1) / sqrt(n_tail) (Clauset et al. eq. 3.2; the
            package's ``standard_err``, which it also uses for discrete data).
        ks: KS distance between the tail and the fit (the package's ``D``).
        n_tail: number of data points >= xmin.
        n: number of data points.
        loglikelihood: log-likelihood of the tail under the fit.
        discrete: whether the discrete (Hurwitz-zeta) power law was fitted.
        scan: the exhaustive xmin scan (None for a fixed xmin or a pruned scan).
        data: [n] the data, ascending (kept for the bootstrap and the likelihood-ratio tests).
        options: how the fit was made.
    """

    alpha: float
    xmin: float
    sigma: float
    ks: float
    n_tail: int
    n: int
    loglikelihood: float
    discrete: bool
    scan: XminScan | None = field(default=None, repr=False)
    data: np.ndarray = field(
        default_factory=lambda: np.empty(0), repr=False, metadata={"serialize": False}
    )
    options: FitOptions | None = field(default=None, repr=False, metadata={"serialize": False})

    @classmethod
    def fit(
        cls,
        data: Any,
        *,
        xmin: float | None = None,
        discrete: bool = False,
        xmin_candidates: CandidateSpec = None,
        alpha_range: tuple[float, float] = (1.0, math.inf),
        exhaustive: bool = False,
        discrete_estimator: DiscreteEstimator = "exact",
    ) -> PowerLaw:
        """Fit a continuous or discrete power law to the tail of ``data``.

        Args:
            data: [N] positive finite values (integers when ``discrete``); numpy, list or tensor.
            xmin: a fixed cutoff (no search); the tail is ``data >= xmin``.
            discrete: fit the discrete power law x^-alpha / zeta(alpha, xmin).
            xmin_candidates: the cutoffs searched: None for every distinct value but the two
                largest (as ``powerlaw``), an int G for G log-spaced cutoffs, or an array of values.
            alpha_range: open interval of valid exponents; candidates outside are skipped.
                ``(0, 3)`` reproduces the ``powerlaw`` package's choice of xmin.
            exhaustive: compute every candidate's KS distance and keep the curve in ``scan``
                (continuous fits otherwise use the pruned native scan; discrete scans are always
                exhaustive).
            discrete_estimator: ``"exact"``, ``"approx"`` or ``"auto"`` (see the module notes).

        Returns:
            The fit.

        Raises:
            TypeError: an option of the wrong type.
            ValueError: on NaN/inf, non-positive data, non-integers with ``discrete``, too few
                points or distinct values, a bad option value, or no candidate with alpha in
                range.
        """
        discrete = check_bool("discrete", discrete)
        x = as_float_vector("data", data, min_size=2)
        require_positive("data", x)
        if discrete and not np.array_equal(x, np.round(x)):
            raise ValueError("data must hold integers when discrete=True")
        opts = FitOptions(
            xmin=_check_xmin(xmin, discrete),
            discrete=discrete,
            xmin_candidates=_check_candidates(xmin_candidates),
            alpha_range=_check_alpha_range(alpha_range),
            exhaustive=check_bool("exhaustive", exhaustive),
            discrete_estimator=check_choice(  # type: ignore[arg-type]
                "discrete_estimator", discrete_estimator, ("exact", "approx", "auto")
            ),
        )
        return fit_sorted(np.sort(x), opts)

    # -- the fitted distribution -------------------------------------------------------------

    def pdf(self, x: Any) -> np.ndarray:
        """Density (continuous) or probability mass (discrete, at integers) at ``x``; 0 below xmin."""
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros_like(x)
        if self.discrete:
            on = (x >= self.xmin) & (x == np.floor(x))
            out[on] = np.exp(-self.alpha * np.log(x[on]) - disc.log_zeta(self.alpha, self.xmin))
        else:
            on = x >= self.xmin
            out[on] = np.exp(cont.log_pdf(x[on], self.alpha, self.xmin))
        return out

    def ccdf(self, x: Any) -> np.ndarray:
        """P(X > x)."""
        x = np.asarray(x, dtype=np.float64)
        out = np.ones_like(x)
        on = x >= self.xmin
        if self.discrete:
            out[on] = disc.ccdf_ge(np.floor(x[on]) + 1.0, self.alpha, self.xmin)
        else:
            out[on] = np.exp((1.0 - self.alpha) * np.log(x[on] / self.xmin))
        return out

    def cdf(self, x: Any) -> np.ndarray:
        """P(X <= x); the package's discrete ``cdf`` is P(X < x), the form its KS uses."""
        return 1.0 - self.ccdf(x)

    def sample(self, n: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """``n`` independent draws from the fitted power law (values >= xmin)."""
        n = check_int("n", n, minimum=0)
        rng = np.random.default_rng(seed)
        if self.discrete:
            return disc.sample(n, self.alpha, self.xmin, rng)
        return cont.sample(n, self.alpha, self.xmin, rng)

    # -- tests -----------------------------------------------------------------------------

    def gof_pvalue(
        self,
        n_boot: int = 2500,
        *,
        seed: int | np.random.SeedSequence | None = None,
        workers: int = 2,
        progress: Callable[[int, int], None] | None = None,
    ) -> GofResult:
        """Clauset's semi-parametric bootstrap p-value; see :func:`fastspec.stats.gof_pvalue`."""
        from fastspec.stats.bootstrap import gof_pvalue

        return gof_pvalue(self, n_boot, seed=seed, workers=workers, progress=progress)

    def compare(self, alternative: str, *, params: dict[str, float] | None = None) -> Comparison:
        """Likelihood-ratio test against an alternative; see :func:`fastspec.stats.compare`."""
        from fastspec.stats.alternatives import compare

        return compare(self, alternative, params=params)

    def tail(self) -> np.ndarray:
        """The fitted tail, ``data >= xmin`` (ascending)."""
        return self.data[np.searchsorted(self.data, self.xmin, side="left") :]


# -- fitting (shared with the bootstrap) ------------------------------------------------------


def fit_sorted(x: np.ndarray, opts: FitOptions) -> PowerLaw:
    """Fit ascending, validated data ``x`` [N]."""
    scan: XminScan | None = None
    if opts.xmin is not None:
        xmin = opts.xmin
        start = int(np.searchsorted(x, xmin, side="left"))
        _check_fixed_tail(x, start, xmin)
    else:
        start, scan = select_xmin(x, opts)
        xmin = float(x[start])
    tail = x[start:]
    n_tail = tail.size
    if opts.discrete:
        n_arr, s_arr, q_arr = (np.array([float(v)]) for v in (n_tail, np.log(tail).sum(), xmin))
        alpha = float(_discrete_alpha(n_arr, s_arr, q_arr, opts.discrete_estimator)[0])
        if not np.isfinite(alpha):
            raise ValueError(f"data: the tail above xmin={xmin:g} is too steep to fit")
        values, first = np.unique(tail, return_index=True)
        ks = disc.ks_distance(values, first.astype(np.float64), n_tail, alpha, xmin)
        loglik = disc.loglikelihood(tail, alpha, xmin)
    else:
        alpha = cont.mle_alpha(tail, xmin)
        ks = cont.ks_distance(tail, alpha, xmin)
        loglik = cont.loglikelihood(tail, alpha, xmin)
    x.setflags(write=False)  # the fit keeps (a view of) its data
    return PowerLaw(
        alpha=alpha,
        xmin=xmin,
        sigma=(alpha - 1.0) / math.sqrt(n_tail),
        ks=ks,
        n_tail=n_tail,
        n=x.size,
        loglikelihood=loglik,
        discrete=opts.discrete,
        scan=scan,
        data=x,
        options=opts,
    )


def fit_ks(x: np.ndarray, opts: FitOptions) -> float:
    """Only the KS distance of the fit of ascending ``x`` (the bootstrap's statistic).

    NaN when the replicate cannot be fitted.
    """
    try:
        if opts.xmin is None and not opts.discrete and not opts.exhaustive:
            if opts.xmin_candidates is None:  # the op's default candidates: no index work here
                ct = None
            else:
                ct = torch.from_numpy(candidate_indices(x, opts.xmin_candidates))
            _, ks = powerlaw_scan(torch.from_numpy(x), ct, prune=True, alpha_range=opts.alpha_range)
            best = float(ks.min()) if ks.numel() else math.nan
            return best if math.isfinite(best) else math.nan
        return fit_sorted(x, opts).ks
    except ValueError:
        return math.nan


def select_xmin(x: np.ndarray, opts: FitOptions) -> tuple[int, XminScan | None]:
    """Index of the minimum-KS cutoff, and the scan curve when exhaustive.

    Index of the minimum-KS cutoff among the candidates with alpha in ``alpha_range`` (the first one
    on ties, as ``numpy.argmin``), and the scan curve when exhaustive.
    """
    cand = candidate_indices(x, opts.xmin_candidates)
    lo, hi = opts.alpha_range
    if opts.discrete:
        alphas, ks = _discrete_scan(x, cand, opts.discrete_estimator)
        prune = False
    else:
        prune = not opts.exhaustive
        alphas, ks = _native_scan(x, cand, opts.xmin_candidates is None, opts.alpha_range, prune)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(alphas) & (alphas > lo) & (alphas < hi) & np.isfinite(ks)
    if not valid.any():
        raise ValueError(
            f"data: no candidate xmin gives an exponent in alpha_range={opts.alpha_range} "
            f"({cand.size} candidates)"
        )
    best = int(np.argmin(np.where(valid, ks, np.inf)))
    scan = None if prune else XminScan(xmins=x[cand], alphas=alphas, ks=ks, valid=valid)
    return int(cand[best]), scan


def candidate_indices(x: np.ndarray, spec: int | tuple[float, ...] | None) -> np.ndarray:
    """First indices (run starts) in ascending ``x`` of the candidate cutoffs."""
    values, first = np.unique(x, return_index=True)
    if values.size < 3:
        raise ValueError(
            f"data must have at least 3 distinct values to search for xmin, got {values.size}"
        )
    if spec is None:
        return first[:-2]
    if isinstance(spec, int):
        grid = np.geomspace(values[0], values[-3], spec) if spec > 1 else values[:1]
        pos = np.searchsorted(values, grid * (1 - 1e-12), side="left")
        return np.unique(first[np.minimum(pos, values.size - 3)])
    pos = np.unique(np.searchsorted(values, np.asarray(spec), side="left"))
    pos = pos[pos <= values.size - 2]  # the tail must hold two distinct values
    if pos.size == 0:
        raise ValueError(
            "xmin_candidates: every candidate leaves fewer than two distinct values in the tail"
        )
    return first[pos]


def _native_scan(
    x: np.ndarray, cand: np.ndarray, default: bool, alpha_range: tuple[float, float], prune: bool
) -> tuple[np.ndarray, np.ndarray]:
    xt = torch.from_numpy(x)
    ct = None if default else torch.from_numpy(cand.astype(np.int64))
    alphas, ks = powerlaw_scan(xt, ct, prune=prune, alpha_range=alpha_range)
    a, k = alphas.numpy(), ks.numpy()
    if a.size != cand.size:  # the op's default candidates must be ours
        raise RuntimeError("fastspec.ops.powerlaw_scan's default candidates changed")
    return a, k


def _discrete_alpha(
    n: np.ndarray, sum_log: np.ndarray, q: np.ndarray, estimator: DiscreteEstimator
) -> np.ndarray:
    if estimator == "approx":
        return disc.approx_alpha(n, sum_log, q)
    if estimator == "exact":
        return disc.exact_alpha(n, sum_log, q)
    approx = disc.approx_alpha(n, sum_log, q)  # "auto": the powerlaw package's rule
    use = (q >= 10) & (approx > 1.5) & (approx <= 3.0)
    out = approx.copy()
    if (~use).any():
        out[~use] = disc.exact_alpha(n[~use], sum_log[~use], q[~use])
    return out


def _discrete_scan(
    x: np.ndarray, cand: np.ndarray, estimator: DiscreteEstimator
) -> tuple[np.ndarray, np.ndarray]:
    """Alpha [C] and KS [C] of the discrete fit above every candidate (numpy.

    O(U^2) Hurwitz-zeta evaluations for U distinct values).
    """
    n = x.size
    suffix = np.cumsum(np.log(x)[::-1])[::-1]
    nt = (n - cand).astype(np.float64)
    q = x[cand]
    alphas = _discrete_alpha(nt, suffix[cand], q, estimator)
    values, first = np.unique(x, return_index=True)
    start = np.searchsorted(values, q)
    ks = np.full(cand.size, np.nan)
    for c in range(cand.size):
        a = alphas[c]
        if np.isfinite(a) and a > 1.0:
            below = (first[start[c] :] - cand[c]).astype(np.float64)
            ks[c] = disc.ks_distance(values[start[c] :], below, int(nt[c]), a, q[c])
    return alphas, ks


# -- argument checks --------------------------------------------------------------------------


def _check_fixed_tail(x: np.ndarray, start: int, xmin: float) -> None:
    if x.size - start < 2:
        raise ValueError(
            f"xmin={xmin:g} leaves {x.size - start} data point(s) in the tail; at least 2 needed"
        )
    if x[-1] <= xmin:
        raise ValueError(f"xmin={xmin:g}: every tail value equals xmin, alpha is unbounded")


def _check_xmin(xmin: Any, discrete: bool) -> float | None:
    v = check_float("xmin", xmin, minimum=0.0, open_min=True, none_ok=True)
    if v is None:
        return None
    if discrete and v != math.floor(v):
        raise ValueError(f"xmin must be an integer when discrete=True, got {xmin!r}")
    return v


def _check_candidates(spec: Any) -> int | tuple[float, ...] | None:
    if spec is None:
        return None
    if np.ndim(spec) == 0:  # a number of log-spaced cutoffs
        return check_int("xmin_candidates", spec, minimum=1)
    arr = as_float_vector("xmin_candidates", spec, min_size=1)
    require_positive("xmin_candidates", arr)
    return tuple(float(v) for v in np.unique(arr))


def _check_alpha_range(alpha_range: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(a) for a in alpha_range)
    except (TypeError, ValueError):
        raise ValueError(f"alpha_range must be a pair (low, high), got {alpha_range!r}") from None
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ValueError(f"alpha_range must satisfy low < high, got {alpha_range!r}")
    return lo, hi
