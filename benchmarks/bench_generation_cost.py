"""Generation cost: explaining every generated token (the tokens × generated matrix) against explaining the
answer as one span plus generating it.

For a Llama-architecture model (random weights from a config, float32, one thread) and a prompt of ``P`` tokens
we time, interleaved over ``--repeats`` rounds (CPU time, ``time.process_time``):

- ``matrix``: ``explain_generation(lrp, ids, max_new_tokens=G)``: greedy decoding on the key/value cache, then
  the matrix (one shared forward pass, one backward pass per generated token);
- ``generate``: ``greedy_continuation`` alone (the key/value cache);
- ``answer``: ``explain_answer(lrp, ids, answer)`` of the same ``G`` tokens (one forward, one backward pass);
- ``copies``: the matrix the way it was computed before (one copy of the sequence per generated token,
  batched), for reference.

The bound: ``matrix ≤ 1.3 × (answer + generate)``.

    PYTHONPATH=src nice -n 10 python benchmarks/bench_generation_cost.py --write
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch

import xaikit as xk
from xaikit.generation import explain_answer, explain_generation, greedy_continuation
from xaikit.generation.columns import _copies
from xaikit.generation.targets import TokenLogits

SIZES = {  # name: (hidden, layers, heads, kv heads, intermediate, vocabulary, prompt)
    "small": (128, 2, 4, 2, 256, 2000, 128),
    "medium": (512, 4, 8, 2, 1024, 8000, 512),
}


def build(name: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv, inter, vocab, prompt = SIZES[name]
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=4096)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(3, vocab, (1, prompt), generator=torch.Generator().manual_seed(1))
    return model, ids


def timed(fn) -> float:
    began = time.process_time()
    fn()
    return time.process_time() - began


def run(name: str, steps: int, repeats: int) -> dict:
    model, ids = build(name)
    lrp = xk.LRP(model, composite="attnlrp")
    answer, _ = greedy_continuation(model, ids, torch.ones_like(ids), steps)
    sequences = torch.cat([ids, answer], 1)
    mask = torch.ones_like(sequences)
    p = ids.shape[1]
    targets = [TokenLogits([[p - 1 + j]], answer[:, j:j + 1]) for j in range(steps)]
    keep = {"logits_to_keep": steps + 1}
    shifted = [TokenLogits(t.positions - (sequences.shape[1] - steps - 1), t.tokens) for t in targets]
    jobs = {
        "matrix": lambda: explain_generation(lrp, ids, max_new_tokens=steps),
        "generate": lambda: greedy_continuation(model, ids, torch.ones_like(ids), steps),
        "answer": lambda: explain_answer(lrp, ids, answer),
        "copies": lambda: _copies(lrp, sequences, mask, shifted, keep),
    }
    times = {key: [] for key in jobs}
    for key, job in jobs.items():  # warm-up
        job()
    for _ in range(repeats):
        for key, job in jobs.items():
            times[key].append(timed(job))
    ratios = [m / (a + g) for m, a, g in zip(times["matrix"], times["answer"], times["generate"])]
    return {"size": name, "params": sum(p.numel() for p in model.parameters()), "prompt": p, "steps": steps,
            **{key: statistics.median(v) for key, v in times.items()}, "ratio": statistics.median(ratios),
            "ratio_range": (min(ratios), max(ratios))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = []
    for name in args.sizes:
        row = run(name, args.steps, args.repeats)
        rows.append(row)
        print(row, flush=True)
    table = ["| model | parameters | prompt | generated | matrix (s) | answer (s) | generate, KV cache (s) | "
             "matrix / (answer + generate) | copies, before (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ratio_range"]
        table.append(f"| {r['size']} | {r['params'] / 1e6:.1f} M | {r['prompt']} | {r['steps']} | {r['matrix']:.3f} | "
                     f"{r['answer']:.3f} | {r['generate']:.3f} | **{r['ratio']:.2f}×** ({lo:.2f}–{hi:.2f}) | "
                     f"{r['copies']:.3f} |")
    text = "\n".join([
        "# Generation cost: the per-token matrix against one answer span plus generation",
        "",
        "Command: `PYTHONPATH=src nice -n 10 python benchmarks/bench_generation_cost.py "
        f"--sizes {' '.join(args.sizes)} "
        f"--steps {args.steps} --repeats {args.repeats} --write`",
        "",
        f"CPU time (`time.process_time`, one torch thread), medians of {args.repeats} interleaved rounds after a "
        f"warm-up; the machine was shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"torch {torch.__version__}. Llama-architecture models with random weights (float32, SDPA attention), "
        "AttnLRP. `matrix`: `explain_generation(lrp, ids, max_new_tokens=16)` (greedy decoding on the key/value "
        "cache, one shared forward pass, one backward pass per generated token); `answer`: "
        "`explain_answer(lrp, ids, answer)` of the same 16 tokens; `generate`: `greedy_continuation` (KV cache); "
        "`copies`: the matrix as computed before this change (a copy of the sequence per generated token, batched), "
        "without the generation. Goal: matrix ≤ 1.3 × (answer + generate).",
        "",
        *table,
        "",
    ])
    print(text)
    if args.write:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "generation_cost.md")
        with open(path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
