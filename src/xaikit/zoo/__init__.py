"""Models and data that work offline: the real EfficientNet-Lite0 and scikit-image photos, and small
synthetic models/data with known answers."""
from .groundtruth import SHAPES, ShapesCNN, ShapesData, accuracy, load_shapes_model, make_shapes, train_shapes_model
from .imagenet import IMAGES, imagenet_label, load_efficientnet_lite0, load_image
from .tabular import train_wine_mlp

__all__ = ["load_efficientnet_lite0", "load_image", "imagenet_label", "IMAGES",
           "make_shapes", "train_shapes_model", "load_shapes_model", "ShapesData", "ShapesCNN", "SHAPES", "accuracy",
           "train_wine_mlp"]
