"""Counterfactual explanations: the smallest change of an input that gives a wanted prediction (Wachter,
Mittelstadt, Russell 2017), and a diverse set of ``k`` such changes (Mothilal, Sharma, Tan, FAT* 2020), within the
user's constraints (immutable features, ranges, directions, categories) and near the data (plausibility).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..batching import batch_size_for, batched_forward, check_batch_size
from ..columns import Columns, read_columns
from ..errors import NotApplicable, check_choice, check_model, check_positive
from ..methods.machinery.seeding import check_seed, make_generator
from ..metrics.counterfactual import mad
from ..modes import eval_semantics
from ..results import ResultExport
from ..settings import CheckedSettings
from ..targets import check_target
from .constraints import Constraints
from .search import genetic_search, gradient_search, sparsify

SEARCHES = ("auto", "gradient", "genetic")


@dataclass
class CounterfactualsResult(ResultExport):
    """The counterfactuals of a batch.

    Attributes
    ----------
    x : Tensor ``(N, ...)``
    counterfactuals : Tensor ``(N, k, ...)``; a slot with none found holds ``x`` itself
    found : BoolTensor ``(N, k)``: valid (classified as ``target``) and within every constraint
    target : LongTensor ``(N,)``: the wanted class
    original : LongTensor ``(N,)``: the model's class of ``x``
    predicted : LongTensor ``(N, k)``: the model's class of each counterfactual
    feature_names : list of str or None (tables)
    info : dict: settings, ``time_s``, ``search`` per sample, ``evaluations``
    """

    x: torch.Tensor
    counterfactuals: torch.Tensor
    found: torch.Tensor
    target: torch.Tensor
    original: torch.Tensor
    predicted: torch.Tensor
    feature_names: list[str] | None = None
    columns: Columns | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> torch.Tensor:
        """``(N, k, ...)`` bool: which features each counterfactual changes."""
        return self.counterfactuals != self.x[:, None]

    def changes(self, i: int, j: int = 0) -> str:
        """The changes of counterfactual ``j`` of sample ``i`` as text: ``alcohol 12.1 → 13.2; proline …``, or
        ``none found within the constraints``."""
        if not bool(self.found[i, j]):
            return "none found within the constraints"
        flat_x, flat_c = self.x[i].reshape(-1), self.counterfactuals[i, j].reshape(-1)
        idx = (flat_x != flat_c).nonzero().flatten().tolist()
        if self.columns is None:
            return f"{len(idx)} elements changed"
        label = self.columns.label
        return "; ".join(f"{self.columns.names[q]} {label(q, float(flat_x[q]))} → {label(q, float(flat_c[q]))}"
                         for q in idx) or "no change"

    def _rows(self) -> list[dict[str, Any]]:
        """Tables: per sample its row (``counterfactual`` "x") then one row per counterfactual, with every
        column's value (Markdown marks the changed cells ``**v**``); other inputs: one row per counterfactual."""
        rows = []
        n, k = self.found.shape
        for i in range(n):
            if self.columns is not None:
                row = {"sample": i, "counterfactual": "x", "found": None, "class": int(self.original[i])}
                row.update({name: self._value(q, float(self.x[i, q])) for q, name in enumerate(self.columns.names)})
                rows.append(row)
            for j in range(k):
                ok = bool(self.found[i, j])
                row = {"sample": i, "counterfactual": j, "found": ok,
                       "class": int(self.predicted[i, j]) if ok else None}
                if self.columns is not None:
                    row.update({name: self._value(q, float(self.counterfactuals[i, j, q])) if ok else None
                                for q, name in enumerate(self.columns.names)})
                else:
                    row["changed"] = int(self.changed[i, j].sum()) if ok else None
                row["changes"] = self.changes(i, j)
                rows.append(row)
        return rows

    def _value(self, q: int, value: float) -> Any:
        return self.columns.label(q, value) if q in self.columns.coded else value

    def _markdown_cell(self, row: dict[str, Any], key: str, digits: int) -> str:
        text = super()._markdown_cell(row, key, digits)
        if self.columns is None or key not in self.columns.names or row["counterfactual"] == "x" or not row["found"]:
            return text
        q = self.columns.names.index(key)
        i, j = row["sample"], row["counterfactual"]
        return f"**{text}**" if bool(self.counterfactuals[i, j, q] != self.x[i, q]) else text

    def _markdown_notes(self) -> tuple[str, str]:
        return "", "Changed cells are **bold**; a counterfactual's row follows its sample's row (x)."


class Counterfactuals(CheckedSettings):
    """Counterfactuals (Wachter et al. 2017) and diverse sets of ``k`` (Mothilal et al. 2020, DiCE) with constraints.

    Parameters
    ----------
    model : nn.Module or callable
        A classifier ``x -> (N, classes)`` scores. The gradient search needs an ``nn.Module``; any callable
        (``xk.NumpyModel(clf.predict_proba)``) gets the gradient-free search.
    k : int
        Counterfactuals per sample (1: Wachter's closest one; ``k > 1``: a diverse set, DiCE's DPP term).
    search : "auto", "gradient" or "genetic"
        ``auto``: gradient descent on an ``nn.Module`` (then the genetic search for the samples it found none
        for, where data is given), the genetic search otherwise.
    data : optional
        Tables: the data set (as :meth:`fit` takes it): the MAD scale, the default ranges, the categories, the
        genetic search's values and the k-NN plausibility.
    feature_names, categorical
        Tables: column names; categorical columns (names, or ``{column: categories}``; DataFrame text columns must
        be declared).
    immutable : list of columns
        Features that must not change.
    ranges : dict ``{column: (low, high)}``
        Allowed values (``None`` for no bound); default: the data's minimum and maximum.
    directions : dict ``{column: "increase" | "decrease"}``
    feature_range : (low, high), optional
        Images and other tensors without a fitted table: the value range of every element (default: the batch's
        minimum and maximum).
    proximity_weight, diversity_weight : float
        ``w_p`` and ``w_d`` of the loss (DiCE: 0.5 and 1.0).
    plausibility : None, "knn" or nn.Module
        ``"knn"``: the mean distance to the ``neighbours`` nearest data rows; a module: an autoencoder whose
        reconstruction error is the term (as CEM's; e.g. for images). Weighted by ``plausibility_weight``.
    kappa : float
        Margin κ ≥ 0: the wanted class's score must exceed every other by κ.
    steps, learning_rate
        The gradient search: Adam steps and step size (on MAD-scaled changes).
    population, generations
        The genetic search.
    sparse : bool
        Revert changed features to ``x`` where the counterfactual stays valid (DiCE's post-hoc step; tables).
    encoder, decoder : nn.Module or callable, optional
        Search in an autoencoder's latent space (REVISE, Joshi et al. 2019): ``encoder(x)`` gives the codes the
        descent starts from, ``decoder(z)`` (same shape as ``x``) the candidates; proximity, diversity and the
        constraints are measured on the decoded candidates in input space. Gradient search only; both or neither.
    seed : int
    batch_size : "auto" or int
        Candidates per forward pass of the checks (the gradient search runs all ``N·k`` candidates at once).
    """

    def __init__(self, model: Any, k: int = 1, search: str = "auto", data: Any = None,
                 feature_names: Sequence[str] | None = None, categorical: Any = None, immutable: Any = None,
                 ranges: dict | None = None, directions: dict | None = None,
                 feature_range: tuple[float, float] | None = None, proximity_weight: float = 0.5,
                 diversity_weight: float = 1.0, plausibility: Any = None, plausibility_weight: float = 0.0,
                 neighbours: int = 5, kappa: float = 0.0, steps: int = 300, learning_rate: float = 0.05,
                 population: int = 200, generations: int = 30, sparse: bool = True, encoder: Any = None,
                 decoder: Any = None, seed: int = 0, batch_size: int | str = "auto") -> None:
        check_model(model)
        check_positive(k, "k", integer=True)
        check_choice(search, "search", SEARCHES)
        if search == "gradient" and not isinstance(model, nn.Module):
            raise TypeError("search='gradient' needs a torch.nn.Module (it differentiates the model); use "
                            "search='genetic' (or 'auto') for a plain function")
        for value, name in ((proximity_weight, "proximity_weight"), (diversity_weight, "diversity_weight"),
                            (plausibility_weight, "plausibility_weight"), (kappa, "kappa")):
            check_positive(value, name, allow_zero=True)
        if not (plausibility is None or plausibility == "knn" or isinstance(plausibility, nn.Module)):
            raise ValueError(f"plausibility must be None, 'knn' or an autoencoder (nn.Module), got {plausibility!r}")
        if plausibility_weight > 0 and plausibility is None:
            raise ValueError("plausibility_weight > 0 needs plausibility='knn' (with data) or an autoencoder")
        for value, name in ((neighbours, "neighbours"), (steps, "steps"), (population, "population"),
                            (generations, "generations")):
            check_positive(value, name, integer=True)
        check_positive(learning_rate, "learning_rate")
        if (encoder is None) != (decoder is None):
            raise ValueError(f"a latent-space search needs both encoder= and decoder= (got only the "
                             f"{'encoder' if decoder is None else 'decoder'})")
        if encoder is not None:
            for value, name in ((encoder, "encoder"), (decoder, "decoder")):
                if not callable(value):
                    raise TypeError(f"{name} must be a module or callable, got {type(value).__name__}")
            if search == "genetic":
                raise ValueError("encoder=/decoder= run the gradient search on latent codes: use search='gradient' "
                                 "(or 'auto'), or drop encoder/decoder for the genetic search")
            if not (isinstance(model, nn.Module) and isinstance(decoder, nn.Module)):
                raise TypeError("a latent-space search differentiates decoder and model: both must be torch.nn.Module")
        check_seed(seed)
        if seed is None:
            raise ValueError("seed must be an int: counterfactuals are reproducible by default")
        check_batch_size(batch_size)
        if feature_range is not None and (not isinstance(feature_range, (tuple, list)) or len(feature_range) != 2):
            raise ValueError(f"feature_range must be a pair (low, high), got {feature_range!r}")
        self.model, self.k, self.search, self.feature_names, self.categorical = model, k, search, feature_names, \
            categorical
        self.immutable, self.ranges, self.directions, self.feature_range = immutable, ranges, directions, \
            feature_range
        self.proximity_weight, self.diversity_weight = float(proximity_weight), float(diversity_weight)
        self.plausibility, self.plausibility_weight, self.neighbours = plausibility, float(plausibility_weight), \
            neighbours
        self.kappa, self.steps, self.learning_rate = float(kappa), steps, float(learning_rate)
        self.population, self.generations, self.sparse, self.seed = population, generations, sparse, seed
        self.encoder, self.decoder = encoder, decoder
        self.batch_size = batch_size
        self.columns: Columns | None = None
        self.data_: torch.Tensor | None = None
        self.constraints: Constraints | None = None
        if data is not None:
            self.fit(data)
        elif any(v is not None for v in (immutable, ranges, directions, categorical)):
            raise ValueError("immutable, ranges, directions and categorical name columns of a table: pass data= "
                             "(or call .fit(data)) so that the columns are known")

    def fit(self, data: Any) -> "Counterfactuals":
        """Read the tabular data set: columns, categories, the MAD scale and the constraints (checked here: an
        unknown column in ``immutable``/``ranges``/``directions`` raises an error naming the argument)."""
        x, self.columns = read_columns(data, self.feature_names, self.categorical, name="data")
        self.data_ = x
        self.constraints = Constraints.for_table(self.columns, x, self.immutable, self.ranges, self.directions)
        if self.plausibility == "knn" and x.shape[0] < 1:
            raise ValueError("plausibility='knn' needs data rows")
        return self

    def __call__(self, x: Any, target: Any = None) -> CounterfactualsResult:
        """Counterfactuals of every sample of ``x`` classified as ``target`` (the wanted class: an int or one per
        sample; for a binary classifier the default is the other class)."""
        began = time.perf_counter()
        table = self.columns is not None
        if table and not isinstance(x, torch.Tensor):
            cats = {self.columns.names[j]: self.columns.categories[j] if j in self.columns.coded else None
                    for j in self.columns.categories}
            x, _ = read_columns(x, None if type(x).__module__.split(".")[0] == "pandas" else self.columns.names,
                                cats or None, name="x")
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] == 0:
            raise ValueError("x must be a non-empty batch (N, ...) (a tensor, or rows like the fitted data)")
        if not table and not x.is_floating_point():
            raise NotApplicable(f"x holds {x.dtype} values (token ids?): counterfactuals change input values, and text "
                                "counterfactuals by token substitution are not implemented; give float inputs")
        if table and (x.ndim != 2 or x.shape[1] != self.columns.d):
            raise ValueError(f"x must be rows (N, {self.columns.d}) like the fitted data, got {tuple(x.shape)}")
        check_target(target, x.shape[0])
        weight = next((p for p in getattr(self.model, "parameters", lambda: iter(()))() if p.is_floating_point()),
                      None)
        dtype = weight.dtype if weight is not None else (x.dtype if x.is_floating_point() else torch.float32)
        shape = tuple(x.shape[1:])
        flat = x.reshape(x.shape[0], -1).double().cpu()
        n, d = flat.shape
        chunk = batch_size_for(self.batch_size, x[0].to(dtype))
        evaluations = 0

        def forward(points: torch.Tensor) -> torch.Tensor:
            nonlocal evaluations
            evaluations += points.shape[0]
            inputs = points.reshape(-1, *shape).to(dtype)
            if points.requires_grad:
                return self.model(inputs).double()
            return batched_forward(self.model, inputs, chunk).double().cpu()

        with eval_semantics(self.model), self._latent_modes():
            scores = forward(flat)
            if scores.ndim != 2 or scores.shape[1] < 2:
                raise ValueError(f"Counterfactuals needs a classifier returning (N, classes) scores, got shape "
                                 f"{tuple(scores.shape)}")
            classes = scores.shape[1]
            original = scores.argmax(1)
            wanted = self._target(target, original, classes, n)
            constraints, scale, data = self._setup(flat)
            generator = make_generator(self.seed)
            found = torch.zeros(n, self.k, dtype=torch.bool)
            best = flat[:, None].expand(n, self.k, d).clone()
            used = ["none"] * n
            differentiable = isinstance(self.model, nn.Module) and self.search in ("auto", "gradient")
            if differentiable:
                latent = None if self.encoder is None else self._latent(flat, shape, dtype)
                best, found = gradient_search(
                    forward, flat, wanted, constraints, scale, self.k, self.steps, self.learning_rate, self.kappa,
                    self.proximity_weight, self.diversity_weight, self.plausibility, self.plausibility_weight, data,
                    self.neighbours, shape, generator, latent)
                used = ["gradient" if latent is None else "latent"] * n
            rest = ~found.any(1) if differentiable else torch.ones(n, dtype=torch.bool)
            fallback = self.search != "gradient" and self.encoder is None and rest.any()
            if fallback and data is None and differentiable:
                fallback = False  # auto on an image model without data: report none found (below), no error
            if fallback:
                if data is None:
                    raise ValueError("the gradient-free search draws feature values from the data: pass data= "
                                     "(or call .fit(data)), or use an nn.Module with search='gradient'")
                idx = rest.nonzero().flatten()
                sub, sub_found = genetic_search(
                    forward, flat[idx], wanted[idx], constraints, scale, self.k, data, self.population,
                    self.generations, self.kappa, self.proximity_weight, self.plausibility,
                    self.plausibility_weight, self.neighbours, shape, generator)
                best[idx], found[idx] = sub, sub_found
                for i in idx.tolist():
                    used[i] = "genetic"
            if self.sparse and table and self.encoder is None:  # latent: keep decoded candidates
                best = sparsify(forward, best, found, flat, wanted, self.kappa, scale, self.proximity_weight,
                                self.diversity_weight)
            best = torch.where(found[..., None], best, flat[:, None])
            predicted = forward(best.reshape(n * self.k, d)).argmax(1).view(n, self.k)
        # the last word: every returned counterfactual is re-checked (class and constraints)
        found &= (predicted == wanted[:, None]) & constraints.satisfied(best, flat)
        best = torch.where(found[..., None], best, flat[:, None])
        none = (~found.any(1)).nonzero().flatten().tolist()
        if none:
            warnings.warn(f"Counterfactuals: none found within the constraints for sample(s) {none} (target class "
                          f"{[int(wanted[i]) for i in none]}); their slots hold x with found=False. Relax the "
                          "constraints (immutable, ranges, directions) or raise steps/population", UserWarning,
                          stacklevel=2)
        out = best.reshape(n, self.k, *shape).to(x.dtype if x.is_floating_point() else torch.float64)
        info = {"k": self.k, "search": used, "space": "input" if self.encoder is None else "latent",
                "kappa": self.kappa, "proximity_weight": self.proximity_weight,
                "diversity_weight": self.diversity_weight, "plausibility_weight": self.plausibility_weight,
                "seed": self.seed, "evaluations": evaluations, "time_s": time.perf_counter() - began}
        return CounterfactualsResult(x, out, found, wanted, original, predicted,
                                     self.columns.names if table else None, self.columns, info)

    # ---- internals --------------------------------------------------------------------------------------------
    def _latent_modes(self) -> Any:
        """Eval semantics for the encoder and decoder modules too (restored after, as for the model)."""
        from contextlib import ExitStack

        stack = ExitStack()
        for part in (self.encoder, self.decoder):
            if isinstance(part, nn.Module) and part is not self.model:
                stack.enter_context(eval_semantics(part, warn=False))
        return stack

    def _latent(self, flat: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Any:
        """``(encode, decode)`` on flattened inputs and codes, checked once: the decoder must give back ``x``'s
        shape (an error names ``decoder`` otherwise)."""
        n, d = flat.shape
        with torch.no_grad():
            z = self.encoder(flat.reshape(n, *shape).to(dtype))
            if not isinstance(z, torch.Tensor) or z.ndim < 2 or z.shape[0] != n:
                raise ValueError(f"encoder must map x (N, ...) to codes (N, ...), got "
                                 f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
            code = tuple(z.shape[1:])
            back = self.decoder(z)
        if not isinstance(back, torch.Tensor) or tuple(back.shape) != (n, *shape):
            raise ValueError(f"decoder must map the encoder's codes {(n, *code)} back to x's shape {(n, *shape)}, "
                             f"got {tuple(back.shape) if isinstance(back, torch.Tensor) else type(back).__name__}")
        zdtype = z.dtype if z.is_floating_point() else dtype

        def encode(points: torch.Tensor) -> torch.Tensor:
            return self.encoder(points.reshape(-1, *shape).to(dtype)).reshape(points.shape[0], -1).double()

        def decode(codes: torch.Tensor) -> torch.Tensor:
            return self.decoder(codes.reshape(-1, *code).to(zdtype)).reshape(codes.shape[0], d).double()

        return encode, decode

    def _target(self, target: Any, original: torch.Tensor, classes: int, n: int) -> torch.Tensor:
        if target is None:
            if classes != 2:
                raise ValueError(f"target is required for a classifier with {classes} classes: the wanted class "
                                 f"of the counterfactuals (an int in 0 … {classes - 1}, or one per sample)")
            return 1 - original
        if callable(target) and not isinstance(target, torch.Tensor):
            raise TypeError("target must be the wanted class: an int or one int per sample")
        wanted = torch.as_tensor(target).long().cpu()
        wanted = wanted.expand(n).clone() if wanted.ndim == 0 else wanted
        bad = sorted({int(t) for t in wanted.tolist() if not 0 <= int(t) < classes})
        if bad:
            raise ValueError(f"target class {bad[0]} is impossible: the model has {classes} classes (0 … "
                             f"{classes - 1}); give the wanted class of the counterfactuals")
        return wanted

    def _setup(self, flat: torch.Tensor) -> tuple[Constraints, torch.Tensor, torch.Tensor | None]:
        if self.columns is not None:
            return self.constraints, mad(self.data_), self.data_
        if self.plausibility == "knn":
            raise ValueError("plausibility='knn' needs the data set: pass data= (or .fit(data))")
        low, high = self.feature_range if self.feature_range is not None else (float(flat.min()), float(flat.max()))
        return Constraints.for_elements(flat.shape[1], low, high), torch.ones(flat.shape[1], dtype=torch.float64), \
            None
