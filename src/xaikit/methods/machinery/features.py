"""Interpretable features: which input elements are switched on and off together (LIME, Shapley methods).

A features spec is one of

- ``None``: every column of a rank-2 (tabular) input is a feature; inputs with spatial dimensions use the
  method's default grid;
- ``"grid:N"``: N cells along every spatial dimension (all dimensions after the channel dimension; the
  feature dimension of tabular inputs), shared by all channels: ``"grid:4"`` on an image gives 16 features;
- ``"slic:N"``: about N SLIC superpixels per image (Achanta et al. 2012, via scikit-image), for images
  ``(N, C, H, W)``;
- an integer tensor broadcastable to ``x`` labelling each element with its feature, either one mask for all
  samples (e.g. ``(H, W)``, ``(1, 1, H, W)``, ``(D,)``) or one per sample (``(N, 1, H, W)``, ``(N, D)``).
  Labels may be any integers; they are renumbered ``0..d_i-1`` per sample in increasing order.

Samples may have different numbers of features ``d_i`` (superpixels); missing labels are padded and carry
no elements. :func:`perturb` is the one function that turns "which elements are present" into model inputs
for Occlusion, RISE, LIME and the Shapley methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch

FeatureSpec = Union[None, str, torch.Tensor]


@dataclass
class Features:
    """A feature mask bound to a batch.

    Attributes
    ----------
    mask : LongTensor ``(N, *r)``
        Feature index of every element; ``r`` broadcasts to the sample shape (channels usually size 1).
    count : LongTensor ``(N,)``
        Number of features ``d_i`` of each sample.
    """

    mask: torch.Tensor
    count: torch.Tensor

    @property
    def d(self) -> int:
        """Largest number of features of a sample (coalition vectors have this length)."""
        return int(self.count.max())

    def valid(self) -> torch.Tensor:
        """``(N, d)`` bool: which feature slots of each sample carry elements."""
        return torch.arange(self.d, device=self.count.device)[None] < self.count[:, None]

    def present(self, z: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """Element-level presence ``(M, *r)`` for coalitions ``z`` ``(M, d)`` of samples ``owner`` ``(M,)``."""
        mask = self.mask.index_select(0, owner.to(self.mask.device))
        flat = mask.reshape(mask.shape[0], -1)
        return z.to(mask.device).gather(1, flat).view(mask.shape)

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        """Feature values ``(N, ..., d)`` -> element values ``(N, ..., *r)``: each element gets its feature's value."""
        n, d = values.shape[0], values.shape[-1]
        middle = values.shape[1:-1]
        flat = self.mask.reshape(n, -1)
        index = flat.view(n, *([1] * len(middle)), -1).expand(n, *middle, flat.shape[1])
        return values.gather(-1, index.to(values.device)).view(n, *middle, *self.mask.shape[1:])


def resolve_features(spec: FeatureSpec, x: torch.Tensor, default: str = "grid:8", name: str = "features") -> Features:
    """Bind a features spec to the batch ``x``."""
    if spec is None:
        spec = _columns(x) if x.ndim == 2 else default
    if isinstance(spec, str):
        kind, _, arg = spec.partition(":")
        try:
            n = int(arg)
        except ValueError:
            n = 0
        if kind not in ("grid", "slic") or n < 1:
            raise ValueError(f"unknown {name} {spec!r}; valid: None, 'grid:N', 'slic:N' (N ≥ 1) or an integer mask")
        return _grid(x, n) if kind == "grid" else _slic(x, n, name)
    if isinstance(spec, torch.Tensor):
        return _from_mask(spec, x, name)
    raise TypeError(f"{name} must be None, 'grid:N', 'slic:N' or an integer tensor, got {type(spec).__name__}")


def _columns(x: torch.Tensor) -> torch.Tensor:
    return torch.arange(x.shape[1], device=x.device)


def _spatial_dims(x: torch.Tensor) -> list[int]:
    return list(range(2, x.ndim)) if x.ndim >= 3 else [1]


def _grid(x: torch.Tensor, cells: int) -> Features:
    dims = _spatial_dims(x)
    shape = [1] * x.ndim
    label = torch.zeros((), dtype=torch.long, device=x.device)
    for dim in dims:
        size = x.shape[dim]
        per_dim = min(cells, size)
        cell = torch.arange(size, device=x.device) * per_dim // size  # equal-as-possible contiguous cells
        view = [1] * x.ndim
        view[dim] = size
        label = label * per_dim + cell.view(view)
        shape[dim] = size
    mask = label.expand(shape).contiguous()
    return _compact(mask, x)


def _slic(x: torch.Tensor, segments: int, name: str) -> Features:
    if x.ndim != 4:
        raise ValueError(f"{name} 'slic:N' needs images (N, C, H, W), got shape {tuple(x.shape)}; use 'grid:N'")
    from skimage.segmentation import slic

    masks = []
    for image in x.detach().cpu():  # segmentation is preprocessing, done once per image
        low, high = image.amin(), image.amax()
        scaled = ((image - low) / (high - low).clamp_min(1e-12)).permute(1, 2, 0).double().numpy()
        labels = slic(scaled, n_segments=segments, start_label=0, channel_axis=-1,
                      convert2lab=image.shape[0] == 3)
        masks.append(torch.as_tensor(labels, dtype=torch.long)[None])
    return _compact(torch.stack(masks).to(x.device), x)


def _from_mask(mask: torch.Tensor, x: torch.Tensor, name: str) -> Features:
    if mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of feature labels, got dtype {mask.dtype}")
    try:
        fits = torch.broadcast_shapes(mask.shape, x.shape) == x.shape
    except RuntimeError:
        fits = False
    if not fits or mask.numel() == 0:
        raise ValueError(
            f"{name} mask of shape {tuple(mask.shape)} does not fit x of shape {tuple(x.shape)}: give an integer "
            f"tensor broadcastable to x, one for all samples (e.g. {tuple(x.shape[1:])}) or one per sample "
            f"({x.shape[0]}, ...)"
        )
    if mask.device != x.device:
        raise ValueError(f"{name} is on device {mask.device} but x is on {x.device}")
    mask = mask.long()
    while mask.ndim < x.ndim:
        mask = mask[None]
    return _compact(mask, x)


def _compact(mask: torch.Tensor, x: torch.Tensor) -> Features:
    """Renumber labels to 0..d_i-1 per sample (vectorised) and record d_i."""
    n = x.shape[0]
    per_sample = mask.shape[0] == n and n > 1
    if not per_sample:
        _, inverse = torch.unique(mask, return_inverse=True)
        count = torch.full((n,), int(inverse.max()) + 1, dtype=torch.long, device=mask.device)
        return Features(inverse.expand(n, *mask.shape[1:]), count)
    offset = mask - mask.min()
    key = torch.arange(n, device=mask.device).view(n, *([1] * (mask.ndim - 1))) * (int(offset.max()) + 1) + offset
    unique, inverse = torch.unique(key, return_inverse=True)
    owner = unique // (int(offset.max()) + 1)
    count = torch.bincount(owner, minlength=n)
    first = torch.cumsum(count, 0) - count
    return Features(inverse - first.view(n, *([1] * (mask.ndim - 1))), count)


def attribution_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of attributions of ``x``: its own for floats, the default float dtype for token ids."""
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


def perturb(
    x: torch.Tensor,
    baseline: torch.Tensor,
    present: torch.Tensor,
    owner: torch.Tensor,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """Model inputs where ``present`` elements come from ``x`` and the others from the baseline.

    Parameters
    ----------
    x : (N, ...) the explained samples.
    baseline : (N or 1, B, ...) baselines per sample (B > 1: a background data set).
    present : (M, *r) presence per row, broadcastable to a sample: bool (switch) or float in [0, 1] (blend
        ``baseline + m (x - baseline)``, RISE and soft masks).
    owner : (M,) which sample each row perturbs.
    reference : (M,), optional; which baseline of the B each row uses (default 0).
    """
    owner = owner.to(x.device)
    ref = torch.zeros_like(owner) if reference is None else reference.to(x.device)
    base = baseline[owner if baseline.shape[0] > 1 else torch.zeros_like(owner), ref]
    source = x.index_select(0, owner)
    if present.dtype == torch.bool:
        return torch.where(present.to(x.device), source, base)
    return torch.lerp(base, source, present.to(x.device, x.dtype))


class LazyInputs:
    """A batch of model inputs built chunk by chunk: ``inputs[start:stop]`` calls ``build(start, stop)``.

    It quacks like a tensor for :func:`xaikit.batching.batched_forward` (``shape``, ``dtype``, ``device``,
    ``element_size()``, slicing), so thousands of perturbations never sit in memory at once while each chunk
    is still built as one tensor by a vectorised op.
    """

    def __init__(self, build: Any, total: int, like: torch.Tensor) -> None:
        self.build = build
        self.shape = torch.Size((total, *like.shape[1:]))
        self.dtype = like.dtype
        self.device = like.device
        self._element_size = like.element_size()

    def element_size(self) -> int:
        return self._element_size

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item: int | slice) -> torch.Tensor:
        if isinstance(item, int):
            return self.build(item, item + 1)[0]
        start, stop, step = item.indices(self.shape[0])
        if step != 1:
            raise IndexError("LazyInputs supports contiguous slices only")
        return self.build(start, stop)


def random_ranks(count: torch.Tensor, draws: int, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random orders of each sample's features: ``(N, draws, d)`` ranks.

    Valid features of sample i get the ranks ``0..d_i-1`` in random order, padded slots rank after them, so
    ``ranks < k`` is a uniformly random subset of k valid features (drawn on the CPU with ``generator``).
    """
    n, d = count.shape[0], int(count.max())
    keys = torch.rand((n, draws, d), generator=generator, dtype=torch.float64)
    valid = torch.arange(d)[None, None] < count.cpu()[:, None, None]
    keys = torch.where(valid, keys, keys + 2.0)  # padded slots after every valid feature
    return keys.argsort(-1).argsort(-1)


def reverse_ranks(ranks: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The reversed orders (antithetic partners): rank r of a valid feature becomes ``d_i - 1 - r``."""
    d_i = count.cpu().view(-1, 1, 1)
    return torch.where(ranks < d_i, d_i - 1 - ranks, ranks)
