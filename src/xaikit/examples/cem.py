"""Contrastive explanations: pertinent positives and pertinent negatives (CEM).

Dhurandhar et al., "Explanations based on the Missing: Towards Contrastive Explanations with Pertinent
Negatives", NeurIPS 2018. For a sample ``x₀`` classified as ``t₀``:

- the **pertinent negative** (PN) is a sparse, small change ``δ`` such that ``x₀ + δ`` is classified
  differently — what must be *absent* for the prediction to stay (eq. 1):

      min_δ  c·f_κ^neg(x₀, δ) + β‖δ‖₁ + ‖δ‖₂² + γ‖x₀ + δ − AE(x₀ + δ)‖₂²,
      f_κ^neg = max{[Pred(x₀+δ)]_{t₀} − max_{i≠t₀}[Pred(x₀+δ)]_i, −κ},   x₀ + δ in the feature range;

- the **pertinent positive** (PP) is a sparse part ``δ`` of ``x₀`` that alone is still classified ``t₀`` —
  what must be *present* (eq. 3):

      min_δ  c·f_κ^pos(x₀, δ) + β‖δ‖₁ + ‖δ‖₂² + γ‖δ − AE(δ)‖₂²,
      f_κ^pos = max{max_{i≠t₀}[Pred(δ)]_i − [Pred(δ)]_{t₀}, −κ},   δ between "absent" and x₀ per element.

"Absent" is 0 in the paper (MNIST background); here it is a setting (default: the low end of the feature
range), and the PP input is ``absent + δ``. Both problems are solved as in the paper (§3.1) by FISTA with the
projected shrinkage

      δ⁽ᵏ⁺¹⁾ = Π(S_β(y⁽ᵏ⁾ − α_k ∇g(y⁽ᵏ⁾))),   y⁽ᵏ⁺¹⁾ = Π(δ⁽ᵏ⁺¹⁾ + k/(k+3)·(δ⁽ᵏ⁺¹⁾ − δ⁽ᵏ⁾)),

with ``g`` the smooth part (hinge, ``‖δ‖₂²``, autoencoder), ``S_β`` the element-wise shrinkage, ``Π`` the
projection onto the allowed box, a square-root decaying step ``α_k = α₀ √(1 − k/K)``, and a binary search over
``c`` (start ``c_init``; ``c`` is lowered where a solution was found and raised where none was). Of all
solutions found (every iterate and every start is checked), the one with the smallest elastic-net norm
``β‖δ‖₁ + ‖δ‖₂²`` is returned.

The search from ``δ = 0`` can miss a PP that exists: on a nonlinear model the hinge's step ``α c ∇f`` either
stays below the shrinkage (small ``c``) or jumps between the corners of the box (large ``c``), and which ``c``
of the binary search lands in between depends on the last bits of the model's arithmetic (vector ISA, thread
count). A sample with no PP after the search therefore gets one more FISTA run (at ``c_init``) that starts at
the other end of its box, ``δ = x₀ − absent``: the whole input, itself a PP whenever ``x₀`` keeps ``t₀`` with
margin κ, from which the shrinkage removes what the class does not need. A PP is thus found for every sample
whose input keeps its class (the returned one may be dense where the search could not shrink it), and every
returned PP or PN is checked once more on the whole batch.

All samples of a batch are optimised together, each with its own ``c``, on the model's autograd (one
forward/backward pass per iteration for the batch, plus one forward pass to check the iterate).
``Pred`` is the model's output (logits for a classifier, as in the paper).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import check_choice, check_input, check_positive
from ..explanation import Explanation
from ..methods.base import _checked_init
from ..metrics.counterfactual import reconstruction_error
from ..modes import explains_in_eval
from ..results import ResultExport
from ..targets import Contrast, check_target, resolve_target

MODES = ("both", "pp", "pn")


@dataclass
class CEMResult(ResultExport):
    """Pertinent positives and negatives of a batch.

    Attributes
    ----------
    x : Tensor ``(N, ...)``
        The explained inputs.
    target : LongTensor ``(N,)``
        The class ``t₀`` explained (the prediction by default).
    pp, pn : Tensor ``(N, ...)`` or None
        The PP input ``absent + δ`` and the PN input ``x + δ`` (where none was found: ``x``'s absent version
        resp. ``x`` itself; see ``pp_found``/``pn_found``).
    pp_found, pn_found : BoolTensor ``(N,)``
        Whether a solution was found (the PP classified ``t₀``, the PN classified otherwise, with margin κ).
    pp_class, pn_class : LongTensor ``(N,)``
        The model's class of the PP and of the PN.
    info : dict
        Settings, ``c`` per sample, ``time_s``, ``sparsity`` (fraction of elements changed) per mode.
    """

    x: torch.Tensor
    target: torch.Tensor
    pp: torch.Tensor | None
    pn: torch.Tensor | None
    pp_found: torch.Tensor | None
    pn_found: torch.Tensor | None
    pp_class: torch.Tensor | None
    pn_class: torch.Tensor | None
    absent: torch.Tensor
    output: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pp_map(self) -> torch.Tensor:
        """The PP as an attribution map: ``δ = pp − absent`` (what of ``x`` is kept)."""
        if self.pp is None:
            raise ValueError("no pertinent positives were computed (mode='pn')")
        return self.pp - self.absent

    @property
    def pn_map(self) -> torch.Tensor:
        """The PN as an attribution map: ``δ = pn − x`` (what is added to ``x``)."""
        if self.pn is None:
            raise ValueError("no pertinent negatives were computed (mode='pp')")
        return self.pn - self.x

    def _rows(self) -> list[dict[str, Any]]:
        """One row per sample: the explained class, and per computed mode whether a solution was found and its
        class (the inputs are tensors: ``.pp``, ``.pn``)."""
        rows = []
        for i, target in enumerate(self.target.tolist()):
            row: dict[str, Any] = {"sample": i, "target": target}
            for kind in ("pp", "pn"):
                found, cls = getattr(self, f"{kind}_found"), getattr(self, f"{kind}_class")
                if found is not None:
                    row[f"{kind}_found"], row[f"{kind}_class"] = bool(found[i]), int(cls[i])
            rows.append(row)
        return rows

    def explanation(self, kind: str = "pp") -> Explanation:
        """The PP or PN map as an :class:`~xaikit.explanation.Explanation` (attribution shaped like ``x``)."""
        check_choice(kind, "kind", ("pp", "pn"))
        attribution = self.pp_map if kind == "pp" else self.pn_map
        found = self.pp_found if kind == "pp" else self.pn_found
        info = {"found": found, "sparsity": self.info.get(f"{kind}_sparsity"), "time_s": self.info.get("time_s")}
        return Explanation(attribution, self.target, self.output, f"CEM({kind})", info)


class CEM:
    """Contrastive Explanation Method (Dhurandhar et al. 2018): pertinent positives and negatives.

    Parameters
    ----------
    model : nn.Module
        A classifier ``x -> (N, classes)`` (not modified; only gradients with respect to the input are taken).
    mode : "both", "pp" or "pn"
    kappa : float
        Confidence margin κ ≥ 0 of the hinge losses (paper: 0 … 1).
    beta : float
        Weight β of the L1 term, applied as the shrinkage threshold (paper: 0.1).
    gamma : float
        Weight γ of the autoencoder term (0: no autoencoder).
    autoencoder : nn.Module, optional
        ``AE`` with ``AE(x)`` shaped like ``x``; required when ``gamma > 0``.
    feature_range : (low, high), optional
        Scalars or tensors broadcastable to one sample: the box every input must stay in. Default: the
        minimum and maximum of the explained batch.
    absent : float or Tensor, optional
        The value of a feature that is "absent" (paper: 0 on MNIST). Default: the low end of ``feature_range``.
    c_init : float
        Initial weight ``c`` of the hinge (paper: 10).
    c_steps : int
        Binary-search steps over ``c`` (paper: 9).
    iterations : int
        FISTA iterations per search step (paper: 1000).
    learning_rate : float
        Initial step ``α₀`` (paper: 1e-2), decaying as ``√(1 − k/K)``.
    """

    def __init__(self, model: nn.Module, mode: str = "both", kappa: float = 0.0, beta: float = 0.1,
                 gamma: float = 0.0, autoencoder: nn.Module | None = None,
                 feature_range: tuple[Any, Any] | None = None, absent: float | torch.Tensor | None = None,
                 c_init: float = 10.0, c_steps: int = 9, iterations: int = 1000, learning_rate: float = 1e-2) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_choice(mode, "mode", MODES)
        check_positive(kappa, "kappa", allow_zero=True)
        check_positive(beta, "beta", allow_zero=True)
        check_positive(gamma, "gamma", allow_zero=True)
        check_positive(c_init, "c_init")
        check_positive(c_steps, "c_steps", integer=True)
        check_positive(iterations, "iterations", integer=True)
        check_positive(learning_rate, "learning_rate")
        if gamma > 0 and autoencoder is None:
            raise ValueError("gamma > 0 needs an autoencoder (autoencoder=AE with AE(x) shaped like x)")
        if autoencoder is not None and not isinstance(autoencoder, nn.Module):
            raise TypeError(f"autoencoder must be a torch.nn.Module, got {type(autoencoder).__name__}")
        if feature_range is not None and (not isinstance(feature_range, (tuple, list)) or len(feature_range) != 2):
            raise ValueError(f"feature_range must be a pair (low, high), got {feature_range!r}")
        self.model, self.mode, self.kappa, self.beta, self.gamma = model, mode, kappa, beta, gamma
        self.autoencoder, self.feature_range, self.absent = autoencoder, feature_range, absent
        self.c_init, self.c_steps, self.iterations, self.learning_rate = c_init, c_steps, iterations, learning_rate

    @property
    def name(self) -> str:
        return f"CEM({self.mode}, κ={self.kappa}, β={self.beta}, γ={self.gamma})"

    def _bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.feature_range is None:
            low, high = x.min(), x.max()
        else:
            low, high = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in self.feature_range)
        try:
            low, high = (torch.broadcast_to(v, x.shape[1:]) for v in (low, high))
        except RuntimeError:
            raise ValueError(f"feature_range bounds must broadcast to one sample's shape {tuple(x.shape[1:])}, "
                             f"got {tuple(low.shape)} and {tuple(high.shape)}") from None
        if (low > high).any():
            raise ValueError("feature_range: low must not exceed high")
        if ((x < low - 1e-6) | (x > high + 1e-6)).any():
            raise ValueError("x lies outside feature_range; widen the range or clip x")
        absent = low if self.absent is None else torch.as_tensor(self.absent, dtype=x.dtype, device=x.device)
        try:
            absent = torch.broadcast_to(absent, x.shape[1:])
        except RuntimeError:
            raise ValueError(f"absent must broadcast to one sample's shape {tuple(x.shape[1:])}") from None
        return low, high, absent

    @explains_in_eval
    def __call__(self, x: torch.Tensor, target: Any = None) -> CEMResult:
        """PP and/or PN of every sample of ``x`` for ``target`` (default: the predicted class)."""
        check_input(x, "x", self.model)
        began = time.perf_counter()
        low, high, absent = self._bounds(x)
        x = x.detach()
        with torch.no_grad():
            output = self.model(x)
        if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[1] < 2:
            raise ValueError("CEM needs a classifier returning (N, classes) scores with at least two classes")
        if isinstance(target, Contrast) or (callable(target) and not isinstance(target, torch.Tensor)):
            raise TypeError("CEM explains a class: target must be None, an int or one int per sample")
        check_target(target, x.shape[0])
        t0 = resolve_target(target, output).index
        info: dict[str, Any] = {"kappa": self.kappa, "beta": self.beta, "gamma": self.gamma, "c_init": self.c_init,
                                "c_steps": self.c_steps, "iterations": self.iterations,
                                "learning_rate": self.learning_rate}
        found: dict[str, Any] = {}
        for kind in ("pp", "pn"):
            if self.mode in (kind, "both"):
                kind_began = time.perf_counter()
                delta, ok, c = self._search(kind, x, t0, low, high, absent)
                point = (absent + delta) if kind == "pp" else (x + delta)
                with torch.no_grad():
                    scores = self.model(point)
                ok = ok & (self._margin(kind, scores, t0) > self.kappa)  # checked once more on the whole batch
                found[kind] = (point, ok, scores.argmax(1))
                info[f"{kind}_c"] = c
                info[f"{kind}_sparsity"] = (delta != 0).flatten(1).float().mean(1)
                info[f"{kind}_time_s"] = time.perf_counter() - kind_began
        info["time_s"] = time.perf_counter() - began
        pp = found.get("pp", (None, None, None))
        pn = found.get("pn", (None, None, None))
        return CEMResult(x, t0, pp[0], pn[0], pp[1], pn[1], pp[2], pn[2], absent.expand_as(x), output, info)

    # ---- the optimisation -----------------------------------------------------------------------------------

    def _margin(self, kind: str, scores: torch.Tensor, t0: torch.Tensor) -> torch.Tensor:
        """``[Pred]_{t₀} − max_{i≠t₀}[Pred]_i`` (PP keeps it > κ) or its negative (PN makes it > κ)."""
        own = scores.gather(1, t0[:, None])[:, 0]
        others = scores.scatter(1, t0[:, None], float("-inf")).amax(1)
        return own - others if kind == "pp" else others - own

    def _input(self, kind: str, delta: torch.Tensor, x: torch.Tensor, absent: torch.Tensor) -> torch.Tensor:
        return absent + delta if kind == "pp" else x + delta

    def _smooth_loss(self, kind: str, y: torch.Tensor, x: torch.Tensor, t0: torch.Tensor, absent: torch.Tensor,
                     c: torch.Tensor) -> torch.Tensor:
        """Per-sample ``c·f_κ + ‖δ‖₂² + γ·AE``: the part of the objective FISTA takes the gradient of."""
        point = self._input(kind, y, x, absent)
        hinge = (-self._margin(kind, self.model(point), t0)).clamp_min(-self.kappa)
        loss = c * hinge + y.flatten(1).pow(2).sum(1)
        if self.gamma > 0:
            loss = loss + self.gamma * reconstruction_error(point, self.autoencoder)
        return loss

    def _search(self, kind: str, x: torch.Tensor, t0: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
                absent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Binary search over ``c`` around FISTA; returns the best ``δ``, whether one was found, and the last ``c``.

        Every ``c`` step starts at ``δ = 0`` as in the paper. For a PP, a sample that has no solution after the
        search gets one more FISTA run that starts at the far corner of its box, ``δ = x − absent`` (the whole
        input, a PP whenever ``x`` keeps ``t₀`` with margin κ), and shrinks from that feasible side (see
        :meth:`_fista`)."""
        n = x.shape[0]
        zero = torch.zeros_like(x)
        if kind == "pp":  # δ between 0 and x − absent, element-wise
            box_low, box_high = torch.minimum(x - absent, zero), torch.maximum(x - absent, zero)
        else:  # x + δ inside the feature range
            box_low, box_high = low - x, high - x
        c = torch.full((n,), float(self.c_init), device=x.device)
        lower, upper = torch.zeros_like(c), torch.full_like(c, 1e10)
        best = torch.zeros_like(x)
        best_norm = torch.full((n,), float("inf"), device=x.device)
        for _ in range(self.c_steps):
            success = self._fista(kind, x, t0, absent, c, zero, (box_low, box_high), best, best_norm)
            upper = torch.where(success, torch.minimum(upper, c), upper)
            lower = torch.where(success, lower, torch.maximum(lower, c))
            c = torch.where(upper < 1e9, (lower + upper) / 2, c * 10)
        missing = ~torch.isfinite(best_norm)
        if kind == "pp" and missing.any():
            sub_best, sub_norm = best[missing], best_norm[missing]
            sub_c = torch.full_like(sub_norm, float(self.c_init))
            self._fista(kind, x[missing], t0[missing], absent, sub_c, (x - absent)[missing],
                        (box_low[missing], box_high[missing]), sub_best, sub_norm)
            best[missing], best_norm[missing] = sub_best, sub_norm
        return best, torch.isfinite(best_norm), c

    def _fista(self, kind: str, x: torch.Tensor, t0: torch.Tensor, absent: torch.Tensor, c: torch.Tensor,
               start: torch.Tensor, box: tuple[torch.Tensor, torch.Tensor], best: torch.Tensor,
               best_norm: torch.Tensor) -> torch.Tensor:
        """One FISTA run (paper §3.1) from ``start``; updates ``best``/``best_norm`` in place with every iterate
        (the start included) that satisfies the condition and has a smaller ``β‖δ‖₁ + ‖δ‖₂²``; returns per
        sample whether any iterate did."""
        project = lambda d: torch.minimum(torch.maximum(d, box[0]), box[1])  # noqa: E731
        delta = project(start)
        y = delta.clone()
        success = self._keep_if_better(kind, delta, x, t0, absent, best, best_norm)
        for k in range(self.iterations):
            step = self.learning_rate * (1 - k / self.iterations) ** 0.5
            y_leaf = y.requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self._smooth_loss(kind, y_leaf, x, t0, absent, c).sum(), y_leaf)
            z = y.detach() - step * grad
            new = project(torch.sign(z) * (z.abs() - self.beta).clamp_min(0))  # Π(S_β(·))
            y = project(new + k / (k + 3) * (new - delta))
            delta = new
            success |= self._keep_if_better(kind, delta, x, t0, absent, best, best_norm)
        return success

    def _keep_if_better(self, kind: str, delta: torch.Tensor, x: torch.Tensor, t0: torch.Tensor,
                        absent: torch.Tensor, best: torch.Tensor, best_norm: torch.Tensor) -> torch.Tensor:
        """Whether ``δ`` satisfies the condition (margin > κ) per sample; stores it where its elastic-net norm
        beats the best so far."""
        with torch.no_grad():
            ok = self._margin(kind, self.model(self._input(kind, delta, x, absent)), t0) > self.kappa
        norm = self.beta * delta.flatten(1).abs().sum(1) + delta.flatten(1).pow(2).sum(1)
        better = ok & (norm < best_norm)
        best.copy_(torch.where(better.view(-1, *[1] * (x.ndim - 1)), delta, best))
        best_norm.copy_(torch.where(better, norm, best_norm))
        return ok


CEM.__init__ = _checked_init(CEM.__init__)  # unknown settings are rejected by name
