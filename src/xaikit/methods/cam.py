"""Class activation maps from gradients at a named layer: Grad-CAM and Grad-CAM++."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import layers
from ..batching import check_batch_size
from ..explanation import Explanation
from ..targets import ResolvedTarget, resolve_target
from .base import Method, register
from .gradient import Backprop, map_samples


def find_layer(model: nn.Module, layer: str | nn.Module | None, name: str = "layer") -> tuple[str, nn.Module]:
    """The module called ``layer`` (default: the last convolution): :func:`xaikit.layers.find_layer`."""
    if layer is None:
        return layers.last_of_type(model, (nn.Conv1d, nn.Conv2d, nn.Conv3d), name)
    return layers.find_layer(model, layer, name)


@register
class GradCAM(Method):
    """Grad-CAM (Selvaraju et al., ICCV 2017, Eq. 1-2): ``ReLU(Σ_k α_k A^k)`` with ``α_k`` the spatial mean of
    ``∂y/∂A^k`` at the activation ``A`` of a named layer.

    Parameters
    ----------
    model : nn.Module
    layer : str, optional
        Name of the module (as in ``model.named_modules()``) whose output ``(N, C, *spatial)`` is used;
        default: the last convolution. A wrong name raises a ValueError that lists the valid names.
    upsample : bool
        Interpolate the map (bilinear for images) to the input's spatial size and repeat it over the input's
        channels, so the attribution is shaped like ``x`` (default). ``False`` returns the map at the layer's
        resolution, shaped ``(N, 1, *spatial)``.
    relu : bool
        Keep only positive evidence (the paper's ReLU; default ``True``).
    batch_size : int or "auto"
        Samples per forward/backward pass.
    progress : bool
        Show a progress bar over the chunks of the batch.

    Notes
    -----
    Cost: one forward pass and a backward pass down to the layer only (the activation is captured by a
    forward hook registered for the call and removed afterwards, even on error; it is detached so the
    backward pass stops there).
    """

    def __init__(self, model: nn.Module, layer: str | None = None, upsample: bool = True, relu: bool = True,
                 batch_size: int | str = "auto", progress: bool = False) -> None:
        super().__init__(model)
        check_batch_size(batch_size)
        self.progress = bool(progress)
        self.layer, self.module = find_layer(model, layer)
        self.chosen_layer = layer is not None
        self.upsample, self.relu, self.batch_size = bool(upsample), bool(relu), batch_size

    @property
    def name(self) -> str:
        """``GradCAM`` at the default layer (the last convolution; ``info["layer"]`` names it), else
        ``GradCAM(<layer>)`` with the layer the user chose."""
        return f"{type(self).__name__}({self.layer})" if self.chosen_layer else type(self).__name__

    def weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Channel weights ``(N, C)`` from the activation and the gradient at it."""
        return grad.flatten(2).mean(2)

    def _capture(self, x: torch.Tensor, target, args, kwargs) -> tuple[torch.Tensor, torch.Tensor, Backprop]:
        captured: list[torch.Tensor] = []

        def hook(module, inputs, out):
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer {self.layer!r} returns {type(out).__name__}, not a tensor; choose another layer")
            leaf = out.detach().requires_grad_(True)
            captured.append(leaf)
            return leaf.clone()  # later in-place ops act on the copy; the gradient reaches the leaf

        with layers.hooked(self.module, forward=hook), torch.enable_grad():
            output = self.model(x, *args, **kwargs)
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"the model returned {type(output).__name__}; wrap it so that it returns a tensor")
            resolved = target if isinstance(target, ResolvedTarget) else resolve_target(target, output)
            score = resolved.score(output)
            if not captured:
                raise ValueError(f"layer {self.layer!r} was not called in the forward pass; choose another layer")
            if not score.requires_grad:
                raise ValueError(
                    "model: its output does not depend differentiably on the activation of layer "
                    f"{self.layer!r} (torch.no_grad or .detach() inside forward?); Grad-CAM needs gradients"
                )
            (grad,) = torch.autograd.grad(score.sum(), captured[-1], allow_unused=True)
        if grad is None:
            raise ValueError(f"the selected output does not depend on layer {self.layer!r}; choose another layer")
        activation = captured[-1].detach()
        return activation, grad, Backprop(grad, output.detach(), resolved, score.detach())

    def _chunk(self, x, target, args, kwargs):
        activation, grad, result = self._capture(x, target, args, kwargs)
        if activation.ndim < 3:
            raise ValueError(
                f"layer {self.layer!r} outputs shape {tuple(activation.shape)}; Grad-CAM needs a layer with spatial "
                "dimensions (N, C, ...)"
            )
        cam = (self.weights(activation, grad).view(*grad.shape[:2], *([1] * (grad.ndim - 2))) * activation).sum(1)
        cam = (cam.clamp_min(0) if self.relu else cam)[:, None]
        if self.upsample:
            cam = upsample_to(cam, x, self.layer)
        return cam, result

    def explain(self, x, target, forward_args, forward_kwargs) -> Explanation:
        attribution, output, index, score, _ = map_samples(
            self, x, target, forward_args, forward_kwargs, self.batch_size, self._chunk
        )
        return Explanation(attribution, index, output, self.name, {"score": score, "layer": self.layer})


@register
class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, Eq. 19): pixel-wise weighted positive gradients.

    ``w_k = Σ_ij α_ij^k ReLU(g_ij^k)`` with ``α = g² / (2 g² + Σ_ab A_ab g³)`` and ``g = ∂y/∂A``: the
    closed form for an exponentiated score ``exp(y)``, whose per-sample factor ``exp(y)`` is dropped (it
    scales the map without changing it). Same settings and cost as :class:`GradCAM`.
    """

    def weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        g2 = grad.pow(2)
        g3 = grad.pow(3)
        spatial = tuple(range(2, grad.ndim))
        denominator = 2 * g2 + (activation * g3).sum(spatial, keepdim=True)
        alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        return (alpha * grad.clamp_min(0)).flatten(2).sum(2)


def upsample_to(cam: torch.Tensor, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Interpolate ``cam`` (N, 1, *spatial) to the spatial size of ``x`` and repeat it over ``x``'s channels."""
    if cam.ndim != x.ndim or x.ndim not in (3, 4, 5):
        raise ValueError(
            f"upsample=True needs the map of layer {layer!r} {tuple(cam.shape)} and x {tuple(x.shape)} to have the same "
            "number (1-3) of spatial dimensions; pass upsample=False"
        )
    mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[x.ndim]
    cam = F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)
    return cam.expand(-1, x.shape[1], *x.shape[2:]).contiguous()
