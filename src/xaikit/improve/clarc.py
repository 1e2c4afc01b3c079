"""Class artifact compensation, ClArC (Anders et al., "Finding and removing Clever Hans", Inf. Fusion 2022).

An artifact (a watermark, a decoy patch) is a direction ``v`` in the activation space of a layer: the concept
activation vector (CAV) that separates artifact from clean samples there (:func:`fit_cav`), either the unit
normal of a linear SVM (scikit-learn) or the *pattern* (signal) CAV, the covariance of the activations with
the artifact label (Haufe et al. 2014; Pahde et al. 2023, "Navigating neural space", who show it points at the
artifact's signal rather than at what cancels noise).

- **P-ClArC** (projective): at the layer, ``a ↦ a + v (vᵀz − vᵀa)`` with ``z`` the mean activation of clean
  samples, so no sample carries more or less of the artifact than a clean one; no training. As a reversible
  forward hook (:func:`project`, a context manager) or a wrapper module (:class:`Projected`).
- **A-ClArC** (augmentative): ``z`` the mean activation of *artifact* samples, i.e. the artifact is added to
  every sample at the layer, and the layers after it are fine-tuned on data of all classes
  (:func:`a_clarc`), so the model unlearns to use it.
"""
from __future__ import annotations

__all__ = ["CAV", "CAV_METHODS", "fit_cav", "shift", "project", "Projected", "a_clarc", "layers_after"]

import contextlib
import copy
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..cav import CAV, CAV_METHODS, fit_cav
from ..data import Data
from ..errors import check_choice, check_input, check_positive
from ..layers import Hooks, find_layer, hooked
from ..modes import FollowsModel, eval_semantics
from ..settings import checked_init

def shift(a: torch.Tensor, cav: CAV, towards: torch.Tensor) -> torch.Tensor:
    """``a + v (vᵀz − vᵀa)`` per sample, for ``z = towards`` (Anders et al. 2022, eq. for P-/A-ClArC)."""
    v = cav.direction.to(a.dtype)
    gap = (towards.to(a.dtype) * v).sum() - (a * v).flatten(1).sum(1)
    return a + gap.view(-1, *([1] * (a.ndim - 1))) * v


def _shift_hook(cav: CAV, towards: torch.Tensor) -> Callable:
    def hook(module: nn.Module, args, out):
        if not isinstance(out, torch.Tensor) or tuple(out.shape[1:]) != tuple(cav.direction.shape):
            raise ValueError(f"layer {cav.layer!r} returns shape {tuple(getattr(out, 'shape', ()))}; the CAV was "
                             f"fitted on activations of shape {tuple(cav.direction.shape)}")
        return shift(out, cav, towards)

    return hook


@contextlib.contextmanager
def project(model: nn.Module, cav: CAV, mode: str = "p") -> Iterator[nn.Module]:
    """Inside the block, ``model`` computes with the artifact direction set to that of clean samples
    (``mode="p"``, P-ClArC) or of artifact samples (``mode="a"``, as A-ClArC trains); the hook is removed after."""
    check_choice(mode, "mode", ("p", "a"))
    _, module = find_layer(model, cav.layer, "cav.layer")
    with hooked(module, forward=_shift_hook(cav, cav.clean_mean if mode == "p" else cav.artifact_mean)):
        yield model


class Projected(FollowsModel, nn.Module):
    """``model`` with P-ClArC at ``cav.layer`` (a wrapper: the hook exists only during its forward; its training
    flag is the model's, see :class:`~xaikit.modes.FollowsModel`)."""

    @checked_init
    def __init__(self, model: nn.Module, cav: CAV, mode: str = "p") -> None:
        super().__init__()
        check_choice(mode, "mode", ("p", "a"))
        find_layer(model, cav.layer, "cav.layer")
        self.model, self.cav, self.mode = model, cav, mode

    def forward(self, *args, **kwargs):
        with project(self.model, self.cav, self.mode):
            return self.model(*args, **kwargs)


def layers_after(model: nn.Module, layer: str, example: torch.Tensor) -> list[str]:
    """Names of the modules with parameters whose forward starts after ``layer``'s ended (one traced call)."""
    find_layer(model, layer)
    order: list[str] = []
    with Hooks() as hooks:
        for name, module in model.named_modules():
            if name == layer:
                hooks.forward(module, lambda *_: order.append("\0end"))
            elif any(True for _ in module.parameters(recurse=False)):
                hooks.pre(module, lambda m, a, name=name: order.append(name))
        with torch.no_grad(), eval_semantics(model, warn=False):  # a traced call: no BatchNorm statistics updated
            model(example[:1])
    if "\0end" not in order:
        raise ValueError(f"layer {layer!r} was not called in the forward pass")
    return order[order.index("\0end") + 1:]


def a_clarc(model: nn.Module, cav: CAV, x: Any, y: torch.Tensor | None = None, epochs: int = 5, lr: float = 1e-3,
            batch_size: int = 32, fraction: float = 0.5, seed: int = 0) -> nn.Module:
    """A-ClArC: a fine-tuned copy of ``model`` (the original is not changed).

    The artifact is added at ``cav.layer`` (``a ↦ a + v(vᵀz_artifact − vᵀa)``) to a random ``fraction`` of the
    samples of every batch, whatever their class, and only the parameters of the layers after it are trained
    (Adam, cross entropy) on ``(x, y)``, data of all classes, so that the artifact no longer tells a class apart
    (with ``fraction=1`` every training sample carries it, and artifact-free inputs are never seen in
    fine-tuning). The returned model is in eval mode, without hooks. ``x`` may also be a labelled data set in any
    form of :class:`xaikit.data.Data` (``y`` left out), read into memory.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    check_positive(epochs, "epochs", integer=True)
    check_positive(batch_size, "batch_size", integer=True)
    check_positive(lr, "lr")
    if y is None:
        x, y, _ = Data(x, batch_size=None, name="x").tensors()
        if y is None:
            raise ValueError("a_clarc fine-tunes on labelled data: pass a_clarc(model, cav, x, y) or a data set that "
                             "gives (x, y)")
    check_input(x, "x", model)
    tuned = copy.deepcopy(model)
    after = set(layers_after(tuned, cav.layer, x))
    params = [p for name, module in tuned.named_modules() if name in after for p in module.parameters(recurse=False)]
    if not params:
        raise ValueError(f"no layer with parameters follows {cav.layer!r}; choose an earlier layer for the CAV")
    for p in tuned.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    tuned.train()
    chosen: list[torch.Tensor] = []

    def add_artifact(module: nn.Module, args, out: torch.Tensor) -> torch.Tensor:
        moved = _shift_hook(cav, cav.artifact_mean)(module, args, out)
        return torch.where(chosen[-1].view(-1, *([1] * (out.ndim - 1))).to(out.device), moved, out)

    with hooked(find_layer(tuned, cav.layer, "cav.layer")[1], forward=add_artifact):
        for _ in range(epochs):
            order = torch.randperm(x.shape[0], generator=g)
            for start in range(0, x.shape[0], batch_size):
                idx = order[start:start + batch_size]
                chosen.append(torch.rand(len(idx), generator=g) < fraction)
                loss = F.cross_entropy(tuned(x[idx]), y[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    for p in tuned.parameters():
        p.requires_grad_(True)
        p.grad = None
    return tuned.eval()
