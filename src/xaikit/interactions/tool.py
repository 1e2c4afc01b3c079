"""``ShapleyInteractions``: interaction indices of a model's prediction on interpretable features.

The game is the one of xaikit's Shapley methods (:mod:`xaikit.methods.shapley`): a coalition S of features
keeps x's values on S and takes the baseline's (or a background data set's, averaged) elsewhere, on the same
features (table columns, ``"grid:N"`` cells, ``"slic:N"`` superpixels, an integer mask, tokens of token ids).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import check_choice, check_input, check_model, check_positive
from ..methods.machinery.baselines import BaselineSpec
from ..methods.machinery.features import Features, FeatureSpec
from ..methods.machinery.kernel_design import coalitions as all_of
from ..methods.machinery.scoring import forward_output
from ..methods.machinery.seeding import check_seed, make_generator, resolve_seed
from ..methods.machinery.tokens_ids import token_baseline
from ..methods.shapley import _Shapley
from ..modes import eval_semantics
from ..results import ResultExport
from ..settings import CheckedSettings
from ..targets import TargetSpec, check_target, resolve_target
from .estimators import (ESTIMATORS, KERNEL_MAX, LINKS, estimate, min_budget, plan, probability_outputs,
                         resolve_links)
from .indices import INDICES, MAX_EXACT_PLAYERS, exact, interaction_sets, membership

#: evaluations per sample the default spends (exact below: 2^11 - 2 coalitions cover 11 features)
DEFAULT_BUDGET = 2048


class ShapleyInteractions(CheckedSettings):
    """Shapley interaction indices up to order k of each sample's prediction (see :mod:`.indices`).

    Parameters
    ----------
    model : nn.Module or callable
        Any function ``x -> tensor of scores`` (forward passes only).
    index : {"k-SII", "SII", "STII", "FSII"}
        The index (default ``"k-SII"``, efficient, and at order 2 Lundberg's SHAP interaction values).
    order : int
        The largest interaction order k (1 gives Shapley values); at most the number of features.
    features, baseline, background
        The players and the absent value, as for :class:`xaikit.ExactShapley` (default features: columns,
        ``"grid:4"`` on images).
    budget : int, optional
        Model evaluations per sample besides ``v(∅)`` (``v(N) = f(x)`` is free). ``None``: exact when all
        ``2^d - 2`` coalitions fit in 2048 evaluations (``d <= 11``), else 2048. At least one per set of size
        ``1..k``; a budget covering every coalition gives the exact index.
    estimator : {"regression", "sampling", "kernel", "sparse"}
        At a budget: the polynomial surrogate plus a sampled correction (default), the plain stratified
        sampling estimate, the posterior mean of a Gaussian-process prior on the game (all orders; at most
        8,192 evaluations), or a sparse polynomial (Lasso with its penalty by cross-validation on the evaluated
        coalitions, refitted on the sets it keeps; for budgets near the number of sets, seconds per sample at
        30 features) (:mod:`.estimators`).
    link : {"auto", "identity", "logit"}
        ``"logit"`` for scores that are probabilities (a softmax or sigmoid output): the estimate at a budget
        first fits ``σ(polynomial of order k)`` to their log-odds, takes that surrogate's index without model
        evaluations and estimates only the residual's (:mod:`.estimators`); scores outside [0, 1] are refused.
        ``"identity"``: no such surrogate. ``"auto"`` (default): per sample, ``"logit"`` when the model's
        output there is a probability vector over classes (non-negative, summing to 1: a softmax) and every
        score of the game lies in [0, 1], else ``"identity"`` (a single sigmoid output is not recognised: pass
        ``"logit"``); the choice is reported in ``info["link"]`` (one name, or one per sample where they
        differ). Either way the estimate is efficient and converges to the index (the
        surrogate is a control variate). No effect on an exact computation.
    paired : bool
        Draw each sampled coalition with its complement (default ``True``).
    seed : int, optional
        Seed of the sampling (``None`` draws one, reported in ``info["seed"]``).
    batch_size, progress
        As for every forward-only method.
    """

    def __init__(self, model: nn.Module, index: str = "k-SII", order: int = 2, features: FeatureSpec = None,
                 baseline: BaselineSpec | None = None, background: torch.Tensor | None = None,
                 budget: int | None = None, estimator: str = "regression", link: str = "auto",
                 paired: bool = True, seed: int | None = None, batch_size: int | str = "auto",
                 progress: bool = False) -> None:
        check_model(model, "the model of ShapleyInteractions")
        check_choice(index, "index", INDICES)
        check_positive(order, "order", integer=True)
        if budget is not None:
            check_positive(budget, "budget", integer=True)
        check_choice(estimator, "estimator", ESTIMATORS)
        check_choice(link, "link", LINKS)
        if estimator == "kernel" and budget is not None and budget > KERNEL_MAX:
            raise ValueError(f'estimator="kernel" solves a system of budget × budget: budget={budget} is above '
                             f'{KERNEL_MAX}; use estimator="regression" or a smaller budget')
        check_seed(seed)
        self.model, self.index, self.order, self.budget = model, index, int(order), budget
        self.estimator, self.link, self.paired, self.seed = estimator, link, bool(paired), seed
        self._settings = dict(features=features, baseline=baseline, background=background, batch_size=batch_size,
                              progress=progress)
        self._game = _Game(model, **self._settings)

    def __call__(self, x: torch.Tensor, target: TargetSpec = None, *, forward_args: Sequence[Any] = (),
                 forward_kwargs: dict[str, Any] | None = None) -> "ShapleyInteractionsResult":
        """The indices of every sample of ``x`` for ``target`` (as for attribution methods)."""
        check_input(x, "x", self.model if isinstance(self.model, nn.Module) else None, allow_int=True)
        check_target(target, x.shape[0])
        began = time.perf_counter()
        x = x.detach()
        game = self._game
        if not x.is_floating_point():
            if x.ndim != 2:
                raise ValueError(f"token ids x must have shape (batch, length), got {tuple(x.shape)}")
            game = _Game(self.model, **{**self._settings, "baseline": token_baseline(
                self.model, self._settings["baseline"], "ShapleyInteractions")})
        args, kwargs = tuple(forward_args), dict(forward_kwargs or {})
        with eval_semantics(self.model):
            output = forward_output(self.model, x, args, kwargs)
            resolved = resolve_target(target, output)
            features, baseline = game._game(x)
            full = resolved.score(output).double()
            self._check(features)
            seed = resolve_seed(self.seed)
            values, empty, info = self._groups(game, x, features, baseline, resolved, full, probability_outputs(output),
                                               seed, args, kwargs)
        sets = interaction_sets(features.d, self.order)
        info.update(seed=seed, time_s=time.perf_counter() - began)
        return ShapleyInteractionsResult(values.cpu(), sets, self.index, self.order, full.cpu(), empty.cpu(),
                                         features.count.cpu(), features.mask, info)

    def _check(self, features: Features) -> None:
        d_min, d = int(features.count.min()), features.d
        if self.order > d_min:
            raise ValueError(f"order={self.order} is above the number of features ({d_min}"
                             f"{' in some sample' if d_min < d else ''}): choose order <= {d_min} or more features")
        if self.budget is not None and self.budget < 2**d_min - 2 and self.budget < min_budget(d_min, self.order):
            raise ValueError(
                f"budget={self.budget} is too small for order {self.order} with {d_min} features: an estimate needs "
                f"at least one evaluation per set of size 1..{self.order}, {min_budget(d_min, self.order)}; raise "
                "budget, lower order or use fewer features")

    def _budget(self, d: int) -> int:
        if self.budget is not None:
            return self.budget
        return 2**d - 2 if 2**d - 2 <= DEFAULT_BUDGET else DEFAULT_BUDGET

    def _groups(self, game, x, features, baseline, target, full, probability, seed, args, kwargs):
        """Samples with the same number of features are explained together; the values ``(N, P)`` are padded
        with 0 for the sets of missing features."""
        d = features.d
        sets = interaction_sets(d, self.order)
        out = torch.zeros((x.shape[0], len(sets)), dtype=torch.float64, device=x.device)
        empty = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        info: dict[str, Any] = {}
        for count in torch.unique(features.count).tolist():
            rows = (features.count == count).nonzero().flatten()
            part = Features(features.mask[rows], features.count[rows])
            base = baseline[rows] if baseline.shape[0] > 1 else baseline
            owned = _select(target, rows)
            budget = self._budget(count)
            if budget >= 2**count - 2 and count <= MAX_EXACT_PLAYERS:
                v = game.values(x[rows], part, base, 2**count, lambda owner, c: all_of(c, count), [owned], args,
                                kwargs)[..., 0]
                v[:, -1] = full[rows]  # v(N) = f(x)
                result, info_part = exact(v, self.index, self.order), {"exact": True, "evaluations": 2**count - 1}
                v_empty = v[:, 0]
            else:
                generator = make_generator((seed * 1_000_003 + count) % (2**63))
                design = plan(count, budget, self.paired, generator)
                z = torch.cat([torch.zeros((1, count), dtype=torch.bool), design.z]).to(x.device)
                v = game.values(x[rows], part, base, z.shape[0], lambda owner, c: z[c], [owned], args,
                                kwargs)[..., 0]
                v_empty = v[:, 0]
                member = membership(interaction_sets(count, self.order), count)
                links = resolve_links(self.link, probability[rows], v_empty, full[rows], v[:, 1:])
                result = estimate(v_empty, full[rows], v[:, 1:], design, self.index, self.order, self.estimator,
                                  member, links, generator)
                link = links[0] if len(set(links)) == 1 else links
                info_part = {"exact": design.complete, "evaluations": design.z.shape[0] + 1,
                             "estimator": self.estimator, "link": link, "exact_sizes": design.exact_sizes}
            keep = torch.tensor([all(j < count for j in s) for s in sets], device=x.device)
            out[rows[:, None], keep.nonzero().flatten()[None]] = result.to(out)
            empty[rows] = v_empty
            info[count] = info_part
        return out, empty, (info[next(iter(info))] if len(info) == 1 else {"by_feature_count": info})


class _Game(_Shapley):
    """The coalition game of the Shapley methods, used for its values only."""

    name = "ShapleyInteractions"


def _select(target, rows: torch.Tensor):
    """The resolved target of some samples."""
    return target.select(rows.cpu())


@dataclass
class ShapleyInteractionsResult(ResultExport):
    """Interaction indices ``values`` ``(N, P)`` of the sets ``sets`` (sizes 1..order, by size then
    lexicographic), with ``v(N)`` (``value_full``) and ``v(∅)`` (``value_empty``) per sample; ``count``
    ``(N,)`` features per sample, ``features`` the feature mask."""

    values: torch.Tensor
    sets: list[tuple[int, ...]]
    index: str
    order: int
    value_full: torch.Tensor
    value_empty: torch.Tensor
    count: torch.Tensor
    features: torch.Tensor
    info: dict = field(default_factory=dict)

    def __getitem__(self, key: tuple[int, ...] | int) -> torch.Tensor:
        """The values ``(N,)`` of one set, e.g. ``result[(0, 3)]`` or ``result[2]`` (a singleton)."""
        key = (key,) if isinstance(key, int) else tuple(sorted(key))
        try:
            return self.values[:, self.sets.index(key)]
        except ValueError:
            raise KeyError(f"{key} is not one of the sets (sizes 1..{self.order} of {len(self.sets)} sets)") from None

    @property
    def efficiency_delta(self) -> torch.Tensor:
        """``Σ_S I(S) - (v(N) - v(∅))`` per sample (0 up to rounding for k-SII, STII and FSII)."""
        return self.values.sum(1) - (self.value_full - self.value_empty)

    def of_order(self, order: int) -> tuple[list[tuple[int, ...]], torch.Tensor]:
        """The sets of one size and their values ``(N, P_order)``."""
        chosen = [i for i, s in enumerate(self.sets) if len(s) == order]
        return [self.sets[i] for i in chosen], self.values[:, chosen]

    def matrix(self, sample: int = 0) -> torch.Tensor:
        """``(d, d)``: order-2 values off the diagonal (symmetric), order-1 values on it."""
        d = int(self.count[sample])
        out = torch.zeros((d, d), dtype=self.values.dtype)
        for s, value in zip(self.sets, self.values[sample].tolist()):
            if len(s) == 1 and s[0] < d:
                out[s[0], s[0]] = value
            elif len(s) == 2 and s[1] < d:
                out[s[0], s[1]] = out[s[1], s[0]] = value
        return out

    def top(self, sample: int = 0, n: int = 10, order: int | None = 2,
            names: Sequence[str] | None = None) -> list[tuple[tuple, float]]:
        """The ``n`` sets of ``order`` (``None``: any) with the largest ``|I(S)|`` for one sample."""
        d = int(self.count[sample])
        chosen = [(s, v) for s, v in zip(self.sets, self.values[sample].tolist())
                  if (order is None or len(s) == order) and s[-1] < d]
        chosen.sort(key=lambda item: -abs(item[1]))
        if names is not None:
            chosen = [(tuple(names[j] for j in s), v) for s, v in chosen]
        return chosen[:n]

    def _rows(self) -> list[dict[str, Any]]:
        rows = []
        for sample in range(self.values.shape[0]):
            d = int(self.count[sample])
            for s, v in zip(self.sets, self.values[sample].tolist()):
                if s[-1] < d:
                    rows.append({"sample": sample, "set": list(s), "order": len(s), "index": self.index, "value": v})
        return rows


__all__ = ["ShapleyInteractions", "ShapleyInteractionsResult", "DEFAULT_BUDGET"]
