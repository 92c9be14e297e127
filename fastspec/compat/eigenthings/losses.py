"""hessian-eigenthings 1.0's loss and forward helpers and parameter filters."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

ParamFilter = Callable[[str, nn.Parameter], bool]
LossFn = Callable[[nn.Module, Any], torch.Tensor]
ForwardFn = Callable[[nn.Module, Any], torch.Tensor]
LossOfOutputFn = Callable[[torch.Tensor, Any], torch.Tensor]


def supervised_loss(
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[nn.Module, Any], torch.Tensor]:
    """``loss_fn(model, (x, y)) = criterion(model(x), y)`` for :class:`HessianOperator`."""

    def fn(model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return criterion(model(x), y)

    return fn


def supervised_forward(model: nn.Module, batch: Any) -> torch.Tensor:
    """``forward_fn`` for :class:`GGNOperator` on ``(x, y)`` batches: ``model(x)``."""
    x, _ = batch
    out: torch.Tensor = model(x)
    return out


def supervised_loss_of_output(
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """``loss_of_output_fn(output, (x, y)) = criterion(output, y)`` for :class:`GGNOperator`."""

    def fn(output: torch.Tensor, batch: Any) -> torch.Tensor:
        _, y = batch
        return criterion(output, y)

    return fn


def supervised_per_sample_loss(
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[nn.Module, Any], torch.Tensor]:
    """``per_sample_loss_fn(model, (x, y))`` on one un-batched sample (empirical Fisher)."""

    def fn(model: nn.Module, sample: Any) -> torch.Tensor:
        x, y = sample
        return criterion(model(x.unsqueeze(0)).squeeze(0), y)

    return fn


def hf_lm_loss() -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """``loss_fn(model, batch) = model(**batch).loss``: HuggingFace models, ``labels`` given."""

    def fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        loss: torch.Tensor = model(**batch).loss
        return loss

    return fn


def hf_seq2seq_loss() -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """Seq2seq HuggingFace models compute their loss internally too: :func:`hf_lm_loss`."""
    return hf_lm_loss()


def hf_lm_forward() -> Callable[[nn.Module, dict[str, Any]], torch.Tensor]:
    """``forward_fn`` for :class:`GGNOperator` on a HuggingFace LM: ``logits`` (no labels)."""

    def fn(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        logits: torch.Tensor = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return logits

    return fn


def hf_lm_loss_of_output() -> Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]:
    """``loss_of_output_fn``: next-token cross-entropy of ``logits`` and ``batch["labels"]``.

    Position ``t``'s logits against label ``t + 1``; labels -100 are ignored.
    """

    def fn(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return _shifted_cross_entropy(logits, batch["labels"], ignore_index=-100)

    return fn


def tlens_loss() -> Callable[[nn.Module, Any], torch.Tensor]:
    """``loss_fn`` for a TransformerLens model: ``model(tokens, return_type="loss")``."""

    def fn(model: nn.Module, batch: Any) -> torch.Tensor:
        loss: torch.Tensor = model(_tokens(batch), return_type="loss")
        return loss

    return fn


def tlens_forward() -> Callable[[nn.Module, Any], torch.Tensor]:
    """``forward_fn`` for a TransformerLens model: its logits."""

    def fn(model: nn.Module, batch: Any) -> torch.Tensor:
        logits: torch.Tensor = model(_tokens(batch), return_type="logits")
        return logits

    return fn


def tlens_loss_of_output() -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """``loss_of_output_fn`` for a TransformerLens model: shifted next-token cross-entropy."""

    def fn(logits: torch.Tensor, batch: Any) -> torch.Tensor:
        return _shifted_cross_entropy(logits, _tokens(batch), ignore_index=-100)

    return fn


def _tokens(batch: Any) -> torch.Tensor:
    return batch["tokens"] if isinstance(batch, dict) else batch


def _shifted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int
) -> torch.Tensor:
    """Mean cross-entropy of position ``t``'s logits against label ``t + 1``."""
    shift_logits = logits[..., :-1, :].contiguous()
    shift_labels = labels[..., 1:].contiguous()
    return torch.nn.functional.cross_entropy(
        shift_logits.view(-1, shift_logits.size(-1)),
        shift_labels.view(-1),
        ignore_index=ignore_index,
    )


def match_names(*patterns: str) -> ParamFilter:
    """A ``param_filter`` matching parameter names against glob ``patterns`` (any of them)."""

    def fn(name: str, _: nn.Parameter) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)

    return fn


def match_regex(*patterns: str) -> ParamFilter:
    """A ``param_filter`` matching parameter names with ``re.search`` (any of ``patterns``)."""
    compiled = [re.compile(pat) for pat in patterns]

    def fn(name: str, _: nn.Parameter) -> bool:
        return any(p.search(name) is not None for p in compiled)

    return fn
