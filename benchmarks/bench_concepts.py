"""Concepts: speed of CRP and of the reference-sample pass against the LRP calls they stand for, and the
channel-ablation table (Chandrasegaran et al. 2022) for EfficientNet-Lite0 on augmented scikit-image photos.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_concepts.py [--parts speed references table] [--repeats 5]

- speed: ``ConditionalHeatmaps`` for 32 concepts (channels) of one image vs one LRP call on a batch of 32
  (limit: ≤ 2×).
- references: one ``ReferenceSamples`` pass over a data set vs the LRP calls on the same batches (limit:
  ≤ 1.3×).
  Both interleaved round by round in one process; reported: the ratio of the minima and the median of each
  round's ratio.
- composition: ``Composition`` (top 5 concepts) of 4 photos vs one LRP call on the same 4 photos (limit: the
  ``top + 2`` rows per sample it runs: the recording pass, ``top`` conditional rows and the zeroed row), with
  the rows the model saw in each (a forward hook).
- table: channel scores ``R_i[c]`` of layer ``_bn1`` (the last conv's folded output, 1280 channels) on half
  of the augmented photos, per class; ablation (top-k / random-k, 5 draws / low-k / baseline) measured on the
  other half. Labels: EfficientNet-Lite0's prediction on each original photo.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import xaikit as xk  # noqa: E402
from xaikit import concepts  # noqa: E402
from xaikit.concepts.featureviz import random_affine  # noqa: E402
from xaikit.zoo import IMAGES, imagenet_label, load_efficientnet_lite0, load_image, make_shapes  # noqa: E402
from xaikit.zoo import train_shapes_model  # noqa: E402


def interleaved(candidates: dict, repeats: int, clock) -> dict[str, list[float]]:
    times = {k: [] for k in candidates}
    for fn in candidates.values():  # warm-up (also fixes the auto chunk sizes)
        fn()
    for _ in range(repeats):
        for key, fn in candidates.items():
            began = clock()
            fn()
            times[key].append(clock() - began)
    return times


def ratio_row(name: str, times: dict, new: str, base: str, limit: float) -> str:
    paired = statistics.median(t / b for t, b in zip(times[new], times[base]))
    ratio = min(times[new]) / min(times[base])
    return (f"| {name} | {min(times[base]):.3f} | {min(times[new]):.3f} | {ratio:.2f}× | {paired:.2f}× | "
            f"≤ {limit}× |")


def augmented_photos(per_photo: int, size: int = 224, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops/scales/rotations, flips and brightness/contrast changes of the bundled photos."""
    g = torch.Generator().manual_seed(seed)
    photos = torch.cat([load_image(name, size) for name in IMAGES])
    x = photos.repeat_interleave(per_photo, 0)
    x = random_affine(x, jitter=0.08, scales=(1.0, 1.6), degrees=15.0, generator=g)
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x[flip] = x[flip].flip(-1)
    contrast = 0.7 + 0.6 * torch.rand(x.shape[0], 1, 1, 1, generator=g)
    brightness = 0.3 * (torch.rand(x.shape[0], 1, 1, 1, generator=g) - 0.5)
    x = (x * contrast + brightness).clamp(-1, 1)
    return x, torch.arange(len(IMAGES)).repeat_interleave(per_photo)


def speed(args, clock) -> list[str]:
    rows = []
    model = load_efficientnet_lite0()
    x = load_image("chelsea")
    setups = [("EfficientNet-Lite0, _blocks.15 (320 ch.), 224²", model, x, "_blocks.15")]
    shapes = train_shapes_model(make_shapes(512, seed=0), epochs=6, seed=0)
    setups.append(("shapes CNN, features.9 (16 ch. → 16 concepts, batch 16), 32²", shapes,
                   make_shapes(1, seed=1).x, "features.9"))
    for name, net, image, layer in setups:
        k = 16 if "shapes" in name else 32
        crp = concepts.ConditionalHeatmaps(net, layer=layer, method_settings={"batch_size": k})
        lrp = xk.LRP(net, composite="epsilon_plus_flat", batch_size=k)
        batch = image.expand(k, -1, -1, -1).contiguous()
        times = interleaved({"lrp": lambda: lrp(batch, target=0),
                             "crp": lambda: crp(image, target=0, concepts=list(range(k)))}, args.repeats, clock)
        rows.append(ratio_row(name, times, "crp", "lrp", 2.0))
    return rows


def composition(args, clock) -> list[str]:
    model = load_efficientnet_lite0()
    x = torch.cat([load_image(name) for name in IMAGES[:4]])
    top = 5
    rows = [0]
    hook = model.register_forward_hook(lambda m, i, o: rows.__setitem__(0, rows[0] + i[0].shape[0]))
    tool = concepts.Composition(model, layer="_blocks.15", top=top)
    lrp = xk.LRP(model)
    seen = {}
    for key, fn in (("lrp", lambda: lrp(x)), ("composition", lambda: tool(x))):
        rows[0] = 0
        fn()
        seen[key] = rows[0]
    hook.remove()
    times = interleaved({"lrp": lambda: lrp(x), "composition": lambda: tool(x)}, args.repeats, clock)
    return [ratio_row(f"EfficientNet-Lite0, _blocks.15, top={top}, 4 photos at 224² (model rows: LRP "
                      f"{seen['lrp']}, Composition {seen['composition']})", times, "composition", "lrp", top + 2)]


def references(args, clock) -> list[str]:
    rows = []
    model = load_efficientnet_lite0()
    photos, _ = augmented_photos(8, size=160)  # 32 images, batches of 8
    shapes = train_shapes_model(make_shapes(512, seed=0), epochs=6, seed=0)
    data = make_shapes(512, seed=2)
    for name, net, x, y, layer, batch in [
        ("EfficientNet-Lite0, _blocks.15, 32 photos at 160², batches of 8", model, photos, None, "_blocks.15", 8),
        ("shapes CNN, features.9, 512 images, batches of 64", shapes, data.x, data.y, "features.9", 64),
    ]:
        target = "prediction" if y is None else "label"
        loader = lambda: [(x[i:i + batch], None if y is None else y[i:i + batch])  # noqa: E731
                          for i in range(0, x.shape[0], batch)]
        tool = concepts.ReferenceSamples(net, layer=layer, n=8, target=target, progress=False,
                                         method_settings={"batch_size": batch})
        lrp = xk.LRP(net, composite="epsilon_plus_flat", batch_size=batch)

        def plain():
            for xb, yb in loader():
                lrp(xb, target=None if yb is None else yb.tolist())

        times = interleaved({"lrp": plain, "refs": lambda: tool(loader())}, args.repeats, clock)
        rows.append(ratio_row(name, times, "refs", "lrp", 1.3))
    return rows


def table(args) -> list[str]:
    model = load_efficientnet_lite0()
    x, photo = augmented_photos(args.per_photo)
    with torch.no_grad():
        labels = model(torch.cat([load_image(name) for name in IMAGES])).argmax(1)
    y = labels[photo]
    g = torch.Generator().manual_seed(1)
    order = torch.randperm(x.shape[0], generator=g)
    half = x.shape[0] // 2
    fit, held = order[:half], order[half:]
    began = time.perf_counter()
    scores = concepts.ChannelRelevance(model, layer="_bn1", method_settings={"batch_size": 16})(
        [(x[fit[i:i + 16]], y[fit[i:i + 16]]) for i in range(0, half, 16)])
    lines = [f"channel scores: {time.perf_counter() - began:.0f} s for {half} images", ""]
    names = {int(c): imagenet_label(int(c)) for c in labels}
    for k in args.k:
        lines.append(f"k = {k} of 1280 channels of `_bn1`; accuracy (%) on the {x.shape[0] - half} held-out "
                     f"images of each photo's class, ranking of that class; random-k: mean ± sd over 5 draws\n")
        lines.append("| ablated | " + " | ".join(names[int(c)] for c in labels) + " | mean |")
        lines.append("|---|" + "---|" * (len(labels) + 1))
        cells = {r: [] for r in ("baseline", "top", "random", "low")}
        for cls in labels.tolist():
            t = concepts.Ablation(model, "_bn1", k=k, draws=5, seed=0)((x[held], y[held]), scores, cls=cls)
            j = t.classes.index(cls)
            for i, r in enumerate(cells):
                cells[r].append((t.mean[i, j], t.sd[i, j]))
        for r, values in cells.items():
            row = [f"{m:.1f}" + (f" ± {s:.1f}" if r == "random" else "") for m, s in values]
            mean = sum(m for m, _ in values) / len(values)
            label = r if r == "baseline" else f"{r}-{k}"
            lines.append(f"| {label} | " + " | ".join(row) + f" | {mean:.1f} |")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", nargs="+", default=["speed", "composition", "references", "table"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--per-photo", type=int, default=48)
    parser.add_argument("--k", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"threads: {torch.get_num_threads()}, {args.clock} clock, {args.repeats} interleaved rounds\n")
    head = "| setup | LRP (s) | concepts (s) | ratio of minima | median ratio per round | limit |\n|---|---|---|---|---|---|"
    if "speed" in args.parts:
        print("### Conditional heatmaps of one image vs one LRP call on the batch of copies\n\n" + head)
        print("\n".join(speed(args, clock)) + "\n")
    if "composition" in args.parts:
        print("### Composition of 4 photos vs one LRP call on them\n\n" + head)
        print("\n".join(composition(args, clock)) + "\n")
    if "references" in args.parts:
        print("### Reference-sample pass vs the LRP calls on the same batches\n\n" + head)
        print("\n".join(references(args, clock)) + "\n")
    if "table" in args.parts:
        print("### Channel ablation, EfficientNet-Lite0, augmented photos\n")
        print("\n".join(table(args)))


if __name__ == "__main__":
    main()
