"""P2's three tests of gradient structure on a :class:`~fastspec.grads.GradientRecorder`.

dimension-wise (one gradient across its coordinates), iteration-wise (one coordinate of the
minibatch gradient across iterations) and noise (one coordinate of ξ_t = g_t − ∇L(θ_t) across
iterations). Each runs :func:`fastspec.stats.tail_tests` on the right set of 1-D samples and returns
its :class:`~fastspec.stats.TailTests` (fractions passing the power-law and Gaussian tests, with the
per-sample statistics).

Reference: Z. Xie et al., *On the Overlooked Structure of Stochastic Gradients*, NeurIPS 2023
(a reconstruction: P2's exact protocol could not be read).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fastspec.grads.recorder import GradientRecorder
from fastspec.stats import TailTests, tail_tests

__all__ = ["dimension_wise_test", "iteration_wise_test", "noise_test"]


def dimension_wise_test(recorder_or_gradients: Any, **tail_test_options: Any) -> TailTests:
    """Tail tests of whole gradients across their coordinates, one sample per gradient.

    Args:
        recorder_or_gradients: a :class:`GradientRecorder` (its ``full_gradients``, in step
            order), a [P] gradient, an [S, P] stack of gradients, or a list of 1-D gradients.
        tail_test_options: passed to :func:`fastspec.stats.tail_tests`.
    """
    if isinstance(recorder_or_gradients, GradientRecorder):
        grads = recorder_or_gradients.full_gradients
        if not grads:
            raise ValueError(
                "the recorder holds no full gradients: give it full_gradient_steps and record "
                "at those steps"
            )
        samples: Any = [_numpy(grads[s]) for s in sorted(grads)]
    elif isinstance(recorder_or_gradients, (torch.Tensor, np.ndarray)):
        arr = _numpy(recorder_or_gradients)
        if arr.ndim not in (1, 2):
            raise ValueError(f"gradients must be [P] or [S, P], got shape {arr.shape}")
        samples = arr[None] if arr.ndim == 1 else arr
    elif isinstance(recorder_or_gradients, (list, tuple)):
        samples = [_numpy(g).reshape(-1) for g in recorder_or_gradients]
    else:
        raise TypeError(
            "recorder_or_gradients must be a GradientRecorder, a tensor or a list of gradients, "
            f"got {type(recorder_or_gradients).__name__}"
        )
    return tail_tests(samples, **tail_test_options)


def iteration_wise_test(recorder: GradientRecorder, **tail_test_options: Any) -> TailTests:
    """Tail tests of each sampled coordinate of the minibatch gradient across iterations."""
    _check_recorder(recorder)
    return tail_tests(_series(recorder.minibatch, "iteration-wise"), **tail_test_options)


def noise_test(recorder: GradientRecorder, **tail_test_options: Any) -> TailTests:
    """Tail tests of each sampled coordinate of the noise ξ_t across iterations."""
    _check_recorder(recorder)
    noise = recorder.noise
    if noise is None:
        raise ValueError("the recorder has no noise record: give it loss_fn and data")
    return tail_tests(_series(noise, "noise"), **tail_test_options)


def _check_recorder(recorder: Any) -> None:
    if not isinstance(recorder, GradientRecorder):
        raise TypeError(f"recorder must be a GradientRecorder, got {type(recorder).__name__}")


def _series(rows: torch.Tensor, what: str) -> np.ndarray:
    """[T, C] records → [C, T] samples (one per coordinate)."""
    if rows.shape[0] < 8:
        raise ValueError(f"the {what} test needs at least 8 recorded steps, got {rows.shape[0]}")
    return _numpy(rows).T.copy()


def _numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)
