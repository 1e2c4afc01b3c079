"""TRAK at scale on this machine (issue 28): an augmented-digits training set featurised into a resumable zarr
store, a run killed midway and resumed, then the top-k proponents of many queries scored in blocks.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/bench_data_attribution_scale.py --train 100000 --queries 10000``
Prints one JSON line: times, samples featurised by each run, peak resident memory against the stated bound.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import xaikit as xk

torch.set_num_threads(1)


def augmented(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32) / 16.0, torch.tensor(y)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, x.shape[0], (n,), generator=g)
    return x[pick] + 0.1 * torch.randn(n, 64, generator=g), y[pick]


class Counting(xk.examples.TRAK):
    computed = 0

    def featurise(self, state, x, y):
        Counting.computed += x.shape[0]
        return super().featurise(state, x, y)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--train", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--projection", type=int, default=128)
    p.add_argument("--shard", type=int, default=8192)
    p.add_argument("--kill-after", type=int, default=3, help="shards written before the first run dies")
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
    store = tempfile.mkdtemp(prefix="trak-store-")
    out: dict = {"train": args.train, "queries": args.queries, "projection": args.projection, "shard": args.shard,
                 "parameters": sum(q.numel() for q in model.parameters())}

    def killed():
        stop = args.kill_after * args.shard
        for s in range(0, stop, 1024):
            yield x[s:s + 1024], y[s:s + 1024]
        raise KeyboardInterrupt("killed")

    t = time.perf_counter()
    try:
        Counting(model, projection=args.projection, batch_size=1024).fit(killed(), store=store, shard_size=args.shard)
    except KeyboardInterrupt:
        pass
    out["killed_run"] = {"computed": Counting.computed, "time_s": time.perf_counter() - t}
    Counting.computed = 0
    t = time.perf_counter()
    trak = Counting(model, projection=args.projection, batch_size=1024).fit((x, y), store=store, shard_size=args.shard)
    out["resumed_run"] = {"computed": Counting.computed, "time_s": time.perf_counter() - t}
    out["peak_rss_after_fit_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    found = trak.top(xq, k=10)
    out["top10_time_s"] = time.perf_counter() - t
    out["top_shape"] = list(found.supporting.shape)
    n, q, k, s, params = args.train, args.queries, args.projection, args.shard, out["parameters"]
    # numbers held at once while scoring (float32): queries' features, one shard, two score blocks + top-k buffers
    bound = 4 * (q * k + s * k + 2 * q * s + 4 * q * 10) + 8 * (k * k + params * k) + 4 * n
    out["bound_scoring_bytes"] = bound
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shutil.rmtree(store)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
