"""LRP of a captioning model and LRP-inference fine-tuning against hallucinated words (Sun et al., Information
Fusion 2022), on a synthetic captioning task with a co-occurrence bias.

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_captioning.py [--seeds 3]`` (writes
``benchmarks/results/captioning.json``), then ``--report`` prints the tables of ``benchmarks/results/captioning.md``.

Set-up (``xaikit.zoo.captions``): training captions with the bias "``box`` comes with ``plus``" (``cooccur``
0.97, pixel noise 0.25), test images with independent objects; :class:`~xaikit.zoo.captions.CaptionModel`
(dim 32) trained with cross entropy (teacher forcing, Adam 3e-3, 60 epochs), then fine-tuned 10 more epochs
(Adam 1e-3) either with plain cross entropy (the control: the same extra training) or with
:class:`~xaikit.improve.captioning.LRPInferenceLoss` (λ = 0.5 and 0.1). Greedy decoding on the test images.

Metrics: object-word mAP (per object word, the score of an image is the word's largest probability over the
generated steps up to ``<eos>``, the label whether the object is in the image; average precision, mean over the
six words); CHAIR-i (hallucinated object words / generated object words), CHAIR-s (captions with one or more),
the biased pair's rate (``box`` written when ``plus`` is in the image and ``box`` is not), object recall, exact
captions. LRP diagnosis (``word_relevance``, composite ``epsilon``) on the baseline's generated object words:
the text share ``(R_text − R_image) / (|R_text| + |R_image|)`` of hallucinated vs correct words, its ROC AUC
as a hallucination detector and the precision/recall of the flag ``text share > 0``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from xaikit.improve.captioning import LRPInferenceLoss, hallucinated, word_relevance
from xaikit.zoo.captions import BOS, EOS, GLYPHS, CaptionModel, make_caption_shapes

RESULTS = Path(__file__).parent / "results"
PAIR = (0, 2)  # "plus" → "box"
COOCCUR, NOISE = 0.97, 0.25


def teacher(data):
    previous = torch.cat([torch.full_like(data.captions[:, :1], BOS), data.captions[:, :-1]], 1)
    mask = torch.arange(data.captions.shape[1]) < data.lengths[:, None]
    return previous, data.captions, mask


def fit(model, data, epochs, lr, seed, loss_fn=None):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    previous, targets, mask = teacher(data)
    began = time.process_time()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=g)
        for start in range(0, len(data), 64):
            i = order[start:start + 64]
            if loss_fn is None:
                logits = model(data.images[i], previous[i])
                loss = F.cross_entropy(logits[mask[i]], targets[i][mask[i]])
            else:
                loss = loss_fn(model, data.images[i], previous[i], targets[i], mask[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return time.process_time() - began


def evaluate(model, data) -> dict:
    from sklearn.metrics import average_precision_score
    words, probs = model.generate(data.images)
    upto = ((words == EOS).cumsum(1) - (words == EOS).long()) == 0  # steps up to and including the first <eos>
    k = len(GLYPHS)
    scores = (probs[:, :, 2:2 + k] * upto[..., None]).amax(1)
    ap = [average_precision_score(data.objects[:, j].numpy(), scores[:, j].numpy()) for j in range(k)]
    obj = (words >= 2) & upto
    hall = hallucinated(words, data.objects) & upto
    said = torch.zeros_like(data.objects)
    for j in range(k):
        said[:, j] = ((words == 2 + j) & upto).any(1)
    a, b = PAIR
    biased = data.objects[:, a] & ~data.objects[:, b]
    exact = (words == data.captions).all(1)
    others = [j for j in range(k) if j != b]
    absent = ~data.objects[:, others]
    return {"other": float(said[:, others][absent].float().mean()), "map": sum(ap) / k,
            "chair_i": float(hall.sum() / obj.sum().clamp_min(1)),
            "chair_s": float(hall.any(1).float().mean()), "pair": float(said[biased, b].float().mean()),
            "recall": float((said & data.objects).sum() / data.objects.sum()), "exact": float(exact.float().mean())}


def diagnose(model, data) -> dict:
    from sklearn.metrics import roc_auc_score
    words, _ = model.generate(data.images)
    upto = ((words == EOS).cumsum(1) - (words == EOS).long()) == 0
    rel = word_relevance(model, data.images, words)
    obj = (words >= 2) & upto
    hall = hallucinated(words, data.objects)[obj]
    share = rel.text_share[obj]
    flag = share > 0
    out = {"share_hallucinated": float(share[hall].mean()) if hall.any() else float("nan"),
           "share_correct": float(share[~hall].mean()),
           "n_hallucinated": int(hall.sum()), "n_correct": int((~hall).sum()),
           "flag_precision": float(hall[flag].float().mean()) if flag.any() else float("nan"),
           "flag_recall": float(flag[hall].float().mean()) if hall.any() else float("nan")}
    out["auc"] = float(roc_auc_score(hall.numpy(), share.numpy())) if 0 < hall.sum() < hall.numel() else float("nan")
    return out


def baseline(seed: int) -> tuple:
    """The biased training set, an unbiased test set, and the captioner trained on the first (60 epochs): the
    start of both fine-tuning runs; ``(train_set, test, model, out)`` with its time and test scores in ``out``."""
    train_set = make_caption_shapes(2000, cooccur=COOCCUR, pair=PAIR, noise=NOISE, seed=seed)
    test = make_caption_shapes(1000, cooccur=None, noise=NOISE, seed=10_000 + seed)
    torch.manual_seed(seed)
    base = CaptionModel(32)
    out = {"seconds": {"base": fit(base, train_set, 60, 3e-3, seed)}}
    out["base"] = evaluate(base, test)
    return train_set, test, base, out


def run(seed: int) -> dict:
    train_set, test, base, out = baseline(seed)
    out["diagnosis"] = diagnose(base, test[:400])
    for key, loss in (("plain", None), ("ift", LRPInferenceLoss(0.5)), ("ift01", LRPInferenceLoss(0.1))):
        tuned = copy.deepcopy(base)
        out["seconds"][key] = fit(tuned, train_set, 10, 1e-3, seed + 1, loss)  # same batch order for all three
        out[key] = evaluate(tuned, test)
        if key == "ift":
            out["diagnosis_ift"] = diagnose(tuned, test[:400])
    return out


METRICS = ("map", "chair_i", "chair_s", "pair", "other", "recall", "exact")


def run_strong(seed: int) -> dict:
    """The same baseline, then a stronger fine-tuning (20 epochs, Adam 3e-3): plain CE against LRP-IFT (λ = 0.5)."""
    train_set, test, base, out = baseline(seed)
    for key, loss in (("plain", None), ("ift", LRPInferenceLoss(0.5))):
        tuned = copy.deepcopy(base)
        out["seconds"][key] = fit(tuned, train_set, 20, 3e-3, seed + 1, loss)
        out[key] = evaluate(tuned, test)
    return out


def _s(values, scale=100.0, digits=1) -> str:
    t = torch.tensor([v for v in values if not math.isnan(v)], dtype=torch.float64) * scale
    se = float(t.std() / math.sqrt(t.numel())) if t.numel() > 1 else float("nan")
    return f"{float(t.mean()):.{digits}f} ± {se:.{digits}f}"


def report() -> str:
    by_seed, loads = {}, []
    for path in sorted(RESULTS.glob("captioning*.json")):
        data = json.loads(path.read_text())
        loads.append(data["load"][0])
        for i, r in enumerate(data["runs"]):
            by_seed.setdefault(r.get("seed", i), r)  # the first run of a seed (runs without "seed" count from 0)
    runs = [by_seed[s] for s in sorted(by_seed)]
    n = len(runs)
    lines = [f"### Before / after fine-tuning ({n} seeds; %, mean ± se)", "",
             "| model | object-word mAP | CHAIR-i (halluc. object words) | CHAIR-s (captions) | `box` written with "
             "`plus` and no box | other words written when absent | object recall | exact captions |",
             "|---|---|---|---|---|---|---|---|"]
    for key, label in (("base", "baseline (60 epochs CE)"), ("plain", "+ 10 epochs CE (control)"),
                       ("ift", "+ 10 epochs LRP-IFT (λ = 0.5)"), ("ift01", "+ 10 epochs LRP-IFT (λ = 0.1)")):
        cells = [_s([r[key][m] for r in runs]) for m in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for key, lam in (("ift", 0.5), ("ift01", 0.1)):
        lines.append(f"Paired differences LRP-IFT (λ = {lam}) − control (points, mean ± se): "
                     + ", ".join(f"{name} {_s([r[key][m] - r['plain'][m] for r in runs])}"
                                 for m, name in (("map", "mAP"), ("chair_i", "CHAIR-i"), ("chair_s", "CHAIR-s"),
                                                 ("pair", "biased pair"))) + ".")
    lines.append("")
    lines += [f"### LRP diagnosis of the generated object words ({n} seeds, 400 test images each)", "",
              "| model | text share, hallucinated | text share, correct | ROC AUC of the text share | flag precision "
              "| flag recall | hallucinated / correct words |", "|---|---|---|---|---|---|---|"]
    for key, label in (("diagnosis", "baseline"), ("diagnosis_ift", "after LRP-IFT")):
        d = [r[key] for r in runs]
        lines.append(f"| {label} | {_s([x['share_hallucinated'] for x in d], 1, 2)} | "
                     f"{_s([x['share_correct'] for x in d], 1, 2)} | {_s([x['auc'] for x in d], 1, 2)} | "
                     f"{_s([x['flag_precision'] for x in d])} | {_s([x['flag_recall'] for x in d])} | "
                     f"{sum(x['n_hallucinated'] for x in d)} / {sum(x['n_correct'] for x in d)} |")
    strong = [json.loads(p.read_text())["runs"][0] for p in sorted(RESULTS.glob("captionstrong_s*.json"))]
    if strong:
        lines += [f"### Stronger fine-tuning: 20 epochs, Adam 3e-3 ({len(strong)} seeds; %, mean ± se)", "",
                  "| model | object-word mAP | CHAIR-i | CHAIR-s | `box` with `plus` and no box | other words when "
                  "absent | object recall | exact captions |", "|---|---|---|---|---|---|---|---|"]
        for key, label in (("base", "baseline (60 epochs CE)"), ("plain", "+ 20 epochs CE (control)"),
                           ("ift", "+ 20 epochs LRP-IFT (λ = 0.5)")):
            lines.append(f"| {label} | " + " | ".join(_s([r[key][m] for r in strong]) for m in METRICS) + " |")
        lines += ["", "Paired differences LRP-IFT − control (points, mean ± se): "
                  + ", ".join(f"{name} {_s([r['ift'][m] - r['plain'][m] for r in strong])}"
                              for m, name in (("map", "mAP"), ("chair_i", "CHAIR-i"), ("chair_s", "CHAIR-s"),
                                              ("pair", "biased pair"))) + ".", ""]
    sec = {k: sum(r["seconds"][k] for r in runs) / n for k in ("base", "plain", "ift")}
    lines += ["", f"CPU seconds per seed (process time): baseline {sec['base']:.0f}, control fine-tuning "
              f"{sec['plain']:.0f}, LRP-IFT fine-tuning {sec['ift']:.0f}; load average at the end "
              f"{max(loads):.0f}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first", type=int, default=0, help="first seed (runs of other seeds in parallel "
                        "processes write captioning_s<first>.json; --report merges them)")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--strong", action="store_true", help="the stronger fine-tuning (captionstrong_s<seed>.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.report:
        print(report())
        return
    runs = []
    name = "captioning.json" if args.first == 0 else f"captioning_s{args.first}.json"
    if args.strong:
        name = f"captionstrong_s{args.first}.json"
    for seed in range(args.first, args.first + args.seeds):
        began = time.perf_counter()
        runs.append({"seed": seed, **(run_strong(seed) if args.strong else run(seed))})
        print(f"seed {seed}: {time.perf_counter() - began:.0f} s wall, load {os.getloadavg()[0]:.1f} "
              f"{json.dumps(runs[-1])}", flush=True)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / name).write_text(json.dumps({"runs": runs, "load": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
