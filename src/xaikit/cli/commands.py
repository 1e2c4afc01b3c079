"""The subcommands: ``explain``, ``evaluate`` and ``report``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import viz
from ..explanation import Explanation
from ..methods.base import METHODS, Method
from ..targets import slice_target
from . import parts
from .errors import UsageError
from .inputs import Inputs, check_inputs_exist, load_inputs
from .models import LoadedModel, load_model
from .specs import build_methods, build_metrics, method_class, parse_spec

#: inputs per method call when --batch-size is "auto" (the methods still choose their own chunks inside)
PROGRESS_CHUNK = 4
#: inputs shown in the overview grid picture (every input gets its own heatmap PNGs)
GRID_ROWS = 16


# ---- shared steps ---------------------------------------------------------------------------------------------

def check_method_names(specs: list[str], inputs: list[str] = ()) -> None:
    """Fail on an unknown method or a missing input file before anything slow is loaded."""
    for text in specs:
        method_class(parse_spec(text)[0])
    check_inputs_exist(inputs)


def installed(specs: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Split default method specs into those installed and those missing from this version."""
    have = [s for s in specs if parse_spec(s)[0] in METHODS]
    return have, [s for s in specs if s not in have]


def model_and_inputs(args: argparse.Namespace, spec: str, input_specs: list[str], texts: list[str] = (),
                     main: bool = True) -> tuple[LoadedModel, Inputs]:
    """Load a model and its inputs; the model options (--weights, --image-size, ...) apply to the main model."""
    if main:
        loaded = load_model(spec, args.weights, args.device, args.seed, args.image_size, args.input_range)
    else:
        loaded = load_model(spec, device=args.device, seed=args.seed)
    inputs = load_inputs(input_specs, loaded, texts, args.num_samples, args.seed,
                         args.target_column if main else None, args.device)
    return loaded, inputs


def target_of(args: argparse.Namespace, inputs: Inputs) -> Any:
    """The target spec: --target (argmax, one class, or one per input), else labels given with the data."""
    if args.target in (None, "argmax"):
        return inputs.target if args.target is None and inputs.target is not None else None
    try:
        values = [int(v) for v in args.target.split(",")]
    except ValueError:
        raise UsageError(f"--target must be 'argmax', a class index or one index per input, "
                         f"got {args.target!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) != len(inputs):
        raise UsageError(f"--target gives {len(values)} classes for {len(inputs)} inputs")
    return torch.tensor(values, device=inputs.x.device)


def run_methods(methods: dict[str, Method], inputs: Inputs, target: Any, batch_size: int | str, quiet: bool
                ) -> tuple[dict[str, Explanation], dict[str, float]]:
    """Explain all inputs with every method, a chunk at a time, with one progress bar (ETA) for the run."""
    n = len(inputs)
    chunk = batch_size if isinstance(batch_size, int) else PROGRESS_CHUNK
    results, times = {}, {}
    with tqdm(total=n * len(methods), unit="input", disable=True if quiet else None, file=sys.stderr,
              dynamic_ncols=True) as bar:
        for label, method in methods.items():
            bar.set_description(label)
            parts_, began = [], time.perf_counter()
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                kwargs = {k: v[start:stop] for k, v in inputs.forward_kwargs.items()}
                parts_.append(method(inputs.x[start:stop], slice_target(target, start, stop, n), forward_kwargs=kwargs))
                bar.update(stop - start)
            times[label] = time.perf_counter() - began
            results[label] = _concat(parts_)
    return results, times


def _concat(parts_: list[Explanation]) -> Explanation:
    first = parts_[0]
    if len(parts_) == 1:
        return first
    cat = lambda name: torch.cat([getattr(p, name) for p in parts_])  # noqa: E731
    return Explanation(cat("attribution"), cat("target"), cat("output"), first.method, dict(first.info))


def captions(loaded: LoadedModel, expl: Explanation) -> list[str]:
    """One line per input: the explained class (and its probability for a classifier)."""
    out = expl.output.reshape(len(expl.output), -1).float()
    probability = out.softmax(-1) if out.shape[1] > 1 else None
    lines = []
    for i, t in enumerate(expl.target.tolist()):
        if t < 0:
            lines.append("custom target")
            continue
        text = f"{loaded.label(t)} ({t})"
        lines.append(text if probability is None else f"{text} p={probability[i, t]:.2f}")
    return lines


def image_maps(results: dict[str, Explanation], percentile: float) -> dict[str, np.ndarray]:
    return {label: viz.normalise(viz.relevance_map(e.attribution), percentile) for label, e in results.items()}


def save_arrays(path: Path, inputs: Inputs, results: dict[str, Explanation]) -> None:
    """Raw attributions in one ``.npz``: the inputs, names, explained targets, and one array per method."""
    first = next(iter(results.values()))
    arrays = {"inputs": inputs.x.detach().cpu().numpy(), "names": np.array(inputs.names),
              "target": first.target.cpu().numpy()}
    arrays.update({label: e.attribution.detach().cpu().numpy() for label, e in results.items()})
    np.savez_compressed(path, **arrays)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The command line and every option that was set, for the record."""
    skip = {"func", "argv"}
    return {"command line": " ".join(["xaikit", *args.argv]),
            **{k: v for k, v in vars(args).items() if k not in skip and v not in (None, [], ())}}


def done(message: str, quiet: bool) -> None:
    """The closing line of a command (left out with --quiet)."""
    if not quiet:
        print(message)


# ---- explain --------------------------------------------------------------------------------------------------

def explain(args: argparse.Namespace) -> int:
    """Explain a model on inputs with methods: heatmap PNGs, a grid, raw attributions (.npz), a summary."""
    check_method_names(args.methods, args.inputs)
    loaded, inputs = model_and_inputs(args, args.model, args.inputs, args.text)
    methods = build_methods(args.methods, loaded.model, args.batch_size, args.seed)
    results, times = run_methods(methods, inputs, target_of(args, inputs), args.batch_size, args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_arrays(out / "attributions.npz", inputs, results)
    lines = captions(loaded, next(iter(results.values())))
    if inputs.kind == "image":
        write_heatmaps(out, args, loaded, inputs, results, lines)
    elif inputs.kind == "text":
        viz.write_report(out, [viz.html_section(f"Token heatmaps: {loaded.spec}", token_page(loaded, inputs, results))],
                         settings_of(args), title="xaikit explain")
    elif inputs.x.ndim == 2:  # tabular: samples × features
        maps = {label: viz.normalise(e.attribution, args.percentile) for label, e in results.items()}
        viz.save_figure(viz.plot_features(maps, inputs.feature_names, inputs.names, args.cmap), out / "features.png")
    summary = {
        "model": loaded.spec,
        "inputs": [{"name": n, "explained": c} for n, c in zip(inputs.names, lines)],
        "methods": {label: {"method": e.method, "seconds": round(times[label], 3),
                            **{k: v for k, v in e.info.items() if isinstance(v, (int, float, str)) and k != "time_s"}}
                    for label, e in results.items()},
        "settings": settings_of(args),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    done(f"explained {len(inputs)} input(s) with {len(methods)} method(s) in {sum(times.values()):.1f} s -> {out}",
         args.quiet)
    return 0


def write_heatmaps(out: Path, args: argparse.Namespace, loaded: LoadedModel, inputs: Inputs,
                   results: dict[str, Explanation], lines: list[str]) -> None:
    """``heatmaps/<input>/<method>.png`` (the input's size; over the input with --overlay) and ``grid.png``."""
    images = viz.to_rgb(inputs.x, loaded.low, loaded.high)
    maps = image_maps(results, args.percentile)
    for label, m in maps.items():
        rgb = viz.overlay(images, m, cmap=args.cmap) if args.overlay else viz.colourise(m, args.cmap)
        for i, name in enumerate(inputs.names):
            viz.save_png(out / "heatmaps" / name / f"{viz.report.slug(label)}.png", rgb[i])
    shown = slice(0, GRID_ROWS)
    viz.save_figure(viz.plot_grid(images[shown], {k: m[shown] for k, m in maps.items()}, lines[shown],
                                  overlay_alpha=0.85, cmap=args.cmap), out / "grid.png")


def token_relevance(expl: Explanation) -> np.ndarray:
    """Per-token relevance ``(N, L)`` of a text attribution (summed over the embedding axis if there is one)."""
    a = expl.attribution.detach().cpu().double()
    return (a.sum(-1) if a.ndim == 3 else a).numpy()


def token_page(loaded: LoadedModel, inputs: Inputs, results: dict[str, Explanation]) -> str:
    """The texts with their explained class, then the token heatmaps of every method, as an HTML fragment."""
    render = parts.tokens_html()
    escape = viz.report.html.escape
    texts = "".join(f"<li>{escape(text)} <small>→ {escape(caption)}</small></li>"
                    for text, caption in zip(inputs.texts, captions(loaded, next(iter(results.values())))))
    blocks = [f'<ol class="texts">{texts}</ol>']
    for label, expl in results.items():
        heatmaps = render(inputs.tokens, token_relevance(expl), merge=True, fragment=True)
        blocks.append(f"<h3>{escape(label)}</h3>{heatmaps}")
    return "".join(blocks)


# ---- evaluate -------------------------------------------------------------------------------------------------

def evaluate(args: argparse.Namespace) -> int:
    """Score methods × metrics on a data set: scores.csv, scores.json, scores.md (and print the table)."""
    if args.text:
        raise UsageError("evaluate takes no --text inputs; give a data set with --inputs")
    methods, _ = _defaults(args.methods, parts.DEFAULT_EVAL_METHODS)
    table = benchmark_table(args, args.model, args.inputs, methods, args.metrics)
    out = Path(args.out)
    write_table(table, out)
    print(table.to_markdown())
    done(f"wrote {out / 'scores.csv'} and {out / 'scores.json'}", args.quiet)
    return 0


def benchmark_table(args: argparse.Namespace, model_spec: str, input_specs: list[str], method_specs: list[str],
                    metric_specs: list[str] | None, main: bool = True) -> Any:
    """Check the names, load model and data, build methods and metrics, and run the benchmark."""
    check_method_names(method_specs, input_specs)
    registry = parts.metric_registry()
    for text in metric_specs or ():
        name = parse_spec(text)[0]
        if name not in registry:
            raise UsageError(f"unknown metric {name!r}; valid: {', '.join(sorted(registry))}")
    loaded, inputs = model_and_inputs(args, model_spec, input_specs, main=main)
    needs_mask = lambda text: getattr(registry[parse_spec(text)[0]], "needs_mask", False)  # noqa: E731
    if metric_specs is None:  # the defaults, less the localisation metrics where the data has no masks
        metric_specs = [m for m in parts.DEFAULT_METRICS
                        if m in registry and (inputs.mask is not None or not needs_mask(m))]
    elif inputs.mask is None and any(map(needs_mask, metric_specs)):
        raise UsageError(f"{', '.join(filter(needs_mask, metric_specs))} compare with ground-truth masks: give data "
                         f"with masks (an .npz with 'mask', or {parts.GROUND_TRUTH_DATA})")
    methods = build_methods(method_specs, loaded.model, args.batch_size, args.seed)
    metrics = build_metrics(metric_specs, registry, args.batch_size, args.seed)
    target = target_of(args, inputs) if main else inputs.target
    table = parts.benchmark()(loaded.model, (inputs.x, target, inputs.mask), methods, metrics,
                              forward_kwargs=inputs.forward_kwargs, on_error="record", progress=not args.quiet)
    for (method, metric), cell in (getattr(table, "info", {}) or {}).items():
        if isinstance(cell, dict) and "error" in cell:
            reason = str(cell["error"]).splitlines()[0]
            print(f"xaikit: warning: {method} × {metric} failed: {reason}", file=sys.stderr)
    return table


def write_table(table: Any, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "scores.csv")
    table.to_json(out / "scores.json")
    (out / "scores.md").write_text(table.to_markdown() + "\n", encoding="utf-8")


# ---- report ---------------------------------------------------------------------------------------------------

def report(args: argparse.Namespace) -> int:
    """Write the HTML report: heatmaps of the image model, the metrics table, the text example."""
    out = Path(args.out)
    wanted = set(args.sections)
    check_inputs_exist([*args.inputs, *args.eval_inputs])
    for specs in (args.methods, args.eval_methods, args.text_methods):
        if specs is not None:
            check_method_names(specs)
    sections, timings = [], {}
    for name, make in (("images", image_part), ("concepts", concepts_part), ("metrics", metrics_part),
                       ("text", text_part)):
        if name not in wanted:
            continue
        began = time.perf_counter()
        try:
            sections.append(make(args, out))
        except parts.Unavailable as err:
            if args.strict:
                raise
            print(f"xaikit: note: {name} section left out: {err}", file=sys.stderr)
            sections.append(viz.note_section(SECTION_TITLES[name], str(err)))
        timings[f"{name} section (s)"] = round(time.perf_counter() - began, 1)
    index = viz.write_report(out, sections, {**settings_of(args), **timings}, title=args.title)
    done(f"wrote {index}", args.quiet)
    return 0


SECTION_TITLES = {"images": "Heatmaps", "concepts": "Concepts", "metrics": "Metrics", "text": "Text"}


def _defaults(given: list[str] | None, defaults: tuple[str, ...]) -> tuple[list[str], str]:
    if given is not None:
        return given, ""
    have, missing = installed(defaults)
    if not have:
        raise parts.Unavailable(f"none of the default methods is installed ({', '.join(defaults)})")
    return have, f"methods not in this version of xaikit, left out: {', '.join(missing)}" if missing else ""


def image_part(args: argparse.Namespace, out: Path) -> viz.Section:
    specs, note = _defaults(args.methods, parts.DEFAULT_IMAGE_METHODS)
    loaded, inputs = model_and_inputs(args, args.model, args.inputs)
    if inputs.kind != "image":
        raise UsageError(f"the heatmap section needs image inputs; {args.model!r} got {inputs.kind} inputs")
    methods = build_methods(specs, loaded.model, args.batch_size, args.seed)
    results, times = run_methods(methods, inputs, target_of(args, inputs), args.batch_size, args.quiet)
    images = viz.to_rgb(inputs.x, loaded.low, loaded.high)
    return viz.image_section(out, images, image_maps(results, args.percentile), inputs.names,
                             captions(loaded, next(iter(results.values()))), times,
                             title=f"Heatmaps: {loaded.spec}", note=note, cmap=args.cmap)


def concepts_part(args: argparse.Namespace, out: Path) -> viz.Section:
    """Top concepts of a layer per image (CRP), with reference crops found among the report's inputs."""
    from ..concepts import Composition, ReferenceSamples
    from ..methods.cam import find_layer

    loaded, inputs = model_and_inputs(args, args.model, args.inputs)
    if inputs.kind != "image":
        raise UsageError(f"the concepts section needs image inputs; {args.model!r} got {inputs.kind} inputs")
    layer = find_layer(loaded.model, args.concept_layer, "--concept-layer")[0]
    composition = Composition(loaded.model, layer, top=3)(inputs.x, target_of(args, inputs))
    tool = ReferenceSamples(loaded.model, layer, n=min(4, len(inputs)), target="prediction", progress=False)
    refs = tool([(inputs.x, None)])
    crops = {c: viz.to_rgb(tool.crops(inputs.x, refs, c, size=64)[0], loaded.low, loaded.high)
             for c in sorted(set(composition.concepts))}
    return viz.concepts_section(out, viz.to_rgb(inputs.x, loaded.low, loaded.high), composition, inputs.names,
                                crops, title=f"Concepts: {loaded.spec}, layer {layer}",
                                note=f"reference samples found among the report's {len(inputs)} inputs")


def metrics_part(args: argparse.Namespace, out: Path) -> viz.Section:
    specs, note = _defaults(args.eval_methods, parts.DEFAULT_EVAL_METHODS)
    table = benchmark_table(args, args.eval_model, args.eval_inputs, specs, args.metrics, main=False)
    write_table(table, out)
    return viz.scores_section(out, table, title=f"Metrics: {args.eval_model}", note=note,
                              files={"CSV": "scores.csv", "JSON": "scores.json", "Markdown": "scores.md"})


def text_part(args: argparse.Namespace, out: Path) -> viz.Section:
    specs, note = _defaults(args.text_methods, parts.DEFAULT_TEXT_METHODS)
    loaded, inputs = model_and_inputs(args, args.text_model, [], args.text or list(parts.DEFAULT_SENTENCES),
                                      main=False)
    methods = build_methods(specs, loaded.model, args.batch_size, args.seed)
    results, _ = run_methods(methods, inputs, None, args.batch_size, args.quiet)
    return viz.html_section(f"Text: {loaded.spec}", token_page(loaded, inputs, results), note)
