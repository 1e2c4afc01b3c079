"""TCAV on the ground-truth shapes set with a watermark planted in training (the longer version of
``tests/test_concepts_tcav.py``).

A :class:`xaikit.zoo.ShapesCNN` is trained on :func:`xaikit.zoo.make_watermark_shapes` (the watermark on half of
the images of class 0: a Clever-Hans shortcut). Concepts, given by examples (clean images of held-out data):

- ``watermark``: held-out images of the classes 1-3 with the watermark drawn on them (the planted concept);
- ``control``: held-out clean images, drawn like the random sets (a meaningless concept).

Random sets: other held-out clean images. TCAV at every convolution of ``features`` for class 0 and class 1,
``runs`` random sets, the two-sided t-test against random CAVs with Bonferroni over the two concepts.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/bench_tcav.py [--runs 20] [--epochs 6]``
"""
from __future__ import annotations

import argparse
import time

import xaikit as xk
from xaikit.zoo import add_watermark, make_shapes, make_watermark_shapes, train_shapes_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=768)
    args = parser.parse_args()
    began = time.perf_counter()
    train = make_watermark_shapes(args.train, seed=0, fraction=0.5)
    model = train_shapes_model(train, epochs=args.epochs, seed=0)
    held = make_shapes(600, seed=11)
    marked = add_watermark(held.x[held.y != 0][:60])
    print(f"trained in {time.perf_counter() - began:.0f} s; clean held-out accuracy "
          f"{xk.zoo.accuracy(model, held):.3f}; share of watermarked class-1..3 images predicted 0: "
          f"{(model(marked).argmax(1) == 0).float().mean():.3f}\n")
    control, pool = held.x[300:420], held.x[420:600]
    for layer in ("features.3", "features.6", "features.9"):
        tcav = xk.concepts.TCAV(model, layer, runs=args.runs, seed=0, set_size=40)
        tcav.fit({"watermark": marked, "control": control}, random=pool)
        for target in (0, 1):
            x = held.x[:300][held.y[:300] == target]
            print(f"### layer {layer}, class {target} ({len(x)} inputs)\n")
            print(tcav(x, target=target).to_markdown(digits=3) + "\n", flush=True)
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
