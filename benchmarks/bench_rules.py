"""Anchors: xaikit.rules.Anchors against the reference implementation (``anchor-exp``, Ribeiro et al.) on the same
scikit-learn models and rows, timed interleaved (one row by one tool, then by the other).

Both rules are scored under one protocol: precision on 2,000 fresh draws of the tabular conditional distribution
(a random training row whose constrained columns, where they violate the rule, are redrawn from the training rows
inside the rule's interval: anchor-exp's sampler, which xaikit's follows) and coverage as the share of training
rows where the rule holds. anchor-exp prints
its thresholds with two decimals; they are read back from its text.

Run (benchmark venv; the exact install is in benchmarks/results/rules.md):
    nice -n 10 /work/venvs/i25-rules/bin/python benchmarks/bench_rules.py --rows 8
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def parse(names: list[str], features: list[str]) -> list[tuple[int, float, float]]:
    """anchor-exp's predicates (``a < name <= b``, ``name <= b``, ``name > a``) as ``(column, low, high)``."""
    out = []
    for text in names:
        m = re.fullmatch(rf"({NUMBER}) < (.+) <= ({NUMBER})", text)
        if m:
            out.append((features.index(m.group(2)), float(m.group(1)), float(m.group(3))))
            continue
        m = re.fullmatch(rf"(.+) <= ({NUMBER})", text)
        if m:
            out.append((features.index(m.group(1)), -np.inf, float(m.group(2))))
            continue
        m = re.fullmatch(rf"(.+) > ({NUMBER})", text)
        if m:
            out.append((features.index(m.group(1)), float(m.group(2)), np.inf))
            continue
        raise ValueError(f"cannot read anchor-exp predicate {text!r}")
    return out


def score(conditions, train: np.ndarray, predict, target: int, rng: np.random.Generator, draws: int = 2000):
    """(precision on fresh conditional draws, coverage on the training rows) of a rule."""
    holds = np.ones(len(train), dtype=bool)
    sample = train[rng.integers(len(train), size=draws)].copy()
    for col, low, high in conditions:
        inside = (train[:, col] > low) & (train[:, col] <= high)
        holds &= inside
        pool = train[inside, col]
        outside = ~((sample[:, col] > low) & (sample[:, col] <= high))
        if len(pool):  # redraw where the row violates the rule (the reference sampler of anchor-exp)
            sample[outside, col] = pool[rng.integers(len(pool), size=int(outside.sum()))]
    return float((predict(sample) == target).mean()), float(holds.mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "rules.md"))
    parser.add_argument("--strict", type=float, default=0.99,
                        help="also run anchor-exp (untimed) at this stricter τ, to see whether its rules then hold "
                             "0.95 on fresh draws (equal precision); 0 to skip")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from anchor import anchor_tabular
    from sklearn.datasets import load_breast_cancer, load_wine
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import xaikit as xk

    lines = ["# Anchors: xaikit against anchor-exp", "",
             f"`{' '.join(sys.argv)}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU, "
             f"torch.set_num_threads({args.threads}). The machine was shared with other jobs (load average "
             f"{os.getloadavg()[0]:.1f} at the start of this run): "
             "the times are ratios measured interleaved (each repeat: every row by anchor-exp, one row after the "
             "other, then every row by xaikit in one call, whose searches run together), not absolute speeds.", "",
             "Install: `python3 -m venv /work/venvs/i25-rules && /work/venvs/i25-rules/bin/pip install "
             "torch==2.13.0 && /work/venvs/i25-rules/bin/pip install -e . scikit-learn dice-ml && "
             "/work/venvs/i25-rules/bin/pip install --no-deps anchor-exp && /work/venvs/i25-rules/bin/pip install "
             "lime` (anchor-exp 0.0.2.0; its tabular explainer does not need spacy).", "",
             "Both: τ = 0.95, δ = 0.1, ε (anchor-exp's `tau`) = 0.15, beam size 4 (xaikit: its defaults otherwise, "
             "`samples=32`, `max_samples=4096`, `exploration='union'`), the same MLP (scikit-learn, "
             "fitted on 70 % of the rows) and the same held-out rows. Precision: 2,000 fresh conditional draws per "
             "rule under one sampler; coverage: share of training rows where the rule holds.", "",
             "| data set | tool | rows | precision ≥ 0.95 | median precision | median coverage | median rule size | "
             "model evaluations per row | time per row (s, median of the repeats) | "
             "time ratio anchor-exp / xaikit (median of the repeats' ratios) | "
             "median precision "
             "the tool reports |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for name, loader in (("breast cancer", load_breast_cancer), ("wine", load_wine)):
        data = loader()
        x, y = data.data.astype(np.float64), data.target
        rng = np.random.default_rng(0)
        order = rng.permutation(len(x))
        cut = int(0.7 * len(x))
        train, test = x[order[:cut]], x[order[cut:]]
        clf = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=2000, random_state=0))
        clf.fit(train, y[order[:cut]])
        features = [str(f) for f in data.feature_names]
        reference = anchor_tabular.AnchorTabularExplainer([str(c) for c in data.target_names], features, train)
        counted = {"anchor-exp": 0}

        def predict(z):  # anchor-exp's model: clf.predict, counting the rows it is called on
            counted["anchor-exp"] += len(z)
            return clf.predict(z)

        ours = xk.rules.Anchors(xk.NumpyModel(clf.predict_proba), data=train, feature_names=features, beam_size=4,
                                threshold=0.95, delta=0.1, epsilon=0.15, seed=0)
        stats = {"anchor-exp": [], "xaikit": []}
        count = min(args.rows, len(test))
        rows_ = test[:count]
        targets = clf.predict(rows_)
        ratios, cpu_ratios, ref_times, our_times, ref_evals, our_evals = [], [], [], [], [], []
        for repeat in range(args.repeats):  # interleaved: all rows by anchor-exp, then all rows by xaikit
            t_ref, c_ref, exps = 0.0, 0.0, []
            counted["anchor-exp"] = 0
            for i in range(count):
                np.random.seed(i)
                began, cpu = time.perf_counter(), time.process_time()
                exps.append(reference.explain_instance(rows_[i], predict, threshold=0.95, delta=0.1, tau=0.15,
                                                       beam_size=4))
                t_ref += time.perf_counter() - began
                c_ref += time.process_time() - cpu
            began, cpu = time.perf_counter(), time.process_time()
            result = ours(torch.tensor(rows_))  # every row in one call: the searches run together
            t_ours = time.perf_counter() - began
            cpu_ratios.append(c_ref / (time.process_time() - cpu))
            ref_evals.append(counted["anchor-exp"] / count)
            our_evals.append(result.info["evaluations"] / count)
            ratios.append(t_ref / t_ours)
            ref_times.append(t_ref / count)
            our_times.append(t_ours / count)
            print(name, "repeat", repeat, "anchor-exp s/row", round(t_ref / count, 3), "xaikit s/row",
                  round(t_ours / count, 3), "evaluations/row", ref_evals[-1], our_evals[-1], flush=True)
        for i in range(count):
            exp, target = exps[i], int(targets[i])
            eval_rng = np.random.default_rng(1000 + i)
            ref_rule = parse(exp.names(), features)
            our_rule = [(features.index(c["column"]), c["low"], c["high"]) for c in result.rules[i].conditions]
            for tool, rule, seconds in (("anchor-exp", ref_rule, statistics.median(ref_times)),
                                        ("xaikit", our_rule, statistics.median(our_times))):
                precision, coverage = score(rule, train, clf.predict, target, eval_rng)
                claimed = exp.precision() if tool == "anchor-exp" else result.rules[i].precision
                stats[tool].append((precision, coverage, len(rule), seconds, claimed))
            print(name, i, [round(v, 3) for v in stats["anchor-exp"][-1]], [round(v, 3) for v in stats["xaikit"][-1]],
                  flush=True)
        if args.strict:
            strict = []
            for i in range(count):
                np.random.seed(i)
                exp = reference.explain_instance(rows_[i], clf.predict, threshold=args.strict, delta=0.1, tau=0.15,
                                                 beam_size=4)
                strict.append((*score(parse(exp.names(), features), train, clf.predict, int(targets[i]),
                                      np.random.default_rng(1000 + i)), len(exp.names())))
            p, c, s = zip(*strict)
            notes.append(f"- {name}, anchor-exp at τ = {args.strict} (untimed): fresh-draw precision ≥ 0.95 for "
                         f"{sum(v >= 0.95 for v in p)}/{count} rows, median precision {statistics.median(p):.3f}, "
                         f"median coverage {statistics.median(c):.3f}, median rule size {statistics.median(s):g}")
        for tool, rows in stats.items():
            p, c, s, t, own = zip(*rows)
            ratio = f"{statistics.median(ratios):.1f}" if tool == "xaikit" else ""
            evals = statistics.median(our_evals if tool == "xaikit" else ref_evals)
            lines.append(f"| {name} | {tool} | {len(rows)} | {sum(v >= 0.95 for v in p)}/{len(rows)} | "
                         f"{statistics.median(p):.3f} | {statistics.median(c):.3f} | {statistics.median(s):g} | "
                         f"{evals:,.0f} | {statistics.median(t):.2f} | {ratio} | {statistics.median(own):.3f} |")
        notes.append(f"- {name}, per repeat (s per row, anchor-exp / xaikit): " + "; ".join(
            f"{r:.2f} / {o:.2f} ({r / o:.1f}×)" for r, o in zip(ref_times, our_times))
            + "; ratio of CPU times (`time.process_time`, all threads): "
            + ", ".join(f"{r:.1f}×" for r in cpu_ratios))
    lines += [""] + notes
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
