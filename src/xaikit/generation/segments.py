"""Segments of a prompt: relevance summed over user-defined parts, and segment attribution without gradients.

A long prompt is read in parts: sentences, the documents of a retrieval-augmented context, the turns of a chat,
the fields of a template. :class:`Segments` names such parts of a text, given as strings (found in order) or
character spans ``(start, end)``; every non-space character of the text must belong to one (an uncovered part is
an error naming it, or with ``uncovered="other"`` its own segment).

- :func:`segment_relevance`: token relevance (an ``(N, L)`` attribution, or a
  :class:`~xaikit.generation.GenerationResult`'s matrix) summed per segment. A token belongs to the segment its
  characters overlap most (the tokenizer's ``offset_mapping``); special tokens and padding belong to none, and
  their relevance is reported as ``rest``, so the segments and ``rest`` sum to the total.
- :class:`SegmentShapley`: for models or APIs without gradients, a callable ``score(texts) -> (B,)`` (e.g. the
  log-probability of an answer, :class:`AnswerLogProb`) is evaluated on the text with segments removed, in
  batches: leave-one-out (``v(all) − v(all ∖ s)``) or Shapley values over the segments (Shapley 1953; exact
  over all ``2^S`` coalitions up to :data:`EXACT_LIMIT` segments, else permutation sampling, Castro et al. 2009).
  Both are efficient where Shapley values are: ``Σ_s φ_s = v(all) − v(none)`` (exactly, also when sampled).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from ..results import ResultExport
from ..settings import checked_init
from .padding import accepts, sequence_inputs

#: Shapley values are exact (all coalitions) up to this many segments, else sampled over permutations
EXACT_LIMIT = 10
#: what a text part outside every segment may be: an error, or its own segment
UNCOVERED = ("error", "other")


class Segments:
    """Named parts of ``text``.

    Parameters
    ----------
    text : str
        The text (a prompt).
    segments : sequence or mapping
        The parts: strings (each found in ``text`` after the previous one) or character spans ``(start, end)``
        (end exclusive), as a list (named ``"segment 0"``, ...) or a dict ``{name: string or span}``. They must
        not overlap.
    uncovered : "error" or "other"
        A non-space character outside every segment raises a ``ValueError`` naming it (default), or the
        uncovered parts form one more segment named ``"(other)"``.

    Attributes
    ----------
    names : list of str
    spans : list of (start, end)
        Each segment's characters (for ``"(other)"``: its first part; :attr:`parts` lists every part).
    """

    @checked_init
    def __init__(self, text: str, segments: Sequence[Any] | Mapping[str, Any], uncovered: str = "error") -> None:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if uncovered not in UNCOVERED:
            raise ValueError(f"uncovered must be 'error' or 'other', got {uncovered!r}")
        if isinstance(segments, (str, bytes)) or not isinstance(segments, (Sequence, Mapping)) or not segments:
            raise TypeError("segments must be a non-empty list of strings or (start, end) spans, or a dict of them")
        items = list(segments.items()) if isinstance(segments, Mapping) else \
            [(f"segment {i}", s) for i, s in enumerate(segments)]
        self.text = text
        self.names = [str(name) for name, _ in items]
        if len(set(self.names)) != len(self.names):
            raise ValueError("segments have repeated names; give each segment its own name")
        self.parts: list[list[tuple[int, int]]] = []
        cursor = 0
        for name, value in items:
            start, end = self._span(name, value, cursor)
            self.parts.append([(start, end)])
            cursor = end if isinstance(value, str) else cursor
        order = sorted(part[0] + (i,) for i, part in enumerate(self.parts))
        for (s1, e1, i), (s2, e2, j) in zip(order, order[1:]):
            if s2 < e1:
                raise ValueError(f"segments {self.names[i]!r} {(s1, e1)} and {self.names[j]!r} {(s2, e2)} overlap; "
                                 "give each character to one segment")
        gaps = self._gaps()
        if gaps and uncovered == "error":
            start, end = gaps[0]
            raise ValueError(f"segments do not cover the text: characters {start}..{end} "
                             f"({text[start:end][:60]!r}) belong to no segment; add a segment for them, or pass "
                             "uncovered='other' to collect what is left in a segment '(other)'")
        if gaps:
            self.names.append("(other)")
            self.parts.append(gaps)
        self.spans = [part[0] for part in self.parts]

    def _span(self, name: str, value: Any, cursor: int) -> tuple[int, int]:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError(f"segments[{name!r}] is empty or blank; give the text of the segment")
            start = self.text.find(value, cursor)
            if start < 0:
                where = "" if cursor == 0 else f" after character {cursor} (strings are found in order)"
                raise ValueError(f"segments[{name!r}] = {value[:60]!r} is not found in the text{where}")
            return start, start + len(value)
        try:
            start, end = (int(v) for v in value)
        except (TypeError, ValueError):
            raise TypeError(f"segments[{name!r}] must be a string or a (start, end) span, got {value!r}") from None
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"segments[{name!r}] = {(start, end)} is not a span of the text of {len(self.text)} "
                             "characters (0 <= start < end <= len(text))")
        return start, end

    def _gaps(self) -> list[tuple[int, int]]:
        """The runs of non-space characters outside every segment."""
        covered = [False] * len(self.text)
        for part in self.parts:
            for start, end in part:
                covered[start:end] = [True] * (end - start)
        gaps, i = [], 0
        while i < len(self.text):
            if covered[i]:
                i += 1
                continue
            j = i
            while j < len(self.text) and not covered[j]:
                j += 1
            run = self.text[i:j]
            if run.strip():
                gaps.append((i + len(run) - len(run.lstrip()), j - len(run) + len(run.rstrip())))
            i = j
        return gaps

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"Segments({self.names})"

    def token_segments(self, offsets: Any) -> torch.Tensor:
        """``(L,)`` the segment of each token (``-1``: none) from its character span ``offsets`` ``(L, 2)`` (a
        fast tokenizer's ``offset_mapping``; special tokens have empty spans): the segment its characters
        overlap most, the first on a tie."""
        spans = torch.as_tensor(offsets, dtype=torch.long).reshape(-1, 2)
        starts = torch.tensor([s for part in self.parts for s, _ in part])
        ends = torch.tensor([e for part in self.parts for _, e in part])
        owner = torch.tensor([k for k, part in enumerate(self.parts) for _ in part])
        overlap = (torch.minimum(spans[:, 1:], ends[None]) - torch.maximum(spans[:, :1], starts[None])).clamp(min=0)
        per_segment = torch.zeros(spans.shape[0], len(self.parts), dtype=torch.long)
        per_segment.index_add_(1, owner, overlap)
        best = per_segment.argmax(1)
        return torch.where(per_segment.amax(1) > 0, best, -1)

    def text_without(self, removed: Sequence[int], replacement: str = "") -> str:
        """The text with the segments ``removed`` (indices) cut out (or each replaced by ``replacement``)."""
        cuts = sorted(span for k in removed for span in self.parts[k])
        pieces, cursor = [], 0
        for start, end in cuts:
            pieces += [self.text[cursor:start], replacement]
            cursor = end
        return "".join(pieces + [self.text[cursor:]])


@dataclass
class SegmentRelevanceResult(ResultExport):
    """Relevance per segment.

    Attributes
    ----------
    names : list of str
        The segments (of the first row's :class:`Segments`; rows may name theirs differently).
    relevance : torch.Tensor
        ``(N, S)`` or ``(N, S, G)`` (one column per generated token): the sum of the relevance of each segment's
        tokens.
    rest : torch.Tensor
        ``(N,)`` or ``(N, G)``: the relevance of tokens in no segment (special tokens, the generated answer);
        ``relevance.sum(1) + rest`` is the total.
    """

    names: list[str]
    relevance: torch.Tensor
    rest: torch.Tensor
    row_names: list[list[str]] = field(default_factory=list)

    def _rows(self) -> list[dict[str, Any]]:
        total = self.relevance if self.relevance.ndim == 2 else self.relevance.sum(-1)
        names = self.row_names or [self.names] * total.shape[0]
        return [{"sequence": n, "segment": names[n][s], "relevance": float(total[n, s])}
                for n in range(total.shape[0]) for s in range(len(names[n]))]

    def top(self, k: int = 3) -> list[list[tuple[str, float]]]:
        """Per sequence, the ``k`` segments of largest relevance (for the whole answer), with their relevance."""
        total = self.relevance if self.relevance.ndim == 2 else self.relevance.sum(-1)
        names = self.row_names or [self.names] * total.shape[0]
        return [[(names[n][s], float(total[n, s])) for s in total[n, :len(names[n])].argsort(descending=True)[:k]]
                for n in range(total.shape[0])]


def segment_relevance(relevance: Any, segments: Segments | Sequence[Segments], offsets: Any,
                      attention_mask: torch.Tensor | None = None) -> SegmentRelevanceResult:
    """Token relevance summed per segment.

    Parameters
    ----------
    relevance : tensor ``(N, L)`` or ``(N, L, G)``, an ``Explanation``, or a ``GenerationResult``
        Token relevance; a generation result gives its matrix (prompt tokens are matched to the segments, the
        generated tokens go to ``rest``).
    segments : Segments, or one per sequence
    offsets : ``(L_n, 2)`` per sequence (a list, or one tensor for all)
        The character span of each *real* token of the prompt (``tokenizer(text, return_offsets_mapping=True)
        ["offset_mapping"]``), in order; their number must be the prompt's number of real tokens.
    attention_mask : tensor ``(N, L)``, optional
        Which columns of ``relevance`` are real tokens (a generation result brings its own); padding goes to
        ``rest`` (it has no relevance).
    """
    prompt = None
    if hasattr(relevance, "relevance") and hasattr(relevance, "prompt_length"):  # a GenerationResult
        attention_mask, prompt, relevance = relevance.attention_mask, relevance.prompt_length, relevance.relevance
    elif hasattr(relevance, "attribution"):
        relevance = relevance.attribution
    values = torch.as_tensor(relevance).detach().cpu()
    if values.ndim not in (2, 3):
        raise ValueError(f"relevance must have shape (N, L) or (N, L, G), got {tuple(values.shape)}")
    n, length = values.shape[:2]
    rows = [segments] * n if isinstance(segments, Segments) else list(segments)
    if len(rows) != n or not all(isinstance(s, Segments) for s in rows):
        raise ValueError(f"segments must be one Segments or one per sequence ({n}), got {len(rows)}")
    if isinstance(offsets, torch.Tensor) and offsets.ndim == 2:
        offsets = [offsets] * n
    offsets = list(offsets)
    if len(offsets) != n:
        raise ValueError(f"offsets must have one (tokens, 2) span list per sequence ({n}), got {len(offsets)}")
    mask = torch.ones(n, length, dtype=torch.long) if attention_mask is None else \
        torch.as_tensor(attention_mask).cpu().long()
    prompt = length if prompt is None else prompt
    width = max(len(s) for s in rows)
    owner = torch.full((n, length), -1, dtype=torch.long)
    for i, (seg, spans) in enumerate(zip(rows, offsets)):
        real = mask[i, :prompt].nonzero()[:, 0]
        spans = torch.as_tensor(spans).reshape(-1, 2)
        if spans.shape[0] != real.numel():
            raise ValueError(f"offsets[{i}] has {spans.shape[0]} token spans, but sequence {i} has {real.numel()} "
                             "prompt tokens; give the offset_mapping of the same tokenization (same special tokens)")
        owner[i, real] = seg.token_segments(spans)
    onehot = torch.zeros(n, length, width + 1, dtype=values.dtype)
    onehot.scatter_(2, torch.where(owner < 0, width, owner)[..., None], 1.0)
    summed = torch.einsum("nl...,nls->ns...", values, onehot)
    return SegmentRelevanceResult(rows[0].names, summed[:, :width], summed[:, width], [s.names for s in rows])


class AnswerLogProb:
    """A ``score(texts) -> (B,)`` for :class:`SegmentShapley`: the log-probability of ``answer`` after each text,
    ``Σ_k log p(answer_k | text, answer_<k)`` under a causal LM, computed in batches (prompts left-padded).

    Parameters
    ----------
    model : causal LM returning logits ``(N, L, V)`` (or ``.logits``)
    tokenizer : a Hugging Face tokenizer (``pad_token_id`` set)
    answer : str
        The answer, tokenized without special tokens.
    """

    @checked_init
    def __init__(self, model: torch.nn.Module, tokenizer: Any, answer: str) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.answer = torch.as_tensor(tokenizer(answer, add_special_tokens=False)["input_ids"], dtype=torch.long)
        if self.answer.numel() == 0:
            raise ValueError("answer has no tokens")

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        rows = [torch.as_tensor(self.tokenizer(t)["input_ids"], dtype=torch.long) for t in texts]
        width = max(r.numel() for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):  # left padding: every prompt ends where the answer starts
            if r.numel():
                ids[i, width - r.numel():], mask[i, width - r.numel():] = r, 1
        a = self.answer.expand(len(rows), -1)
        full, full_mask = torch.cat([ids, a], 1), torch.cat([mask, torch.ones_like(a)], 1)
        kwargs = sequence_inputs(self.model, full_mask)
        if accepts(self.model, "logits_to_keep"):
            kwargs["logits_to_keep"] = a.shape[1] + 1
        out = self.model(full, **kwargs)
        logits = getattr(out, "logits", out)[:, -a.shape[1] - 1:-1]
        return logits.log_softmax(-1).gather(-1, a[..., None])[..., 0].sum(1).float()


@dataclass
class SegmentShapleyResult(ResultExport):
    """Segment attribution by removing segments.

    Attributes
    ----------
    names : list of str
    values : torch.Tensor
        ``(S,)``: Shapley values (or leave-one-out differences) of the segments.
    full, empty : float
        The score of the whole text, and of the text without every segment (``Σ values = full − empty`` for
        Shapley values).
    method : str
        ``"shapley"`` (exact or sampled: ``info["permutations"]``) or ``"leave_one_out"``.
    evaluations : int
        Texts scored.
    """

    names: list[str]
    values: torch.Tensor
    full: float
    empty: float
    method: str
    evaluations: int
    info: dict[str, Any] = field(default_factory=dict)

    def _rows(self) -> list[dict[str, Any]]:
        return [{"segment": name, "value": float(v)} for name, v in zip(self.names, self.values)]


class SegmentShapley:
    """Attribution of a score to the segments of a text by removing them, for models without gradients.

    Parameters
    ----------
    score : callable ``score(texts: list[str]) -> (B,)``
        E.g. the log-probability of an answer (:class:`AnswerLogProb`) or any API returning one per text.
    method : "shapley" or "leave_one_out"
    batch_size : int
        Texts per call of ``score``.
    permutations : int
        Permutations sampled when there are more than :data:`EXACT_LIMIT` segments (Castro et al. 2009; each
        costs ``S`` evaluations, antithetic pairs: every permutation and its reverse).
    replacement : str
        What a removed segment becomes (default: nothing).
    seed : int
    """

    @checked_init
    def __init__(self, score: Callable[[list[str]], Any], method: str = "shapley", batch_size: int = 32,
                 permutations: int = 64, replacement: str = "", seed: int = 0) -> None:
        if not callable(score):
            raise TypeError(f"score must be a callable texts -> scores, got {type(score).__name__}")
        if method not in ("shapley", "leave_one_out"):
            raise ValueError(f"method must be 'shapley' or 'leave_one_out', got {method!r}")
        for name, value in (("batch_size", batch_size), ("permutations", permutations)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.score, self.method, self.batch_size = score, method, batch_size
        self.permutations, self.replacement, self.seed = permutations, replacement, seed

    def _values(self, segments: Segments, coalitions: torch.Tensor) -> torch.Tensor:
        """The score of each coalition (rows of a bool matrix ``(C, S)``: the segments kept), in batches."""
        unique, inverse = torch.unique(coalitions, dim=0, return_inverse=True)  # each text scored once
        texts = [segments.text_without([k for k in range(len(segments)) if not keep[k]], self.replacement)
                 for keep in unique.tolist()]
        values = []
        for start in range(0, len(texts), self.batch_size):
            out = torch.as_tensor(self.score(texts[start:start + self.batch_size]), dtype=torch.float64).reshape(-1)
            if out.numel() != len(texts[start:start + self.batch_size]):
                raise ValueError(f"score returned {out.numel()} values for {len(texts[start:start + self.batch_size])}"
                                 " texts; return one per text")
            values.append(out)
        self._evaluations = len(texts)
        return torch.cat(values)[inverse]

    def __call__(self, segments: Segments) -> SegmentShapleyResult:
        if not isinstance(segments, Segments):
            raise TypeError(f"segments must be a Segments, got {type(segments).__name__}")
        s = len(segments)
        info: dict[str, Any] = {}
        if self.method == "leave_one_out":
            coalitions = torch.ones(s + 2, s, dtype=torch.bool)
            coalitions[torch.arange(s), torch.arange(s)] = False
            coalitions[s + 1] = False
            v = self._values(segments, coalitions)
            values, full, empty = v[s] - v[:s], v[s], v[s + 1]
        elif s <= EXACT_LIMIT:
            coalitions = torch.tensor(list(itertools.product([False, True], repeat=s)), dtype=torch.bool)
            v = self._values(segments, coalitions)
            size = coalitions.sum(1)
            weights = torch.tensor([math.factorial(k) * math.factorial(s - k - 1) / math.factorial(s)
                                    for k in range(s)], dtype=torch.float64)
            index = (coalitions.long() * (2 ** torch.arange(s - 1, -1, -1))).sum(1)
            lookup = torch.empty_like(v)
            lookup[index] = v
            values = torch.zeros(s, dtype=torch.float64)
            for k in range(s):  # φ_k = Σ_{T ∌ k} w(|T|) (v(T ∪ k) − v(T)), all T at once
                without = ~coalitions[:, k]
                added = index[without] + 2 ** (s - 1 - k)
                values[k] = (weights[size[without]] * (lookup[added] - lookup[index[without]])).sum()
            full, empty = lookup[2 ** s - 1], lookup[0]
            info["exact"] = True
        else:
            g = torch.Generator().manual_seed(self.seed)
            half = (self.permutations + 1) // 2
            orders = torch.stack([torch.randperm(s, generator=g) for _ in range(half)])
            orders = torch.cat([orders, orders.flip(1)])  # antithetic
            steps = torch.arange(s + 1)
            rank = torch.empty_like(orders)
            rank.scatter_(1, orders, torch.arange(s).expand_as(orders))
            coalitions = rank[:, None, :] < steps[None, :, None]  # (P, S+1, S): the first t of each order kept
            v = self._values(segments, coalitions.reshape(-1, s)).reshape(len(orders), s + 1)
            gains = v[:, 1:] - v[:, :-1]  # (P, S): the gain of the t-th segment of each order
            values = torch.zeros(s, dtype=torch.float64).index_add_(0, orders.reshape(-1), gains.reshape(-1))
            values = values / len(orders)
            full, empty = v[0, -1], v[0, 0]
            info.update(exact=False, permutations=len(orders))
        return SegmentShapleyResult(segments.names, values, float(full), float(empty), self.method,
                                    self._evaluations, info)
