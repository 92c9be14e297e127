"""A model, its loss and its selected parameters, ready to yield per-sample gradients by chunks.

The per-sample term of sample i is ℓ_i = ``loss_fn(model(inputs[i:i+1]), targets[i:i+1])``: for a
mean-reduced loss the sample's own loss (the gradient with reduction 'sum' applied to one
sample). Gradients are of ℓ_i with respect to the selected parameters (``params``, the same
selection rules as :mod:`fastspec.curvature`), in ``model.named_parameters()`` order, evaluated at
detached copies of the parameters cast to ``dtype``; the model is never modified.

Which parameters use a layer rule (:mod:`fastspec.grads.layers`, one forward/backward pass per
chunk) and which the torch.func fallback (:mod:`fastspec.grads.fallback`) is the
:class:`GradientPlan`; hooked layers must see samples along their inputs' first dimension (a layer called on
unbatched tensors, e.g. a position embedding on ``arange(T)``, is moved to the fallback), and on
the first chunk the hook-based gradient of sample 0 is compared with a one-sample autograd pass,
so a parameter also used outside its module's ``forward`` (weight tying, functional use) or a
layer that mixes samples is detected and moved to the fallback.

BatchNorm: in eval mode (the default) it normalises with running statistics and the samples are
independent. Under ``mode="train"`` batch statistics couple the samples and per-sample gradients
are not defined: refused, as is BatchNorm without running statistics.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call

from fastspec._checks import AsDict, check_int
from fastspec.batches import SampleBatches, loss_error, slice_samples
from fastspec.grads.fallback import FallbackWarning, fallback_gradients
from fastspec.grads.features import Dense, Feature
from fastspec.grads.hooks import record_calls, sample_losses
from fastspec.grads.layers import Call, rule_for
from fastspec.mode import MODEL_LOCK, check_mode, model_mode
from fastspec.params import ParamSpec, select_parameters

__all__ = ["GradProblem", "GradientPlan", "gradient_plan"]

DEFAULT_CHUNK = 512


@dataclass(frozen=True)
class GradientPlan(AsDict):
    """How each selected parameter's per-sample gradients are obtained.

    Attributes:
        hooked: parameter name → the modules whose layer rule gives its per-sample gradients.
        fallback: parameter name → the modules owning it, for parameters computed by the
            torch.func fallback (``vmap(grad)``).
    """

    hooked: dict[str, list[str]] = field(default_factory=dict)
    fallback: dict[str, list[str]] = field(default_factory=dict)

    @property
    def fallback_modules(self) -> list[str]:
        """The modules whose parameters use the fallback, sorted."""
        return sorted({m for mods in self.fallback.values() for m in mods})


def gradient_plan(model: nn.Module, *, params: ParamSpec = None) -> GradientPlan:
    """The :class:`GradientPlan` of ``model`` for the selected ``params`` (static.

    a parameter found on the first chunk to be used outside its module moves to the fallback later).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = select_parameters(model, params)
    with MODEL_LOCK:
        return _plan(model, names)


def _plan(model: nn.Module, names: list[str]) -> GradientPlan:
    by_id = {id(p): n for n, p in model.named_parameters()}
    selected = set(names)
    hooked: dict[str, list[str]] = defaultdict(list)
    fallback: dict[str, list[str]] = defaultdict(list)
    for mname, module in model.named_modules():
        rule = rule_for(module)
        for p in module._parameters.values():
            if p is None or by_id.get(id(p)) not in selected:
                continue
            target = hooked if rule is not None else fallback
            target[by_id[id(p)]].append(mname or type(module).__name__)
    for name in list(hooked):  # shared with a rule-less module: the fallback gets all of it
        if name in fallback:
            fallback[name] = hooked.pop(name) + fallback[name]
    order = {n: i for i, n in enumerate(names)}
    return GradientPlan(
        hooked=dict(sorted(hooked.items(), key=lambda kv: order[kv[0]])),
        fallback=dict(sorted(fallback.items(), key=lambda kv: order[kv[0]])),
    )


def _check_batchnorm(model: nn.Module, mode: str) -> None:
    norms = [
        (name or type(m).__name__, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    if mode == "train" and norms:
        raise ValueError(
            "per-sample gradients are not defined under train-mode BatchNorm (batch statistics "
            f"couple the samples): {', '.join(n for n, _ in norms)}. Use mode='eval' (running "
            "statistics, the default)"
        )
    stateless = [n for n, m in norms if m.running_mean is None]
    if stateless:
        raise ValueError(
            "BatchNorm without running statistics (track_running_stats=False) normalises with "
            "batch statistics even in eval mode, so per-sample gradients are not defined: "
            f"{', '.join(stateless)}"
        )


class GradProblem:
    """Validated (model, loss, parameters) and the per-chunk per-sample-gradient pass.

    Args:
        model: any ``nn.Module``.
        loss_fn: ``loss(outputs, targets)``; per-sample terms are its values on one-sample
            batches.
        params: parameter selection (see :func:`fastspec.params.select_parameters`).
        mode: ``"eval"`` (default) or ``"train"`` (refused with BatchNorm or stochastic layers).
        dtype: compute dtype (default: the parameters'); float32 or float64.
        chunk_size: samples per forward/backward pass (default 512, fewer when fallback
            parameters would need more than 2^25 per-sample gradient elements).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        *,
        params: ParamSpec = None,
        mode: str = "eval",
        dtype: torch.dtype | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be a callable loss(outputs, targets) -> scalar")
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        chunk_size = check_int("chunk_size", chunk_size, minimum=1, none_ok=True)
        check_mode(model, mode, allow_stochastic=False)
        _check_batchnorm(model, mode)
        self.model, self.loss_fn, self.mode = model, loss_fn, mode
        self.names = select_parameters(model, params)
        with MODEL_LOCK:
            named = dict(model.named_parameters())
            buffers = dict(model.named_buffers())
            self.plan = _plan(model, self.names)
        self.device = named[self.names[0]].device
        self.dtype = dtype or named[self.names[0]].dtype
        if self.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"the model's parameters must be float32 or float64, got {self.dtype}")
        selected = set(self.names)
        self.theta = {n: _cast(named[n], self.dtype) for n in self.names}
        self.frozen = {n: _cast(p, self.dtype) for n, p in named.items() if n not in selected}
        self.buffers = {n: _cast(b, self.dtype) for n, b in buffers.items()}
        self.numels = {n: t.numel() for n, t in self.theta.items()}
        self.num_params = sum(self.numels.values())
        fallback_size = sum(self.numels[n] for n in self.plan.fallback)
        self.chunk_size = chunk_size or max(1, min(DEFAULT_CHUNK, 2**25 // max(1, fallback_size)))
        self._checked = False
        self._clone = False
        self._warned = False

    def chunks(self, data: SampleBatches) -> Iterator[tuple[Any, torch.Tensor]]:
        """``(inputs, targets)`` chunks of at most ``chunk_size`` samples, on device, in dtype."""
        return data.chunks(self.chunk_size, self.device, self.dtype)

    def features(self, inputs: Any, targets: torch.Tensor) -> dict[str, Feature]:
        """Per-sample gradients of one chunk: selected parameter name → :class:`Feature`.

        Raises:
            TypeError: the loss cannot be evaluated on the chunk at all (inputs or targets of
                a dtype the model or loss refuses).
        """
        try:
            return self._features(inputs, targets)
        except RuntimeError as exc:
            error = loss_error(lambda: self._plain_loss(inputs, targets), (inputs, targets))
            if error is not None:
                raise error from exc
            raise

    def _plain_loss(self, inputs: Any, targets: torch.Tensor) -> torch.Tensor:
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        with model_mode(self.model, self.mode):
            outputs = functional_call(self.model, {**self._state(), **self.theta}, args)
            return self.loss_fn(outputs, targets)

    def _features(self, inputs: Any, targets: torch.Tensor) -> dict[str, Feature]:
        if self.plan.fallback and not self._warned:
            self._warned = True
            warnings.warn(
                "per-sample gradients of parameters without a layer rule use the torch.func "
                f"fallback (vmap(grad)): modules {', '.join(self.plan.fallback_modules)}",
                FallbackWarning,
                stacklevel=4,
            )
        with model_mode(self.model, self.mode):
            out = self._hooked(inputs, targets) if self.plan.hooked else {}
            if self.plan.fallback:
                state = {**self._state(), **{n: self.theta[n] for n in self.plan.hooked}}
                theta = {n: self.theta[n] for n in self.plan.fallback}
                grads = fallback_gradients(self.model, state, theta, self.loss_fn, inputs, targets)
                n = targets.shape[0]
                out.update({k: Dense(v.reshape(n, -1)) for k, v in grads.items()})
        return {n: out[n] for n in self.names}

    def _state(self) -> dict[str, torch.Tensor]:
        buffers = self.buffers
        if self.mode == "train":  # never let a forward pass update the model's buffers
            buffers = {n: b.clone() for n, b in buffers.items()}
        return {**self.frozen, **buffers}

    def _hooked(self, inputs: Any, targets: torch.Tensor) -> dict[str, Feature]:
        n = targets.shape[0]
        modules = dict(self.model.named_modules())
        wanted = self._wanted(modules)
        theta = {k: t.detach().requires_grad_(k in self.plan.hooked) for k, t in self.theta.items()}
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        with record_calls({m: modules[m] for m in wanted}, clone=self._clone) as records:
            outputs = functional_call(self.model, {**self._state(), **theta}, args)
            total = sample_losses(self.loss_fn, outputs, targets).sum()
        calls = [(m, r) for m, rs in records.items() for r in rs]
        if not self._clone and any(r.modified() for _, r in calls):
            self._clone = True  # an in-place op after a hooked layer: record copies instead
            return self._hooked(inputs, targets)
        unbatched = {m for m, r in calls if r.x.shape[0] != n or r.y.shape[0] != n}
        if unbatched:  # a layer that does not see samples first (e.g. positions [T])
            self._move_to_fallback(
                [p for m in unbatched for p in wanted[m].values()], "do not see samples first"
            )
            return self._hooked(inputs, targets) if self.plan.hooked else {}
        grads = torch.autograd.grad(total, [r.y for _, r in calls], allow_unused=True)
        by_module: dict[str, list[Call]] = defaultdict(list)
        for (m, r), g in zip(calls, grads):
            by_module[m].append(Call(r.x, torch.zeros_like(r.y) if g is None else g, r.buffers))
        parts: dict[str, list[Feature]] = defaultdict(list)
        for m, locals_ in wanted.items():
            rule = rule_for(modules[m])
            if by_module[m] and rule is not None:
                for local, feat in rule(modules[m], by_module[m], set(locals_)).items():
                    parts[locals_[local]].append(feat)
        out: dict[str, Feature] = {}
        for pname in self.plan.hooked:
            feats = parts.get(pname, [])
            if len(feats) == 1:
                out[pname] = feats[0]
            else:  # tied across hooked modules, or never called: sum of materialised parts
                G = torch.zeros(n, self.numels[pname], dtype=self.dtype, device=self.device)
                for f in feats:
                    G += f.materialise()
                out[pname] = Dense(G)
        if not self._checked:
            self._checked = True
            bad = self._check_first_sample(out, inputs, targets)
            if bad:
                self._move_to_fallback(
                    bad,
                    "give another gradient for sample 0 than a one-sample pass (used outside "
                    "their module's forward, e.g. tied weights, or a layer that mixes samples)",
                )
                return self._hooked(inputs, targets) if self.plan.hooked else {}
        return out

    def _wanted(self, modules: dict[str, nn.Module]) -> dict[str, dict[str, str]]:
        """Hooked module → {its local parameter name: selected parameter name}."""
        by_id = {id(p): k for k, p in self.model.named_parameters()}
        wanted: dict[str, dict[str, str]] = {}
        for pname, mods in self.plan.hooked.items():
            for m in mods:
                for local, p in modules[m]._parameters.items():
                    if p is not None and by_id[id(p)] == pname:
                        wanted.setdefault(m, {})[local] = pname
        return wanted

    def _check_first_sample(
        self, out: dict[str, Feature], inputs: Any, targets: torch.Tensor
    ) -> list[str]:
        """Hooked parameters whose gradient for sample 0 differs from a one-sample autograd pass.

        a parameter also used outside its module (weight tying, functional use) or a layer that
        mixes samples.
        """
        names = list(self.plan.hooked)
        theta = {k: t.detach().requires_grad_(k in names) for k, t in self.theta.items()}
        x = slice_samples(inputs, 0, 1)
        args = x if isinstance(x, tuple) else (x,)
        loss = sample_losses(
            self.loss_fn, functional_call(self.model, {**self._state(), **theta}, args), targets[:1]
        ).sum()
        true = torch.autograd.grad(loss, [theta[k] for k in names], allow_unused=True)
        return [
            k
            for k, g in zip(names, true)
            if not _close(out[k].select(0, 1).materialise()[0], g, self.dtype)
        ]

    def _move_to_fallback(self, names: list[str], why: str) -> None:
        hooked = {k: v for k, v in self.plan.hooked.items() if k not in names}
        fallback = {**self.plan.fallback, **{k: self.plan.hooked[k] for k in names}}
        order = {k: i for i, k in enumerate(self.names)}
        self.plan = GradientPlan(
            hooked=hooked, fallback=dict(sorted(fallback.items(), key=lambda kv: order[kv[0]]))
        )
        warnings.warn(
            f"parameters {sorted(set(names), key=order.__getitem__)} {why}: their per-sample "
            "gradients use the torch.func fallback",
            FallbackWarning,
            stacklevel=5,
        )
        self._warned = True


def _close(a: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype) -> bool:
    ref = torch.zeros_like(a) if b is None else b.reshape(-1)
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return bool((a - ref).abs().max() <= tol * max(scale, 1e-30)) if ref.numel() else True


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    t = t.detach()
    return t.to(dtype) if t.is_floating_point() else t
