"""Token heatmaps: relevance per token as self-contained HTML or as a terminal line, and BiLRP matrices.

Colours: red for positive relevance, blue for negative, the intensity proportional to ``|R| / scale`` with
``scale`` the largest magnitude of the sequence (or one given for comparable renderings). Word pieces can be
merged into words (relevance summed): WordPiece continuations start with ``##`` (BERT), byte-level BPE and
SentencePiece mark word starts with ``Ġ`` / ``▁`` (GPT-2, T5, LLaMA).
"""
from __future__ import annotations

import html
from typing import Sequence

import torch

#: RGB of the colour for positive and negative relevance
POSITIVE = (220, 38, 38)
NEGATIVE = (37, 99, 235)
_WORD_START = ("Ġ", "▁")


def _values(relevance, length: int) -> list[float]:
    values = torch.as_tensor(relevance, dtype=torch.float64).detach().cpu().reshape(-1).tolist()
    if len(values) != length:
        raise ValueError(f"got {length} tokens but {len(values)} relevance values; give one value per token")
    return values


def tokens_of(tokenizer, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[list[str]]:
    """Token strings of a batch of ids ``(N, L)`` (or one sequence), without the masked (padding) positions."""
    ids = torch.as_tensor(ids)
    ids = ids[None] if ids.ndim == 1 else ids
    rows = []
    for i, row in enumerate(ids.tolist()):
        keep = len(row) if attention_mask is None else int(torch.as_tensor(attention_mask).reshape(ids.shape)[i].sum())
        rows.append(tokenizer.convert_ids_to_tokens(row[:keep]))
    return rows


def merge_subwords(tokens: Sequence[str], relevance) -> tuple[list[str], list[float]]:
    """Merge word pieces into words, summing their relevance; returns (words, relevance per word)."""
    values = _values(relevance, len(tokens))
    marked = any(t.startswith(_WORD_START) for t in tokens)
    words: list[str] = []
    merged: list[float] = []
    for token, value in zip(tokens, values):
        if token.startswith("##") and words:
            words[-1] += token[2:]
            merged[-1] += value
        elif marked and words and not token.startswith(_WORD_START) and not _special(token) \
                and not _special(words[-1]):
            words[-1] += token
            merged[-1] += value
        else:
            words.append(token.lstrip("".join(_WORD_START)) or token)
            merged.append(value)
    return words, merged


def _special(token: str) -> bool:
    return (token.startswith("[") and token.endswith("]")) or (token.startswith("<") and token.endswith(">"))


def _display(token: str) -> str:
    return token[2:] if token.startswith("##") else token.lstrip("".join(_WORD_START)) or token


def _alpha(value: float, scale: float) -> float:
    return 0.0 if scale <= 0 else min(1.0, abs(value) / scale)


def _prepare(tokens, relevance, merge: bool, scale: float | None) -> tuple[list[str], list[float], float]:
    if merge:
        tokens, values = merge_subwords(tokens, relevance)
    else:
        values = _values(relevance, len(tokens))
        tokens = [_display(t) for t in tokens]
    if scale is not None and not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return list(tokens), values, scale if scale is not None else max((abs(v) for v in values), default=0.0)


def _rows(tokens, relevance):
    """Normalise (tokens, relevance) to a list of sequences: one sequence, or a batch (N, L)."""
    if tokens and isinstance(tokens[0], str):
        return [(tokens, relevance)]
    relevance = torch.as_tensor(relevance)
    if relevance.ndim != 2 or relevance.shape[0] != len(tokens):
        raise ValueError(f"for {len(tokens)} token sequences give relevance of shape ({len(tokens)}, L)")
    return [(row, relevance[i, : len(row)]) for i, row in enumerate(tokens)]


_STYLE = (
    "body{font-family:system-ui,sans-serif;line-height:2.1;margin:1.5em}"
    ".seq{margin:.4em 0}.tok{padding:.15em .25em;margin:0 .05em;border-radius:.25em;white-space:pre}"
    ".legend{font-size:.85em;color:#555}.label{color:#555;font-size:.85em;margin-right:.4em}"
    ".mark{outline:1px solid #333}"
    ".scroll{overflow-y:auto;border:1px solid #ddd;padding:0 .4em}"
    ".spans{margin:.2em 0 .6em 0}.span{margin:.1em 0;font-size:.95em}.span a{color:#555;text-decoration:none;"
    "font-size:.8em;margin-right:.5em}.segs{margin:.3em 0}.seg{display:inline-block;padding:.1em .4em;"
    "margin:.1em;border-radius:.3em;border:1px solid #ccc;font-size:.85em}"
    ".segstart{border-left:2px solid #333;margin-left:.3em}"
)

#: sequences longer than this many tokens get their top spans listed above them and a scrolling box
LONG = 64
_IDS = iter(range(1 << 62))  # anchors unique within a page


def token_html(tokens, relevance, merge: bool = False, scale: float | None = None, title: str | None = None,
               fragment: bool = False, top_k: int | None = None, context: int = 4, segments=None,
               max_height: str = "24em") -> str:
    """A self-contained HTML page (or ``fragment``) colouring each token by its relevance.

    ``tokens`` is one sequence of strings with ``relevance`` of the same length, or a list of sequences
    with relevance ``(N, L)`` (padding beyond each sequence ignored). Hovering a token shows its value.

    Long texts stay readable: a sequence longer than :data:`LONG` tokens is shown in a scrolling box (at most
    ``max_height`` tall) under its ``top_k`` most relevant spans (default 5; each the peak token with
    ``context`` tokens either side, overlapping spans merged; a click scrolls to it). ``segments``: a segment
    view, ``(names, owner)`` with ``owner`` ``(L,)`` the segment of each token (``-1``: none; e.g.
    :meth:`xaikit.generation.Segments.token_segments`), or one such pair per sequence: the segments' summed
    relevance as coloured chips above the text, and each segment's first token marked.
    """
    rows = _rows(tokens, relevance)
    if segments is not None and merge:
        raise ValueError("segments refer to tokens; give merge=False with segments (merging changes the tokens)")
    per_row = [segments] * len(rows) if segments is None or isinstance(segments, tuple) else list(segments)
    if len(per_row) != len(rows):
        raise ValueError(f"segments must be one (names, owner) pair or one per sequence ({len(rows)}), "
                         f"got {len(per_row)}")
    lines = [_long_html(*_prepare(row_tokens, row_relevance, merge, scale), top_k=top_k, context=context,
                        segments=seg, max_height=max_height)
             for (row_tokens, row_relevance), seg in zip(rows, per_row)]
    return _page("".join(lines), title, fragment)


def top_spans(values: Sequence[float], k: int = 5, context: int = 4) -> list[tuple[int, int, int]]:
    """The ``k`` tokens of largest (positive) relevance, each with ``context`` tokens either side, as spans
    ``(start, end, peak)`` (end exclusive), most relevant peak first; spans that overlap are merged (their
    peak: the larger)."""
    order = sorted(range(len(values)), key=lambda i: -values[i])[:max(k, 0)]
    spans: list[list[int]] = []
    for i in order:
        start, end = max(0, i - context), min(len(values), i + context + 1)
        for span in spans:
            if start < span[1] and span[0] < end:
                span[0], span[1] = min(span[0], start), max(span[1], end)
                break
        else:
            spans.append([start, end, i])
    return [(a, b, c) for a, b, c in spans]


def _long_html(words: Sequence[str], values: Sequence[float], scale: float, label: str = "",
               marked: frozenset[int] = frozenset(), top_k: int | None = None, context: int = 4, segments=None,
               max_height: str = "24em", full: bool = True) -> str:
    """One sequence: short ones as a line; long ones (or with ``top_k``) with their top spans above a scrolling
    box (``full=False``: the spans only); ``segments``: chips with each segment's relevance, starts marked."""
    long = len(words) > LONG
    k = (5 if long else 0) if top_k is None else top_k
    starts: frozenset[int] = frozenset()
    head = ""
    if segments is not None:
        names, owner = segments
        owner = [int(o) for o in torch.as_tensor(owner).reshape(-1).tolist()]
        if len(owner) != len(words):
            raise ValueError(f"segments: owner has {len(owner)} entries for {len(words)} tokens; give one per token")
        sums = [0.0] * len(names)
        for o, v in zip(owner, values):
            if 0 <= o < len(names):
                sums[o] += v
        top = max(map(abs, sums), default=0.0)
        chips = "".join(f'<span class="seg" style="background:{_rgba(v, top)}" title="{v:+.4g}">'
                        f'{html.escape(str(name))}: {v:+.3g}</span>' for name, v in zip(names, sums))
        head = f'<div class="segs">{html.escape(label)}segments: {chips}</div>'
        starts = frozenset(i for i, o in enumerate(owner) if o >= 0 and (i == 0 or owner[i - 1] != o))
    if not k and not long:
        return head + _sequence_html(words, values, scale, label, marked, starts=starts)
    anchor = next(_IDS)
    spans = top_spans(list(values), k, context)
    items = []
    for rank, (a, b, peak) in enumerate(spans, 1):
        link = f'<a href="#x{anchor}-{a}">#{rank} tokens {a}–{b - 1}</a>' if full else \
            f'<a title="tokens {a}–{b - 1}">#{rank}</a>'
        items.append(f'<div class="span">{link}{"… " if a else ""}'
                     f'{_spans(words[a:b], values[a:b], scale, marked, offset=a)}{" …" if b < len(words) else ""}'
                     "</div>")
    top = f'<div class="spans">{html.escape(label) if label else ""}{"".join(items)}</div>' if items else ""
    if not full:
        return head + top
    body = _sequence_html(words, values, scale, "" if items else label, marked, anchor=anchor, starts=starts)
    return head + top + (f'<div class="scroll" style="max-height:{html.escape(max_height)}">{body}</div>'
                         if long else body)


def _rgba(value: float, scale: float) -> str:
    colour = POSITIVE if value >= 0 else NEGATIVE
    return f"rgba({colour[0]},{colour[1]},{colour[2]},{_alpha(value, scale):.3f})"


def _spans(words, values, scale, marked=frozenset(), offset: int = 0, anchor: int | None = None,
           starts: frozenset[int] = frozenset()) -> str:
    out = []
    for i, (word, value) in enumerate(zip(words, values), offset):
        mark = (' mark' if i in marked else '') + (' segstart' if i in starts else '')
        ident = f' id="x{anchor}-{i}"' if anchor is not None else ""
        out.append(f'<span class="tok{mark}"{ident} style="background:{_rgba(value, scale)}" '
                   f'title="{value:+.4g}">{html.escape(word)}</span>')
    return "".join(out)


def _sequence_html(words: Sequence[str], values: Sequence[float], scale: float, label: str = "",
                   marked: frozenset[int] = frozenset(), anchor: int | None = None,
                   starts: frozenset[int] = frozenset()) -> str:
    """One sequence as coloured spans (``marked`` positions outlined, ``starts`` of segments marked), after an
    optional label; ``anchor``: each token gets an id to scroll to."""
    spans = f'<span class="label">{html.escape(label)}</span>' if label else ""
    return f'<div class="seq">{spans}{_spans(words, values, scale, marked, anchor=anchor, starts=starts)}</div>'


def _page(body: str, title: str | None, fragment: bool) -> str:
    legend = '<div class="legend">red: positive relevance, blue: negative; intensity: |R| / max |R|</div>'
    body = (f"<h3>{html.escape(title)}</h3>" if title else "") + body + legend
    if fragment:
        return f"<style>{_STYLE}</style>{body}"
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title or "relevance")}'
            f"</title><style>{_STYLE}</style></head><body>{body}</body></html>")


def generation_html(tokens: Sequence[str], matrix, prompt_length: int, title: str | None = None,
                    fragment: bool = False, top_k: int | None = None, context: int = 4, segments=None,
                    max_height: str = "24em") -> str:
    """Token heatmaps of a generated answer (see :func:`xaikit.generation.explain_generation`).

    ``tokens``: the ``L`` tokens of prompt and answer; ``matrix`` ``(L, G)``: the relevance of each token for
    each of the ``G`` generated tokens (``tokens[prompt_length + j]`` is generated token ``j``). The first
    line colours every token by its relevance for the whole answer (the row sums; generated tokens outlined);
    then one line per generated token ``j`` colours the tokens before it, each line on its own scale.
    For more than :data:`LONG` tokens the whole answer is a scrolling box under its top spans, and each
    generated token's line shows its own ``top_k`` spans only; ``top_k``, ``context``, ``segments`` (of the
    ``L`` tokens) and ``max_height`` as for :func:`token_html`.
    """
    values = torch.as_tensor(matrix, dtype=torch.float64).detach().cpu()
    length = len(tokens)
    if values.ndim != 2 or values.shape[0] != length or prompt_length + values.shape[1] != length:
        raise ValueError(f"matrix must have shape (tokens, generated) = ({length}, {length - prompt_length}) for "
                         f"{length} tokens of which {prompt_length} are the prompt, got {tuple(values.shape)}")
    words = [_display(t) for t in tokens]
    answer = values.sum(1).tolist()
    generated = frozenset(range(prompt_length, length))
    lines = [_long_html(words, answer, max(map(abs, answer), default=0.0), "whole answer: ", generated,
                        top_k=top_k, context=context, segments=segments, max_height=max_height)]
    for j in range(values.shape[1]):
        seen = prompt_length + j
        column = values[:seen, j].tolist()
        line_scale = max(map(abs, column), default=0.0)
        if length > LONG:  # a long prompt: each generated token by its top spans only
            spans = _long_html(words[:seen], column, line_scale, f"→ {words[seen]}: ", top_k=top_k, context=context,
                               full=False)
            lines.append(f'<div class="seq">{spans}</div>')
        else:
            lines.append(_sequence_html(words[:seen], column, line_scale, f"→ {words[seen]}: "))
    return _page("".join(lines), title, fragment)


def token_terminal(tokens, relevance, merge: bool = False, scale: float | None = None, color: bool = True) -> str:
    """A terminal rendering: ANSI 24-bit background colours, or with ``color=False`` plain text
    ``word(+0.12)`` (values rounded to two significant digits)."""
    lines = []
    for row_tokens, row_relevance in _rows(tokens, relevance):
        words, values, row_scale = _prepare(row_tokens, row_relevance, merge, scale)
        parts = []
        for word, value in zip(words, values):
            if not color:
                parts.append(f"{word}({value:+.2g})")
                continue
            colour = POSITIVE if value >= 0 else NEGATIVE
            a = _alpha(value, row_scale)
            r, g, b = (round(255 + (c - 255) * a) for c in colour)
            fg = "97" if a > 0.6 else "30"
            parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[{fg}m{word}\x1b[0m")
        lines.append(" ".join(parts))
    return "\n".join(lines)


def bilrp_html(tokens_a: Sequence[str], tokens_b: Sequence[str], matrix, scale: float | None = None,
               title: str | None = None) -> str:
    """A BiLRP matrix ``(La, Lb)`` as a self-contained HTML table (rows: tokens of a, columns: tokens of b)."""
    values = torch.as_tensor(matrix, dtype=torch.float64).detach().cpu()
    if values.shape != (len(tokens_a), len(tokens_b)):
        raise ValueError(f"matrix has shape {tuple(values.shape)}, expected ({len(tokens_a)}, {len(tokens_b)})")
    scale = float(values.abs().max()) if scale is None else scale
    head = "".join(f'<th class="col">{html.escape(_display(t))}</th>' for t in tokens_b)
    rows = []
    for token, row in zip(tokens_a, values.tolist()):
        cells = []
        for v in row:
            colour = POSITIVE if v >= 0 else NEGATIVE
            cells.append(f'<td title="{v:+.4g}" style="background:rgba({colour[0]},{colour[1]},{colour[2]},'
                         f'{_alpha(v, scale):.3f})"></td>')
        rows.append(f'<tr><th>{html.escape(_display(token))}</th>{"".join(cells)}</tr>')
    style = (_STYLE + "table{border-collapse:collapse}td{width:1.6em;height:1.6em;border:1px solid #eee}"
             "th{font-weight:normal;padding:0 .4em;text-align:right}"
             "th.col{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title or "BiLRP")}</title>'
            f"<style>{style}</style></head><body>{f'<h3>{html.escape(title)}</h3>' if title else ''}"
            f'<table><tr><th></th>{head}</tr>{"".join(rows)}</table>'
            '<div class="legend">red: the pair of tokens adds to the similarity, blue: subtracts</div>'
            "</body></html>")


def bilrp_figure(tokens_a: Sequence[str], tokens_b: Sequence[str], matrix, ax=None, scale: float | None = None):
    """A BiLRP matrix as a matplotlib heatmap (red positive, blue negative); returns the figure."""
    import matplotlib.pyplot as plt

    values = torch.as_tensor(matrix, dtype=torch.float64).detach().cpu().numpy()
    if values.shape != (len(tokens_a), len(tokens_b)):
        raise ValueError(f"matrix has shape {values.shape}, expected ({len(tokens_a)}, {len(tokens_b)})")
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.35 * len(tokens_b) + 2, 0.35 * len(tokens_a) + 1.5))
    else:
        fig = ax.figure
    if scale is None:
        scale = float(abs(values).max()) or 1.0
    ax.imshow(values, cmap="bwr", vmin=-scale, vmax=scale)
    ax.set_xticks(range(len(tokens_b)), [_display(t) for t in tokens_b], rotation=90)
    ax.set_yticks(range(len(tokens_a)), [_display(t) for t in tokens_a])
    fig.tight_layout()
    return fig
