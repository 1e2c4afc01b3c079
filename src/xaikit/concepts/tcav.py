"""TCAV: testing with concept activation vectors (Kim et al., "Interpretability beyond feature attribution",
ICML 2018).

For a concept ``C`` (example inputs that show it) and a layer ``l``, a CAV ``v_C`` is the normal of a linear
classifier that separates the layer's activations of the concept's examples from those of a random set
(Sec. 3.1; :func:`xaikit.cav.cav_from_activations`). The conceptual sensitivity of the target's score to the
concept is the directional derivative ``S_C(x) = ∇_a f_t(a(x)) · v_C`` (Eq. 1), and the TCAV score is the share
of the inputs with ``S_C(x) > 0`` (Eq. 2).

The statistical test (Sec. 3.2): a CAV from one random set can point anywhere. The concept is fitted against
``runs`` random sets, giving ``runs`` TCAV scores; ``runs`` *random* CAVs (a random set against another random
set) give the scores of a meaningless concept. A two-sided t-test compares the two samples of scores; with
several concepts the p-values are Bonferroni-corrected (multiplied by the number of concepts), and a concept is
significant where the corrected p-value is below ``alpha``.

Where it lives: the CAV fitting is shared with ClArC (:mod:`xaikit.improve`), so it moved down to the
foundation (:mod:`xaikit.cav`); concepts and improve stand side by side and may not import each other.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..cav import CAV, CAV_METHODS, activations, cav_from_activations
from ..data import Data
from ..errors import check_choice, check_input, check_positive
from ..layers import capture, find_layer
from ..modes import eval_semantics
from ..results import ResultExport
from ..settings import checked_init
from ..targets import TargetSpec, resolve_target
from ..tokens import model_scores


@dataclass
class TCAVResult(ResultExport):
    """TCAV scores of the concepts for one target, with the paper's test against random concepts.

    Attributes
    ----------
    concepts : list of str
    scores : dict of str to ndarray ``(runs,)``
        The TCAV score of the concept against each random set.
    random_scores : ndarray ``(runs,)``
        The TCAV scores of the random CAVs (random set against random set).
    p_values, p_corrected : dict of str to float
        Two-sided t-test of the concept's scores against the random scores; times the number of concepts
        (Bonferroni), at most 1.
    accuracy : dict of str to float
        Mean training accuracy of the concept's CAVs (how linearly the concept separates at the layer).
    alpha : float
    layer : str
    target : str
    """

    concepts: list[str]
    scores: dict[str, np.ndarray]
    random_scores: np.ndarray
    p_values: dict[str, float]
    p_corrected: dict[str, float]
    accuracy: dict[str, float]
    alpha: float
    layer: str
    target: str
    cavs: dict[str, list[CAV]] = field(default_factory=dict, repr=False)

    def significant(self, concept: str) -> bool:
        """Whether the concept's scores differ from the random ones (corrected p-value < alpha)."""
        return bool(self.p_corrected[concept] < self.alpha)

    def _rows(self) -> list[dict[str, Any]]:
        return [{"concept": c, "target": self.target, "layer": self.layer, "tcav": float(self.scores[c].mean()),
                 "sd": float(self.scores[c].std(ddof=1)), "random_tcav": float(self.random_scores.mean()),
                 "random_sd": float(self.random_scores.std(ddof=1)), "p_value": self.p_values[c],
                 "p_bonferroni": self.p_corrected[c], "significant": self.significant(c),
                 "cav_accuracy": self.accuracy[c], "runs": int(self.scores[c].size)}
                for c in self.concepts]


class TCAV:
    """TCAV scores with the statistical test of Kim et al. (2018).

    Parameters
    ----------
    model : nn.Module
    layer : str or nn.Module
        The layer whose activation space holds the CAVs.
    runs : int
        Random sets the concept is fitted against (and random CAVs for the null distribution); the paper uses
        500 for its figures, and at least 2 are needed for the t-test.
    set_size : int, optional
        Examples per random set (default: the size of the smallest concept set); a concept with more examples
        is subsampled to ``set_size`` afresh in every run.
    classifier : str
        ``"svm"`` (a linear SVM's normal, the paper's) or ``"pattern"`` (:func:`xaikit.cav.fit_cav`).
    C : float
        The SVM's regularisation.
    alpha : float
        Significance level of the Bonferroni-corrected test.
    seed : int
        Seed of the random sets (a private generator).
    batch_size : int
        Inputs per forward/backward pass.

    Use
    ---
    ``tcav = TCAV(model, layer).fit({"stripes": x_stripes}, random=x_pool)`` — concepts as inputs (any form of
    :class:`xaikit.data.Data`), ``random`` a pool of inputs the random sets are drawn from without replacement
    (at least ``2 · set_size`` inputs); then ``tcav(x, target)`` with ``x`` the inputs of the class (or any
    inputs) returns a :class:`TCAVResult`.
    """

    @checked_init
    def __init__(self, model: nn.Module, layer: str | nn.Module, runs: int = 20, set_size: int | None = None,
                 classifier: str = "svm", C: float = 1.0, alpha: float = 0.05, seed: int = 0,
                 batch_size: int = 64) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_positive(runs, "runs", integer=True)
        if runs < 2:
            raise ValueError(f"runs must be at least 2 for the t-test, got {runs}")
        if set_size is not None:
            check_positive(set_size, "set_size", integer=True)
        check_choice(classifier, "classifier", CAV_METHODS)
        check_positive(C, "C")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        check_positive(batch_size, "batch_size", integer=True)
        self.model, self.layer = model, find_layer(model, layer, "layer")[0]
        self.runs, self.set_size, self.classifier, self.C = runs, set_size, classifier, float(C)
        self.alpha, self.seed, self.batch_size = float(alpha), seed, batch_size
        self.cavs: dict[str, list[CAV]] = {}
        self.random_cavs: list[CAV] = []

    def _inputs(self, value: Any, name: str) -> torch.Tensor:
        x = Data(value, batch_size=None, name=name).tensors().x
        check_input(x, name, self.model)
        return x

    def fit(self, concepts: Mapping[str, Any], random: Any) -> "TCAV":
        """Fit ``runs`` CAVs per concept (against ``runs`` random sets) and ``runs`` random CAVs."""
        if not isinstance(concepts, Mapping) or not concepts:
            raise ValueError("concepts must be a non-empty dict {name: example inputs}")
        acts = {str(name): activations(self.model, self.layer, self._inputs(value, f"concepts[{name!r}]"),
                                       self.batch_size) for name, value in concepts.items()}
        pool = activations(self.model, self.layer, self._inputs(random, "random"), self.batch_size)
        size = self.set_size or min(len(a) for a in acts.values())
        if len(pool) < 2 * size:
            raise ValueError(f"random holds {len(pool)} inputs; the random sets need at least 2 × set_size = "
                             f"{2 * size} (give more random inputs or a smaller set_size)")
        generator = torch.Generator().manual_seed(self.seed)
        self.cavs = {name: [] for name in acts}
        self.random_cavs = []
        for run in range(self.runs):
            order = torch.randperm(len(pool), generator=generator)
            negative, other = pool[order[:size]], pool[order[size:2 * size]]
            for name, a in acts.items():  # a concept with more examples than set_size: a fresh subset per run
                chosen = a if len(a) <= size else a[torch.randperm(len(a), generator=generator)[:size]]
                self.cavs[name].append(cav_from_activations(self.layer, chosen, negative, self.classifier, self.C,
                                                            run))
            self.random_cavs.append(cav_from_activations(self.layer, other, negative, self.classifier, self.C, run))
        return self

    def gradients(self, x: torch.Tensor, target: TargetSpec) -> tuple[torch.Tensor, Any]:
        """``∇_a f_t`` at the layer for every input ``(N, *shape)``, and the resolved target."""
        parts, resolved = [], None
        with eval_semantics(self.model):
            output = torch.cat([model_scores(self._forward(x[s:s + self.batch_size])).detach()
                                for s in range(0, len(x), self.batch_size)])
            resolved = resolve_target(target, output)
            for start in range(0, len(x), self.batch_size):
                rows = torch.arange(start, min(len(x), start + self.batch_size))
                with torch.enable_grad(), capture(self.model, self.layer) as seen:
                    score = resolved.select(rows).score(model_scores(self.model(x[rows])))
                    (grad,) = torch.autograd.grad(score.sum(), seen[0])
                parts.append(grad.detach())
        return torch.cat(parts), resolved

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x)

    def __call__(self, x: Any, target: TargetSpec = None) -> TCAVResult:
        if not self.cavs:
            raise ValueError("TCAV is not fitted: call .fit(concepts, random) first")
        from scipy.stats import ttest_ind

        x = self._inputs(x, "x")
        grads, resolved = self.gradients(x, target)
        flat = grads.flatten(1).double()

        def score(cav: CAV) -> float:
            return float((flat @ cav.direction.flatten().double() > 0).double().mean())

        random_scores = np.array([score(c) for c in self.random_cavs])
        scores = {name: np.array([score(c) for c in cavs]) for name, cavs in self.cavs.items()}
        p_values, corrected = {}, {}
        for name, values in scores.items():
            if np.ptp(values) == 0 and np.ptp(random_scores) == 0:  # the t-test is undefined for constant samples
                p = 1.0 if values[0] == random_scores[0] else 0.0
            else:
                with warnings.catch_warnings():  # scipy's note on nearly constant samples: the p-value stands
                    warnings.simplefilter("ignore", RuntimeWarning)
                    p = float(ttest_ind(values, random_scores).pvalue)
            p_values[name], corrected[name] = p, min(1.0, p * len(scores))
        accuracy = {name: float(np.mean([c.accuracy for c in cavs])) for name, cavs in self.cavs.items()}
        targets = sorted({int(i) for i in resolved.reported.reshape(-1).tolist()})
        return TCAVResult(list(scores), scores, random_scores, p_values, corrected, accuracy, self.alpha, self.layer,
                          ", ".join(map(str, targets)), dict(self.cavs))
