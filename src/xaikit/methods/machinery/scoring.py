"""Forward-only evaluation shared by the perturbation, surrogate and Shapley methods.

Each of these methods builds perturbed copies of the samples (rows of a :class:`LazyInputs` batch), runs
them through :func:`xaikit.batching.batched_forward` in chunks and keeps only the explained scores. Because
one forward pass yields every output, such a method explains several targets at the price of one:
:meth:`_ForwardMethod.explain_targets`.
"""
from __future__ import annotations

import copy
import time
import warnings
from typing import Any, Sequence

import torch

from ...batching import batched_forward, check_batch_size, check_output
from ...errors import NotApplicable, check_input
from ...explanation import Explanation
from ...modes import eval_semantics
from ...targets import ResolvedTarget, TargetSpec, check_target, resolve_target
from ...tokens import check_per_token_kwargs, model_scores
from ..base import Method
from .features import LazyInputs
from .tokens_ids import token_baseline


def forward_output(model: torch.nn.Module, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """The model output on ``x`` without gradients, checked to be a tensor with a batch dimension."""
    with torch.no_grad():
        output = model_scores(model(x, *args, **kwargs))
    return check_output(output, x.shape[0])


def forward_scores(
    model: torch.nn.Module,
    inputs: torch.Tensor | LazyInputs,
    owner: torch.Tensor,
    targets: Sequence[ResolvedTarget],
    batch: int,
    forward_args: tuple = (),
    forward_kwargs: dict | None = None,
    batch_size: int | str = "auto",
    progress: bool = False,
    desc: str | None = None,
) -> torch.Tensor:
    """Scores ``(M, K)`` of the K targets on the M rows of ``inputs``; row m perturbs sample ``owner[m]``.

    Extra model inputs (``forward_args``/``forward_kwargs``) with a leading dimension ``batch`` follow their
    sample, so each perturbed row is evaluated with its own sample's attention mask and the like.
    """
    owner = owner.cpu()

    def reduce(output: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        rows_owner = owner[rows]
        return torch.stack([t.select(rows_owner).score(output) for t in targets], 1)

    scores = batched_forward(
        model, inputs, batch_size, owner=owner, batch=batch, forward_args=forward_args,
        forward_kwargs=forward_kwargs, reduce=reduce, progress=progress, desc=desc,
    )
    bad = ~torch.isfinite(scores)
    if bad.any():
        warnings.warn(
            f"the model gave NaN or infinite scores on {int(bad.any(1).sum())} of {scores.shape[0]} perturbed "
            f"inputs (samples {sorted(set(owner[bad.any(1).cpu()].tolist()))[:10]}); the attributions of those "
            "samples are NaN or infinite: check the model on perturbed inputs (e.g. the baseline)",
            UserWarning, stacklevel=4,
        )
    return scores


class _ForwardMethod(Method):
    """Base of the methods that need forward passes only (registered subclasses have public names).

    Subclasses implement :meth:`attribute`, which gets the K resolved targets and returns, per target, the
    attribution (shaped like ``x``) and an info dict. The model may be any callable ``x -> tensor of scores``
    (wrap a NumPy function with :class:`xaikit.NumpyModel`).
    """

    needs_module = None

    def __init__(self, model: torch.nn.Module, batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model)
        check_batch_size(batch_size)
        self.batch_size = batch_size
        self.progress = bool(progress)

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        return self._explain([target], x, forward_args, forward_kwargs)[0]

    def explain_targets(
        self,
        x: torch.Tensor,
        targets: Sequence[TargetSpec],
        *,
        forward_args: Sequence[Any] = (),
        forward_kwargs: dict[str, Any] | None = None,
    ) -> list[Explanation]:
        """Explain several targets from one set of forward passes: one :class:`Explanation` per target."""
        if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence) or len(targets) == 0:
            raise TypeError("targets must be a non-empty list of target specs, e.g. [281, 285] or [None, Contrast(1, 2)]")
        check_input(x, "x", self.model, allow_int=self.allow_integer_input)
        if not isinstance(forward_args, (tuple, list)):
            raise TypeError(f"forward_args must be a tuple of extra positional inputs, got {type(forward_args).__name__}")
        if forward_kwargs is not None and not isinstance(forward_kwargs, dict):
            raise TypeError(f"forward_kwargs must be a dict of keyword inputs, got {type(forward_kwargs).__name__}")
        for target in targets:
            check_target(target, x.shape[0])
        began = time.perf_counter()
        with eval_semantics(self.model):
            explanations = self._explain(list(targets), x, tuple(forward_args), dict(forward_kwargs or {}))
        for expl in explanations:
            expl.info.setdefault("time_s", time.perf_counter() - began)
        return explanations

    #: token ids are perturbed by switching tokens to a mask token (see :mod:`xaikit.methods.machinery.tokens_ids`)
    allow_integer_input = True
    #: why a method of this family does not apply to token ids (``None``: it does)
    not_for_token_ids: str | None = None

    def _explain(self, specs: list, x: torch.Tensor, args: tuple, kwargs: dict) -> list[Explanation]:
        x = x.detach()
        if not x.is_floating_point():
            return self._explain_ids(specs, x, args, kwargs)
        return self._run(specs, x, args, kwargs)

    def _run(self, specs: list, x: torch.Tensor, args: tuple, kwargs: dict) -> list[Explanation]:
        output = forward_output(self.model, x, args, kwargs)
        targets = [resolve_target(spec, output) for spec in specs]
        results = self.attribute(x, targets, output, args, kwargs)
        return [Explanation(a, t.index, output, self.name, info) for (a, info), t in zip(results, targets)]

    def _explain_ids(self, specs: list, ids: torch.Tensor, args: tuple, kwargs: dict) -> list[Explanation]:
        """Token ids: one feature per token, switched off by the mask token's id (the baseline)."""
        if self.not_for_token_ids:
            raise NotApplicable(f"{self.name} does not apply to token ids: {self.not_for_token_ids}")
        if ids.ndim != 2:
            raise ValueError(f"token ids x must have shape (batch, length), got {tuple(ids.shape)}")
        check_per_token_kwargs(ids.shape[0], ids.shape[1], kwargs)
        given = getattr(self, "baseline", None)
        twin = copy.copy(self)
        twin.baseline = token_baseline(self.model, given, self.name)
        explanations = twin._run(specs, ids, args, kwargs)
        for expl in explanations:
            expl.info["tokens"] = f"masked with token id {twin.baseline}"
        return explanations

    def attribute(
        self, x: torch.Tensor, targets: list[ResolvedTarget], output: torch.Tensor, args: tuple, kwargs: dict
    ) -> list[tuple[torch.Tensor, dict]]:
        raise NotImplementedError

    def scores(
        self, inputs: torch.Tensor | LazyInputs, owner: torch.Tensor, targets: Sequence[ResolvedTarget],
        batch: int, args: tuple, kwargs: dict, desc: str | None = None,
    ) -> torch.Tensor:
        """:func:`forward_scores` with this method's model, batch size and progress setting."""
        return forward_scores(
            self.model, inputs, owner, targets, batch, args, kwargs, self.batch_size, self.progress,
            desc or self.name,
        )
