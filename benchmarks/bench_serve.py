"""Latency of ``xaikit serve``: the first heatmap of a picked photo through the app vs the LRP call itself.

EfficientNet-Lite0, LRP (its default composite), one scikit-image photo per request, cycling through four:

- ``direct``: ``xk.LRP(model)(x)`` on the photo already read as a tensor (what a script pays);
- ``app``: ``POST /api/explain/heatmap`` over HTTP to the app served by uvicorn in a thread of this process,
  from the request to the parsed answer: reading and resizing the file, the same LRP call, the channel sum, the
  base64 float32 map and the JSON, the HTTP round trip.

Repeats are interleaved (direct, app, app, direct, ...) so that both see the same machine load; the figures are
medians of wall time, and of the process's CPU time (server and client threads together). One warm-up pair first
(reported on its own: the first call of each pays torch's one-time costs).

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_serve.py`` (needs the serve extra and httpx).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch
from skimage import data, io

import xaikit as xk
from xaikit.cli.models import load_model
from xaikit.data import read_image
from xaikit.serve import ServeConfig, start

REPEATS = 6
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="xaikit-bench-serve-"))
    for name in PHOTOS:
        io.imsave(folder / f"{name}.png", getattr(data, name)(), check_contrast=False)
    loaded = load_model("efficientnet-lite0")
    tensors = {name: read_image(folder / f"{name}.png", loaded.size, loaded.low, loaded.high)[None] for name in PHOTOS}
    running = start(ServeConfig(model=loaded, data=folder, port=0))
    client = httpx.Client(base_url=running.url, timeout=600)
    load_before = os.getloadavg()

    def direct(name: str) -> float:
        return xk.LRP(loaded.model)(tensors[name]).attribution.sum().item()

    def app(name: str) -> float:
        answer = client.post("/api/explain/heatmap", json={"input": f"data:{name}.png", "method": "lrp"})
        answer.raise_for_status()
        return answer.json()["sum"]

    rows = {"direct": [], "app": []}
    first = {}
    for repeat in range(REPEATS + 1):
        name = PHOTOS[repeat % len(PHOTOS)]
        order = ("direct", "app") if repeat % 2 == 0 else ("app", "direct")
        sums = {}
        for kind in order:
            wall, cpu, sums[kind] = timed(lambda: (direct if kind == "direct" else app)(name))
            (rows[kind] if repeat else first.setdefault(kind, [])).append((wall, cpu))
        assert abs(sums["app"] - sums["direct"]) <= 1e-4 * max(1.0, abs(sums["direct"])), sums  # the same LRP
    running.stop()
    load_after = os.getloadavg()

    def median(kind: str, i: int) -> float:
        return statistics.median(t[i] for t in rows[kind])

    ratios = [a[0] / d[0] for a, d in zip(rows["app"], rows["direct"])]
    print(f"EfficientNet-Lite0, LRP (default composite), one 224×224 photo per call, torch threads "
          f"{torch.get_num_threads()}, {REPEATS} interleaved repeats after one warm-up pair; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| | direct LRP call | through the app (HTTP) | app / direct |")
    print("|---|---|---|---|")
    print(f"| first call (warm-up), wall s | {first['direct'][0][0]:.3f} | {first['app'][0][0]:.3f} | "
          f"{first['app'][0][0] / first['direct'][0][0]:.2f} |")
    print(f"| median wall s | {median('direct', 0):.3f} | {median('app', 0):.3f} | "
          f"{median('app', 0) / median('direct', 0):.2f} |")
    print(f"| median CPU s (process) | {median('direct', 1):.3f} | {median('app', 1):.3f} | "
          f"{median('app', 1) / median('direct', 1):.2f} |")
    print(f"\nper-repeat wall ratios app/direct: {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(median {statistics.median(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
