"""Pairwise Shapley interactions (k-SII, order 2) at budgets 2^7 ... 2^12: xaikit against shapiq.

Games: the wine MLP (13 features, class probability, exact values from all 2^13 coalitions) and the breast-cancer
block-additive MLPs (30 features, log-odds; exact values block by block: every index here is linear in the game
and gives a set the same share of a Möbius coefficient whatever the number of players, so the index of the sum
of the blocks is the sum of the blocks' indices on their 8 features). The baseline is 0 (the data mean of the
standardised features), as in ``bench_shapley.py``.

Two more games, on the features of images and text (fourth session): the bundled shapes CNN on 15 SLIC superpixels
of its 32 × 32 images (``"slic:48"`` segments 8 of 64 images into exactly 15; class probability) and the MiniLM
keyword probe on the 13 word pieces of its test sentences ([CLS] and [SEP] kept; absent pieces become [MASK]; class
probability). For both, every coalition is evaluated once (2^15 and 2^13 forward passes per input), the exact index
is computed from those values, and every estimator (xaikit's and shapiq's) reads its coalitions' values from that
table: the same game, at no model cost, so their times are the estimators' own overhead (see ``lookup``).

Error: ‖Î₂ − I₂‖ / ‖I₂‖ over the pairs of one row (median over rows × seeds). Time: seconds per row
(xaikit explains the rows in one batched call and its time is divided by the rows; shapiq explains one row per call).
Both evaluate the same torch model.

Run (benchmark venv with shapiq; see benchmarks/results/interactions.md):
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_interactions.py --rows 10 --seeds 2
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from xaikit.interactions import ShapleyInteractions
from xaikit.interactions.estimators import min_budget
from xaikit.interactions.indices import exact, interaction_sets
from xaikit.methods.machinery.kernel_design import coalitions
from xaikit.zoo import train_cancer_blocks, train_wine_mlp

BUDGETS = tuple(2**k for k in range(7, 13))
SHAPIQ = ("KernelSHAPIQ", "InconsistentKernelSHAPIQ", "SVARMIQ", "PermutationSamplingSII")
PEERS = list(SHAPIQ)
#: xaikit's columns to run (``--ours``; empty: all)
OURS: list = []
#: shapiq's estimates by (game, approximator, budget, seed, rows), kept between runs (``--cache``)
CACHE: dict = {"path": None, "data": {}}
#: shapiq approximators timed in this process (the others' times, read from the cache, are left out of equal time)
TIMED: set = set()


def pair_error(estimate: np.ndarray, truth: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Relative error of the order-2 entries, per row."""
    e, t = estimate[:, pairs], truth[:, pairs]
    return np.linalg.norm(e - t, axis=1) / np.linalg.norm(t, axis=1)


def lookup(values: torch.Tensor, d: int):
    """A table model: input row i is ``i + 1`` where a player is present and its baseline ``-(i + 1)`` where it
    is absent; the output ``(M, 2)`` is ``values[i, z]`` (the explained class's probability, target 0) and ``1 -
    values[i, z]`` (all other classes): a probability vector, as the table's softmax model gives. Returns the
    model, the inputs and their baselines."""
    powers = 1 << torch.arange(d)

    def fn(t: torch.Tensor) -> torch.Tensor:
        row = t[:, 0].abs().round().long() - 1
        p = values[row, ((t > 0).long() * powers).sum(1)]
        return torch.stack([p, 1 - p], 1)

    x = torch.arange(1, values.shape[0] + 1, dtype=torch.float64)[:, None].expand(-1, d).contiguous()
    return fn, x, -x


def table_of(game, rows: int, make):
    """The values ``(rows, 2^d)`` of every coalition (from the cache file next to ``--cache`` when there)."""
    path = f"{CACHE['path']}.{game}.{rows}.pt" if CACHE["path"] else None
    if path and os.path.exists(path):
        return torch.load(path)
    values = make()
    if path:
        torch.save(values, path)
    return values


def shapes(rows: int, d: int = 15):
    """The shapes CNN's predicted-class probability on ``d`` SLIC superpixels (the first images segmented into
    exactly d), absent superpixels at 0 (grey)."""
    from xaikit.methods.machinery.features import resolve_features
    from xaikit.zoo import load_shapes_model
    from xaikit.zoo.groundtruth import make_shapes

    def make():
        model = load_shapes_model()
        images = make_shapes(n=64, seed=1).x
        features = resolve_features("slic:48", images)
        chosen = (features.count == d).nonzero().flatten()[:rows]
        assert len(chosen) == rows, f"only {len(chosen)} images with {d} superpixels"
        z = coalitions(torch.arange(2**d), d)
        out = torch.zeros(rows, 2**d, dtype=torch.float64)
        with torch.no_grad():
            for r, i in enumerate(chosen.tolist()):
                mask = features.mask[i, 0]  # (H, W) superpixel ids
                target = int(model(images[i:i + 1]).argmax())
                for start in range(0, 2**d, 4096):
                    present = z[start:start + 4096][:, mask][:, None].float()  # (M, 1, H, W)
                    out[r, start:start + 4096] = torch.softmax(model(images[i] * present), -1)[:, target].double()
        return out

    values = table_of("shapes", rows, make)
    fn, x, base = lookup(values, d)
    return ("shapes CNN (15 SLIC superpixels of 32 × 32 images, class probability)", fn, x,
            torch.zeros(rows, dtype=torch.long), exact(values, "k-SII", 2).numpy(), True, base)


def minilm(rows: int, d: int = 13):
    """The MiniLM keyword probe's predicted-class probability on the d word pieces of test sentences of d + 2
    tokens; absent pieces replaced by [MASK], [CLS] and [SEP] kept."""
    from xaikit.zoo.text import keyword_task

    def make():
        task = keyword_task(length=(11, 12))
        length = task.attention_mask.sum(1)
        chosen = (length == d + 2).nonzero().flatten()[:rows]
        assert len(chosen) == rows, f"only {len(chosen)} sentences of {d} word pieces"
        mask_id = task.tokenizer.mask_token_id
        z = coalitions(torch.arange(2**d), d)
        out = torch.zeros(rows, 2**d, dtype=torch.float64)
        with torch.no_grad():
            for r, i in enumerate(chosen.tolist()):
                ids = task.input_ids[i, :d + 2]
                target = int(task.model(ids[None], torch.ones_like(ids[None])).argmax())
                for start in range(0, 2**d, 512):
                    zc = z[start:start + 512]
                    batch = ids.repeat(zc.shape[0], 1)
                    batch[:, 1:d + 1] = torch.where(zc, ids[1:d + 1], torch.full_like(ids[1:d + 1], mask_id))
                    logits = task.model(batch, torch.ones_like(batch))
                    out[r, start:start + 512] = torch.softmax(logits, -1)[:, target].double()
        return out

    values = table_of("minilm", rows, make)
    fn, x, base = lookup(values, d)
    return ("MiniLM keyword probe (13 word pieces, class probability)", fn, x, torch.zeros(rows, dtype=torch.long),
            exact(values, "k-SII", 2).numpy(), True, base)


def wine(rows: int):
    model, x_all, _ = train_wine_mlp()
    x = x_all[torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))[:rows]]
    fn = lambda t: torch.softmax(model(t), -1)  # noqa: E731
    target = fn(x).argmax(1)
    # every coalition (the default budget, 2048, would estimate at d = 13)
    truth = ShapleyInteractions(fn, index="k-SII", order=2, budget=2**13 - 2)(x, target=target)
    assert truth.info["exact"]
    truth = truth.values.numpy()
    return "wine (13 features, MLP, class probability)", fn, x, target, truth, True, torch.zeros_like(x)


def cancer(rows: int):
    blocks, x_all, _ = train_cancer_blocks()
    x = x_all[torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))[:rows]]
    d = x.shape[1]
    sets = interaction_sets(d, 2)
    where = {s: i for i, s in enumerate(sets)}
    truth = np.zeros((rows, len(sets)))
    z = coalitions(torch.arange(2**8), 8)
    local = interaction_sets(8, 2)
    with torch.no_grad():
        for net, index in zip(blocks.nets, blocks.blocks):
            v = torch.stack([net(torch.where(z, x[i, index], torch.zeros(()))).double()[:, 0] for i in range(rows)])
            part = exact(v, "k-SII", 2).numpy()
            for k, s in enumerate(local):
                truth[:, where[tuple(sorted(int(index[j]) for j in s))]] += part[:, k]
    return ("breast cancer (30 features, block-additive MLPs, log-odds)", blocks, x,
            torch.zeros(rows, dtype=torch.long), truth, False, torch.zeros_like(x))


def ours(fn, x, base, target, budget, seed, estimator=None, link=None):
    """xaikit's estimate and seconds per row; ``None``: the default estimator or link."""
    chosen = {k: v for k, v in (("estimator", estimator), ("link", link)) if v is not None}
    began = time.perf_counter()
    result = ShapleyInteractions(fn, index="k-SII", order=2, budget=budget, baseline=base, seed=seed,
                                 batch_size=4096, **chosen)(x, target=target)
    return result.values.numpy(), (time.perf_counter() - began) / x.shape[0]


def peer(name, fn, x, base, target, budget, seed, sets):
    import shapiq

    d = x.shape[1]
    out = np.zeros((x.shape[0], len(sets)))
    began = time.perf_counter()
    for i in range(x.shape[0]):
        def game(z, i=i):
            zt = torch.as_tensor(np.atleast_2d(z), dtype=torch.bool)
            with torch.no_grad():
                return fn(torch.where(zt, x[i], base[i]))[:, int(target[i])].double().numpy()

        approximator = getattr(shapiq, name)(n=d, max_order=2, index="k-SII", random_state=seed)
        values = approximator.approximate(budget=budget, game=game)
        out[i] = [values[s] for s in sets]
    return out, (time.perf_counter() - began) / x.shape[0]


def cached_peer(game, method, fn, x, base, target, budget, seed, sets):
    """:func:`peer`, read from / written to the cache file when one is given."""
    key = f"{game}|{method}|{budget}|{seed}|{x.shape[0]}"
    if key not in CACHE["data"]:
        TIMED.add(method)
        est, spent = peer(method, fn, x, base, target, budget, seed, sets)
        CACHE["data"][key] = {"estimate": est.tolist(), "time": spent}
        if CACHE["path"]:
            with open(CACHE["path"], "w") as handle:
                json.dump(CACHE["data"], handle)
    hit = CACHE["data"][key]
    return np.array(hit["estimate"]), hit["time"]


def run(rows: int, seeds: int, peers: bool, data: str = "both") -> None:
    games = {"wine": [wine], "cancer": [cancer], "both": [wine, cancer], "shapes": [shapes],
             "minilm": [minilm]}[data]
    for name, fn, x, target, truth, probability, base in (make(rows) for make in games):
        d = x.shape[1]
        sets = interaction_sets(d, 2)
        pairs = np.array([len(s) == 2 for s in sets])
        ours_ = (["xaikit default", "xaikit regression", "xaikit kernel", "xaikit sparse"]
                 + (["xaikit logit", "xaikit sparse logit"] if probability else []) + ["xaikit sampling"])
        ours_ = [m for m in ours_ if m in OURS or m == "xaikit sampling"] if OURS else ours_
        methods = ours_ + [m for m in SHAPIQ if peers and m in PEERS]
        print(f"\n### {name}\n")
        print("median error of the pairs (seconds per row)\n")
        print("| budget | " + " | ".join(methods) + " |")
        print("|" + "---|" * (len(methods) + 1))
        table = {}
        for budget in BUDGETS:
            cells = []
            for method in methods:
                if budget >= 2**d - 2:
                    continue
                if method.startswith("xaikit") and budget < min_budget(d, 2):
                    cells.append(f"refused (< {min_budget(d, 2)})")
                    continue
                errors, times = [], []
                for seed in range(seeds):
                    if method == "xaikit default":
                        est, spent = ours(fn, x, base, target, budget, seed)
                    elif method == "xaikit regression":
                        est, spent = ours(fn, x, base, target, budget, seed, "regression", "identity")
                    elif method == "xaikit logit":
                        est, spent = ours(fn, x, base, target, budget, seed, "regression", "logit")
                    elif method == "xaikit sparse logit":
                        est, spent = ours(fn, x, base, target, budget, seed, "sparse", "logit")
                    elif method.startswith("xaikit"):
                        est, spent = ours(fn, x, base, target, budget, seed, method.split()[1], "identity")
                    else:
                        est, spent = cached_peer(name, method, fn, x, base, target, budget, seed, sets)
                    errors.append(pair_error(est, truth, pairs))
                    times.append(spent)
                table[method, budget] = (float(np.median(np.concatenate(errors))), float(np.median(times)))
                cells.append(f"{table[method, budget][0]:.4f} ({table[method, budget][1]:.3f})")
            if cells:
                print(f"| {budget} | " + " | ".join(cells) + " |", flush=True)
        if peers:
            for ours_method in ours_[:-1]:
                equal_time(table, ours_method)


def equal_time(table: dict, ours_method: str) -> None:
    """For each budget: the best shapiq error, xaikit's at the same budget, and xaikit's best error in no more time
    per row than the best of the shapiq approximators timed in this process (:data:`TIMED`)."""
    print(f"\n{ours_method}: at equal evaluations and at equal time\n")
    print("| budget | best shapiq | xaikit at the same budget | ratio | best timed shapiq (error, s/row) | "
          "xaikit within that time | ratio |")
    print("|---|---|---|---|---|---|---|")
    for budget in BUDGETS:
        peers = [table[m, budget] + (m,) for m in SHAPIQ if (m, budget) in table]
        timed_peers = [p for p in peers if p[2] in TIMED]
        if (ours_method, budget) not in table or not peers:
            continue
        best = min(peers, key=lambda t: t[0])
        same = table[ours_method, budget][0]
        cell = "not timed"
        if timed_peers:
            rival = min(timed_peers, key=lambda t: t[0])
            within = [table[ours_method, b] for b in BUDGETS
                      if (ours_method, b) in table and table[ours_method, b][1] <= rival[1]]
            timed = min(within, key=lambda t: t[0])[0] if within else float("nan")
            cell = f"{rival[0]:.4f}, {rival[1]:.3f} s ({rival[2]}) | {timed:.4f} | {timed / rival[0]:.2f}"
        print(f"| {budget} | {best[0]:.4f} ({best[2]}) | {same:.4f} | {same / best[0]:.2f} | {cell} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--no-peers", action="store_true", help="xaikit only (no shapiq)")
    parser.add_argument("--data", choices=("wine", "cancer", "both", "shapes", "minilm"), default="both")
    parser.add_argument("--peers", nargs="*", default=list(SHAPIQ), help="the shapiq approximators to run")
    parser.add_argument("--ours", nargs="*", default=[], help='xaikit\'s columns, e.g. "xaikit sparse" (default: all)')
    parser.add_argument("--cache", help="a JSON file keeping shapiq's estimates and times between runs")
    args = parser.parse_args()
    if args.cache:
        CACHE["path"] = args.cache
        if os.path.exists(args.cache):
            with open(args.cache) as handle:
                CACHE["data"] = json.load(handle)
    torch.set_num_threads(1)
    PEERS[:] = args.peers
    OURS[:] = args.ours
    run(args.rows, args.seeds, not args.no_peers, args.data)


if __name__ == "__main__":
    main()
