"""LLM scale: AttnLRP on a Llama-architecture model against a plain gradient × input, time and peak memory.

Run: PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_llm.py [--model 1b] [--length 512]
     [--rounds 2] [--lengths 128,256,512] [--remat]

``--remat`` (long contexts, benchmarks/results/llm_long.md): both methods rematerialise the decoder layers
(:mod:`xaikit.propagation.remat`): ``xk.InputXGradient(model, remat=True)`` against
``xk.LRP(model, composite="attnlrp", remat=True)`` (and CP-LRP), i.e. gradient × input with the same
rematerialisation, without key/value cache and with logits only at the explained position.

The model is built from a config with random weights (seeded; no download): ``1b`` is TinyLlama-1.1B's
shape (hidden 2048, 22 layers, 32 heads, 4 key/value heads, MLP 5632, vocabulary 32000, float32: 1.10 B
parameters, 4.4 GB), ``tiny`` a smoke-test size. One sequence of ``--length`` random tokens; the target is
the logit of the predicted next token at the last position.

- reference: raw torch gradient × input at the embedding output (``inputs_embeds``, ``torch.autograd.grad``,
  relevance per token ``Σ_d e ⊙ g``);
- ``xk.LRP(model, composite="attnlrp")`` on the token ids (and CP-LRP for comparison).

Every measurement runs in a fresh subprocess (so one method's freed memory and allocator state cannot hide
another's peak): it builds the model, then resets the kernel's peak-RSS counter (``/proc/self/clear_refs``
← 5), notes the resident memory (weights and all), explains once, and reads the peak (``VmHWM``). The extra
peak over the resident model is the memory of the explanation; the total peak is reported too.
``tracemalloc`` would be wrong here: it only sees allocations made through Python's allocator, not torch's
tensor storage. CPU time (``time.process_time``, one thread: robust to the other processes on a shared
machine) of each explanation is measured in the same processes; the processes of the two methods are
interleaved ``--rounds`` times and each time is the minimum over the rounds. Tokens per GB: the extra peak
of AttnLRP at ``--lengths`` is fitted by least squares, ``peak = a + b · tokens``; ``1 / b`` tokens fit in
each further GB.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import warnings

SIZES = {
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, vocab_size=32000),
    "1b-2layers": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=2, num_attention_heads=32,
                       num_key_value_heads=4, vocab_size=32000),
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=2, vocab_size=32000),
}
REFERENCE = "gradient × input (raw torch)"
REMAT_REFERENCE = "gradient × input (remat)"


def _status(key: str) -> int:
    """A field of /proc/self/status in bytes."""
    with open("/proc/self/status") as handle:
        return int(re.search(rf"{key}:\s+(\d+) kB", handle.read()).group(1)) * 1024


def build(size: str, length: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    config = LlamaConfig(**SIZES[size], max_position_embeddings=max(4096, length), attn_implementation="sdpa")
    return LlamaForCausalLM(config).eval()


def run_worker(size: str, method: str, length: int, runs: int) -> dict:
    import gc

    import torch

    import xaikit as xk

    warnings.simplefilter("ignore")
    model = build(size, length)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (1, length), generator=generator)
    target = xk.NextToken(-1)

    def reference():
        vectors = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=vectors).logits
        score = target(logits)
        (g,) = torch.autograd.grad(score.sum(), vectors)
        return (g * vectors).sum(-1), score.detach()

    def lrp(composite):
        def run():
            expl = xk.LRP(model, composite=composite)(ids, target=target)
            return expl.attribution, expl.info["conservation"]

        return run

    def remat_reference():
        expl = xk.InputXGradient(model, remat=True)(ids, target=target)
        assert expl.info["remat"]
        return expl.attribution

    def remat_lrp(composite):
        def run():
            expl = xk.LRP(model, composite=composite, remat=True)(ids, target=target)
            assert expl.info["remat"]
            return expl.attribution, expl.info["conservation"]

        return run

    explain = {REFERENCE: reference, "AttnLRP": lrp("attnlrp"), "CP-LRP": lrp("cp_lrp"),
               REMAT_REFERENCE: remat_reference, "AttnLRP (remat)": remat_lrp("attnlrp"),
               "CP-LRP (remat)": remat_lrp("cp_lrp")}[method]
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    resident = _status("VmRSS")
    cpu, wall = [], []
    for i in range(runs):
        began, began_wall = time.process_time(), time.perf_counter()
        result = explain()
        cpu.append(time.process_time() - began)
        wall.append(time.perf_counter() - began_wall)
        if i == 0:
            peak = _status("VmHWM")
        del result
    return {"method": method, "length": length, "resident": resident, "peak": peak, "extra": peak - resident,
            "cpu": cpu, "wall": wall, "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in model.parameters())}


def measure(size: str, method: str, length: int, runs: int) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--model", size, "--length", str(length),
               "--runs", str(runs)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"worker {method} @ {length} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {method} @ {length}: extra peak {result['extra'] / 2**30:.2f} GiB, total {result['peak'] / 2**30:.2f} "
          f"GiB, cpu {['%.1f' % t for t in result['cpu']]} s", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=tuple(SIZES), default="1b")
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of fresh processes per method")
    parser.add_argument("--runs", type=int, default=2, help="explanations per process (the first gives the peak)")
    parser.add_argument("--lengths", default="128,256", help="further lengths for the tokens-per-GB fit")
    parser.add_argument("--cp-lrp", action="store_true", help="also measure CP-LRP")
    parser.add_argument("--remat", action="store_true", help="both methods with rematerialised decoder layers")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.model, args.worker, args.length, args.runs)))
        return
    suffix = " (remat)" if args.remat else ""
    reference = REMAT_REFERENCE if args.remat else REFERENCE
    methods = [reference, "AttnLRP" + suffix] + (["CP-LRP" + suffix] if args.cp_lrp else [])
    results = {m: [] for m in methods}
    for _ in range(args.rounds):
        for method in methods:
            results[method].append(measure(args.model, method, args.length, args.runs))
    fit = {args.length: results["AttnLRP" + suffix][0]["extra"]}
    for length in (int(v) for v in args.lengths.split(",") if v):
        fit[length] = measure(args.model, "AttnLRP" + suffix, length, 1)["extra"]
    report(args, results, fit, reference)


def report(args, results: dict, fit: dict, reference: str = REFERENCE) -> None:
    first = results[reference][0]
    ref_cpu = min(min(r["cpu"]) for r in results[reference])
    ref_extra = min(r["extra"] for r in results[reference])
    ref_peak = min(r["peak"] for r in results[reference])
    lines = [f"Llama architecture `{args.model}` ({first['parameters'] / 1e9:.2f} B parameters, float32, random "
             f"weights), 1 × {args.length} tokens, {first['threads']} thread(s), {args.rounds} interleaved rounds "
             f"of fresh processes × {args.runs} explanations; CPU time: minimum; memory: minimum over rounds.", "",
             "| method | CPU s | time ratio | extra peak GiB | extra ratio | total peak GiB | total ratio |",
             "|---|---|---|---|---|---|---|"]
    for method, rows in results.items():
        cpu = min(min(r["cpu"]) for r in rows)
        extra = min(r["extra"] for r in rows)
        peak = min(r["peak"] for r in rows)
        lines.append(f"| {method} | {cpu:.1f} | {cpu / ref_cpu:.2f} | {extra / 2**30:.2f} | {extra / ref_extra:.2f} "
                     f"| {peak / 2**30:.2f} | {peak / ref_peak:.2f} |")
    lengths = sorted(fit)
    n = len(lengths)
    if n >= 2:
        mean_l, mean_p = sum(lengths) / n, sum(fit.values()) / n
        slope = sum((l - mean_l) * (fit[l] - mean_p) for l in lengths) / sum((l - mean_l) ** 2 for l in lengths)
        label = "AttnLRP" + (" (remat)" if args.remat else "")
        lines += ["", f"{label} extra peak by length: " + ", ".join(f"{l}: {fit[l] / 2**30:.2f} GiB" for l in lengths)
                  + f"; least-squares slope {slope / 2**20:.2f} MiB per token → {2**30 / slope:.0f} tokens per "
                    f"further GiB (intercept {(mean_p - slope * mean_l) / 2**30:.2f} GiB)."]
    lines += ["", "raw: " + json.dumps({m: [{k: r[k] for k in ('extra', 'peak', 'cpu', 'wall')} for r in rows]
                                         for m, rows in results.items()})]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
