"""Special functions the alternative distributions need, in log form and without mpmath.

* ``log_upper_gamma_scaled(a, z)`` = log I(a, z) with I(a, z) = int_0^inf exp(a w - z (e^w - 1)) dw
  = Gamma(a, z) z^-a e^z: the normaliser of the truncated power law for any real a (the ``powerlaw``
  package calls ``mpmath.gammainc``). Stable at z -> 0 (I(a, 0) = -1/a for a < 0), where the
  truncated power law becomes the power law.
* ``log_lerch_phi(lam, alpha, q)`` = log sum_{k>=0} e^(-lam k) (q + k)^(-alpha): the normaliser of
  the discrete truncated power law (the package calls ``mpmath.lerchphi``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = ["log_lerch_phi", "log_upper_gamma_scaled"]


def log_upper_gamma_scaled(a: float, z: float) -> float:
    """Log of I(a, z) = Gamma(a, z) z^(-a) e^z for real a and z >= 0 (+inf where it diverges)."""
    if z < 0 or math.isnan(a) or math.isnan(z):
        return math.nan
    if z == 0.0:
        return -math.log(-a) if a < 0 else math.inf
    if a > z:  # the integrand peaks inside (0, inf): use the regularised gamma function
        qreg = float(special.gammaincc(a, z))
        if qreg > 0:
            return float(special.gammaln(a) + math.log(qreg) - a * math.log(z) + z)
    # a <= z: exp(a w - z (e^w - 1)) is log-concave with its maximum 1 at w = 0
    from scipy import integrate  # imported on use: keeps `import fastspec` light

    def integrand(w: float) -> float:
        return math.exp(a * w - z * math.expm1(w)) if w < 700 else 0.0

    # it decays at least like exp(-(z - a) w), and double-exponentially beyond w ~ log(1/z)
    split = max(1.0, math.log1p(40.0 / z))
    if z > a:
        split = min(split, 40.0 / (z - a))
    head, _ = integrate.quad(integrand, 0.0, split, epsabs=0.0, epsrel=1e-13, limit=200)
    rest, _ = integrate.quad(
        integrand, split, math.inf, epsabs=1e-16 * head, epsrel=1e-13, limit=200
    )
    return math.log(head + rest)


_EM_TERMS = 64  # terms summed directly before the Euler-Maclaurin remainder
# Euler-Maclaurin: sum_{k>=K} f(k) = int_K^inf f + f(K)/2 - sum_j B_2j/(2j)! f^(2j-1)(K)
_EM_COEF = {1: 1.0 / 12.0, 3: -1.0 / 720.0, 5: 1.0 / 30240.0, 7: -1.0 / 1209600.0}


def log_lerch_phi(lam: float, alpha: float, q: float) -> float:
    """Log of the Lerch transcendent Phi(e^-lam, alpha, q).

    Log Phi(e^-lam, alpha, q) = log sum_{k>=0} e^(-lam k) (q + k)^(-alpha), lam >= 0, q > 0 (+inf
    where the sum diverges: lam = 0 and alpha <= 1).
    """
    if lam < 0 or q <= 0 or math.isnan(lam) or math.isnan(alpha):
        return math.nan
    if lam == 0.0:
        return float(np.log(special.zeta(alpha, q))) if alpha > 1 else math.inf
    k = np.arange(_EM_TERMS, dtype=np.float64)
    logs = -lam * k - alpha * np.log(q + k)
    top = float(logs.max())
    head = float(np.exp(logs - top).sum())
    big_k = float(_EM_TERMS)
    s = q + big_k
    # remainder relative to f(K) = e^(-lam K) s^(-alpha): integral + Euler-Maclaurin corrections
    log_fk = -lam * big_k - alpha * math.log(s)
    integral = math.exp(math.log(s) + log_upper_gamma_scaled(1.0 - alpha, lam * s))  # / f(K)
    corr = 0.5
    for j, c in _EM_COEF.items():
        # f^(j)(K) / f(K) = sum_i C(j, i) (-lam)^(j-i) (-1)^i (alpha)_i s^-i  (Leibniz)
        deriv = sum(
            math.comb(j, i) * (-lam) ** (j - i) * (-1) ** i * special.poch(alpha, i) * s**-i
            for i in range(j + 1)
        )
        corr -= c * deriv
    rest = integral + corr
    return top + math.log(head + math.exp(log_fk - top) * rest)
