"""Explain what a causal language model generates: every generated token at once, or a whole answer.

- :func:`explain_generation`: the prompt is continued greedily (or by a given continuation) and each generated
  token ``g_j`` is explained by the logit that chose it, read at the position before it. The result is a
  tokens × generated matrix per sequence: ``R[n, i, j]`` is the relevance of token ``i`` of the sequence
  (prompt and the tokens generated before ``g_j``; later tokens get 0 in a causal model) for ``g_j``.
  All ``G`` targets are explained in one method call: the sequence is repeated once per generated token and
  each copy gets its own target (:class:`~xaikit.generation.TokenLogits`), so the forward and backward
  passes run batched (chunked under the memory budget), not one backward pass per token in a Python loop.
- :func:`explain_answer`: the sum of the logits of an answer's tokens (a multi-token target) explained in one
  pass: by the linearity of the rules in the starting relevance, this equals the row sum of the matrix of
  :func:`explain_generation` for the same answer.

Sequences are laid out left-padded (the prompt's padding moved to the left, the continuation appended), with
the attention mask and position ids over the real tokens (:func:`~xaikit.generation.padding.sequence_inputs`),
so a sequence gets the same relevance whichever side its batch was padded on, and alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..deprecation import renamed
from ..methods.base import Method
from ..methods.resolve import DEFAULT_METHODS, resolve_method
from ..modes import eval_semantics
from ..results import ResultExport
from ..tokens import model_scores
from .padding import accepts, check_mask, repad, sequence_inputs
from .targets import TokenLogits


@dataclass
class GenerationResult(ResultExport):
    """Relevance of the tokens of prompt + continuation for the generated tokens (or for a whole answer).

    Attributes
    ----------
    relevance : torch.Tensor
        ``(N, L, G)``: relevance of token ``i`` of ``sequences[n]`` for generated token ``j``
        (:func:`explain_answer`: ``G = 1``, the answer as a whole). Padding and tokens after a sequence's end
        are 0.
    sequences : torch.Tensor
        ``(N, L)`` token ids, prompt then continuation, left-padded.
    attention_mask : torch.Tensor
        ``(N, L)`` 1 for the real tokens of ``sequences``.
    generated : torch.Tensor
        ``(N, G)`` the continuation's ids; ``generated_mask`` ``(N, G)`` marks those explained (a sequence that
        ended with ``eos_token_id`` has no tokens after it).
    prompt_length : int
        ``L − G``: the continuation starts at this column of ``sequences``.
    scores : torch.Tensor
        ``(N, G)`` the explained logits (the relevance a conservative method distributes).
    method : str
    info : dict
        The method's ``info`` (e.g. LRP's ``coverage``), with its per-row entries (``conservation``) as
        ``(N, G)`` tensors.
    """

    relevance: torch.Tensor
    sequences: torch.Tensor
    attention_mask: torch.Tensor
    generated: torch.Tensor
    generated_mask: torch.Tensor
    prompt_length: int
    scores: torch.Tensor
    method: str
    info: dict[str, Any] = field(default_factory=dict)

    def _rows(self) -> list[dict[str, Any]]:
        """One row per explained generated token (:func:`explain_answer`: per answer): its sequence, step, token
        id(s) and explained logit, the relevance of the prompt and that of the tokens after it (the matrix itself
        is a tensor: ``.relevance``)."""
        prompt = self.relevance[:, :self.prompt_length].sum(1)  # (N, G)
        rest = self.relevance.sum(1) - prompt
        if self.relevance.shape[-1] != self.generated.shape[1]:  # one answer per sequence
            return [{"sequence": n, "step": 0,
                     "token": self.generated[n][self.generated_mask[n].bool()].tolist(),
                     "score": float(self.scores[n, 0]), "prompt_relevance": float(prompt[n, 0]),
                     "generated_relevance": float(rest[n, 0])} for n in range(self.generated.shape[0])]
        return [{"sequence": n, "step": j, "token": int(self.generated[n, j]), "score": float(self.scores[n, j]),
                 "prompt_relevance": float(prompt[n, j]), "generated_relevance": float(rest[n, j])}
                for n, j in self.generated_mask.nonzero().tolist()]

    def answer(self) -> torch.Tensor:
        """``(N, L)`` relevance for the sum of the explained logits (the continuation as one answer)."""
        return self.relevance.sum(-1)


def _check_method(method: Any, model: Any = None, method_settings: dict[str, Any] | None = None) -> Method:
    """The method of a generation explanation: a method object, or a name or spec (default
    ``DEFAULT_METHODS["transformer"]``, LRP with ``attnlrp``) built on ``model``."""
    if not isinstance(method, Method):
        if model is None:
            raise TypeError(f"method must be an xaikit method such as xk.LRP(model, composite='attnlrp'), got "
                            f"{type(method).__name__}; or give model= with a method name or spec such as "
                            "'lrp:composite=attnlrp'")
        method = resolve_method(model, method, method_settings, default=DEFAULT_METHODS["transformer"])
    elif model is not None and method.model is not model:
        raise ValueError(f"method {method.name} was built on another model than model=; give one of them")
    elif method_settings:
        raise ValueError("method_settings apply to a method given by name or spec; configure the method object")
    if not method.allow_integer_input:
        raise TypeError(f"method {method.name} does not explain token ids; use one that does "
                        "(LRP, InputXGradient, Gradient)")
    if getattr(getattr(method.model, "config", None), "is_encoder_decoder", False):
        raise ValueError("explain_generation and explain_answer are for decoder-only language models; explain an "
                         "encoder–decoder's output tokens with target=TokenLogits(...) and "
                         "forward_kwargs={'decoder_input_ids': ...}")
    return method


def _check_ids(ids: Any, name: str) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.dtype == torch.bool:
        got = f"dtype {ids.dtype}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise TypeError(f"{name} must be an integer tensor of token ids (batch, length), got {got}")
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"{name} must have shape (batch, length) with length > 0, got {tuple(ids.shape)}")
    return ids


@torch.no_grad()
def greedy_continuation(model: torch.nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor,
                        max_new_tokens: int, eos_token_id: int | None = None,
                        forward_kwargs: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding of left-padded prompts: ``(N, G)`` new token ids and the mask of those before and at an
    end-of-sequence token. One full forward pass per new token (no key/value cache: for long continuations,
    generate with the model's own ``generate`` and pass the result as ``continuation``)."""
    with eval_semantics(model):  # deterministic decoding (no dropout); the model's flags restored after
        return _greedy(model, ids, attention_mask, max_new_tokens, eos_token_id, forward_kwargs)


def _greedy(model, ids, attention_mask, max_new_tokens, eos_token_id, forward_kwargs):
    tokens, done = [], torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    masks = []
    for _ in range(max_new_tokens):
        kwargs = sequence_inputs(model, attention_mask, **(forward_kwargs or {}))
        logits = model_scores(model(ids, **kwargs))
        if not isinstance(logits, torch.Tensor) or logits.ndim != 3:
            raise ValueError("the model must return logits of shape (batch, length, vocabulary) (or an output "
                             "with .logits) to generate")
        new = logits[:, -1].argmax(-1)
        real = (~done).long()  # a token after the end is padding
        masks.append(real)
        tokens.append(new)
        if eos_token_id is not None:
            done = done | (new == eos_token_id)
        ids = torch.cat([ids, new[:, None]], 1)
        attention_mask = torch.cat([attention_mask, real[:, None]], 1)
    return torch.stack(tokens, 1), torch.stack(masks, 1)


def explain_generation(method: Method | str | None, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       max_new_tokens: int = 16, continuation: torch.Tensor | None = None,
                       eos_token_id: int | None = None, forward_kwargs: dict[str, Any] | None = None, *,
                       model: torch.nn.Module | None = None,
                       method_settings: dict[str, Any] | None = None) -> GenerationResult:
    """Explain every token a causal language model generates after ``ids``, in one method call.

    Parameters
    ----------
    method : Method, str or None
        An xaikit method that explains token ids, e.g. ``xk.LRP(model, composite="attnlrp")``,
        ``xk.InputXGradient(model)``; its model returns logits ``(N, L, V)`` (or an output with ``.logits``).
        With ``model=``: a name or spec (``"lrp:composite=cp_lrp"``, ``"input_x_gradient"``) built on it, or
        ``None`` for ``DEFAULT_METHODS["transformer"]`` (LRP with ``attnlrp``).
    ids : LongTensor ``(N, P)``
        The prompts, padded on either side.
    attention_mask : tensor ``(N, P)``, optional
        1 for tokens, 0 for padding.
    max_new_tokens : int
        Length of the greedy continuation (ignored when ``continuation`` is given).
    continuation : LongTensor ``(N, G)``, optional
        The generated tokens to explain (e.g. from ``model.generate``); all count as real tokens.
    eos_token_id : int, optional
        Greedy decoding: a sequence ends at this token (later tokens are padding and not explained).
    forward_kwargs : dict, optional
        Further keyword inputs of the model (not per-token ones: the mask and positions are built here).
    model : nn.Module, optional
        The language model, for a method given by name or spec.
    method_settings : dict, optional
        Settings added to a method given by name or spec.

    Returns
    -------
    GenerationResult
        ``relevance`` ``(N, P + G, G)``: the tokens × generated matrix of each sequence.
    """
    method = _check_method(method, model, method_settings)
    ids = _check_ids(ids, "ids")
    mask = check_mask(ids, attention_mask)
    given = dict(forward_kwargs or {})
    for key in ("attention_mask", "position_ids"):
        if key in given:
            raise ValueError(f"forward_kwargs[{key!r}] is built by explain_generation; pass attention_mask= instead")
    ids, mask = repad(ids, mask, "left")
    if continuation is None:
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        continuation, explained = greedy_continuation(method.model, ids, mask, max_new_tokens, eos_token_id, given)
    else:
        continuation = _check_ids(continuation, "continuation")
        if continuation.shape[0] != ids.shape[0]:
            raise ValueError(f"continuation has {continuation.shape[0]} sequences, ids has {ids.shape[0]}")
        explained = torch.ones_like(continuation)
    prompt, steps = ids.shape[1], continuation.shape[1]
    sequences = torch.cat([ids, continuation], 1)
    full_mask = torch.cat([mask, explained], 1)
    rows, step = explained.bool().cpu().nonzero(as_tuple=True)  # one copy per (sequence, generated token)
    target = TokenLogits((prompt - 1 + step)[:, None], continuation.cpu()[rows, step][:, None])
    result = _explain_rows(method, sequences, full_mask, rows, target, steps + 1, given)
    relevance = torch.zeros(*sequences.shape, steps, dtype=result.attribution.dtype)
    relevance[rows, :, step] = result.attribution.detach().cpu()
    return _result(result, relevance, sequences, full_mask, continuation, explained, prompt, rows, step)


def explain_answer(method: Method | str | None, ids: torch.Tensor, answer: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, answer_mask: torch.Tensor | None = None,
                   forward_kwargs: dict[str, Any] | None = None, *, model: torch.nn.Module | None = None,
                   method_settings: dict[str, Any] | None = None) -> GenerationResult:
    """Explain the sum of the logits of an answer's tokens given a prompt (a multi-token target), in one pass.

    ``ids`` ``(N, P)`` (with ``attention_mask``) are the prompts, ``answer`` ``(N, A)`` the answers (with
    ``answer_mask`` ``(N, A)``: 1 for the tokens of answers shorter than ``A``, which must come first). The
    target is ``Σ_k logit(answer_k | prompt, answer_<k)``; ``relevance`` is ``(N, P + A, 1)``. ``method``,
    ``model`` and ``method_settings`` as for :func:`explain_generation`.
    """
    method = _check_method(method, model, method_settings)
    ids, answer = _check_ids(ids, "ids"), _check_ids(answer, "answer")
    if answer.shape[0] != ids.shape[0]:
        raise ValueError(f"answer has {answer.shape[0]} sequences, ids has {ids.shape[0]}")
    mask = check_mask(ids, attention_mask)
    answer_mask = check_mask(answer, answer_mask, "answer_mask")
    if bool((answer_mask[:, 1:] > answer_mask[:, :-1]).any()):
        raise ValueError("answer_mask must mark each answer's tokens first and its padding after them")
    ids, mask = repad(ids, mask, "left")
    prompt, steps = ids.shape[1], answer.shape[1]
    sequences, full_mask = torch.cat([ids, answer], 1), torch.cat([mask, answer_mask], 1)
    positions = torch.arange(prompt - 1, prompt - 1 + steps).expand(ids.shape[0], -1)
    rows = torch.arange(ids.shape[0])
    target = TokenLogits(positions, answer.cpu(), answer_mask.bool().cpu())
    result = _explain_rows(method, sequences, full_mask, rows, target, steps + 1, dict(forward_kwargs or {}))
    relevance = result.attribution.detach().cpu()[:, :, None]
    return _result(result, relevance, sequences, full_mask, answer, answer_mask, prompt, rows, torch.zeros_like(rows))


def _explain_rows(method: Method, sequences: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor,
                  target: TokenLogits, last: int, given: dict[str, Any]):
    """One method call on the sequences ``rows`` (repeats allowed). Models that take ``logits_to_keep``
    (Hugging Face causal LMs) compute the logits of the ``last`` positions only, where all targets are."""
    kwargs = sequence_inputs(method.model, mask[rows], **given)
    if "logits_to_keep" not in kwargs and accepts(method.model, "logits_to_keep"):
        kwargs["logits_to_keep"] = last
        target = TokenLogits(target.positions - (sequences.shape[1] - last), target.tokens, target.mask)
    expl = method(sequences[rows], target, forward_kwargs=kwargs)
    if expl.attribution.shape != sequences[rows].shape:
        raise ValueError(f"the method returned attributions of shape {tuple(expl.attribution.shape)}, not one value "
                         f"per token {tuple(sequences[rows].shape)}")
    return expl


def _result(expl, relevance, sequences, mask, generated, explained, prompt, rows, step) -> GenerationResult:
    shape = generated.shape if relevance.shape[-1] > 1 else (generated.shape[0], 1)
    score = expl.info.get("conservation", {}).get("start", expl.info.get("score"))
    scores = torch.zeros(shape, dtype=expl.attribution.dtype if score is None else score.dtype)
    if score is not None:
        scores[rows, step] = score.detach().cpu()
    info = {k: v for k, v in expl.info.items() if k not in ("conservation", "score")}
    if "conservation" in expl.info:
        info["conservation"] = {}
        for key, value in expl.info["conservation"].items():
            if isinstance(value, dict):  # absorbed_by: one table per operation
                info["conservation"][key] = {op: _table(shape, rows, step, v) for op, v in value.items()}
            else:
                info["conservation"][key] = _table(shape, rows, step, value)
    return GenerationResult(relevance, sequences, mask, generated, explained, prompt, scores, expl.method, info)


def _table(shape: tuple, rows, step: int, value: torch.Tensor) -> torch.Tensor:
    """A per-row value of one generation step, placed in a (sequences, steps) table of zeros."""
    table = torch.zeros(shape, dtype=value.dtype)
    table[rows, step] = value.detach().cpu()
    return table


__getattr__ = renamed(__name__, {"GenerationExplanation": "GenerationResult"}, globals())
