"""Explain what a causal language model generates: every generated token at once, or a whole answer.

- :func:`explain_generation`: the prompt is continued greedily (or by a given continuation) and each generated
  token ``g_j`` is explained by the logit that chose it, read at the position before it. The result is a
  tokens × generated matrix per sequence: ``R[n, i, j]`` is the relevance of token ``i`` of the sequence
  (prompt and the tokens generated before ``g_j``; later tokens get 0 in a causal model) for ``g_j``.
  The continuation is decoded on the model's key/value cache (:mod:`.decode`), or read from a Hugging Face
  ``generate`` output as it is. For LRP, ``Gradient`` and ``InputXGradient`` the sequences run forward once
  and each generated token is one backward pass on that graph (:mod:`.columns`): the prompt's forward is shared
  by all ``G`` targets. Other methods get one copy of the sequence per generated token in one batched call.
- :func:`explain_answer`: a whole answer, the sum of its tokens' logits or (``score="log_prob"``) its
  log-likelihood, explained in one forward and one backward pass: by the linearity of the rules in the
  starting relevance, this equals the row sum of the matrix of :func:`explain_generation` for the same answer.

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
from ..propagation.remat import position_limit
from ..results import ResultExport
from .columns import relevance_columns
from .decode import greedy_continuation, split_generate_output
from .padding import check_mask, repad
from .targets import TokenLogits, TokenLogProbs


@dataclass
class GenerationResult(ResultExport):
    """Relevance of the tokens of prompt + continuation for the generated tokens (or for a whole answer).

    Attributes
    ----------
    relevance : torch.Tensor
        ``(N, L, G)``: relevance of token ``i`` of ``sequences[n]`` for generated token ``j``
        (:func:`explain_answer` and ``explain_generation(..., per_token=False)``: one column, the answer as a
        whole). Padding and tokens after a sequence's end
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
        ``(N, G)`` the explained values: logits, or log-probabilities with ``score="log_prob"`` (``info["score"]``).
    method : str
    info : dict
        ``score`` (``"logit"`` or ``"log_prob"``), ``per_token`` (one column per generated token, or one for
        the answer), ``shared_forward`` (one forward pass served every column), and
        the method's ``info`` (LRP: ``coverage``; ``conservation`` with ``(N, G)`` tables: ``start``, ``input``,
        ``absorbed``, ``residual``, ``absorbed_by``; a log-probability's log-softmax bias, minus the entropy, is
        absorbed by ``"log_softmax:taylor"``).
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
        if not self.info.get("per_token", self.relevance.shape[-1] == self.generated.shape[1]):  # one answer
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
    if not (method.allow_integer_input or getattr(method, "token_mode", None) == "embedding"):
        raise TypeError(f"method {method.name} does not explain token ids; use one that does "
                        "(LRP, InputXGradient, Gradient, IntegratedGradients)")
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


#: what a generated token or an answer is explained by: its logit, or its log-probability (log-softmax)
SCORES = ("logit", "log_prob")


def _check_score(score: str) -> type[TokenLogits]:
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, SCORES))} (the explained value of each "
                         f"token), got {score!r}")
    return TokenLogProbs if score == "log_prob" else TokenLogits


def _vocabulary(model: torch.nn.Module) -> int | None:
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if size is None:
        getter = getattr(model, "get_output_embeddings", None)
        head = getter() if callable(getter) else None
        size = getattr(head, "out_features", None)
    return int(size) if isinstance(size, int) else None


def _check_vocabulary(model: torch.nn.Module, ids: torch.Tensor, name: str, mask: torch.Tensor | None = None) -> None:
    """Token ids of ``name`` within the model's vocabulary (its config's ``vocab_size``, else its output layer's
    width), with the argument named; masked positions (padding) are not checked."""
    values = ids if mask is None else ids[mask.bool()]
    size = _vocabulary(model)
    if values.numel() == 0:
        return
    low, high = int(values.min()), int(values.max())
    if low < 0 or (size is not None and high >= size):
        bad = low if low < 0 else high
        valid = f"0..{size - 1}" if size is not None else ">= 0"
        raise ValueError(f"{name} holds token id {bad}, outside the model's vocabulary (valid: {valid}); use ids "
                         "of the model's own tokenizer")


def _check_positions(model: torch.nn.Module, prompt: int, steps: int, name: str) -> None:
    """Refuse a prompt of ``prompt`` real tokens (the longest of the batch) and ``steps`` new ones beyond the
    model's position limit (``config.max_position_embeddings`` or ``n_positions``) before anything runs: rotary
    models would compute positions they were not configured for, learned position tables fail to index."""
    limit = position_limit(model)
    if limit is not None and prompt + steps > limit:
        raise ValueError(f"the longest prompt of ids has {prompt} tokens and {name} adds {steps}: "
                         f"{prompt + steps} tokens, more than the model's position limit ({limit}, "
                         f"config.max_position_embeddings); shorten the prompt or {name} to at most {limit} tokens "
                         "together")


def explain_generation(method: Method | str | None, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       max_new_tokens: int = 16, continuation: Any = None,
                       eos_token_id: int | None = None, forward_kwargs: dict[str, Any] | None = None, *,
                       score: str = "logit", per_token: bool = True, model: torch.nn.Module | None = None,
                       method_settings: dict[str, Any] | None = None) -> GenerationResult:
    """Explain every token a causal language model generates after ``ids``: the tokens × generated matrix, or
    (``per_token=False``) the generated answer as a whole.

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
        Length of the greedy continuation (ignored when ``continuation`` is given). Decoded on the model's
        key/value cache when it has one (:func:`~xaikit.generation.decode.greedy_continuation`).
    continuation : LongTensor ``(N, G)``, or a Hugging Face ``generate`` output, optional
        The generated tokens to explain: the new tokens alone (all explained), or what ``model.generate(ids,
        attention_mask=...)`` returned, as it is (the prompts then the new tokens, or an output with
        ``.sequences``; tokens after ``eos_token_id`` are not explained).
    eos_token_id : int, optional
        A sequence ends at this token (later tokens are padding and not explained). Default for a ``generate``
        output: the model's ``generation_config.eos_token_id``.
    forward_kwargs : dict, optional
        Further keyword inputs of the model (not per-token ones: the mask and positions are built here).
    score : "logit" or "log_prob"
        Explain each generated token's logit (default) or its log-probability
        (:class:`~xaikit.generation.TokenLogProbs`).
    per_token : bool
        ``True`` (default): one column per generated token, the matrix (one backward pass per generated token).
        ``False``: one column, the whole continuation as one answer (the sum of its tokens' logits, with
        ``score="log_prob"`` its log-likelihood), in one forward and one backward pass after the generation:
        :func:`explain_answer` of the generated tokens, equal to the matrix's row sums (:meth:`GenerationResult.
        answer`) at the cost of one of its columns.
    model : nn.Module, optional
        The language model, for a method given by name or spec.
    method_settings : dict, optional
        Settings added to a method given by name or spec.

    Returns
    -------
    GenerationResult
        ``relevance`` ``(N, P + G, G)``: the tokens × generated matrix of each sequence; ``(N, P + G, 1)`` with
        ``per_token=False`` (``info["per_token"]`` says which).

    Notes
    -----
    For LRP, ``Gradient`` and ``InputXGradient`` the sequences (prompt and continuation) run forward once and
    each generated token is one backward pass on that graph (:mod:`~xaikit.generation.columns`;
    ``info["shared_forward"]``); other methods explain one copy of the sequence per generated token, batched.
    """
    method = _check_method(method, model, method_settings)
    kind = _check_score(score)
    if not isinstance(per_token, bool):
        raise TypeError(f"per_token must be True (the tokens × generated matrix) or False (the answer as a whole), "
                        f"got {per_token!r}")
    ids = _check_ids(ids, "ids")
    mask = check_mask(ids, attention_mask)
    _check_vocabulary(method.model, ids, "ids", mask)
    given = dict(forward_kwargs or {})
    for key in ("attention_mask", "position_ids"):
        if key in given:
            raise ValueError(f"forward_kwargs[{key!r}] is built by explain_generation; pass attention_mask= instead")
    if continuation is not None and (hasattr(continuation, "sequences") or (
            isinstance(continuation, torch.Tensor) and continuation.ndim == 2 and continuation.shape[1] > ids.shape[1]
            and continuation.shape[0] == ids.shape[0] and torch.equal(continuation[:, :ids.shape[1]], ids))):
        if eos_token_id is None:
            eos_token_id = _eos(method.model)
        continuation, explained = split_generate_output(continuation, ids, eos_token_id)
        _check_positions(method.model, int(mask.sum(1).max()), continuation.shape[1], "continuation")
        ids, mask = repad(ids, mask, "left")
    elif continuation is None:
        ids, mask = repad(ids, mask, "left")
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        _check_positions(method.model, int(mask.sum(1).max()), max_new_tokens, "max_new_tokens")
        continuation, explained = greedy_continuation(method.model, ids, mask, max_new_tokens, eos_token_id, given)
    else:
        ids, mask = repad(ids, mask, "left")
        continuation = _check_ids(continuation, "continuation")
        if continuation.shape[0] != ids.shape[0]:
            raise ValueError(f"continuation has {continuation.shape[0]} sequences, ids has {ids.shape[0]}")
        _check_positions(method.model, int(mask.sum(1).max()), continuation.shape[1], "continuation")
        explained = torch.ones_like(continuation)
    _check_vocabulary(method.model, continuation, "continuation", explained)
    prompt, steps = ids.shape[1], continuation.shape[1]
    sequences = torch.cat([ids, continuation.to(ids.device)], 1)
    full_mask = torch.cat([mask, explained.to(mask.device)], 1)
    tokens, slots = continuation.cpu(), explained.bool().cpu()
    if per_token:
        targets = [kind(torch.full((ids.shape[0], 1), prompt - 1 + j), tokens[:, j:j + 1], slots[:, j:j + 1])
                   for j in range(steps)]
    else:  # the answer as one target: Σ_j of the per-token targets, one backward pass
        targets = [kind(torch.arange(prompt - 1, prompt - 1 + steps).expand(ids.shape[0], -1), tokens, slots)]
    columns = relevance_columns(method, sequences, full_mask, targets, given, steps + 1)
    return _result(columns, sequences, full_mask, continuation, explained, prompt, method.name, score, per_token)


def _eos(model: torch.nn.Module) -> int | None:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        if len(eos) > 1:
            raise ValueError(f"the model has several end-of-sequence tokens {list(eos)}; give eos_token_id=")
        eos = eos[0] if eos else None
    return eos


def explain_answer(method: Method | str | None, ids: torch.Tensor, answer: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, answer_mask: torch.Tensor | None = None,
                   forward_kwargs: dict[str, Any] | None = None, *, score: str = "logit",
                   model: torch.nn.Module | None = None,
                   method_settings: dict[str, Any] | None = None) -> GenerationResult:
    """Explain a whole answer given a prompt in one forward and one backward pass: the sum of its tokens'
    logits, or with ``score="log_prob"`` its log-likelihood ``Σ_k log p(answer_k | prompt, answer_<k)``.

    ``ids`` ``(N, P)`` (with ``attention_mask``) are the prompts, ``answer`` ``(N, A)`` the answers (with
    ``answer_mask`` ``(N, A)``: 1 for the tokens of answers shorter than ``A``, which must come first).
    ``relevance`` is ``(N, P + A, 1)``; by the linearity of the rules in the starting relevance it is the row sum
    of :func:`explain_generation`'s matrix for the same answer and score. ``method``, ``model`` and
    ``method_settings`` as for :func:`explain_generation`.
    """
    method = _check_method(method, model, method_settings)
    kind = _check_score(score)
    ids, answer = _check_ids(ids, "ids"), _check_ids(answer, "answer")
    if answer.shape[0] != ids.shape[0]:
        raise ValueError(f"answer has {answer.shape[0]} sequences, ids has {ids.shape[0]}")
    mask = check_mask(ids, attention_mask)
    answer_mask = check_mask(answer, answer_mask, "answer_mask")
    if bool((answer_mask[:, 1:] > answer_mask[:, :-1]).any()):
        raise ValueError("answer_mask must mark each answer's tokens first and its padding after them")
    _check_vocabulary(method.model, ids, "ids", mask)
    _check_vocabulary(method.model, answer, "answer", answer_mask)
    _check_positions(method.model, int(mask.sum(1).max()), answer.shape[1], "answer")
    ids, mask = repad(ids, mask, "left")
    prompt, steps = ids.shape[1], answer.shape[1]
    sequences, full_mask = torch.cat([ids, answer], 1), torch.cat([mask, answer_mask], 1)
    positions = torch.arange(prompt - 1, prompt - 1 + steps).expand(ids.shape[0], -1)
    target = kind(positions, answer.cpu(), answer_mask.bool().cpu())
    columns = relevance_columns(method, sequences, full_mask, [target], dict(forward_kwargs or {}), steps + 1)
    return _result(columns, sequences, full_mask, answer, answer_mask, prompt, method.name, score, False)


def _result(columns, sequences, mask, generated, explained, prompt, name, score, per_token) -> GenerationResult:
    info = dict(columns.info, score=score, per_token=per_token)
    return GenerationResult(columns.relevance, sequences, mask, generated, explained, prompt, columns.scores, name,
                            info)


__getattr__ = renamed(__name__, {"GenerationExplanation": "GenerationResult"}, globals())
