"""Language-model batches: dict batches, their target tokens, and the token cross-entropy.

A language-model batch is a dict (or a ``transformers.BatchEncoding``) of ``input_ids``,
``attention_mask``, ... and ``labels`` [N, T]: the target token ids, ``-100`` where a position is
not scored (padding, unmasked tokens of a masked LM). Its *target tokens* are

- causal LMs (``shift=True``, the model predicts token t+1 at position t): the entries of
  ``labels[:, 1:]`` that are not -100, predicted by ``logits[:, :-1]``;
- masked LMs (``shift=False``): the entries of ``labels`` that are not -100, predicted by
  ``logits`` at the same positions,

as transformers' own ``ForCausalLMLoss`` / ``ForMaskedLMLoss`` define them. The curvature
operators treat target tokens as the samples: the loss is the mean over all target tokens of all
batches, L(θ) = (1/N) Σ_t ℓ_t with N the total count, so batches are weighted by their token
counts (padding and uneven batches included), and the empirical Fisher is over tokens.

The token loss is computed from the model's ``logits`` in the operator's dtype. transformers
computes ``.loss`` from ``logits.float()``, which would round float64 curvature to float32; a
model output with ``.loss`` and no logits is used as it is, weighted by its token count.
transformers is never imported here: a model is recognised by the names of its classes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastspec._checks import check_bool, check_int

__all__ = [
    "IGNORE_INDEX",
    "TokenLoss",
    "count_tokens",
    "is_dict_batch",
    "lm_loss",
    "model_shift",
    "split_labels",
    "token_cross_entropy",
    "token_logits",
    "token_rows",
]

#: label of positions that are not scored (transformers' and PyTorch's default ``ignore_index``)
IGNORE_INDEX = -100

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_MASKED_SUFFIXES = ("ForMaskedLM",)


class TokenLoss(nn.Module):
    """Per-token cross-entropy ``loss(logits [n, V], targets [n])`` (mean), with a label shift.

    The operators call it on the target tokens of a dict batch (see the module docstring); its
    ``shift`` tells them which tokens those are (``None``: from the model's class).

    Attributes:
        shift: True for causal LMs (next-token targets), False for masked LMs, None to infer.
        reduction: ``"mean"``, the reduction over the tokens of a batch.
    """

    def __init__(self, shift: bool | None = None) -> None:
        super().__init__()
        self.shift = None if shift is None else check_bool("shift", shift)
        self.reduction = "mean"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the rows of ``logits`` [n, V] against ``targets`` [n]."""
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    def extra_repr(self) -> str:
        """The shift, in the module's repr."""
        return f"shift={self.shift}"


def lm_loss(*, shift: bool | None = None) -> TokenLoss:
    """The ``loss_fn`` for dict batches of a language model: token cross-entropy.

    Args:
        shift: ``True`` for a causal LM (labels are the input ids; the target at position t is
            token t+1), ``False`` for a masked LM (labels at the scored positions), ``None``
            (default) to infer it from the model's class (``...ForCausalLM``,
            ``...LMHeadModel``: causal; ``...ForMaskedLM``: masked).
    """
    return TokenLoss(shift)


def token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, shift: bool, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of a language model's ``logits`` [N, T, V] over its target tokens.

    Args:
        logits: [N, T, V] next-token (``shift=True``) or per-position (``shift=False``) logits.
        labels: [N, T] token ids, -100 where not scored.
        shift: causal LM (target of position t is ``labels[:, t+1]``) or masked LM.
        reduction: ``"mean"`` over the target tokens (transformers' ``.loss``) or ``"sum"``.

    Returns:
        A scalar in ``logits``' dtype (no float32 upcast).

    Raises:
        ValueError: shapes that do not match, labels outside ``[0, V)`` other than -100, or no
            target token with ``reduction="mean"``.
    """
    rows, targets = token_rows(labels, shift=check_bool("shift", shift))
    z = token_logits(logits, rows, labels, shift=shift)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if reduction == "mean" and targets.numel() == 0:
        raise ValueError("labels hold no target token (all -100): the mean loss is undefined")
    return F.cross_entropy(z, targets, reduction=reduction)


def is_dict_batch(batch: Any) -> bool:
    """Whether ``batch`` is a dict of model arguments (a ``BatchEncoding`` included)."""
    return isinstance(batch, Mapping)


def split_labels(batch: Mapping[str, Any]) -> tuple[dict[str, Any], torch.Tensor]:
    """``(model arguments without labels, labels [N, T])`` of a dict batch.

    Raises:
        ValueError: no ``labels``, or labels that are not an integer tensor [N, T].
    """
    if "labels" not in batch:
        raise ValueError(
            "a dict batch needs 'labels' (target token ids [N, T], -100 where not scored), "
            f"got keys {sorted(batch)}; for other dict batches pass batch_loss="
        )
    labels = batch["labels"]
    if not isinstance(labels, torch.Tensor) or labels.dim() != 2 or labels.is_floating_point():
        got = (
            f"{labels.dtype} {list(labels.shape)}"
            if isinstance(labels, torch.Tensor)
            else type(labels).__name__
        )
        raise ValueError(f"labels must be an integer tensor [N, T] of token ids, got {got}")
    bad = labels[(labels < 0) & (labels != IGNORE_INDEX)]
    if bad.numel():
        raise ValueError(
            f"labels must be token ids >= 0 or {IGNORE_INDEX} (not scored), got {int(bad[0])}"
        )
    return {k: v for k, v in batch.items() if k != "labels"}, labels


def _scored(labels: torch.Tensor, shift: bool) -> torch.Tensor:
    return (labels[:, 1:] if shift else labels) != IGNORE_INDEX


def count_tokens(labels: torch.Tensor, *, shift: bool) -> int:
    """The number of target tokens of ``labels`` [N, T] (see the module docstring)."""
    return int(_scored(labels, shift).sum())


def keep_tokens(labels: torch.Tensor, n: int, *, shift: bool) -> torch.Tensor:
    """``labels`` with every target token after the first ``n`` (row-major) set to -100."""
    n = check_int("n", n, minimum=0)
    scored = _scored(labels, shift)
    late = scored & (scored.reshape(-1).cumsum(0).reshape(scored.shape) > n)
    out = labels.clone()
    (out[:, 1:] if shift else out)[late] = IGNORE_INDEX
    return out


def token_rows(labels: torch.Tensor, *, shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, targets)``: the target tokens' rows in the flattened logits, and their ids.

    ``rows`` [n] index ``logits[:, :-1].reshape(-1, V)`` (``shift``) or
    ``logits.reshape(-1, V)``; ``targets`` [n] are the token ids they predict.
    """
    scored = _scored(labels, shift).reshape(-1)
    rows = scored.nonzero().squeeze(1)
    return rows, (labels[:, 1:] if shift else labels).reshape(-1)[rows]


def token_logits(
    logits: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, *, shift: bool
) -> torch.Tensor:
    """The logits [n, V] of the target tokens (``rows`` from :func:`token_rows`).

    Raises:
        ValueError: ``logits`` is not [N, T, V] over ``labels`` [N, T], or a label is not below V.
    """
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(labels.shape):
        raise ValueError(
            f"the model's logits must be [N, T, V] with [N, T] = labels' shape "
            f"{list(labels.shape)}, got {list(logits.shape)}"
        )
    V = logits.shape[-1]
    top = int(labels.max()) if labels.numel() else -1
    if top >= V:
        raise ValueError(
            f"labels must be token ids below the vocabulary size V = {V} (the logits' last "
            f"dimension) or {IGNORE_INDEX}, got {top}: do the tokenizer and the model match?"
        )
    flat = (logits[:, :-1] if shift else logits).reshape(-1, V)
    return flat.index_select(0, rows)


def output_logits(output: Any) -> torch.Tensor | None:
    """The ``logits`` of a model's output (a tensor, or an object or dict with ``logits``)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else None
    logits = getattr(output, "logits", logits)
    return logits if isinstance(logits, torch.Tensor) else None


def output_loss(output: Any) -> torch.Tensor | None:
    """The ``loss`` of a model's output, if it has one."""
    loss = output.get("loss") if isinstance(output, Mapping) else None
    loss = getattr(output, "loss", loss)
    return loss if isinstance(loss, torch.Tensor) else None


def model_shift(model: nn.Module, loss_fn: Any = None) -> bool:
    """Whether ``model`` is a causal LM (``True``: shifted labels) or a masked LM (``False``).

    ``loss_fn.shift`` (from :func:`lm_loss`) when set; else the model's class names
    (``...ForCausalLM``, ``...LMHeadModel``; ``...ForMaskedLM``), and transformers' own lists of
    causal and masked LM classes when transformers is already imported.

    Raises:
        ValueError: the model's kind cannot be told.
    """
    shift = getattr(loss_fn, "shift", None)
    if shift is not None:
        return bool(shift)
    names = {cls.__name__ for cls in type(model).__mro__}
    causal = any(n.endswith(_CAUSAL_SUFFIXES) for n in names)
    masked = any(n.endswith(_MASKED_SUFFIXES) for n in names)
    auto = sys.modules.get("transformers.models.auto.modeling_auto")
    if auto is not None and not (causal or masked):
        causal = bool(names & set(getattr(auto, "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", {}).values()))
        masked = bool(names & set(getattr(auto, "MODEL_FOR_MASKED_LM_MAPPING_NAMES", {}).values()))
    if causal != masked:
        return causal
    raise ValueError(
        f"cannot tell whether {type(model).__name__} is a causal LM (target of position t is "
        "token t+1) or a masked LM: pass loss_fn=fastspec.curvature.lm_loss(shift=True) or "
        "lm_loss(shift=False)"
    )
