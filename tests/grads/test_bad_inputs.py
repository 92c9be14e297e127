"""Clear errors for inputs the gradient analyses cannot handle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from grads_models import make_case
from grads_oracle import loop_gradients
from torch import nn

from fastspec.grads import (
    GradientRecorder,
    dimension_wise_test,
    gradient_covariance_spectrum,
    gradient_gram,
    iteration_wise_test,
    noise_test,
    per_sample_gradients,
)


def test_train_mode_batchnorm_is_refused() -> None:
    model, x, y, loss = make_case("norms")
    with pytest.raises(ValueError, match="not defined under train-mode BatchNorm"):
        per_sample_gradients(model, loss, x, y, mode="train")
    model.bn1 = nn.BatchNorm1d(4, track_running_stats=False).double()
    with pytest.raises(ValueError, match="track_running_stats=False"):
        gradient_gram(model, loss, (x, y))


def test_empty_and_mismatched_data() -> None:
    model, x, y, loss = make_case("linear")
    with pytest.raises(ValueError, match="empty"):
        per_sample_gradients(model, loss, x[:0], y[:0])
    with pytest.raises(ValueError, match="empty"):
        gradient_gram(model, loss, [])
    with pytest.raises(ValueError, match="same number of samples"):
        per_sample_gradients(model, loss, x, y[:-1])
    with pytest.raises(ValueError, match="same number of samples"):
        gradient_covariance_spectrum(model, loss, [(x, y), (x[:3], y[:2])])
    with pytest.raises(TypeError, match="targets must be a tensor"):
        per_sample_gradients(model, loss, x, [0] * 9)  # type: ignore[arg-type]


def test_losses_that_hide_per_sample_terms() -> None:
    model, x, y, _ = make_case("linear_seq")

    def per_token(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.flatten(0, 1), t.flatten(), reduction="none")

    with pytest.raises(ValueError, match="one number for a one-sample batch"):
        per_sample_gradients(model, per_token, x, y)
    with pytest.raises(ValueError, match="one number for a one-sample batch"):
        gradient_gram(model, per_token, (x, y))
    # one term per sample (reduction='none' on classification) is the per-sample loss itself
    model, x, y, _ = make_case("linear")
    none = nn.CrossEntropyLoss(reduction="none")
    got = per_sample_gradients(model, none, x, y)
    torch.testing.assert_close(got, loop_gradients(model, nn.CrossEntropyLoss(), x, y))


def test_bad_arguments() -> None:
    model, x, y, loss = make_case("linear")
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        per_sample_gradients(lambda t: t, loss, x, y)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss_fn must be a callable"):
        gradient_gram(model, None, (x, y))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be"):
        gradient_gram(model, loss, (x, y), mode="test")
    with pytest.raises(ValueError, match="k must be at most min"):
        gradient_covariance_spectrum(model, loss, (x, y), k=10)
    with pytest.raises(ValueError, match="k must be >= 1"):
        gradient_covariance_spectrum(model, loss, (x, y), k=0)
    with pytest.raises(ValueError, match="method must be"):
        gradient_covariance_spectrum(model, loss, (x, y), method="arpack")
    with pytest.raises(ValueError, match="needs k < N"):
        gradient_covariance_spectrum(model, loss, (x, y), method="lanczos")
    with pytest.raises(ValueError, match="exceeds gram_max_bytes"):
        gradient_covariance_spectrum(model, loss, (x, y), gram_max_bytes=100)
    with pytest.raises(ValueError, match="noise_batch_size must be >= 1"):
        gradient_covariance_spectrum(model, loss, (x, y), noise_batch_size=0)
    with pytest.raises(ValueError, match="centred"):
        gradient_covariance_spectrum(model, loss, (x, y), noise_batch_size=8, center=False)
    with pytest.raises(ValueError, match="chunk_size"):
        gradient_gram(model, loss, (x, y), chunk_size=0)
    with pytest.raises(ValueError, match="matches no parameter"):
        gradient_gram(model, loss, (x, y), params="nothing")


def test_recorder_misuse() -> None:
    model, x, y, loss = make_case("linear")
    with pytest.raises(ValueError, match="both loss_fn and data"):
        GradientRecorder(model, loss_fn=loss)
    with pytest.raises(ValueError, match="num_coordinates"):
        GradientRecorder(model, num_coordinates=0)
    rec = GradientRecorder(model, num_coordinates=5)
    with pytest.raises(ValueError, match=r"after loss\.backward"):
        rec.record(0)
    loss(model(x), y).backward()
    for step in range(3):
        rec.record(step)
    with pytest.raises(ValueError, match="at least 8 recorded steps"):
        iteration_wise_test(rec)
    with pytest.raises(ValueError, match="no noise record"):
        noise_test(rec)
    with pytest.raises(ValueError, match="no full gradients"):
        dimension_wise_test(rec)
    with pytest.raises(TypeError, match="GradientRecorder"):
        iteration_wise_test(rec.minibatch)  # type: ignore[arg-type]


def test_nan_data_is_named_before_any_gradient() -> None:
    """NaN data used to surface as 'ill-conditioned or too many repeated eigenvalues'."""
    model, x, y, loss = make_case("linear")
    x = x.clone()
    x[2, 0] = float("nan")
    with pytest.raises(ValueError, match="data contains NaN or inf"):
        gradient_covariance_spectrum(model, loss, (x, y))
    with pytest.raises(ValueError, match="data contains NaN or inf"):
        per_sample_gradients(model, loss, x, y)
    with pytest.raises(ValueError, match="data contains NaN or inf"):
        GradientRecorder(model, loss_fn=loss, data=(x, y))


def test_data_of_the_wrong_dtype_is_named() -> None:
    model, x, y, loss = make_case("linear")
    with pytest.raises(TypeError, match=r"loss cannot be evaluated.*int64.*dtypes"):
        gradient_covariance_spectrum(model, loss, (x.long(), y))
    with pytest.raises(TypeError, match=r"loss cannot be evaluated.*dtypes"):
        per_sample_gradients(model, loss, x, y.to(x.dtype))


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("memory_budget", -1, ValueError),
        ("memory_budget", 2.5, TypeError),
        ("gram_max_bytes", -1, ValueError),
        ("tol", 2.0, ValueError),
        ("center", "yes", TypeError),
        ("seed", 1.5, TypeError),
    ],
)
def test_spectrum_options_are_checked(option: str, value: object, error: type) -> None:
    model, x, y, loss = make_case("linear")
    with pytest.raises(error, match=option):
        gradient_covariance_spectrum(model, loss, (x, y), **{option: value})  # type: ignore[arg-type]
