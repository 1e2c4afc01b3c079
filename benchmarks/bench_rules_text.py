"""Anchors on the MiniLM sentiment probe (``xaikit.zoo.sentiment_task``): rules of words for a few reviews, their
precision on fresh draws of ``D(z | A)`` (held out: another seed than the search's) and the time.

A sample keeps every word piece with probability ``keep`` (0.5) and puts ``[MASK]`` elsewhere; the anchor's words
are always kept. The reviews of one token length are explained in one call (their searches run together);
[CLS] and [SEP] are parts like the words.

Run: ``PYTHONPATH=src nice -n 10 /work/main/.venv/bin/python benchmarks/bench_rules_text.py --sentences 6``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

TAU = 0.95


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "rules_text.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import xaikit as xk
    from xaikit.zoo.text import SENTIMENTS, sentiment_task

    task = sentiment_task()
    model, tokenizer = task.model, task.tokenizer
    texts = task.texts[:args.sentences]
    groups = defaultdict(list)
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
        groups[ids.numel()].append((text, ids))
    anchors = xk.rules.Anchors(model, mask_token=tokenizer.mask_token_id, vocabulary=tokenizer,
                               class_names=SENTIMENTS, threshold=TAU, seed=0)
    rows = []
    began_all = time.perf_counter()
    for length, items in sorted(groups.items()):
        x = torch.stack([ids for _, ids in items])
        began = time.perf_counter()
        result = anchors(x)
        seconds = time.perf_counter() - began
        fresh = anchors.precision(x, result, samples=1000, seed=1)
        for k, (text, _) in enumerate(items):
            rows.append((text, result.text(k), float(fresh[k]), result.rules[k].valid, seconds / len(items),
                         result.info["evaluations"] / len(items)))
            print(rows[-1], flush=True)
    total = time.perf_counter() - began_all
    lines = ["# Anchors on the MiniLM sentiment probe", "",
             f"`{' '.join(sys.argv)}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU, "
             f"torch.set_num_threads({args.threads}); the machine was shared with other jobs (load average above "
             "4), so the times are not absolute speeds.", "",
             f"τ = {TAU}, δ = 0.1, ε = 0.15, beam size 2, keep = 0.5, absent word pieces → `[MASK]`. Precision: "
             "1,000 fresh draws of D(z|A) per rule (seed 1; the search used seed 0). Reviews of one token length "
             "are explained in one call; time per review = the call's time / its reviews.", "",
             "| review | anchor | precision on fresh draws | valid | time (s) | model evaluations |",
             "|---|---|---:|---|---:|---:|"]
    for text, rule, precision, valid, seconds, evaluations in rows:
        lines.append(f"| {text} | {rule.replace('|', '/')} | {precision:.3f} | {valid} | {seconds:.2f} | "
                     f"{evaluations:,.0f} |")
    held = sum(r[2] >= TAU for r in rows)
    lines += ["", f"Precision ≥ τ on fresh draws: {held}/{len(rows)}; median time per review "
              f"{statistics.median(r[4] for r in rows):.2f} s; all {len(rows)} reviews {total:.1f} s."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
