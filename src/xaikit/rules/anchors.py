"""Anchors: "the model predicts this as long as …" (Ribeiro, Singh, Guestrin, AAAI 2018).

An anchor of an input ``x`` with prediction ``f(x) = t`` is a rule ``A`` (a set of predicates that hold for
``x``) whose precision under the perturbation distribution conditioned on it is at least ``τ``
(paper eq. 1–3):

    prec(A) = E_{D(z|A)}[ 1{f(z) = t} ] ≥ τ   with probability ≥ 1 − δ,

and, among such rules, one of largest coverage ``cov(A) = E_{D(z)}[A(z)]``. The search is the paper's beam
search (Algorithm 2): rules grow one predicate at a time; the candidates whose coverage cannot beat the best
anchor so far are dropped; KL-LUCB (:mod:`xaikit.rules.bandit`) picks the ``beam_size`` most precise; those
that may be anchors are verified on fresh draws, sampled until their KL confidence interval lies above or below
``τ`` (a rule is an anchor when its lower bound reaches ``τ``; the level of the bound is a union over every rule
the search may verify and every look at it). The samples of all candidates of a round are drawn as one tensor
and the model is run on them in chunks of ``batch_size`` (one forward per chunk of candidates' samples, never
one per query).

Inputs: tabular rows (predicates on column ranges and categories; the data given to :meth:`Anchors.fit` or
``data=`` is the sampling distribution and the coverage set), images ``(N, C, H, W)`` (superpixels or grid
cells present) and token ids ``(N, L)`` (words present, the others replaced by ``mask_token``).
"""
from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Generator, Sequence

import torch
from tqdm.auto import tqdm

from ..batching import batch_size_for, batched_forward, check_batch_size
from ..columns import Columns, read_columns
from ..errors import check_choice, check_model, check_positive
from ..methods.machinery.baselines import resolve_baseline
from ..methods.machinery.features import resolve_features
from ..methods.machinery.seeding import check_seed, make_generator
from ..modes import eval_semantics
from ..numpy_model import NumpyModel
from ..results import ResultExport
from ..settings import CheckedSettings
from ..targets import check_target
from .bandit import RATES, exploration_rate, kl_bounds, kl_lucb_steps
from .spaces import PartSpace, TableSpace, part_names, quantile_edges

KINDS = ("auto", "table", "image", "tokens")
#: the most input values (samples × values per sample) one round of the joint search samples at once
ROUND_ELEMENTS = 1 << 23


@dataclass
class Rule:
    """One anchor: its predicates (indices into the input's predicate list, as text and as ``conditions``: dicts
    ``{"column", "low", "high"}`` meaning ``low < value ≤ high``, ``{"column", "equals"}`` or ``{"part"}``), the
    class it holds,
    its estimated precision (mean and KL lower bound over ``samples`` draws of ``D(z|A)``), its coverage, and
    whether the lower bound reached ``τ``."""

    predicates: list[int]
    text: list[str]
    conditions: list[dict[str, Any]]
    target: int
    precision: float
    precision_lower: float
    coverage: float
    samples: int
    valid: bool

    def __str__(self) -> str:
        return self.format()

    def format(self, class_name: str | None = None) -> str:
        """``IF a > 1 AND b = x THEN class 0 — precision 0.97, coverage 0.21`` (``IF TRUE`` for no predicate)."""
        head = " AND ".join(self.text) if self.text else "TRUE"
        cls = class_name if class_name is not None else f"class {self.target}"
        note = "" if self.valid else " (precision below τ: no anchor found)"
        return f"IF {head} THEN {cls} — precision {self.precision:.2f}, coverage {self.coverage:.2f}{note}"


@dataclass
class AnchorsResult(ResultExport):
    """The anchors of a batch: ``rules[i]`` explains sample ``i``.

    ``info`` holds the settings, ``time_s``, the number of model evaluations (``evaluations``, the samples the
    search ran through the model) and of sampling rounds (``rounds``: one model call each, for all rows).
    """

    rules: list[Rule]
    target: torch.Tensor
    class_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def text(self, i: int) -> str:
        """The readable rule of sample ``i``."""
        rule = self.rules[i]
        name = self.class_names[rule.target] if self.class_names is not None else None
        return rule.format(name)

    def __str__(self) -> str:
        return "\n".join(self.text(i) for i in range(len(self.rules)))

    @property
    def precision(self) -> torch.Tensor:
        return torch.tensor([r.precision for r in self.rules], dtype=torch.float64)

    @property
    def coverage(self) -> torch.Tensor:
        return torch.tensor([r.coverage for r in self.rules], dtype=torch.float64)

    @property
    def valid(self) -> torch.Tensor:
        return torch.tensor([r.valid for r in self.rules], dtype=torch.bool)

    def _rows(self) -> list[dict[str, Any]]:
        """One row per sample: the rule as text, its class, precision (mean and lower bound), coverage, size."""
        return [{"sample": i, "rule": " AND ".join(r.text) if r.text else "TRUE", "target": r.target,
                 "precision": r.precision, "precision_lower": r.precision_lower, "coverage": r.coverage,
                 "size": len(r.predicates), "samples": r.samples, "valid": r.valid}
                for i, r in enumerate(self.rules)]


class Anchors(CheckedSettings):
    """Anchors (Ribeiro, Singh, Guestrin, AAAI 2018): high-precision rules found by beam search with KL-LUCB.

    Parameters
    ----------
    model : nn.Module or callable
        A classifier ``x -> (N, classes)`` scores (any callable: ``xk.NumpyModel(clf.predict_proba)``).
    threshold : float
        τ ∈ (0, 1): the precision an anchor must reach (paper: 0.95).
    delta : float
        δ ∈ (0, 1): the probability that an anchor's precision is below τ (paper: 0.1, with ε = 0.1 … 0.15).
    epsilon : float
        ε of KL-LUCB: the tolerance of the best-arm identification.
    beam_size : int
        B of the beam search.
    max_size : int, optional
        The most predicates a rule may have (default: all).
    samples : int
        Draws of ``D(z|A)`` per candidate when it enters (and the first pull of KL-LUCB and of the verification;
        later pulls double an arm's draws).
    max_samples : int
        The most draws spent on one candidate's precision (in the selection, and again in the verification).
    exploration : "union" or "kl-lucb"
        The confidence level of the beam selection (KL-LUCB): ``"union"`` (default), ``log(K/δ)`` for ``K``
        candidates; ``"kl-lucb"``, the KL-LUCB paper's ``log(k₁ K t^α / δ)`` (Theorem 2), about twice the model
        evaluations. Either way the precision guarantee of an anchor is the verification's, on fresh draws.
    data : optional
        Tabular: the data set ``D`` (as :meth:`fit` takes it), instead of calling :meth:`fit`.
    feature_names, categorical, bins
        Tabular: the column names (default: the DataFrame's or ``x0 …``), the categorical columns (names or
        indices, or ``{column: categories}``; text columns of a DataFrame must be declared), the number of
        quantile bins of numeric columns (paper: quartiles, 4).
    kind : "auto", "table", "image" or "tokens"
        What ``x`` is (``auto``: a fitted explainer explains tables, float inputs with spatial dimensions are
        images, integer inputs are token ids).
    features : None, "grid:N", "slic:N" or an int tensor
        Images and text: the parts (default ``"slic:50"`` superpixels for images, one part per token).
    baseline : number, tensor, "zero", "mean" or "blur"
        Images: what an absent part shows (default ``"mean"``, the image's mean colour).
    mask_token : int, optional
        Token ids: the id an absent token is replaced with (required for token ids, e.g. ``[UNK]``/``[MASK]``).
    keep : float
        Images and text: the probability that a part is present in a sample of ``D`` (the paper: 0.5).
    vocabulary : optional
        Token ids: a list, a dict id -> word or a tokenizer, to name the words of a rule.
    class_names : sequence of str, optional
        Names of the classes in the readable rules.
    seed : int
        Seed of the sampling (private generator).
    batch_size : "auto" or int
        Samples per forward pass.
    progress : bool
        A progress bar over the explained samples.
    """

    def __init__(self, model: Any, threshold: float = 0.95, delta: float = 0.1, epsilon: float = 0.15,
                 beam_size: int = 2, max_size: int | None = None, samples: int = 32, max_samples: int = 4096,
                 exploration: str = "union",
                 data: Any = None, feature_names: Sequence[str] | None = None, categorical: Any = None,
                 bins: int = 4, kind: str = "auto", features: Any = None, baseline: Any = "mean",
                 mask_token: int | None = None, keep: float = 0.5, vocabulary: Any = None,
                 class_names: Sequence[str] | None = None, seed: int = 0, batch_size: int | str = "auto",
                 progress: bool = False) -> None:
        check_model(model)
        for value, name in ((threshold, "threshold"), (delta, "delta"), (keep, "keep")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{name} must be a probability strictly between 0 and 1, got {value!r}")
        check_positive(epsilon, "epsilon")
        check_positive(beam_size, "beam_size", integer=True)
        if max_size is not None:
            check_positive(max_size, "max_size", integer=True)
        check_positive(samples, "samples", integer=True)
        check_positive(max_samples, "max_samples", integer=True)
        check_positive(bins, "bins", integer=True)
        if bins < 2:
            raise ValueError(f"bins must be >= 2 (quantile bins of numeric columns), got {bins}")
        check_choice(kind, "kind", KINDS)
        check_choice(exploration, "exploration", RATES)
        if mask_token is not None and (isinstance(mask_token, bool) or not isinstance(mask_token, int)):
            raise TypeError(f"mask_token must be a token id (int), got {type(mask_token).__name__}")
        check_seed(seed)
        if seed is None:
            raise ValueError("seed must be an int: anchors are reproducible by default")
        check_batch_size(batch_size)
        self.model, self.threshold, self.delta, self.epsilon = model, float(threshold), float(delta), float(epsilon)
        self.beam_size, self.max_size, self.samples, self.max_samples = beam_size, max_size, samples, max_samples
        self.exploration = exploration
        self.feature_names, self.categorical, self.bins, self.kind = feature_names, categorical, bins, kind
        self.features, self.baseline, self.mask_token, self.keep = features, baseline, mask_token, float(keep)
        self.vocabulary, self.seed, self.batch_size, self.progress = vocabulary, seed, batch_size, progress
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.columns: Columns | None = None
        self.data_: torch.Tensor | None = None
        self.edges: list[torch.Tensor] = []
        if data is not None:
            self.fit(data)

    # ---- tabular data -----------------------------------------------------------------------------------------
    def fit(self, data: Any) -> "Anchors":
        """Read the tabular data set ``D``: the sampling distribution, the quantile bins and the coverage set.

        ``data``: a DataFrame, a CSV/Parquet path, a tensor or array ``(M, D)`` or anything
        :class:`xaikit.data.Data` reads."""
        x, self.columns = read_columns(data, self.feature_names, self.categorical, name="data")
        if x.shape[0] < 2:
            raise ValueError(f"data must hold at least 2 rows to sample from, got {x.shape[0]}")
        self.data_ = x
        self.edges = quantile_edges(x, self.columns, self.bins)
        return self

    def rows(self, data: Any) -> torch.Tensor:
        """Rows to explain as ``(N, D)`` float64, read (and categories encoded) as the fitted data."""
        if self.columns is None:
            raise ValueError("Anchors on tables needs the data set: call .fit(data) first (or pass data=)")
        if type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns"):
            cats = {self.columns.names[j]: self.columns.categories[j] if j in self.columns.coded else None
                    for j in self.columns.categories}
            x, _ = read_columns(data, None, cats, name="x")
            return x
        x, _ = read_columns(data, self.columns.names, None, name="x")
        return x

    # ---- the call ---------------------------------------------------------------------------------------------
    def __call__(self, x: Any, target: Any = None) -> AnchorsResult:
        """The anchor of every sample of ``x`` for ``target`` (default: the predicted class)."""
        began = time.perf_counter()
        kind = self._kind(x)
        if kind == "table":
            x = self.rows(x) if not isinstance(x, torch.Tensor) else x
            if x.ndim != 2 or x.shape[1] != self.columns.d:
                raise ValueError(f"x must be rows (N, {self.columns.d}) like the fitted data, got shape "
                                 f"{tuple(x.shape)}")
        elif not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] == 0:
            raise ValueError("x must be a non-empty batch tensor (N, ...) of images or token ids")
        if kind == "tokens" and self.mask_token is None:
            raise ValueError("mask_token is required for token ids: the id that replaces an absent word "
                             "(e.g. tokenizer.mask_token_id or unk_token_id)")
        check_target(target, x.shape[0])
        with eval_semantics(self.model):
            model_x = self._model_input(x, kind)
            self.chunk_ = batch_size_for(self.batch_size, model_x[0])  # samples per forward pass
            output = batched_forward(self.model, model_x, self.chunk_)
            if output.ndim != 2 or output.shape[1] < 2:
                raise ValueError(f"Anchors explains classifiers returning (N, classes) scores, got shape "
                                 f"{tuple(output.shape)}")
            if target is None:
                targets = output.argmax(1).cpu()
            else:
                targets = torch.as_tensor(target).expand(x.shape[0]).long().cpu() if not isinstance(
                    target, torch.Tensor) or target.ndim == 0 else target.long().cpu()
                if bool((targets < 0).any() or (targets >= output.shape[1]).any()):
                    raise ValueError(f"target must name a class in 0 … {output.shape[1] - 1}, got {targets.tolist()}")
            rules, evaluations = self._run(self._spaces(x, kind), targets, kind)
        missing = [i for i, r in enumerate(rules) if not r.valid]
        if missing:
            warnings.warn(f"Anchors: no rule reached precision τ = {self.threshold} for sample(s) {missing}; their "
                          "most precise rule is returned with valid=False (raise max_samples or max_size, or "
                          "lower threshold)", UserWarning, stacklevel=2)
        info = {"threshold": self.threshold, "delta": self.delta, "epsilon": self.epsilon,
                "beam_size": self.beam_size, "samples": self.samples, "max_samples": self.max_samples,
                "exploration": self.exploration, "rounds": self.rounds_,
                "seed": self.seed, "kind": kind, "evaluations": evaluations,
                "time_s": time.perf_counter() - began}
        return AnchorsResult(rules, targets, self.class_names, info)

    def sample(self, x: Any, result: AnchorsResult, samples: int = 1000, seed: int = 1) -> list[torch.Tensor]:
        """Fresh draws of ``D(z | A)`` for each sample's anchor (another seed than the search's: held out), as
        the model takes them: a list of ``(samples, ...)`` tensors."""
        check_positive(samples, "samples", integer=True)
        kind = self._kind(x)
        if kind == "table" and not isinstance(x, torch.Tensor):
            x = self.rows(x)
        generator = make_generator(seed)
        out = []
        for space, rule in zip(self._spaces(x, kind), result.rules):
            mask = torch.zeros(1, space.count, dtype=torch.bool)
            mask[0, rule.predicates] = True
            out.append(self._model_input(space.sample(mask, samples, generator), kind))
        return out

    def precision(self, x: Any, result: AnchorsResult, samples: int = 1000, seed: int = 1) -> torch.Tensor:
        """The precision of each sample's anchor measured on ``samples`` fresh draws (held out from the search)."""
        with eval_semantics(self.model):
            drawn = self.sample(x, result, samples, seed)
            kept = [(batched_forward(self.model, z, batch_size_for(self.batch_size, z[0])).argmax(1).cpu() == t)
                    .double().mean()
                    for z, t in zip(drawn, result.target.tolist())]
        return torch.stack(kept)

    def regions(self, x: torch.Tensor, result: AnchorsResult) -> torch.Tensor:
        """Images: ``(N, H, W)`` bool, the pixels of each sample's anchor (the parts its rule fixes), e.g. to show
        the anchor (:func:`xaikit.viz.contrastive.rules_section`). The parts are those of the search (the same
        ``features``, recomputed deterministically)."""
        if self._kind(x) != "image":
            raise ValueError("regions are the pixels of image anchors; x must be images (N, C, H, W)")
        if len(result.rules) != x.shape[0]:
            raise ValueError(f"result holds {len(result.rules)} rules for {x.shape[0]} images in x; give the x "
                             "that was explained")
        spaces = self._spaces(x, "image")
        out = []
        for space, rule in zip(spaces, result.rules):
            ids = space.mask.expand_as(space.x)[0]  # (C, H, W) part ids
            chosen = torch.zeros(space.count + 1, dtype=torch.bool)
            chosen[rule.predicates] = True
            out.append(chosen[ids.cpu()].any(0))
        return torch.stack(out)

    # ---- internals --------------------------------------------------------------------------------------------
    def _kind(self, x: Any) -> str:
        if self.kind != "auto":
            kind = self.kind
        elif not isinstance(x, torch.Tensor) or (self.columns is not None and x.ndim == 2 and x.is_floating_point()):
            kind = "table"
        elif not x.is_floating_point():
            kind = "tokens"
        elif x.ndim >= 3:
            kind = "image"
        else:
            raise ValueError("Anchors on a tensor of rows (N, D) needs the tabular data set: call .fit(data) "
                             "(or pass data=); or set kind='image'/'tokens'")
        if kind == "table" and self.columns is None:
            raise ValueError("Anchors on tables needs the data set: call .fit(data) first (or pass data=)")
        return kind

    def _model_input(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        """Tabular rows are held in float64; the model gets the dtype of its weights (float32 for a function), a
        :class:`~xaikit.NumpyModel` float64 (it converts to its own ``dtype`` if it has one; scikit-learn models
        compute in float64)."""
        if kind != "table" or isinstance(self.model, NumpyModel):
            return x
        weight = next((p for p in getattr(self.model, "parameters", lambda: iter(()))() if p.is_floating_point()),
                      None)
        return x.to(weight.dtype if weight is not None else torch.get_default_dtype())

    def _spaces(self, x: torch.Tensor, kind: str) -> list[Any]:
        if kind == "table":
            return [TableSpace(row.double().cpu(), self.data_, self.edges, self.columns) for row in x]
        if kind == "tokens":
            if x.ndim != 2:
                raise ValueError(f"token ids must be (N, L), got shape {tuple(x.shape)}")
            feats = resolve_features(self.features, x, name="features")
            baseline = torch.full_like(x, self.mask_token)
        else:
            feats = resolve_features(self.features if self.features is not None else "slic:50", x, name="features")
            baseline = resolve_baseline(self.baseline, x)
        name = "tokens" if kind == "tokens" else ("superpixel" if isinstance(self.features, str) and
                                                  self.features.startswith("slic") or self.features is None
                                                  else "part")
        return [PartSpace(x[i:i + 1], feats.mask[i:i + 1], int(feats.count[i]), baseline[i:i + 1], self.keep,
                          part_names(name, x[i], self.vocabulary, None)) for i in range(x.shape[0])]

    def _run(self, spaces: list[Any], targets: torch.Tensor, kind: str) -> tuple[list[Rule], int]:
        """Run the searches of all inputs together: each round, the pulls every unfinished search asks for (the
        candidate rules of its bandit step) are sampled (each input from its own generator, seeded with ``seed``:
        an input's rule does not depend on the other inputs of the batch nor on ``batch_size``) and evaluated in
        one model call (chunked by ``batch_size``, and split when the round's samples exceed
        :data:`ROUND_ELEMENTS` values)."""
        total = len(spaces)
        rules: list[Rule | None] = [None] * total
        searches, generators, pending = {}, {}, {}
        bar = tqdm(total=total, disable=None if self.progress else True, file=sys.stderr, desc="anchors")
        for i, space in enumerate(spaces):
            searches[i] = self._search_steps(space, int(targets[i]))
            generators[i] = make_generator(self.seed)
            try:
                pending[i] = next(searches[i])
            except StopIteration as stop:
                rules[i] = stop.value
                bar.update(1)
        evaluations, self.rounds_ = 0, 0
        while pending:
            self.rounds_ += 1
            order = sorted(pending)
            per_input = max(1, spaces[order[0]].numel)
            groups, group, size = [], [], 0
            for i in order:  # split the round so that no call samples more than ROUND_ELEMENTS values
                rows = pending[i][0].shape[0] * pending[i][1]
                if group and (size + rows) * per_input > ROUND_ELEMENTS:
                    groups.append(group)
                    group, size = [], 0
                group.append(i)
                size += rows
            groups.append(group)
            for group in groups:
                drawn = [spaces[i].sample(*pending[i], generators[i]) for i in group]
                z = self._model_input(torch.cat(drawn), kind)
                evaluations += z.shape[0]
                predicted = batched_forward(self.model, z, self.chunk_).argmax(1).cpu()
                offset = 0
                for i, block in zip(group, drawn):
                    kept = predicted[offset:offset + block.shape[0]] == int(targets[i])
                    offset += block.shape[0]
                    try:
                        pending[i] = searches[i].send(kept.view(-1, pending[i][1]).double().sum(1))
                    except StopIteration as stop:
                        rules[i] = stop.value
                        del pending[i]
                        bar.update(1)
        bar.close()
        return rules, evaluations  # type: ignore[return-value]

    def _search_steps(self, space: Any, target: int) -> Generator[tuple[torch.Tensor, int], torch.Tensor, Rule]:
        """The beam search of Algorithm 2 for one input, as a generator: it yields the rules ``(A, P)`` to sample
        and the draws of each, is sent their hits ``(A,)`` and returns the input's :class:`Rule`.

        Each size: the candidates (the beam grown by one predicate, those whose coverage cannot beat the best
        anchor so far dropped) get ``samples`` draws each; KL-LUCB picks the ``beam_size`` most precise (its
        exploration rate set by ``exploration``); the picked ones worth checking (the mean of their selection
        draws ≥ τ, coverage above the best anchor's) are verified on *fresh* draws (:meth:`_verify_steps`), so the
        guarantee does not depend on the samples that chose them. Which rules are checked never makes a rule
        valid: skipping one can only miss an anchor."""
        p = space.count
        n = self.samples
        limit = p if self.max_size is None else min(self.max_size, p)
        level = self._verification_level(limit)
        best: tuple[torch.Tensor, float, float, float, int] | None = None  # rule, mean, lower, coverage, draws
        fallback: tuple[torch.Tensor, float, float, float, int] | None = None
        empty = torch.zeros(1, p, dtype=torch.bool)
        mean, lower, draws = yield from self._verify_steps(empty, torch.ones(1, dtype=torch.float64), level)
        if lower[0] >= self.threshold:  # the prediction holds without any predicate
            return Rule([], [], [], target, float(mean[0]), float(lower[0]), 1.0, int(draws[0]), True)
        fallback = (empty[0], float(mean[0]), float(lower[0]), 1.0, int(draws[0]))
        beam = empty
        eye = torch.eye(p, dtype=torch.bool)
        for _ in range(limit):
            grown = beam[:, None, :] | eye[None]  # (B, P, P): one predicate added
            new = ~(beam[:, :, None] & eye[None]).any(1)
            candidates = torch.unique(grown[new], dim=0)
            if candidates.shape[0] == 0:
                break
            coverage = space.coverage(candidates)
            if best is not None:
                keep = coverage > best[3]
                candidates, coverage = candidates[keep], coverage[keep]
                if candidates.shape[0] == 0:
                    break
            hits = (yield candidates, n).clone()
            draws = torch.full((candidates.shape[0],), float(n), dtype=torch.float64)
            steps = kl_lucb_steps(hits, draws, self.beam_size, self.delta, self.epsilon, n, self.max_samples,
                                  self.exploration)
            try:
                arms, pulls = next(steps)
                while True:
                    arms, pulls = steps.send((yield candidates[arms], pulls))
            except StopIteration as stop:
                chosen = stop.value
            beam = candidates[chosen]
            # the selection's own estimates (biased upwards by the choice: they only decide what is worth verifying)
            sel_mean = hits[chosen] / draws[chosen]
            sel_lower, _ = kl_bounds(sel_mean, draws[chosen],
                                             exploration_rate(candidates.shape[0], 1, self.delta, self.exploration))
            for k, index in enumerate(chosen.tolist()):
                if fallback is None or float(sel_lower[k]) > fallback[2]:
                    fallback = (candidates[index], float(sel_mean[k]), float(sel_lower[k]), float(coverage[index]),
                                int(draws[index]))
            worth = (sel_mean >= self.threshold) & (coverage[chosen] > (best[3] if best is not None else -1.0))
            if not worth.any():
                continue
            picked = chosen[worth]
            mean, lower, used = yield from self._verify_steps(candidates[picked], coverage[picked], level)
            for k, index in enumerate(picked.tolist()):
                entry = (candidates[index], float(mean[k]), float(lower[k]), float(coverage[index]), int(used[k]))
                if used[k] == 0:
                    continue  # not decided: a rule of more coverage was accepted first
                if lower[k] >= self.threshold:
                    if best is None or entry[3] > best[3]:
                        best = entry
                elif entry[2] > fallback[2]:
                    fallback = entry
        chosen_entry = best if best is not None else fallback
        rule_mask = chosen_entry[0]
        text, conditions = space.describe(rule_mask)
        return Rule(rule_mask.nonzero().flatten().tolist(), text, conditions, target, chosen_entry[1],
                    chosen_entry[2], chosen_entry[3], chosen_entry[4], best is not None)

    def _looks(self) -> int:
        """How many times the verification may look at a rule: after ``samples·2^k`` fresh draws, k = 0, 1, …,
        and at ``max_samples``."""
        looks, n = 1, self.samples
        while n < self.max_samples:
            n *= 2
            looks += 1
        return looks

    def _verification_level(self, sizes: int) -> float:
        """``β = log(V·L / δ)``: a union bound over every rule the search may verify (the empty rule, then at
        most ``beam_size`` per size: ``V = 1 + B·sizes``) and each of its ``L`` looks (:meth:`_looks`), so that
        every rule reported valid has precision ≥ τ with probability ≥ 1 − δ (paper eq. 3) however many rules
        were checked and whenever the check stopped."""
        return math.log((1 + self.beam_size * max(sizes, 1)) * self._looks() / self.delta)

    def _verify_steps(self, rules: torch.Tensor, coverage: torch.Tensor, level: float,
                      ) -> Generator[tuple[torch.Tensor, int], torch.Tensor,
                                     tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Sample the rules on fresh draws (``samples``, then doubling up to ``max_samples``: the looks of
        :meth:`_looks`) until each one's KL interval at ``level`` lies above τ (lower bound ≥ τ: an anchor) or
        below it (upper bound < τ), or ``max_samples`` draws were spent. Once a rule is accepted, the undecided
        rules of no more coverage are dropped (they could not replace it; their draws are reported as 0). The
        undecided rules of a step are sampled together (yielded, their hits sent back). Returns the means,
        lower bounds and draws."""
        count = rules.shape[0]
        hits = torch.zeros(count, dtype=torch.float64)
        draws = torch.zeros(count, dtype=torch.float64)
        open_ = torch.ones(count, dtype=torch.bool)
        lower = torch.zeros(count, dtype=torch.float64)
        while open_.any():
            index = open_.nonzero().flatten()
            have = int(draws[index[0]])  # the open rules share the schedule
            pulls = self.samples if have == 0 else min(have, self.max_samples - have)
            hits[index] += yield rules[index], pulls
            draws[index] += pulls
            mean = hits / draws.clamp_min(1)
            low, high = kl_bounds(mean[index], draws[index], level)
            lower[index] = low
            open_[index] = (low < self.threshold) & (high >= self.threshold) & (draws[index] < self.max_samples)
            accepted = (lower >= self.threshold) & (draws > 0)
            if accepted.any():
                ceiling = float(coverage[accepted].max())
                dropped = open_ & (coverage <= ceiling)
                draws[dropped], hits[dropped], open_[dropped] = 0.0, 0.0, False
        return hits / draws.clamp_min(1), lower, draws
