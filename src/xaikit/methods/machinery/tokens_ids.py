"""Methods on token ids: every method gets a meaning on a language model's integer inputs (issue 18).

Token ids have no gradient and cannot be blended, so each family reads them its own way:

- **Gradient-path methods** (Integrated Gradients, SmoothGrad; Gradient, InputXGradient and LRP natively)
  work in the space of the input-embedding vectors: the method explains :class:`EmbeddingSpace`, the model
  as a function of the vectors ``e`` of the ids, and a token's relevance is the sum of its attribution over
  the embedding dimension (the L2 norm for a plain gradient). Integrated Gradients then integrates from the
  baseline vectors (zero by default) to ``e``, and its completeness holds per sequence; SmoothGrad adds its
  noise to ``e``.
- **Perturbation, surrogate and Shapley methods** (Occlusion, LIME, KernelSHAP, ExactShapley,
  PermutationShapley) switch tokens off by replacing their ids with a *mask token*, one feature per token,
  as the peer libraries do: ``baseline=`` the mask token's id (for example ``tokenizer.mask_token_id``);
  by default the model's ``config.mask_token_id`` or ``config.pad_token_id``, where it has one.
- Methods that blend inputs (RISE, MeaningfulPerturbation) or read a spatial layer (Grad-CAM) do not apply
  to token ids and say so.

Placeholder ids: :class:`EmbeddingSpace` calls the model on ids of zeros whose embedding output is replaced
by the vectors, so a model that reads its ids for anything other than the embedding lookup (for example
position ids derived from padding) sees zeros there.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ...explanation import Explanation
from ...modes import FollowsModel
from ...tokens import TokenInput


class EmbeddingSpace(FollowsModel, nn.Module):
    """``model`` as a function of its input-embedding vectors ``(N, L, D)`` (see the module docstring); its
    training flag is the model's."""

    wrapped = "inner"

    def __init__(self, model: nn.Module, tokens: TokenInput) -> None:
        super().__init__()
        self.inner = model
        self.tokens = tokens

    def forward(self, vectors: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        ids = torch.zeros(vectors.shape[:2], dtype=torch.long, device=vectors.device)
        with self.tokens.substituted(vectors):
            return self.inner(ids, *args, **kwargs)


def _on_model(method: Any, old: nn.Module, new: nn.Module) -> Any:
    """A shallow copy of ``method`` (and of the methods it wraps) that explains ``new`` instead of ``old``."""
    twin = copy.copy(method)
    twin.model = new
    for key, value in vars(method).items():
        if key != "model" and getattr(value, "model", None) is old and hasattr(value, "explain"):
            setattr(twin, key, _on_model(value, old, new))
    return twin


def explain_in_embedding_space(method: Any, ids: torch.Tensor, target: Any, args: tuple,
                               kwargs: dict[str, Any]) -> Explanation:
    """Run ``method`` on the embedding vectors of ``ids`` and reduce its attribution to one value per token."""
    tokens = TokenInput(method.model, getattr(method, "embedding", None))
    tokens.check(ids, kwargs)
    vectors = tokens.embed(ids)
    twin = _on_model(method, method.model, EmbeddingSpace(method.model, tokens))
    expl = twin.explain(vectors, target, args, kwargs)
    attribution = expl.attribution
    reduction = method.token_reduction
    per_token = attribution.norm(dim=-1) if reduction == "norm" else attribution.sum(-1)
    info = {**expl.info, "tokens": f"embedding space, {reduction} over the embedding dimension"}
    return Explanation(per_token, expl.target, expl.output, expl.method, info)


def token_baseline(model: Any, baseline: Any, method: str) -> int:
    """The id that switches a token off: ``baseline`` if it is an int, else the model's mask or pad token."""
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        return baseline
    if baseline not in (None, "zero"):
        raise ValueError(
            f"{method} on token ids replaces tokens with a mask token: baseline must be that token's id "
            f"(e.g. baseline=tokenizer.mask_token_id), got {baseline!r}"
        )
    modules = model.modules() if isinstance(model, nn.Module) else [model]
    for module in modules:
        config = getattr(module, "config", None)
        for key in ("mask_token_id", "pad_token_id"):
            value = getattr(config, key, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    raise ValueError(
        f"{method} on token ids replaces tokens with a mask token, and the model names none (no "
        "config.mask_token_id or config.pad_token_id): pass baseline=<mask token id>, e.g. "
        "baseline=tokenizer.mask_token_id"
    )
