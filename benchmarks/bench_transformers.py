"""Transformers: AttnLRP cost against gradient × input on MiniLM, and token-deletion faithfulness.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_transformers.py [--repeats 5] [--quick]

1. Speed. all-MiniLM-L6-v2 as a sentence encoder (mean pooling), batch 8 × 128 tokens, explaining one
   embedding dimension. References: raw torch gradient × input at the embedding output (forward with
   ``inputs_embeds``, ``torch.autograd.grad``) and ``xk.InputXGradient`` on the token ids. Each timing is the
   minimum over repeats, interleaved in one run; once with one CPU thread (process time, robust on a busy
   machine) and once with torch's default threads (wall clock).
2. Faithfulness. Keyword detection with a known answer (``xaikit.zoo.text.keyword_task``: a linear probe on
   frozen MiniLM embeddings; a sentence is positive iff it contains one of four keywords). For each test
   sentence the words are deleted (attention mask set to 0: neither attended to nor pooled) in order of
   relevance for the predicted class, most relevant first; the curve is the probability of the predicted
   class against the fraction of words deleted (0, 0.1, ..., 1), its AUC the mean over that grid (lower:
   the explanation found what the decision rests on). Random order: mean over 5 seeded permutations.
   Also reported: how often the most relevant token of a positive sentence is its keyword.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import xaikit as xk
from xaikit.batching import batched_forward
from xaikit.zoo.text import keyword_task, load_sentence_encoder


def raw_input_x_gradient(encoder, ids, mask):
    vectors = encoder.get_input_embeddings()(ids).detach().requires_grad_(True)
    states = encoder.encoder(inputs_embeds=vectors, attention_mask=mask).last_hidden_state
    weights = mask[..., None].to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1)
    (g,) = torch.autograd.grad(pooled[:, 0].sum(), vectors)
    return (g * vectors).sum(-1)


def timings(candidates: dict, repeats: int, clock) -> dict[str, float]:
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            began = clock()
            run()
            times[name].append(clock() - began)
    return {name: min(values) for name, values in times.items()}


def speed(repeats: int, quick: bool) -> list[str]:
    encoder, _ = load_sentence_encoder()
    batch, length = (2, 32) if quick else (8, 128)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    kwargs = {"attention_mask": mask}
    candidates = {
        "raw torch gradient × input": lambda: raw_input_x_gradient(encoder, ids, mask),
        "xk.InputXGradient": lambda: xk.InputXGradient(encoder, batch_size=batch)(ids, 0, forward_kwargs=kwargs),
        "LRP attnlrp": lambda: xk.LRP(encoder, "attnlrp", batch_size=batch)(ids, 0, forward_kwargs=kwargs),
        "LRP cp_lrp": lambda: xk.LRP(encoder, "cp_lrp", batch_size=batch)(ids, 0, forward_kwargs=kwargs),
    }
    for run in candidates.values():  # warm-up
        run()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    single = timings(candidates, repeats, time.process_time)
    torch.set_num_threads(threads)
    multi = timings(candidates, repeats, time.perf_counter)
    ref = "raw torch gradient × input"
    lines = [f"### Speed: MiniLM, batch {batch} × {length} tokens (min of {repeats}, interleaved)", "",
             "| method | 1 thread, CPU s | ratio | " + f"{threads} threads, wall s | ratio |", "|---|---|---|---|---|"]
    for name in candidates:
        lines.append(f"| {name} | {single[name]:.3f} | {single[name] / single[ref]:.2f} | {multi[name]:.3f} | "
                     f"{multi[name] / multi[ref]:.2f} |")
    return lines


def deletion_curves(model, ids, mask, special, relevance, target, steps: int = 11) -> torch.Tensor:
    """Probability of ``target`` as the most relevant words are deleted; (N, steps)."""
    n, length = ids.shape
    deletable = (mask == 1) & ~special
    order = relevance.masked_fill(~deletable, float("-inf")).argsort(1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(length).expand(n, -1).contiguous())
    count = deletable.sum(1, keepdim=True)
    fractions = torch.linspace(0, 1, steps)
    deleted = rank[:, None, :] < (fractions[None, :, None] * count[:, :, None]).round()  # (N, S, L)
    masks = (mask[:, None, :] * ~deleted).reshape(n * steps, length)
    owner = torch.arange(n).repeat_interleave(steps)
    rows = torch.arange(n * steps)  # each row carries its own mask
    probs = batched_forward(
        model, ids[owner], 64, owner=rows, batch=n * steps, forward_kwargs={"attention_mask": masks},
        reduce=lambda out, rows: out.softmax(-1).gather(1, target[owner[rows], None])[:, 0],
    )
    return probs.reshape(n, steps)


def faithfulness(n_test: int) -> list[str]:
    task = keyword_task(n_train=160, n_test=n_test)
    ids, mask, model = task.input_ids, task.attention_mask, task.model
    kwargs = {"attention_mask": mask}
    with torch.no_grad():
        target = model(ids, **kwargs).argmax(1)
    special = torch.isin(ids, torch.tensor(task.tokenizer.all_special_ids))
    methods = {
        "AttnLRP": xk.LRP(model, "attnlrp"),
        "CP-LRP": xk.LRP(model, "cp_lrp"),
        "gradient × input": xk.InputXGradient(model),
        "gradient (L2 norm)": xk.Gradient(model),
    }
    rows = []
    positive = task.labels == 1
    for name, method in methods.items():
        relevance = method(ids, target=target, forward_kwargs=kwargs).attribution
        curve = deletion_curves(model, ids, mask, special, relevance, target)
        top = relevance.masked_fill((mask == 0) | special, float("-inf")).argmax(1)
        hit = task.keyword_mask[torch.arange(len(top)), top][positive].float().mean().item()
        rows.append((name, curve.mean(1).mean().item(), curve[positive].mean(1).mean().item(), curve.mean(0), hit))
    random_curves = []
    for seed in range(5):
        generator = torch.Generator().manual_seed(seed)
        random_curves.append(deletion_curves(model, ids, mask, special,
                                             torch.rand(ids.shape, generator=generator), target))
    curve = torch.stack(random_curves).mean(0)
    rows.append(("random order (5 seeds)", curve.mean(1).mean().item(), curve[positive].mean(1).mean().item(),
                 curve.mean(0), float("nan")))
    lines = [f"### Faithfulness: keyword detection on MiniLM ({n_test} test sentences, probe accuracy "
             f"{task.accuracy:.2f})", "",
             "| method | deletion AUC, all (lower is better) | AUC, positives | p at 10% / 20% / 50% deleted "
             "| top token = keyword |", "|---|---|---|---|---|"]
    for name, auc, auc_pos, mean_curve, hit in sorted(rows, key=lambda r: r[1]):
        points = " / ".join(f"{mean_curve[i]:.3f}" for i in (1, 2, 5))
        lines.append(f"| {name} | {auc:.3f} | {auc_pos:.3f} | {points} | {'—' if hit != hit else f'{hit:.2f}'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args()
    lines = ["# Transformers benchmark", "", f"`{' '.join(['python'] + sys.argv)}`, torch {torch.__version__}", ""]
    lines += speed(args.repeats, args.quick) + [""]
    lines += faithfulness(16 if args.quick else 64)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
