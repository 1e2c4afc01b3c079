"""``xaikit tune``: choose a method's settings (an LRP composite by default) for a model and data by metrics.

Writes into ``--out``: ``results.jsonl`` (every score, appended as computed: run the same command again to
resume an interrupted search), ``table.csv``/``table.md`` (every tried configuration, mean ± standard error),
``result.json``, ``composite.json`` and ``composite.py`` (the winner, for ``lrp:composite=.../composite.json``
or ``xk.LRP(model, composite=...)``), ``plot.png`` and ``holdout.md`` (winner vs presets on held-out inputs).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import parts
from .errors import UsageError
from .options import INPUTS_HELP, common_options, model_options

if TYPE_CHECKING:
    import torch

DEFAULT_GAMMAS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
DEFAULT_PRESETS = ("epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box")


def add_parser(sub: Any) -> None:
    """Register ``xaikit tune`` on the subcommand parsers ``sub``."""
    p = sub.add_parser("tune", help="search LRP rules per layer group (or any method's settings) by metrics",
                       description="Choose an explanation's settings by measurement: successive halving over a "
                                   "search space, scored by metrics on a tuning split, checked on a held-out split.")
    model_options(p, parts.GROUND_TRUTH_MODEL, INPUTS_HELP)
    g = p.add_argument_group("search space")
    g.add_argument("--space", nargs="+", default=["lrp"], metavar="SPACE",
                   help="lrp (per-layer-group rules, see below) and/or METHOD:key=v1|v2|v3,... e.g. "
                        "integrated_gradients:steps=8|16|32,baseline=zero|blur (default lrp)")
    g.add_argument("--groups", type=int, default=4, help="lrp: layer groups by depth (default 4)")
    g.add_argument("--group", action="append", default=[], metavar="NAME=PATTERN",
                   help="lrp: a group by module-name pattern (repeatable; replaces --groups), e.g. low=features.[0-3]*")
    g.add_argument("--gamma", type=float, nargs="+", metavar="G",
                   help=f"lrp: γ values per group (default {' '.join(map(str, DEFAULT_GAMMAS))})")
    g.add_argument("--rules", nargs="+", metavar="RULE",
                   help="lrp: candidate rules per group instead of --gamma: gamma=0.25 epsilon=0.1 alpha_beta=2 zplus")
    g.add_argument("--first", nargs="+", default=["none"], metavar="RULE",
                   help="lrp: candidate first-layer rules (none = the group's rule; zbox, flat, wsquare)")
    g.add_argument("--default-rule", default="epsilon=1e-06", help="lrp: rule of layers in no group (default: ε)")
    s = p.add_argument_group("search")
    s.add_argument("--objectives", nargs="+", default=["pixel_flipping"], metavar="METRIC",
                   help="metric specs; the first is primary, several give a Pareto front (default pixel_flipping)")
    s.add_argument("--budget", type=int, help="most metric evaluations (configuration × sample); default: a tenth "
                                              "of the grid's, at least enough to compare eta² configurations; a "
                                              "budget that cannot compare two is refused")
    s.add_argument("--strategy", default="halving", choices=("halving", "grid"))
    s.add_argument("--eta", type=int, default=3, help="successive halving factor (default 3)")
    s.add_argument("--min-samples", type=int, default=4, help="samples of the first rung (default 4)")
    s.add_argument("--holdout", type=float, default=0.5, help="fraction of the inputs held out (default 0.5)")
    s.add_argument("--presets", nargs="*", default=list(DEFAULT_PRESETS), metavar="COMPOSITE",
                   help="LRP presets compared with the winner on the held-out inputs")
    p.add_argument("--out", "-o", default="out/tune", help="output folder (default out/tune)")
    common_options(p)
    p.set_defaults(func=run)


def _values(text: str) -> list[Any]:
    from ..methods.resolve import literal_value

    return [literal_value(item) for item in str(text).split("|")]


def build_spaces(args: argparse.Namespace, model: torch.nn.Module, low: float | None, high: float | None) -> list:
    from .. import tune
    from .specs import parse_spec

    spaces = []
    for text in args.space:
        name, settings = parse_spec(text) if ":" in text else (text, {})
        try:
            if name == "lrp":
                if settings:
                    raise UsageError("--space lrp takes its settings from --groups/--group/--gamma/--rules/--first")
                groups: Any = args.groups
                if args.group:
                    pairs = [item.partition("=") for item in args.group]
                    if any(not eq or not k for k, eq, _ in pairs):
                        raise UsageError("--group must be NAME=PATTERN, e.g. low=features.[0-3]*")
                    groups = {k: v for k, _, v in pairs}
                first = [None if f.lower() == "none" else f for f in args.first]
                rules = args.rules if args.rules else None
                gamma = None if rules else (args.gamma or DEFAULT_GAMMAS)
                spaces.append(tune.LRPSpace(model, groups, rules=rules, gamma=gamma, first=first,
                                            default=args.default_rule, low=low, high=high))
            else:
                spaces.append(tune.MethodSpace(name, **{k: _values(v) for k, v in settings.items()}))
        except (TypeError, ValueError) as err:
            raise UsageError(f"--space {text!r}: {err}") from None
    return spaces


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import metrics, tune
    from .commands import model_and_inputs, target_of
    from .outputs import done, settings_of
    from .specs import build_metrics

    for name, value in (("--budget", args.budget), ("--eta", args.eta), ("--min-samples", args.min_samples)):
        if value is not None and value <= 0:
            raise UsageError(f"{name} must be a positive integer, got {value}")
    if not 0 <= args.holdout < 1:
        raise UsageError(f"--holdout must be a fraction in [0, 1), got {args.holdout}")
    objectives = build_metrics(args.objectives, metrics.METRICS, args.batch_size, args.seed)
    loaded, inputs = model_and_inputs(args, args.model, args.inputs)
    model = loaded.model
    spaces = build_spaces(args, model, loaded.low, loaded.high)
    target = target_of(args, inputs)
    n = len(inputs)
    if isinstance(target, int):
        target = torch.full((n,), target, device=inputs.x.device)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed)).to(inputs.x.device)
    held_n = int(round(args.holdout * n))
    if n - held_n < 1:
        raise UsageError(f"{n} input(s) leave none to tune on with --holdout {args.holdout}")

    def split(rows):
        y = None if target is None else target[rows]
        return (inputs.x[rows], y) if inputs.mask is None else (inputs.x[rows], y, inputs.mask[rows])

    tune_rows, held_rows = order[held_n:], order[:held_n]
    budget, total = args.budget, sum(s.size for s in spaces)
    if budget is None and args.strategy == "halving":  # a tenth of the grid, enough to compare eta² candidates
        budget = max(total * len(tune_rows) // 10,
                     tune.min_budget(len(tune_rows), min(total, args.eta ** 2), min_samples=args.min_samples,
                                     eta=args.eta))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = tune.tune(model, split(tune_rows), spaces, objectives, budget=budget, strategy=args.strategy,
                           eta=args.eta, min_samples=args.min_samples, seed=args.seed,
                           results=out / "results.jsonl", progress=not args.quiet)
    except ValueError as err:
        raise UsageError(str(err)) from None
    result.to_csv(out / "table.csv")
    (out / "table.md").write_text(result.to_markdown(limit=None) + "\n", encoding="utf-8")
    result.to_json(out / "result.json")
    (out / "composite.py").write_text(result.code(), encoding="utf-8")
    if "composite" in result.to_dict():
        result.composite.to_json(out / "composite.json")
    result.plot(out / "plot.png")
    summary = {"winner": result.winner.key, "evaluations": result.evaluations, "settings": settings_of(args)}
    if held_n:
        from ..methods.propagation import LRP

        methods = {"tuned": result.method(model)}
        for preset in args.presets:
            box = {"low": loaded.low, "high": loaded.high} if preset == "epsilon_gamma_box" else {}
            try:
                methods[f"preset {preset}"] = LRP(model, composite=preset, **box)
            except (TypeError, ValueError) as err:
                raise UsageError(f"--presets {preset!r}: {err}") from None
        table = tune.holdout(model, split(held_rows), methods, objectives, reference="tuned")
        text = table.to_markdown()
        (out / "holdout.md").write_text(f"Held-out: {held_n} input(s)\n\n{text}\n", encoding="utf-8")
        summary["holdout"] = table.summary()
        if not args.quiet:
            print(text)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    done(f"tuned with {result.evaluations} metric evaluations ({len(result.candidates)} of {total} "
         f"configurations tried); "
         f"winner {result.winner.key} -> {out}", args.quiet)
    return 0
