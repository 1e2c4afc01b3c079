"""Greedy decoding with a key/value cache, and reading the outputs of Hugging Face ``generate`` as they are.

:func:`greedy_continuation` runs the prompts once and then one new token per step on the model's key/value
cache (``cache`` or ``past_key_values``, ``use_cache=True``: Hugging Face causal LMs), so generating ``G``
tokens costs one forward pass over the prompt and ``G − 1`` passes over one token each; a model without a
cache gets one full forward pass per new token. :func:`split_generate_output` takes what ``model.generate`` returns (the prompt
followed by the new tokens, or a ``GenerateDecoderOnlyOutput`` with ``.sequences``) and gives the new tokens and
which of them were generated before the end-of-sequence token.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..modes import eval_semantics
from ..tokens import model_scores
from .padding import accepts, position_ids, sequence_inputs


def _logits(out: Any) -> torch.Tensor:
    logits = model_scores(out)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
        raise ValueError("the model must return logits of shape (batch, length, vocabulary) (or an output with "
                         ".logits) to generate")
    return logits


def cache_argument(model: nn.Module) -> str | None:
    """The keyword of the model's key/value cache (Hugging Face: ``cache`` since transformers 5,
    ``past_key_values`` before), ``None`` without one (or without ``use_cache``)."""
    if not accepts(model, "use_cache"):
        return None
    return next((name for name in ("cache", "past_key_values") if accepts(model, name)), None)


def uses_cache(model: nn.Module) -> bool:
    """Whether the model takes a key/value cache (``cache`` or ``past_key_values``, and ``use_cache``)."""
    return cache_argument(model) is not None


@torch.no_grad()
def greedy_continuation(model: nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor,
                        max_new_tokens: int, eos_token_id: int | None = None,
                        forward_kwargs: dict[str, Any] | None = None,
                        cache: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding of left-padded prompts: ``(N, G)`` new token ids and the mask of those up to and including
    an end-of-sequence token.

    ``cache``: use the model's key/value cache (default: when its ``forward`` takes ``past_key_values`` and
    ``use_cache``); ``False`` runs one full forward pass per new token (what a model without a cache needs).
    """
    with eval_semantics(model):  # deterministic decoding (no dropout); the model's flags restored after
        if cache is None:
            cache = uses_cache(model)
        if cache:
            return _cached(model, ids, attention_mask, max_new_tokens, eos_token_id, forward_kwargs or {})
        return _uncached(model, ids, attention_mask, max_new_tokens, eos_token_id, forward_kwargs or {})


def _step(new: torch.Tensor, done: torch.Tensor, eos_token_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    real = (~done).long()  # a token after the end is padding
    if eos_token_id is not None:
        done = done | (new == eos_token_id)
    return real, done


def _uncached(model, ids, attention_mask, max_new_tokens, eos_token_id, given):
    tokens, masks = [], []
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        new = _logits(model(ids, **sequence_inputs(model, attention_mask, **given)))[:, -1].argmax(-1)
        real, done = _step(new, done, eos_token_id)
        tokens.append(new)
        masks.append(real)
        ids = torch.cat([ids, new[:, None]], 1)
        attention_mask = torch.cat([attention_mask, real[:, None]], 1)
    return torch.stack(tokens, 1), torch.stack(masks, 1)


def _cached(model, ids, attention_mask, max_new_tokens, eos_token_id, given):
    """The prompt once, then one token per step on the cache (positions over the real tokens, as ``generate``)."""
    keep = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    name = cache_argument(model)
    kwargs = sequence_inputs(model, attention_mask, **given)
    out = model(ids, use_cache=True, **keep, **kwargs)
    tokens, masks = [], []
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for step in range(max_new_tokens):
        new = _logits(out)[:, -1].argmax(-1)
        real, done = _step(new, done, eos_token_id)
        tokens.append(new)
        masks.append(real)
        if step == max_new_tokens - 1:
            break
        attention_mask = torch.cat([attention_mask, real[:, None]], 1)
        step_kwargs = {**given, "attention_mask": attention_mask}
        if "position_ids" in kwargs:
            step_kwargs["position_ids"] = position_ids(attention_mask)[:, -1:]
        step_kwargs[name] = getattr(out, name, None)
        if step_kwargs[name] is None:
            raise ValueError(f"the model returned no key/value cache (.{name}) with use_cache=True; decode with "
                             "cache=False")
        out = model(new[:, None], use_cache=True, **step_kwargs)
    return torch.stack(tokens, 1), torch.stack(masks, 1)


def split_generate_output(output: Any, ids: torch.Tensor, eos_token_id: int | None = None,
                          pad_token_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The new tokens ``(N, G)`` of a Hugging Face ``generate`` output and the mask of those generated (1 up to
    and including the first ``eos_token_id``; ``generate`` fills the rest with ``pad_token_id``).

    ``output``: the tensor ``generate`` returns (the prompts ``ids`` as given, then the new tokens) or its
    ``GenerateDecoderOnlyOutput`` (``return_dict_in_generate=True``; its ``.sequences``). The prompt columns must
    equal ``ids`` (a ``ValueError`` otherwise: pass the new tokens alone as ``continuation``).
    """
    sequences = getattr(output, "sequences", output)
    if not isinstance(sequences, torch.Tensor) or sequences.ndim != 2:
        raise TypeError(f"a generate output must be a tensor (batch, length) or have .sequences, got "
                        f"{type(output).__name__}")
    prompt = ids.shape[1]
    if sequences.shape[0] != ids.shape[0] or sequences.shape[1] <= prompt or \
            not torch.equal(sequences[:, :prompt].to(ids.device), ids):
        raise ValueError(f"generate_output of shape {tuple(sequences.shape)} does not start with the prompts ids "
                         f"{tuple(ids.shape)}; give the ids passed to generate (as padded there), or pass the new "
                         "tokens alone as continuation=")
    new = sequences[:, prompt:].to(ids.device)
    explained = torch.ones_like(new)
    if eos_token_id is not None:
        ended = (new == eos_token_id).long().cumsum(1)
        explained = (torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], 1) == 0).long()
    elif pad_token_id is not None:
        explained = (new != pad_token_id).long().cumprod(1)
    return new, explained
