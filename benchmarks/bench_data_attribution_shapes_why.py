"""Why did TRAK underperform on the shapes CNN? One seed, many TRAK variants scored on the same retrainings.

Per run: ``--train`` shapes images (data seed 100 + seed), ``--test`` queries, ``--models`` CNNs trained with the
shapes benchmark's recipe, ``--subsets`` random 50 % subsets each retrained *twice* (two seeds): the LDS is
reported against the first retraining, the second, and their mean, and "noise ceiling" is the mean Spearman
correlation of the two retrainings' margins over the subsets (how far the subset determines the output at all).
Variants (``--variants``, comma-separated): ``base`` (TRAK k = 32, 64, 256; TracIn), ``newton`` (newton=False),
``ridge`` (λ = c · mean diagonal of ΦᵀΦ, c = 0.01 … 100; ``shrinkage = c/(1+c)`` is the same kernel up to a
constant factor), ``noproj``, ``M`` (1, 2, 5 members), ``ref`` (traker), ``dattri``. Retrainings and models
are cached under ``/tmp/i28`` (delete to recompute). Numbers: ``results/data_attribution.md`` ("Why").

Run: ``PYTHONPATH=src nice -n 10 /work/venvs/i28-data/bin/python benchmarks/bench_data_attribution_shapes_why.py
--seed 0 --variants base,newton,ridge,M,noproj,ref,dattri``.
"""
import argparse
import json
import sys
import time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).parent))
from bench_data_attribution_shapes import train
import xaikit as xk
from xaikit.metrics.data_attribution import spearman, margin
from xaikit.zoo import make_shapes
torch.set_num_threads(1)

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=0)
p.add_argument("--train", type=int, default=400)
p.add_argument("--test", type=int, default=30)
p.add_argument("--subsets", type=int, default=30)
p.add_argument("--models", type=int, default=5)
p.add_argument("--variants", default="base")
a = p.parse_args()
seed = a.seed
data = make_shapes(a.train + a.test, size=16, seed=100 + seed)
x, y, xq, yq = data.x[:a.train], data.y[:a.train], data.x[a.train:], data.y[a.train:]
cache = Path(f"/tmp/i28/cache_s{seed}_n{a.train}_t{a.test}_r{a.subsets}.pt")
if cache.exists():
    c = torch.load(cache)
    masks, actual, actual2 = c["masks"], c["actual"], c["actual2"]
else:
    t = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(a.subsets, a.train)
    actual = torch.zeros(a.subsets, a.test, dtype=torch.float64); actual2 = actual.clone()
    for j in range(a.subsets):
        idx = torch.randperm(a.train, generator=g)[:a.train // 2]
        masks[j, idx] = 1
        for arr, s in ((actual, 7919 * j + 1), (actual2, 7919 * j + 2)):
            mdl = train(x[idx], y[idx], 10**6 + seed * 10**4 + s)
            with torch.no_grad():
                arr[j] = margin(mdl(xq), yq).double()
    torch.save({"masks": masks, "actual": actual, "actual2": actual2}, cache)
    print("retrained", time.perf_counter() - t, flush=True)
Path("/tmp/i28").mkdir(exist_ok=True)
mc = Path(f"/tmp/i28/models_s{seed}_n{a.train}_m{a.models}.pt")
from xaikit.zoo.groundtruth import ShapesCNN
if mc.exists():
    states = torch.load(mc)
else:
    states = [train(x, y, 1000 * seed + m).state_dict() for m in range(a.models)]
    torch.save(states, mc)
models = []
for s in states:
    m = ShapesCNN(4, 8); m.load_state_dict(s); models.append(m.eval())
with torch.no_grad():
    acc = float((models[0](xq).argmax(1) == yq).float().mean())
    tracc = float((models[0](x).argmax(1) == y).float().mean())
def lds(scores, act=actual):
    return float(spearman(scores.double() @ masks.double().T, act.T).nanmean())
ceiling = float(spearman(actual.T, actual2.T).nanmean())
avg = (actual + actual2) / 2
print(f"seed {seed} N {a.train} acc {acc:.2f} train acc {tracc:.2f}; noise ceiling (two retrains corr) {ceiling:.3f}")
res = {}
def run(name, fn):
    t = time.perf_counter()
    s = fn()
    res[name] = (lds(s), lds(s, actual2), lds(s, avg))
    print(f"{name:55s} LDS {res[name][0]:.3f} (2nd retrain {res[name][1]:.3f}, avg of 2 {res[name][2]:.3f}) "
          f"{time.perf_counter() - t:.1f}s", flush=True)
    return s
V = a.variants.split(",")
def trak(k, M=None, **kw):
    st = states if M is None else states[:M]
    return xk.examples.TRAK(models[0], checkpoints=st, projection=k, batch_size=100, **kw).fit((x, y)).scores(xq, yq)
if "base" in V:
    for k in (32, 64, 256):
        run(f"TRAK k={k} M={len(states)}", lambda: trak(k))
    run("TracIn k=256 models", lambda: xk.examples.TracIn(models[0], checkpoints=states, layer="all", projection=256,
        batch_size=100).fit((x, y)).scores(xq, yq))
if "newton" in V:
    for k in (32, 64, 256):
        run(f"TRAK k={k} newton=False", lambda: trak(k, newton=False))
if "ridge" in V:
    for k in (64, 256):
        t = xk.examples.TRAK(models[0], checkpoints=states, projection=k, batch_size=100).fit((x, y))
        tr = sum(float((f.T @ f).diagonal().mean()) for f in t.features) / len(t.features)
        for lam in (0.01, 0.1, 1.0, 10.0, 100.0):
            run(f"TRAK k={k} ridge {lam} x mean diag", lambda: xk.examples.TRAK(
                models[0], checkpoints=states, projection=k, batch_size=100, regularisation=lam * tr).fit(
                (x, y)).scores(xq, yq))
if "noproj" in V:
    run("TRAK no projection (pinv)", lambda: xk.examples.TRAK(models[0], checkpoints=states, projection=None,
                                                               batch_size=100).fit((x, y)).scores(xq, yq))
if "M" in V:
    for M in (1, 2, 5):
        run(f"TRAK k=64 M={M}", lambda: trak(64, M))
import bench_data_attribution as bd  # noqa: E402  (the references' wrappers)
if "ref" in V:
    for k in (64, 256):
        run(f"traker k={k}", lambda: bd.traker_scores(models, x, y, xq, yq, k))
if "dattri" in V:
    bd.mlp = lambda: ShapesCNN(4, 8).eval()
    for k in (64,):
        run(f"dattri k={k}", lambda: bd.dattri_scores(models, x, y, xq, yq, k))
json.dump(res, open(f"/tmp/i28/res_s{seed}_n{a.train}_{a.variants}.json", "w"))
