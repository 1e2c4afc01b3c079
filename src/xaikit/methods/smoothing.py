"""SmoothGrad (Smilkov et al. 2017): average any attribution method over noisy copies of the input."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..batching import check_batch_size, select_batch
from ..deprecation import warn_renamed
from ..errors import check_choice, check_positive
from ..explanation import Explanation
from ..settings import settings_of, unknown_setting
from ..targets import Contrast, resolve_target
from .base import Method, get_method, register
from .machinery.scoring import forward_output
from .machinery.seeding import check_seed, make_generator, resolve_seed
from .resolve import parse_spec, passed_on, resolve_method


@register
class SmoothGrad(Method):
    """SmoothGrad: ``(1/T) Σ_t E(x + ε_t)``, ``ε_t ~ N(0, σ²)``, for any attribution method ``E``
    (Smilkov et al. 2017, Eq. 3).

    Parameters
    ----------
    model : nn.Module
    method : str or Method
        The wrapped method: a registered name (``"gradient"``, ``"integrated_gradients"``, ``"lrp"``, ...)
        built on ``model`` with ``**settings``, or a method object built on the same model.
    samples : int
        Number T of noisy copies per sample (the paper uses 50).
    sigma : float
        Noise standard deviation relative to each sample's input range: ``σ = sigma * (max(x_i) - min(x_i))``
        (the paper's "noise level", best at 10-20 %).
    seed : int, optional
        Seed of the noise (a private ``torch.Generator``; the global RNG is not touched). ``None`` draws a
        fresh seed, reported in ``expl.info["seed"]``.
    batch_size : int or "auto"
        Passed to the wrapped method when it is built from a name or spec (unless its settings set it).
    method_settings : dict, optional
        Settings of the wrapped method given by name or spec (:func:`~xaikit.methods.resolve.resolve_method`).
    progress : bool
        A progress bar, as every method takes: passed to the wrapped method built from a name or spec (it runs
        the noisy copies in its chunks); a method object keeps its own setting.
    aggregation : str
        How the T attributions of a sample are combined: ``"mean"`` (SmoothGrad, Smilkov et al. 2017),
        ``"square"`` (SmoothGrad², the mean of the squares; Hooker et al., NeurIPS 2019, "SG-SQ") or
        ``"variance"`` (VarGrad, the variance ``E[E²] − E[E]²`` over the noise; Adebayo et al., ICLR workshop
        2018). :class:`SmoothGradSquared` and :class:`VarGrad` are SmoothGrad with these settings.
    **settings
        Deprecated: the wrapped method's settings as keywords (use ``method_settings``).

    Notes
    -----
    Cost: T times the wrapped method (all ``N * T`` noisy copies form one batch that the wrapped method
    evaluates in its own chunks) plus one forward pass to fix the target on the clean input. The Monte-Carlo
    noise of the average falls only as ``1/√T``: 4× the samples halve it. ``expl.info["noise_std"]`` holds
    σ per sample. The target is chosen on the clean input (arg-max of ``f(x)`` when ``target=None``).
    """

    token_mode = "embedding"  # token ids: the noise is added to the embedding vectors

    @property
    def token_reduction(self) -> str:  # type: ignore[override]
        return self.inner.token_reduction

    def __init__(self, model: nn.Module, method: str | Method = "gradient", samples: int = 50, sigma: float = 0.15,
                 seed: int | None = None, batch_size: int | str = "auto",
                 method_settings: dict[str, Any] | None = None, progress: bool = False,
                 aggregation: str = "mean", **settings: Any) -> None:
        super().__init__(model)
        check_choice(aggregation, "aggregation", AGGREGATIONS)
        check_positive(samples, "samples", integer=True)
        check_positive(sigma, "sigma", allow_zero=True)
        check_seed(seed)
        check_batch_size(batch_size)
        if isinstance(method, str) and issubclass(get_method(parse_spec(method)[0]), SmoothGrad):
            raise ValueError("method 'smooth_grad' cannot wrap itself")
        if settings:  # the old form: the wrapped method's settings as keywords
            if isinstance(method, Method):
                raise TypeError(
                    f"settings {sorted(settings)} apply to a method given by name; build the method object with them"
                )
            cls = get_method(parse_spec(method)[0]) if isinstance(method, str) else method
            inner_valid, takes_any = settings_of(cls)
            own = [p for p in settings_of(SmoothGrad)[0] if p not in inner_valid]
            for key in settings:
                if key not in inner_valid and not takes_any:
                    raise unknown_setting("SmoothGrad", key, own + inner_valid)
            warn_renamed("SmoothGrad(model, method, **settings)",
                         "SmoothGrad(model, method='name:key=value', method_settings={...})", 4)
            method_settings = {**settings, **(method_settings or {})}
        if not isinstance(method, Method):
            method_settings = passed_on(method, method_settings, batch_size=batch_size, progress=progress or None)
        elif method.model is not model:
            raise ValueError("method must be built on the same model that SmoothGrad explains")
        self.inner = resolve_method(model, method, method_settings)
        self.samples, self.sigma, self.seed = samples, float(sigma), seed
        self.aggregation = aggregation

    @property
    def name(self) -> str:
        label = {"mean": "SmoothGrad", "square": "SmoothGradSquared", "variance": "VarGrad"}[self.aggregation]
        return f"{label}({self.inner.name})"

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        x = x.detach()
        n, t = x.shape[0], self.samples
        output = forward_output(self.model, x, forward_args, forward_kwargs)
        resolved = resolve_target(target, output)
        seed = resolve_seed(self.seed)
        generator = make_generator(seed)
        flat = x.flatten(1)
        noise_std = self.sigma * (flat.amax(1) - flat.amin(1))  # (N,)
        noise = torch.randn((n, t, *x.shape[1:]), generator=generator, dtype=x.dtype).to(x.device)
        noisy = (x[:, None] + noise * noise_std.view(n, 1, *([1] * (x.ndim - 1)))).flatten(0, 1)
        owner = torch.arange(n).repeat_interleave(t)
        repeated = _repeat_target(target, resolved, t)
        expl = self.inner(
            noisy, repeated, forward_args=select_batch(forward_args, owner, n),
            forward_kwargs=select_batch(forward_kwargs, owner, n),
        )
        copies = expl.attribution.view(n, t, *expl.attribution.shape[1:])
        if self.aggregation == "mean":
            attribution = copies.mean(1)
        elif self.aggregation == "square":
            attribution = copies.square().mean(1)
        else:  # the variance about the mean over the draws (the biased form, E[E²] − E[E]²)
            attribution = copies.var(1, unbiased=False)
        info = {"samples": t, "sigma": self.sigma, "noise_std": noise_std, "seed": seed,
                "method": self.inner.name, "aggregation": self.aggregation}
        return Explanation(attribution, resolved.index, output, self.name, info)


#: how SmoothGrad combines the attributions of the noisy copies
AGGREGATIONS = ("mean", "square", "variance")


@register
class SmoothGradSquared(SmoothGrad):
    """SmoothGrad² (Hooker et al., NeurIPS 2019, "SG-SQ"): the mean of the squared attributions of the noisy
    copies, ``(1/T) Σ_t E(x + ε_t)²``; :class:`SmoothGrad` with ``aggregation="square"`` (Captum:
    ``NoiseTunnel(..., nt_type="smoothgrad_sq")``). Settings as :class:`SmoothGrad`."""

    def __init__(self, model: nn.Module, method: str | Method = "gradient", samples: int = 50, sigma: float = 0.15,
                 seed: int | None = None, batch_size: int | str = "auto",
                 method_settings: dict[str, Any] | None = None, progress: bool = False) -> None:
        super().__init__(model, method, samples, sigma, seed, batch_size, method_settings, progress, "square")


@register
class VarGrad(SmoothGrad):
    """VarGrad (Adebayo et al. 2018): the variance of the attributions over the noisy copies,
    ``E_t[E(x + ε_t)²] − E_t[E(x + ε_t)]²``; :class:`SmoothGrad` with ``aggregation="variance"`` (Captum:
    ``NoiseTunnel(..., nt_type="vargrad")``). Settings as :class:`SmoothGrad`."""

    def __init__(self, model: nn.Module, method: str | Method = "gradient", samples: int = 50, sigma: float = 0.15,
                 seed: int | None = None, batch_size: int | str = "auto",
                 method_settings: dict[str, Any] | None = None, progress: bool = False) -> None:
        super().__init__(model, method, samples, sigma, seed, batch_size, method_settings, progress, "variance")


def _repeat_target(spec: Any, resolved, t: int) -> Any:
    """The clean input's target for each of the T noisy copies of every sample."""
    if callable(spec) and not isinstance(spec, (torch.Tensor, Contrast)):
        return spec
    if resolved.contrast is not None:
        return Contrast(resolved.index.repeat_interleave(t), resolved.contrast.repeat_interleave(t))
    return resolved.index.repeat_interleave(t)
