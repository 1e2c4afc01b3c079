"""Pruning by explaining (Yeom et al., Pattern Recognition 2021) in the paper's own settings, without fine-tuning.

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_pruning.py --part toy|cnn [--seeds 5]``
(writes ``benchmarks/results/pruning_<part>.json``), then ``--part report`` prints the Markdown tables of
``benchmarks/results/pruning.md``.

- ``toy``: the paper's 2-D toy problems (``moon``, ``circle``: scikit-learn's generators with noise 0.1, circle
  factor 0.3; ``mult``: four spiral arms, as the authors' toy code describes them), 600 training and 1,000 test
  points drawn afresh per seed, an MLP 2–H–H–H–classes with ReLU and dropout after the first layer (the paper's
  architecture with H = 128 instead of 1,000 to fit the shared machine), Adam full batch. The criteria are
  computed on ``n`` reference samples per class (n = 1 and 10) drawn from the training data; each layer's
  scores are normalised (:func:`xaikit.improve.layer_normalised`) and all hidden units ranked together (the
  paper's global ranking); 10–90 % of the 3·H units pruned. LRP: composite ``epsilon`` (ε-rule on dense layers).
- ``cnn``: the small CNN of ``bench_improve.py`` (conv 8–16–16, 1,024 shapes images of 4 classes), and the
  paper's transfer situation: the same network trained on 4 classes used for a 2-class sub-task (classes 0
  and 1: the model's first two logits), so that units serving the other classes are prunable. Criteria on
  n = 10 reference images per class, LRP ``epsilon_plus`` (z⁺ on convolutions, ε on the dense layer); the three
  convolutions pruned per layer (``scope="layer"``) and globally after normalisation (``scope="global"``).

Every number: test accuracy after pruning, no fine-tuning; mean ± standard error over seeds (each seed changes
data, initialisation, batch order and reference samples).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_improve import accuracy, trained_shapes_cnn  # noqa: E402

from xaikit.improve import channel_importance, layer_normalised, prune_plan, pruned, reference_samples  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CRITERIA = ("lrp", "taylor", "gradient", "weight")
RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
HIDDEN = 128
#: the LRP criterion's method on the toy MLPs (--toy-method)
TOY_METHOD = "lrp:composite=epsilon"


# -- toy data (written from the paper's description and scikit-learn's generators) -----------------------------
def toy_data(name: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import make_circles, make_moons
    if name == "moon":
        x, y = make_moons(n_samples=n, noise=0.1, random_state=seed)
    elif name == "circle":
        x, y = make_circles(n_samples=n, noise=0.1, factor=0.3, random_state=seed)
    elif name == "mult":  # four spiral arms: radius 0 → 1, angle over 4 radians per arm plus noise 0.2
        g = torch.Generator().manual_seed(seed)
        per = n // 4
        r = torch.linspace(0, 1, per).repeat(4)
        arm = torch.arange(4).repeat_interleave(per)
        t = arm * 4.0 + torch.linspace(0, 4, per).repeat(4) + 0.2 * torch.randn(4 * per, generator=g)
        return torch.stack([r * torch.sin(t), r * torch.cos(t)], 1).float(), arm
    else:
        raise ValueError(name)
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)


def toy_mlp(classes: int) -> nn.Sequential:
    """2–H–H–H–classes; hidden linear layers "0", "3", "5" (their outputs are the prunable units)."""
    return nn.Sequential(nn.Linear(2, HIDDEN), nn.ReLU(), nn.Dropout(0.5), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, classes))


def fit_full_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def sweep(model: nn.Module, layers: list[str], ref_x: torch.Tensor, ref_y: torch.Tensor, test_x: torch.Tensor,
          test_y: torch.Tensor, scope: str, method: str | None) -> dict:
    out = {}
    for criterion in CRITERIA:
        scores = channel_importance(model, layers, ref_x, ref_y, criterion,
                                    method=method if criterion == "lrp" else None)
        if scope == "global":
            scores = layer_normalised(scores, criterion)
        for rate in RATES:
            with pruned(model, prune_plan(scores, rate, scope=scope)):
                out[f"{criterion}_{rate}"] = accuracy(model, test_x, test_y)
    return out


def toy(seed: int) -> dict:
    out = {}
    for name in ("moon", "circle", "mult"):
        x, y = toy_data(name, 600, seed)
        tx, ty = toy_data(name, 1000, 1000 + seed)
        classes = int(y.max()) + 1
        torch.manual_seed(seed)
        model = toy_mlp(classes)
        fit_full_batch(model, x, y, 400, 3e-3)
        res = {"unpruned": accuracy(model, tx, ty), "train": accuracy(model, x, y)}
        for per_class in (1, 10):
            idx = reference_samples(y, per_class, seed)
            res[f"n{per_class}"] = sweep(model, ["0", "3", "5"], x[idx], y[idx], tx, ty, "global", TOY_METHOD)
        out[name] = res
    return out


class FirstLogits(nn.Module):
    """The sub-task: the model's first ``k`` logits (a 4-class network used for 2 of its classes)."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, :self.k]


def cnn(seed: int) -> dict:
    model, train_set, test = trained_shapes_cnn(seed)
    layers = ["0", "3", "6"]
    out = {}
    sub = FirstLogits(model, 2).eval()
    keep_tr, keep_te = train_set.y < 2, test.y < 2
    tasks = {"all4": (model, layers, train_set.x, train_set.y, test.x, test.y),
             "sub2": (sub, [f"model.{n}" for n in layers], train_set.x[keep_tr], train_set.y[keep_tr],
                      test.x[keep_te], test.y[keep_te])}
    for task, (net, names, x, y, tx, ty) in tasks.items():
        idx = reference_samples(y, 10, seed)
        res = {"unpruned": accuracy(net, tx, ty)}
        for scope in ("layer", "global"):
            res[scope] = sweep(net, names, x[idx], y[idx], tx, ty, scope, None)
        out[task] = res
    return out


PARTS = {"toy": toy, "cnn": cnn}


# -- report --------------------------------------------------------------------------------------------------
def _stats(values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64) * 100
    se = float(t.std() / math.sqrt(t.numel())) if t.numel() > 1 else float("nan")
    return f"{float(t.mean()):.1f} ± {se:.1f}"


def _table(runs: list[dict], title: str, unpruned: list[float]) -> list[str]:
    best = {}
    for rate in RATES:
        means = {c: sum(r[f"{c}_{rate}"] for r in runs) / len(runs) for c in CRITERIA}
        best[rate] = max(means, key=means.get)
    lines = [f"{title} (unpruned {_stats(unpruned)})", "", "| pruned | LRP | Taylor | gradient | weight |",
             "|---|---|---|---|---|"]
    for rate in RATES:
        cells = []
        for c in CRITERIA:
            cell = _stats([r[f"{c}_{rate}"] for r in runs])
            cells.append(f"**{cell}**" if best[rate] == c else cell)
        lines.append(f"| {int(round(rate * 100))} % | " + " | ".join(cells) + " |")
    return lines + [""]


def report() -> str:
    lines = []
    path = RESULTS / "pruning_toy.json"
    if path.exists():
        runs = json.loads(path.read_text())["runs"]
        for name in ("moon", "circle", "mult"):
            for per_class in (1, 10):
                lines += _table([r[name][f"n{per_class}"] for r in runs],
                                f"### Toy `{name}`, {per_class} reference sample(s) per class, global ranking "
                                f"({len(runs)} seeds; test accuracy %, mean ± se)",
                                [r[name]["unpruned"] for r in runs])
    path = RESULTS / "pruning_cnn.json"
    if path.exists():
        runs = json.loads(path.read_text())["runs"]
        for task, what in (("all4", "its own 4-class task"), ("sub2", "a 2-class sub-task (transfer)")):
            for scope in ("layer", "global"):
                lines += _table([r[task][scope] for r in runs],
                                f"### Small CNN on {what}, 10 reference images per class, `scope=\"{scope}\"` "
                                f"({len(runs)} seeds; test accuracy %, mean ± se)",
                                [r[task]["unpruned"] for r in runs])
    return "\n".join(lines)


def main() -> None:
    global HIDDEN, TOY_METHOD
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=[*PARTS, "report"], required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--toy-method", default="lrp:composite=epsilon",
                        help="the LRP criterion's method on the toy MLPs, e.g. lrp:composite=excitation_backprop (z+)")
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="toy MLP width (the paper: 1000)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    HIDDEN = args.hidden
    TOY_METHOD = args.toy_method
    suffix = "" if args.hidden == 128 or args.part != "toy" else f"_h{args.hidden}"
    if args.part == "toy" and TOY_METHOD != "lrp:composite=epsilon":
        suffix += "_" + TOY_METHOD.rsplit("=", 1)[-1]
    if args.part == "report":
        print(report())
        return
    runs = []
    began_all = time.perf_counter()
    for seed in range(args.seeds):
        began, cpu = time.perf_counter(), time.process_time()
        runs.append(PARTS[args.part](seed))
        print(f"seed {seed}: {time.perf_counter() - began:.0f} s wall, {time.process_time() - cpu:.0f} s CPU, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"pruning_{args.part}{suffix}.json").write_text(json.dumps(
        {"part": args.part, "hidden": HIDDEN, "seconds": time.perf_counter() - began_all, "load": os.getloadavg(),
         "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
