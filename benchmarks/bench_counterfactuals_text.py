"""Text counterfactuals (HotFlip token substitutions, ``xk.counterfactuals.TokenCounterfactuals``) on the MiniLM
sentiment probe (``xaikit.zoo.sentiment_task``): for a few test reviews, the substitutions that flip the class
(special tokens frozen), whether the class flipped, and the time. One review per call (their lengths differ).

Run: ``PYTHONPATH=src nice -n 10 /work/main/.venv/bin/python benchmarks/bench_counterfactuals_text.py``
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "counterfactuals_text.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    import xaikit as xk
    from xaikit.zoo.text import SENTIMENTS, sentiment_task

    task = sentiment_task()
    tokenizer = task.tokenizer
    flips = xk.counterfactuals.TokenCounterfactuals(task.model, max_changes=3, candidates=16,
                                                     frozen=tokenizer.all_special_ids, vocabulary=tokenizer)
    lines = ["# Text counterfactuals on the MiniLM sentiment probe", "",
             f"`{' '.join(sys.argv)}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU, "
             "torch.set_num_threads(1); the machine was shared with other jobs (load average above 4): the times "
             "are not absolute speeds.", "",
             "HotFlip first-order scores over the whole MiniLM vocabulary (30,522 word pieces), the 16 best "
             "substitutions checked exactly per step, at most 3 substitutions, special tokens frozen; target = the "
             "other class.", "",
             "| review | class | counterfactual class | found | substitutions | time (s) |",
             "|---|---|---|---|---|---:|"]
    found = 0
    for text in task.texts[:args.sentences]:
        x = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            original = int(task.model(x).argmax(1))
        began = time.perf_counter()
        result = flips(x, target=1 - original)
        seconds = time.perf_counter() - began
        found += bool(result.found[0])
        lines.append(f"| {text} | {SENTIMENTS[original]} | {SENTIMENTS[int(result.predicted[0])]} | "
                     f"{bool(result.found[0])} | {result.changes(0)} | {seconds:.2f} |")
        print(lines[-1], flush=True)
    lines += ["", f"Class flipped for {found}/{min(args.sentences, len(task.texts))} reviews."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
