"""Explanatory interactive learning: revise a model where a user marked its reasons wrong (Teso & Kersting, AIES
2019; Schramowski et al., Nat. Mach. Intell. 2020).

The user paints the regions that are a *wrong reason* on a heatmap, or flags a SpRAy cluster as an artifact;
:class:`Revise` then changes a **copy** of the model (the original is never touched):

- ``strategy="rrr"``: fine-tunes the copy with the right-for-the-right-reasons loss (Ross et al. IJCAI 2017,
  eq. 1; :class:`~xaikit.improve.RightForRightReasonsLoss`) on the training data, with the painted ``masks``
  (one mask for every sample, or one per sample);
- ``strategy="p_clarc"``: P-ClArC (Anders et al. Inf. Fusion 2022; :func:`~xaikit.improve.fit_cav`,
  :class:`~xaikit.improve.Projected`): the artifact direction at ``layer`` is fitted from the flagged samples
  (``artifact``) against the others and projected out; no training.

``Revise(model, strategy, **settings)(x, y, masks=..., evaluate={"test": (x_test, y_test)})`` returns a
:class:`ReviseResult`: the revised copy, the accuracy of every evaluation set before and after, heatmaps
before and after. Long work reports ``progress(done, total, info)`` and stops at the next batch when the
``cancel`` event is set (:class:`RevisionCancelled`). ``result.save(folder)`` writes the masks (``masks.npz``),
the revised weights (``weights.pt``, a ``state_dict``; ``cav.pt`` for P-ClArC) and the settings
(``revision.json``); :func:`load_revision` reads them back and :func:`repeat` does the same revision again
(``xaikit improve`` on the command line).
"""
from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import check_choice, check_input, check_positive
from ..methods.resolve import resolve_method
from ..modes import eval_semantics
from ..results import ResultExport
from ..settings import checked_init
from .clarc import CAV, Projected, fit_cav
from .explain import check_method, check_weight
from .rrr import RightForRightReasonsLoss, check_masks

#: the revisions :class:`Revise` makes
STRATEGIES = ("rrr", "p_clarc")
#: the files of a saved revision
MASKS_FILE, WEIGHTS_FILE, CAV_FILE, SETTINGS_FILE = "masks.npz", "weights.pt", "cav.pt", "revision.json"
#: the keys of ``revision.json``'s settings
SETTING_NAMES = ("strategy", "lam", "method", "method_settings", "epochs", "lr", "batch_size", "seed", "layer",
                 "classifier")
#: what ``progress`` receives: (steps done, steps in all, {"epoch": ..., "loss": ...})
Progress = Callable[[int, int, dict], None]


class RevisionCancelled(RuntimeError):
    """The ``cancel`` event was set: the revision stopped; the original model is unchanged."""


def expand_masks(masks: Any, x: torch.Tensor) -> torch.Tensor:
    """The masks of every sample of ``x`` as float ``(N, ...)`` broadcastable to ``x``: one mask for all samples
    (shaped like one sample, ``(H, W)`` of an image, or with a leading 1) is repeated; one mask per sample is
    checked as :func:`~xaikit.improve.rrr.check_masks` checks it."""
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(masks)
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a tensor or array (1 where the reason is wrong), got {type(masks).__name__}")
    masks = masks.to(x.device)
    sample = tuple(x.shape[1:])
    one = masks.shape == sample or (x.ndim >= 3 and tuple(masks.shape) == sample[-2:])
    if masks.ndim >= 1 and masks.shape[0] == 1 and x.shape[0] != 1 and masks.ndim == x.ndim:
        one = True
        masks = masks[0]
    if one:
        if x.ndim >= 3 and tuple(masks.shape) == sample[-2:]:
            masks = masks.reshape(*([1] * (x.ndim - 3)), *masks.shape)
        masks = masks.unsqueeze(0).expand(x.shape[0], *masks.shape)
    try:
        return check_masks(masks, x)
    except ValueError:
        raise ValueError(f"masks has shape {tuple(masks.shape)} but x has {tuple(x.shape)}; give one mask for "
                         f"every sample ({sample} or {sample[-2:]}) or one per sample ({(x.shape[0], *sample)}, or "
                         "with size 1 where a mask applies to all entries)") from None


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Share of ``x`` that ``model`` classifies as ``y`` (eval semantics, no gradients)."""
    right = 0
    with torch.no_grad(), eval_semantics(model, warn=False):
        for start in range(0, x.shape[0], batch_size):
            right += int((model(x[start:start + batch_size]).argmax(1) == y[start:start + batch_size]).sum())
    return right / max(1, x.shape[0])


@dataclass
class ReviseResult(ResultExport):
    """What a revision gives.

    Attributes
    ----------
    model : the revised copy (eval mode); for P-ClArC a :class:`~xaikit.improve.Projected` wrapper
    settings : dict, the settings of the revision (``revision.json``)
    accuracy : dict ``set -> {"before": float, "after": float}``
    heatmaps_before, heatmaps_after : tensors of the shown samples (their labels explained)
    shown : indices of the shown training samples
    losses : mean training loss per epoch (RRR), with its ``task`` and ``penalty`` parts
    masks : the masks used (RRR, float, one per sample), ``artifact`` the flags (P-ClArC)
    cav : the CAV (P-ClArC)
    """

    model: nn.Module
    settings: dict[str, Any]
    accuracy: dict[str, dict[str, float]]
    heatmaps_before: torch.Tensor
    heatmaps_after: torch.Tensor
    shown: list[int]
    losses: list[dict[str, float]] = field(default_factory=list)
    masks: torch.Tensor | None = None
    artifact: torch.Tensor | None = None
    cav: CAV | None = None

    def _rows(self) -> list[dict[str, Any]]:
        return [{"set": name, "before": v["before"], "after": v["after"], "change": v["after"] - v["before"]}
                for name, v in self.accuracy.items()]

    def save(self, folder: str | Path, about: Mapping[str, Any] | None = None) -> Path:
        """Write ``masks.npz``, ``weights.pt`` (the revised ``state_dict``; for P-ClArC the unchanged copy's, and
        ``cav.pt``) and ``revision.json`` (settings, accuracy and ``about``: e.g. the model and data specs that
        ``xaikit improve`` reads) into ``folder``; returns it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        if self.masks is not None:
            arrays["masks"] = self.masks.detach().cpu().numpy().astype(np.float32)
        if self.artifact is not None:
            arrays["artifact"] = self.artifact.detach().cpu().numpy().astype(bool)
        np.savez_compressed(folder / MASKS_FILE, **arrays)
        inner = self.model.model if isinstance(self.model, Projected) else self.model
        torch.save(inner.state_dict(), folder / WEIGHTS_FILE)
        if self.cav is not None:
            torch.save({k: getattr(self.cav, k) for k in ("layer", "direction", "clean_mean", "artifact_mean",
                                                            "method", "accuracy")}, folder / CAV_FILE)
        record = {"settings": self.settings, "accuracy": self.accuracy, "losses": self.losses, **dict(about or {})}
        (folder / SETTINGS_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        return folder


class Revise:
    """Revise a copy of ``model`` where its reasons were marked wrong (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        The model to revise; it is deep-copied and never changed.
    strategy : "rrr" or "p_clarc"
    lam : float
        RRR: the weight λ of the penalty.
    method, method_settings
        The explainer of RRR's penalty (a name or spec of a method that supports ``create_graph=True``) and of
        the heatmaps before and after. Default ``"input_x_gradient"``: the relevance of the true class inside
        the masks. Ross et al.'s own penalty, the input gradient of ``Σ_k log ŷ_k`` (``method="gradient"``),
        suits training from scratch; on a model that already reads the decoy it starts huge (2,136 against a
        task loss of 0.03 on the decoy digits) and fine-tuning dropped the decoy test accuracy from 84 % to 10–59 % in
        all 11 trials (λ 0.1–1,000, lr 0.001–0.01, 3–20 epochs), while
        gradient × input raised the decoy test accuracy from 84 % to 95 % in 5 epochs (λ = 10, lr = 0.01).
    epochs, lr, batch_size, seed
        RRR's fine-tuning: Adam, minibatches shuffled by ``seed`` (a training minibatch size: an int).
    layer, classifier
        P-ClArC: the layer of the artifact direction and the CAV's classifier (``"pattern"`` or ``"svm"``).
    """

    @checked_init
    def __init__(self, model: nn.Module, strategy: str = "rrr", *, lam: float = 10.0, method: str | None = None,
                 method_settings: dict[str, Any] | None = None, epochs: int = 5, lr: float = 1e-2,
                 batch_size: int = 64, seed: int = 0, layer: str | None = None, classifier: str = "pattern") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_choice(strategy, "strategy", STRATEGIES)
        check_positive(epochs, "epochs", integer=True)
        check_positive(batch_size, "batch_size", integer=True)
        check_positive(lr, "lr")
        if method is not None and not isinstance(method, str):
            raise TypeError("method must be a method name or spec (it is saved with the revision), got "
                            f"{type(method).__name__}")
        check_method(method, method_settings)
        if strategy == "p_clarc":
            if layer is None:
                raise ValueError("strategy='p_clarc' needs layer=, the name of the layer whose activations carry "
                                 "the artifact (see model.named_modules())")
            from ..layers import find_layer

            find_layer(model, layer, "layer")
            check_choice(classifier, "classifier", ("pattern", "svm"))
        self.model, self.strategy = model, strategy
        self.lam = check_weight(lam)
        self.method = "input_x_gradient" if method is None else method
        self.method_settings = dict(method_settings or {})
        self.epochs, self.lr, self.batch_size, self.seed = int(epochs), float(lr), int(batch_size), int(seed)
        self.layer, self.classifier = layer, classifier

    @property
    def settings(self) -> dict[str, Any]:
        """The JSON settings of this revision (what :func:`repeat` rebuilds it from)."""
        return {"strategy": self.strategy, "lam": self.lam, "method": self.method,
                "method_settings": self.method_settings, "epochs": self.epochs, "lr": self.lr,
                "batch_size": self.batch_size, "seed": self.seed, "layer": self.layer, "classifier": self.classifier}

    def heatmaps(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The explainer's heatmaps of ``model`` for the labels ``y``."""
        explainer = resolve_method(model, self.method, self.method_settings or None)
        return explainer(x, target=y).attribution.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, masks: Any = None, *, artifact: Any = None,
                 evaluate: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None, show: Any = 8,
                 progress: Progress | None = None, cancel: threading.Event | None = None) -> ReviseResult:
        """Revise on the training data ``(x, y)``.

        Parameters
        ----------
        x, y : training inputs and labels
        masks : RRR: 1 where the reason is wrong; one mask for every sample or one per sample
        artifact : P-ClArC: (N,) bool, the samples that carry the artifact (e.g. a SpRAy cluster)
        evaluate : dict ``name -> (x, y)``: sets whose accuracy is measured before and after (``"train"`` is
            always added)
        show : int or list of int, the training samples whose heatmaps are returned (default the first 8)
        progress : ``progress(done, total, info)`` after each step
        cancel : a ``threading.Event``; when set, the revision stops with :class:`RevisionCancelled`
        """
        x = check_input(x, "x", self.model)
        if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
            raise ValueError(f"y must be an integer tensor (N,) of labels with N = {x.shape[0]}, got "
                             f"{tuple(getattr(y, 'shape', ())) or type(y).__name__}")
        sets = {"train": (x, y), **dict(evaluate or {})}
        for name, pair in sets.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"evaluate[{name!r}] must be a pair (x, y)")
        shown = list(range(min(int(show), x.shape[0]))) if isinstance(show, int) else [int(i) for i in show]
        if self.strategy == "rrr":
            if masks is None:
                raise ValueError("strategy='rrr' needs masks: 1 where the model must not look")
            if artifact is not None:
                raise ValueError("artifact= is for strategy='p_clarc'; RRR takes masks=")
            weights = expand_masks(masks, x)
        else:
            if artifact is None:
                raise ValueError("strategy='p_clarc' needs artifact=, the (N,) flags of the samples with the artifact")
            if masks is not None:
                raise ValueError("masks= is for strategy='rrr'; P-ClArC takes artifact=")
            artifact = torch.as_tensor(np.asarray(artifact)).to(torch.bool)
            if artifact.shape != (x.shape[0],):
                raise ValueError(f"artifact must be (N,) bool with N = {x.shape[0]}, got {tuple(artifact.shape)}")
            if not artifact.any() or artifact.all():
                raise ValueError("artifact must flag some samples and leave some clean (the CAV separates the two)")
        before = {name: accuracy(self.model, *pair) for name, pair in sets.items()}
        heat_before = self.heatmaps(self.model, x[shown], y[shown])
        losses: list[dict[str, float]] = []
        cav = None
        if self.strategy == "rrr":
            revised = self._rrr(x, y, weights, losses, progress, cancel)
        else:
            _stop(cancel)
            cav = fit_cav(self.model, self.layer, x[artifact], x[~artifact], classifier=self.classifier,
                          seed=self.seed)
            revised = Projected(copy.deepcopy(self.model).eval(), cav)
            if progress is not None:
                progress(1, 1, {"cav_accuracy": cav.accuracy})
        after = {name: accuracy(revised, *pair) for name, pair in sets.items()}
        return ReviseResult(revised, self.settings, {k: {"before": before[k], "after": after[k]} for k in sets},
                            heat_before, self.heatmaps(revised, x[shown], y[shown]), shown, losses,
                            weights if self.strategy == "rrr" else None, artifact if self.strategy == "p_clarc"
                            else None, cav)

    def _rrr(self, x, y, weights, losses, progress, cancel) -> nn.Module:
        tuned = copy.deepcopy(self.model)
        for p in tuned.parameters():
            p.requires_grad_(True)
        loss_fn = RightForRightReasonsLoss(self.lam, self.method, self.method_settings or None)
        optimiser = torch.optim.Adam(tuned.parameters(), lr=self.lr)
        g = torch.Generator().manual_seed(self.seed)
        steps_per_epoch = -(-x.shape[0] // self.batch_size)
        total, done = self.epochs * steps_per_epoch, 0
        tuned.train()
        try:
            for epoch in range(self.epochs):
                order = torch.randperm(x.shape[0], generator=g).to(x.device)
                sums = {"loss": 0.0, "task": 0.0, "penalty": 0.0}
                for start in range(0, x.shape[0], self.batch_size):
                    _stop(cancel)
                    idx = order[start:start + self.batch_size]
                    parts = loss_fn(tuned, x[idx], y[idx], weights[idx], return_parts=True)
                    optimiser.zero_grad()
                    parts.loss.backward()
                    optimiser.step()
                    done += 1
                    share = len(idx) / x.shape[0]
                    sums["loss"] += float(parts.loss.detach()) * share
                    sums["task"] += parts.terms["task"] * share
                    sums["penalty"] += parts.terms["penalty"] * share
                    if progress is not None:
                        progress(done, total, {"epoch": epoch + 1, "loss": float(parts.loss.detach())})
                losses.append(sums)
        finally:
            tuned.eval()
        for p in tuned.parameters():
            p.grad = None
        return tuned


def _stop(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise RevisionCancelled("the revision was cancelled; the original model is unchanged")


@dataclass
class RevisionFiles:
    """A saved revision read back: ``settings`` and ``record`` (the whole ``revision.json``), ``masks`` or
    ``artifact``, the path of the revised ``weights`` and the ``cav`` (P-ClArC)."""

    folder: Path
    record: dict[str, Any]
    masks: torch.Tensor | None
    artifact: torch.Tensor | None
    cav: CAV | None

    @property
    def settings(self) -> dict[str, Any]:
        return self.record["settings"]

    def revised(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with the saved revised weights (P-ClArC: and the saved projection)."""
        tuned = copy.deepcopy(model)
        tuned.load_state_dict(torch.load(self.folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        tuned.eval()
        return Projected(tuned, self.cav) if self.cav is not None else tuned


def load_revision(folder: str | Path) -> RevisionFiles:
    """Read a revision written by :meth:`ReviseResult.save` (clear errors for a folder that is not one)."""
    folder = Path(folder)
    missing = [name for name in (SETTINGS_FILE, MASKS_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{str(folder)!r} is not a saved revision: {', '.join(missing)} missing (write one "
                                "with ReviseResult.save(folder) or the web app's revise view)")
    record = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    unknown = sorted(set(record.get("settings", {})) - set(SETTING_NAMES))
    if "settings" not in record or unknown:
        raise ValueError(f"{str(folder / SETTINGS_FILE)!r} holds no valid revision settings"
                         + (f" (unknown: {unknown})" if unknown else ""))
    with np.load(folder / MASKS_FILE) as arrays:
        masks = torch.from_numpy(arrays["masks"]) if "masks" in arrays.files else None
        artifact = torch.from_numpy(arrays["artifact"]) if "artifact" in arrays.files else None
    cav = None
    if (folder / CAV_FILE).is_file():
        cav = CAV(**torch.load(folder / CAV_FILE, map_location="cpu", weights_only=True))
    return RevisionFiles(folder, record, masks, artifact, cav)


def repeat(model: nn.Module, folder: str | Path, x: torch.Tensor, y: torch.Tensor,
           evaluate: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None, **options: Any) -> ReviseResult:
    """The revision saved in ``folder`` done again on ``model`` and the training data ``(x, y)``, with the saved
    settings and masks (or artifact flags); ``options`` go to the call (``progress``, ``cancel``, ``show``)."""
    files = load_revision(folder)
    settings = dict(files.settings)
    reviser = Revise(model, settings.pop("strategy"), **settings)
    if files.masks is not None and files.masks.shape[0] != x.shape[0]:
        raise ValueError(f"the saved masks are for {files.masks.shape[0]} samples, the data has {x.shape[0]}")
    return reviser(x, y, files.masks, artifact=files.artifact, evaluate=evaluate, **options)
