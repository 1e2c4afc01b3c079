"""Per-sample gradients and seeded random projections: the featurisation of training-data attribution.

- :func:`attributed_parameters`: which parameters are attributed (``"all"``, ``"last"``: the last ``nn.Linear``,
  or a module name), refusing a selection with no trainable parameter.
- :func:`per_sample_gradients`: ``∇_θ f(z_i; θ)`` of a per-sample function for a whole batch at once with
  ``torch.func`` (``vmap`` over ``grad``; no per-sample loop), at given weights (``functional_call``: the
  model is never changed); :func:`stacked_per_sample_gradients` at several weights (an ensemble) at once.
- :class:`RandomProjection`: ``g ↦ Pᵀ g`` with ``P ∈ R^{p×k}`` Gaussian ``N(0, 1/k)`` or Rademacher ``±1/√k``
  entries (Johnson–Lindenstrauss; TRAK, Park et al. 2023, §3.2). ``P`` is generated block by block from the
  seed, one block of rows per parameter tensor and row range, so it is reproducible from ``(seed, parameter
  shapes)`` alone and never needs to be held whole: memory ``block_rows × k`` per block while projecting.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from ..batching import memory_budget
from ..errors import check_choice, check_positive
from ..layers import find_layer, last_of_type

PROJECTIONS = ("gaussian", "rademacher")
#: rows of ``P`` generated at once (fixed: ``P`` depends on the seed and the parameter shapes only)
BLOCK_ROWS = 4096


def attributed_parameters(model: nn.Module, layer: str) -> list[str]:
    """Names (``model.named_parameters()``) of the trainable parameters of ``layer``: ``"all"``, ``"last"``
    (the last ``nn.Linear``) or a module name. Raises a ``ValueError`` when there is none."""
    if not isinstance(layer, str):
        raise TypeError(f"layer must be 'all', 'last' or a module name, got {type(layer).__name__}")
    if layer == "all":
        prefix = None
    else:
        if layer == "last":
            try:
                layer, _ = last_of_type(model, nn.Linear)
            except ValueError:
                raise ValueError("the model has no nn.Linear layer; use layer='all' or a module name") from None
        else:
            layer, _ = find_layer(model, layer)
        prefix = f"{layer}." if layer else ""
    names = [n for n, p in model.named_parameters() if p.requires_grad and (prefix is None or n.startswith(prefix))]
    if not names:
        where = "the model" if prefix is None else f"layer {layer!r}"
        raise ValueError(f"{where} has no trainable parameters (requires_grad=True): there is no gradient to "
                         "attribute with; choose layer= with trainable parameters or enable their gradients")
    return names


def per_sample_losses(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], out: torch.Tensor,
                      y: torch.Tensor) -> torch.Tensor:
    """``loss(out, y)`` checked to give one value per sample (``reduction="none"``): TracIn's and the influence
    functions' loss."""
    losses = loss(out, y)
    if not isinstance(losses, torch.Tensor) or losses.shape != (out.shape[0],):
        raise ValueError("loss must return one value per sample (reduction='none'), got "
                         f"{tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__}")
    return losses


def gradient_size(model: nn.Module, names: list[str]) -> int:
    """The number of attributed parameters ``p``."""
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


def _per_sample(model: nn.Module, names: list[str], fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                ) -> Callable[..., tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """``(params, rest, x, y) -> (gradients, values)`` of ``fn(model(x_i), y_i)`` for a batch, ``vmap``ped over
    the samples."""

    def one(p: dict[str, torch.Tensor], rest: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.func.functional_call(model, {**p, **rest}, (xi[None],))
        value = fn(out, yi[None]).reshape(())
        return value, value.detach()

    return torch.func.vmap(torch.func.grad(one, has_aux=True), in_dims=(None, None, 0, 0))


def per_sample_gradients(model: nn.Module, state: Mapping[str, torch.Tensor], names: list[str],
                         fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                         y: torch.Tensor, return_values: bool = False
                         ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``{name: (B, *shape)}``: the gradient of ``fn(model(x_i), y_i)`` (a per-sample scalar) with respect to
    each parameter ``name`` for every sample, with ``torch.func.vmap(torch.func.grad(...))`` at weights
    ``state`` (the other entries of ``state``, e.g. buffers, are held fixed). ``return_values=True``: also the
    values ``fn(model(x_i), y_i)`` ``(B,)``, from the same forward pass."""
    params = {n: state[n].detach() for n in names}
    rest = {n: v.detach() for n, v in state.items() if n not in params}
    grads, values = _per_sample(model, names, fn)(params, rest, x, y)
    return (grads, values) if return_values else grads


def stack_states(states: list[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The entries of several state dicts of one architecture stacked along a new first dimension ``(G, ...)``
    (the input of :func:`stacked_per_sample_gradients`)."""
    return {n: torch.stack([s[n].detach() for s in states]) for n in states[0]}


def stacked_per_sample_gradients(model: nn.Module, stacked: Mapping[str, torch.Tensor], names: list[str],
                                 fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                                 y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """:func:`per_sample_gradients` at ``G`` weights at once (``stacked``: :func:`stack_states`; parameters and
    buffers of each weight), one ``vmap`` over the weights around the one over the samples: the gradients
    ``{name: (G, B, *shape)}`` and the values ``(G, B)``. Memory ``G B p`` numbers."""
    params = {n: stacked[n] for n in names}
    rest = {n: v for n, v in stacked.items() if n not in params}
    return torch.func.vmap(_per_sample(model, names, fn), in_dims=(0, 0, None, None))(params, rest, x, y)


def flat(grads: Mapping[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """``(B, p)``: the per-sample gradients concatenated in ``names``' order."""
    return torch.cat([grads[n].flatten(1) for n in names], 1)


class RandomProjection:
    """A seeded random projection ``Pᵀ g`` of per-sample gradients to ``k`` dimensions, made in blocks.

    Parameters
    ----------
    shapes : mapping name -> shape
        The attributed parameters (their order fixes ``P``).
    k : int
        The projection dimension; at most the gradient size ``p`` (a larger ``k`` adds nothing but cost).
    kind : "gaussian" or "rademacher"
        ``N(0, 1/k)`` or ``±1/√k`` entries.
    seed : int
        Block ``b`` of parameter ``j`` is drawn from a generator seeded with ``(seed, j, b)``.
    cache : bool
        Keep the generated blocks (``p × k`` numbers) when they fit a quarter of the memory budget; otherwise
        every call regenerates them (same values).
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...] | torch.Size], k: int, kind: str = "gaussian",
                 seed: int = 0, cache: bool = True) -> None:
        check_positive(k, "projection", integer=True)
        check_choice(kind, "projection_kind", PROJECTIONS)
        self.shapes = {n: tuple(s) for n, s in shapes.items()}
        self.size = sum(int(torch.Size(s).numel()) for s in self.shapes.values())
        if k > self.size:
            raise ValueError(f"projection={k} is above the gradient size {self.size} of the attributed parameters; "
                             f"use projection <= {self.size}, or projection=None to keep the gradients themselves")
        self.k, self.kind, self.seed = k, kind, seed
        self.cache = cache
        self._blocks: dict[tuple[int, int], torch.Tensor] = {}

    def _block(self, j: int, b: int, rows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (j, b, dtype, device)
        if key in self._blocks:
            return self._blocks[key]
        g = torch.Generator().manual_seed(((self.seed * 1_000_003 + j) * 1_000_003 + b) % (1 << 63))
        if self.kind == "gaussian":
            block = torch.randn(rows, self.k, generator=g, dtype=torch.float64)
        else:
            block = torch.randint(0, 2, (rows, self.k), generator=g, dtype=torch.int8).double() * 2 - 1
        block = (block / self.k ** 0.5).to(device, dtype)  # drawn in float64 whatever the gradients' dtype
        if self.cache and self.size * self.k * 8 <= memory_budget(device) // 4:
            self._blocks[key] = block  # kept in the dtype and on the device it is used with
        return block

    def __call__(self, grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``(B, k)``: ``Σ_j grads[name_j].flatten(1) @ P_j``, block by block."""
        out = None
        for j, name in enumerate(self.shapes):
            g = grads[name].flatten(1)
            for b, start in enumerate(range(0, g.shape[1], BLOCK_ROWS)):
                part = g[:, start:start + BLOCK_ROWS]
                block = self._block(j, b, part.shape[1], g.dtype, g.device)
                out = part @ block if out is None else out.addmm_(part, block)
        assert out is not None
        return out

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The whole ``P`` ``(p, k)`` (for checks on small models)."""
        return torch.cat([self._block(j, b, min(BLOCK_ROWS, int(torch.Size(s).numel()) - start), dtype,
                                      torch.device("cpu"))
                          for j, s in enumerate(self.shapes.values())
                          for b, start in enumerate(range(0, int(torch.Size(s).numel()), BLOCK_ROWS))])
