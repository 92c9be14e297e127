"""Solvers over a sharded Krylov basis: 2 (and 3) gloo ranks give one process's numbers.

The oracle is the one-process run on the whole operator with the same seed; the operator on
the ranks is either split into per-rank parts whose sum is the operator (``local_matmat``, as
data-parallel operators are) or replicated (the same dense matrix on every rank).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

from fastspec.distributed import resolve_group, shard_range
from fastspec.linalg import LinearOperator, eigsh, slq, trace
from fastspec.linalg.lanczos import driver
from tests.helpers.distributed import run_ranks

P = 301  # odd: uneven slices
SEED = 3


def _matrix(P: int = P) -> torch.Tensor:
    """A symmetric matrix with separated ends and a bulk, ``Q diag(λ) Qᵀ``."""
    gen = torch.Generator().manual_seed(0)
    n_top, n_bot = 12, 8
    evals = torch.cat(
        [
            torch.linspace(20.0, 8.0, n_top),
            torch.linspace(1.0, -1.0, P - n_top - n_bot),
            torch.linspace(-6.0, -12.0, n_bot),
        ]
    ).double()
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=gen, dtype=torch.float64))
    A = (Q * evals) @ Q.T
    return 0.5 * (A + A.T)


def _matrix_repeated() -> torch.Tensor:
    """5 distinct eigenvalues of multiplicity 60: the Krylov space breaks down after 5 steps."""
    gen = torch.Generator().manual_seed(2)
    evals = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64).repeat_interleave(60)
    Q, _ = torch.linalg.qr(torch.randn(300, 300, generator=gen, dtype=torch.float64))
    A = (Q * evals) @ Q.T
    return 0.5 * (A + A.T)


def _part(A: torch.Tensor, rank: int, W: int) -> torch.Tensor:
    """Rank ``rank``'s symmetric share of ``A``: random parts that sum to ``A`` over ``W`` ranks."""
    gen = torch.Generator().manual_seed(1)
    noise = [torch.randn(A.shape, generator=gen, dtype=A.dtype) for _ in range(W - 1)]
    noise = [0.5 * (E + E.T) for E in noise]
    if rank < W - 1:
        return noise[rank]
    return A - sum(noise, torch.zeros_like(A))


class SplitOperator(LinearOperator):
    """``A = Σ_r A_r`` with ``A_r`` on rank ``r``: the data-parallel operator contract."""

    def __init__(self, part: torch.Tensor, process_group: Any) -> None:
        self.shape = (part.shape[0], part.shape[0])
        self.dtype = part.dtype
        self.device = part.device
        self.part = part
        self.process_group = process_group
        self.matmat_calls = 0

    def local_matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.part @ V

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.matmat_calls += 1
        out = self.local_matmat(V)
        dist.all_reduce(out, group=self.process_group)
        return out


def _eigsh_fields(res: Any) -> dict[str, Any]:
    return {
        "values": res.eigenvalues,
        "residuals": res.residuals,
        "converged": res.converged,
        "num_matvecs": res.num_matvecs,
        "num_restarts": res.num_restarts,
        "method": res.method,
    }


def _split_eigsh(rank: int, W: int) -> dict[str, Any]:
    group = resolve_group(None)
    op = SplitOperator(_part(_matrix(), rank, W), group)
    states: list[Any] = []

    class Recorded(driver.LanczosState):
        def release(self) -> None:  # the buffers' sizes at the end of the run
            AV = None if self.AV is None else self.AV.numel()
            states.append({"V": self.V.numel(), "AV": AV, "M": self.M})
            super().release()

    driver.LanczosState = Recorded  # type: ignore[misc]
    out: dict[str, Any] = {}
    for which in ("LA", "SA", "BE", "LM"):
        res = eigsh(op, 6, which=which, seed=SEED, return_eigenvectors=True)
        out[which] = _eigsh_fields(res)
        out[which]["rows"] = (res.sharding.start, res.sharding.stop)
        out[which]["local"] = res.eigenvectors
        out[which]["gathered"] = res.gather_eigenvectors()
        out[which]["at0"] = res.gather_eigenvectors([0, 2], dst=0)
    res = eigsh(op, 5, seed=SEED, store_products=True, block_size=3, return_eigenvectors=True)
    out["stored"] = _eigsh_fields(res)
    out["stored"]["gathered"] = res.gather_eigenvectors()
    out["numel"] = states[-1]
    # breakdown: fresh directions replace the dependent ones, then a confirmation start
    rep = SplitOperator(_part(_matrix_repeated(), rank, W), group)
    res = eigsh(rep, 12, block_size=2, tol=1e-10, seed=0, return_eigenvectors=True)
    out["breakdown"] = _eigsh_fields(res)
    out["breakdown"]["gathered"] = res.gather_eigenvectors()
    out["matmat_calls"] = op.matmat_calls
    return _portable(out)


def _portable(x: Any) -> Any:
    """Tensors as numpy arrays (a rank's tensors cannot outlive its process in a queue)."""
    if isinstance(x, torch.Tensor):
        return x.numpy()
    if isinstance(x, dict):
        return {k: _portable(v) for k, v in x.items()}
    return x


def _tensors(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, dict):
        return {k: _tensors(v) for k, v in x.items()}
    return x


def _run(fn: Any, *args: Any, world_size: int) -> list[Any]:
    return [_tensors(r) for r in run_ranks(fn, *args, world_size=world_size, timeout=240)]


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-10) -> None:
    scale = float(b.abs().max()) if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=rel, atol=rel * scale)


def _same_up_to_sign(X: torch.Tensor, Y: torch.Tensor) -> None:
    signs = torch.sign((X * Y).sum(dim=0))
    _close(X * signs, Y, rel=1e-8)


def _check_eigsh(one: Any, ranks: dict[str, Any]) -> None:
    _close(ranks["values"], one.eigenvalues)
    # relative residuals are ~1e-12 numbers made of rounding: compare them on the scale of tol
    torch.testing.assert_close(ranks["residuals"], one.residuals, rtol=0, atol=1e-10)
    assert torch.equal(ranks["converged"], one.converged)
    assert (ranks["num_matvecs"], ranks["num_restarts"], ranks["method"]) == (
        one.num_matvecs,
        one.num_restarts,
        one.method,
    )


def test_eigsh_split_operator_equals_one_process() -> None:
    A = _matrix()
    results = _run(_split_eigsh, world_size=2)
    for which in ("LA", "SA", "BE", "LM"):
        one = eigsh(A, 6, which=which, seed=SEED, return_eigenvectors=True)
        assert one.method == "block-lanczos" and one.all_converged
        assert one.sharding is None
        for rank, out in enumerate(results):
            got = out[which]
            _check_eigsh(one, got)
            lo, hi = shard_range(P, 2, rank)
            assert got["rows"] == (lo, hi) and got["local"].shape == (hi - lo, 6)
            assert one.eigenvectors is not None
            _same_up_to_sign(got["gathered"], one.eigenvectors)
            _same_up_to_sign(got["local"], one.eigenvectors[lo:hi])
        assert results[0][which]["at0"].shape == (P, 2) and results[1][which]["at0"] is None
        _same_up_to_sign(results[0][which]["at0"], one.eigenvectors[:, [0, 2]])
    one = eigsh(A, 5, seed=SEED, store_products=True, block_size=3, return_eigenvectors=True)
    for out in results:
        _check_eigsh(one, out["stored"])
        assert one.eigenvectors is not None
        _same_up_to_sign(out["stored"]["gathered"], one.eigenvectors)
    one = eigsh(_matrix_repeated(), 12, block_size=2, tol=1e-10, seed=0)
    for out in results:
        got = out["breakdown"]
        assert bool(got["converged"].all())
        _close(got["values"], one.eigenvalues)
        V = got["gathered"]
        torch.testing.assert_close(V.T @ V, torch.eye(12, dtype=torch.float64), atol=1e-12, rtol=0)
        resid = _matrix_repeated() @ V - V * got["values"]
        assert float(resid.norm(dim=0).max()) <= 1e-9
    # every rank read the same reduced numbers, so every rank made the same decisions
    for key in ("LA", "SA", "BE", "LM", "stored", "breakdown"):
        assert torch.equal(results[0][key]["values"], results[1][key]["values"])
    assert all(out["matmat_calls"] == 0 for out in results)  # only local_matmat, reduce-scattered
    # the basis and the stored products hold each rank's slice only: 1/W of one process
    for rank, out in enumerate(results):
        lo, hi = shard_range(P, 2, rank)
        assert out["numel"]["V"] == out["numel"]["M"] * (hi - lo)
        assert out["numel"]["AV"] == out["numel"]["M"] * (hi - lo)
    one_numel = results[0]["numel"]["M"] * P
    assert sum(out["numel"]["V"] for out in results) == one_numel
    assert max(out["numel"]["V"] for out in results) <= one_numel / 2 + results[0]["numel"]["M"]


def _start_vectors() -> torch.Tensor:
    return torch.randn(P, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def _replicated(rank: int, W: int) -> dict[str, Any]:
    A = _matrix()
    out: dict[str, Any] = {}
    res = eigsh(A, 6, which="LA", seed=SEED, return_eigenvectors=True)
    out["eigsh"] = _eigsh_fields(res)
    out["eigsh"]["gathered"] = res.gather_eigenvectors()
    # small P: the dense path, still sharded eigenvectors
    res = eigsh(A[:20, :20].contiguous(), 3, seed=SEED, return_eigenvectors=True)
    out["dense"] = _eigsh_fields(res)
    out["dense"]["local"] = res.eigenvectors
    out["dense"]["gathered"] = res.gather_eigenvectors()
    # start vectors are given whole on every rank
    res = eigsh(A, 6, seed=SEED, v0=_start_vectors(), block_size=3)
    out["v0"] = _eigsh_fields(res)
    # no seed: rank 0's fresh seed is shared, the ranks stay in step
    out["noseed"] = eigsh(A, 4, seed=None).eigenvalues
    return _portable(out)


def test_eigsh_replicated_operator_and_dense_path() -> None:
    A = _matrix()
    results = _run(_replicated, world_size=3)
    one = eigsh(A, 6, which="LA", seed=SEED, return_eigenvectors=True)
    one_dense = eigsh(A[:20, :20].contiguous(), 3, seed=SEED, return_eigenvectors=True)
    assert one_dense.method == "dense"
    assert one.eigenvectors is not None and one_dense.eigenvectors is not None
    one_v0 = eigsh(A, 6, seed=SEED, v0=_start_vectors(), block_size=3)
    for rank, out in enumerate(results):
        _check_eigsh(one_v0, out["v0"])
        _check_eigsh(one, out["eigsh"])
        _same_up_to_sign(out["eigsh"]["gathered"], one.eigenvectors)
        _check_eigsh(one_dense, out["dense"])
        lo, hi = shard_range(20, 3, rank)
        _same_up_to_sign(out["dense"]["local"], one_dense.eigenvectors[lo:hi])
        _same_up_to_sign(out["dense"]["gathered"], one_dense.eigenvectors)
        _close(out["noseed"], torch.linalg.eigvalsh(A).flip(0)[:4], rel=1e-8)
    assert torch.equal(results[0]["noseed"], results[1]["noseed"])


def _estimators(rank: int, W: int) -> dict[str, Any]:
    op = SplitOperator(_part(_matrix(), rank, W), resolve_group(None))
    out: dict[str, Any] = {}
    for method in ("hutch++", "hutchinson"):
        t = trace(op, method=method, num_matvecs=40, seed=SEED, block_size=7)
        out[method] = (t.estimate, t.std_error, t.num_matvecs)
    for reorth in (True, False):
        s = slq(op, num_probes=3, num_steps=25, seed=SEED, reorthogonalize=reorth)
        out[f"slq-{reorth}"] = {"nodes": s.nodes, "weights": s.weights, "lengths": s.lengths}
    return _portable(out)


def test_trace_and_slq_equal_one_process() -> None:
    A = _matrix()
    results = _run(_estimators, world_size=2)
    for method in ("hutch++", "hutchinson"):
        t = trace(A, method=method, num_matvecs=40, seed=SEED, block_size=7)
        for out in results:
            est, err, n = out[method]
            assert n == t.num_matvecs
            assert abs(est - t.estimate) <= 1e-10 * abs(t.estimate)
            assert abs(err - t.std_error) <= 1e-10 * abs(t.std_error)
    for reorth in (True, False):
        s = slq(A, num_probes=3, num_steps=25, seed=SEED, reorthogonalize=reorth)
        for out in results:
            nodes, weights, lengths = out[f"slq-{reorth}"].values()
            assert torch.equal(lengths, s.lengths)
            _close(nodes, s.nodes)
            _close(weights, s.weights, rel=1e-9)


def _mismatch(rank: int, W: int, field: str) -> None:
    n = P + rank if field == "P" else P
    op = SplitOperator(_part(_matrix(n), 0, 1), resolve_group(None))
    if field == "block_size":
        eigsh(op, 4, seed=SEED, block_size=2 + rank)
    elif field == "P":
        eigsh(op, 4, seed=SEED)
    else:
        trace(op, num_matvecs=12, seed=SEED + rank)


@pytest.mark.parametrize("field", ["block_size", "P", "seed"])
def test_ranks_that_disagree_fail_naming_the_field(field: str) -> None:
    with pytest.raises(RuntimeError, match=rf"ranks disagree on {field} \(rank 0: .*, rank 1: "):
        run_ranks(_mismatch, field, world_size=2, timeout=60)


def test_a_different_group_than_the_operators_is_refused() -> None:
    op = SplitOperator(torch.eye(4, dtype=torch.float64), object())
    with pytest.raises(ValueError, match="process_group"):
        trace(op, num_matvecs=6, process_group=object())
