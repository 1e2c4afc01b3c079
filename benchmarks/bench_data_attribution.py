"""Training-data attribution on scikit-learn digits with an MLP, checked by retraining (issue 28).

- LDS (linear datamodeling score, Park et al. 2023): ``SUBSETS`` random 50 % subsets per seed, ``SEEDS`` seeds,
  mean ± standard error over the seeds of the mean LDS over the test queries; TRAK, TracIn (same models, same
  projection dimension), influence functions (last layer, LiSSA), and the references ``traker`` and ``dattri``
  (``--reference``, a benchmark venv), with the attribution time of each. ``--timing``: TRAK against traker,
  interleaved repeats; ``--precision``: seed 0's LDS with TRAK's kernel inverted in float32.
- Label noise: 10 % of the training labels flipped; AUC of finding them by TRAK / TracIn self-influence and by
  the training loss.
- Brittleness: remove the top-k proponents (TRAK, TracIn, random), retrain, share of flipped predictions;
  ``--brittleness QUERIES``: the same with more queries, TRAK with and without shrinkage, paired differences.
- ``--lds-repeats R``: LDS against the mean of ``R`` retrainings per subset, and the noise ceiling.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/bench_data_attribution.py [--quick] [--reference]``.
Writes ``benchmarks/results/data_attribution.json`` (the numbers of ``data_attribution.md``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import xaikit as xk
from xaikit.metrics.data_attribution import spearman

torch.set_num_threads(1)  # the shared 2-core machine: 2 threads ran 3.7x slower per retraining


def digits(train: int, test: int, seed: int = 0):
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 0.1)
    y = torch.tensor(y)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    tr, te = order[:train], order[train:train + test]
    return x[tr], y[tr], x[te], y[te]


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def train(x: torch.Tensor, y: torch.Tensor, seed: int, steps: int = 150) -> nn.Module:
    """Full-batch Adam with weight decay; deterministic given the seed."""
    torch.manual_seed(seed)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def se(values: list[float]) -> float:
    return float(torch.tensor(values).std() / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def traker_scores(models, x, y, xq, yq, k: int):
    """The reference TRAK (``traker``, the authors' package) on CPU with its basic projector."""
    from trak import TRAKer
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        traker = TRAKer(model=models[0], task="image_classification", train_set_size=x.shape[0], proj_dim=k,
                        device="cpu", save_dir=tmp, projector_seed=0, use_half_precision=False)
        for m, model in enumerate(models):
            traker.load_checkpoint(model.state_dict(), model_id=m)
            for s in range(0, x.shape[0], 200):
                traker.featurize(batch=(x[s:s + 200], y[s:s + 200]), num_samples=min(200, x.shape[0] - s))
        traker.finalize_features()
        for m, model in enumerate(models):
            traker.start_scoring_checkpoint(exp_name="q", checkpoint=model.state_dict(), model_id=m,
                                            num_targets=xq.shape[0])
            traker.score(batch=(xq, yq), num_samples=xq.shape[0])
        scores = traker.finalize_scores(exp_name="q")
    return torch.as_tensor(scores).T.float()


def dattri_scores(models, x, y, xq, yq, k: int):
    """The reference TRAK of ``dattri`` (``TRAKAttributor``) with the margin as target, on CPU."""
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset
    model = mlp()

    def loss(params, data):
        xi, yi = data
        return F.cross_entropy(torch.func.functional_call(model, params, xi.unsqueeze(0)), yi.unsqueeze(0))

    def target(params, data):  # the margin log p/(1-p) (TRAK's model output function)
        logp = -loss(params, data)
        return logp - torch.log(1 - torch.exp(logp))

    def probability(params, data):
        return torch.exp(-loss(params, data))

    # as dattri's own TRAK examples: the margin is the task's function for training and test samples alike
    task = AttributionTask(loss_func=target, model=model, checkpoints=[m.state_dict() for m in models])
    attributor = TRAKAttributor(task=task, correct_probability_func=probability, device="cpu",
                                projector_kwargs={"proj_dim": k, "device": "cpu", "proj_seed": 0})
    attributor.cache(DataLoader(TensorDataset(x, y), batch_size=250, shuffle=False))
    scores = attributor.attribute(DataLoader(TensorDataset(xq, yq), batch_size=250, shuffle=False))
    return torch.as_tensor(scores).T.float()


def ensemble(seed: int, n_train: int = 600, n_test: int = 30, m: int = 5):
    x, y, xq, yq = digits(n_train, n_test, seed)
    return x, y, xq, yq, [train(x, y, 1000 * seed + i) for i in range(m)]


def timing(repeats: int = 7, k: int = 256) -> None:
    """TRAK (fit + scores) against traker on the same work, alternating, ``repeats`` times each after one untimed
    warm-up call of each; wall time and this process's CPU time (one thread: the CPU time is the work, the wall
    time adds the machine's load)."""
    x, y, xq, yq, models = ensemble(0)
    ours, ref, ours_cpu, ref_cpu = [], [], [], []
    xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=k).fit((x, y))  # warm-up
    traker_scores(models, x, y, xq, yq, k)  # (first calls import and initialise; not timed, for both)
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=k,
                         batch_size=250).fit((x, y)).scores(xq, yq)
        ours.append(time.perf_counter() - t)
        ours_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        traker_scores(models, x, y, xq, yq, k)
        ref.append(time.perf_counter() - t)
        ref_cpu.append(time.process_time() - c)
    out = {"ours_s": ours, "traker_s": ref, "ours_cpu_s": ours_cpu, "traker_cpu_s": ref_cpu}
    for what, a, b in (("wall", ours, ref), ("cpu", ours_cpu, ref_cpu)):
        ratios = sorted(u / v for u, v in zip(a, b))
        out[f"{what}_ratio_median"] = ratios[len(ratios) // 2]
        out[f"{what}_ratio_min"], out[f"{what}_ratio_max"] = ratios[0], ratios[-1]
    print(json.dumps(out))


def _peak_kib() -> int:
    import re
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def memory_child(which: str, k: int = 256) -> None:
    """One side of ``memory()``, in its own process: the peak resident memory of TRAK's or traker's fit + scores
    above the resident memory after the setting is built (Linux: the peak is reset through
    ``/proc/self/clear_refs``)."""
    x, y, xq, yq, models = ensemble(0)
    work = (lambda: traker_scores(models, x, y, xq, yq, k)) if which == "traker" else (
        lambda: xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=k,
                                 batch_size=250).fit((x, y)).scores(xq, yq))
    work()  # imports and first-call initialisation are not the work
    Path("/proc/self/clear_refs").write_text("5")
    before = _peak_kib()
    work()
    print(json.dumps({"which": which, "peak_above_start_mib": (_peak_kib() - before) / 1024,
                      "peak_mib": _peak_kib() / 1024}))


def memory() -> None:
    """Peak memory of TRAK vs traker on the timing's work (k = 256, M = 5), each in a fresh process."""
    import subprocess
    import sys
    for which in ("ours", "traker", "ours", "traker"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", which], capture_output=True, text=True)
        print([line for line in out.stdout.splitlines() if line.startswith("{")][-1], flush=True)


def precision(k: int = 256, subsets: int = 50) -> None:
    """Seed 0's LDS of TRAK with the kernel inverted in float64 (ours) and in float32, and of traker."""
    import xaikit.examples.trak as trak_module
    x, y, xq, yq, models = ensemble(0)
    states = [m.state_dict() for m in models]
    scores = {"TRAK float64 kernel": xk.examples.TRAK(models[0], checkpoints=states, projection=k).fit(
        (x, y)).scores(xq, yq)}
    exact = trak_module.kernel_inverse
    trak_module.kernel_inverse = lambda gram, reg: torch.linalg.inv(gram.float()).double()
    try:
        scores["TRAK float32 kernel"] = xk.examples.TRAK(models[0], checkpoints=states, projection=k).fit(
            (x, y)).scores(xq, yq)
    finally:
        trak_module.kernel_inverse = exact
    scores["traker"] = traker_scores(models, x, y, xq, yq, k)
    try:
        scores["dattri"] = dattri_scores(models, x, y, xq, yq, k)
    except Exception as err:  # report, do not hide
        print(f"dattri failed: {type(err).__name__}: {err}")
    lds = xk.metrics.LinearDatamodelingScore(subsets=subsets, seed=0)
    lds(lambda i, s: train(x[i], y[i], s), xq, yq, scores["TRAK float64 kernel"])
    masks, actual = lds.last["masks"].double(), lds.last["actual"]
    print(json.dumps({n: float(spearman(v.double() @ masks.T, actual).nanmean()) for n, v in scores.items()}))


def trak_shrinkage_scores(models, states, x, y, xq, yq) -> dict[str, torch.Tensor]:
    """TRAK's scores of the queries at k = 64 and 256, with and without ``shrinkage=0.5`` (M = 5)."""
    return {f"TRAK, k = {k}, M = 5" + (f", shrinkage = {d}" if d else ""): xk.examples.TRAK(
        models[0], checkpoints=states, projection=k, shrinkage=d, batch_size=250).fit((x, y)).scores(xq, yq)
        for k in (64, 256) for d in (0.0, 0.5)}


def shrinkage_rows(seeds: int = 3, subsets: int = 50) -> None:
    """LDS of TRAK with and without ``shrinkage=0.5`` (k = 64, 256; M = 5) on the digits setting, 3 seeds;
    writes ``results/data_attribution_shrinkage.json`` (``--shrinkage`` runs this, then
    :func:`shrinkage_other_uses`)."""
    rows: dict[str, list[float]] = {}
    for seed in range(seeds):
        x, y, xq, yq, models = ensemble(seed)
        states = [m.state_dict() for m in models]
        methods = trak_shrinkage_scores(models, states, x, y, xq, yq)
        lds = xk.metrics.LinearDatamodelingScore(subsets=subsets, fraction=0.5, seed=seed)
        actual = None
        for name, scores in methods.items():
            if actual is None:
                value = lds(lambda i, s: train(x[i], y[i], s), xq, yq, scores)
                actual = lds.last["actual"]
            else:
                value = spearman(scores.double() @ lds.last["masks"].double().T, actual)
            rows.setdefault(name, []).append(float(value.nanmean()))
        print(f"seed {seed}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in rows.items()), flush=True)
    out = {n: {"mean": sum(v) / len(v), "se": se(v), "per_seed": v} for n, v in rows.items()}
    (Path(__file__).parent / "results" / "data_attribution_shrinkage.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def flip_labels(y: torch.Tensor, seed: int, share: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(flipped, noisy)``: a seeded ``share`` of the labels moved to another of the 10 classes."""
    g = torch.Generator().manual_seed(seed)
    flipped = torch.rand(y.shape[0], generator=g) < share
    noisy = y.clone()
    noisy[flipped] = (y[flipped] + torch.randint(1, 10, (int(flipped.sum()),), generator=g)) % 10
    return flipped, noisy


def shrinkage_other_uses(seeds: int = 3, n_train: int = 600, n_test: int = 30, brittle_q: int = 8) -> None:
    """Label-noise AUC and brittleness of TRAK (k = 256, M = 5) with and without ``shrinkage=0.5``, the protocol
    of ``main`` (same seeds, flips, queries and retrainings); writes
    ``results/data_attribution_shrinkage_uses.json``."""
    variants = {"TRAK": 0.0, "TRAK, shrinkage = 0.5": 0.5}
    aucs: dict[str, list[float]] = {}
    flips: dict[str, list[float]] = {}
    for seed in range(seeds):
        x, y, _, _ = digits(n_train, n_test, seed)
        flipped, noisy = flip_labels(y, seed)
        models = [train(x, noisy, 1000 * seed + m) for m in range(5)]
        for name, delta in variants.items():
            trak = xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=256,
                                    shrinkage=delta, batch_size=250).fit((x, noisy))
            aucs.setdefault(name, []).append(xk.metrics.detection_auc(trak.self_scores(), flipped))
    for seed in range(seeds):
        x, y, xq, yq = digits(n_train, n_test, seed)
        models = [train(x, y, 1000 * seed + m) for m in range(5)]
        with torch.no_grad():
            pred = models[0](xq).argmax(1)
        q = torch.arange(brittle_q)

        def retrain(indices: torch.Tensor, s: int, seed: int = seed) -> nn.Module:
            return train(x[indices], y[indices], 1000 * seed)

        for name, delta in variants.items():
            scores = xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=256,
                                      shrinkage=delta, batch_size=250).fit((x, y)).scores(xq[q], pred[q])
            for kk in (10, 50):
                value = xk.metrics.Brittleness(k=kk, seed=seed)(retrain, xq[q], pred[q], scores)
                flips.setdefault(f"{name}, k={kk}", []).append(float(value.mean()))
    out = {"label_noise_auc": {n: {"mean": sum(v) / len(v), "se": se(v), "per_seed": v} for n, v in aucs.items()},
           "brittleness": {n: {"mean": sum(v) / len(v), "se": se(v), "per_seed": v} for n, v in flips.items()}}
    (Path(__file__).parent / "results" / "data_attribution_shrinkage_uses.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def brittleness(seeds: int = 3, queries: int = 50, n_train: int = 600) -> None:
    """Brittleness with enough queries to tell TRAK from TracIn (``--brittleness``): per seed the first
    ``queries`` of the seed's random test draw (the benchmark's queries, extended), labelled with the first
    model's prediction; remove each query's top-k proponents (k = 10, 50) by TRAK (k = 256, M = 5, without and
    with ``shrinkage=0.5``), TracIn (the same 5 models, k = 256) or random scores, retrain with the *first
    model's seed* (only the data changes; on the full data that retraining is the first model itself), and count
    a flip when the retrained prediction differs from the first model's prediction on the full data. Writes
    ``results/data_attribution_brittleness.json`` with the per-query flips (for paired differences)."""
    out: dict = {"setting": dict(seeds=seeds, queries=queries, train=n_train, projection=256, models=5,
                                 threads=torch.get_num_threads()), "load_before": list(os.getloadavg())}
    per_query: dict[str, list[list[float]]] = {}
    began, cpu = time.perf_counter(), time.process_time()
    for seed in range(seeds):
        x, y, xq, yq = digits(n_train, queries, seed)
        models = [train(x, y, 1000 * seed + m) for m in range(5)]
        states = [m.state_dict() for m in models]
        again = train(x, y, 1000 * seed)  # retraining on all the data with that seed is the first model
        with torch.no_grad():
            pred = models[0](xq).argmax(1)
            assert torch.equal(again(xq).argmax(1), pred), "the retraining is not deterministic"
        scores = {name: xk.examples.TRAK(models[0], checkpoints=states, projection=256, shrinkage=delta,
                                         batch_size=250).fit((x, y)).scores(xq, pred)
                  for name, delta in (("TRAK", 0.0), ("TRAK, shrinkage = 0.5", 0.5))}
        scores["TracIn"] = xk.examples.TracIn(models[0], checkpoints=states, layer="all", projection=256,
                                              batch_size=250).fit((x, y)).scores(xq, pred)
        scores["random"] = torch.rand(queries, n_train, generator=torch.Generator().manual_seed(seed))

        def retrain(indices: torch.Tensor, s: int, seed: int = seed) -> nn.Module:
            return train(x[indices], y[indices], 1000 * seed)  # the first model's seed: only the data changes

        for kk in (10, 50):
            for name, s in scores.items():
                value = xk.metrics.Brittleness(k=kk, seed=seed)(retrain, xq, pred, s)
                per_query.setdefault(f"{name}, k={kk}", []).append([float(v) for v in value])
        out.setdefault("accuracy_model0", []).append(float((pred == yq).float().mean()))
        print(f"seed {seed} ({time.perf_counter() - began:.0f} s): " + ", ".join(
            f"{n} {sum(v[-1]) / queries:.3f}" for n, v in per_query.items()), flush=True)
    rows = {}
    for name, flips in per_query.items():
        means = [sum(f) / len(f) for f in flips]
        rows[name] = {"mean": sum(means) / len(means), "se_over_seeds": se(means), "per_seed": means}
    paired = {}
    for kk in (10, 50):
        for a, b in (("TRAK", "TracIn"), ("TRAK, shrinkage = 0.5", "TracIn"), ("TRAK, shrinkage = 0.5", "TRAK"),
                     ("TracIn", "random"), ("TRAK", "random")):
            fa = [v for f in per_query[f"{a}, k={kk}"] for v in f]
            fb = [v for f in per_query[f"{b}, k={kk}"] for v in f]
            d = [u - v for u, v in zip(fa, fb)]
            paired[f"{a} - {b}, k={kk}"] = {"mean": sum(d) / len(d), "se_over_queries": se(d), "n": len(d),
                                             "only_first": sum(u > v for u, v in zip(fa, fb)),
                                             "only_second": sum(v > u for u, v in zip(fa, fb))}
    out.update(brittleness=rows, paired=paired, per_query=per_query, wall_s=time.perf_counter() - began,
               cpu_s=time.process_time() - cpu, load_after=list(os.getloadavg()))
    (Path(__file__).parent / "results" / "data_attribution_brittleness.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("brittleness", "paired", "wall_s", "cpu_s")}, indent=1))


def lds_repeats(repeats: int = 3, seeds: int = 3, subsets: int = 50) -> None:
    """LDS on digits against the mean of ``repeats`` retrainings per subset (``--lds-repeats R``), with the
    ceiling (Spearman of two independent means of ``repeats``) and a column against the mean of all ``2R``:
    TRAK (k = 64, 256; with and without ``shrinkage=0.5``) and TracIn (k = 256) on the benchmark's seeds, models
    and subsets. Writes ``results/data_attribution_lds_r<R>.json``."""
    rows: dict[str, list[float]] = {}
    began = time.perf_counter()
    for seed in range(seeds):
        x, y, xq, yq, models = ensemble(seed)
        states = [m.state_dict() for m in models]
        methods = trak_shrinkage_scores(models, states, x, y, xq, yq)
        methods["TracIn, k = 256, M = 5"] = xk.examples.TracIn(
            models[0], checkpoints=states, layer="all", projection=256, batch_size=250).fit((x, y)).scores(xq, yq)
        first = xk.metrics.LinearDatamodelingScore(subsets=subsets, fraction=0.5, repeats=repeats, seed=seed)
        first(lambda i, s: train(x[i], y[i], s), xq, yq, next(iter(methods.values())))
        second = xk.metrics.LinearDatamodelingScore(subsets=subsets, fraction=0.5, repeats=repeats, seed=seed)
        second(lambda i, s: train(x[i], y[i], s + 7919), xq, yq, next(iter(methods.values())))
        masks = first.last["masks"].double()
        assert torch.equal(first.last["masks"], second.last["masks"])
        both = (first.last["actual"] + second.last["actual"]) / 2
        for name, scores in methods.items():
            pred = scores.double() @ masks.T
            rows.setdefault(name, []).append(float(spearman(pred, first.last["actual"]).nanmean()))
            rows.setdefault(f"{name} [against the mean of {2 * repeats}]", []).append(
                float(spearman(pred, both).nanmean()))
        rows.setdefault(f"ceiling: two means of {repeats}", []).append(
            float(spearman(first.last["actual"], second.last["actual"]).nanmean()))
        print(f"seed {seed} ({time.perf_counter() - began:.0f} s): "
              + ", ".join(f"{n} {v[-1]:.3f}" for n, v in rows.items()), flush=True)
    out = {"setting": dict(repeats=repeats, seeds=seeds, subsets=subsets, train=600, test=30, models=5),
           "lds": {n: {"mean": sum(v) / len(v), "se": se(v), "per_seed": v} for n, v in rows.items()},
           "wall_s": time.perf_counter() - began, "load_after": list(os.getloadavg())}
    (Path(__file__).parent / "results" / f"data_attribution_lds_r{repeats}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out["lds"], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a small run to check the script")
    parser.add_argument("--reference", action="store_true", help="also run traker and dattri (benchmark venv)")
    parser.add_argument("--timing", action="store_true", help="only: TRAK vs traker time, interleaved repeats")
    parser.add_argument("--precision", action="store_true",
                        help="only: LDS of TRAK with its kernel in float64 vs float32 and traker (seed 0)")
    parser.add_argument("--shrinkage", action="store_true", help="only: LDS of TRAK with and without shrinkage")
    parser.add_argument("--memory", action="store_true", help="only: peak memory of TRAK vs traker")
    parser.add_argument("--brittleness", type=int, metavar="QUERIES",
                        help="only: brittleness of TRAK, TracIn, random on QUERIES queries per seed (3 seeds)")
    parser.add_argument("--memory-child", choices=["ours", "traker"], help=argparse.SUPPRESS)
    parser.add_argument("--lds-repeats", type=int, metavar="R",
                        help="only: LDS of TRAK and TracIn against the mean of R retrainings per subset, the ceiling")
    args = parser.parse_args()
    if args.lds_repeats:
        return lds_repeats(args.lds_repeats)
    if args.memory_child:
        return memory_child(args.memory_child)
    if args.memory:
        return memory()
    if args.brittleness:
        return brittleness(queries=args.brittleness)
    if args.shrinkage:
        shrinkage_rows()
        return shrinkage_other_uses()
    if args.timing:
        return timing()
    if args.precision:
        return precision()
    n_train, n_test = (300, 10) if args.quick else (600, 30)
    subsets, seeds = (10, 2) if args.quick else (50, 3)
    models_m, k, small_k = (2, 128, 32) if args.quick else (5, 256, 64)
    brittle_q = 4 if args.quick else 8
    out: dict = {"setting": dict(train=n_train, test=n_test, subsets=subsets, fraction=0.5, seeds=seeds,
                                 models=models_m, projection=k, small_projection=small_k,
                                 brittleness_queries=brittle_q, mlp="64-64(relu)-10", steps=150,
                                 threads=torch.get_num_threads())}
    lds_rows: dict[str, list[float]] = {}
    times: dict[str, list[float]] = {}
    for seed in range(seeds):
        x, y, xq, yq = digits(n_train, n_test, seed)
        models = [train(x, y, 1000 * seed + m) for m in range(models_m)]
        methods = {}
        t = time.perf_counter()
        trak = xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=k,
                                batch_size=250).fit((x, y))
        methods["TRAK"] = trak.scores(xq, yq)
        times.setdefault("TRAK", []).append(time.perf_counter() - t)
        for projection_seed in (1, 2):  # the spread that the random projection alone causes
            methods[f"TRAK (projection seed {projection_seed})"] = xk.examples.TRAK(
                models[0], checkpoints=[m.state_dict() for m in models], projection=k, seed=projection_seed,
                batch_size=250).fit((x, y)).scores(xq, yq)
        t = time.perf_counter()
        small = xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=small_k,
                                 batch_size=250).fit((x, y))
        methods[f"TRAK (k={small_k})"] = small.scores(xq, yq)
        times.setdefault(f"TRAK (k={small_k})", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        tracin = xk.examples.TracIn(models[0], checkpoints=[m.state_dict() for m in models], layer="all",
                                    projection=k, batch_size=250).fit((x, y))
        methods["TracIn"] = tracin.scores(xq, yq)
        times.setdefault("TracIn", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        influence = xk.examples.InfluenceFunctions(models[0], layer="last", hessian="lissa", damping=0.01,
                                                   scale=10.0, depth=100, hessian_batch_size=250).fit((x, y))
        methods["Influence (LiSSA, last layer)"] = influence.scores(xq, yq)
        times.setdefault("Influence (LiSSA, last layer)", []).append(time.perf_counter() - t)
        if args.reference:
            t = time.perf_counter()
            methods["traker (reference)"] = traker_scores(models, x, y, xq, yq, k)
            times.setdefault("traker (reference)", []).append(time.perf_counter() - t)
            t = time.perf_counter()
            methods["dattri (reference)"] = dattri_scores(models, x, y, xq, yq, k)
            times.setdefault("dattri (reference)", []).append(time.perf_counter() - t)
            methods[f"traker (reference, k={small_k})"] = traker_scores(models, x, y, xq, yq, small_k)
            methods[f"dattri (reference, k={small_k})"] = dattri_scores(models, x, y, xq, yq, small_k)

        def retrain(indices: torch.Tensor, s: int) -> nn.Module:
            return train(x[indices], y[indices], s)

        lds = xk.metrics.LinearDatamodelingScore(subsets=subsets, fraction=0.5, seed=seed)
        first = True
        for name, scores in methods.items():
            if first:
                value = lds(retrain, xq, yq, scores)
                actual = lds.last["actual"]
                first = False
            else:  # the same subsets and retrained outputs: only the prediction changes
                value = spearman(scores.double().cpu() @ lds.last["masks"].double().T, actual)
            lds_rows.setdefault(name, []).append(float(value.nanmean()))
        print(f"seed {seed}: " + ", ".join(f"{n} {v[-1]:.3f}" for n, v in lds_rows.items()), flush=True)
    out["lds"] = {n: {"mean": sum(v) / len(v), "se": se(v), "per_seed": v} for n, v in lds_rows.items()}
    out["time_s"] = {n: {"mean": sum(v) / len(v), "per_seed": v} for n, v in times.items()}

    # ---- label noise: 10 % flipped ---------------------------------------------------------------------------
    aucs: dict[str, list[float]] = {}
    for seed in range(seeds):
        x, y, _, _ = digits(n_train, n_test, seed)
        flipped, noisy = flip_labels(y, seed)
        models = [train(x, noisy, 1000 * seed + m) for m in range(models_m)]
        trak = xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=k,
                                batch_size=250).fit((x, noisy))
        tracin = xk.examples.TracIn(models[0], checkpoints=[m.state_dict() for m in models], layer="all",
                                    projection=k, batch_size=250).fit((x, noisy))
        with torch.no_grad():
            loss = torch.stack([F.cross_entropy(m(x), noisy, reduction="none") for m in models]).mean(0)
        for name, s in (("TRAK self-influence", trak.self_scores()), ("TracIn self-influence", tracin.self_scores()),
                        ("training loss", loss)):
            aucs.setdefault(name, []).append(xk.metrics.detection_auc(s, flipped))
    out["label_noise_auc"] = {n: {"mean": sum(v) / len(v), "se": se(v), "per_seed": v} for n, v in aucs.items()}
    print("label noise AUC:", {n: round(v["mean"], 3) for n, v in out["label_noise_auc"].items()}, flush=True)

    # ---- brittleness -----------------------------------------------------------------------------------------
    flips: dict[str, list[float]] = {}
    for seed in range(seeds):
        x, y, xq, yq = digits(n_train, n_test, seed)
        models = [train(x, y, 1000 * seed + m) for m in range(models_m)]
        with torch.no_grad():
            pred = models[0](xq).argmax(1)
        q = torch.arange(brittle_q)
        trak = xk.examples.TRAK(models[0], checkpoints=[m.state_dict() for m in models], projection=k,
                                batch_size=250).fit((x, y))
        tracin = xk.examples.TracIn(models[0], checkpoints=[m.state_dict() for m in models], layer="all",
                                    projection=k, batch_size=250).fit((x, y))
        scores = {"TRAK": trak.scores(xq[q], pred[q]), "TracIn": tracin.scores(xq[q], pred[q]),
                  "random": torch.rand(brittle_q, n_train, generator=torch.Generator().manual_seed(seed))}

        def retrain(indices: torch.Tensor, s: int, seed: int = seed) -> nn.Module:
            return train(x[indices], y[indices], 1000 * seed)  # the first model's seed: only the data changes

        for kk in (10, 50):
            for name, s in scores.items():
                value = xk.metrics.Brittleness(k=kk, seed=seed)(retrain, xq[q], pred[q], s)
                flips.setdefault(f"{name}, k={kk}", []).append(float(value.mean()))
    out["brittleness"] = {n: {"mean": sum(v) / len(v), "se": se(v), "per_seed": v} for n, v in flips.items()}
    print("brittleness:", {n: round(v["mean"], 3) for n, v in out["brittleness"].items()}, flush=True)
    name = "data_attribution_quick.json" if args.quick else "data_attribution.json"
    path = Path(__file__).parent / "results" / name
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("lds", "time_s")}, indent=1))


if __name__ == "__main__":
    main()
