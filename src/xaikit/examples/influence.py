"""TracInResult of training samples by gradient similarity: TracIn (Pruthi et al., NeurIPS 2020).

The influence of a training sample ``z`` on the loss at a test sample ``z'`` is approximated by the sum over
checkpoints ``w_i`` saved during training, weighted by their learning rates ``η_i`` (TracInCP, eq. 3):

    TracInCP(z, z') = Σ_i η_i ∇ℓ(w_i, z) · ∇ℓ(w_i, z').

Positive values are *proponents* (training on ``z`` lowered the loss at ``z'``: supporting samples), negative
values *opponents*. Two ways keep the gradients small enough (§3.2 of the paper):

- ``layer="last"`` (default): only the parameters of the last linear layer. With ``z = W h + b`` its
  per-sample gradient is ``∂ℓ/∂W = e hᵀ``, ``∂ℓ/∂b = e`` with ``e = ∂ℓ/∂z``, so the dot product factorises:
  ``∇ℓ·∇ℓ' = (e·e')(h·h' + 1)`` — no gradient is ever materialised (TracInCP-fast).
- ``layer="all"``: per-sample gradients of all parameters with ``torch.func`` (``vmap`` over ``grad``),
  optionally multiplied by a fixed Gaussian random projection to ``projection`` dimensions
  (Johnson–Lindenstrauss: dot products are kept in expectation).

Checkpoints are evaluated with ``torch.func.functional_call``: the user's model and its weights are never
changed.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..batching import check_batch_size, memory_budget
from ..deprecation import renamed
from ..errors import check_input, check_positive, model_device
from ..layers import find_layer, hooked, last_of_type
from ..methods.base import _checked_init
from ..modes import explains_in_eval
from .attribution import AttributionResult, weight_states
from .data import DataSource, check_sample_shape, sample_shape
from .gradients import per_sample_gradients, per_sample_losses
from .search import check_k, chunk_size, topk


def cross_entropy(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``(N,)`` (the default training loss)."""
    return F.cross_entropy(output, y, reduction="none")


class TracInResult(AttributionResult):
    """The most supporting (proponents) and most opposing (opponents) training samples of each query.

    ``supporting``/``opposing``: indices ``(Q, k)`` into the training data, strongest first;
    ``supporting_score``/``opposing_score``: their TracIn values (positive / negative where such exist).
    """


class TracIn:
    """TracInCP influence of training samples (Pruthi et al. 2020) from one or several checkpoints.

    Parameters
    ----------
    model : nn.Module
        The architecture (in eval mode); not modified.
    checkpoints : sequence of state dicts or modules, optional
        Weights saved during training (default: the model's current weights only).
    learning_rates : float or sequence of floats, optional
        ``η_i`` per checkpoint (default 1).
    layer : "last", "all" or a module name
        ``"last"``: the last ``nn.Linear`` (closed form); a name: that ``nn.Linear`` layer; ``"all"``: every
        parameter, by ``torch.func`` per-sample gradients.
    projection : int, optional
        With ``layer="all"``: project each gradient to this many dimensions with a seeded Gaussian matrix.
    loss : callable ``(output, y) -> (N,)``
        The per-sample training loss (default cross-entropy).
    seed : int
        Seed of the random projection.
    batch_size : int or "auto"
        Samples per gradient batch (``"auto"``: the memory budget's size, :func:`xaikit.batching.batch_size_for`).
    """

    def __init__(self, model: nn.Module, checkpoints: Sequence[Any] | None = None,
                 learning_rates: float | Sequence[float] | None = None, layer: str = "last",
                 projection: int | None = None, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
                 seed: int = 0, batch_size: int | str = 64) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.checkpoints = weight_states(model, checkpoints)
        if learning_rates is None:
            learning_rates = [1.0] * len(self.checkpoints)
        elif isinstance(learning_rates, (int, float)):
            learning_rates = [float(learning_rates)] * len(self.checkpoints)
        learning_rates = [float(r) for r in learning_rates]
        if len(learning_rates) != len(self.checkpoints) or any(r <= 0 for r in learning_rates):
            raise ValueError(f"learning_rates must hold one positive value per checkpoint ({len(self.checkpoints)}), "
                             f"got {learning_rates}")
        self.learning_rates = learning_rates
        if not isinstance(layer, str):
            raise TypeError(f"layer must be 'last', 'all' or a module name, got {type(layer).__name__}")
        if layer == "all":
            self.module = None
        else:
            if layer == "last":  # the model itself when it is one nn.Linear
                try:
                    layer, self.module = last_of_type(model, nn.Linear)
                except ValueError:
                    raise ValueError("the model has no nn.Linear layer; use layer='all' (per-sample gradients)") \
                        from None
            else:
                layer, self.module = find_layer(model, layer)
            if not isinstance(self.module, nn.Linear):
                raise ValueError(f"layer {layer!r} is a {type(self.module).__name__}; the closed form needs an "
                                 "nn.Linear (or use layer='all')")
        if projection is not None:
            check_positive(projection, "projection", integer=True)
            if layer != "all":
                raise ValueError("projection applies to layer='all'; the last-layer closed form needs none")
        if not callable(loss):
            raise TypeError(f"loss must be a callable (output, y) -> per-sample losses, got {type(loss).__name__}")
        check_batch_size(batch_size)
        self.layer, self.projection, self.loss, self.seed, self.batch_size = layer, projection, loss, seed, batch_size
        self.train_factors: list[tuple[torch.Tensor, ...]] | None = None
        self.labels: torch.Tensor | None = None
        self.input_shape: tuple[int, ...] | None = None  #: the training samples' shape (queries must have it)
        self._projections: dict[str, torch.Tensor] | None = None

    # ---- per-sample gradients -------------------------------------------------------------------------------

    def _factors(self, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Last layer: ``(e, h)``; all parameters: ``(g,)`` (projected or flat)."""
        if self.module is not None:
            return self._last_layer(state, x, y)
        return (self._all_parameters(state, x, y),)

    def _last_layer(self, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        captured: dict[str, torch.Tensor] = {}

        def hook(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            captured["h"] = inputs[0].detach()
            captured["z"] = output.detach().requires_grad_(True)
            return captured["z"]

        with hooked(self.module, forward=hook), torch.enable_grad():
            out = torch.func.functional_call(self.model, state, (x,))
            losses = self._per_sample(out, y)
            if "z" not in captured:
                raise ValueError(f"layer {self.layer!r} was not used in the forward pass")
            (e,) = torch.autograd.grad(losses.sum(), captured["z"])
        h = captured["h"]
        if h.ndim != 2:
            raise ValueError(f"layer {self.layer!r} sees inputs of shape {tuple(h.shape)}; the closed form needs "
                             "(batch, features); use layer='all'")
        return e.detach(), h

    def _per_sample(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample_losses(self.loss, out, y)

    def _all_parameters(self, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        params = {n: state[n].detach() for n in names}
        grads = per_sample_gradients(self.model, state, names, self._per_sample, x, y)
        if self.projection is None:
            return torch.cat([grads[n].flatten(1) for n in names], 1)
        projections = self._projection_matrices(params)
        return sum(grads[n].flatten(1) @ projections[n] for n in names)

    def _projection_matrices(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self._projections is None:
            total = sum(p.numel() for p in params.values()) * self.projection * 4
            if total > memory_budget(next(iter(params.values())).device):
                raise ValueError(f"the random projection needs {total / 2**30:.1f} GiB; lower projection= or use "
                                 "layer='last'")
            g = torch.Generator().manual_seed(self.seed)
            self._projections = {
                n: (torch.randn(p.numel(), self.projection, generator=g) / self.projection ** 0.5).to(p.device, p.dtype)
                for n, p in params.items()
            }
        return self._projections

    def _all_factors(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        return [self._factors(state, x, y) for state in self.checkpoints]

    # ---- fitting and scoring ------------------------------------------------------------------------------

    @explains_in_eval
    def fit(self, data: Any) -> "TracIn":
        """Compute the training gradients (factors) of every labelled sample of ``data`` (see :mod:`.data`)."""
        device = model_device(self.model)
        parts: list[list[tuple[torch.Tensor, ...]]] = []
        labels = []
        shape = None
        for x, y, _ in DataSource(data, self.batch_size).batches():
            if y is None:
                raise ValueError("TracIn needs labelled training data: pass (x, y) or batches (x, y)")
            check_input(x, "a batch of data")
            shape = sample_shape(x, shape)
            if device is not None:
                x, y = x.to(device), y.to(device)
            parts.append(self._all_factors(x, y.long()))
            labels.append(y.long())
        if not parts:
            raise ValueError("data holds no samples; TracIn needs at least one training sample")
        self.train_factors = [tuple(torch.cat([p[i][j] for p in parts]) for j in range(len(parts[0][i])))
                              for i in range(len(self.checkpoints))]
        self.labels = torch.cat(labels)
        self.train_size = self.labels.shape[0]
        self.input_shape = shape
        return self

    @explains_in_eval
    def _query(self, x: torch.Tensor, y: Any) -> tuple[list[tuple[torch.Tensor, ...]], torch.Tensor]:
        if self.train_factors is None:
            raise ValueError("TracIn has no training data; call fit(data) first")
        check_input(x, "x", self.model)
        check_sample_shape(x, self.input_shape, "TracIn was fitted")
        if y is None:
            with torch.no_grad():
                y = self.model(x).argmax(1)
        y = torch.as_tensor(y, device=x.device).long().reshape(-1)
        if y.numel() == 1:
            y = y.expand(x.shape[0])
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} labels for {x.shape[0]} samples")
        return self._all_factors(x, y), y

    def _score(self, query: list[tuple[torch.Tensor, ...]], start: int, stop: int) -> torch.Tensor:
        total = 0
        for rate, q, t in zip(self.learning_rates, query, self.train_factors):
            if self.module is not None:
                bias = 1.0 if self.module.bias is not None else 0.0
                total = total + rate * (q[0] @ t[0][start:stop].T) * (q[1] @ t[1][start:stop].T + bias)
            else:
                total = total + rate * (q[0] @ t[0][start:stop].T)
        return total

    def scores(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        """TracIn influence ``(Q, N)`` of every training sample on the loss at each query (label ``y``,
        default: the prediction)."""
        query, _ = self._query(x, y)
        return self._score(query, 0, self.train_size)

    def self_scores(self) -> torch.Tensor:
        """Self-influence ``Σ_i η_i ‖∇ℓ(w_i, z)‖²`` of every training sample ``(N,)`` (Pruthi et al. §3.3: large
        for samples the model keeps having to learn, e.g. mislabelled ones)."""
        if self.train_factors is None:
            raise ValueError("TracIn has no training data; call fit(data) first")
        total = 0
        for rate, t in zip(self.learning_rates, self.train_factors):
            if self.module is not None:
                bias = 1.0 if self.module.bias is not None else 0.0
                total = total + rate * t[0].pow(2).sum(1) * (t[1].pow(2).sum(1) + bias)
            else:
                total = total + rate * t[0].pow(2).sum(1)
        return total

    def top(self, x: torch.Tensor, y: Any = None, k: int = 5) -> TracInResult:
        """The ``k`` most supporting and most opposing training samples of each query (exact, chunked)."""
        if self.train_factors is None:
            raise ValueError("TracIn has no training data; call fit(data) first")
        k = check_k(k, self.train_size)
        query, y = self._query(x, y)
        chunk = chunk_size(x.shape[0], x.device)
        score = lambda a, b: self._score(query, a, b)  # noqa: E731
        up, up_index = topk(score, self.train_size, k, largest=True, chunk=chunk)
        down, down_index = topk(score, self.train_size, k, largest=False, chunk=chunk)
        return TracInResult(up_index, up, down_index, down, y)


TracIn.__init__ = _checked_init(TracIn.__init__)  # unknown settings are rejected by name


__getattr__ = renamed(__name__, {"Influence": "TracInResult"}, globals())
