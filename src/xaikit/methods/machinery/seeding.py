"""Private random generators for the stochastic methods and metrics: the global RNG state is never read or changed.

One convention everywhere: a CPU ``torch.Generator`` seeded with ``seed`` (an int; ``None`` draws a fresh
non-deterministic seed); random numbers are drawn from it on the CPU and moved to the model's device, so a
seed gives the same draws on every device and for every batch size.
"""
from __future__ import annotations

from typing import Any

import torch


def check_seed(seed: Any) -> None:
    """Accept ``None`` or an int."""
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or a fresh non-deterministic seed when ``None`` (to report it, e.g. in ``info["seed"]``)."""
    check_seed(seed)
    return torch.Generator().seed() if seed is None else seed


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (a fresh non-deterministic seed when ``None``)."""
    check_seed(seed)
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
