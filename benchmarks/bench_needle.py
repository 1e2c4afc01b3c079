"""Needle test: does the top relevance of the answer fall on the needle, at 1k and 4k tokens?

A small transformer (:class:`xaikit.zoo.needle.NeedleTransformer`, no position embeddings) is trained on short
prompts (16–96 tokens) of the key–value retrieval task of :mod:`xaikit.zoo.needle` and asked, at 1k and 4k
tokens, for the value of a key hidden among distractor pairs. The answer's logit is explained with AttnLRP,
gradient × input, integrated gradients (zero embedding baseline) and attention rollout (Abnar & Zuidema 2020,
written here: the last position's row of ``Π_l (½ Ā_l + ½ I)``, ``Ā_l`` the head-mean attention of block ``l``).
Over the context (the pairs, without the query marker and the queried key at the end) we count how often the
token with the largest relevance is the needle's value, and how often it is its value or its key.

    PYTHONPATH=src nice -n 10 python benchmarks/bench_needle.py            # 200 prompts at 1k and 4k
    PYTHONPATH=src python benchmarks/bench_needle.py --prompts 20 --lengths 256   # a quick look

Writes ``benchmarks/results/needle.md`` (with ``--write``).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import torch

import xaikit as xk
from xaikit.generation import TokenLogits
from xaikit.zoo.needle import make_needle, needle_accuracy, train_needle_model


def rollout(model, ids: torch.Tensor) -> torch.Tensor:
    """Attention rollout of the last position over the tokens ``(N, L)``: ``e_last Π_l (½ Ā_l + ½ I)`` from the
    top block down (Abnar & Zuidema 2020, with the residual as ½ I and the heads averaged). One prompt at a
    time: the weights are ``heads × L × L`` per block (128 MiB at 4k tokens)."""
    if ids.shape[0] > 1:
        return torch.cat([rollout(model, ids[i:i + 1]) for i in range(ids.shape[0])])
    weights = model.attention_weights(ids)
    row = torch.zeros(ids.shape, dtype=torch.float32)
    row[:, -1] = 1
    for a in reversed(weights):
        mean = a.mean(1)  # (N, L, L)
        row = 0.5 * torch.einsum("nl,nlm->nm", row, mean) + 0.5 * row
    return row


def methods(model, ig_steps: int):
    """Each method as ``explain(ids, answer) -> (N, L)``; the target is the logit of the needle's value at the
    last position."""
    def target(answer):
        return TokenLogits(torch.full((answer.shape[0], 1), -1), answer[:, None])

    lrp, cp = xk.LRP(model, composite="attnlrp", batch_size=4), xk.LRP(model, composite="cp_lrp", batch_size=4)
    ixg, ig = xk.InputXGradient(model, batch_size=4), xk.IntegratedGradients(model, steps=ig_steps, batch_size=16)
    return {
        "AttnLRP": lambda ids, answer: lrp(ids, target=target(answer)).attribution,
        "CP-LRP": lambda ids, answer: cp(ids, target=target(answer)).attribution,
        "gradient × input": lambda ids, answer: ixg(ids, target=target(answer)).attribution,
        f"integrated gradients ({ig_steps} steps)": lambda ids, answer: ig(ids, target=target(answer)).attribution,
        "attention rollout": lambda ids, answer: rollout(model, ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--steps", type=int, default=2000, help="training steps")
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4, help="prompts per call")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="only the methods whose name starts with one of these (default: all)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # AttnLRP's absorbed-share warning: the numbers are in the table
    began = time.process_time()
    model = train_needle_model(steps=args.steps, lengths=(16, 96), seed=0)
    train_cpu = time.process_time() - began
    print(f"trained in {train_cpu:.0f} s CPU", flush=True)
    rows = []
    for length in args.lengths:
        data = make_needle(args.prompts, length, generator=torch.Generator().manual_seed(length))
        accuracy = needle_accuracy(model, data, batch=args.batch)
        print(f"L={length}: model accuracy {accuracy:.3f}", flush=True)
        for name, explain in methods(model, args.ig_steps).items():
            if args.methods and not any(name.startswith(m) for m in args.methods):
                continue
            value = either = 0
            began = time.process_time()
            for start in range(0, args.prompts, args.batch):
                ids = data.ids[start:start + args.batch]
                relevance = explain(ids, data.answer[start:start + args.batch])[:, :-2].float()  # the context only
                top = relevance.argmax(1)
                v, k = data.value_position[start:start + args.batch], data.key_position[start:start + args.batch]
                value += int((top == v).sum())
                either += int(((top == v) | (top == k)).sum())
            cpu = time.process_time() - began
            rows.append((length, name, value / args.prompts, either / args.prompts, cpu / args.prompts, accuracy))
            print(f"  {name}: top = value {value / args.prompts:.3f}, value or key {either / args.prompts:.3f}, "
                  f"{cpu / args.prompts:.2f} s CPU per prompt", flush=True)
    table = ["| context | method | top-1 = needle's value | top-1 = value or key | CPU s / prompt |",
             "|---|---|---|---|---|"]
    table += [f"| {length} | {name} | {v:.1%} | {e:.1%} | {cpu:.2f} |" for length, name, v, e, cpu, _ in rows]
    accuracies = sorted({(length, acc) for length, *_, acc in rows})
    text = "\n".join([
        "# Needle test: does the answer's top relevance fall on the needle?",
        "",
        f"Command: `PYTHONPATH=src nice -n 10 python benchmarks/bench_needle.py --prompts {args.prompts} "
        f"--lengths {' '.join(map(str, args.lengths))} --steps {args.steps} --ig-steps {args.ig_steps} --write`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs "
        f"(load average {os.getloadavg()[0]:.1f} at the end), one torch thread, torch {torch.__version__}.",
        "",
        f"Model: `NeedleTransformer` (one block, width 64, 2 heads, token shift, no position embeddings), trained "
        f"{args.steps} AdamW steps on prompts of 16–96 tokens ({train_cpu:.0f} s CPU). Accuracy of its answer on the "
        "explained prompts: " + ", ".join(f"{acc:.1%} at {length} tokens" for length, acc in accuracies) + ".",
        "",
        "Task: `k_1 v_1 … k_n v_n QUERY q`; the answer is the value after `q` in the context, whose key appears once "
        "(distractor keys differ from it). Explained: the logit of the needle's value at the last position "
        "(`TokenLogits(-1, answer)`, also where the model is wrong). The top-1 token is taken over the "
        "context (the pairs), without the query marker and the queried key at the end.",
        "",
        *table,
        "",
    ])
    print(text)
    if args.write:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "needle.md")
        with open(path, "w") as f:
            f.write(text)
        print("written", path)


if __name__ == "__main__":
    main()
