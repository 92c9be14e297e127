"""Bad inputs to the curvature operators give clear errors naming what is wrong."""

from __future__ import annotations

import pytest
import torch
from curvature_models import make_data, make_model
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastspec.curvature import EmpiricalFisherOperator, GGNOperator, HessianOperator


def mlp_and_data():  # type: ignore[no-untyped-def]
    return make_model("mlp"), make_data("mlp")


def test_empty_data() -> None:
    model, _ = mlp_and_data()
    with pytest.raises(ValueError, match="data is empty"):
        HessianOperator(model, nn.CrossEntropyLoss(), [])
    empty = DataLoader(
        TensorDataset(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)), batch_size=4
    )
    with pytest.raises(ValueError, match="data is empty"):
        HessianOperator(model, nn.CrossEntropyLoss(), empty)


def test_data_must_be_batches() -> None:
    model, (x, _) = mlp_and_data()
    with pytest.raises(TypeError, match="not a single tensor"):
        HessianOperator(model, nn.CrossEntropyLoss(), x)
    with pytest.raises(TypeError, match="data must be iterable"):
        HessianOperator(model, nn.CrossEntropyLoss(), 3)
    with pytest.raises(ValueError, match=r"\(inputs, targets\) pair"):
        HessianOperator(model, nn.CrossEntropyLoss(), [(x,)]).matvec(
            torch.ones(75, dtype=torch.float64)
        )


def test_loss_must_be_a_scalar() -> None:
    model, (x, y) = mlp_and_data()
    with pytest.raises(ValueError, match="reduction 'mean' or 'sum', got 'none'"):
        HessianOperator(model, nn.CrossEntropyLoss(reduction="none"), (x, y))
    op = HessianOperator(model, lambda out, t: (out - 0).pow(2).sum(dim=1), (x, y))
    with pytest.raises(ValueError, match="the loss must be a scalar tensor, got \\(20,\\)"):
        op.matvec(torch.ones(op.shape[0], dtype=torch.float64))


def test_params_that_do_not_belong_or_do_not_require_grad() -> None:
    model, (x, y) = mlp_and_data()
    with pytest.raises(ValueError, match="'nope' is not a parameter of the model"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), params=["nope"])
    with pytest.raises(ValueError, match="not a parameter of the model"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), params=[nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="matches no parameter"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), params=r"^conv")
    model[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"do not require grad: \['0.weight'\]"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), params=["0.weight"])
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))  # default: only trainable ones
    assert "0.weight" not in op.param_names


def test_train_mode_with_dropout_is_refused() -> None:
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    x, y = make_data("mlp")
    with pytest.raises(ValueError, match=r"stochastic layers.*1 \(p=0.5\).*allow_stochastic=True"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), mode="train")
    with pytest.warns(UserWarning, match="evaluates it in eval mode"):  # default policy: eval, said
        op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    v = torch.randn(op.shape[0], dtype=torch.float64)
    assert torch.equal(op.matvec(v), op.matvec(v))  # deterministic: dropout is off
    HessianOperator(model, nn.CrossEntropyLoss(), (x, y), mode="train", allow_stochastic=True)


class _NoSecondDerivative(torch.autograd.Function):
    """Like an ATen op without a double-backward formula (and without a forward-mode rule)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x)
        return x.tanh()

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        if torch.is_grad_enabled():  # create_graph=True: a second derivative is being built
            raise RuntimeError("derivative for opaque_tanh_backward is not implemented")
        (x,) = ctx.saved_tensors
        return g * (1 - x.tanh() ** 2)


class _OpaqueTanh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NoSecondDerivative.apply(x)


def test_layers_without_second_derivatives() -> None:
    model = nn.Sequential(nn.Linear(5, 8), _OpaqueTanh(), nn.Linear(8, 3)).double()
    x, y = make_data("mlp")
    v = torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    with pytest.raises(RuntimeError, match="no Hessian-vector product works for this model"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y)).matvec(v)
    with pytest.raises(
        RuntimeError, match=r"hvp='double_backward' failed.*double-backward support"
    ):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), hvp="double_backward").matvec(v)
    for cls in (GGNOperator, EmpiricalFisherOperator):
        with pytest.raises(RuntimeError, match="no Jacobian-vector product works for this model"):
            cls(model, nn.CrossEntropyLoss(), (x, y)).matvec(v)
        with pytest.raises(RuntimeError, match=r"jvp='forward' failed.*forward-mode support"):
            cls(model, nn.CrossEntropyLoss(), (x, y), jvp="forward").matvec(v)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "training"}, ValueError, "mode must be one of 'eval', 'train'"),
        ({"hvp": "fast"}, ValueError, "hvp must be one of 'auto'"),
        ({"dtype": torch.float16}, TypeError, "dtype must be torch.float32 or torch.float64"),
        ({"max_samples": 0}, ValueError, "max_samples must be >= 1"),
        ({"params": 3}, TypeError, "params must be None, a regex, a list or a predicate"),
    ],
)
def test_bad_options(kwargs, error, match) -> None:  # type: ignore[no-untyped-def]
    model, (x, y) = mlp_and_data()
    with pytest.raises(error, match=match):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), **kwargs)


def test_bad_model_loss_and_block() -> None:
    model, (x, y) = mlp_and_data()
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        HessianOperator(lambda t: t, nn.CrossEntropyLoss(), (x, y))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss_fn must be a callable"):
        HessianOperator(model, "cross_entropy", (x, y))  # type: ignore[arg-type]
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    with pytest.raises(ValueError, match=r"V must be a \[P, B\] = \[75, B\] tensor, got \(74, 2\)"):
        op.matmat(torch.zeros(74, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"V must be torch\.float64"):
        op.matmat(torch.zeros(75, 2, dtype=torch.float32))


def test_ggn_and_fisher_restrictions() -> None:
    model, (x, y) = mlp_and_data()
    with pytest.raises(ValueError, match="batch_loss is not supported"):
        GGNOperator(model, nn.CrossEntropyLoss(), (x, y), batch_loss=lambda m, b: m(b).sum())
    cnn = make_model("cnn")
    xc, yc = make_data("cnn", 4)
    with pytest.raises(ValueError, match="undefined under train-mode BatchNorm"):
        EmpiricalFisherOperator(cnn, nn.CrossEntropyLoss(), (xc, yc), mode="train")


def test_nan_or_inf_data_is_refused_before_any_product() -> None:
    model, (x, y) = mlp_and_data()
    for bad in (float("nan"), float("inf")):
        xb = x.clone()
        xb[3, 1] = bad
        with pytest.raises(ValueError, match="data contains NaN or inf"):
            HessianOperator(model, nn.CrossEntropyLoss(), [(x[:10], y[:10]), (xb, y)])


@pytest.mark.parametrize("hvp", ["auto", "double_backward", "forward_over_reverse"])
def test_data_of_the_wrong_dtype_is_named_not_blamed_on_derivatives(hvp: str) -> None:
    """Integer inputs to a float layer, or float class targets for the cross-entropy, fail in
    the loss itself: the error says so and names the dtypes (not 'a layer lacks ... support')."""
    model, (x, y) = mlp_and_data()
    loss = nn.CrossEntropyLoss()
    for data, dtype in (((x.long(), y), "int64"), ((x, y.double()), r"float64 \[20\]")):
        for cls in (HessianOperator, GGNOperator):
            kwargs = {"hvp": hvp} if cls is HessianOperator else {}
            op = cls(model, loss, data, **kwargs)
            with pytest.raises(TypeError, match=f"loss cannot be evaluated.*{dtype}.*dtypes"):
                op.matvec(torch.ones(op.shape[0], dtype=op.dtype))


@pytest.mark.parametrize(
    ("value", "error"), [(2.7, TypeError), (True, TypeError), ("3", TypeError), (0, ValueError)]
)
def test_max_samples_is_an_int(value: object, error: type) -> None:
    """``max_samples=2.7`` used to become 2 silently."""
    model, data = mlp_and_data()
    with pytest.raises(error, match="max_samples"):
        HessianOperator(model, nn.CrossEntropyLoss(), data, max_samples=value)  # type: ignore[arg-type]
