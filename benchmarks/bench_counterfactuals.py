"""Counterfactuals: xaikit.counterfactuals against DiCE (``dice-ml``, its PyTorch gradient method) on the same
torch model and rows, k = 4, timed interleaved (one row by one tool, then by the other); and image counterfactuals
on a digits CNN (flip rate over 32 samples, with the plausibility of the result).

Both are scored by xaikit's metrics on the raw feature values: validity (with the model), proximity and diversity
in MAD units of the training data, sparsity (share of features unchanged).

Run (benchmark venv; the exact install is in benchmarks/results/counterfactuals.md):
    nice -n 10 /work/venvs/i25-rules/bin/python benchmarks/bench_counterfactuals.py --rows 6
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Raw(nn.Module):
    """The DiCE model (min-max normalised inputs -> sigmoid probability) as a two-class model of raw inputs."""

    def __init__(self, net: nn.Module, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        self.net, self.low, self.span = net, low, (high - low).clamp_min(1e-12)

    def forward(self, x):
        p = self.net((x - self.low) / self.span)[:, 0].clamp(1e-7, 1 - 1e-7)
        logit = torch.log(p) - torch.log1p(-p)
        return torch.stack([torch.zeros_like(logit), logit], 1)


def tables(args, lines):
    import dice_ml
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    import xaikit as xk

    data = load_breast_cancer()
    names = [f"f{j}" for j in range(data.data.shape[1])]  # DiCE wants plain column names
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.7 * len(x))
    train, test = x[order[:cut]], x[order[cut:]]
    low, high = train.min(0).values, train.max(0).values
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    norm = (train - low) / (high - low)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.binary_cross_entropy(net(norm)[:, 0], y[order[:cut]].float()).backward()
        opt.step()
    net.eval()
    model = Raw(net, low, high).eval()
    frame = pd.DataFrame(train.numpy().astype(np.float64), columns=names)
    frame["label"] = y[order[:cut]].numpy()
    d = dice_ml.Data(dataframe=frame, continuous_features=names, outcome_name="label")
    m = dice_ml.Model(model=net, backend="PYT", func="ohe-min-max")  # the net reads min-max normalised features
    dice = dice_ml.Dice(d, m, method="gradient")
    ours = xk.counterfactuals.Counterfactuals(model, k=4, data=train.double(), feature_names=names, search="gradient",
                                              seed=0)
    metrics = {"validity": xk.metrics.Validity(), "proximity (MAD)": xk.metrics.Proximity(scale="mad", data=train),
               "sparsity": xk.metrics.CounterfactualSparsity(),
               "diversity (MAD)": xk.metrics.Diversity(scale="mad", data=train)}
    stats = {"DiCE (gradient)": [], "xaikit (gradient)": []}
    cache = json.loads(Path(args.dice_cache).read_text()) if args.dice_cache and Path(args.dice_cache).is_file() \
        else {}
    logged, sources = {}, {}
    if args.dice_log:  # lines "table i {'DiCE (gradient)': {...}, ...}" printed by an earlier run
        import ast

        for line in Path(args.dice_log).read_text(encoding="utf-8").splitlines():
            if line.startswith("table "):
                _, index, rest = line.split(" ", 2)
                logged[int(index)] = ast.literal_eval(rest)["DiCE (gradient)"]
    ratios = []
    for i in range(args.rows):
        row = test[i:i + 1]
        target = 1 - int(model(row).argmax(1))
        query = pd.DataFrame(row.numpy().astype(np.float64), columns=names)
        dice_stats = None
        if str(i) in cache:  # DiCE's answer and time from an earlier run of this script (--dice-cache)
            dice_cf, t_dice = torch.tensor(cache[str(i)]["cf"])[None].float(), cache[str(i)]["time"]
        elif i in logged:  # DiCE's scores and time logged by an earlier run on the same model and rows (--dice-log)
            dice_stats, t_dice, dice_cf = dict(logged[i]), logged[i]["time"], None
            sources[i] = "log"
        else:
            torch.manual_seed(i)
            np.random.seed(i)
            began = time.perf_counter()
            found = dice.generate_counterfactuals(query, total_CFs=4, desired_class="opposite", verbose=False)
            t_dice = time.perf_counter() - began
            example = found.cf_examples_list[0]  # DiCE's answer: its post-hoc sparse version where it made one
            cfs = example.final_cfs_df_sparse if example.final_cfs_df_sparse is not None else example.final_cfs_df
            dice_cf = torch.tensor(cfs[names].to_numpy(dtype=np.float64))[None].float()
            if args.dice_cache:
                cache[str(i)] = {"cf": dice_cf[0].tolist(), "time": t_dice}
                Path(args.dice_cache).write_text(json.dumps(cache), encoding="utf-8")
        began = time.perf_counter()
        result = ours(row.double(), target=target)
        t_ours = time.perf_counter() - began
        ratios.append(t_ours / t_dice)
        for tool, cf, seconds in (("DiCE (gradient)", dice_cf, t_dice), ("xaikit (gradient)", result, t_ours)):
            if cf is None:
                stats[tool].append(dice_stats)
                continue
            row_stats = {k: float(metric(model, row, target, cf)) for k, metric in metrics.items()}
            row_stats["time"] = seconds
            stats[tool].append(row_stats)
        print("table", i, {t: {k: round(v, 3) for k, v in s[-1].items()} for t, s in stats.items()}, flush=True)
        write(args, lines + table_lines(stats, ratios, sources))  # after every row: a long run leaves what it measured
    lines += table_lines(stats, ratios, sources)


def table_lines(stats, ratios, sources) -> list[str]:
    lines = ["## Tables: breast cancer, k = 4, against DiCE's gradient method", "",
              "Model: an MLP 30-16-1 with a sigmoid on min-max normalised features (DiCE's PyTorch interface); xaikit "
              "explains the same network as a two-class model of the raw features. DiCE: `Dice(d, m, "
              "method='gradient').generate_counterfactuals(query, total_CFs=4, desired_class='opposite')` with its "
              "defaults (proximity 0.5, diversity 1.0, min_iter 500, max_iter 5000, post-hoc sparsity; its sparse "
              "counterfactuals are scored), `dice_ml.Model(model=net, backend='PYT', func='ohe-min-max')`. xaikit: "
              "`Counterfactuals(model, k=4, search='gradient', data=train)` with its defaults (proximity 0.5, "
              "diversity 1.0, 300 steps, post-hoc sparsity).", "",
              "| tool | rows | validity | proximity (MAD, lower better) | sparsity (higher better) | "
              "diversity (MAD, higher better) | median time per row (s) | time ratio xaikit / DiCE (median) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for tool, rows in stats.items():
        med = {k: statistics.median([r[k] for r in rows if r[k] == r[k]] or [float("nan")]) for k in rows[0]}
        mean_valid = statistics.mean(r["validity"] for r in rows)
        ratio = f"{statistics.median(ratios):.2f}" if tool.startswith("xaikit") else ""
        lines.append(f"| {tool} | {len(rows)} | {mean_valid:.3f} (mean) | {med['proximity (MAD)']:.3f} | "
                     f"{med['sparsity']:.3f} | {med['diversity (MAD)']:.3f} | {med['time']:.2f} | {ratio} |")
    lines += ["", "Per row (DiCE | xaikit)" + (f"; DiCE rows {sorted(sources)} are from the log of an earlier run "
                                                "(--dice-log), not re-run" if sources else "") + ":", "",
              "| row | proximity | sparsity | diversity | time (s) |", "|---:|---|---|---|---|"]
    for i, (a, b) in enumerate(zip(*stats.values())):
        lines.append(f"| {i} | {a['proximity (MAD)']:.3f} / {b['proximity (MAD)']:.3f} | {a['sparsity']:.3f} / "
                     f"{b['sparsity']:.3f} | {a['diversity (MAD)']:.3f} / {b['diversity (MAD)']:.3f} | "
                     f"{a['time']:.1f} / {b['time']:.2f} |")
    return lines + [""]


def write(args, lines) -> None:
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


def images(args, lines):
    from sklearn.datasets import load_digits

    import xaikit as xk

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 10))
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    decoder = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
    ae = nn.Sequential(encoder, decoder)
    for net, loss_of in ((cnn, lambda out, xb, yb: nn.functional.cross_entropy(out, yb)),
                         (ae, lambda out, xb, yb: (out - xb).pow(2).mean())):
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for epoch in range(40):
            for start in range(0, 1500, 100):
                xb, yb = x[start:start + 100], y[start:start + 100]
                opt.zero_grad()
                loss_of(net(xb), xb, yb).backward()
                opt.step()
        net.eval()
    accuracy = float((cnn(x[1500:]).argmax(1) == y[1500:]).float().mean())
    samples = x[1500:1532]
    target = (cnn(samples).argmax(1) + 1) % 10
    train = x[:1500].reshape(1500, -1)
    ae_error = xk.metrics.Plausibility(autoencoder=ae)
    knn = xk.metrics.Plausibility(data=train, scale="l1")  # mean |Δ| per pixel to the nearest training digit
    base_ae = float(ae_error(cnn, samples, target, samples).mean())
    base_knn = float(knn(cnn, samples, target, samples).mean())  # the originals are not among the 1,500
    rows = []
    searches = (("input space", {}), ("input space + autoencoder term (γ = 1)",
                                      {"plausibility": ae, "plausibility_weight": 1.0}),
                ("latent space (encoder/decoder, 8-d codes)", {"encoder": encoder, "decoder": decoder,
                                                                "learning_rate": 0.1}))
    for label, settings in searches:
        began = time.process_time()
        result = xk.counterfactuals.Counterfactuals(cnn, feature_range=(0.0, 1.0), steps=300, seed=0,
                                                    **settings)(samples, target=target)
        seconds = time.process_time() - began
        flipped = float((cnn(result.counterfactuals[:, 0]).argmax(1) == target).float().mean())
        prox = xk.metrics.Proximity()(cnn, samples, target, result)
        rows.append(f"| {label} | {flipped:.3f} | {float(ae_error(cnn, samples, target, result).nanmean()):.3f} | "
                    f"{float(knn(cnn, samples, target, result).nanmean()):.4f} | {float(prox.nanmean()):.4f} | "
                    f"{seconds:.2f} |")
        print("images", rows[-1], flush=True)
    lines += ["## Images: digits CNN, 32 samples, target = next class", "",
              f"A CNN (2 convolutions, test accuracy {accuracy:.3f}) and a 64-32-8-32-64 autoencoder trained here on "
              "scikit-learn's 8×8 digits (the first 1,500, seed 0); the 32 explained samples are the next ones. "
              "Plausibility, lower is closer to the digits: the autoencoder's reconstruction error ‖c − AE(c)‖² "
              "(the latent search's candidates are the decoder's outputs, so this score favours them by "
              "construction) and the k-NN distance: mean |Δ| per pixel to the nearest of the 1,500 training digits "
              "(independent of the autoencoder). Time: CPU seconds (`time.process_time`), one thread.", "",
              "| search | flip rate | plausibility: AE error | plausibility: 1-NN distance | proximity (mean abs Δ "
              "per pixel) | CPU time for 32 (s) |", "|---|---:|---:|---:|---:|---:|", *rows,
              f"| (the 32 originals) | | {base_ae:.3f} | {base_knn:.4f} | | |", ""]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "counterfactuals.md"))
    parser.add_argument("--parts", default="images,tables", help="comma-separated: images, tables")
    parser.add_argument("--dice-log", default="", help="a log of an earlier run: DiCE's per-row scores and times "
                        "are read from its 'table i {...}' lines for the rows it holds (DiCE is not re-run for them)")
    parser.add_argument("--dice-cache", default="", help="a JSON file: DiCE's counterfactuals and times per row are "
                        "read from it where present, else computed and written to it")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["# Counterfactuals: xaikit against DiCE", "",
             f"`{' '.join(sys.argv)}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU, "
             "torch.set_num_threads(1). The machine was shared with other jobs (load average above 4): the times "
             "are ratios measured row by row, interleaved, not absolute speeds.", "",
             "Install: `python3 -m venv /work/venvs/i25-rules && /work/venvs/i25-rules/bin/pip install "
             "torch==2.13.0 && /work/venvs/i25-rules/bin/pip install -e . scikit-learn dice-ml` (dice-ml 0.12).", ""]
    parts = args.parts.split(",")
    if "images" in parts:
        images(args, lines)
        write(args, lines)
    if "tables" in parts:
        tables(args, lines)
        write(args, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
