"""Models and data that work offline: the real EfficientNet-Lite0 and scikit-image photos, and small
synthetic models/data with known answers; a few-shot glyph set rendered from matplotlib's fonts."""
from .captions import CaptionData, CaptionModel, make_caption_shapes
from .decoy import (DecoyData, WatermarkData, add_watermark, make_decoy_digits, make_watermark_shapes, train_decoy_mlp,
                    watermark_mask)
from .glyphs import Episode, EpisodeSampler, GlyphData, make_glyphs
from .groundtruth import SHAPES, ShapesCNN, ShapesData, accuracy, load_shapes_model, make_shapes, train_shapes_model
from .imagenet import IMAGES, imagenet_label, load_efficientnet_lite0, load_image
from .needle import NeedleData, NeedleTransformer, make_needle, needle_accuracy, train_needle_model
from .tabular import BlockAdditive, train_cancer_blocks, train_digits_mlp, train_wine_mlp

__all__ = ["load_efficientnet_lite0", "load_image", "imagenet_label", "IMAGES",
           "make_shapes", "train_shapes_model", "load_shapes_model", "ShapesData", "ShapesCNN", "SHAPES", "accuracy",
           "train_wine_mlp", "train_digits_mlp", "train_cancer_blocks", "BlockAdditive", "make_decoy_digits",
           "DecoyData", "make_watermark_shapes", "WatermarkData", "add_watermark", "watermark_mask", "train_decoy_mlp",
           "make_needle", "NeedleData", "NeedleTransformer", "train_needle_model", "needle_accuracy",
           "make_caption_shapes", "CaptionModel", "CaptionData", "make_glyphs", "GlyphData", "EpisodeSampler", "Episode"]
