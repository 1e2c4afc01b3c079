"""Improving models with explanations (xaikit.improve), on data with a known answer, over several seeds.

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_improve.py --part decoy|watermark|guided|pruning
[--seeds 5] [--out benchmarks/results/improve_<part>.json]`` and then ``--part report`` to write the Markdown
tables of ``benchmarks/results/improve.md`` from the JSON files.

- ``decoy``: decoy digits (xaikit.zoo.make_decoy_digits), a 144-64-10 MLP, 30 epochs: test accuracy of plain
  training, right-for-the-right-reasons (input-gradient penalty, Ross et al. 2017) and the relevance penalty
  (LRP ``epsilon_plus`` of the true class inside the masks); a model trained without decoys as the ceiling.
- ``watermark``: watermarked shapes (80 % of class 0 carry it), a small CNN; reveal with SpRAy on the LRP heatmaps
  of class 0, fit the CAV at layer ``4`` from the cluster SpRAy found (not from the ground truth), revise with
  P-ClArC and A-ClArC; artifact relevance and accuracy on clean and poisoned (every image watermarked) test data.
- ``guided``: explanation-guided training (Sun et al. 2020) at the last ReLU, 8 images per class of the shapes
  set, λ ∈ {0, 0.1, 0.3}.
- ``pruning``: a small CNN on shapes; 10–50 % of the channels of its three convolutions pruned by the LRP,
  Taylor, gradient and weight criteria (64 reference images), no fine-tuning.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk
from xaikit.improve import (ExplanationGuidedLoss, Projected, RightForRightReasonsLoss, a_clarc,
                            channel_importance, fit_cav, prune_plan, pruned, spray)
from xaikit.zoo import add_watermark, make_decoy_digits, make_shapes, make_watermark_shapes, watermark_mask

RESULTS = Path(__file__).parent / "results"


def small_cnn(classes: int = 4) -> nn.Sequential:
    """conv8–ReLU–pool, conv16–ReLU–pool, conv16–ReLU, global average pool, linear (modules "0" … "10")."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, lr: float, seed: int,
          loss_fn=None, masks: torch.Tensor | None = None) -> float:
    """Adam; ``loss_fn(model, x, y[, masks])`` or cross entropy. Returns seconds."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    began = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            if loss_fn is None:
                loss = F.cross_entropy(model(x[idx]), y[idx])
            elif masks is None:
                loss = loss_fn(model, x[idx], y[idx])
            else:
                loss = loss_fn(model, x[idx], y[idx], masks[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return time.perf_counter() - began


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# -- parts ---------------------------------------------------------------------------------------------------
def decoy(seed: int) -> dict:
    train_set, test_set = make_decoy_digits(seed)
    clean_train, clean_test = make_decoy_digits(seed, decoy=False)
    out = {}
    runs = {"plain": None, "rrr_gradient": RightForRightReasonsLoss(100.0, "gradient"),
            "rrr_relevance": RightForRightReasonsLoss(1.0, "lrp:composite=epsilon_plus"), "no_decoy": None}
    for name, loss in runs.items():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(144, 64), nn.ReLU(), nn.Linear(64, 10))
        data = clean_train if name == "no_decoy" else train_set
        seconds = train(model, data.x, data.y, 30, 100, 1e-2, seed, loss, None if loss is None else data.mask)
        test = clean_test if name == "no_decoy" else test_set
        out[name] = {"test": accuracy(model, test.x, test.y), "train": accuracy(model, data.x, data.y),
                     "seconds": seconds}
    return out


def artifact_share(model: nn.Module, x: torch.Tensor) -> float:
    """Mean share of the positive LRP relevance (predicted class) that falls on the watermark."""
    relevance = xk.LRP(model, composite="epsilon_plus")(x).attribution.sum(1).clamp(min=0)
    inside = (relevance * watermark_mask(x.shape[-1])).flatten(1).sum(1)
    return float((inside / relevance.flatten(1).sum(1).clamp_min(1e-12)).mean())


def _watermark_setup(seed: int):
    """The watermarked training set, the model trained on it, the test scores, and SpRAy's suspected cluster."""
    train_set = make_watermark_shapes(512, seed=seed, fraction=0.8)
    test = make_shapes(400, seed=1000 + seed)
    poisoned = add_watermark(test.x)
    torch.manual_seed(seed)
    model = small_cnn()
    train(model, train_set.x, train_set.y, 25, 32, 3e-3, seed)

    def scores(m: nn.Module) -> dict:
        return {"clean": accuracy(m, test.x, test.y), "poisoned": accuracy(m, poisoned, test.y),
                "artifact_relevance": artifact_share(m, poisoned)}

    # reveal: SpRAy on the class-0 training heatmaps
    class0 = train_set.y == 0
    heatmaps = xk.LRP(model, composite="epsilon_plus")(train_set.x[class0], target=0).attribution
    found = spray(heatmaps, n_clusters=2, seed=seed)
    # the suspected cluster: the one whose mean heatmap puts most relevance on one 2×2 cell (a spot, not a shape)
    peak = found.mean.flatten(1).amax(1) / found.mean.flatten(1).abs().sum(1).clamp_min(1e-12)
    suspected = found.labels == int(peak.argmax())
    return train_set, model, scores, class0, heatmaps, suspected


def watermark(seed: int) -> dict:
    train_set, model, scores, class0, heatmaps, suspected = _watermark_setup(seed)
    out = {"before": scores(model)}
    flags = train_set.artifact[class0]
    precision = float(flags[suspected].float().mean()) if suspected.any() else float("nan")
    recall = float(suspected[flags].float().mean())
    out["spray"] = {"precision": precision, "recall": recall, "size": int(suspected.sum()),
                    "eigengap_k": int(spray(heatmaps, seed=seed).n_clusters)}
    x0 = train_set.x[class0]
    for source, chosen in (("spray", suspected), ("flags", flags)):  # the SpRAy cluster, or the known flags
        for method in ("pattern", "svm"):
            cav = fit_cav(model, "4", x0[chosen], x0[~chosen], classifier=method, seed=seed)
            out[f"p_clarc_{method}_{source}"] = scores(Projected(model, cav))
            tuned = a_clarc(model, cav, train_set.x, train_set.y, epochs=5, lr=1e-3, seed=seed)
            out[f"a_clarc_{method}_{source}"] = scores(tuned)
    return out


def watermark_reveal(seed: int) -> dict:
    """Reveal → revise end to end: the CAV from the SpRAy cluster against images of the other classes (which
    carry no watermark), as a user with no flags would choose clean references; the same model as ``watermark``."""
    train_set, model, scores, class0, _, suspected = _watermark_setup(seed)
    out = {}
    for method in ("pattern", "svm"):
        cav = fit_cav(model, "4", train_set.x[class0][suspected], train_set.x[~class0], classifier=method, seed=seed)
        out[f"p_clarc_{method}_others"] = scores(Projected(model, cav))
    return out


def guided(seed: int, lams: tuple[float, ...] = (0.0, 0.1, 0.3)) -> dict:
    train_set = make_shapes(32, seed=100 + seed)  # 8 images per class
    test = make_shapes(512, seed=999)
    out = {}
    for lam in lams:
        torch.manual_seed(seed)
        model = small_cnn()
        seconds = train(model, train_set.x, train_set.y, 60, 16, 3e-3, seed, ExplanationGuidedLoss("7", lam))
        out[f"lam_{lam}"] = {"test": accuracy(model, test.x, test.y), "seconds": seconds}
    return out


def trained_shapes_cnn(seed: int) -> tuple:
    """``(model, train_set, test)``: the small CNN trained 12 epochs on 1,024 shapes images (the pruning runs)."""
    train_set = make_shapes(1024, seed=seed)
    test = make_shapes(512, seed=2000 + seed)
    torch.manual_seed(seed)
    model = small_cnn()
    train(model, train_set.x, train_set.y, 12, 32, 3e-3, seed)
    return model, train_set, test


def pruning(seed: int) -> dict:
    model, train_set, test = trained_shapes_cnn(seed)
    layers = ["0", "3", "6"]
    reference = train_set[:64]
    out = {"unpruned": accuracy(model, test.x, test.y)}
    for criterion in ("lrp", "taylor", "gradient", "weight"):
        scores = channel_importance(model, layers, reference.x, reference.y, criterion)
        for fraction in (0.1, 0.2, 0.3, 0.4, 0.5):
            with pruned(model, prune_plan(scores, fraction)):
                out[f"{criterion}_{fraction}"] = accuracy(model, test.x, test.y)
    return out


PARTS = {"decoy": decoy, "watermark": watermark, "watermark_reveal": watermark_reveal, "guided": guided, "pruning": pruning,
         "guided_small": lambda seed: guided(seed, (0.0, 0.01, 0.03))}


# -- report --------------------------------------------------------------------------------------------------
def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def stats(runs: list[dict]) -> dict[str, tuple[float, float, float, int]]:
    """key -> (mean, sd, se, n) over seeds (NaN entries left out)."""
    flats = [_flatten(r) for r in runs]
    out = {}
    for key in flats[0]:
        values = torch.tensor([f[key] for f in flats if not math.isnan(f[key])], dtype=torch.float64)
        n = values.numel()
        sd = float(values.std()) if n > 1 else float("nan")
        out[key] = (float(values.mean()), sd, sd / math.sqrt(n) if n > 1 else float("nan"), n)
    return out


def fmt(s: tuple, scale: float = 100.0, digits: int = 1) -> str:
    mean, sd, se, n = s
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f} (se {se * scale:.{digits}f})"


def report(seeds: int) -> str:
    data = {p: json.loads((RESULTS / f"improve_{p}.json").read_text()) for p in PARTS
            if (RESULTS / f"improve_{p}.json").exists()}
    lines = []
    if "decoy" in data:
        s = stats(data["decoy"]["runs"])
        lines += [f"### Decoy digits ({len(data['decoy']['runs'])} seeds; accuracy %, mean ± sd (se))", "",
                  "| training | test accuracy | train accuracy | seconds |", "|---|---|---|---|"]
        for name, label in (("plain", "plain"), ("rrr_gradient", "RRR, input gradient (λ = 100)"),
                            ("rrr_relevance", "relevance penalty, LRP ε-z⁺ (λ = 1)"),
                            ("no_decoy", "no decoy in training or test (ceiling)")):
            lines.append(f"| {label} | {fmt(s[name + '.test'])} | {fmt(s[name + '.train'])} | "
                         f"{s[name + '.seconds'][0]:.1f} |")
        lines.append("")
    if "watermark" in data:
        s = stats(data["watermark"]["runs"])
        lines += [f"### Watermark artifact ({len(data['watermark']['runs'])} seeds; %, mean ± sd (se))", "",
                  "| model | clean test accuracy | poisoned test accuracy | artifact relevance (share of R⁺ on the "
                  "watermark) |", "|---|---|---|---|"]
        rows = [("before", "trained on watermarked data")]
        for source, what in (("spray", "CAV from the SpRAy cluster"), ("flags", "CAV from the known flags")):
            for kind, tag in (("p", "P-ClArC"), ("a", "A-ClArC (5 epochs)")):
                for method in ("pattern", "svm"):
                    rows.append((f"{kind}_clarc_{method}_{source}", f"{tag}, {method} {what}"))
        for name, label in rows:
            lines.append(f"| {label} | {fmt(s[name + '.clean'])} | {fmt(s[name + '.poisoned'])} | "
                         f"{fmt(s[name + '.artifact_relevance'])} |")
        if "watermark_reveal" in data:  # the same models (same seeds), the CAV against the other classes
            r = stats(data["watermark_reveal"]["runs"])
            for method in ("pattern", "svm"):
                key = f"p_clarc_{method}_others"
                lines.append(f"| P-ClArC, {method} CAV from the SpRAy cluster vs the other classes | "
                             f"{fmt(r[key + '.clean'])} | {fmt(r[key + '.poisoned'])} | "
                             f"{fmt(r[key + '.artifact_relevance'])} |")
        lines += ["", f"SpRAy (2 clusters of the class-0 heatmaps): the suspected cluster holds "
                  f"{s['spray.size'][0]:.0f} images on average; precision {fmt(s['spray.precision'])} %, recall "
                  f"{fmt(s['spray.recall'])} % of the watermarked images; the eigengap alone suggests "
                  f"k = {s['spray.eigengap_k'][0]:.1f} on average.", ""]
    for part in ("guided", "guided_small"):
        if part not in data:
            continue
        runs = data[part]["runs"]
        s = stats(runs)
        lams = [float(k[4:]) for k in runs[0]]
        lines += [f"### Explanation-guided training, 8 images per class ({len(runs)} seeds, part {part})", "",
                  "| λ | test accuracy % (mean ± sd (se)) | paired difference to λ = 0 (points) | seconds |",
                  "|---|---|---|---|"]
        for lam in lams:
            key = f"lam_{lam}"
            d = stats([{"d": r[key]["test"] - r["lam_0.0"]["test"]} for r in runs])["d"]
            lines.append(f"| {lam} | {fmt(s[key + '.test'])} | {fmt(d) if lam else '—'} | "
                         f"{s[key + '.seconds'][0]:.1f} |")
        lines.append("")
    if "pruning" in data:
        s = stats(data["pruning"]["runs"])
        lines += [f"### Pruning without fine-tuning ({len(data['pruning']['runs'])} seeds; test accuracy %, "
                  f"unpruned {fmt(s['unpruned'])})", "",
                  "| pruned channels | LRP | Taylor | gradient | weight |", "|---|---|---|---|---|"]
        for fraction in (0.1, 0.2, 0.3, 0.4, 0.5):
            cells = [fmt(s[f"{c}_{fraction}"]) for c in ("lrp", "taylor", "gradient", "weight")]
            lines.append(f"| {int(fraction * 100)} % | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=[*PARTS, "report"], required=True)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part == "report":
        print(report(args.seeds))
        return
    runs = []
    for seed in range(args.seeds):
        began = time.perf_counter()
        runs.append(PARTS[args.part](seed))
        print(f"seed {seed}: {time.perf_counter() - began:.0f} s {json.dumps(runs[-1])}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"improve_{args.part}.json").write_text(json.dumps({"part": args.part, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
