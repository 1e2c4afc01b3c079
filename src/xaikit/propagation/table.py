"""The engine's tables, written out in one place: which handler serves which operation, and what runs around
and after every explained forward pass.

- :data:`HANDLERS`: operation name (:func:`.classify.op_name`) -> handler of an explaining session. An
  operation not listed runs as it is and is recorded as linear (:data:`.classify.LINEAR`) or unknown.
- :data:`TRAINING_HANDLERS`: the same for a session in training mode (``create_graph=True``).
- :data:`PARTS`: operations that both tables dispatch as their parts (``F.normalize``, ``F.glu``).
- :data:`SETUP`: context managers ``setup(session)`` entered around every explained forward pass.
- :data:`FOLLOW`: functions ``follow(session, func, name, args, kwargs, activations, out, mark)`` called after
  every dispatched operation (``mark``: the coverage log's length before it).
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager

from . import rows
from .classify import LAYER_OPS, NONLINEAR, PRODUCTS
from .handlers import attention, checkpoint, constants, elementwise, layers, norms, opaque, products, recurrent
from .handlers import scan, scatter
from .handlers import statistics
from .handlers import training

Handler = Callable[..., Any]

#: operations dispatched as their parts, in either session (each part then meets its own handler)
PARTS: dict[str, Handler] = {"glu": products.glu, "normalize": statistics.normalize}

HANDLERS: dict[str, Handler] = {
    **{name: layers.layer for name in LAYER_OPS},
    "batch_norm": layers.batch_norm,
    "addmm": layers.addmm,
    "baddbmm": layers.addmm,
    "relu": elementwise.relu,
    **{name: elementwise.nonlinear for name in NONLINEAR},
    # products and divisions by a normalisation statistic get the norm rule (see handlers.statistics)
    **{name: products.product for name in PRODUCTS},
    "mul": statistics.scaling(products.product),
    "div": statistics.scaling(scan.weighted_division(elementwise.div)),
    "square": products.square,
    **{name: scan.selection for name in scan.SELECTIONS},
    "softmax": products.softmax,
    **{name: norms.norm for name in ("layer_norm", "group_norm", "rms_norm")},
    "scaled_dot_product_attention": attention.sdpa,
    "multi_head_attention_forward": attention.multi_head_attention,
    **{name: recurrent.recurrent for name in recurrent.CELLS},
    **{name: constants.constant_sum for name in ("add", "sub", "rsub")},
    **{name: constants.constant_parts for name in ("cat", "concat", "concatenate", "stack")},
    **{name: scatter.accumulate for name in scatter.ACCUMULATE},
    "embedding_bag": scatter.embedding_bag,
    "_grouped_mm": layers.grouped_mm,
    **PARTS,
}

TRAINING_HANDLERS: dict[str, Handler] = {**training.handlers(HANDLERS), **PARTS}

#: entered in this order around every explained forward pass (and left in reverse order)
SETUP: tuple[Callable[[Any], ContextManager], ...] = (
    opaque.ReportOutput,               # the model output may come from an operation the engine did not see
    layers.FirstRuleCheck,             # warn when the composite's first-layer rule found no first layer
    elementwise.ElementwiseModules,    # a parameter-free module computing one non-linearity: the identity rule
    statistics.Statistics,             # normalisation statistics written out in the model's code
    checkpoint.PlainCheckpoints,       # torch.utils.checkpoint segments run as plain forward passes
)

#: checks of a whole explained pass, left out where a session recomputes one block of it (:mod:`.remat`)
WHOLE_PASS: frozenset = frozenset({layers.FirstRuleCheck})

#: called in this order after every dispatched operation
FOLLOW: tuple[Handler, ...] = (
    opaque.follow,                     # report activations made by unseen operations; stamp the outputs
    products.follow_gates,             # a gate seen through a view, masked, scaled or summed is still a gate
    statistics.follow,                 # carry the tags of normalisation statistics
    rows.follow,                       # the sample of each row where dimension 0 is not the batch
)
