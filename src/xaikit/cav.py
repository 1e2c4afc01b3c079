"""Concept activation vectors (CAVs): the direction in a layer's activation space that separates samples with a
concept from samples without it (Kim et al., ICML 2018, Sec. 3.1; Anders et al. 2022 for artifacts).

A foundation module because two rooms of one floor need it: :mod:`xaikit.improve` (ClArC projects the artifact's
CAV out) and :mod:`xaikit.concepts` (TCAV scores a class's sensitivity to a concept's CAV); rooms of one floor
may not import each other, so the one definition lives below both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .data import Data
from .deprecation import warn_renamed
from .errors import check_choice, check_input, check_positive
from .layers import capture, find_layer
from .modes import eval_semantics


def activations(model: nn.Module, name: str, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The outputs of the layer ``name`` for ``x`` (in eval semantics, in chunks, without gradients)."""
    parts = []
    with torch.no_grad(), eval_semantics(model), capture(model, name) as outputs:
        for start in range(0, x.shape[0], batch_size):
            model(x[start:start + batch_size])
            parts.append(outputs.pop().detach())
    return torch.cat(parts)


#: the classifiers of :func:`fit_cav`
CAV_METHODS = ("svm", "pattern")


@dataclass
class CAV:
    """A concept activation vector at a layer.

    Attributes
    ----------
    layer : str
    direction : unit vector ``v`` shaped like one sample's activation
    clean_mean, artifact_mean : mean activations of the clean and the artifact samples
    method : ``"svm"`` or ``"pattern"`` (the ``classifier`` of :func:`fit_cav`)
    accuracy : training accuracy of ``sign(vᵀ(a − midpoint))`` separating the two sets (how linear it is)
    """

    layer: str
    direction: torch.Tensor
    clean_mean: torch.Tensor
    artifact_mean: torch.Tensor
    method: str
    accuracy: float

    def score(self, a: torch.Tensor) -> torch.Tensor:
        """``vᵀa`` per sample, for activations ``a`` (N, *shape)."""
        return a.flatten(1) @ self.direction.flatten().to(a.dtype)


def fit_cav(model: nn.Module, layer: str, x_artifact: Any, x_clean: Any,
            classifier: str = "svm", C: float = 1.0, seed: int = 0, *, method: str | None = None) -> CAV:
    """Fit the CAV of an artifact at ``layer`` from samples with (``x_artifact``) and without it (``x_clean``).

    Each is a tensor of inputs or a data set in any form of :class:`xaikit.data.Data` (only its inputs are used).

    ``classifier="svm"``: unit normal of a linear SVM (``sklearn.svm.LinearSVC``, balanced classes,
    regularisation ``C``) on the flattened activations. ``classifier="pattern"``: the pattern (signal) CAV
    ``v ∝ Σ_n (a_n − ā)(t_n − t̄)`` with ``t`` = 1 for artifact samples, 0 for clean ones. ``method=`` is the
    deprecated name of ``classifier=`` (``method=`` names an explainer everywhere else).
    """
    argument = "classifier"
    if method is not None:
        warn_renamed("fit_cav(method=...)", "fit_cav(classifier=...)", 3)
        classifier, argument = method, "method"
    check_choice(classifier, argument, CAV_METHODS)
    method = classifier
    check_positive(C, "C")
    find_layer(model, layer)
    x_artifact, x_clean = (Data(value, batch_size=None, name=name).tensors().x
                           for name, value in (("x_artifact", x_artifact), ("x_clean", x_clean)))
    for name, value in (("x_artifact", x_artifact), ("x_clean", x_clean)):
        check_input(value, name, model)
    return cav_from_activations(layer, activations(model, layer, x_artifact), activations(model, layer, x_clean),
                                method, C, seed)


def cav_from_activations(layer: str, a_art: torch.Tensor, a_clean: torch.Tensor, classifier: str = "svm",
                         C: float = 1.0, seed: int = 0) -> CAV:
    """The CAV of :func:`fit_cav` from activations already computed: ``a_art`` (with the concept or artifact)
    and ``a_clean`` (without), each ``(n, *shape)`` (TCAV fits many CAVs on one set of activations)."""
    method = classifier
    acts = torch.cat([a_art, a_clean]).flatten(1).double()
    t = torch.cat([torch.ones(len(a_art)), torch.zeros(len(a_clean))]).double()
    if method == "svm":
        from sklearn.svm import LinearSVC

        svm = LinearSVC(C=C, class_weight="balanced", random_state=seed, max_iter=20000)
        svm.fit(acts.numpy(), t.numpy())
        v = torch.as_tensor(svm.coef_[0], dtype=torch.float64)
    else:
        v = ((acts - acts.mean(0)) * (t - t.mean())[:, None]).sum(0)
    norm = v.norm()
    if not norm > 0:
        raise ValueError(f"the artifact and clean activations at layer {layer!r} do not differ; no CAV")
    v = v / norm
    mid = (acts[t == 1].mean(0) + acts[t == 0].mean(0)) / 2
    accuracy = float((((acts - mid) @ v > 0).double() == t).double().mean())
    shape = a_art.shape[1:]
    dtype = a_art.dtype
    return CAV(layer, v.to(dtype).view(shape), a_clean.mean(0), a_art.mean(0), method, accuracy)
