"""Chunked evaluation under a memory budget, with an automatic choice of the fastest chunk size.

Every method and metric that evaluates many perturbed or interpolated inputs builds them as one tensor and
hands it to :func:`chunked` (or :func:`batched_forward`). ``batch_size="auto"`` does not pick the largest
chunk that fits: on CPUs, large chunks are often *slower per sample* (cache effects). It times the real work
at chunk sizes 1, 2, 4, ... (no work is wasted: results are kept; a size that does not look better is timed
on a second chunk, so one disturbed timing does not decide), stops doubling as soon as the time per item
stops improving, and then runs the rest at the best size. The choice is cached per ``key`` (e.g. the
model and the per-item shape) so later calls skip the exploration. The memory budget caps the chunk size.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Hashable, Sequence, TypeVar

import torch

from .progress import Progress
from .tokens import model_scores

T = TypeVar("T")

#: bytes of activations assumed per byte of input when capping a chunk by the memory budget
ACTIVATION_FACTOR = 32
_memory_budget: int | None = None
_best_chunk: dict[Hashable, int] = {}
#: where an unfinished search (a call with too few items to end it) got to, per key: the next call goes on from there
_searched_to: dict[Hashable, int] = {}
#: clock of the auto-tuner (wall time); benchmarks on a shared machine may swap in ``time.process_time``
_clock: Callable[[], float] = time.perf_counter


def set_memory_budget(num_bytes: int | None) -> None:
    """Set the memory budget (bytes) that caps chunk sizes; ``None`` restores the default."""
    global _memory_budget
    if num_bytes is not None and (not isinstance(num_bytes, int) or num_bytes <= 0):
        raise ValueError(f"num_bytes must be a positive int or None, got {num_bytes!r}")
    _memory_budget = num_bytes


def memory_budget(device: torch.device | str = "cpu") -> int:
    """The memory budget in bytes: the user's setting, else half the free GPU memory or 1/8 of RAM (≤ 4 GiB)."""
    if _memory_budget is not None:
        return _memory_budget
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return min(ram // 8, 4 << 30)


def max_chunk(item_bytes: int, device: torch.device | str = "cpu") -> int:
    """Largest chunk whose estimated activations fit in the memory budget (at least 1)."""
    return max(1, memory_budget(device) // max(1, item_bytes * ACTIVATION_FACTOR))


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int | str:
    """The one check of a ``batch_size`` (every room): ``"auto"`` or a positive int, returned unchanged.

    ``batch_size`` means the same everywhere: how many items one forward/backward pass takes. ``"auto"`` lets
    xaikit choose under the memory budget (:func:`chunked` times chunk sizes on the real work; a pass over a
    data set takes :func:`batch_size_for`'s memory-budget size).
    """
    if isinstance(batch_size, str) and batch_size == "auto":
        return batch_size
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"{name} must be 'auto' or a positive int, got {batch_size!r}")
    return batch_size


def batch_size_for(batch_size: int | str, item: torch.Tensor | None, device: torch.device | str | None = None,
                   name: str = "batch_size") -> int:
    """A fixed chunk size for a pass over a data set: ``batch_size`` itself, or for ``"auto"`` the largest
    number of items like ``item`` (one sample) whose activations fit the memory budget (:func:`max_chunk`)."""
    check_batch_size(batch_size, name)
    if batch_size != "auto":
        return int(batch_size)
    if item is None:
        return 256
    device = device if device is not None else item.device
    return max_chunk(item.numel() * item.element_size(), device)


def chunked(
    fn: Callable[[int, int], T],
    total: int,
    batch_size: int | str = "auto",
    *,
    key: Hashable | None = None,
    cap: int | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> list[T]:
    """Evaluate ``fn(start, stop)`` over ``range(total)`` in chunks and return the results in order.

    Parameters
    ----------
    fn : callable
        Evaluates items ``start:stop`` and returns anything (typically a tensor).
    total : int
        Number of items.
    batch_size : int or "auto"
        Fixed chunk size, or ``"auto"`` to time chunk sizes 1, 2, 4, ... on the real work and keep the
        fastest per item (cached under ``key``).
    key : hashable, optional
        Cache key for the auto choice (e.g. ``(id(model), item_shape, device)``); ``None`` never caches.
    cap : int, optional
        Upper bound on the chunk size (e.g. from :func:`max_chunk`).
    progress : bool
        Show a progress bar (on a terminal or notebook).
    """
    check_batch_size(batch_size)
    cap = max(1, cap or total)
    results: list[T] = []
    bar = Progress(total, desc, "item", enabled=progress, leave=False)

    def run(start: int, size: int) -> float:
        stop = min(total, start + size)
        began = _clock()
        results.append(fn(start, stop))
        bar.update(stop - start)
        return (_clock() - began) / (stop - start)

    start = 0
    try:
        if batch_size != "auto":
            size = min(int(batch_size), cap)
        elif key is not None and key in _best_chunk:
            size = min(_best_chunk[key], cap)
        else:
            size, start = _explore(run, total, cap, key)
        while start < total:
            run(start, size)
            start += size
    finally:
        bar.close()
    return results


def _explore(run: Callable[[int, int], float], total: int, cap: int, key: Hashable | None) -> tuple[int, int]:
    """Time chunk sizes 1, 2, 4, ... on the real work while the time per item improves; return (best size, next start).

    After a warm-up chunk of 1, each size is timed on one chunk. A size more than 2 % faster per item than the
    best so far becomes the best at once: disturbances only ever make a chunk slower. Otherwise the size is
    timed on a second chunk and the faster timing counts, because the first chunk of a new size pays one-off
    costs (allocation, kernel set-up) and other processes may take the CPU; the size then becomes the best if
    more than 2 % faster, or ends the search if more than 5 % slower. The choice is cached under ``key`` once
    the search has ended. When the items run out first, the search was still improving: the rest runs as one
    chunk of the size it had reached (at most ``cap``), and the next call with the same key goes on from the best
    size so far instead of from 1 (many short calls would otherwise all run in chunks of 1 and 2).
    """
    start = 0
    run(start, 1)  # warm-up: first calls pay one-off allocation costs
    start += 1
    size = min(_searched_to.get(key, 1), cap) if key is not None else 1
    best_size, best_time = size, float("inf")
    while True:
        if start + size > total:  # not enough items left to measure this size fairly
            if key is not None:
                _searched_to[key] = best_size
            return size, start
        per_item = run(start, size)
        start += size
        if per_item >= best_time * 0.98 and start + size <= total:  # not clearly better: time it again
            per_item = min(per_item, run(start, size))
            start += size
        if per_item < best_time * 0.98:
            best_size, best_time = size, per_item
        elif per_item > best_time * 1.05:  # clearly worse: stop growing
            break
        if size >= cap:
            break
        size = min(size * 2, cap)
    if key is not None:
        _best_chunk[key] = best_size
    return best_size, start


def select_batch(obj: Any, index: torch.Tensor, batch: int) -> Any:
    """Index every tensor in ``obj`` (nested tuples/lists/dicts) whose leading dimension is ``batch``.

    Used to give each perturbed copy of sample ``i`` the extra model inputs of sample ``i``
    (e.g. an attention mask), with ``index`` mapping perturbation rows to samples.
    """
    if isinstance(obj, torch.Tensor):
        return obj.index_select(0, index.to(obj.device)) if obj.ndim and obj.shape[0] == batch else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(select_batch(o, index, batch) for o in obj)
    if isinstance(obj, dict):
        return {k: select_batch(v, index, batch) for k, v in obj.items()}
    return obj


def check_output(output: Any, batch: int) -> torch.Tensor:
    """A model output checked to be a floating-point tensor ``(batch, ...)``; the errors say how to fix the model."""
    if not isinstance(output, torch.Tensor):
        hint = ("wrap a NumPy function (e.g. sklearn's predict_proba) with xk.NumpyModel(fn)"
                if type(output).__module__.split(".")[0] in ("numpy", "pandas") else
                "wrap it so that it returns a tensor of scores (e.g. lambda x: model(x).logits)")
        raise TypeError(f"the model returned {type(output).__name__}, not a torch.Tensor; {hint}")
    if output.ndim == 0 or output.shape[0] != batch:
        raise ValueError(
            f"the model returned an output of shape {tuple(output.shape)} for a batch of {batch} inputs; it must "
            f"return one row of scores per input, shaped ({batch}, ...)"
        )
    if not output.is_floating_point():
        raise TypeError(
            f"the model returned {output.dtype} values; explanations need real-valued scores (logits or "
            "probabilities, e.g. sklearn's predict_proba rather than predict)"
        )
    return output


def batched_forward(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    batch_size: int | str = "auto",
    *,
    owner: torch.Tensor | None = None,
    batch: int | None = None,
    forward_args: Sequence[Any] = (),
    forward_kwargs: dict[str, Any] | None = None,
    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> torch.Tensor:
    """Run ``model`` on ``inputs`` (M, ...) in chunks without gradients and concatenate the outputs.

    Parameters
    ----------
    owner : LongTensor (M,), optional
        Which original sample each row belongs to; extra inputs with leading dimension ``batch`` are
        indexed by it (so sample i's attention mask travels with its perturbations).
    reduce : callable ``(output_chunk, rows) -> tensor``, optional
        Applied to each chunk's output (e.g. select the target logit) so that only what is needed is kept.
    """
    forward_kwargs = forward_kwargs or {}
    rows_all = torch.arange(inputs.shape[0])
    item_bytes = inputs[0].numel() * inputs.element_size()
    key = ("forward", id(model), tuple(inputs.shape[1:]), inputs.dtype, str(inputs.device))

    def evaluate(start: int, stop: int) -> torch.Tensor:
        args, kwargs = forward_args, forward_kwargs
        if owner is not None and batch is not None:
            args = select_batch(forward_args, owner[start:stop], batch)
            kwargs = select_batch(forward_kwargs, owner[start:stop], batch)
        with torch.no_grad():
            out = check_output(model_scores(model(inputs[start:stop], *args, **kwargs)), stop - start)
        return reduce(out, rows_all[start:stop]) if reduce is not None else out

    parts = chunked(
        evaluate, inputs.shape[0], batch_size, key=key, cap=max_chunk(item_bytes, inputs.device),
        progress=progress, desc=desc,
    )
    return torch.cat(parts)
