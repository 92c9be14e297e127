"""`fastspec hessian` on a local transformers model directory and dict batches; no download."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from fastspec.cli import main

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

DATA = """
import torch

def batches():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 7, (3, 5), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    return [{"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}]
"""


@pytest.fixture
def model_dir(tmp_path):
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", module="transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=7, n_positions=8, n_embd=4, n_layer=1, n_head=2, n_inner=6, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "lm_data.py").write_text(DATA)
    return tmp_path


def test_hessian_of_a_local_model_directory(model_dir, capsys) -> None:
    out = model_dir / "report"
    code = main([
        "hessian", "--model", str(model_dir / "gpt2"), "--data", f"{model_dir / 'lm_data.py'}:batches",
        "--k", "2", "--tol", "1e-8", "--no-density", "--no-plots", "--trace-matvecs", "4",
        "--no-progress", "--device", "cpu", "--out", str(out),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert len(report["eigenvalues"]) == 2


def test_a_hub_name_without_a_local_copy_is_refused(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.py").write_text(DATA)
    code = main(
        ["hessian", "--model", "openai-community/gpt2", "--data", "d.py:batches", "--no-plots"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "never downloads" in err
