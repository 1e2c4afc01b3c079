"""``xaikit explain`` on a causal language model: token heatmaps of the answer it generates for each prompt."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .. import viz
from ..generation import GenerationResult, explain_generation
from ..viz.text import generation_html
from . import parts
from .errors import UsageError
from .inputs import Inputs
from .models import LoadedModel
from .outputs import done, finish_writing, settings_of, start_writing
from .specs import build_methods


def explain_answers(args: argparse.Namespace, loaded: LoadedModel, inputs: Inputs, out: Path) -> int:
    """Continue every prompt greedily for ``--max-new-tokens`` and explain each generated token with every
    method (:func:`~xaikit.generation.explain_generation`): ``index.html`` (token heatmaps),
    ``attributions.npz`` (the tokens × generated matrices) and ``summary.json``."""
    if inputs.kind != "text":
        raise UsageError(f"the causal language model {loaded.spec!r} explains text prompts; give --text or a .txt "
                         f"file, not {inputs.kind} inputs")
    methods = build_methods(args.methods or list(parts.DEFAULT_GENERATION_METHODS), loaded.model, args.batch_size,
                            args.seed)
    tokenizer = loaded.tokenizer
    results, times = {}, {}
    for label, method in methods.items():
        began = time.perf_counter()
        results[label] = explain_generation(method, inputs.x, inputs.forward_kwargs["attention_mask"],
                                            max_new_tokens=args.max_new_tokens, eos_token_id=tokenizer.eos_token_id)
        times[label] = time.perf_counter() - began
    first = next(iter(results.values()))
    answers = [tokenizer.decode(first.generated[n][first.generated_mask[n].bool()].tolist())
               for n in range(len(inputs))]
    start_writing(out)
    page = _page(tokenizer, inputs, answers, results)
    viz.write_report(out, [viz.html_section(f"Token heatmaps of the answers: {loaded.spec}", page)],
                     settings_of(args), title="xaikit explain")
    np.savez_compressed(out / "attributions.npz", sequences=first.sequences.numpy(),
                        attention_mask=first.attention_mask.numpy(), prompt_length=first.prompt_length,
                        generated=first.generated.numpy(), generated_mask=first.generated_mask.numpy(),
                        **{label: e.relevance.numpy() for label, e in results.items()})
    summary = {
        "model": loaded.spec,
        "inputs": [{"name": name, "prompt": text, "answer": answer}
                   for name, text, answer in zip(inputs.names, inputs.texts, answers)],
        "methods": {label: {"method": e.method, "seconds": round(times[label], 3)} for label, e in results.items()},
        "settings": settings_of(args),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    finish_writing(out)
    done(f"explained the answers to {len(inputs)} prompt(s) with {len(methods)} method(s) in "
         f"{sum(times.values()):.1f} s -> {out}", args.quiet)
    return 0


def _page(tokenizer, inputs: Inputs, answers: list[str], results: dict[str, GenerationResult]) -> str:
    escape = viz.report.html.escape
    blocks = []
    for n, (text, answer) in enumerate(zip(inputs.texts, answers)):
        blocks.append(f"<h3>{escape(text)} <small>→ {escape(answer)}</small></h3>")
        for label, expl in results.items():
            real = expl.attention_mask[n].bool()
            ids = expl.sequences[n][real].tolist()
            tokens = [t if t is not None else f"<{i}>" for i, t in zip(ids, tokenizer.convert_ids_to_tokens(ids))]
            prompt = int(real[:expl.prompt_length].sum())
            steps = int(expl.generated_mask[n].sum())
            matrix = expl.relevance[n][real][:, :steps]
            blocks.append(f"<h4>{escape(label)}</h4>" + generation_html(tokens, matrix, prompt, fragment=True))
    return "".join(blocks)
