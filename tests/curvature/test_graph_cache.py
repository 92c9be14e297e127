"""Cached graphs (``cache_graph``) of the Hessian, GGN and empirical-Fisher operators against
dense oracles and the uncached products."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from curvature_models import batches, dense_hessian, make_data, make_model, rel_err
from torch import nn

from fastspec.curvature import EmpiricalFisherOperator, GGNOperator, HessianOperator, model_operator
from fastspec.curvature.hessian import GradientGraph

TOL = 1e-10


class CountingData:
    """A re-iterable of batches that counts how often it is read."""

    def __init__(self, items: list) -> None:  # type: ignore[type-arg]
        self.items, self.reads = items, 0

    def __iter__(self) -> Iterator:  # type: ignore[type-arg]
        self.reads += 1
        return iter(self.items)


MODELS = ["mlp", "cnn", "embed_layernorm", "transformer"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("cache_graph", [True, False])
def test_cached_and_uncached_match_dense(name: str, cache_graph: bool) -> None:
    model = make_model(name)
    x, y = make_data(name)
    loss = nn.CrossEntropyLoss()
    data = CountingData(batches(x, y, 7))  # 7 + 7 + 6
    op = HessianOperator(model, loss, data, hvp="double_backward", cache_graph=cache_graph)
    reads = data.reads  # the constructor counts the samples
    H = op.to_dense(block_size=5)
    assert op.graph_cached is cache_graph
    assert len(op._graphs) == (3 if cache_graph else 0)
    # cached: the data are read once, on the first product; uncached: once per product
    blocks = -(-op.shape[0] // 5)
    assert data.reads - reads == (1 if cache_graph else blocks)
    assert rel_err(H, dense_hessian(model, loss, x, y)) < TOL
    assert torch.allclose(H, H.T, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("cls", [GGNOperator, EmpiricalFisherOperator])
def test_output_curvature_graphs_match_forward_mode(name: str, cls: type) -> None:
    """GGN / empirical Fisher through kept graphs (``J v`` by the double-backward trick) and
    rebuilt ones give the forward-mode products (themselves checked against dense oracles in
    test_operators.py); kept graphs read the data once."""
    model = make_model(name)
    x, y = make_data(name)
    loss = nn.CrossEntropyLoss()
    forward = cls(model, loss, batches(x, y, 7), jvp="forward")
    V = torch.randn(forward.shape[0], 3, dtype=torch.float64)
    expected = forward.matmat(V)
    assert forward.graph_cached is False and forward._graphs == []
    for cache_graph in (True, False):
        data = CountingData(batches(x, y, 7))
        op = cls(model, loss, data, jvp="double_backward", cache_graph=cache_graph)
        reads = data.reads
        for _ in range(2):
            assert rel_err(op.matmat(V), expected) < TOL
        assert len(op._graphs) == (3 if cache_graph else 0)
        assert data.reads - reads == (1 if cache_graph else 2)


def test_auto_caches_within_the_budget_only(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model("mlp")
    x, y = make_data("mlp", 24)
    data = batches(x, y, 8)
    loss = nn.CrossEntropyLoss()

    def theta(op: HessianOperator) -> dict[str, torch.Tensor]:
        return op._theta

    probe = HessianOperator(model, loss, data)
    per_batch = model_operator.saved_bytes(
        lambda: GradientGraph(lambda t: probe._batch_loss(t, data[0], 8), theta(probe))
    ) + model_operator.nbytes(theta(probe))
    assert per_batch >= x[:8].numel() * 8  # at least the first layer's saved input
    v = torch.randn(probe.shape[0], 2, dtype=torch.float64)
    oracle = dense_hessian(model, loss, x, y) @ v
    for budget, cached in [(3 * per_batch, True), (3 * per_batch - 1, False)]:
        monkeypatch.setattr(model_operator, "GRAPH_CACHE_BYTES", budget)
        op = HessianOperator(model, loss, data, hvp="double_backward")
        assert op.graph_cached is None
        assert rel_err(op.matmat(v), oracle) < TOL
        assert op.graph_cached is cached
        assert len(op._graphs) == (3 if cached else 0)
        assert rel_err(op.matmat(v), oracle) < TOL


def test_auto_method_keeps_graphs_only_for_double_backward() -> None:
    model = make_model("mlp")
    x, y = make_data("mlp")
    op = HessianOperator(model, nn.CrossEntropyLoss(), batches(x, y, 7))
    H = op.to_dense()
    assert rel_err(H, dense_hessian(model, nn.CrossEntropyLoss(), x, y)) < TOL
    if op.method == "double_backward":
        assert op.graph_cached and len(op._graphs) == 3
    else:
        assert op.graph_cached is False and op._graphs == []
    fwd = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), hvp="forward_over_reverse")
    assert fwd.graph_cached is False


def test_train_mode_batchnorm_cached() -> None:
    model = make_model("cnn")
    x, y = make_data("cnn", 12)
    loss = nn.CrossEntropyLoss()
    kwargs = {"mode": "train", "hvp": "double_backward"}
    cached = HessianOperator(model, loss, batches(x, y, 6), cache_graph=True, **kwargs)
    fresh = HessianOperator(model, loss, batches(x, y, 6), cache_graph=False, **kwargs)
    assert rel_err(cached.to_dense(), fresh.to_dense()) < TOL
    assert model.training is False  # the model's own mode is restored


def test_bad_cache_graph_options() -> None:
    model = make_model("mlp")
    x, y = make_data("mlp")
    with pytest.raises(TypeError, match="cache_graph must be True or False"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y), cache_graph="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_graph=True keeps reverse-mode graphs"):
        HessianOperator(
            model, nn.CrossEntropyLoss(), (x, y), cache_graph=True, hvp="forward_over_reverse"
        )
    with pytest.raises(ValueError, match="cache_graph=True keeps reverse-mode graphs: use jvp="):
        GGNOperator(model, nn.CrossEntropyLoss(), (x, y), cache_graph=True, jvp="forward")
    with pytest.raises(ValueError, match="jvp must be one of 'auto', 'double_backward', 'forward'"):
        EmpiricalFisherOperator(model, nn.CrossEntropyLoss(), (x, y), jvp="reverse")
