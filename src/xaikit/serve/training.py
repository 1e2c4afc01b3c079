"""The served training data and what is computed on it once per session.

The labelled training data come from the command line, ``xaikit serve --train-data`` (the same option as
``--revise-data``): ``config.extra["revise"]``, a dict with ``x``, ``y`` (tensors), as
:func:`xaikit.cli.improve_command.revision_data` loads it. The revise view fine-tunes on them; the examples view
attributes a prediction to them (:func:`fitted_trak`: TRAK with the report's settings,
:func:`xaikit.examples.shown_trak`), featurising the training set once per app in a background job and keeping
the fitted TRAK in the app's cache.
"""
from __future__ import annotations

import copy
import threading
from typing import Any, Iterator

import torch

from ..examples import SHOWN_SETTINGS, TRAK, shown_trak
from .refusals import Refused, library_call
from .state import AppState

#: where the training data live in ``config.extra`` (the key the revise view has read from the start)
KEY = "revise"
#: the command-line option that gives them
OPTION = "--train-data"


def training_data(state: AppState, what: str = "this view") -> dict[str, Any]:
    """The served training data ``{"x", "y", ...}``, or a 409 answer naming the option that gives them."""
    data = state.config.extra.get(KEY)
    if data is None:
        raise Refused(409, f"this app has no training data for {what}: start it with xaikit serve --model ... "
                           f"{OPTION} decoy-digits, ground-truth (the shapes the ground-truth CNN was trained on) or "
                           "a .npz with x and y (--revise-data is the same option)")
    return data


def fitted_trak(state: AppState, job: Any) -> TRAK:
    """The served model's TRAK fitted on the training data (:func:`xaikit.examples.shown_trak`): computed by the
    first job that asks (with its progress, batch by batch; cancelling it leaves nothing cached), kept for the
    app's life; a job asking meanwhile waits for it.

    TRAK runs on a copy of the model taken under the model lock (``functional_call`` on the served model would run
    the hooks an explanation in another thread has put there), so the other views keep computing while the
    training set is featurised; the copy costs the model's memory once more."""
    with state.cache_lock:
        found = state.cache.get("trak")
    if found is not None:
        return found
    job.report(0.01, "waiting for the featurisation of the training data (once per session)")
    with trak_lock(state):
        if state.cache.get("trak") is not None:  # another job finished it meanwhile
            return state.cache["trak"]
        data = training_data(state, "training-data attribution")
        served = state.need_model()
        with state.model_lock:
            model = copy.deepcopy(served.model)
        with library_call("TRAK"):
            trak = shown_trak(model, _batches(data["x"], data["y"], job))
        with state.cache_lock:
            state.cache["trak"] = trak
    return trak


def trak_lock(state: AppState) -> threading.Lock:
    """Held while the app's TRAK is fitted or queried: its model copy switches to eval semantics for a call, so
    two calls at once could leave one in the other's mode."""
    with state.cache_lock:
        return state.cache.setdefault("trak:lock", threading.Lock())


def _batches(x: torch.Tensor, y: torch.Tensor, job: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training data in :data:`SHOWN_SETTINGS`'s batches (those TRAK reads a tensor in), reporting the job's
    progress before each and stopping when its cancel was asked."""
    step, n = SHOWN_SETTINGS["batch_size"], x.shape[0]
    for start in range(0, n, step):
        job.check()
        job.report(0.02 + 0.9 * start / n, f"TRAK: featurising the training data, {start} of {n} samples "
                                           "(once per session)")
        yield x[start:start + step], y[start:start + step]
