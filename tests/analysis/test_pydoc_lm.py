"""The pydoc language-model example: split, batches, training, protocol vs a dense Hessian, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from fastspec.analysis.pydoc_lm import (
    byte_blocks,
    last_layer,
    pydoc_data,
    pydoc_lm,
    pydoc_split,
    tiny_gpt2,
)
from fastspec.cli import main

#: a tiny run: 1 block of width 8 (its last layer: 4·8·8 + 8 = 264 parameters)
TINY = dict(
    block=16, batch_size=8, n_layer=1, n_embd=8, n_head=2, hessian_blocks=2, k=40, slq_runs=2,
    slq_nodes=40, trace_matvecs=9, eval_blocks=8,
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (no OpenMP barriers on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_report(one_thread):
    return pydoc_lm(steps=30, checkpoints=4, lr=1e-2, **TINY)


def test_split_is_disjoint_complete_and_deterministic():
    from pydoc_data.topics import topics

    train, test = pydoc_split()
    assert set(train).isdisjoint(test)
    assert set(train) | set(test) == set(topics)
    assert sorted(test) == sorted(topics)[9::10]
    again = pydoc_split()
    assert again == (train, test)
    assert sorted(pydoc_split(test_every=5)[1]) == sorted(topics)[4::5]


def test_byte_blocks_pad_the_last_block_with_ignored_labels():
    b = byte_blocks(b"abcdefgh", 3)
    assert b["input_ids"].tolist() == [[97, 98, 99], [100, 101, 102], [103, 104, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]
    assert b["labels"].tolist() == [[97, 98, 99], [100, 101, 102], [103, 104, -100]]
    exact = byte_blocks(b"abcdef", 3)
    assert exact["attention_mask"].all() and (exact["labels"] == exact["input_ids"]).all()


def test_data_batches_hold_the_split_text():
    d = pydoc_data(block=32, hessian_blocks=4, seed=3)
    _, test = pydoc_split()
    first_test = test[sorted(test)[0]].encode("utf-8")
    ids = d.test_batches[0]["input_ids"][0]
    assert bytes(ids.tolist()) == first_test[:32]
    for batch in (*d.test_batches, *d.train_eval, *d.hessian_batch):
        scored = batch["labels"] != -100
        assert torch.equal(scored, batch["attention_mask"].bool())
        assert torch.equal(batch["labels"][scored], batch["input_ids"][scored])
    assert d.hessian_batch[0]["input_ids"].shape == (4, 32)
    assert d.info["hessian_tokens"] == 4 * 31
    assert sum(b["input_ids"].shape[0] for b in d.test_batches) == d.info["test_blocks"]
    again = pydoc_data(block=32, hessian_blocks=4, seed=3)
    assert torch.equal(again.hessian_batch[0]["input_ids"], d.hessian_batch[0]["input_ids"])
    other = pydoc_data(block=32, hessian_blocks=4, seed=4)
    assert not torch.equal(other.hessian_batch[0]["input_ids"], d.hessian_batch[0]["input_ids"])


def test_last_layer_is_the_last_mlp_projection():
    model = tiny_gpt2(n_layer=3, n_embd=8, n_head=2)
    assert last_layer(model) == [
        "transformer.h.2.mlp.c_proj.weight",
        "transformer.h.2.mlp.c_proj.bias",
    ]
    assert model.config._attn_implementation == "sdpa"
    same = tiny_gpt2(n_layer=3, n_embd=8, n_head=2)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), same.parameters()))


def test_training_lowers_train_and_test_loss(tiny_report):
    rows = tiny_report.checkpoints
    assert [r["step"] for r in rows] == [0, 10, 20, 30]
    assert rows[0]["test_loss"] == pytest.approx(np.log(256), abs=0.3)  # about uniform at init
    assert rows[-1]["test_loss"] < rows[0]["test_loss"] - 0.5
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.5


def test_pearson_r_is_scipys_of_the_reported_pairs(tiny_report):
    from scipy import stats

    rows = tiny_report.checkpoints
    loss = [r["test_loss"] for r in rows]
    for name in ("ks", "s", "lambda_max", "trace"):
        want = stats.pearsonr([r[name] for r in rows], loss).statistic
        assert tiny_report.correlations[name] == pytest.approx(want, rel=1e-12)


def test_report_round_trips_through_json(tiny_report):
    d = json.loads(json.dumps(tiny_report.to_dict()))
    assert d["kind"] == "pydoc_lm"
    assert d["num_hessian_params"] == 264
    assert d["initial"]["settings"]["eigenvalues"] == "slq"
    assert len(d["trained"]["eigenvalues"]) == TINY["k"]
    assert d["checkpoints"][-1]["ks"] == tiny_report.trained.spectrum_fit.ks
    text = tiny_report.summary()
    assert "random init" in text and "trained" in text and "Pearson r" in text


def _dense_hessian(model, names, batch):
    """The float64 Hessian of the token-mean loss with respect to ``names``, by torch.func."""
    from fastspec.curvature.language import token_cross_entropy

    model = model.double()
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    args = {k: v for k, v in batch.items() if k != "labels"}

    def loss(flat):
        sub = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        out = torch.func.functional_call(model, {**params, **sub}, kwargs=args)
        return token_cross_entropy(out.logits, batch["labels"], shift=True)

    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    return torch.func.hessian(loss)(flat)


def test_protocol_matches_a_dense_hessian_at_initialisation(tiny_report):
    model = tiny_gpt2(block=16, n_layer=1, n_embd=8, n_head=2, seed=0)
    batch = pydoc_data(block=16, hessian_blocks=2, eval_blocks=8, seed=0).hessian_batch[0]
    H = _dense_hessian(model, last_layer(model), batch)
    assert H.shape == (264, 264)
    dense = torch.linalg.eigvalsh(H.detach()).numpy()
    ev = tiny_report.initial.eigenvalues
    # the top Ritz value of 40-step Lanczos runs has converged to lambda_1; all lie in [min, max]
    assert ev[0] == pytest.approx(dense[-1], rel=1e-6)
    scale = np.abs(dense).max()
    assert ev.min() >= dense[0] - 1e-9 * scale and ev.max() <= dense[-1] + 1e-9 * scale
    assert tiny_report.checkpoints[0]["lambda_max"] == ev[0]


def test_cli_writes_the_report(tmp_path, capsys):
    out = tmp_path / "lm"
    code = main([
        "lm", "--steps", "4", "--checkpoints", "2", "--block", "16", "--batch-size", "4",
        "--n-layer", "1", "--n-embd", "8", "--n-head", "2", "--hessian-blocks", "1",
        "--k", "20", "--slq-runs", "1", "--slq-nodes", "30", "--out", str(out),
        "--no-progress", "--no-plots", "--seed", "1",
    ])  # fmt: skip
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    assert data["kind"] == "pydoc_lm" and data["settings"]["seed"] == 1
    assert [r["step"] for r in data["checkpoints"]] == [0, 4]
    assert (out / "trained" / "report.json").is_file()
    assert "Pearson r" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--checkpoints", "1"], "checkpoints must be >= 2"),
        (["--steps", "-3"], "expected an integer >= 0"),
        (["--n-embd", "10", "--n-head", "4"], "n_embd must be a multiple of n_head"),
        (["--k", "5000", "--n-embd", "8", "--n-head", "2", "--n-layer", "1"], "k must satisfy"),
    ],
)
def test_cli_bad_arguments_name_them(tmp_path, capsys, argv, words):
    try:
        code = main(["lm", "--out", str(tmp_path / "x"), "--no-progress", *argv])
    except SystemExit as exc:  # argparse's own checks exit from the parser
        code = exc.code
    assert code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(steps=2.5), TypeError, "steps must be an int"),
        (dict(steps=3, checkpoints=5), ValueError, r"checkpoints must be at most steps \+ 1"),
        (dict(k=200, slq_runs=2, slq_nodes=50), ValueError, "k must be at most slq_runs"),
        (dict(dtype="float16"), ValueError, "dtype must be one of"),
        (dict(lr=0.0), ValueError, "lr must be > 0"),
        (dict(hessian_blocks=10**7), ValueError, "hessian_blocks must be at most"),
    ],
)
def test_bad_arguments_name_them(kwargs, error, words):
    args = {**TINY, **kwargs}
    with pytest.raises(error, match=words):
        pydoc_lm(**args)


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"fastspec\[lm\]"):
        tiny_gpt2()


def test_importing_the_example_does_not_import_transformers():
    code = "import sys, fastspec.analysis.pydoc_lm, fastspec.cli; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
