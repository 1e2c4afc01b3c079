"""What the command line and the report add to the cost of explaining.

On EfficientNet-Lite0 and the four scikit-image photos, per method:
- ``direct``: the method called once on the batch of 4 (the library alone);
- ``cli``: the same through the CLI's run loop (chunks of ``--batch-size`` with a progress bar);
- ``render``: normalising the maps and writing the report's pictures for that method (PNG per sample);
and the ratios cli/direct and render/direct. Each figure is the median of ``REPEATS`` runs after one warm-up.

Run: ``PYTHONPATH=src python benchmarks/bench_cli.py``
"""
from __future__ import annotations

import statistics
import tempfile
import time

import torch

import xaikit as xk
from xaikit import viz
from xaikit.cli.commands import run_methods
from xaikit.cli.inputs import Inputs
from xaikit.zoo import IMAGES, load_efficientnet_lite0, load_image

REPEATS = 5
METHODS = {"gradient": {}, "input_x_gradient": {}, "guided_backprop": {}, "lrp": {},
           "lrp(epsilon_gamma_box)": {"composite": "epsilon_gamma_box"}}


def median_time(fn) -> float:
    fn()
    times = []
    for _ in range(REPEATS):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    model = load_efficientnet_lite0()
    x = torch.cat([load_image(name) for name in IMAGES])
    inputs = Inputs(x, list(IMAGES), "image")
    images = viz.to_rgb(x, -1, 1)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, settings in METHODS.items():
            method = xk.get_method(label.split("(")[0])(model, **settings)
            direct = median_time(lambda: method(x))
            cli = median_time(lambda: run_methods({label: method}, inputs, None, "auto", quiet=True))
            attribution = method(x).attribution
            render = median_time(lambda: viz.image_section(
                folder, images, {label: viz.normalise(viz.relevance_map(attribution))}, inputs.names))
            rows.append((label, direct, cli, render))
    print(f"EfficientNet-Lite0, batch of {len(IMAGES)} photos, torch threads {torch.get_num_threads()}, "
          f"median of {REPEATS}\n")
    print("| method | direct (s) | CLI run loop (s) | CLI / direct | report pictures (s) | pictures / direct |")
    print("|---|---|---|---|---|---|")
    for label, direct, cli, render in rows:
        print(f"| {label} | {direct:.3f} | {cli:.3f} | {cli / direct:.2f} | {render:.3f} | {render / direct:.2f} |")


if __name__ == "__main__":
    main()
