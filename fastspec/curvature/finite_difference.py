"""Hessian-vector products by central differences of two gradients, with an error estimate.

H v ≈ D(ε) = (g(θ + εv) − g(θ − εv)) / 2ε, g the gradient of the loss. Each product costs two
gradient evaluations and needs the memory of one training step (forward + backward, plus a copy
of θ): no graph of a gradient is built, so any kernel works (flash attention, fused losses) and
so does any sharding that computes gradients.

The step. Taylor expansion gives D(ε) = H v + (ε²/6) ∇³L[v, v, ·] + O(ε⁴) (truncation, growing
as ε²), and rounding: θ ± εv is stored to a relative accuracy u (the unit roundoff of the compute
dtype) and the gradients are computed to about that accuracy, an error of order u·s/ε with s the
scale of the gradient change. With parameters of scale ‖θ‖ the third derivative scales as
‖H v‖/(‖θ‖ ‖v‖)·‖v‖ per unit step, so the sum ε²‖v‖²/‖θ‖² + u/(ε‖v‖/‖θ‖) (relative to ‖H v‖)
is smallest at ε‖v‖ ≈ u^{1/3} ‖θ‖, with relative error ≈ u^{2/3}. Hence

    ε = u^{1/3} · (1 + ‖θ‖) / ‖v‖,

the step of the textbook rule h = u^{1/3}·max(|x|, 1) for central differences, taken along v:
the perturbation is a relative u^{1/3} of the parameters (6.1e-6 in float64, 4.9e-3 in float32),
and the error is about u^{2/3} relative (4e-11 and 2.4e-5).

The error estimate. D(2ε) − D(ε) = 3·(ε²/6)∇³L[v, v, ·] + O(ε⁴) + rounding, and the rounding
part of D(2ε) − D(ε) is at least about that of D(ε) (its terms have independent rounding of
sizes 1 and 1/2): so ‖D(2ε) − D(ε)‖ bounds the error of D(ε) up to the O(ε⁴) terms, with a
factor 3 to spare on truncation. It costs two more gradients per vector.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["any_attention_kernel", "central_difference", "difference", "step_size"]

Params = dict[str, torch.Tensor]


def step_size(theta: Params, v: Params) -> float:
    """``ε = u^{1/3} (1 + ‖θ‖) / ‖v‖`` for the dtype of ``θ`` (see the module docstring).

    Raises:
        ValueError: ``v`` is zero or not finite.
    """
    dtype = next(iter(theta.values())).dtype
    u = torch.finfo(dtype).eps / 2
    theta_norm = math.sqrt(sum(float(t.double().square().sum()) for t in theta.values()))
    v_norm = math.sqrt(sum(float(t.double().square().sum()) for t in v.values()))
    if not math.isfinite(v_norm) or v_norm == 0.0:
        raise ValueError(
            f"a finite-difference product needs a finite non-zero vector, ‖v‖ = {v_norm}"
        )
    return u ** (1 / 3) * (1.0 + theta_norm) / v_norm


def central_difference(
    gradient: Callable[[Params], Params],
    theta: Params,
    v: Params,
    *,
    estimate_error: bool = False,
) -> tuple[Params, float | None]:
    """``(D(ε), error)``: the central-difference Hessian-vector product and its error estimate.

    Args:
        gradient: ``θ → ∇L(θ)`` as a dict like ``theta`` (``None`` entries are zeros).
        theta: the parameters (not modified).
        v: the direction, a dict like ``theta``.
        estimate_error: also compute ``D(2ε)`` and return ``‖D(2ε) − D(ε)‖`` (two more
            gradients); else the error is ``None``.

    Returns:
        ``D(ε)`` as a dict like ``theta``, and the estimate of ``‖D(ε) − H v‖`` (2-norm).
    """
    eps = step_size(theta, v)
    d1 = difference(gradient, theta, v, eps)
    if not estimate_error:
        return d1, None
    return d1, distance(difference(gradient, theta, v, 2 * eps), d1)


def difference(
    gradient: Callable[[Params], Params], theta: Params, v: Params, step: float
) -> Params:
    """``(g(θ + step·v) − g(θ − step·v)) / (2 step)``, a dict like ``theta``."""
    plus = gradient({k: theta[k] + step * v[k] for k in theta})
    minus = gradient({k: theta[k] - step * v[k] for k in theta})
    return {k: (plus[k] - minus[k]) / (2 * step) for k in theta}


def distance(a: Params, b: Params) -> float:
    """``‖a − b‖`` over all entries."""
    return math.sqrt(sum(float((a[k] - b[k]).double().square().sum()) for k in a))


@contextlib.contextmanager
def any_attention_kernel() -> Iterator[None]:
    """Every SDPA kernel allowed again (flash, memory-efficient): gradients need no more."""
    with sdpa_kernel(
        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
         SDPBackend.MATH]
    ):  # fmt: skip
        yield
