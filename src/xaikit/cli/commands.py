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

from .. import viz
from ..errors import NotApplicable
from ..explanation import Explanation
from ..methods.base import METHODS, Method
from ..methods.resolve import DEFAULT_METHODS
from ..progress import Progress
from ..propagation.composites import auto_preset
from ..targets import Contrast, Region, slice_target
from . import contrastive, parts, signal_view
from .errors import CLIError, UsageError, one_line
from .inputs import Inputs, check_inputs_exist, load_inputs
from .models import LoadedModel, check_methods_fit_model, load_model
from .outputs import check_out, done, finish_writing, settings_of, start_writing
from .specs import build_methods, build_metrics, method_class, parse_spec

#: inputs per method call when --batch-size is "auto", so that progress moves per input (the methods still
#: batch their perturbations, samples and steps inside a call)
PROGRESS_CHUNK = 1
#: inputs shown in the overview grid picture (every input gets its own heatmap PNGs)
GRID_ROWS = 16
#: table rows shown one by one in ``features.png`` (more rows: a beeswarm summary per method as well)
FEATURE_ROWS = 20


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
    """Load a model and its inputs; the model options (--weights, --image-size, ...) apply to the main model.

    Within one ``report`` (``args.loaded`` is a dict there) sections that read the same model and inputs share
    one load (the heatmaps and concepts sections; the metrics and examples sections)."""
    cache = getattr(args, "loaded", None)
    key = (spec, tuple(input_specs), tuple(texts), main)
    if cache is not None and key in cache:
        return cache[key]
    if main:
        loaded = load_model(spec, args.weights, args.device, args.seed, args.image_size, args.input_range)
    else:
        loaded = load_model(spec, device=args.device, seed=args.seed)
    inputs = load_inputs(input_specs, loaded, texts, args.num_samples, args.seed, args.target_column,
                         args.device)
    if cache is not None:
        cache[key] = loaded, inputs
    return loaded, inputs


def methods_for(args: argparse.Namespace, specs: list[str], loaded: LoadedModel, inputs: Inputs,
                input_specs: list[str]) -> dict[str, Method]:
    """Build the methods (their settings are checked first), then check that the inputs fit the model."""
    check_methods_fit_model(loaded.model, loaded.spec, [parse_spec(s)[0] for s in specs])
    text = inputs.kind == "text"
    # LRP's composite where a spec names none: by the input (no flat rule on the dense first layer of a table)
    methods = build_methods(specs, loaded.model, args.batch_size, args.seed,
                            mask_token=mask_token_id(loaded.tokenizer) if text else None,
                            composite=parts.TEXT_COMPOSITE if text else auto_preset(inputs.x))
    check_fits(loaded, inputs, input_specs)
    return methods


def mask_token_id(tokenizer: Any) -> int | None:
    """The id that switches a token off in perturbation methods: the tokenizer's mask token, else its pad token."""
    for key in ("mask_token_id", "pad_token_id"):
        value = getattr(tokenizer, key, None)
        if isinstance(value, int):
            return value
    return None


def check_fits(loaded: LoadedModel, inputs: Inputs, input_specs: list[str]) -> None:
    """One forward pass of the first input, so that inputs of the wrong shape are named before any work."""
    kwargs = {k: v[:1] for k, v in inputs.forward_kwargs.items()}
    try:
        with torch.no_grad():
            loaded.model(inputs.x[:1], **kwargs)
    except Exception as err:  # noqa: BLE001 - whatever the model raises, the inputs are the cause to name
        given = ", ".join(input_specs) or "the default inputs"
        raise UsageError(f"inputs {given} (one sample: shape {tuple(inputs.x.shape[1:])}, {inputs.x.dtype}) do not "
                         f"fit the model {loaded.spec!r}: {one_line(err)}") from None


def target_of(args: argparse.Namespace, inputs: Inputs) -> Any:
    """The target spec: --target (argmax, one class, or one per input), else labels given with the data."""
    if args.target in (None, "argmax"):
        return inputs.target if args.target is None and inputs.target is not None else None
    if "@" in args.target:  # a region of a dense output: CLS@predicted, CLS@box=..., CLS@pixel=..., CLS@mask=F.npy
        try:
            return Region.parse(args.target)
        except ValueError as err:
            raise UsageError(str(err)) from None
    a, sep, b = args.target.partition("-")
    if sep:  # A-B: why A rather than B
        try:
            return Contrast(None if a == "argmax" else int(a), int(b))
        except ValueError:
            raise UsageError(f"--target A-B needs class indices (A may be argmax), got {args.target!r}") from None
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
    """Explain all inputs with every method, a chunk at a time, under the progress convention of
    :mod:`xaikit.progress` (a bar with its time left on a terminal, a summary line every few seconds in logs)."""
    n = len(inputs)
    chunk = batch_size if isinstance(batch_size, int) else PROGRESS_CHUNK
    results, times = {}, {}
    skipped = []
    with Progress(n * len(methods), "explain", "input", enabled=not quiet) as bar:
        for label, method in methods.items():
            bar.set_description(label)
            parts_, began, done = [], time.perf_counter(), 0
            try:
                for start in range(0, n, chunk):
                    stop = min(n, start + chunk)
                    kwargs = {k: v[start:stop] for k, v in inputs.forward_kwargs.items()}
                    parts_.append(method(inputs.x[start:stop], slice_target(target, start, stop, n),
                                         forward_kwargs=kwargs))
                    bar.update(stop - start)
                    done = stop
            except NotApplicable as err:  # the method does not apply to these inputs: the others go on
                skipped.append(f"{label}: {one_line(err)}")
                bar.write(f"xaikit: warning: {label} skipped: {one_line(err)}")
                if quiet:
                    print(f"xaikit: warning: {label} skipped: {one_line(err)}", file=sys.stderr, flush=True)
                bar.update(n - done)  # the skipped method's inputs count as done for the ETA
                continue
            times[label] = time.perf_counter() - began
            results[label] = _concat(parts_)
    if not results:
        raise CLIError(f"no method could explain the inputs ({'; '.join(skipped)})")
    return results, times


def _concat(parts_: list[Explanation]) -> Explanation:
    first = parts_[0]
    if len(parts_) == 1:
        return first
    cat = lambda name: torch.cat([getattr(p, name) for p in parts_])  # noqa: E731
    info = dict(first.info)
    for key, value in first.info.items():  # per-sample values of every part, not the first part's only
        values = [p.info.get(key) for p in parts_]
        if all(isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == len(p.attribution)
               for v, p in zip(values, parts_)):
            info[key] = torch.cat(values)
    return Explanation(cat("attribution"), cat("target"), cat("output"), first.method, info)


def captions(loaded: LoadedModel, expl: Explanation, target: Any = None) -> list[str]:
    """One line per input: the explained class (and its probability for a classifier); for a contrastive
    target, the class it is contrasted with."""
    out = expl.output.reshape(len(expl.output), -1).float()
    probability = out.softmax(-1) if out.shape[1] > 1 and not isinstance(target, Region) else None
    lines = []
    for i, t in enumerate(expl.target.tolist()):
        if t < 0:
            lines.append("custom target")
            continue
        name = loaded.label(t)
        text = name if name == f"class {t}" else f"{name} ({t})"
        text = text if probability is None else f"{text} p={probability[i, t]:.2f}"
        if isinstance(target, Region):  # a region of the class's output map
            text = f"{text}: {repr(target).split(', ', 1)[1][:-1]}"
        if isinstance(target, Contrast):
            other = int(torch.as_tensor(target.b).reshape(-1)[0 if torch.as_tensor(target.b).numel() == 1 else i])
            text = f"{text} vs {loaded.label(other)} ({other})"
        lines.append(text)
    return lines


def image_maps(results: dict[str, Explanation], percentile: float, methods: dict[str, Method]
               ) -> tuple[dict[str, np.ndarray], set[str]]:
    """Normalised maps per method label, and the labels whose maps are unsigned (min–max, see viz.heatmap)."""
    unsigned = {label for label in results if not methods[label].signed_map}
    maps = {label: viz.normalise_unsigned(viz.relevance_map(e.attribution)) if label in unsigned
            else viz.normalise(viz.relevance_map(e.attribution), percentile) for label, e in results.items()}
    return maps, unsigned


def save_arrays(path: Path, inputs: Inputs, results: dict[str, Explanation]) -> None:
    """Raw attributions in one ``.npz``: the inputs, names, explained targets, and one array per method; for the
    methods over interpretable features (KernelSHAP, LIME, ...) also ``<method>/features`` (the feature of each
    input element) and ``<method>/feature_attribution`` (one value per feature)."""
    first = next(iter(results.values()))
    arrays = {"inputs": inputs.x.detach().cpu().numpy(), "names": np.array(inputs.names),
              "target": first.target.cpu().numpy()}
    arrays.update({label: e.attribution.detach().cpu().numpy() for label, e in results.items()})
    for label, e in results.items():
        for key in ("features", "feature_attribution"):
            if isinstance(e.info.get(key), torch.Tensor):
                arrays[f"{label}/{key}"] = e.info[key].detach().cpu().numpy()
    np.savez_compressed(path, **arrays)


def info_summary(info: dict[str, Any], n: int) -> dict[str, Any]:
    """The JSON-ready part of an explanation's ``info`` for ``summary.json``: numbers, text, per-sample values
    (a tensor of ``n`` numbers: a list), the number of interpretable features per input (``features``), and
    the shape of other tensors (their values are in ``attributions.npz``)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key == "time_s":
            continue
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, torch.Tensor) and key == "features":
            counts = [int(torch.unique(row).numel()) for row in value.reshape(value.shape[0], -1)]
            out[key] = {"per_input": counts if len(set(counts)) > 1 else counts[0], "shape": list(value.shape),
                        "in": "attributions.npz"}
        elif isinstance(value, torch.Tensor) and value.numel() == n and value.ndim <= 1:
            out[key] = [round(float(v), 6) for v in value.reshape(-1).tolist()]
        elif isinstance(value, torch.Tensor):
            out[key] = {"shape": list(value.shape)}
    return out


# ---- explain --------------------------------------------------------------------------------------------------

def explain(args: argparse.Namespace) -> int:
    """Explain a model on inputs with methods: heatmap PNGs, a grid, raw attributions (.npz), a summary."""
    specs, rows_specs = contrastive.split(args.methods or [])  # anchors, counterfactual:target=… (issue 25)
    check_method_names(specs, args.inputs)
    out = check_out(args.out)
    loaded, inputs = model_and_inputs(args, args.model, args.inputs, args.text)
    if rows_specs and not specs:
        start_writing(out)
        files = contrastive.explain_rows(args, loaded.model, inputs.x, inputs.feature_names, rows_specs, out,
                                         inputs.names, loaded.low, loaded.high)
        finish_writing(out)
        done(f"explained {len(inputs)} input(s): {', '.join(files)} -> {out}", args.quiet)
        return 0
    if loaded.kind == "causal-lm":  # heatmaps of the answer the model generates
        from .generation import explain_answers

        return explain_answers(args, loaded, inputs, out)
    if getattr(args, "view", None):
        signal_view.check_signals(inputs)
    defaults = parts.DEFAULT_EXPLAIN_METHODS if isinstance(loaded.model, torch.nn.Module) else \
        parts.DEFAULT_AGNOSTIC_METHODS  # a scikit-learn model: the methods that need only its outputs
    methods = methods_for(args, specs or list(defaults), loaded, inputs, args.inputs)
    regressor = is_regressor(args, loaded, inputs)
    if getattr(args, "view", None):  # signals in the frequency / time-frequency domain (issue 23)
        methods = signal_view.in_view(args, specs or list(defaults), methods, loaded.model, regressor)
    if regressor:  # f(x) - f(x_ref) of the one output, with the prediction and the base value
        from ..regression import Regression, Value

        target: Any = Value(0)
        runs = {label: Regression(loaded.model, method=m) for label, m in methods.items()}
    else:
        target, runs = target_of(args, inputs), methods
    results, times = run_methods(runs, inputs, target, args.batch_size, args.quiet)
    start_writing(out)
    if rows_specs:
        contrastive.explain_rows(args, loaded.model, inputs.x, inputs.feature_names, rows_specs, out, inputs.names,
                                 loaded.low, loaded.high)
    save_arrays(out / "attributions.npz", inputs, results)
    lines = regression_captions(inputs, results) if regressor else \
        captions(loaded, next(iter(results.values())), target)
    if regressor:
        write_predictions(out / "predictions.csv", inputs, results)
    if inputs.kind == "image":
        write_heatmaps(out, args, loaded, inputs, results, lines, methods)
    elif inputs.kind == "text":
        viz.write_report(out, [viz.html_section(f"Token heatmaps: {loaded.spec}", token_page(loaded, inputs, results))],
                         settings_of(args), title="xaikit explain")
    elif getattr(args, "view", None):
        signal_view.write_figures(out, inputs, results)
    elif inputs.x.ndim == 2:  # tabular: samples × features
        write_feature_plots(out, args, inputs, results)
    summary = {
        "model": loaded.spec,
        "inputs": [{"name": n, "explained": c, **(regression_row(inputs, results, i) if regressor else {})}
                   for i, (n, c) in enumerate(zip(inputs.names, lines))],
        "methods": {label: {"method": e.method, "seconds": round(times[label], 3), **info_summary(e.info, len(inputs))}
                    for label, e in results.items()},
        "settings": settings_of(args),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    finish_writing(out)
    done(f"explained {len(inputs)} input(s) with {len(methods)} method(s) in {sum(times.values()):.1f} s -> {out}"
         + (" (regression: predictions and base values in predictions.csv)" if regressor else ""), args.quiet)
    return 0


def write_feature_plots(out: Path, args: argparse.Namespace, inputs: Inputs, results: dict[str, Explanation]) -> None:
    """Tables: ``features.png`` (rows × features per method, the first :data:`FEATURE_ROWS` rows, with a colour
    bar) and, for more rows, ``summary-<method>.png``: a beeswarm over all rows (each point a row's attribution,
    coloured by its feature value), the summary plot of the Shapley literature."""
    from ..tabular import feature_table

    shown = slice(0, FEATURE_ROWS)
    names = inputs.feature_names or [f"feature {j}" for j in range(inputs.x.shape[1])]
    maps = {label: viz.normalise(e.attribution[shown], args.percentile) for label, e in results.items()}
    values = {label: e.attribution[shown] for label, e in results.items()}
    figure = viz.plot_features(maps, names, inputs.names[shown], args.cmap, values)
    if len(inputs) > FEATURE_ROWS:
        first = figure.axes[0]
        first.set_title(f"{first.get_title()}: the first {FEATURE_ROWS} of {len(inputs)} rows (all rows: "
                        f"summary-*.png)", fontsize=9)
    viz.save_figure(figure, out / "features.png")
    if len(inputs) > FEATURE_ROWS:
        for label, e in results.items():
            table = feature_table(e, list(names), inputs.x)
            viz.save_figure(viz.plot_beeswarm(table, title=f"{label}: {len(inputs)} rows"),
                            out / f"summary-{viz.report.slug(label)}.png")


def is_regressor(args: argparse.Namespace, loaded: LoadedModel, inputs: Inputs) -> bool:
    """A model with one output value per sample on tensor inputs is explained as a regressor (its value, not a
    class), unless --target names something else; a classifier's --target-column must hold class indices."""
    if inputs.kind != "tensor":
        return False
    kwargs = {k: v[:1] for k, v in inputs.forward_kwargs.items()}
    with torch.no_grad():
        width = loaded.model(inputs.x[:1], **kwargs).reshape(1, -1).shape[1]
    if width == 1 and args.target in (None, "argmax", "0"):
        return True
    if inputs.values is not None and inputs.target is None:
        raise UsageError(f"--target-column {args.target_column!r} holds values that are not class indices (e.g. "
                         f"{inputs.values[0].item():g}), but the model has {width} outputs per sample; give the "
                         "column of class labels, or a regressor with one output")
    return False


def regression_row(inputs: Inputs, results: dict[str, Explanation], i: int) -> dict[str, Any]:
    """Input ``i`` of a regression: the prediction, the true value (--target-column) and, per method, the base
    value f(x_ref) and the sum of the relevance (shap's ``base_values`` and the sum of its values)."""
    first = next(iter(results.values()))
    row: dict[str, Any] = {"prediction": float(first.info["prediction"][i])}
    if inputs.values is not None:
        row["true value"] = float(inputs.values[i])
    row["base value"] = {label: float(e.info["base_value"][i]) for label, e in results.items()}
    row["relevance sum"] = {label: float(e.attribution[i].sum()) for label, e in results.items()}
    return row


def regression_captions(inputs: Inputs, results: dict[str, Explanation]) -> list[str]:
    """One line per input of a regression: the predicted value, the true one where given, the base value."""
    first = next(iter(results.values()))
    lines = []
    for i in range(len(inputs)):
        text = f"prediction {float(first.info['prediction'][i]):.4g}"
        if inputs.values is not None:
            text += f" (true {float(inputs.values[i]):.4g})"
        lines.append(f"{text}, base value {float(first.info['base_value'][i]):.4g} at {first.info['reference']}")
    return lines


def write_predictions(path: Path, inputs: Inputs, results: dict[str, Explanation]) -> None:
    """``predictions.csv``: per input, the prediction, the true value and each method's base value and sum."""
    header = ["input", "prediction", *(["true value"] if inputs.values is not None else [])]
    for label in results:
        header += [f"{label} base value", f"{label} relevance sum"]
    rows = [",".join(header)]
    for i, name in enumerate(inputs.names):
        row = regression_row(inputs, results, i)
        cells = [name, f"{row['prediction']:.6g}", *([f"{row['true value']:.6g}"] if "true value" in row else [])]
        for label in results:
            cells += [f"{row['base value'][label]:.6g}", f"{row['relevance sum'][label]:.6g}"]
        rows.append(",".join(cells))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_heatmaps(out: Path, args: argparse.Namespace, loaded: LoadedModel, inputs: Inputs,
                   results: dict[str, Explanation], lines: list[str], methods: dict[str, Method]) -> None:
    """``heatmaps/<input>/<method>.png`` (the input's size; over the input with --overlay) and ``grid.png``."""
    images = viz.to_rgb(inputs.x, loaded.low, loaded.high)
    maps, unsigned = image_maps(results, args.percentile, methods)
    for label, m in maps.items():
        signed = label not in unsigned
        rgb = viz.overlay(images, m, cmap=args.cmap, signed=signed) if args.overlay else \
            viz.colourise(m, args.cmap, signed)
        for i, name in enumerate(inputs.names):
            viz.save_png(out / "heatmaps" / name / f"{viz.report.slug(label)}.png", rgb[i])
    shown = slice(0, GRID_ROWS)
    labelled = [f"{name}: {line}" for name, line in zip(inputs.names, lines)]  # rows by input name, then class
    viz.save_figure(viz.plot_grid(images[shown], {k: m[shown] for k, m in maps.items()}, labelled[shown],
                                  overlay_alpha=0.85, cmap=args.cmap, unsigned=unsigned, percentile=args.percentile),
                    out / "grid.png")


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
    out = check_out(args.out)
    table = benchmark_table(args, args.model, args.inputs, methods, args.metrics, size_defaults=args.methods is None)
    start_writing(out)
    write_table(table, out)
    finish_writing(out)
    print(table)  # the methods × metrics matrix
    done(f"wrote {out / 'scores.csv'} and {out / 'scores.json'}", args.quiet)
    return 0


def sized_for(specs: list[str], x: torch.Tensor) -> list[str]:
    """Default method specs sized for the inputs: occlusion's window and stride, set for 32×32 images, scaled to
    the image side (``side // 8`` and half of it: 225 occluded copies of a 224-px photo, not 12,321)."""
    if x.ndim != 4 or max(x.shape[-2:]) <= 32:
        return list(specs)
    side = max(x.shape[-2:])
    window = max(4, side // 8)
    return [f"occlusion:window={window},stride={window // 2}" if parse_spec(s)[0] == "occlusion" else s
            for s in specs]


def benchmark_table(args: argparse.Namespace, model_spec: str, input_specs: list[str], method_specs: list[str],
                    metric_specs: list[str] | None, main: bool = True, size_defaults: bool = False) -> Any:
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
    if size_defaults:  # the default methods, set for 32-px images, sized for these inputs
        method_specs = sized_for(method_specs, inputs.x)
    methods = methods_for(args, method_specs, loaded, inputs, input_specs)
    metrics = build_metrics(metric_specs, registry, args.batch_size, args.seed)
    target = target_of(args, inputs) if main else inputs.target
    table = parts.benchmark()(loaded.model, (inputs.x, target, inputs.mask), methods, metrics,
                              forward_kwargs=inputs.forward_kwargs, on_error="record", progress=not args.quiet)
    cells = (getattr(table, "info", {}) or {}).items()
    failed = 0
    for (method, metric), cell in cells:
        if isinstance(cell, dict) and "error" in cell:
            failed += 1
            reason = " ".join(str(cell["error"]).split())
            print(f"xaikit: warning: {method} × {metric} failed: {reason}", file=sys.stderr)
    if cells and failed == len(cells):
        raise CLIError(f"every cell of the metrics table failed ({failed} of {failed}; see the warnings above)")
    return table


def write_table(table: Any, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "scores.csv")
    table.to_json(out / "scores.json")
    (out / "scores.md").write_text(f"{table}\n", encoding="utf-8")  # the methods × metrics matrix


# ---- report ---------------------------------------------------------------------------------------------------

def report(args: argparse.Namespace) -> int:
    """Write the HTML report: heatmaps of the image model, the metrics table, the text example."""
    wanted = set(args.sections)
    check_inputs_exist([*args.inputs, *args.eval_inputs])
    for specs in (args.methods, args.eval_methods, args.text_methods):
        if specs is not None:
            check_method_names(specs)
    out = check_out(args.out)
    start_writing(out)
    args.loaded = {}  # one load per model and inputs for all sections (see model_and_inputs)
    other = args.model != "efficientnet-lite0" and args.eval_model == parts.GROUND_TRUTH_MODEL
    if other and wanted & {"metrics", "examples"} and not args.quiet:  # not silently the bundled toy CNN's scores
        print(f"xaikit: note: the metrics and examples sections score the bundled {parts.GROUND_TRUTH_MODEL}, not "
              f"{args.model}: give --eval-model {args.model} --eval-inputs DATA, or --sections images concepts text",
              file=sys.stderr)
    sections, timings = [], {}
    for name, make in (("images", image_part), ("concepts", concepts_part), ("metrics", metrics_part),
                       ("examples", examples_part), ("text", text_part), ("contrastive", contrastive_part)):
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
    finish_writing(out)
    done(f"wrote {index}", args.quiet)
    return 0


SECTION_TITLES = {"images": "Heatmaps", "concepts": "Concepts", "metrics": "Metrics", "text": "Text",
                  "examples": "Explanation by example", "contrastive": "Rules and counterfactuals"}


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
    if args.methods is None:
        specs = sized_for(specs, inputs.x)
    methods = methods_for(args, specs, loaded, inputs, args.inputs)
    target = target_of(args, inputs)
    results, times = run_methods(methods, inputs, target, args.batch_size, args.quiet)
    images = viz.to_rgb(inputs.x, loaded.low, loaded.high)
    maps, unsigned = image_maps(results, args.percentile, methods)
    return viz.image_section(out, images, maps, inputs.names, captions(loaded, next(iter(results.values())), target),
                             times, title=f"Heatmaps: {loaded.spec}", note=note, cmap=args.cmap, unsigned=unsigned)


def contrastive_part(args: argparse.Namespace, out: Path) -> viz.Section:
    """Anchors and runner-up counterfactuals of the image model's inputs (:func:`contrastive.report_section`)."""
    loaded, inputs = model_and_inputs(args, args.model, args.inputs)
    if inputs.kind != "image":
        raise UsageError(f"the contrastive section needs image inputs; {args.model!r} got {inputs.kind} inputs")
    return contrastive.report_section(loaded.model, inputs.x, inputs.names, out, loaded.low, loaded.high,
                                      f"Rules and counterfactuals: {loaded.spec}")


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
                                note=f"reference samples found among the report's own {len(inputs)} inputs: with "
                                     f"so few, a channel's references are mostly the photos explained here and say "
                                     f"little about what the channel detects; take them from a data set "
                                     f"(xk.concepts.ReferenceSamples on your training data)")


def metrics_part(args: argparse.Namespace, out: Path) -> viz.Section:
    specs, note = _defaults(args.eval_methods, parts.DEFAULT_EVAL_METHODS)
    table = benchmark_table(args, args.eval_model, args.eval_inputs, specs, args.metrics, main=False,
                            size_defaults=args.eval_methods is None)
    write_table(table, out)
    section = viz.scores_section(out, table, title=f"Metrics: {args.eval_model}", note=note,
                                 files={"CSV": "scores.csv", "JSON": "scores.json", "Markdown": "scores.md"})
    data = ", ".join(args.eval_inputs) or "its own data"
    if args.eval_model == parts.GROUND_TRUTH_MODEL and not args.eval_inputs:
        data = (f"{args.num_samples} held-out images of the synthetic ground-truth data set (one shape on a "
                "texture, with its object mask, so that localisation can be scored)")
    intro = (f"A different model from the heatmaps above: the methods are scored on {args.eval_model} with {data}. "
             "No metric alone says which explanation is right; read the columns together.")
    if args.eval_model == parts.GROUND_TRUTH_MODEL and args.model != "efficientnet-lite0":
        intro = (f"Not your model: these scores are of xaikit's bundled {args.eval_model} (a small CNN on synthetic "
                 f"shapes), not of {args.model}; give --eval-model and --eval-inputs to score yours. ") + intro
    section.html = viz.report.about(intro) + section.html
    return section


def text_part(args: argparse.Namespace, out: Path) -> viz.Section:
    specs, note = _defaults(args.text_methods, parts.DEFAULT_TEXT_METHODS)
    loaded, inputs = model_and_inputs(args, args.text_model, [], args.text or list(parts.DEFAULT_SENTENCES),
                                      main=False)
    methods = methods_for(args, specs, loaded, inputs, [])
    results, _ = run_methods(methods, inputs, None, args.batch_size, args.quiet)
    intro = viz.report.about(f"A third model: {loaded.spec}, explained on short texts, each token coloured by its "
                             "relevance for the predicted class (red for, blue against).")
    return viz.html_section(f"Text: {loaded.spec}", intro + token_page(loaded, inputs, results), note)


def _training_attribution(examples: Any, loaded: Any, data: tuple, query: Any, k: int = 5) -> dict:
    """The query's top-``k`` TRAK proponents and opponents among the model's labelled training data, for the
    examples section: :func:`xaikit.examples.shown_trak`, the settings ``xaikit serve`` shows them with too (full
    model, projection 128, the final weights, no Newton weights: why, in its docstring)."""
    x, y = data
    trak = examples.shown_trak(loaded.model, (x, y))
    found = trak.top(query, k=min(k, len(x)))

    def captions(index, score):
        return [f"{loaded.label(int(y[i]))} τ={s:.2g}" for i, s in zip(index.tolist(), score.tolist())]
    return {"proponents": x[found.supporting[0]], "opponents": x[found.opposing[0]],
            "proponent_captions": captions(found.supporting[0], found.supporting_score[0]),
            "opponent_captions": captions(found.opposing[0], found.opposing_score[0]),
            "method": examples.shown_method(trak, "training images")}


def examples_part(args: argparse.Namespace, out: Path) -> viz.Section:
    """The first sample of the metrics data: its nearest training samples in the penultimate layer with BiLRP
    heatmaps, and its pertinent positive and negative (CEM)."""
    examples = parts.examples()
    loaded, inputs = model_and_inputs(args, args.eval_model, args.eval_inputs, main=False)
    if inputs.kind != "image":
        raise UsageError(f"the examples section needs image inputs; {args.eval_model!r} got {inputs.kind} inputs")
    query = inputs.x[:1]
    if args.eval_model == parts.GROUND_TRUTH_MODEL:  # the data it was trained on
        data, note = parts.ground_truth_training(512, args.seed), "neighbours among 512 training images"
        if args.model != "efficientnet-lite0":
            note = f"not your model: xaikit's bundled {args.eval_model} (give --eval-model); {note}"
    else:
        data, note = (inputs.x[1:], inputs.target[1:] if inputs.target is not None else None), \
            "neighbours among the other inputs"
    index = examples.FeatureIndex(loaded.model, progress=not args.quiet).fit(data if data[1] is not None else data[0])
    k = min(5, len(index))
    found = index.neighbours(query, k=k)
    maps = index.heatmaps(query, found, method=DEFAULT_METHODS["image"])
    labels = found.label[0].tolist() if found.label is not None else [None] * k
    shown = [f"{loaded.label(c)} " if c is not None else "" for c in labels]
    neighbour_captions = [f"{s}cos={v:.3f}" for s, v in zip(shown, found.similarity[0].tolist())]
    cem = examples.CEM(loaded.model, feature_range=(loaded.low, loaded.high), absent=(loaded.low + loaded.high) / 2,
                       c_init=100.0, c_steps=4,
                       iterations=200)(query)
    predicted = int(cem.target[0])
    pertinent = {
        "pp": cem.pp[0], "pp_map": cem.pp_map[0], "pn": cem.pn[0], "pn_map": cem.pn_map[0],
        "pp_caption": (f"classified {loaded.label(int(cem.pp_class[0]))}" if cem.pp_found[0] else "none found")
        + f", {float(cem.info['pp_sparsity'][0]):.1%} kept",
        "pn_caption": (f"classified {loaded.label(int(cem.pn_class[0]))}" if cem.pn_found[0] else "none found")
        + f", {float(cem.info['pn_sparsity'][0]):.1%} changed",
    }
    # training-data attribution only where the data is the model's training set (the bundled ground-truth CNN)
    attribution = _training_attribution(examples, loaded, data, query) \
        if args.eval_model == parts.GROUND_TRUTH_MODEL else None
    return viz.examples_section(out, query[0], f"{inputs.names[0]}: {loaded.label(predicted)}",
                                index.samples(found.index[0]), neighbour_captions, maps.query[0], maps.neighbour[0],
                                pertinent, low=loaded.low, high=loaded.high, attribution=attribution,
                                title=f"Explanation by example: {loaded.spec}",
                                note=f"{note} ({maps.info['layer']}, cosine); heatmaps: BiLRP of the cosine "
                                     f"similarity; CEM with κ=0, β=0.1, 4 × 200 iterations, absent = mid-grey")
