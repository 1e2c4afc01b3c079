"""Padded batches of token sequences: which side the padding is on, moving it, and the keyword inputs that make
a padded sequence compute what it computes alone.

A batch of sequences of different lengths is padded on the right (classifiers) or on the left (generation,
so that every sequence ends at the last position). For the model to give each real token the same output
either way it needs the attention mask and, for models with position embeddings, position ids counted over
the real tokens only (``cumsum(mask) − 1``), as Hugging Face's ``generate`` does.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

#: where the padding of a batch may be moved
SIDES = ("left", "right")


def check_mask(ids: torch.Tensor, mask: torch.Tensor | None, name: str = "attention_mask") -> torch.Tensor:
    """The attention mask of token ids ``(N, L)`` as a 0/1 long tensor (all ones when ``None``)."""
    if mask is None:
        return torch.ones_like(ids)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of 0/1 per token, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, but the ids have {tuple(ids.shape)}; give one 0/1 "
                         "per token")
    if mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must hold 0 (padding) and 1 (token) only")
    if not bool((mask.sum(1) > 0).all()):
        raise ValueError(f"{name} has a sequence without any token; drop it from the batch")
    return mask.long()


def repad(ids: torch.Tensor, mask: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The same sequences with all padding moved to ``side`` ("left" or "right"), tokens in order."""
    if side not in SIDES:
        raise ValueError(f"unknown padding side {side!r}; valid: 'left', 'right'")
    key = mask if side == "left" else 1 - mask  # a stable sort puts the 0 keys (the side's padding) first
    order = torch.sort(key, dim=1, stable=True).indices
    return ids.gather(1, order), mask.gather(1, order)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over the real tokens of each sequence (``cumsum(mask) − 1``; 0 on left padding)."""
    return (mask.cumsum(1) - 1).clamp(min=0)


def accepts(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` takes the keyword argument ``name``."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def sequence_inputs(model: nn.Module, mask: torch.Tensor, **given: Any) -> dict[str, Any]:
    """The keyword inputs of a padded batch: ``attention_mask`` and, when the model takes them and none are
    given, ``position_ids`` over the real tokens; ``given`` keyword inputs are kept as they are."""
    kwargs = {"attention_mask": mask, **given}
    if "position_ids" not in kwargs and accepts(model, "position_ids"):
        kwargs["position_ids"] = position_ids(mask)
    return kwargs
