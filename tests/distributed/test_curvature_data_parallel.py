"""Data-parallel curvature operators on 2 gloo ranks against one process over the union of shards.

The data are split unevenly (3 batches on rank 0, 2 on rank 1, batches of uneven sizes); the
dense operator, eigsh (top and bottom), the trace and SLQ must equal one process to 1e-10 in
float64, and ranks that disagree must fail with the field they disagree on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from curvature_models import make_data, make_model
from distributed import run_ranks
from torch import nn

from fastspec.curvature import (
    EmpiricalFisherOperator,
    GGNOperator,
    HessianOperator,
    hessian_density,
    hessian_eigs,
    hessian_trace,
)
from fastspec.linalg import eigsh, slq, trace

TOL = 1e-10
SIZES = [9, 7, 10, 6, 8]  # batches 0-2 on rank 0, 3-4 on rank 1: 26 and 14 samples
OPERATORS = {"hessian": HessianOperator, "ggn": GGNOperator, "fisher": EmpiricalFisherOperator}


def _union() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = make_data("mlp", sum(SIZES), seed=3)
    out, start = [], 0
    for n in SIZES:
        out.append((x[start : start + n], y[start : start + n]))
        start += n
    return out


def _shard(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    union = _union()
    return union[:3] if rank == 0 else union[3:]


def _spectra(op: Any, low: Any) -> dict[str, Any]:
    """Everything compared: the dense matrix, eigsh both ends, Hutch++, Hutchinson and SLQ.

    As numpy arrays: tensors sent from a rank that has exited cannot be received. The bottom
    pairs are those of ``low`` (see :func:`_build`).
    """
    top = eigsh(op, 4, tol=1e-10, seed=1)
    bottom = eigsh(low, 3, which="SA", tol=1e-8, seed=2)
    hpp = trace(op, method="hutch++", num_matvecs=24, seed=3)
    hutch = trace(op, method="hutchinson", num_matvecs=10, seed=4)
    density = slq(op, num_probes=2, num_steps=20, seed=5)
    return {
        "dense": op.to_dense().numpy(),
        "top": top.eigenvalues.numpy(),
        "bottom": bottom.eigenvalues.numpy(),
        "hutch++": np.array([hpp.estimate, hpp.std_error]),
        "hutchinson": np.array([hutch.estimate, hutch.std_error]),
        "slq_nodes": density.nodes.numpy(),
        "slq_weights": density.weights.numpy(),
        "num_samples": op.num_samples,
        "bottom_residuals": bottom.residuals.numpy(),
    }


def _build(name: str, data: Any) -> dict[str, Any]:
    """The spectra of ``name`` on ``data``; its bottom pairs are certified ones.

    Under the cross-entropy the GGN and the empirical Fisher have a null space (the logits'
    shift), whose zero eigenvalues no residual relative to |λ| certifies: their bottom pairs are
    taken of the squared loss on one-hot targets, for the last layer's weight (24 parameters,
    no null space). The Hessian's bottom eigenvalues are negative and certified as they are.
    """
    model, cls = make_model("mlp"), OPERATORS[name]
    op = cls(model, nn.CrossEntropyLoss(), data)
    if name == "hessian":
        return _spectra(op, op)
    squared = [(x, nn.functional.one_hot(y, 3).double()) for x, y in data]
    return _spectra(op, cls(model, nn.MSELoss(), squared, params=r"^2\.weight"))


def _all_operators(rank: int, world_size: int) -> dict[str, Any]:
    op = HessianOperator(make_model("mlp"), nn.CrossEntropyLoss(), _shard(rank))
    assert op.process_group is dist.group.WORLD and op.local_samples == (26 if rank == 0 else 14)
    return {name: _build(name, _shard(rank)) for name in OPERATORS}


@pytest.fixture(scope="module")
def two_ranks() -> list[dict[str, Any]]:
    return run_ranks(_all_operators, timeout=300)


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name", list(OPERATORS))
def test_two_ranks_equal_one_process_over_the_union(
    name: str, two_ranks: list[dict[str, Any]]
) -> None:
    one = _build(name, _union())
    assert one["num_samples"] == sum(SIZES)
    assert (one["bottom_residuals"] < 1e-8).all()  # certified: a comparison that means something
    for rank in range(2):
        got = two_ranks[rank][name]
        assert got["num_samples"] == sum(SIZES)
        for key in ("dense", "top", "bottom", "hutch++", "hutchinson", "slq_nodes", "slq_weights"):
            assert _rel(got[key], one[key]) < TOL, (rank, key, _rel(got[key], one[key]))


def _api(rank: int, world_size: int) -> dict[str, Any]:
    model, loss = make_model("mlp"), nn.CrossEntropyLoss()
    group = dist.new_group([0, 1])  # an explicit group takes the same path as the default one
    data = _shard(rank)
    eig = hessian_eigs(model, loss, data, 3, tol=1e-10, seed=0, process_group=group)
    tr = hessian_trace(model, loss, data, num_matvecs=12, seed=None, process_group=group)
    dens = hessian_density(model, loss, data, num_probes=1, num_steps=10, seed=7)
    return {"eig": eig.eigenvalues.numpy(), "trace": tr.estimate, "nodes": dens.nodes.numpy()}


def test_public_calls_pass_the_group_and_share_an_unseeded_draw() -> None:
    r0, r1 = run_ranks(_api, timeout=180)
    model, loss = make_model("mlp"), nn.CrossEntropyLoss()
    one = hessian_eigs(model, loss, _union(), 3, tol=1e-10, seed=0)
    assert _rel(r0["eig"], one.eigenvalues) < TOL and _rel(r1["eig"], one.eigenvalues) < TOL
    nodes = hessian_density(model, loss, _union(), num_probes=1, num_steps=10, seed=7).nodes
    assert _rel(r0["nodes"], nodes) < TOL
    # seed=None: rank 0's fresh seed is used by both ranks, so both estimate the same trace
    assert r0["trace"] == r1["trace"]


def _disagree(rank: int, world_size: int, what: str) -> None:
    model, loss = make_model("mlp"), nn.CrossEntropyLoss()
    options: dict[str, Any] = {}
    data = _shard(rank)
    if rank == 1 and what == "params":
        options["params"] = r"^0\."
    if rank == 1 and what == "dtype":
        options["dtype"] = torch.float32
    if rank == 1 and what == "weights":
        with torch.no_grad():
            model[0].weight.add_(1e-3)
    if rank == 1 and what == "nan":
        data = [(torch.full_like(data[0][0], float("nan")), data[0][1])]
    op = HessianOperator(model, loss, data, **options)
    op.matmat(torch.zeros(op.shape[0], 2 + (rank if what == "block" else 0), dtype=op.dtype))


@pytest.mark.parametrize(
    "what, message",
    [
        ("params", r"ranks disagree on num_params \(rank 0: 75, rank 1: 48\)"),
        ("dtype", r"ranks disagree on dtype \(rank 0: 'float64', rank 1: 'float32'\)"),
        ("weights", r"ranks disagree on the parameter values"),
        ("block", r"first product\): ranks disagree on block_size \(rank 0: 2, rank 1: 3\)"),
        ("nan", r"rank 1 of 2 failed reading its data: ValueError: data contains NaN"),
    ],
)
def test_ranks_that_disagree_fail_with_the_field(what: str, message: str) -> None:
    with pytest.raises(RuntimeError, match=message) as info:
        run_ranks(_disagree, what, timeout=120)
    assert "rank 0 failed" in str(info.value) and "rank 1 failed" in str(info.value)
