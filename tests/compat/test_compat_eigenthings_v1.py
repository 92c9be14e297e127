"""fastspec.compat.eigenthings (hessian-eigenthings 1.0's API) against the installed original
(hessian-eigenthings 1.0.0a5) and dense oracles: the Hessian by autograd, the GGN as JᵀH_zJ from
torch.func Jacobians, the empirical Fisher from a loop of single-sample gradients."""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from curvature_models import batches, dense_hessian, flat_fn, make_data, make_model
from torch import nn
from torch.func import functional_call, jacrev

import fastspec.compat.eigenthings as fe

LOSS = nn.CrossEntropyLoss()


@pytest.fixture(scope="module")
def problem() -> dict[str, Any]:
    model = make_model("mlp")  # P = 75, float64, eval mode
    x, y = make_data("mlp", n=48)
    H = dense_hessian(model, LOSS, x, y)
    return {"model": model, "x": x, "y": y, "H": H, "evals": torch.linalg.eigvalsh(H)}


def _ordered(evals: torch.Tensor, which: str, k: int) -> torch.Tensor:
    key = {"LM": -evals.abs(), "LA": -evals, "SA": evals}[which]
    return evals[torch.argsort(key)][:k]


@pytest.mark.parametrize("which", ["LM", "LA", "SA"])
def test_lanczos_matches_dense_and_original(problem: dict[str, Any], which: str) -> None:
    """Same result type, shapes, dtype and order as the original; eigenvalues equal to the dense
    ones and to the original's run to full Krylov dimension; reported residuals are the true
    ‖Hv − λv‖ of the returned vectors."""
    model, x, y, H = problem["model"], problem["x"], problem["y"], problem["H"]
    data = batches(x, y, 16)
    op = fe.HessianOperator(model, data, fe.supervised_loss(LOSS))
    assert op.size == 75 and op.dtype == torch.float64 and op.device == torch.device("cpu")
    res = fe.lanczos(op, k=4, which=which, tol=1e-10, seed=0)
    assert isinstance(res, fe.EigenResult)
    assert res.eigenvalues.shape == (4,) and res.eigenvectors.shape == (4, 75)
    assert res.residuals.shape == (4,) and res.converged.dtype == torch.bool
    assert res.eigenvalues.dtype == torch.float64 and isinstance(res.iterations, int)
    assert bool(res.converged.all())
    want = _ordered(problem["evals"], which, 4)
    torch.testing.assert_close(res.eigenvalues, want, rtol=1e-9, atol=0)
    V = res.eigenvectors.T
    true_res = torch.linalg.vector_norm(H @ V - V * res.eigenvalues, dim=0)
    assert bool((true_res <= 1e-10 * res.eigenvalues.abs()).all())
    torch.testing.assert_close(res.residuals, true_res, rtol=0.5, atol=1e-13)
    torch.testing.assert_close(torch.linalg.vector_norm(V, dim=0), torch.ones(4, dtype=V.dtype))

    he = pytest.importorskip("hessian_eigenthings")
    hop = he.HessianOperator(model, data, he.supervised_loss(LOSS))
    ref = he.lanczos(hop, k=4, which=which, max_iter=74, reorthogonalize=True, seed=0)
    assert {f for f in ref.__dataclass_fields__} == {f for f in res.__dataclass_fields__}
    torch.testing.assert_close(res.eigenvalues, ref.eigenvalues, rtol=1e-9, atol=0)
    # the original's own operator through the front door: same pairs
    via = fe.lanczos(hop, k=4, which=which, tol=1e-10, seed=1)
    torch.testing.assert_close(via.eigenvalues, want, rtol=1e-9, atol=0)


def test_lanczos_default_is_converged_where_original_is_not(problem: dict[str, Any]) -> None:
    """With the defaults (k=10, tol=1e-4), the original stops after 2k = 20 steps; the front
    door's pairs all meet tol · |λ| against the dense Hessian."""
    model, x, y, H = problem["model"], problem["x"], problem["y"], problem["H"]
    op = fe.HessianOperator(model, [(x, y)], fe.supervised_loss(LOSS))
    res = fe.lanczos(op, seed=0)
    V = res.eigenvectors.T
    true_res = torch.linalg.vector_norm(H @ V - V * res.eigenvalues, dim=0)
    assert bool((true_res <= 1e-4 * res.eigenvalues.abs()).all()) and bool(res.converged.all())
    torch.testing.assert_close(
        res.eigenvalues, _ordered(problem["evals"], "LM", 10), rtol=1e-7, atol=0
    )


def test_lanczos_whole_spectrum_and_lambda_operator() -> None:
    """k = P (allowed there with max_iter = P) is served densely; a LambdaOperator works."""
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    lam = torch.linspace(-1.0, 3.0, 12, dtype=torch.float64)
    A = (Q * lam) @ Q.T
    op = fe.LambdaOperator(lambda v: A @ v, 12, dtype=torch.float64)
    full = fe.lanczos(op, k=12, max_iter=12, which="SA")
    torch.testing.assert_close(full.eigenvalues, lam, rtol=1e-12, atol=1e-12)
    top = fe.lanczos(op, k=3, which="LA", tol=1e-10, seed=0)
    torch.testing.assert_close(top.eigenvalues, lam.flip(0)[:3], rtol=1e-10, atol=0)


def test_uneven_batches_give_the_full_data_hessian(problem: dict[str, Any]) -> None:
    """48 samples in batches of 20, 20, 8: the front door's operator is the Hessian of the mean
    loss over all 48 (the original's equal batch weights over-weight the last batch)."""
    model, x, y, H = problem["model"], problem["x"], problem["y"], problem["H"]
    data = batches(x, y, 20)
    op = fe.HessianOperator(model, data, fe.supervised_loss(LOSS))
    E = torch.eye(75, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(E), H, rtol=1e-10, atol=1e-12)
    he = pytest.importorskip("hessian_eigenthings")
    hop = he.HessianOperator(model, data, he.supervised_loss(LOSS))
    orig = torch.stack([hop.matvec(e) for e in E], dim=1)
    assert float((orig - H).abs().max()) > 1e-3 * float(H.abs().max())  # the test can tell


def _dense_ggn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    state, theta = flat_fn(model, names)
    z = functional_call(model, state(theta), (x,))
    J = jacrev(lambda t: functional_call(model, state(t), (x,)))(theta)  # [N, C, P]
    Hz = torch.func.hessian(lambda out: LOSS(out, y))(z)  # [N, C, N, C]
    N, C, P = J.shape
    return J.reshape(N * C, P).T @ Hz.reshape(N * C, N * C) @ J.reshape(N * C, P)


def _dense_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters()]
    rows = []
    for i in range(len(x)):
        g = torch.autograd.grad(LOSS(model(x[i : i + 1]), y[i : i + 1]), params)
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    G = torch.stack(rows)
    return G.T @ G / len(x)


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_ggn_and_fisher(problem: dict[str, Any], kind: str) -> None:
    """Equal to the dense oracle (uneven batches) and to the original (equal batches)."""
    model, x, y = problem["model"], problem["x"], problem["y"]
    oracle = _dense_ggn(model, x, y) if kind == "ggn" else _dense_fisher(model, x, y)

    def build(mod: Any, data: Any) -> Any:
        if kind == "ggn":
            return mod.GGNOperator(
                model, data, mod.supervised_forward, mod.supervised_loss_of_output(LOSS)
            )
        return mod.EmpiricalFisherOperator(model, data, mod.supervised_per_sample_loss(LOSS))

    E = torch.eye(75, dtype=torch.float64)
    op = build(fe, batches(x, y, 20))
    torch.testing.assert_close(op.matmat(E), oracle, rtol=1e-10, atol=1e-12)
    res = fe.lanczos(op, k=3, which="LA", tol=1e-10, seed=0)
    want = torch.linalg.eigvalsh(oracle).flip(0)[:3]
    torch.testing.assert_close(res.eigenvalues, want, rtol=1e-9, atol=0)
    he = pytest.importorskip("hessian_eigenthings")
    equal = batches(x, y, 16)
    v = torch.randn(75, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        build(fe, equal).matvec(v), build(he, equal).matvec(v).detach(), rtol=1e-10, atol=1e-13
    )


def test_fisher_sample_dim(problem: dict[str, Any]) -> None:
    """``sample_dim=1``: samples along the second axis, counted along it."""
    model, x, y = problem["model"], problem["x"], problem["y"]
    oracle = _dense_fisher(model, x, y)

    def per_sample(m: nn.Module, s: Any) -> torch.Tensor:
        xs, ys = s  # [5], [1]
        return LOSS(m(xs[None]), ys)

    data = [(x[i : i + 24].T.contiguous(), y[i : i + 24][None]) for i in (0, 24)]
    op = fe.EmpiricalFisherOperator(model, data, per_sample, sample_dim=1)
    torch.testing.assert_close(
        op.matmat(torch.eye(75, dtype=torch.float64)), oracle, rtol=1e-10, atol=1e-12
    )


def test_param_filter_batches_and_methods(problem: dict[str, Any]) -> None:
    """param_filter gives the Hessian block; num_batches / full_dataset=False the Hessian of the
    leading batches; method='finite_difference' the same exact products."""
    model, x, y, H = problem["model"], problem["x"], problem["y"], problem["H"]
    data = batches(x, y, 16)
    op = fe.HessianOperator(
        model, data, fe.supervised_loss(LOSS), param_filter=fe.match_names("2.*")
    )
    assert op.size == 27
    E = torch.eye(27, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(E), H[48:, 48:], rtol=1e-10, atol=1e-12)
    regex = fe.HessianOperator(
        model, data, fe.supervised_loss(LOSS), param_filter=fe.match_regex(r"^2\.")
    )
    assert regex.size == 27
    E = torch.eye(75, dtype=torch.float64)
    first2 = dense_hessian(model, LOSS, x[:32], y[:32])
    two = fe.HessianOperator(model, data, fe.supervised_loss(LOSS), num_batches=2)
    torch.testing.assert_close(two.matmat(E), first2, rtol=1e-10, atol=1e-12)
    first = dense_hessian(model, LOSS, x[:16], y[:16])
    one = fe.HessianOperator(model, data, fe.supervised_loss(LOSS), full_dataset=False)
    torch.testing.assert_close(one.matmat(E), first, rtol=1e-10, atol=1e-12)
    fd = fe.HessianOperator(
        model, data, fe.supervised_loss(LOSS), method="finite_difference", fd_eps=1e-3
    )
    torch.testing.assert_close(fd.matmat(E), H, rtol=1e-10, atol=1e-12)
    gen = fe.HessianOperator(model, iter(data), fe.supervised_loss(LOSS))  # one-shot iterator
    torch.testing.assert_close(gen.matmat(E), H, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gen.matmat(E), H, rtol=1e-10, atol=1e-12)


LAST = fe.match_names("2.*")  # the output layer: P = 27, H[48:, 48:]


def test_trace(problem: dict[str, Any]) -> None:
    """Hutchinson: estimate and stderr are the mean and standard error of ``samples``, within
    4 stderr of tr(H). Hutch++ with a sketch spanning the whole space is exact, as the
    original's is."""
    model, x, y = problem["model"], problem["x"], problem["y"]
    H = problem["H"][48:, 48:]
    op = fe.HessianOperator(model, [(x, y)], fe.supervised_loss(LOSS), param_filter=LAST)
    exact = float(torch.trace(H))
    res = fe.hutchinson(op, num_samples=60, seed=0)
    assert isinstance(res, fe.TraceResult) and res.samples.shape == (60,)
    assert res.samples.dtype == torch.float64
    assert math.isclose(res.estimate, float(res.samples.mean()), rel_tol=1e-12)
    assert math.isclose(res.stderr, float(res.samples.std() / math.sqrt(60)), rel_tol=1e-10)
    assert abs(res.estimate - exact) <= 4 * res.stderr
    pp = fe.trace(op, num_matvecs=40, seed=0)
    assert pp.samples.shape == (40 - 2 * 13,)
    assert math.isclose(pp.stderr, float(pp.samples.std() / math.sqrt(14)), rel_tol=1e-10)
    assert abs(pp.estimate - exact) <= 4 * pp.stderr + 1e-12
    full = fe.trace(op, num_matvecs=90, seed=0)  # sketch of 30 >= P = 27 columns: exact
    assert math.isclose(full.estimate, exact, rel_tol=1e-10)
    he = pytest.importorskip("hessian_eigenthings")
    hop = he.HessianOperator(model, [(x, y)], he.supervised_loss(LOSS), param_filter=LAST)
    ref = he.trace(hop, num_matvecs=90, seed=0)
    assert math.isclose(full.estimate, ref.estimate, rel_tol=1e-8)
    assert {f for f in ref.__dataclass_fields__} == {f for f in full.__dataclass_fields__}


def test_spectral_density(problem: dict[str, Any]) -> None:
    """Same grid semantics as the original (range of the nodes padded by grid_padding, sigma =
    range / lanczos_steps); with full Krylov runs the nodes are the eigenvalues, so the grids
    agree, and both densities are close to the exact smoothed density."""
    model, x, y = problem["model"], problem["x"], problem["y"]
    evals = torch.linalg.eigvalsh(problem["H"][48:, 48:])
    op = fe.HessianOperator(model, [(x, y)], fe.supervised_loss(LOSS), param_filter=LAST)
    kw: dict[str, Any] = {"num_runs": 10, "lanczos_steps": 27, "num_grid_points": 400, "seed": 0}
    res = fe.spectral_density(op, **kw)
    assert isinstance(res, fe.SpectralDensityResult)
    assert res.grid.shape == res.density.shape == (400,) and res.grid.dtype == torch.float64
    assert res.raw_eigenvalues.shape[0] == 10 and res.raw_weights.shape == res.raw_eigenvalues.shape
    spread = float(evals[-1] - evals[0])
    assert math.isclose(res.sigma, spread / 27, rel_tol=1e-6)
    assert math.isclose(float(res.grid[0]), float(evals[0]) - 0.1 * spread, rel_tol=1e-6)
    assert math.isclose(float(res.grid[-1]), float(evals[-1]) + 0.1 * spread, rel_tol=1e-6)
    step = float(res.grid[1] - res.grid[0])
    assert abs(float(res.density.sum()) * step - 1.0) < 1e-2
    t = res.grid[:, None]
    exact = torch.exp(-0.5 * ((t - evals[None]) / res.sigma) ** 2).mean(1) / (
        res.sigma * math.sqrt(2 * math.pi)
    )
    ours = float((res.density - exact).abs().sum()) * step
    assert ours < 0.5
    he = pytest.importorskip("hessian_eigenthings")
    hop = he.HessianOperator(model, [(x, y)], he.supervised_loss(LOSS), param_filter=LAST)
    ref = he.spectral_density(hop, **kw)
    torch.testing.assert_close(res.grid, ref.grid, rtol=1e-6, atol=1e-8)
    assert math.isclose(res.sigma, ref.sigma, rel_tol=1e-6)
    theirs = float((ref.density - exact).abs().sum()) * step
    assert ours < 2 * theirs + 0.05


class _TinyLM(nn.Module):
    """A HuggingFace-like causal LM: ``model(input_ids, labels=None)`` → ``.logits``, ``.loss``."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        logits = self.head(torch.tanh(self.emb(input_ids)))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return SimpleNamespace(logits=logits, loss=loss)


def test_lm_helpers_match_original() -> None:
    """hf_lm_loss (Hessian) and hf_lm_forward + hf_lm_loss_of_output (GGN), with ignored
    positions: the same products as the original's on equal batches."""
    torch.manual_seed(0)
    model = _TinyLM().double().eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (8, 5), generator=g)
    labels = ids.clone()
    labels[0, 2:] = -100
    data = [{"input_ids": ids[i : i + 4], "labels": labels[i : i + 4]} for i in (0, 4)]
    hess = fe.HessianOperator(model, data, fe.hf_lm_loss())
    ggn = fe.GGNOperator(model, data, fe.hf_lm_forward(), fe.hf_lm_loss_of_output())
    v = torch.randn(hess.size, dtype=torch.float64, generator=g)
    he = pytest.importorskip("hessian_eigenthings")
    ref_h = he.HessianOperator(model, data, he.hf_lm_loss())
    ref_g = he.GGNOperator(model, data, he.hf_lm_forward(), he.hf_lm_loss_of_output())
    torch.testing.assert_close(hess.matvec(v), ref_h.matvec(v), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(ggn.matvec(v), ref_g.matvec(v).detach(), rtol=1e-10, atol=1e-13)
    assert ggn.size == hess.size == 7 * 4 + 4 * 7 + 7


def test_bad_arguments(problem: dict[str, Any]) -> None:
    """Clear errors naming the argument."""
    model, x, y = problem["model"], problem["x"], problem["y"]
    data = batches(x, y, 16)
    op = fe.HessianOperator(model, data, fe.supervised_loss(LOSS))
    cases: list[tuple[type[Exception], str, Any]] = [
        (ValueError, "k", lambda: fe.lanczos(op, k=0)),
        (ValueError, "exceeds operator size", lambda: fe.lanczos(op, k=76)),
        (TypeError, "k must be an int", lambda: fe.lanczos(op, k=2.0)),
        (ValueError, "which", lambda: fe.lanczos(op, k=2, which="SM")),
        (ValueError, "tol", lambda: fe.lanczos(op, k=2, tol=0.0)),
        (ValueError, "max_iter", lambda: fe.lanczos(op, k=4, max_iter=3)),
        (TypeError, "reorthogonalize", lambda: fe.lanczos(op, k=2, reorthogonalize=1)),
        (TypeError, "backend", lambda: fe.lanczos(op, k=2, backend=object())),
        (TypeError, "operator", lambda: fe.lanczos(torch.eye(3), k=1)),
        (ValueError, "method", lambda: fe.trace(op, method="exact")),
        (ValueError, "distribution", lambda: fe.trace(op, distribution="uniform")),
        (TypeError, "num_matvecs", lambda: fe.trace(op, num_matvecs=10.0)),
        (ValueError, "num_matvecs", lambda: fe.trace(op, num_matvecs=3)),
        (ValueError, "lanczos_steps", lambda: fe.spectral_density(op, lanczos_steps=76)),
        (ValueError, "num_runs", lambda: fe.spectral_density(op, num_runs=0)),
        (ValueError, "sigma", lambda: fe.spectral_density(op, lanczos_steps=5, sigma=-1.0)),
        (ValueError, "shape", lambda: op.matvec(torch.zeros(3, dtype=torch.float64))),
        (TypeError, "model", lambda: fe.HessianOperator("mlp", data, fe.supervised_loss(LOSS))),
        (TypeError, "loss_fn", lambda: fe.HessianOperator(model, data, None)),
        (
            ValueError,
            "param_filter selected zero",
            lambda: fe.HessianOperator(model, data, LOSS, param_filter=lambda n, p: False),
        ),
        (
            ValueError,
            "method",
            lambda: fe.HessianOperator(model, data, fe.supervised_loss(LOSS), method="fd"),
        ),
        (
            ValueError,
            "microbatch_size",
            lambda: fe.HessianOperator(model, data, fe.supervised_loss(LOSS), microbatch_size=0),
        ),
        (
            ValueError,
            "num_batches",
            lambda: fe.HessianOperator(model, data, fe.supervised_loss(LOSS), num_batches=0),
        ),
        (
            ValueError,
            "sample_dim",
            lambda: fe.EmpiricalFisherOperator(
                model, data, fe.supervised_per_sample_loss(LOSS), sample_dim=-1
            ),
        ),
        (
            TypeError,
            "loss_of_output_fn",
            lambda: fe.GGNOperator(model, data, fe.supervised_forward, 3),
        ),
    ]
    for exc, text, call in cases:
        with pytest.raises(exc, match=text):
            call()


def test_dropout_in_train_mode_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double().train()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="stochastic layers"):
        fe.HessianOperator(model, [(x, y)], fe.supervised_loss(LOSS))


def test_results_serialise_and_module_needs_no_original(problem: dict[str, Any]) -> None:
    model, x, y = problem["model"], problem["x"], problem["y"]
    op = fe.HessianOperator(model, [(x, y)], fe.supervised_loss(LOSS))
    d = fe.lanczos(op, k=2, seed=0).to_dict()
    assert set(d) == {"eigenvalues", "residuals", "iterations", "converged"}
    assert isinstance(d["eigenvalues"], list)
    code = (
        "import sys; sys.modules['hessian_eigenthings'] = None\n"
        "import fastspec.compat.eigenthings as fe\n"
        "print(fe.lanczos(fe.LambdaOperator(lambda v: v * 2, 30), k=2, seed=0).eigenvalues)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "2." in out.stdout
