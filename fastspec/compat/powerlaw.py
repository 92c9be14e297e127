"""The ``powerlaw`` package's ``Fit`` on :mod:`fastspec.stats`.

change ``import powerlaw`` to ``from fastspec.compat import powerlaw`` and keep ``powerlaw.Fit(data,
...)``.

``Fit`` chooses xmin, fits the exponent and compares distributions as ``powerlaw`` 2.0 does by
default (Clauset et al. 2009: xmin minimising the KS distance over every distinct value but the two
largest, candidates with alpha outside the package's default range (0, 3) skipped; the closed-form
continuous MLE; the package's discrete rule, Clauset's eq. 3.7 at xmin >= 10 and the exact MLE
below), with fastspec's native xmin scan. ``power_law.alpha``, ``.xmin``, ``.sigma``, ``.D`` and
``.loglikelihood`` agree with the package to 1e-8 relative (tested on continuous, discrete, fixed
xmin and xmin-range fits). ``distribution_compare`` returns ``(R, p)`` (``normalized_ratio=True``:
``(R / sqrt(n var), p)``) by the package's definitions.

Differences, all deliberate (details in ``docs/migration.md``):

* **alpha > 3 with a fixed xmin.** The package's Nelder-Mead is bounded to alpha in [0, 3], so
  on data with a steeper tail it returns alpha = 3 (e.g. 3.0 for a Pareto tail of exponent 4);
  fastspec returns the exact MLE. In the xmin search both skip candidates with alpha >= 3 (pass
  ``parameter_ranges={'alpha': (1, inf)}`` for Clauset's unrestricted search); where no candidate
  is valid the package returns an alpha pinned at 3, fastspec raises ``ValueError``.
* **Discrete data below xmin = 10** (``estimate_discrete`` None or True) and
  ``estimate_discrete=False``: the package maximises the Hurwitz-zeta likelihood by a Nelder-Mead
  with tol 1e-4, fastspec exactly (a likelihood at least as high; alpha differs by ~1e-4).
* **Alternatives** (``fit.lognormal`` etc.) are fitted by fastspec's exact maximum likelihood
  (:func:`fastspec.stats.compare`); the package's Nelder-Mead (tol 1e-4) stops short, so R
  differs by the likelihood fastspec gains (given the package's parameters, R and p agree to
  rounding).
* **Non-positive values** are dropped with a warning (the package drops them only when a 0 is
  present, and otherwise fits garbage); NaN/inf raise ``ValueError``.
* **Plots.** ``plot_pdf`` uses log-spaced bins without the package's flooring of bin edges to
  integers (which merges bins for data spanning few units); with ``bins=`` given the histograms
  are the package's. Alternatives have ``pdf`` and ``plot_pdf`` but no ``ccdf``.
* Not supported (``ValueError``): ``xmax``, ``fit_method='KS'``, ``xmin_distance`` other than
  'D', ``sigma_threshold``, ``initial_parameters``, ``parameter_constraints``, a
  ``discrete_normalization`` other than 'round', ``xmin_distribution`` other than 'power_law'.
  ``nested=`` is honoured as given (the package overrides ``nested=False`` when one name
  contains the other, an operator-precedence slip).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from fastspec._checks import check_bool
from fastspec.stats import ALTERNATIVES, PowerLaw
from fastspec.stats.alternatives import PARAMETERS, fit_alternative, loglikelihoods, vuong
from fastspec.stats.inputs import as_float_vector

__all__ = ["Alternative", "Fit", "Power_Law"]


class Power_Law:  # the original name
    """The fitted power law (``fit.power_law``).

    the package's attribute names over a :class:`fastspec.stats.PowerLaw`.
    """

    name = "power_law"

    def __init__(self, fit: PowerLaw) -> None:
        self.fit = fit
        self.alpha = fit.alpha
        self.parameter1 = fit.alpha
        self.parameter1_name = "alpha"
        self.parameters = {"alpha": fit.alpha}
        self.xmin = fit.xmin
        self.xmax = None
        self.sigma = fit.sigma
        self.standard_err = fit.sigma
        self.D = fit.ks
        self.loglikelihood = fit.loglikelihood
        self.n = fit.n_tail
        self.discrete = fit.discrete
        self.data = fit.tail()

    def pdf(self, data: Any = None) -> np.ndarray:
        """Density (probability mass when discrete) at ``data`` (default: the tail)."""
        return self.fit.pdf(self.data if data is None else data)

    def ccdf(self, data: Any = None) -> np.ndarray:
        """P(X > x) at ``data`` (default: the tail)."""
        return self.fit.ccdf(self.data if data is None else data)

    def cdf(self, data: Any = None, survival: bool = False) -> np.ndarray:
        """P(X <= x) at ``data`` (default: the tail); ``survival=True`` gives the ccdf."""
        return self.ccdf(data) if survival else self.fit.cdf(self.data if data is None else data)

    def loglikelihoods(self, data: Any = None) -> np.ndarray:
        """Log p(x) of each value of ``data`` (default: the tail; all values must be >= xmin)."""
        with np.errstate(divide="ignore"):
            return np.log(self.pdf(data))

    def plot_pdf(self, data: Any = None, ax: Any = None, **kwargs: Any) -> Any:
        """The fitted density over the distinct values of ``data`` (default: the tail)."""
        x = _support(self.data if data is None else data, self.xmin)
        return _plot(x, self.pdf(x), ax, **kwargs)

    def plot_ccdf(
        self, data: Any = None, ax: Any = None, survival: bool = True, **kwargs: Any
    ) -> Any:
        """The fitted ccdf (``survival=False``: cdf) over the distinct values of ``data``."""
        x = _support(self.data if data is None else data, self.xmin)
        return _plot(x, self.cdf(x, survival=survival), ax, **kwargs)

    def plot_cdf(
        self, data: Any = None, ax: Any = None, survival: bool = False, **kwargs: Any
    ) -> Any:
        """The fitted cdf (``survival=True``: ccdf) over the distinct values of ``data``."""
        return self.plot_ccdf(data, ax, survival=survival, **kwargs)


class Alternative:
    """A fitted alternative distribution on the power law's tail.

    A fitted alternative (``fit.lognormal``, ``fit.exponential``, ``fit.stretched_exponential``,
    ``fit.truncated_power_law``) on the power law's tail, by
    :func:`fastspec.stats.alternatives.fit_alternative`.
    """

    def __init__(self, name: str, power_law: PowerLaw) -> None:
        self.name = name
        self.xmin = power_law.xmin
        self.xmax = None
        self.discrete = power_law.discrete
        self.data = power_law.tail()
        self.theta = fit_alternative(
            self.data, self.xmin, name, discrete=self.discrete, power_law=power_law
        )
        self.parameters = dict(zip(PARAMETERS[name], (float(v) for v in self.theta)))
        for i, (key, value) in enumerate(self.parameters.items(), start=1):
            setattr(self, key, value)
            setattr(self, f"parameter{i}", value)
            setattr(self, f"parameter{i}_name", key)
        self.loglikelihood = float(self.loglikelihoods().sum())
        self.n = self.data.size

    def loglikelihoods(self, data: Any = None) -> np.ndarray:
        """Log p(x) of each value of ``data`` (default: the tail; all values must be >= xmin)."""
        x = self.data if data is None else np.asarray(data, dtype=np.float64)
        return loglikelihoods(x, self.xmin, self.name, self.theta, discrete=self.discrete)

    def pdf(self, data: Any = None) -> np.ndarray:
        """Density (probability mass when discrete) at ``data``; 0 below xmin."""
        x = self.data if data is None else np.asarray(data, dtype=np.float64)
        out = np.zeros_like(x)
        on = x >= self.xmin
        out[on] = np.exp(self.loglikelihoods(x[on]))
        return out

    def plot_pdf(self, data: Any = None, ax: Any = None, **kwargs: Any) -> Any:
        """The fitted density over the distinct values of ``data`` (default: the tail)."""
        x = _support(self.data if data is None else data, self.xmin)
        return _plot(x, self.pdf(x), ax, **kwargs)


class Fit:
    """``powerlaw.Fit``: choose xmin and fit a power law to the tail of ``data``.

    the other distributions are fitted on first access (``fit.lognormal``...).

    Args:
        data: [N] values (non-positive ones are dropped with a warning).
        discrete: fit the discrete (Hurwitz-zeta) power law; the data must be integers.
        xmin: None (search every candidate), a number (fixed), or a ``(low, high)`` range
            searched over the data values in ``[low, high)``.
        estimate_discrete: None or True: the package's rule (eq. 3.7 at xmin >= 10, exact MLE
            below); False: the exact MLE everywhere.
        parameter_ranges: ``{'alpha': (low, high)}``: candidates whose alpha falls outside are
            skipped in the xmin search (default (0, 3), the package's).
        verbose: accepted and ignored (fastspec prints nothing).
        Other arguments: as the package; only their defaults are supported.
    """

    supported_distributions: ClassVar[dict[str, type]] = {
        "power_law": Power_Law,
        **{name: Alternative for name in ALTERNATIVES},
    }

    def __init__(
        self,
        data: Any,
        discrete: bool = False,
        xmin: Any = None,
        xmax: Any = None,
        fit_method: str = "likelihood",
        estimate_discrete: bool | None = None,
        discrete_normalization: str = "round",
        sigma_threshold: Any = None,
        initial_parameters: Any = None,
        parameter_ranges: Mapping[str, Any] | None = None,
        parameter_constraints: Any = None,
        xmin_distance: str = "D",
        xmin_distribution: str = "power_law",
        verbose: Any = 1,
    ) -> None:
        _check_supported(
            xmax=xmax, fit_method=fit_method, discrete_normalization=discrete_normalization,
            sigma_threshold=sigma_threshold, initial_parameters=initial_parameters,
            parameter_constraints=parameter_constraints, xmin_distance=xmin_distance,
            xmin_distribution=xmin_distribution,
        )  # fmt: skip
        if estimate_discrete is not None:
            estimate_discrete = check_bool("estimate_discrete", estimate_discrete)
        x = as_float_vector("data", data, min_size=2)
        if (x <= 0).any():
            warnings.warn(
                f"dropping {int((x <= 0).sum())} values <= 0 from data",
                RuntimeWarning,
                stacklevel=2,
            )
            x = x[x > 0]
        self.data_original = data
        self.discrete = check_bool("discrete", discrete)
        self.xmax = None
        self.xmin_distance = "D"
        self.fit_method = "likelihood"
        self.estimate_discrete = estimate_discrete
        alpha_range = _alpha_range(parameter_ranges)
        estimator = "exact" if estimate_discrete is False else "auto"
        options: dict[str, Any] = {
            "discrete": self.discrete, "alpha_range": alpha_range, "discrete_estimator": estimator,
        }  # fmt: skip
        self.fixed_xmin = xmin is not None and not hasattr(xmin, "__iter__")
        if self.fixed_xmin:
            options["xmin"] = xmin
            self.xmin_range: tuple[Any, Any] = (None, None)
        elif xmin is not None:
            low, high = _check_range(xmin)
            self.xmin_range = (low, high)
            cand = np.unique(x[(x >= low) & (x < high)])[:-1]
            if cand.size < 2:
                raise ValueError(
                    f"xmin range ({low}, {high}) holds {cand.size} candidate values; need >= 2"
                )
            options["xmin_candidates"] = cand
        else:
            self.xmin_range = (float(x.min()), float(x.max()))
        self._power_law = PowerLaw.fit(x, **options)
        self.xmin = self._power_law.xmin
        self.data = self._power_law.tail()
        self.n = float(self.data.size)
        self.n_tail = self.n

    # -- the fitted distributions ------------------------------------------------------------

    @functools.cached_property
    def power_law(self) -> Power_Law:
        """The fitted power law."""
        return Power_Law(self._power_law)

    @functools.cached_property
    def lognormal(self) -> Alternative:
        """The lognormal fitted to the tail."""
        return Alternative("lognormal", self._power_law)

    @functools.cached_property
    def exponential(self) -> Alternative:
        """The exponential fitted to the tail."""
        return Alternative("exponential", self._power_law)

    @functools.cached_property
    def stretched_exponential(self) -> Alternative:
        """The stretched exponential fitted to the tail."""
        return Alternative("stretched_exponential", self._power_law)

    @functools.cached_property
    def truncated_power_law(self) -> Alternative:
        """The power law with exponential cutoff fitted to the tail."""
        return Alternative("truncated_power_law", self._power_law)

    @property
    def alpha(self) -> float:
        """The power law's exponent."""
        return self._power_law.alpha

    @property
    def sigma(self) -> float:
        """The standard error of alpha."""
        return self._power_law.sigma

    @property
    def D(self) -> float:  # the original name
        """The KS distance of the power-law fit."""
        return self._power_law.ks

    def distribution(self, name: str) -> Power_Law | Alternative:
        """The KS distance of the power-law fit."""
        """The fitted distribution ``name`` (one of ``supported_distributions``)."""
        if name not in self.supported_distributions:
            raise ValueError(
                f"distribution must be one of {sorted(self.supported_distributions)}, got {name!r}"
            )
        return getattr(self, name)

    def distribution_compare(
        self, dist1: str, dist2: str, nested: bool | None = None, normalized_ratio: bool = False
    ) -> tuple[float, float]:
        """Vuong's likelihood-ratio test on the tail.

        ``(R, p)``, R > 0 favouring ``dist1`` (``normalized_ratio=True``: R / sqrt(n var) instead of
        R). ``nested=None`` treats the pair as nested when one name contains the other (power law in
        truncated power law).
        """
        d1, d2 = self.distribution(dist1), self.distribution(dist2)
        if nested is None:
            nested = dist1 in dist2 or dist2 in dist1
        r, r_norm, p = vuong(d1.loglikelihoods(), d2.loglikelihoods(), nested=bool(nested))
        return (r_norm if normalized_ratio else r), p

    def loglikelihood_ratio(
        self, dist1: str, dist2: str, nested: bool | None = None, normalized_ratio: bool = False
    ) -> tuple[float, float]:
        """Another name for :meth:`distribution_compare` (as in the package)."""
        return self.distribution_compare(dist1, dist2, nested, normalized_ratio)

    # -- empirical distributions and plots -----------------------------------------------------

    def _values(self, original_data: bool) -> np.ndarray:
        if not original_data:
            return self.data
        x = as_float_vector("data", self.data_original, min_size=1)
        return np.sort(x[x > 0])

    def cdf(self, original_data: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(X, F)``.

        the distinct values and the fraction of the data strictly below each (the package's
        convention).
        """
        x = self._values(original_data)
        unique, first = np.unique(x, return_index=True)
        return unique, first / x.size

    def ccdf(self, original_data: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(X, 1 - F)``: the fraction of the data at or above each distinct value."""
        unique, below = self.cdf(original_data)
        return unique, 1.0 - below

    def pdf(
        self, original_data: bool = False, linear_bins: bool = False, bins: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(edges, density)``.

        a normalised histogram, log-spaced bins (10 per decade) unless ``linear_bins`` or ``bins``
        is given.
        """
        x = self._values(original_data)
        lo, hi = float(x.min()), float(x.max())
        if bins is None and linear_bins:
            bins = np.arange(math.floor(lo), math.ceil(hi) + 1)
        elif bins is None:
            decades = math.log10(hi / lo)
            bins = np.logspace(math.log10(lo), math.log10(hi), max(2, math.ceil(10 * decades)))
        density, edges = np.histogram(x, bins, density=True)
        return edges, density

    def plot_cdf(self, original_data: bool = False, ax: Any = None, **kwargs: Any) -> Any:
        """Empirical cdf on log-log axes; returns the matplotlib axes."""
        return _plot(*self.cdf(original_data), ax, **kwargs)

    def plot_ccdf(self, original_data: bool = False, ax: Any = None, **kwargs: Any) -> Any:
        """Empirical ccdf on log-log axes; returns the matplotlib axes."""
        return _plot(*self.ccdf(original_data), ax, **kwargs)

    def plot_pdf(
        self,
        original_data: bool = False,
        linear_bins: bool = False,
        bins: Any = None,
        ax: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Empirical density at the bin centres on log-log axes; returns the matplotlib axes."""
        edges, density = self.pdf(original_data, linear_bins, bins)
        return _plot((edges[1:] + edges[:-1]) / 2, density, ax, **kwargs)


def _support(data: Any, xmin: float) -> np.ndarray:
    x = np.asarray(data, dtype=np.float64)
    return np.unique(x[x >= xmin])


def _plot(x: np.ndarray, y: np.ndarray, ax: Any, **kwargs: Any) -> Any:
    import matplotlib.pyplot as plt

    if ax is None:
        ax = plt.gca()
    ax.plot(x, y, **kwargs)
    ax.set_xscale("log")
    ax.set_yscale("log")
    return ax


def _alpha_range(parameter_ranges: Mapping[str, Any] | None) -> tuple[float, float]:
    if parameter_ranges is None:
        return (0.0, 3.0)
    if not isinstance(parameter_ranges, Mapping) or set(parameter_ranges) != {"alpha"}:
        raise ValueError(
            f"parameter_ranges must be None or {{'alpha': (low, high)}}, got {parameter_ranges!r}"
        )
    low, high = _check_range(parameter_ranges["alpha"], "parameter_ranges['alpha']")
    return (low, high)


def _check_range(value: Any, name: str = "xmin") -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}") from exc
    if not low < high:
        raise ValueError(f"{name} must have low < high, got {value!r}")
    return low, high


def _check_supported(**given: Any) -> None:
    defaults = {
        "xmax": None, "fit_method": "likelihood", "discrete_normalization": "round",
        "sigma_threshold": None, "initial_parameters": None, "parameter_constraints": None,
        "xmin_distance": "D", "xmin_distribution": "power_law",
    }  # fmt: skip
    for name, value in given.items():
        default = defaults[name]
        same = (
            value.lower() == default
            if isinstance(value, str) and isinstance(default, str) and name == "fit_method"
            else value is None
            if default is None
            else value == default
        )
        if not same:
            raise ValueError(
                f"{name}={value!r} is not supported by fastspec.compat.powerlaw.Fit "
                f"(only {default!r}); use the powerlaw package for it"
            )
