"""P1's LLM protocol on a small GPT-2 trained on Python's own documentation: :func:`pydoc_lm`.

A language-model example with no download. The text is the English documentation that ships
with every Python installation (``pydoc_data.topics.topics``: topic name → text); every
``test_every``-th topic in name order is held out. Tokens are bytes (vocabulary 256, no
tokenizer), cut into blocks of ``block`` tokens. A ``transformers.GPT2LMHeadModel`` built from a
seeded config (SDPA attention, no dropout) is trained with AdamW from random initialisation.

At ``checkpoints`` steps from 0 to ``steps`` a :class:`~fastspec.analysis.SpectrumTracker` runs
P1's LLM protocol (Xie et al., *On the Power-Law Hessian Spectrums in Deep Learning*,
arXiv:2201.13011; methods.md §1): the Hessian of the token-mean loss with respect to the last
layer, ``slq_runs`` SLQ runs of ``slq_nodes`` nodes pooled, the top ``k`` kept, the power-law fit
and its KS decision, and Pearson r of d_ks, ŝ, λ_1 and Tr(H) with the test loss over the
checkpoints.

*The last layer.* GPT-2 ties its output layer ``lm_head`` to the input embedding ``wte``, so
that matrix is also the first layer and its Hessian mixes both roles; ``transformer.ln_f`` has
only 2·n_embd parameters. The last layer analysed here is the last transformer block's MLP
output projection (``transformer.h.<L-1>.mlp.c_proj``, weight and bias: 4·n_embd² + n_embd
parameters), the last weight matrix that belongs to the output side alone.

*The Hessian batch.* A fixed set of ``hessian_blocks`` non-overlapping blocks of *training*
tokens (P1's Hessian is that of the training loss), the same at every checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastspec._checks import AsDict, check_bool, check_choice, check_float, check_int
from fastspec.analysis._progress import JobProgress, note
from fastspec.analysis.hessian import HessianReport
from fastspec.analysis.output import save_report, write_report_files
from fastspec.analysis.tracker import SpectrumTracker
from fastspec.curvature.language import IGNORE_INDEX, count_tokens, token_cross_entropy

__all__ = [
    "PydocData",
    "PydocLMReport",
    "byte_blocks",
    "dict_batches",
    "last_layer",
    "pydoc_data",
    "pydoc_lm",
    "pydoc_split",
    "tiny_gpt2",
    "token_loss",
]

#: separates topics in a split's byte stream
SEPARATOR = b"\n\n"


def pydoc_split(*, test_every: int = 10) -> tuple[dict[str, str], dict[str, str]]:
    """Python's bundled documentation topics as ``(train, test)``: topic name → text.

    Topics are sorted by name; every ``test_every``-th (the 10th, 20th, ...) is held out.

    Raises:
        TypeError, ValueError: ``test_every`` is not an int >= 2.
    """
    test_every = check_int("test_every", test_every, minimum=2)
    from pydoc_data.topics import topics

    names = sorted(topics)
    test = {n: topics[n] for i, n in enumerate(names) if i % test_every == test_every - 1}
    return {n: topics[n] for n in names if n not in test}, test


def _stream(texts: dict[str, str]) -> torch.Tensor:
    """[L] the UTF-8 bytes of the texts in name order, joined by :data:`SEPARATOR`."""
    data = SEPARATOR.join(texts[n].encode("utf-8") for n in sorted(texts))
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def byte_blocks(data: bytes | torch.Tensor, block: int) -> dict[str, torch.Tensor]:
    """Non-overlapping blocks of ``block`` byte tokens: ``{"input_ids", "attention_mask", "labels"}``.

    Each tensor is [n, block]. A last, shorter block is padded: input id 0, mask 0, label -100
    (not scored). Labels are the input ids (the causal shift is the loss's).

    Raises:
        ValueError: ``data`` is empty.
    """
    block = check_int("block", block, minimum=2)
    ids = (
        data.long()
        if isinstance(data, torch.Tensor)
        else torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    )
    if ids.numel() == 0:
        raise ValueError("data must hold at least one byte, got none")
    n = -(-ids.numel() // block)
    pad = n * block - ids.numel()
    mask = torch.ones(n * block, dtype=torch.long)
    labels = ids.clone()
    if pad:
        ids = torch.cat([ids, ids.new_zeros(pad)])
        mask[-pad:] = 0
        labels = torch.cat([labels, labels.new_full((pad,), IGNORE_INDEX)])
    return {
        "input_ids": ids.view(n, block),
        "attention_mask": mask.view(n, block),
        "labels": labels.view(n, block),
    }


def dict_batches(blocks: dict[str, torch.Tensor], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """``blocks`` (from :func:`byte_blocks`) in dict batches of at most ``batch_size`` rows."""
    batch_size = check_int("batch_size", batch_size, minimum=1)
    n = blocks["input_ids"].shape[0]
    return [{k: v[i : i + batch_size] for k, v in blocks.items()} for i in range(0, n, batch_size)]


@dataclass(frozen=True, eq=False)
class PydocData:
    """The example's token data (see :func:`pydoc_data`).

    Attributes:
        train_ids: [L] the training split's byte stream (training batches are cut from it).
        test_batches: dict batches of the held-out blocks (the test loss).
        train_eval: dict batches of as many training blocks (the train loss).
        hessian_batch: one dict batch of ``hessian_blocks`` training blocks (the Hessian's data).
        info: counts and the held-out topic names, for the report.
    """

    train_ids: torch.Tensor
    test_batches: list[dict[str, torch.Tensor]]
    train_eval: list[dict[str, torch.Tensor]]
    hessian_batch: list[dict[str, torch.Tensor]]
    info: dict[str, Any]


def pydoc_data(
    *,
    block: int = 64,
    hessian_blocks: int = 8,
    eval_blocks: int | None = None,
    test_every: int = 10,
    seed: int = 0,
) -> PydocData:
    """The split's byte blocks: held-out batches, training batches and the fixed Hessian batch.

    The Hessian batch and the training blocks of the train loss are the first blocks of a
    permutation of the training blocks seeded by ``seed``; the test loss uses the first
    ``eval_blocks`` held-out blocks (None: all of them).

    Raises:
        TypeError, ValueError: a bad argument (the message names it).
    """
    block = check_int("block", block, minimum=2)
    hessian_blocks = check_int("hessian_blocks", hessian_blocks, minimum=1)
    eval_blocks = check_int("eval_blocks", eval_blocks, minimum=1, none_ok=True)
    seed = check_int("seed", seed, minimum=0)
    train_text, test_text = pydoc_split(test_every=test_every)
    train_ids, test_ids = _stream(train_text), _stream(test_text)
    train_blocks, test_blocks = byte_blocks(train_ids, block), byte_blocks(test_ids, block)
    n_train, n_test = train_blocks["input_ids"].shape[0], test_blocks["input_ids"].shape[0]
    if hessian_blocks > n_train:
        raise ValueError(f"hessian_blocks must be at most {n_train} (training blocks), got "
                         f"{hessian_blocks}")  # fmt: skip
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    n_eval = min(eval_blocks or n_test, n_test)
    hessian_batch = [{k: v[order[:hessian_blocks]] for k, v in train_blocks.items()}]
    info = {
        "source": "pydoc_data.topics.topics", "train_topics": len(train_text),
        "test_topics": len(test_text), "test_topic_names": sorted(test_text),
        "train_bytes": int(train_ids.numel()), "test_bytes": int(test_ids.numel()),
        "train_blocks": n_train, "test_blocks": n_test, "eval_blocks": n_eval,
        "hessian_tokens": count_tokens(hessian_batch[0]["labels"], shift=True),
    }  # fmt: skip
    return PydocData(
        train_ids=train_ids,
        test_batches=dict_batches({k: v[:n_eval] for k, v in test_blocks.items()}, 64),
        train_eval=dict_batches({k: v[order[:n_eval]] for k, v in train_blocks.items()}, 64),
        hessian_batch=hessian_batch,
        info=info,
    )


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "the pydoc language-model example needs transformers: pip install 'fastspec[lm]'"
        ) from None
    return transformers


def tiny_gpt2(
    *, block: int = 64, n_layer: int = 2, n_embd: int = 32, n_head: int = 4, seed: int = 0
) -> Any:
    """A seeded ``GPT2LMHeadModel`` over bytes (vocabulary 256), built from its config.

    SDPA attention (transformers' default), no dropout, ``block`` positions.

    Raises:
        ImportError: transformers is not installed.
        ValueError: ``n_embd`` is not a multiple of ``n_head``.
    """
    for name, value in (("block", block), ("n_layer", n_layer), ("n_embd", n_embd),
                        ("n_head", n_head)):  # fmt: skip
        check_int(name, value, minimum=1)
    seed = check_int("seed", seed)
    if n_embd % n_head:
        raise ValueError(f"n_embd must be a multiple of n_head = {n_head}, got {n_embd}")
    tf = _transformers()
    config = tf.GPT2Config(
        vocab_size=256, n_positions=block, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = tf.GPT2LMHeadModel(config)
    return model.eval()


def last_layer(model: Any) -> list[str]:
    """The parameter names of the last block's MLP output projection (see the module docstring)."""
    n_layer = int(model.config.n_layer)
    prefix = f"transformer.h.{n_layer - 1}.mlp.c_proj."
    return [n for n, _ in model.named_parameters() if n.startswith(prefix)]


def _loss(
    model: nn.Module, batch: dict[str, torch.Tensor], reduction: str = "mean"
) -> torch.Tensor:
    """The token cross-entropy of a causal LM on a dict batch (the Hessian operator's loss)."""
    args = {k: v for k, v in batch.items() if k != "labels"}
    return token_cross_entropy(model(**args).logits, batch["labels"], shift=True,
                               reduction=reduction)  # fmt: skip


@torch.no_grad()
def token_loss(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """The mean token loss over all target tokens of ``batches`` (batches weighted by tokens)."""
    total = sum(float(_loss(model, b, "sum")) for b in batches)
    return total / sum(count_tokens(b["labels"], shift=True) for b in batches)


def _checkpoint_steps(steps: int, checkpoints: int) -> list[int]:
    return sorted({round(x) for x in np.linspace(0, steps, checkpoints)})


@dataclass(frozen=True, eq=False)
class PydocLMReport(AsDict):
    """The pydoc language-model example: training, P1's LLM protocol at checkpoints, Pearson r.

    Attributes:
        settings: the call's sizes and options.
        data: the split (topic and byte counts, held-out topic names, block counts).
        hessian_params: the names of the analysed parameters (the last layer).
        num_hessian_params: their count P.
        train_curve: ``{"step": [...], "loss": [...]}``, the mean training-batch loss per
            logging interval.
        checkpoints: the tracker's rows: step, λ_1, Tr(H), ŝ, β, d_ks, d_c, the decision,
            ``train_loss`` and ``test_loss`` (token means), products and seconds.
        correlations: Pearson r (``scipy.stats.pearsonr``) of ``lambda_max``, ``trace``, ``s``
            and ``ks`` with the test loss over the checkpoints (NaN below 3 checkpoints).
        initial: the protocol's report at random initialisation.
        trained: the protocol's report after the last step.
        timings: seconds for training, the analyses and the whole call.
    """

    _dict_properties = ("kind",)

    settings: dict[str, Any]
    data: dict[str, Any]
    hessian_params: tuple[str, ...]
    num_hessian_params: int
    train_curve: dict[str, list[float]]
    checkpoints: list[dict[str, Any]]
    correlations: dict[str, float]
    initial: HessianReport
    trained: HessianReport
    timings: dict[str, float]

    @property
    def kind(self) -> str:
        """What the report is, in its saved form: ``"pydoc_lm"``."""
        return "pydoc_lm"

    def summary(self) -> str:
        """A short console summary: init vs trained, and Pearson r with the test loss."""
        st, rows = self.settings, self.checkpoints
        lines = [
            f"GPT-2 over bytes (n_layer {st['n_layer']}, n_embd {st['n_embd']}, "
            f"{st['num_params']:,} parameters) on Python's documentation: "
            f"{self.data['train_topics']} training topics ({self.data['train_bytes']:,} bytes), "
            f"{self.data['test_topics']} held out ({self.data['test_bytes']:,} bytes); "
            f"{st['steps']} AdamW steps of {st['batch_size']} × {st['block']} tokens",
            f"P1's LLM protocol on {', '.join(self.hessian_params)} (P = "
            f"{self.num_hessian_params:,}): {st['slq_runs']} SLQ runs × {st['slq_nodes']} nodes "
            f"pooled, top {st['k']}; Hessian batch: {st['hessian_blocks']} × {st['block']} "
            "training tokens",
            f"  {'':<12}{'step':>6}{'train loss':>12}{'test loss':>11}{'lambda_1':>11}"
            f"{'s':>8}{'d_ks':>8}{'d_c':>8}  decision",
        ]
        for name, row in (("random init", rows[0]), ("trained", rows[-1])):
            lines.append(_row_line(name, row))
        if len(rows) > 2:
            lines.append(f"  ({len(rows) - 2} checkpoints in between in report.json)")
        r = self.correlations
        lines.append(
            f"Pearson r with test loss over {len(rows)} checkpoints: d_ks {_r(r['ks'])}, "
            f"s {_r(r['s'])}, lambda_1 {_r(r['lambda_max'])}, Tr(H) {_r(r['trace'])}"
        )
        lines.append(f"time: {self.timings['total']:.0f} s (training {self.timings['train']:.0f} s,"
                     f" Hessian {self.timings['hessian']:.0f} s)")  # fmt: skip
        return "\n".join(lines)

    def save(
        self, directory: str | os.PathLike[str], *, plots: bool = True, overwrite: bool = False
    ) -> Path:
        """Write ``report.json``, ``summary.txt``, ``random_init/`` and ``trained/`` atomically.

        With ``plots`` (matplotlib needed) also ``curves.png`` (the tracked numbers over
        training) and each Hessian report's figures.
        """
        return save_report(self, directory, overwrite, plots=plots)

    def write_into(self, directory: Path, *, plots: bool = True) -> None:
        """Write the report's files into an existing directory."""
        write_report_files(directory, self)
        for stage, rep in (("random_init", self.initial), ("trained", self.trained)):
            (directory / stage).mkdir()
            rep.write_into(directory / stage, plots=plots)
        if plots:
            from fastspec.analysis.plots import series_figure

            col = {n: [row[n] for row in self.checkpoints] for n in self.checkpoints[0]}
            crit = [c for c in col["ks_critical"] if math.isfinite(c)]
            series_figure(
                col["step"],
                [("test loss", col["test_loss"], None), ("train loss", col["train_loss"], None),
                 ("λ_1", col["lambda_max"], None), ("power-law slope ŝ", col["s"], None),
                 ("KS distance d_ks", col["ks"], max(crit) if crit else None),
                 ("Tr(H) (Hutch++)", col["trace"], None)],
                directory / "curves.png", xlabel="training step",
                title=f"GPT-2 on pydoc: last-layer Hessian (top {self.settings['k']}, "
                "dashed: d_c)",
            )  # fmt: skip


def _r(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.3f}"


def _row_line(name: str, row: dict[str, Any]) -> str:
    fit = row["is_power_law"]
    verdict = "no fit" if fit is None else ("power-law" if fit else "not power-law")
    return (
        f"  {name:<12}{row['step']:>6}{row['train_loss']:>12.4f}{row['test_loss']:>11.4f}"
        f"{row['lambda_max']:>11.4g}{row['s']:>8.3f}{row['ks']:>8.4f}{row['ks_critical']:>8.4f}"
        f"  {verdict}"
    )


def pydoc_lm(
    *,
    steps: int = 2000,
    checkpoints: int = 5,
    block: int = 64,
    batch_size: int = 16,
    lr: float = 3e-3,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 4,
    hessian_blocks: int = 8,
    k: int = 1000,
    slq_runs: int = 3,
    slq_nodes: int = 1000,
    trace_matvecs: int | None = 99,
    eval_blocks: int | None = None,
    test_every: int = 10,
    dtype: str = "float64",
    seed: int = 0,
    progress: bool = False,
) -> PydocLMReport:
    """Train a small GPT-2 on Python's documentation and run P1's LLM protocol over training.

    See the module docstring for the data, the model, the last layer and the Hessian batch.

    Args:
        steps: AdamW steps (constant learning rate ``lr``, weight decay 0.01), each on
            ``batch_size`` blocks cut at random offsets of the training text.
        checkpoints: analyses, evenly spaced from step 0 (random initialisation) to ``steps``.
        block: tokens (bytes) per block, and the model's positions.
        batch_size: blocks per training step.
        lr: AdamW's learning rate.
        n_layer: transformer blocks.
        n_embd: the embedding width.
        n_head: attention heads per block.
        hessian_blocks: training blocks in the fixed Hessian batch.
        k: eigenvalues kept from the pooled Ritz values (P1: 1000); ``k < P`` and
            ``k <= slq_runs · min(slq_nodes, P)``.
        slq_runs: SLQ runs (P1: 3).
        slq_nodes: Lanczos nodes per run (P1: 1000). Each run reorthogonalises against its
            basis, so a checkpoint reads about slq_nodes² · P numbers: with the default
            sizes (P = 4,128) about a minute on a 2-core CPU, four times that at n_embd 64.
        trace_matvecs: Hutch++ products for Tr(H) per checkpoint (None: no trace).
        eval_blocks: blocks of each split used for the train / test loss (None: the whole test
            split, and as many training blocks).
        test_every: every ``test_every``-th topic in name order is held out.
        dtype: the Hessian's compute dtype, ``"float64"`` or ``"float32"`` (training is float32).
        seed: seeds the model, the training batches, the Hessian batch and SLQ.
        progress: one line per step of the job on stderr.

    Returns:
        A :class:`PydocLMReport`.

    Raises:
        ImportError: transformers is not installed (``pip install 'fastspec[lm]'``).
        TypeError, ValueError: a bad argument (the message names it).
    """
    steps = check_int("steps", steps, minimum=0)
    checkpoints = check_int("checkpoints", checkpoints, minimum=2)
    block = check_int("block", block, minimum=2)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    lr = check_float("lr", lr, minimum=0.0, open_min=True)
    hessian_blocks = check_int("hessian_blocks", hessian_blocks, minimum=1)
    k = check_int("k", k, minimum=2)
    slq_runs = check_int("slq_runs", slq_runs, minimum=1)
    slq_nodes = check_int("slq_nodes", slq_nodes, minimum=1)
    trace_matvecs = check_int("trace_matvecs", trace_matvecs, minimum=1, none_ok=True)
    eval_blocks = check_int("eval_blocks", eval_blocks, minimum=1, none_ok=True)
    dtype = check_choice("dtype", dtype, ("float64", "float32"))
    seed = check_int("seed", seed, minimum=0)
    progress = check_bool("progress", progress)
    if steps > 0 and checkpoints > steps + 1:
        raise ValueError(f"checkpoints must be at most steps + 1 = {steps + 1}, got {checkpoints}")
    if steps == 0 and checkpoints != 2:
        raise ValueError(f"checkpoints must be 2 when steps is 0 (init and end), got {checkpoints}")
    t_start = time.perf_counter()
    model = tiny_gpt2(block=block, n_layer=n_layer, n_embd=n_embd, n_head=n_head, seed=seed)
    names = last_layer(model)
    P = sum(p.numel() for n, p in model.named_parameters() if n in names)
    if not 2 <= k < P:
        raise ValueError(f"k must satisfy 2 <= k < P = {P} (the last layer's parameters), got {k}")
    if k > slq_runs * min(slq_nodes, P):
        raise ValueError(
            f"k must be at most slq_runs · min(slq_nodes, P) = {slq_runs} · {min(slq_nodes, P)} "
            f"(the pooled Ritz values), got {k}"
        )

    d = pydoc_data(block=block, hessian_blocks=hessian_blocks, eval_blocks=eval_blocks,
                   test_every=test_every, seed=seed)  # fmt: skip
    train_ids, hessian_batch = d.train_ids, d.hessian_batch
    gen = torch.Generator().manual_seed(seed + 1)

    tracker = SpectrumTracker(
        model, None, hessian_batch, k=k, params=names, eigenvalues="slq", slq_runs=slq_runs,
        slq_nodes=slq_nodes, trace_matvecs=trace_matvecs, dtype=getattr(torch, dtype), seed=seed,
        hvp="double_backward",  # graph cached once; the last layer's lies after the attention
    )  # fmt: skip
    marks = _checkpoint_steps(steps, checkpoints)
    job = JobProgress(2 * len(marks) - 1, enabled=progress)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    log_every = max(1, steps // 50)
    curve: dict[str, list[float]] = {"step": [], "loss": []}
    reports: list[HessianReport] = []
    t_train = t_hessian = 0.0
    done, running = 0, []
    for mark in marks:
        if mark > done:
            job.step(f"training steps {done + 1}–{mark}")
            t = time.perf_counter()
            model.train()
            for step in range(done + 1, mark + 1):
                starts = torch.randint(0, train_ids.numel() - block + 1, (batch_size,),
                                       generator=gen)  # fmt: skip
                ids = torch.stack([train_ids[s : s + block] for s in starts.tolist()])
                loss = _loss(model, {"input_ids": ids, "labels": ids})
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running.append(float(loss.detach()))
                if step % log_every == 0:
                    curve["step"].append(step)
                    curve["loss"].append(float(np.mean(running)))
                    running = []
            model.eval()
            done = mark
            t_train += time.perf_counter() - t
        job.step(f"step {mark}: P1's LLM protocol ({slq_runs} SLQ runs × {min(slq_nodes, P)} "
                 f"nodes, P = {P:,})")  # fmt: skip
        t = time.perf_counter()
        test_loss, train_loss = token_loss(model, d.test_batches), token_loss(model, d.train_eval)
        reports.append(tracker.record(mark, test_loss=test_loss, train_loss=train_loss))
        t_hessian += time.perf_counter() - t
        row = tracker.rows[-1]
        note(f"  test loss {test_loss:.4f}, d_ks {row['ks']:.4f}, s {row['s']:.3f}",
             enabled=progress)  # fmt: skip
    total = time.perf_counter() - t_start
    settings = {
        "steps": steps, "checkpoints": marks, "block": block, "batch_size": batch_size, "lr": lr,
        "n_layer": n_layer, "n_embd": n_embd, "n_head": n_head,
        "num_params": sum(p.numel() for p in model.parameters()),
        "hessian_blocks": hessian_blocks, "k": k, "slq_runs": slq_runs, "slq_nodes": slq_nodes,
        "trace_matvecs": trace_matvecs, "eval_blocks": eval_blocks, "test_every": test_every,
        "dtype": dtype, "seed": seed, "torch": torch.__version__,
        "transformers": _transformers().__version__, "attention": model.config._attn_implementation,
    }  # fmt: skip
    return PydocLMReport(
        settings=settings,
        data=d.info,
        hessian_params=tuple(names),
        num_hessian_params=P,
        train_curve=curve,
        checkpoints=[dict(r) for r in tracker.rows],
        correlations=tracker.correlations("test_loss"),
        initial=reports[0],
        trained=reports[-1],
        timings={"train": t_train, "hessian": t_hessian, "total": total},
    )
