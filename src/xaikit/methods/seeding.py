"""Private random generators for the stochastic methods: the global RNG state is never read or changed."""
from __future__ import annotations

from typing import Any

import torch


def check_seed(seed: Any) -> None:
    """Accept ``None`` or an int."""
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")


def make_generator(seed: int | None) -> tuple[torch.Generator, int]:
    """A CPU ``torch.Generator`` seeded with ``seed`` (a fresh non-deterministic seed when ``None``) and the seed used.

    Random numbers are drawn on the CPU and moved to the model's device, so a seed gives the same draws on
    every device and for every batch size.
    """
    generator = torch.Generator()
    if seed is None:
        seed = generator.seed()
    else:
        generator.manual_seed(seed)
    return generator, seed
