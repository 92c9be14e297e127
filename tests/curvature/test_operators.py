"""Curvature operators against dense torch.func oracles (float64, <= 1e-10 relative)."""

from __future__ import annotations

import pytest
import torch
from curvature_models import (
    batches,
    dense_hessian,
    finite_difference_hessian,
    flat_fn,
    make_data,
    make_model,
    rel_err,
)
from threads import run_in_threads
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from fastspec.curvature import EmpiricalFisherOperator, GGNOperator, HessianOperator

MODELS = ["mlp", "cnn", "embed_layernorm", "transformer"]
TOL = 1e-10


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("hvp", ["double_backward", "forward_over_reverse"])
def test_hessian_matches_dense(name: str, hvp: str) -> None:
    model = make_model(name)
    x, y = make_data(name)
    loss = nn.CrossEntropyLoss()
    op = HessianOperator(model, loss, batches(x, y, 7), hvp=hvp)  # uneven last batch (20 = 7+7+6)
    assert op.num_samples == 20 and op.method == hvp
    H = op.to_dense()
    assert rel_err(H, dense_hessian(model, loss, x, y)) < TOL
    assert torch.allclose(H, H.T, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_hessian_matches_finite_differences(name: str) -> None:
    """An oracle with no vmap, no forward mode and no double backward."""
    model = make_model(name)
    x, y = make_data(name, 8)
    loss = nn.CrossEntropyLoss()
    H = HessianOperator(model, loss, batches(x, y, 3)).to_dense()
    assert rel_err(H, finite_difference_hessian(model, loss, x, y)) < 1e-7


def test_auto_picks_a_method_and_records_timings() -> None:
    model = make_model("mlp")
    x, y = make_data("mlp")
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    H = op.to_dense()
    assert op.method in ("double_backward", "forward_over_reverse")
    assert set(op.method_timings) == {"double_backward", "forward_over_reverse"}
    assert rel_err(H, dense_hessian(model, nn.CrossEntropyLoss(), x, y)) < TOL


def test_dataloader_sum_reduction_and_matvec_count() -> None:
    model = make_model("mlp")
    x, y = make_data("mlp", 23)
    loader = DataLoader(TensorDataset(x, y), batch_size=5)  # 5+5+5+5+3
    op = HessianOperator(model, nn.CrossEntropyLoss(reduction="sum"), loader)
    H = op.to_dense(block_size=16)
    assert op.num_matvecs == op.shape[0]
    oracle = dense_hessian(model, nn.CrossEntropyLoss(reduction="sum"), x, y, scale=1 / 23)
    assert rel_err(H, oracle) < TOL


def test_mse_loss_and_generator_data() -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    x = torch.randn(12, 5, dtype=torch.float64)
    y = torch.randn(12, 2, dtype=torch.float64)
    op = HessianOperator(
        model, nn.MSELoss(), ((x[i : i + 4], y[i : i + 4]) for i in range(0, 12, 4))
    )
    assert rel_err(op.to_dense(), dense_hessian(model, nn.MSELoss(), x, y)) < TOL
    assert rel_err(op.to_dense(), dense_hessian(model, nn.MSELoss(), x, y)) < TOL  # re-iterable


@pytest.mark.parametrize(
    "params",
    [r"^2\.", ["2.weight", "2.bias"], lambda name, p: name.startswith("2.")],
    ids=["regex", "names", "predicate"],
)
def test_parameter_subset(params) -> None:  # type: ignore[no-untyped-def]
    model = make_model("mlp")
    x, y = make_data("mlp")
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), params=params)
    assert op.param_names == ["2.weight", "2.bias"] and op.shape == (27, 27)
    oracle = dense_hessian(model, nn.CrossEntropyLoss(), x, y, names=["2.weight", "2.bias"])
    assert rel_err(op.to_dense(), oracle) < TOL


def test_parameter_tensors_select_too() -> None:
    model = make_model("mlp")
    x, y = make_data("mlp")
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), params=[model[0].bias])
    assert op.param_names == ["0.bias"]


def test_float32_model_evaluated_in_float64() -> None:
    model = make_model("mlp").float()
    x, y = make_data("mlp")
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x.float(), y), dtype=torch.float64)
    assert op.dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32  # the model is not modified
    oracle = dense_hessian(make_model("mlp"), nn.CrossEntropyLoss(), x, y)
    # same weights rounded to float32 once: agreement to float32 resolution of the weights
    assert rel_err(op.to_dense(), oracle) < 1e-5


def test_max_samples_uses_the_first_samples() -> None:
    model = make_model("mlp")
    x, y = make_data("mlp")
    op = HessianOperator(model, nn.CrossEntropyLoss(), batches(x, y, 7), max_samples=10)
    assert op.num_samples == 10
    assert rel_err(op.to_dense(), dense_hessian(model, nn.CrossEntropyLoss(), x[:10], y[:10])) < TOL


def test_batch_loss_hook_with_dict_batches() -> None:
    model = make_model("embed_layernorm")
    x, y = make_data("embed_layernorm")
    data = [{"tokens": x[i : i + 8], "labels": y[i : i + 8]} for i in range(0, 20, 8)]

    def batch_loss(m, batch):  # type: ignore[no-untyped-def]
        return nn.functional.cross_entropy(m(batch["tokens"]), batch["labels"])

    op = HessianOperator(model, None, data, batch_loss=batch_loss)
    assert rel_err(op.to_dense(), dense_hessian(model, nn.CrossEntropyLoss(), x, y)) < TOL


def test_train_mode_batchnorm_uses_batch_statistics() -> None:
    model = make_model("cnn")
    x, y = make_data("cnn", 12)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op = HessianOperator(model, nn.CrossEntropyLoss(), batches(x, y, 6), mode="train")
    H = op.to_dense()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    assert not model.training
    model.train()  # the oracle: batch statistics (it updates the running statistics itself)
    oracle = sum(
        dense_hessian(model, nn.CrossEntropyLoss(), x[i : i + 6], y[i : i + 6], scale=0.5)
        for i in (0, 6)
    )
    model.load_state_dict(before)
    model.eval()
    assert rel_err(H, oracle) < TOL
    assert (
        rel_err(H, HessianOperator(model, nn.CrossEntropyLoss(), batches(x, y, 6)).to_dense())
        > 1e-3
    )


def test_training_flags_are_restored() -> None:
    model = make_model("cnn")
    model.train()
    model.head.eval()  # mixed flags
    x, y = make_data("cnn", 6)
    with pytest.warns(UserWarning, match="evaluates it in eval mode"):
        op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    op.matvec(torch.ones(op.shape[0], dtype=torch.float64))
    assert model.training and model.bn.training and not model.head.training


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("jvp", ["double_backward", "forward"])
def test_ggn_matches_dense(name: str, jvp: str) -> None:
    model = make_model(name)
    x, y = make_data(name, 10)
    loss = nn.CrossEntropyLoss()
    op = GGNOperator(model, loss, batches(x, y, 4), jvp=jvp)
    G = op.to_dense()
    assert op.method == jvp and op.graph_cached is (jvp == "double_backward")
    state, theta = flat_fn(model, [n for n, _ in model.named_parameters()])
    J = torch.func.jacrev(lambda t: functional_call(model, state(t), (x,)))(theta)  # [N, C, P]
    z = functional_call(model, state(theta), (x,))
    Hz = torch.func.hessian(lambda out: loss(out, y))(z)  # [N, C, N, C]
    oracle = torch.einsum("iap,iajb,jbq->pq", J, Hz, J)
    assert rel_err(G, oracle) < TOL
    assert torch.linalg.eigvalsh(G).min() > -1e-12  # PSD for a convex loss


def test_ggn_equals_hessian_for_a_linear_model_with_mse() -> None:
    model = nn.Linear(4, 2).double()
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
    G = GGNOperator(model, nn.MSELoss(), (x, y)).to_dense()
    H = HessianOperator(model, nn.MSELoss(), (x, y)).to_dense()
    assert rel_err(G, H) < TOL


def _per_sample_fisher(model: nn.Module, loss, x, y) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """(1/N) Σ ∇ℓ_j ∇ℓ_jᵀ from a loop of one-sample autograd gradients."""
    params = list(model.parameters())
    grads = []
    for i in range(len(x)):
        g = torch.autograd.grad(loss(model(x[i : i + 1]), y[i : i + 1]), params)
        grads.append(torch.cat([t.reshape(-1) for t in g]))
    G = torch.stack(grads)
    return G.T @ G / len(x)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("jvp", ["double_backward", "forward"])
def test_empirical_fisher_matches_per_sample_loop(name: str, reduction: str, jvp: str) -> None:
    model = make_model(name)
    x, y = make_data(name, 9)
    loss = nn.CrossEntropyLoss(reduction=reduction)
    F = EmpiricalFisherOperator(model, loss, batches(x, y, 4), jvp=jvp).to_dense()  # 4 + 4 + 1
    assert rel_err(F, _per_sample_fisher(model, loss, x, y)) < TOL


def test_empirical_fisher_with_vector_targets() -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(11, 5, dtype=torch.float64)
    y = torch.randn(11, 3, dtype=torch.float64)
    F = EmpiricalFisherOperator(model, nn.MSELoss(), batches(x, y, 5)).to_dense()
    assert rel_err(F, _per_sample_fisher(model, nn.MSELoss(), x, y)) < TOL


def test_blocks_in_any_layout_give_the_same_product() -> None:
    model = make_model("cnn")
    x, y = make_data("cnn")
    op = HessianOperator(model, nn.CrossEntropyLoss(), batches(x, y, 7))
    rows = torch.randn(3, op.shape[0], dtype=torch.float64)
    out_rows = op.matmat(rows.mT)  # eigsh's layout: basis rows, transposed
    out_cols = op.matmat(rows.mT.contiguous())
    assert out_rows.shape == out_cols.shape == (op.shape[0], 3)
    assert out_rows.mT.is_contiguous()
    assert torch.equal(out_rows, out_cols)
    assert rel_err(out_rows[:, 1], op.matvec(rows[1].clone())) < TOL


def test_products_restore_the_attention_fast_path_flag() -> None:
    """Products switch PyTorch's fused-attention fast path off (it has no forward-mode AD) and
    restore the caller's setting, also when the model raises."""
    model = make_model("transformer")
    x, y = make_data("transformer", 6)
    op = GGNOperator(model, nn.CrossEntropyLoss(), (x, y))
    v = torch.randn(op.shape[0], dtype=torch.float64)
    for setting in (True, False):
        torch.backends.mha.set_fastpath_enabled(setting)
        try:
            op.matvec(v)
            assert torch.backends.mha.get_fastpath_enabled() is setting
            broken = nn.Sequential(model, nn.Linear(5, 2)).double()  # 3 outputs into a Linear(5)
            bad = GGNOperator(broken, nn.CrossEntropyLoss(), (x, y))
            with pytest.raises(TypeError, match="shapes cannot be multiplied"):
                bad.matvec(torch.zeros(bad.shape[0], dtype=torch.float64))
            assert torch.backends.mha.get_fastpath_enabled() is setting
        finally:
            torch.backends.mha.set_fastpath_enabled(True)


def test_products_in_threads() -> None:
    """GGN products (torch.func's forward mode, which the attention fast path lacks) on a
    transformer from several threads, some building new operators on the same model meanwhile:
    passes run one at a time and constructors read the model's own parameters, so all products
    are right (without the lock, one thread hit an internal assertion of torch.func and another
    got wrong numbers), and the caller's fast-path setting is back afterwards."""
    model = make_model("transformer")
    x, y = make_data("transformer", 6)
    op = GGNOperator(model, nn.CrossEntropyLoss(), (x, y))
    v = torch.randn(op.shape[0], 2, dtype=torch.float64)
    expected = op.matmat(v)

    def run() -> None:
        for _ in range(5):
            torch.testing.assert_close(op.matmat(v), expected, rtol=1e-12, atol=1e-14)
            fresh = GGNOperator(model, nn.CrossEntropyLoss(), (x, y))
            torch.testing.assert_close(fresh.matmat(v), expected, rtol=1e-12, atol=1e-14)

    torch.backends.mha.set_fastpath_enabled(True)
    try:
        run_in_threads(run)
        assert torch.backends.mha.get_fastpath_enabled() is True
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
