"""A prediction's top proponents and opponents among the training data, as xaikit shows them: the report's
examples section (``xaikit report``) and the examples view of ``xaikit serve`` fit the same :class:`TRAK` with
the same settings (:data:`SHOWN_SETTINGS`), so both show the same training samples for the same model, training
data and query.

The settings: the full model, projection ``k = 128`` (at most the gradient size), the model's final weights
(one ensemble member) and no Newton weights. Without them the score is the kernel similarity
``φ(z)ᵀ(ΦᵀΦ)⁻¹φ_i`` (Park et al. 2023, eq. 14 with ``Q = I``): on the bundled shapes CNN (100 % training
accuracy) the paper's ``1 − p_i`` ranks the least-fitted images first whatever their class (the top proponent
shares the predicted class for 30 % of 40 queries with them, 92.5 % without; ``docs/data_attribution.md``).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .gradients import attributed_parameters, gradient_size
from .trak import TRAK

#: the TRAK settings of the shown proponents and opponents (the report's and ``xaikit serve``'s)
SHOWN_SETTINGS: dict[str, Any] = {"layer": "all", "projection": 128, "newton": False, "seed": 0, "batch_size": 64}


def shown_trak(model: nn.Module, data: Any, progress: bool = False) -> TRAK:
    """:class:`TRAK` with :data:`SHOWN_SETTINGS` fitted on ``data`` (labelled training data in any form
    :mod:`xaikit.data` reads: ``(x, y)``, batches ``(x, y)``, a Dataset ...). A model with fewer than 128
    attributed parameters is projected to its gradient size (no projection beyond it)."""
    settings = dict(SHOWN_SETTINGS)
    size = gradient_size(model, attributed_parameters(model, settings["layer"]))
    settings["projection"] = min(settings["projection"], size)
    return TRAK(model, progress=progress, **settings).fit(data)


def shown_method(trak: TRAK, samples: str = "training samples") -> str:
    """What the shown proponents were computed with, in words (a caption for the report and the web page)."""
    newton = "" if trak.newton else " without Newton weights"
    return f"TRAK{newton}, {trak.train_size} {samples}, projection {trak.projection}"
