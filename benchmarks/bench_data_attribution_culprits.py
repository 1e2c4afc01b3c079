"""Training samples behind an artifact, found by ``xk.improve.training_culprits`` and checked by retraining.

Per seed: decoy digits without decoys (``xk.zoo.make_decoy_digits(decoy=False)``, 600 training images), a
bright 2×2 corner patch (the decoy set's patch mask) planted on half of the class-3 training images, an MLP
144–32–10 that learns it; the wrong-reason queries are 30 test digits of other classes that the patch flips to
3, their references the same digits without the patch. Each ranking of the training set is scored by the AUC
for the patched images, the patched images among its top 20, and by retraining without its top ``n_patched``
(as many as were planted): the share of poisoned test digits of other classes still predicted 3. Random
removal is the baseline. Mean ± s.e. over the seeds.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/bench_data_attribution_culprits.py``; writes
``benchmarks/results/data_attribution_culprits.json``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk
from xaikit.metrics import detection_auc
from xaikit.zoo import make_decoy_digits

torch.set_num_threads(1)


def train(x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def se(v: list[float]) -> float:
    return float(torch.tensor(v).std() / math.sqrt(len(v)))


def main(seeds: int = 3) -> None:
    rows: dict[str, dict[str, list[float]]] = {}
    for seed in range(seeds):
        tr, te = make_decoy_digits(seed=seed, n_train=600, decoy=False)
        g = torch.Generator().manual_seed(seed)
        art = (tr.y == 3) & (torch.rand(600, generator=g) < 0.5)
        x = torch.where(art.view(-1, 1, 1, 1) & tr.mask, torch.tensor(1.0), tr.x)
        model = train(x, tr.y, seed)
        poisoned = torch.where(te.mask, torch.tensor(1.0), te.x)
        others = te.y != 3
        with torch.no_grad():
            flips0 = float((model(poisoned[others]).argmax(1) == 3).float().mean())
            wrong = ((model(poisoned).argmax(1) == 3) & others).nonzero()[:30, 0]
        q, r = poisoned[wrong], te.x[wrong]
        plain = xk.examples.TRAK(model, projection=128).fit((x, tr.y))
        kernel = xk.examples.TRAK(model, projection=128, newton=False).fit((x, tr.y))
        tracin = xk.examples.TracIn(model, layer="all").fit((x, tr.y))
        rankings = {
            "training_culprits, TRAK newton=False, references": xk.improve.training_culprits(kernel, q, reference=r),
            "training_culprits, TRAK newton=False, no references": xk.improve.training_culprits(kernel, q),
            "training_culprits, TRAK (paper's τ with Newton weights), references":
                xk.improve.training_culprits(plain, q, reference=r),
            "training_culprits, TRAK (paper's τ), no references": xk.improve.training_culprits(plain, q),
            "training_culprits, TracIn (full model), references":
                xk.improve.training_culprits(tracin, q, reference=r),
        }
        n = int(art.sum())
        scores = {name: found.score for name, found in rankings.items()}
        scores["random"] = torch.rand(600, generator=torch.Generator().manual_seed(100 + seed))
        for name, s in scores.items():
            top = s.argsort(descending=True)
            keep = torch.ones(600, dtype=torch.bool)
            keep[top[:n]] = False
            retrained = train(x[keep], tr.y[keep], seed)
            with torch.no_grad():
                flips = float((retrained(poisoned[others]).argmax(1) == 3).float().mean())
            row = rows.setdefault(name, {})
            row.setdefault("auc", []).append(detection_auc(s, art))
            row.setdefault("top20", []).append(float(art[top[:20]].sum()))
            row.setdefault("flip_rate_after_removal", []).append(flips)
            row.setdefault("flip_rate_before", []).append(flips0)
        print(f"seed {seed}: planted {n}, flip rate {flips0:.3f}; " + "; ".join(
            f"{k}: auc {v['auc'][-1]:.3f} top20 {v['top20'][-1]:.0f} after {v['flip_rate_after_removal'][-1]:.3f}"
            for k, v in rows.items()), flush=True)
    out = {name: {k: {"mean": sum(v) / len(v), "se": se(v), "per_seed": v} for k, v in row.items()}
           for name, row in rows.items()}
    out["load"] = os.getloadavg()
    (Path(__file__).parent / "results" / "data_attribution_culprits.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
