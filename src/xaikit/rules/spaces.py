"""The predicates of an explained input and the perturbation distribution ``D(z | A)`` conditioned on a rule.

Anchors (Ribeiro, Singh, Guestrin, AAAI 2018) needs, for one explained input ``x``: a list of predicates that hold
for ``x``; samples ``z ~ D(· | A)`` that satisfy every predicate of a rule ``A`` (to estimate its precision);
and the coverage ``cov(A) = E_{D(z)}[A(z)]``. Two spaces:

- :class:`TableSpace` (§3, tabular): numeric columns are discretised at quantiles of the fitted data; ``x``'s
  bin of column ``j`` gives the predicates ``x_j > e_{b−1}`` and ``x_j ≤ e_b`` (the two halves of its bin, so a
  rule may bound one side only), a categorical column gives ``x_j = v``. ``D`` is the fitted data: a sample is a
  random data row whose constrained columns, where they violate the rule, are replaced by values of rows that
  satisfy the rule's predicates on that column (as the paper's reference sampler). Coverage is the fraction of
  fitted rows where the rule holds.
- :class:`PartSpace` (images and text): the predicates are "part ``p`` is present" for the parts of ``x``
  (superpixels, grid cells, token positions); ``D`` keeps every part with probability ``keep`` and shows the
  baseline (or a mask token) elsewhere, with the rule's parts always present; its coverage is ``keep^|A|``
  exactly.

Both draw the samples of many rules at once: ``sample(rules (A, P) bool, n)`` returns ``A·n`` inputs, rule by
rule, built as one tensor.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..columns import Columns


class TableSpace:
    """Predicates of one tabular row ``x`` (``(D,)``) against discretised data ``data`` (``(M, D)``)."""

    def __init__(self, x: torch.Tensor, data: torch.Tensor, edges: list[torch.Tensor], columns: Columns) -> None:
        self.x, self.data, self.columns = x, data, columns
        self.feature: list[int] = []
        low, high = [], []
        for j in range(columns.d):
            if columns.is_categorical(j):
                self.feature.append(j)
                low.append(float(x[j]))
                high.append(float(x[j]))
                continue
            cuts = edges[j]
            if cuts.numel() == 0:
                continue
            b = int(torch.bucketize(x[j:j + 1], cuts, right=False))  # e_{b−1} < x_j ≤ e_b
            if b > 0:
                self.feature.append(j)
                low.append(float(cuts[b - 1]))
                high.append(float("inf"))
            if b < cuts.numel():
                self.feature.append(j)
                low.append(float("-inf"))
                high.append(float(cuts[b]))
        self.low = torch.tensor(low, dtype=torch.float64)
        self.high = torch.tensor(high, dtype=torch.float64)
        self.features = torch.tensor(self.feature, dtype=torch.long)
        self.equal = torch.tensor([columns.is_categorical(j) for j in self.feature], dtype=torch.bool)
        # "v > low" for an equality predicate v = c: low just below c (the data's values are exact codes)
        self.open_low = torch.where(self.equal, torch.nextafter(self.low, torch.tensor(float("-inf"),
                                                                                         dtype=torch.float64)),
                                    self.low)
        self.data_holds = self.holds(data)  # (M, P)
        self.sorted = torch.sort(data.double(), 0).values.t().contiguous()  # (D, M): each column's values, sorted

    @property
    def count(self) -> int:
        return len(self.feature)

    @property
    def numel(self) -> int:
        """Values per sample (the row's columns)."""
        return int(self.x.numel())

    def holds(self, rows: torch.Tensor) -> torch.Tensor:
        """``(M, P)`` bool: which predicates hold for ``rows`` ``(M, D)``."""
        values = rows.double()[:, self.features]
        inside = (values > self.low) & (values <= self.high)
        return torch.where(self.equal, values == self.low, inside)

    def coverage(self, rules: torch.Tensor) -> torch.Tensor:
        """Fraction of the fitted rows where each rule ``(A, P)`` holds (no predicate of the rule fails)."""
        failed = (~self.data_holds).double() @ rules.double().t()  # (M, A): failing predicates per row and rule
        return (failed == 0).double().mean(0)

    def sample(self, rules: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(A·n, D)`` samples of ``D(z | A)`` for each rule ``A`` of ``rules`` ``(A, P)``: a random data row, in
        which a constrained column whose value lies outside the rule's interval is redrawn uniformly from the data
        rows inside it (a contiguous range of the column's sorted values); a value already inside is kept, so
        rows that satisfy the rule keep their joint values (as the reference sampler of Ribeiro et al.). All
        rules, columns and draws at once."""
        a, (d, m) = rules.shape[0], self.sorted.shape
        inf = torch.tensor(float("inf"), dtype=torch.float64)
        low = torch.full((a, d), float("-inf"), dtype=torch.float64).scatter_reduce(
            1, self.features.expand(a, -1), torch.where(rules, self.open_low, -inf), "amax")
        high = torch.full((a, d), float("inf"), dtype=torch.float64).scatter_reduce(
            1, self.features.expand(a, -1), torch.where(rules, self.high, inf), "amin")
        rows = torch.randint(m, (a, n), generator=generator)
        out = self.data.double()[rows]  # (A, n, D)
        # only the (rule, column) pairs a rule constrains are redrawn: K pairs, K·n values
        rule, col = ((low > -inf) | (high < inf)).nonzero(as_tuple=True)
        if rule.numel() == 0:
            return out.reshape(a * n, d)
        low, high = low[rule, col], high[rule, col]  # (K,)
        sorted_ = self.sorted[col]  # (K, M): the column's values, sorted
        first = torch.searchsorted(sorted_, low[:, None], right=True)[:, 0]  # the first value > low
        width = torch.searchsorted(sorted_, high[:, None], right=True)[:, 0] - first  # values in (low, high]
        u = torch.rand(rule.numel(), n, generator=generator, dtype=torch.float64)
        pick = (first[:, None] + (u * width[:, None]).long().clamp_max((width[:, None] - 1).clamp_min(0)))
        drawn = sorted_.gather(1, pick.clamp(0, m - 1))  # (K, n)
        drawn = torch.where((width <= 0)[:, None], self.x.double()[col][:, None], drawn)  # no data row there: x
        current = out[rule, :, col]  # (K, n)
        inside = (current > low[:, None]) & (current <= high[:, None])  # the random row satisfies it there
        out[rule, :, col] = torch.where(inside, current, drawn)
        return out.reshape(a * n, d)

    def describe(self, rule: torch.Tensor) -> tuple[list[str], list[dict[str, Any]]]:
        """The rule's predicates as text and as conditions (``{"column", "low", "high"}``: ``low < x ≤ high``, or
        ``{"column", "equals"}``), one per constrained column (the two halves of a bin merged)."""
        parts, conditions = [], []
        chosen = rule.nonzero().flatten().tolist()
        for j in sorted({self.feature[p] for p in chosen}):
            name = self.columns.names[j]
            preds = [p for p in chosen if self.feature[p] == j]
            if self.columns.is_categorical(j):
                value = float(self.low[preds[0]])
                parts.append(f"{name} = {self.columns.label(j, value)}")
                conditions.append({"column": name, "equals": value})
                continue
            low = max(float(self.low[p]) for p in preds)
            high = min(float(self.high[p]) for p in preds)
            conditions.append({"column": name, "low": low, "high": high})
            if low > float("-inf") and high < float("inf"):
                parts.append(f"{low:.4g} < {name} <= {high:.4g}")
            elif low > float("-inf"):
                parts.append(f"{name} > {low:.4g}")
            else:
                parts.append(f"{name} <= {high:.4g}")
        return parts, conditions


class PartSpace:
    """Predicates "part ``p`` is present" of one input ``x`` (``(1, ...)``) split into parts by ``mask``
    (``(1, *r)`` part ids ``0 … P−1`` broadcastable to ``x``); absent parts show ``baseline`` (shaped like ``x``).
    """

    def __init__(self, x: torch.Tensor, mask: torch.Tensor, count: int, baseline: torch.Tensor, keep: float,
                 names: Callable[[int], str]) -> None:
        self.x, self.mask, self.p, self.baseline, self.keep, self.names = x, mask, count, baseline, keep, names

    @property
    def count(self) -> int:
        return self.p

    @property
    def numel(self) -> int:
        """Values per sample."""
        return int(self.x.numel())

    def coverage(self, rules: torch.Tensor) -> torch.Tensor:
        """``keep^|A|``: the probability that a sample of ``D`` keeps every part of the rule."""
        return torch.as_tensor(self.keep, dtype=torch.float64) ** rules.sum(1).double()

    def sample(self, rules: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(A·n, ...)`` inputs: each part kept with probability ``keep``, the rule's parts always."""
        a = rules.shape[0]
        z = torch.rand(a, n, self.p, generator=generator) < self.keep
        z = (z | rules[:, None, :].cpu()).reshape(a * n, self.p).to(self.mask.device)
        flat = self.mask.reshape(1, -1).expand(a * n, -1)
        present = z.gather(1, flat).view(a * n, *self.mask.shape[1:])
        return torch.where(present, self.x, self.baseline)

    def describe(self, rule: torch.Tensor) -> tuple[list[str], list[dict[str, Any]]]:
        """The rule's parts as text (``superpixel 3``, ``'great'@5``) and as conditions ``{"part": p}``."""
        chosen = rule.nonzero().flatten().tolist()
        return [self.names(p) for p in chosen], [{"part": p} for p in chosen]


def quantile_edges(data: torch.Tensor, columns: Columns, bins: int) -> list[torch.Tensor]:
    """The inner bin edges of every numeric column: the distinct ``k/bins`` quantiles (``k = 1 … bins−1``) of
    the data, excluding the column's maximum (an edge there would leave an empty top bin)."""
    levels = torch.arange(1, bins, dtype=torch.float64) / bins
    edges = []
    for j in range(columns.d):
        if columns.is_categorical(j):
            edges.append(torch.zeros(0, dtype=torch.float64))
            continue
        column = data[:, j].double()
        cuts = torch.unique(torch.quantile(column, levels))
        edges.append(cuts[cuts < column.max()])
    return edges


def part_names(kind: str, x: torch.Tensor, vocabulary: Any, words: Sequence[str] | None) -> Callable[[int], str]:
    """How a part is named in a rule: ``superpixel p`` / ``cell p`` for images; for token ids the word (from
    ``vocabulary``: a list, a dict id -> word or a tokenizer's ``convert_ids_to_tokens``) and its position."""
    if kind != "tokens":
        return lambda p: f"{kind} {p}"
    ids = x.reshape(-1).tolist()

    def word(p: int) -> str:
        if words is not None:
            return f"{words[p]!r}@{p}"
        token = ids[p]
        if vocabulary is None:
            return f"token {token}@{p}"
        if hasattr(vocabulary, "convert_ids_to_tokens"):
            return f"{vocabulary.convert_ids_to_tokens([token])[0]!r}@{p}"
        return f"{vocabulary[token]!r}@{p}"

    return word
