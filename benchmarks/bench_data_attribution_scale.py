"""TRAK at scale on this machine: an augmented-digits training set featurised through ``xaikit.run`` into a
resumable zarr store (a run killed midway, then resumed, in-process or on Ray), then the top-k proponents and
opponents of many queries scored block by block against a memory bound stated by formula.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/bench_data_attribution_scale.py --train 100000 --queries 10000
[--engine ray --workers 2]``. Prints one JSON line: times, samples featurised by each run, memory against the
stated bounds, and (``--compare``) the scores of the resumed store against a store featurised in one go.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import xaikit as xk
from xaikit.run import Source, TensorSource

torch.set_num_threads(1)


def augmented(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32) / 16.0, torch.tensor(y)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, x.shape[0], (n,), generator=g)
    return x[pick] + 0.1 * torch.randn(n, 64, generator=g), y[pick]


class Killed(Source):
    """The training set's samples and identity; reading sample ``at`` raises (the run is killed there)."""

    has_labels, has_masks = True, False

    def __init__(self, x: torch.Tensor, y: torch.Tensor, at: int) -> None:
        self.inner, self.at = TensorSource(x, y), at

    def __len__(self) -> int:
        return len(self.inner)

    def describe(self) -> dict:
        return self.inner.describe()

    def sample(self, index: int):
        if index >= self.at:
            raise KeyboardInterrupt("killed")
        return self.inner.sample(index)


def rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--train", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--projection", type=int, default=128)
    p.add_argument("--shard", type=int, default=8192)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--kill-after", type=int, default=3, help="shards written before the first run dies")
    p.add_argument("--engine", default="inprocess", choices=["inprocess", "ray"], help="engine of the resumed run")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--compare", type=int, default=200, help="queries whose scores are compared with a one-go store")
    args = p.parse_args()
    x, y = augmented(args.train, 0)
    xq, _ = augmented(args.queries, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x[:5000]), y[:5000]).backward()
        opt.step()
    model.eval()
    root = tempfile.mkdtemp(prefix="trak-store-")
    out: dict = {"train": args.train, "queries": args.queries, "projection": args.projection, "shard": args.shard,
                 "batch": args.batch, "engine": args.engine, "parameters": sum(q.numel() for q in model.parameters()),
                 "load_before": os.getloadavg()}

    def trak() -> xk.examples.TRAK:
        return xk.examples.TRAK(model, projection=args.projection, batch_size=args.batch)

    t, c = time.perf_counter(), time.process_time()
    try:
        xk.run.featurise(trak(), Killed(x, y, args.kill_after * args.shard), f"{root}/f", shard_size=args.shard,
                         progress=False)
    except KeyboardInterrupt:
        pass
    out["killed_run"] = {"time_s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
                         "shards_written": args.kill_after}
    t, c = time.perf_counter(), time.process_time()
    fitted = xk.run.featurise(trak(), (x, y), f"{root}/f", shard_size=args.shard, engine=args.engine,
                              workers=args.workers, progress=False)
    out["resumed_run"] = {**fitted.fit_info, "time_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}
    out["peak_rss_after_fit_bytes"] = peak()
    before = rss()
    t, c = time.perf_counter(), time.process_time()
    found = fitted.top(xq, k=10)
    out["top10"] = {"time_s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
                    "shape": list(found.supporting.shape)}
    grew = max(0, peak() - before)
    n, q, k, s, params = args.train, args.queries, args.projection, args.shard, out["parameters"]
    # bytes held at once while scoring (float32 unless said): the queries' features and their product with the
    # kernel (4Qk), one shard read from the store and its row copy with the Newton weights (2S(k+1)), the (Q, S)
    # score block and topk's copy of it (2QS), one batch of the queries' per-sample gradients and their flat copy
    # (2Bp), the running top-10 both ways with indices (12 B per entry, two buffers), the float64 kernel and
    # projection (8(k² + pk)) and the Newton weights of the training set (4N)
    b = min(args.batch, q)
    bound = (4 * (4 * q * k + 2 * s * (k + 1) + 2 * q * s + 2 * b * params) + 2 * 12 * q * 2 * 10
             + 8 * (k * k + params * k) + 4 * n)
    out["scoring"] = {"bound_formula": "4(4Qk + 2S(k+1) + 2QS + 2Bp) + 2·12·Q·2·10 + 8(k² + pk) + 4N",
                      "bound_bytes": bound, "rss_before_bytes": before, "grew_bytes": grew,
                      "within_bound": grew <= bound}
    if args.compare:
        t = time.perf_counter()
        one_go = xk.run.featurise(trak(), (x, y), f"{root}/g", shard_size=args.shard, progress=False)
        out["one_go_inprocess_s"] = time.perf_counter() - t
        a, b = fitted.scores(xq[:args.compare]), one_go.scores(xq[:args.compare])
        out["compare"] = {"queries": args.compare, "max_abs_diff": float((a - b).abs().max()),
                          "max_abs_score": float(b.abs().max()), "equal": bool(torch.equal(a, b))}
    out["peak_rss_bytes"] = peak()
    out["load_after"] = os.getloadavg()
    shutil.rmtree(root)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
