"""The picture of docs/concepts.png: EfficientNet-Lite0's top concepts for scikit-image's cat photo, with their
share of the relevance at a layer, their conditional heatmaps (CRP) and reference crops (relevance
maximisation) among augmented scikit-image photos.

Run: PYTHONPATH=src .venv/bin/python benchmarks/concepts_picture.py [--out docs/concepts.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_concepts import augmented_photos  # noqa: E402

from xaikit import concepts, viz  # noqa: E402
from xaikit.zoo import load_efficientnet_lite0, load_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/concepts.png")
    parser.add_argument("--layer", default="_blocks.15")
    parser.add_argument("--per-photo", type=int, default=12)
    args = parser.parse_args()
    model = load_efficientnet_lite0()
    x = load_image("chelsea")
    composition = concepts.Composition(model, args.layer, top=4)(x)
    pool, _ = augmented_photos(args.per_photo)
    tool = concepts.ReferenceSamples(model, args.layer, n=4, target="prediction", progress=False,
                                     method_settings={"batch_size": 8})
    refs = tool([(pool[i:i + 8], None) for i in range(0, pool.shape[0], 8)])
    crops = {c: viz.to_rgb(tool.crops(pool, refs, c, size=64)[0], -1, 1) for c in composition.concepts}
    figure = viz.plot_composition(viz.to_rgb(x, -1, 1)[0], composition.heatmaps, composition.concepts,
                                  composition.share.tolist(), crops)
    figure.suptitle(f"EfficientNet-Lite0, Egyptian cat: top concepts of {args.layer} (% of the relevance), "
                    "conditional heatmaps, reference samples", fontsize=9)
    viz.save_figure(figure, args.out)
    print("\n".join(composition.describe()))


if __name__ == "__main__":
    main()
