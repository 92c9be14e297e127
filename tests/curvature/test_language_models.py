"""Curvature of transformers language models from dict batches, against dense oracles.

The oracles are built independently of fastspec's token code: the token-mean cross-entropy over
all batches written by hand (per-position losses times a mask of scored targets, summed, over the
total count). The Hessian is autograd's: a gradient with ``create_graph`` and a batched backward
of all unit vectors through it. torch.func's jacrev(jacrev) and jacfwd(jacrev) of this GPT-2 loss
return a matrix that is not symmetric (0.86 relative asymmetry, torch 2.13, transformers 5.24),
so they are no oracle here. The GGN and
empirical Fisher use torch.func Jacobians (first derivatives only).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastspec.curvature import (
    EmpiricalFisherOperator,
    GGNOperator,
    HessianOperator,
    hessian_eigs,
    lm_loss,
    token_cross_entropy,
)
from fastspec.linalg import trace

transformers = pytest.importorskip("transformers")
V = 7


def _quiet() -> None:
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", module="transformers")


def gpt2() -> torch.nn.Module:
    _quiet()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=V, n_positions=8, n_embd=4, n_layer=1, n_head=2, n_inner=6, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).double().eval()


def bert() -> torch.nn.Module:
    _quiet()
    torch.manual_seed(1)
    config = transformers.BertConfig(
        vocab_size=V, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=6, max_position_embeddings=8, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=0,
    )  # fmt: skip
    return transformers.BertForMaskedLM(config).double().eval()


def causal_batch(n: int, T: int, pads: list[int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (n, T), generator=g)
    mask = torch.ones_like(ids)
    for i, p in enumerate(pads):
        if p:
            mask[i, T - p :] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def masked_batch(n: int, T: int, pads: list[int], seed: int) -> dict[str, torch.Tensor]:
    batch = causal_batch(n, T, pads, seed)
    g = torch.Generator().manual_seed(seed + 100)
    chosen = (torch.rand(n, T, generator=g) < 0.4) & (batch["attention_mask"] == 1)
    chosen[0, 0] = True
    labels = batch["input_ids"].masked_fill(~chosen, -100)
    return {**batch, "input_ids": batch["input_ids"].masked_fill(chosen, 1), "labels": labels}


def causal_data() -> list[dict[str, torch.Tensor]]:
    return [causal_batch(3, 6, [0, 2, 1], 0), causal_batch(2, 5, [0, 3], 1)]


def masked_data() -> list[dict[str, torch.Tensor]]:
    return [masked_batch(3, 6, [0, 2, 1], 2), masked_batch(2, 5, [0, 3], 3)]


def _targets(batch: dict[str, torch.Tensor], shift: bool) -> torch.Tensor:
    return batch["labels"][:, 1:] if shift else batch["labels"]


def _logits(model, state, batch, shift):
    args = {k: v for k, v in batch.items() if k != "labels"}
    logits = functional_call(model, state, (), args).logits
    return logits[:, :-1] if shift else logits


def dense(model, data, shift, kind="hessian"):
    """The dense Hessian / GGN / empirical Fisher of the token-mean loss over all batches."""
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    total = sum(int((_targets(b, shift) != -100).sum()) for b in data)

    def flat(blocks):  # {a: {b: tensor}} or {a: tensor} → a matrix
        rows = [
            torch.cat([blocks[a][b].reshape(-1, params[b].numel()) for b in names], 1)
            if isinstance(blocks[a], dict)
            else blocks[a].reshape(-1, params[a].numel())
            for a in names
        ]
        return torch.cat(rows, 0 if isinstance(blocks[names[0]], dict) else 1)

    def per_position(state, batch):  # [N·T'] loss of each position, 0 where not scored
        target = _targets(batch, shift).reshape(-1)
        z = _logits(model, state, batch, shift).reshape(-1, V)
        return F.cross_entropy(z, target.clamp(min=0), reduction="none") * (target != -100)

    out = torch.zeros(
        sum(p.numel() for p in params.values()),
        sum(p.numel() for p in params.values()),
        dtype=torch.float64,
    )
    with sdpa_kernel(SDPBackend.MATH):
        for batch in data:
            if kind == "hessian":
                leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
                loss = per_position(leaves, batch).sum() / total
                g = torch.cat(
                    [
                        t.reshape(-1)
                        for t in torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
                    ]
                )
                eye = torch.eye(len(g), dtype=g.dtype)
                rows = torch.autograd.grad(g, list(leaves.values()), eye, is_grads_batched=True)
                out += torch.cat([r.reshape(len(g), -1) for r in rows], 1)
            elif kind == "fisher":
                J = flat(jacrev(lambda s, b=batch: per_position(s, b))(params))  # [tokens, P]
                out += J.T @ J / total
            else:
                target = _targets(batch, shift).reshape(-1)
                keep = (target != -100).nonzero().squeeze(1)
                z = lambda s, b=batch, k=keep: _logits(model, s, b, shift).reshape(-1, V)[k]  # noqa: E731
                J = flat(jacrev(z)(params)).reshape(len(keep), V, -1)
                p = torch.softmax(z(params), -1)
                M = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
                out += torch.einsum("tvp,tvw,twq->pq", J, M, J) / total
    return out


@pytest.fixture(scope="module", params=["gpt2", "bert"])
def problem(request):
    model, data, shift = (
        (gpt2(), causal_data(), True) if request.param == "gpt2" else (bert(), masked_data(), False)
    )
    return model, data, shift, dense(model, data, shift)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("hvp", ["double_backward", "forward_over_reverse"])
def test_products_match_the_dense_token_mean_hessian(problem, hvp) -> None:
    model, data, shift, H = problem
    assert model.config._attn_implementation == "sdpa"
    op = HessianOperator(model, None, data, hvp=hvp)
    assert op.num_samples == sum(int((_targets(b, shift) != -100).sum()) for b in data)
    assert op.token_shift is shift
    V_ = torch.randn(H.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert rel(op.matmat(V_), H @ V_) <= 1e-9
    assert float((H - H.T).norm() / H.norm()) <= 1e-12  # the oracle is a Hessian


def test_eigenvalues_and_trace_match_the_dense_hessian(problem) -> None:
    model, data, _, H = problem
    exact = torch.linalg.eigvalsh(H)
    res = hessian_eigs(model, None, data, 3, tol=1e-11, seed=0)
    top = exact.flip(0)[:3]
    assert float((res.eigenvalues.sort(descending=True).values - top).abs().max()) <= 1e-9 * float(
        exact.abs().max()
    )
    op = HessianOperator(model, None, data)
    est = trace(op, method="hutch++", num_matvecs=24, seed=0)  # seeded; band from its std error
    assert abs(est.estimate - float(H.trace())) <= 6 * est.std_error + 1e-9 * float(H.abs().sum())


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_ggn_and_fisher_over_tokens_match_dense(problem, kind) -> None:
    model, data, shift, _ = problem
    M = dense(model, data, shift, kind)
    cls = GGNOperator if kind == "ggn" else EmpiricalFisherOperator
    V_ = torch.randn(M.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for jvp in ("double_backward", "forward"):
        assert rel(cls(model, None, data, jvp=jvp).matmat(V_), M @ V_) <= 1e-9


def _tokens(data, shift):
    return sum(int((_targets(b, shift) != -100).sum()) for b in data)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_finite_difference_stays_within_its_error_estimate(name, dtype) -> None:
    model, data, _ = (
        (gpt2(), causal_data(), True) if name == "gpt2" else (bert(), masked_data(), False)
    )
    exact = HessianOperator(model, None, data, hvp="double_backward")
    fd = HessianOperator(model.to(dtype), None, data, hvp="finite_difference")
    assert fd.method == "finite_difference" and fd.attention_backend == "default"
    assert exact.attention_backend == "math"
    P = exact.shape[0]
    V_ = torch.randn(P, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    truth = exact.matmat(V_)
    got = fd.matmat(V_.to(dtype)).double()
    assert len(fd.error_estimates) == 3
    for b in range(3):
        err = float((got[:, b] - truth[:, b]).norm() / truth[:, b].norm())
        assert err <= fd.error_estimates[b]
        assert fd.error_estimates[b] < (1e-6 if dtype == torch.float64 else 1.0)  # informative
    model.double()


def test_model_loss_and_helpers_agree_with_transformers() -> None:
    model, data = gpt2(), causal_data()
    op = HessianOperator(model, None, data)
    for batch, n in op.batches():
        mine = op._batch_loss(op._theta, batch, n) / op._scale(n)
        theirs = model(**batch).loss  # transformers' .loss: from logits.float()
        helper = token_cross_entropy(
            model(**{k: v for k, v in batch.items() if k != "labels"}).logits,
            batch["labels"],
            shift=True,
        )
        assert abs(float(mine) - float(theirs)) <= 1e-6 * abs(float(theirs))
        assert abs(float(mine) - float(helper)) <= 1e-14 * abs(float(helper))


def test_an_output_with_only_a_loss_is_weighted_by_tokens() -> None:
    class LossOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = gpt2()

        def forward(self, labels=None, **kw):
            out = self.lm(**kw)
            return (
                {"loss": token_cross_entropy(out.logits, labels, shift=True)}
                if labels is not None
                else {}
            )

    wrapped, data = LossOnly(), causal_data()
    a = HessianOperator(wrapped, lm_loss(shift=True), data)
    with pytest.raises(TypeError, match=r"neither \.loss nor logits"):
        a.matmat(torch.zeros(a.shape[0], 1, dtype=torch.float64))
    op = HessianOperator(wrapped, lm_loss(shift=True), data)
    assert op.num_samples == _tokens(data, True)


def test_bad_dict_batches_get_clear_errors() -> None:
    model, data = gpt2(), causal_data()
    no_labels = [{k: v for k, v in b.items() if k != "labels"} for b in data]
    with pytest.raises(ValueError, match="needs 'labels'"):
        HessianOperator(model, None, no_labels)
    big = [{**data[0], "labels": data[0]["labels"].masked_fill(data[0]["labels"] == 3, V + 4)}]
    op = HessianOperator(model, None, big)
    with pytest.raises(ValueError, match="vocabulary size V = 7"):
        op.matmat(torch.zeros(op.shape[0], 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="loss_fn must be a callable"):
        HessianOperator(model, None, [(torch.zeros(2, 3), torch.zeros(2))])
    with pytest.raises(ValueError, match="causal LM"):
        HessianOperator(torch.nn.Linear(2, 2), None, data)


def test_transformers_is_not_imported_with_fastspec() -> None:
    code = "import sys, fastspec, fastspec.curvature, fastspec.analysis.loading; print([m for m in ('transformers', 'safetensors') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
