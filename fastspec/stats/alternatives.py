"""Is the tail better described by a power law or by an alternative?

Vuong's likelihood-ratio test (Clauset et al. 2009, sec. 5) against the lognormal, exponential,
stretched exponential and power law with exponential cutoff, each fitted by maximum likelihood to
the same tail (x >= xmin) with the same conditional (truncated at xmin) likelihood as the
``powerlaw`` package 2.0:

=========================  ==========================================================  ==========
alternative                continuous log p(x), x >= xmin                              parameters
=========================  ==========================================================  ==========
``lognormal``              log N(log x; mu, sigma) - log x - log P(X >= xmin)          mu, sigma
``exponential``            log Lambda - Lambda (x - xmin)                              Lambda
``stretched_exponential``  log(beta Lambda) + (beta-1) log(Lambda x)                   Lambda,
                           + (Lambda xmin)^beta - (Lambda x)^beta                      beta
``truncated_power_law``    -alpha log x - Lambda x - log int_xmin^inf t^-alpha e^-Lambda t  alpha,
                                                                                       Lambda
=========================  ==========================================================  ==========

Discrete fits use the package's discrete forms: the exact geometric law for the exponential,
the Lerch-transcendent normaliser for the truncated power law, and its ``"round"`` approximation
(the continuous probability of [x - 1/2, x + 1/2], conditioned on X >= xmin - 1/2) for the
lognormal and stretched exponential. Parameter names are the package's (``Lambda`` capitalised),
so ``params=fit.lognormal.parameters`` from the package can be passed straight in.

The test: with l_i = log p_pl(x_i) - log p_alt(x_i), R = sum l_i (> 0 favours the power law),
R_normalized = R / sqrt(n var(l)) (Vuong's statistic), p = erfc(|R| / sqrt(2 n var(l))) for the
non-nested alternatives; for the truncated power law, which nests the power law (Lambda = 0),
p = P(chi2_1 >= 2|R|) (the survival function itself, exact where the package's ``1 - chi2.cdf``
rounds to 0). These are the package's ``distribution_compare`` definitions.

Maximum likelihood, and how it differs from the package: the package minimises each negative
log-likelihood by a bounded Nelder-Mead with ``tol=1e-4`` and bounds alpha in (0, 3) for the
truncated power law; fastspec uses the closed form for the exponential (Lambda = 1/(mean(x) -
xmin), or its geometric analogue), and for the others a Nelder-Mead on the mean log-likelihood
with tolerances 1e-10 restarted at its own optimum (the truncated power law also from the
power-law fit at Lambda = 0, so its likelihood never falls below the nested power law's; alpha is
not capped). fastspec's maxima are therefore at least as high as the package's (its tests check
this), and R agrees with the package's to the package's optimiser tolerance, not to 1e-8. Given
the same parameters (``params=``), the log-likelihoods, R and p agree with the package to
rounding.

References: A. Clauset, C. R. Shalizi, M. E. J. Newman, SIAM Review 51 (2009); Q. H. Vuong,
*Likelihood ratio tests for model selection and non-nested hypotheses*, Econometrica 57 (1989)
307-333; J. Alstott, E. Bullmore, D. Plenz, PLoS ONE 9 (2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import special

from fastspec._checks import AsDict, check_choice
from fastspec.stats import continuous as cont
from fastspec.stats import discrete as disc
from fastspec.stats.special import log_lerch_phi, log_upper_gamma_scaled

if TYPE_CHECKING:
    from fastspec.stats.powerlaw import PowerLaw

__all__ = [
    "ALTERNATIVES",
    "PARAMETERS",
    "Comparison",
    "compare",
    "fit_alternative",
    "loglikelihoods",
    "vuong",
]

ALTERNATIVES = ("lognormal", "exponential", "stretched_exponential", "truncated_power_law")
PARAMETERS = {
    "lognormal": ("mu", "sigma"),
    "exponential": ("Lambda",),
    "stretched_exponential": ("Lambda", "beta"),
    "truncated_power_law": ("alpha", "Lambda"),
}


@dataclass(frozen=True, eq=False)
class Comparison(AsDict):
    """A likelihood-ratio test of the power-law fit against one alternative.

    Attributes:
        alternative: the alternative's name.
        R: sum over the tail of log p_pl - log p_alt (> 0 favours the power law; the
            ``powerlaw`` package's ``distribution_compare`` R).
        R_normalized: Vuong's statistic R / sqrt(n var(log p_pl - log p_alt)).
        p: significance of the sign of R (Vuong's two-sided p; chi2 with 1 dof when nested).
        nested: whether the alternative nests the power law (the truncated power law).
        parameters: the alternative's maximum-likelihood (or given) parameters.
        loglikelihood: the power law's log-likelihood of the tail.
        loglikelihood_alternative: the alternative's.
        n_tail: the tail size.
    """

    alternative: str
    R: float
    R_normalized: float
    p: float
    nested: bool
    parameters: dict[str, float]
    loglikelihood: float
    loglikelihood_alternative: float
    n_tail: int


def compare(
    fit: PowerLaw, alternative: str, *, params: Mapping[str, float] | None = None
) -> Comparison:
    """Vuong likelihood-ratio test of a power-law fit against ``alternative`` on its tail.

    Args:
        fit: a :class:`~fastspec.stats.PowerLaw` fit (continuous or discrete).
        alternative: ``"lognormal"``, ``"exponential"``, ``"stretched_exponential"`` or
            ``"truncated_power_law"``.
        params: the alternative's parameters (by the names in the module notes) instead of its
            maximum-likelihood fit.

    Returns:
        R, its normalised form, p, and the alternative's parameters and log-likelihood.

    Raises:
        ValueError: for an unknown alternative, or ``params`` with wrong names or invalid values.
    """
    name = check_choice("alternative", alternative, ALTERNATIVES)
    if fit.data.size != fit.n:
        raise ValueError("fit must come from PowerLaw.fit (it carries its data)")
    tail = fit.tail()
    if params is None:
        theta = fit_alternative(tail, fit.xmin, name, discrete=fit.discrete, power_law=fit)
    else:
        theta = _check_params(name, params)
    l_alt = loglikelihoods(tail, fit.xmin, name, theta, discrete=fit.discrete)
    if fit.discrete:
        l_pl = -fit.alpha * np.log(tail) - disc.log_zeta(fit.alpha, fit.xmin)
    else:
        l_pl = cont.log_pdf(tail, fit.alpha, fit.xmin)
    nested = name == "truncated_power_law"
    r, r_norm, p = vuong(l_pl, l_alt, nested=nested)
    return Comparison(
        alternative=name,
        R=r,
        R_normalized=r_norm,
        p=p,
        nested=nested,
        parameters=dict(zip(PARAMETERS[name], (float(v) for v in theta))),
        loglikelihood=float(l_pl.sum()),
        loglikelihood_alternative=float(l_alt.sum()),
        n_tail=tail.size,
    )


def vuong(l1: np.ndarray, l2: np.ndarray, *, nested: bool) -> tuple[float, float, float]:
    """Vuong's R, R / sqrt(n var) and p, as the package's ``loglikelihood_ratio``.

    R, R / sqrt(n var), p as the package's ``loglikelihood_ratio`` (its -inf clean-up is not needed:
    these log-likelihoods are finite).
    """
    d = l1 - l2
    n = d.size
    r = float(d.sum())
    var = float(np.mean((d - d.mean()) ** 2))
    if nested:
        p = float(special.chdtrc(1, abs(2.0 * r)))  # = chi2(1).sf, no scipy.stats import
    elif var > 0:
        p = float(special.erfc(abs(r) / math.sqrt(2.0 * n * var)))
    else:
        p = 1.0 if r == 0 else 0.0
    r_norm = r / math.sqrt(n * var) if var > 0 else math.copysign(math.inf, r) if r else 0.0
    return r, r_norm, p


# -- log-likelihoods --------------------------------------------------------------------------


def loglikelihoods(
    tail: np.ndarray, xmin: float, name: str, theta: np.ndarray, *, discrete: bool = False
) -> np.ndarray:
    """[n] log p(x_i) of the alternative ``name`` with parameters ``theta``.

    [n] log p(x_i) of the alternative ``name`` with parameters ``theta`` (natural order as in the
    module notes), conditional on x >= xmin; -inf/NaN outside the parameter domain.
    """
    fn = (_DISCRETE if discrete else _CONTINUOUS)[name]
    with np.errstate(all="ignore"):
        return fn(tail, xmin, theta)


def _log_diff_ndtr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Phi(b) - Phi(a)) for a < b, from whichever tail keeps precision."""
    upper = a + b > 0
    out = np.empty_like(a)
    # upper region: Phi(-a) - Phi(-b)
    la, lb = special.log_ndtr(-a[upper]), special.log_ndtr(-b[upper])
    out[upper] = la + np.log1p(-np.exp(lb - la))
    la, lb = special.log_ndtr(a[~upper]), special.log_ndtr(b[~upper])
    out[~upper] = lb + np.log1p(-np.exp(la - lb))
    return out


def _lognormal(x: np.ndarray, xmin: float, th: np.ndarray) -> np.ndarray:
    mu, sigma = th
    if not sigma > 0:
        return np.full(x.shape, -np.inf)
    y = np.log(x)
    log_tail = special.log_ndtr((mu - math.log(xmin)) / sigma)  # log P(X >= xmin)
    return (
        -y
        - math.log(sigma)
        - 0.5 * math.log(2 * math.pi)
        - 0.5 * ((y - mu) / sigma) ** 2
        - log_tail
    )


def _lognormal_discrete(x: np.ndarray, xmin: float, th: np.ndarray) -> np.ndarray:
    mu, sigma = th
    if not sigma > 0:
        return np.full(x.shape, -np.inf)
    lo = (np.log(x - 0.5) - mu) / sigma
    hi = (np.log(x + 0.5) - mu) / sigma
    log_tail = special.log_ndtr((mu - math.log(xmin - 0.5)) / sigma)  # log P(X >= xmin - 1/2)
    return _log_diff_ndtr(lo, hi) - log_tail


def _exponential(x: np.ndarray, xmin: float, th: np.ndarray) -> np.ndarray:
    (lam,) = th
    if not lam > 0:
        return np.full(x.shape, -np.inf)
    return math.log(lam) - lam * (x - xmin)


def _exponential_discrete(x: np.ndarray, xmin: float, th: np.ndarray) -> np.ndarray:
    (lam,) = th
    if not lam > 0:
        return np.full(x.shape, -np.inf)
    return math.log(-math.expm1(-lam)) - lam * (x - xmin)


def _stretched(x: np.ndarray, xmin: float, th: np.ndarray) -> np.ndarray:
    lam, beta = th
    if not (lam > 0 and beta > 0):
        return np.full(x.shape, -np.inf)
    lx = np.log(lam * x)
    return math.log(beta * lam) + (beta - 1) * lx + (lam * xmin) ** beta - np.exp(beta * lx)


def _stretched_discrete(x: np.ndarray, xmin: float, th: np.ndarray) -> np.ndarray:
    lam, beta = th
    if not (lam > 0 and beta > 0):
        return np.full(x.shape, -np.inf)
    lo = (lam * (x - 0.5)) ** beta
    hi = (lam * (x + 0.5)) ** beta
    return (lam * (xmin - 0.5)) ** beta - lo + np.log(-np.expm1(lo - hi))


def _truncated(x: np.ndarray, xmin: float, th: np.ndarray) -> np.ndarray:
    alpha, lam = th
    if not lam >= 0:
        return np.full(x.shape, -np.inf)
    # log p = -alpha log(x/xmin) - log xmin - Lambda (x - xmin) - log I(1 - alpha, Lambda xmin)
    log_i = log_upper_gamma_scaled(1.0 - alpha, lam * xmin)
    return -alpha * np.log(x / xmin) - math.log(xmin) - lam * (x - xmin) - log_i


def _truncated_discrete(x: np.ndarray, xmin: float, th: np.ndarray) -> np.ndarray:
    alpha, lam = th
    if not lam >= 0:
        return np.full(x.shape, -np.inf)
    return -alpha * np.log(x) - lam * (x - xmin) - log_lerch_phi(lam, alpha, xmin)


_LogPdf = Callable[[np.ndarray, float, np.ndarray], np.ndarray]
_CONTINUOUS: dict[str, _LogPdf] = {
    "lognormal": _lognormal,
    "exponential": _exponential,
    "stretched_exponential": _stretched,
    "truncated_power_law": _truncated,
}
_DISCRETE: dict[str, _LogPdf] = {
    "lognormal": _lognormal_discrete,
    "exponential": _exponential_discrete,
    "stretched_exponential": _stretched_discrete,
    "truncated_power_law": _truncated_discrete,
}


# -- maximum likelihood -----------------------------------------------------------------------

# Stop when the simplex's mean log-likelihoods agree to 1e-13 (parameters then to ~1e-7, the
# likelihood to ~1e-13 n). No parameter tolerance: where the supremum lies at infinity (a
# lognormal or stretched exponential fitted to a pure power law runs off to mu -> -inf or
# beta -> 0) the search stops once the likelihood stops improving.
_NM_OPTIONS = {"xatol": math.inf, "fatol": 1e-11, "maxiter": 20000, "maxfev": 40000}


def fit_alternative(
    tail: np.ndarray,
    xmin: float,
    name: str,
    *,
    discrete: bool = False,
    power_law: PowerLaw | None = None,
) -> np.ndarray:
    """Maximum-likelihood parameters of alternative ``name`` on ``tail`` (all values >= xmin).

    Starts from the package's initial guesses (lognormal: mean and std of log x; exponential and
    stretched exponential: Lambda = 1/mean(x), beta = 1; truncated power law: alpha from eq. 3.1 and
    Lambda = 1/mean(x), and also the power-law fit ``power_law`` at Lambda = 0).
    """
    name = check_choice("alternative", name, ALTERNATIVES)
    tail = np.asarray(tail, dtype=np.float64)
    if name == "exponential":
        m = float(np.mean(tail - xmin))
        lam = math.log1p(1.0 / m) if discrete else 1.0 / m
        return np.array([lam])

    # The objective is the mean log-likelihood, evaluated on the distinct values weighted by
    # their counts, or (continuous lognormal and truncated power law) from sufficient statistics;
    # the reported likelihoods are recomputed point by point by ``loglikelihoods``.
    values, counts = np.unique(tail, return_counts=True)
    weights = counts / tail.size
    mean_ll: Callable[[np.ndarray], float]
    if not discrete and name == "lognormal":
        y = np.log(tail)
        ybar, yvar, log_xmin = float(y.mean()), float(np.mean((y - y.mean()) ** 2)), math.log(xmin)

        def mean_ll(th: np.ndarray) -> float:
            mu, sigma = th
            return float(
                -ybar
                - math.log(sigma)
                - 0.5 * math.log(2 * math.pi)
                - (yvar + (ybar - mu) ** 2) / (2 * sigma * sigma)
                - special.log_ndtr((mu - log_xmin) / sigma)
            )
    elif not discrete and name == "truncated_power_law":
        m1, m2 = float(np.mean(np.log(tail / xmin))), float(np.mean(tail - xmin))

        def mean_ll(th: np.ndarray) -> float:
            alpha, lam = th
            log_i = log_upper_gamma_scaled(1.0 - alpha, lam * xmin)
            return -alpha * m1 - math.log(xmin) - lam * m2 - log_i
    else:

        def mean_ll(th: np.ndarray) -> float:
            return float(
                np.sum(weights * loglikelihoods(values, xmin, name, th, discrete=discrete))
            )

    def negmean(th: np.ndarray) -> float:
        v = mean_ll(th)
        return -v if math.isfinite(v) else math.inf

    if name == "lognormal":
        logs = np.log(tail)
        # optimise over (mu, log sigma)
        starts = [np.array([logs.mean(), math.log(logs.std())])]
        best = _nelder_mead(
            lambda t: negmean(np.array([t[0], math.exp(t[1])])), starts, [(None, None), (-50, 50)]
        )
        return np.array([best[0], math.exp(best[1])])
    if name == "stretched_exponential":
        # optimise over (log Lambda, log beta)
        starts = [np.array([-math.log(tail.mean()), 0.0])]
        best = _nelder_mead(lambda t: negmean(np.exp(t)), starts, [(-700, 700), (-50, 50)])
        return np.exp(best)
    # truncated power law: optimise over (alpha, Lambda xmin) with Lambda >= 0
    alpha0 = cont.mle_alpha(tail, xmin)
    starts = [np.array([alpha0, xmin / tail.mean()])]
    if power_law is not None and power_law.alpha > 1:
        starts.append(np.array([power_law.alpha, 0.0]))
    best = _nelder_mead(
        lambda t: negmean(np.array([t[0], t[1] / xmin])), starts, bounds=[(None, None), (0, None)]
    )
    return np.array([best[0], best[1] / xmin])


def _nelder_mead(
    fun: Callable[[np.ndarray], float],
    starts: list[np.ndarray],
    bounds: list[tuple[float | None, float | None]] | None = None,
) -> np.ndarray:
    """Minimise ``fun`` by Nelder-Mead from each start; the best point found.

    Minimise ``fun`` by Nelder-Mead from each start, restarting once at each optimum (to undo a
    collapsed simplex); the best point found.
    """
    from scipy import optimize  # imported on use: keeps `import fastspec` light

    best_x, best_f = starts[0], math.inf
    for x0 in starts:
        x = np.asarray(x0, dtype=np.float64)
        for _ in range(2):
            with np.errstate(all="ignore"):
                res = optimize.minimize(
                    fun, x, method="Nelder-Mead", bounds=bounds, options=_NM_OPTIONS
                )
            x = res.x
        if res.fun < best_f:
            best_x, best_f = x, float(res.fun)
    return best_x


# -- argument checks --------------------------------------------------------------------------


def _check_params(name: str, params: Mapping[str, float]) -> np.ndarray:
    names = PARAMETERS[name]
    if not isinstance(params, Mapping) or set(params) != set(names):
        raise ValueError(f"params for {name} must be a mapping with keys {names}, got {params!r}")
    theta = np.array([float(params[k]) for k in names])
    if not np.isfinite(theta).all():
        raise ValueError(f"params must be finite, got {dict(params)}")
    positive = {"sigma", "Lambda", "beta"}
    for k, v in zip(names, theta):
        if k in positive and not (v > 0 or (name == "truncated_power_law" and v == 0)):
            raise ValueError(f"params[{k!r}] must be positive for {name}, got {v}")
    return theta
