"""Generation cost: explaining every generated token (the tokens × generated matrix) against explaining the
answer as one span plus generating it.

For a Llama-architecture model (random weights from a config, float32, one thread) and a prompt of ``P`` tokens
we time, interleaved over ``--repeats`` rounds (CPU time, ``time.process_time``):

- ``matrix``: ``explain_generation(lrp, ids, max_new_tokens=G)``: greedy decoding on the key/value cache, then
  the matrix (one shared forward pass, one backward pass per generated token);
- ``whole``: ``explain_generation(lrp, ids, max_new_tokens=G, per_token=False)``: the same greedy decoding, then
  the generated answer as a whole (one forward, one backward pass);
- ``generate``: ``greedy_continuation`` alone (the key/value cache);
- ``answer``: ``explain_answer(lrp, ids, answer)`` of the same ``G`` tokens (one forward, one backward pass);
- ``copies``: the matrix the way it was computed before (one copy of the sequence per generated token,
  batched), for reference.

``--batched`` adds an experiment on the matrix's backward passes alone (the forward pass shared): the ``G``
columns as ``G`` backward passes (what ``explain_generation`` does) against ONE vectorised backward pass of the
``G`` cotangents (``torch.autograd.grad(..., is_grads_batched=True)``, i.e. ``vmap`` over the backward), for
plain gradients and for AttnLRP. The engine's rules write into reused buffers (``out=``) and book absorbed
relevance per sample, neither of which ``vmap`` supports: for the experiment only, ``out=`` is dropped from
``torch.div/mul/sign`` and the absorbed bookkeeping is switched off (the relevance itself is checked against the
loop's).

The bound: ``≤ 1.3 × (answer + generate)``, for ``whole`` (the generated answer explained) and for ``matrix``
(every generated token explained).

    PYTHONPATH=src nice -n 10 python benchmarks/bench_generation_cost.py --write
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import warnings

import torch

import xaikit as xk
from xaikit.generation import explain_answer, explain_generation, greedy_continuation
from xaikit.generation.columns import _copies
from xaikit.generation.padding import sequence_inputs
from xaikit.generation.targets import TokenLogits
from xaikit.propagation.session import Session
from xaikit.tokens import model_scores

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
        "whole": lambda: explain_generation(lrp, ids, max_new_tokens=steps, per_token=False),
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
    row = {"size": name, "params": sum(p.numel() for p in model.parameters()), "prompt": p, "steps": steps,
           **{key: statistics.median(v) for key, v in times.items()}}
    for key in ("matrix", "whole"):
        ratios = [m / (a + g) for m, a, g in zip(times[key], times["answer"], times["generate"])]
        row[f"ratio_{key}"] = statistics.median(ratios)
        row[f"range_{key}"] = (min(ratios), max(ratios))
    return row


@contextlib.contextmanager
def vmappable_engine():
    """Experiment only: the engine's ``out=`` buffers dropped and its absorbed bookkeeping off, so that its
    backward hooks run under ``vmap`` (``is_grads_batched``)."""
    originals = {name: getattr(torch, name) for name in ("div", "mul", "sign")}
    absorb = Session.absorb
    for name, op in originals.items():
        setattr(torch, name, (lambda op: lambda *a, out=None, **k: op(*a, **k))(op))
    Session.absorb = lambda *a, **k: None
    try:
        yield
    finally:
        for name, op in originals.items():
            setattr(torch, name, op)
        Session.absorb = absorb


def columns_backward(model, lrp, sequences, answer, batched: bool, rules: bool):
    """The ``G`` columns on one forward pass: ``G`` backward passes, or one batched; (relevance, seconds)."""
    steps = answer.shape[1]
    kwargs = sequence_inputs(model, torch.ones_like(sequences), logits_to_keep=steps + 1)
    session = Session(model, lrp.composite) if rules else None
    try:
        with torch.enable_grad(), (vmappable_engine() if batched else contextlib.nullcontext()):
            vectors = lrp.tokens.embed(sequences)
            leaf = vectors.detach().requires_grad_(True)
            out = model_scores(lrp.tokens.forward(sequences, session.run if rules else None)(leaf, **kwargs))
            scores = out[0, torch.arange(steps), answer[0]]  # (G,): generated token j's logit
            began = time.process_time()
            if batched:
                (grad,) = torch.autograd.grad(scores, leaf, torch.eye(steps), is_grads_batched=True)
                relevance = (grad * vectors).sum(-1)[:, 0]
            else:
                relevance = torch.stack([(torch.autograd.grad(scores[j], leaf, retain_graph=j < steps - 1)[0]
                                          * vectors).sum(-1)[0] for j in range(steps)])
            seconds = time.process_time() - began
    finally:
        if session is not None:
            session.release()
    return relevance.detach(), seconds


def stacked_backward(model, lrp, sequences, answer, rules: bool):
    """The ``G`` columns as ONE backward pass over ``G`` copies of the sequence (each copy's own target): a
    batched backward on native batched kernels; only the backward pass is timed (the copies' forward is not
    shared, so it is left out). (relevance, seconds)"""
    steps = answer.shape[1]
    copies = sequences.expand(steps, -1)
    kwargs = sequence_inputs(model, torch.ones_like(copies), logits_to_keep=steps + 1)
    session = Session(model, lrp.composite) if rules else None
    try:
        with torch.enable_grad():
            vectors = lrp.tokens.embed(copies)
            leaf = vectors.detach().requires_grad_(True)
            out = model_scores(lrp.tokens.forward(copies, session.run if rules else None)(leaf, **kwargs))
            scores = out[torch.arange(steps), torch.arange(steps), answer[0]]  # copy j: generated token j
            began = time.process_time()
            (grad,) = torch.autograd.grad(scores.sum(), leaf)
            seconds = time.process_time() - began
    finally:
        if session is not None:
            session.release()
    return (grad * vectors).sum(-1).detach(), seconds


def batched_experiment(name: str, steps: int, repeats: int) -> list[dict]:
    model, ids = build(name)
    lrp = xk.LRP(model, composite="attnlrp")
    answer, _ = greedy_continuation(model, ids, torch.ones_like(ids), steps)
    sequences = torch.cat([ids, answer], 1)
    rows = []
    for label, rules in (("gradient", False), ("AttnLRP", True)):
        columns_backward(model, lrp, sequences, answer, False, rules)  # warm-up
        columns_backward(model, lrp, sequences, answer, True, rules)
        stacked_backward(model, lrp, sequences, answer, rules)
        loop, batched, stacked = [], [], []
        for _ in range(repeats):
            reference, seconds = columns_backward(model, lrp, sequences, answer, False, rules)
            loop.append(seconds)
            relevance, seconds = columns_backward(model, lrp, sequences, answer, True, rules)
            batched.append(seconds)
            copies, seconds = stacked_backward(model, lrp, sequences, answer, rules)
            stacked.append(seconds)
        difference = float((relevance - reference).norm() / reference.norm())
        stacked_difference = float((copies - reference).norm() / reference.norm())
        rows.append({"size": name, "method": label, "loop": statistics.median(loop),
                     "batched": statistics.median(batched), "difference": difference,
                     "stacked": statistics.median(stacked), "stacked_difference": stacked_difference})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batched", action="store_true", help="add the batched-backward experiment")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows = []
    for name in args.sizes:
        row = run(name, args.steps, args.repeats)
        rows.append(row)
        print(row, flush=True)
    table = ["| model | parameters | prompt | generated | answer (s) | generate, KV cache (s) | whole (s) | "
             "whole / (answer + generate) | matrix (s) | matrix / (answer + generate) | copies, before (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = {key: f"**{r[f'ratio_{key}']:.2f}×** ({r[f'range_{key}'][0]:.2f}–{r[f'range_{key}'][1]:.2f})"
                 for key in ("whole", "matrix")}
        table.append(f"| {r['size']} | {r['params'] / 1e6:.1f} M | {r['prompt']} | {r['steps']} | {r['answer']:.3f} | "
                     f"{r['generate']:.3f} | {r['whole']:.3f} | {ratio['whole']} | {r['matrix']:.3f} | "
                     f"{ratio['matrix']} | {r['copies']:.3f} |")
    text = "\n".join([
        "# Generation cost: explaining what was generated against one answer span plus generation",
        "",
        "Command: `PYTHONPATH=src nice -n 10 python benchmarks/bench_generation_cost.py "
        f"--sizes {' '.join(args.sizes)} "
        f"--steps {args.steps} --repeats {args.repeats}{' --batched' if args.batched else ''} --write`",
        "",
        f"CPU time (`time.process_time`, one torch thread), medians of {args.repeats} interleaved rounds after a "
        f"warm-up; the machine was shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"torch {torch.__version__}. Llama-architecture models with random weights (float32, SDPA attention), "
        "AttnLRP. `whole`: `explain_generation(lrp, ids, max_new_tokens=16, per_token=False)` (greedy decoding on "
        "the key/value cache, then the generated answer as a whole: one forward, one backward pass); "
        "`matrix`: `explain_generation(lrp, ids, max_new_tokens=16)` (greedy decoding on the key/value "
        "cache, one shared forward pass, one backward pass per generated token); `answer`: "
        "`explain_answer(lrp, ids, answer)` of the same 16 tokens; `generate`: `greedy_continuation` (KV cache); "
        "`copies`: the matrix as computed before this change (a copy of the sequence per generated token, batched), "
        "without the generation. Goal: ≤ 1.3 × (answer + generate).",
        "",
        *table,
        "",
    ])
    if args.batched:
        lines = ["", f"Batched backward (`--batched`): the {args.steps} columns' backward passes on one shared forward "
                 f"pass, CPU seconds, medians of {args.repeats} interleaved rounds: `loop` (what explain_generation "
                 "does), `vmapped` (`is_grads_batched=True`: PyTorch's legacy vmap, which runs ops without a batching "
                 "rule, among them the SDPA backward, once per column), `stacked` (one backward pass over "
                 f"{args.steps} copies of the sequence, each with its own target: the batched kernels; the copies' "
                 "forward pass not timed); `difference`: relative L2 of the relevance against the loop's.", "",
                 "| model | method | loop of backward passes (s) | vmapped backward (s) | vmapped / loop | "
                 "difference | stacked backward (s) | stacked / loop | difference |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for name in args.sizes:
            for r in batched_experiment(name, args.steps, args.repeats):
                lines.append(f"| {r['size']} | {r['method']} | {r['loop']:.3f} | {r['batched']:.3f} | "
                             f"{r['batched'] / r['loop']:.2f}× | {r['difference']:.1e} | {r['stacked']:.3f} | "
                             f"{r['stacked'] / r['loop']:.2f}× | {r['stacked_difference']:.1e} |")
        text += "\n".join(lines) + "\n"
    print(text)
    if args.write:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "generation_cost.md")
        with open(path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
