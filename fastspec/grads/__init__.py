"""Per-sample gradients, their Gram matrix, gradient covariance spectra and P2's tests.

Per-sample gradients, their Gram matrix without forming N × P, the covariance spectrum of stochastic
gradients, and P2's tests of gradient structure (Xie et al., *On the Overlooked Structure of
Stochastic Gradients*, NeurIPS 2023).
"""

from fastspec.grads.fallback import FallbackWarning
from fastspec.grads.gram import GramOperator, gradient_gram
from fastspec.grads.per_sample import per_sample_gradients
from fastspec.grads.problem import GradientPlan, gradient_plan
from fastspec.grads.recorder import GradientRecorder
from fastspec.grads.spectrum import CovarianceSpectrum, gradient_covariance_spectrum
from fastspec.grads.tails import dimension_wise_test, iteration_wise_test, noise_test

__all__ = [
    "CovarianceSpectrum",
    "FallbackWarning",
    "GradientPlan",
    "GradientRecorder",
    "GramOperator",
    "dimension_wise_test",
    "gradient_covariance_spectrum",
    "gradient_gram",
    "gradient_plan",
    "iteration_wise_test",
    "noise_test",
    "per_sample_gradients",
]
