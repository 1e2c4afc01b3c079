"""Shared fixtures of the explanation-by-example tests: the shapes CNN trained once per session."""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def shapes_case():
    """A shapes CNN trained on 512 images (seed 0), its training data and 128 held-out images (seed 1)."""
    from xaikit.zoo import make_shapes, train_shapes_model

    train = make_shapes(512, seed=0)
    model = train_shapes_model(train, epochs=6, seed=0)
    return model, train, make_shapes(128, seed=1)


def snapshot(model: torch.nn.Module) -> tuple[dict, list]:
    """The model's state and hooks, to check that a call left it unchanged."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]
    return state, hooks


def unchanged(model: torch.nn.Module, before: tuple[dict, list]) -> bool:
    state, hooks = snapshot(model)
    same = state.keys() == before[0].keys() and all(torch.equal(state[k], before[0][k]) for k in state)
    grads = all(p.grad is None for p in model.parameters())
    return same and hooks == before[1] and grads
