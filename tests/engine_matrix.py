"""The engine's promise on one model, as the model-matrix tests check it (issue 29).

:func:`check_model` runs LRP under each composite and asserts what every architecture must give: it runs,
no operation is unknown, the balance closes (``start = input + absorbed + residual`` with a relative residual
≤ 1e-4, float64 with biases), the model is unchanged. :func:`check_bias_free` asserts conservation where
nothing input-independent is added (biases and additive constants zeroed): the input relevance is the logit
within 1e-3 (for AttnLRP, input + the softmax Taylor rule's absorbed share, AttnLRP Prop. 3.1).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot

RESIDUAL = 1e-4  #: relative residual allowed with biases (float64)
BIAS_FREE = 1e-3  #: relative conservation error allowed without additive constants


def _explain(model: nn.Module, x: Any, composite: str, target: Any, kwargs: dict | None,
             **settings: Any) -> xk.Explanation:
    return xk.LRP(model, composite=composite, **settings)(x, target=target, forward_kwargs=kwargs or {})


def check_model(model: nn.Module, x: Any, target: Any = 0, kwargs: dict | None = None,
                composites: Iterable[str] = ("epsilon", "cp_lrp", "attnlrp")) -> dict[str, dict]:
    """Every composite: runs, nothing unknown, relative residual ≤ :data:`RESIDUAL`, model unchanged.
    Returns the conservation reports by composite."""
    reports = {}
    for composite in composites:
        before = snapshot(model)
        expl = _explain(model, x, composite, target, kwargs)
        assert_unchanged(model, before)
        assert expl.info["coverage"]["unknown"] == {}, (composite, expl.info["coverage"]["unknown"])
        c = expl.info["conservation"]
        assert torch.isfinite(c["residual"]).all() and torch.isfinite(c["absorbed"]).all(), (composite, c)
        assert (c["residual"].abs() <= RESIDUAL * c["start"].abs()).all(), (composite, c)
        reports[composite] = c
    return reports


def check_bias_free(model: nn.Module, x: Any, target: Any = 0, kwargs: dict | None = None,
                    composites: Iterable[str] = ("epsilon", "cp_lrp")) -> dict[str, torch.Tensor]:
    """A model without additive constants: the input relevance is the start within :data:`BIAS_FREE`
    (AttnLRP: input + absorbed, the Taylor rule's share being the only absorber). Returns the relative errors."""
    errors = {}
    for composite in composites:
        before = snapshot(model)
        expl = _explain(model, x, composite, target, kwargs, epsilon=1e-9)
        assert_unchanged(model, before)
        c = expl.info["conservation"]
        assert c["start"].abs().min() > 1e-4, (composite, c)  # a meaningful logit to conserve
        total = c["input"] + c["absorbed"] if composite == "attnlrp" else c["input"]
        errors[composite] = ((total - c["start"]).abs() / c["start"].abs()).max()
        assert errors[composite] <= BIAS_FREE, (composite, errors[composite], c)
    return errors


def quiet(build: Callable[[], nn.Module]) -> nn.Module:
    """Build a `transformers` model without its logging and warnings (see ``text_models._quiet``)."""
    from text_models import _quiet

    return _quiet(build)
