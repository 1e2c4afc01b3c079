"""Throughput of ``xaikit.run``: LRP on EfficientNet-Lite0 over a folder of images, in-process vs Ray.

The images are 224×224 crops (seeded offsets and flips) of the four scikit-image photos, written once as PNG
files, so every engine reads and decodes the same files. Engines: ``inprocess`` (torch on one thread), Ray
with 1 and 2 actors (one CPU and one torch thread each) on a local cluster of 2 CPUs started once (its start
is timed apart). Every run starts from an empty run folder and includes building the model in the workers.
Configurations are interleaved, ``--repeats`` times, and the median is reported; the Ray overhead is
median(ray, 1 worker) / median(in-process).

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_run.py --n 512 --repeats 2``
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_images(folder: Path, n: int, seed: int = 0) -> None:
    from skimage import data, io, transform

    photos = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        image = getattr(data, name)()[..., :3]
        scale = 256 / min(image.shape[:2])
        photos.append((transform.rescale(image, scale, channel_axis=-1, anti_aliasing=True) * 255).astype(np.uint8))
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[i % 4]
        top, left = rng.integers(0, photo.shape[0] - 223), rng.integers(0, photo.shape[1] - 223)
        crop = photo[top:top + 224, left:left + 224]
        io.imsave(folder / f"img{i:04d}.png", crop[:, ::-1] if rng.random() < 0.5 else crop, check_contrast=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--batch-size", default="auto")
    args = parser.parse_args()
    import ray
    import torch

    from xaikit.run import RunSpec, run

    torch.set_num_threads(1)
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    spec = RunSpec(model="efficientnet-lite0",
                   methods=[("lrp", {"composite": "epsilon_gamma_box", "low": -1.0, "high": 1.0})],
                   shard_size=args.shard_size, batch_size=batch_size, device="cpu")
    root = Path(tempfile.mkdtemp(prefix="bench_run_"))
    images = root / "images"
    images.mkdir()
    write_images(images, args.n)
    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray_init = time.perf_counter() - began
    configs = {"inprocess": {"engine": "inprocess"}, "ray, 1 worker": {"engine": "ray", "workers": 1},
               "ray, 2 workers": {"engine": "ray", "workers": 2}}
    times: dict[str, list[float]] = {name: [] for name in configs}
    inside: dict[str, list[float]] = {name: [] for name in configs}  # seconds spent inside shards, all workers
    try:
        for repeat in range(args.repeats):
            for name, options in configs.items():
                out = root / "out"
                shutil.rmtree(out, ignore_errors=True)
                began = time.perf_counter()
                result = run(spec, images, out, size=224, low=-1.0, high=1.0, progress=False, **options)
                times[name].append(time.perf_counter() - began)
                assert result.complete and result.summary["failures"] == 0
                inside[name].append(sum(json.loads(p.read_text())["seconds"] for p in (out / "timing").iterdir()))
                print(f"repeat {repeat} {name}: {times[name][-1]:.1f} s (in shards {inside[name][-1]:.1f} s)",
                      flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(times["inprocess"])
    print(f"\n{args.n} images, LRP(epsilon_gamma_box) on EfficientNet-Lite0, shard size {args.shard_size}, "
          f"batch size {args.batch_size}; ray.init (2 CPUs) {ray_init:.1f} s (not in the times)\n")
    print("| engine | median s | runs (s) | images/s | × in-process | s inside shards (sum over workers) |")
    print("|---|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        shards = ", ".join(f"{v:.1f}" for v in inside[name])
        print(f"| {name} | {median:.1f} | {runs} | {args.n / median:.2f} | {median / base:.3f} | {shards} |")


if __name__ == "__main__":
    main()
