"""xaikit.tune: search spaces, composites as JSON, batched objectives, successive halving, resume, errors, CLI."""
import copy
import json
import warnings

import pytest
import torch
from torch import nn

import xaikit as xk
from models import assert_unchanged, snapshot, vgg_like
from xaikit.cli import main
from xaikit.explanation import Explanation
from xaikit.methods.base import Method
from xaikit.propagation import rules as R
from xaikit.propagation.composites import PRESETS, Composite, make_composite, with_rules
from xaikit.tune import LRPSpace, MethodSpace, Space

# ---- a synthetic space with a known best configuration ---------------------------------------------------------


class _Noisy(Method):
    """The exact contributions ``w_y ⊙ x`` of a linear model plus a deterministic (per-sample) perturbation of
    size ``distance``: for pixel-flipping with a zero baseline, removing the largest contributions first is
    optimal on every sample, so the configuration at distance 0 is the known best."""

    def __init__(self, model, distance: float) -> None:
        super().__init__(model)
        self.distance = distance

    def explain(self, x, target, forward_args, forward_kwargs):
        weight = self.model[1].weight[target].detach().view_as(x)
        # per sample: a scale shared by the chunk would make a candidate's scores depend on its batch mates
        scale = x.abs().flatten(1).mean(1).view(-1, *([1] * (x.ndim - 1)))
        noise = torch.sin(x * 7919.0 + 1.0) * scale
        return Explanation(weight * x + self.distance * noise, target, self.model(x), "noisy", {})


class _Synthetic(Space):
    best = {"a": 4, "b": 2}

    def __init__(self):
        super().__init__("synthetic", {"a": range(7), "b": range(7)})
        self.builds, self.fail_after = 0, None

    def build(self, model, config):
        self.check_config(config)
        self.builds += 1
        if self.fail_after is not None and self.builds > self.fail_after:
            raise KeyboardInterrupt
        return _Noisy(model, abs(config["a"] - 4) + abs(config["b"] - 2))


def _linear_task(n=12, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.randn(n, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


PF = {"pf": xk.metrics.PixelFlipping(pixels_per_step=1)}


def test_halving_finds_the_known_best_with_fewer_evaluations_than_the_grid():
    model, x, y = _linear_task()
    space = _Synthetic()
    grid = xk.tune.tune(model, (x, y), space, PF, strategy="grid")
    assert grid.winner.config == space.best
    for seed in (0, 1):
        result = xk.tune.tune(model, (x, y), space, PF, budget=49 * 12 // 4, seed=seed)
        assert result.winner.config == space.best
        assert result.evaluations <= 49 * 12 // 4 < grid.evaluations == 49 * 12
        assert len(result.candidates) < 49  # it did not score the whole grid
        # the winner's scores on the pool are exactly the grid's (scores never depend on batch mates)
        assert result.winner.mean["pf"] == pytest.approx(grid.winner.mean["pf"], abs=1e-6)


def test_the_budget_is_never_exceeded():
    model, x, y = _linear_task()
    for budget in (23, 77, 333):  # 12 would score one configuration: refused (test_first_week)
        for seed in (0, 1):
            result = xk.tune.tune(model, (x, y), _Synthetic(), PF, budget=budget, seed=seed)
            assert result.evaluations <= budget
            assert result.evaluations == sum(c.samples for c in result.candidates)


def test_refinement_reaches_the_best_from_a_first_rung_that_misses_it():
    model, x, y = _linear_task()
    space = _Synthetic()
    without = xk.tune.tune(model, (x, y), space, PF, budget=60, seed=3, refine=False)
    result = xk.tune.tune(model, (x, y), space, PF, budget=150, seed=3)
    tried = {c.key for c in without.candidates}
    assert space.key(space.best) not in tried  # the first rung did not draw it ...
    assert result.winner.config == space.best  # ... refinement walked to it


def test_resume_after_an_interruption_gives_the_uninterrupted_result(tmp_path):
    model, x, y = _linear_task()
    reference = xk.tune.tune(model, (x, y), _Synthetic(), PF, budget=200, seed=0)
    path = tmp_path / "results.jsonl"
    space = _Synthetic()
    space.fail_after = 20
    with pytest.raises(KeyboardInterrupt):
        xk.tune.tune(model, (x, y), space, PF, budget=200, seed=0, results=path)
    written = len(path.read_text().splitlines())
    assert written > 1  # scores were saved before the interruption
    with path.open("a") as handle:  # a line cut off by the interruption
        handle.write('{"key": "synthetic:a=0')
    space = _Synthetic()
    with pytest.warns(UserWarning, match="cut off"):
        resumed = xk.tune.tune(model, (x, y), space, PF, budget=200, seed=0, results=path)
    assert 0 < resumed.computed < reference.evaluations
    assert resumed.evaluations == reference.evaluations
    assert resumed.winner.key == reference.winner.key
    # the same configurations, scored on as many samples, with the same scores up to float32 rounding (a chunk
    # of other candidates changes the summation order, which may swap exact ties in the table's order)
    same = {c.key: (c.samples, c.mean["pf"]) for c in reference.candidates}
    assert {c.key: c.samples for c in resumed.candidates} == {k: v[0] for k, v in same.items()}
    for c in resumed.candidates:
        assert c.mean["pf"] == pytest.approx(same[c.key][1], rel=1e-5, abs=1e-7)
    again = xk.tune.tune(model, (x, y), _Synthetic(), PF, budget=200, seed=0, results=path)
    assert again.computed == 0 and again.winner.key == reference.winner.key
    with pytest.raises(ValueError, match="different search"):
        xk.tune.tune(model, (x, y), _Synthetic(), PF, budget=201, seed=0, results=path)
    # issue 30 (2): the results file keys on the model's weights and on every value of the data
    swapped = x.clone()
    swapped[[0, 1]] = x[[1, 0]]  # the same shape, sum and labels' start, other data
    with pytest.raises(ValueError, match=r"different search \(differs in: data\)"):
        xk.tune.tune(model, (swapped, y), _Synthetic(), PF, budget=200, seed=0, results=path)
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    with pytest.raises(ValueError, match=r"different search \(differs in: model\)"):
        xk.tune.tune(other, (x, y), _Synthetic(), PF, budget=200, seed=0, results=path)


def test_bad_input_gives_clear_errors():
    model, x, y = _linear_task()
    with pytest.raises(ValueError, match="search space is empty"):
        xk.tune.tune(model, (x, y), [], PF, budget=10)
    with pytest.raises(ValueError, match="empty"):
        Space("s", {})
    with pytest.raises(ValueError, match="has no values"):
        Space("s", {"a": []})
    with pytest.raises(ValueError, match="unknown parameter 'stepz'.*valid: steps"):
        MethodSpace("integrated_gradients", stepz=[8, 16])
    with pytest.raises(ValueError, match="unknown method"):
        MethodSpace("integrated_gradientz", steps=[8])
    with pytest.raises(ValueError, match="unknown metric 'pixel_flop'"):
        xk.tune.tune(model, (x, y), _Synthetic(), "pixel_flop", budget=10)
    with pytest.raises(ValueError, match="objectives is empty"):
        xk.tune.tune(model, (x, y), _Synthetic(), [], budget=10)
    for budget in (0, -5):
        with pytest.raises(ValueError, match="budget must be an? integer > 0"):
            xk.tune.tune(model, (x, y), _Synthetic(), PF, budget=budget)
    with pytest.raises(ValueError, match="budget is required"):
        xk.tune.tune(model, (x, y), _Synthetic(), PF)
    with pytest.raises(ValueError, match="at least 12"):
        xk.tune.tune(model, (x, y), _Synthetic(), PF, budget=5)
    with pytest.raises(ValueError, match="unknown strategy"):
        xk.tune.tune(model, (x, y), _Synthetic(), PF, budget=50, strategy="random")
    with pytest.raises(ValueError, match="needs ground-truth masks"):
        xk.tune.tune(model, (x, y), _Synthetic(), "pointing_game", budget=50)
    with pytest.raises(ValueError, match="unknown parameter"):
        _Synthetic().check_config({"a": 1, "b": 2, "c": 3})
    cnn = vgg_like().eval()
    with pytest.raises(ValueError, match="at most 4 groups"):
        LRPSpace(cnn, groups=9)
    with pytest.raises(ValueError, match="match no linear/conv layer"):
        LRPSpace(cnn, groups={"low": "nothing.*"})
    with pytest.raises(ValueError, match="only gamma, epsilon, alpha_beta take a value"):
        LRPSpace(cnn, groups=2, rules=["zplus=1"])
    with pytest.raises(ValueError, match="needs the input bounds"):
        LRPSpace(cnn, groups=2, first=[None, "zbox"])


# ---- LRP spaces and composites as JSON --------------------------------------------------------------------------

def test_lrp_space_composite_is_the_per_group_composite_and_round_trips_through_json(tmp_path):
    torch.manual_seed(0)
    model = vgg_like().eval()
    x = torch.randn(3, 3, 16, 16)
    before = snapshot(model)
    space = LRPSpace(model, groups=2, rules=["gamma=0.25", "epsilon=0.1", "alpha_beta=2", "zplus"],
                     first=[None, "zbox", "flat"], low=-3.0, high=3.0)
    # depth groups: the weighted layers before the output layer, in order, split in two
    assert space.groups == {"g1": ("0", "2"), "g2": ("5", "9")}
    config = {"g1": "alpha_beta=2", "g2": "epsilon=0.1", "first": "zbox"}
    composite = space.composite(config)
    manual = with_rules("epsilon", by_name={"0": R.alpha_beta(2.0, 1.0), "2": R.alpha_beta(2.0, 1.0),
                                            "5": R.epsilon(0.1), "9": R.epsilon(0.1)}, first=R.zbox(-3.0, 3.0))
    expected = xk.LRP(model, composite=manual)(x, target=1).attribution
    got = xk.LRP(model, composite=composite)(x, target=1).attribution
    torch.testing.assert_close(got, expected)
    path = tmp_path / "composite.json"
    composite.to_json(path)
    for loaded in (Composite.from_json(path), make_composite(str(path)), make_composite(json.loads(path.read_text()))):
        assert loaded == composite
        torch.testing.assert_close(xk.LRP(model, composite=loaded)(x, target=1).attribution, expected)
    named = LRPSpace(model, groups={"low": ["0", "2"], "high": "[59]"}, rules=["zplus", "gamma=0.5"])
    chosen = named.composite({"low": "zplus", "high": "gamma=0.5"})
    modules = dict(model.named_modules())
    for name, rule in (("0", R.zplus()), ("2", R.zplus()), ("5", R.gamma(0.5)), ("9", R.gamma(0.5)),
                       ("12", R.epsilon(1e-6))):
        kind = "conv" if isinstance(modules[name], nn.Conv2d) else "dense"
        assert chosen.rule_for(kind, name, modules[name], first=False) == rule
    assert_unchanged(model, before)


def test_every_preset_and_rule_round_trips_and_bad_specs_are_refused():
    for name in PRESETS:
        assert Composite.from_json(make_composite(name).to_json()) == make_composite(name)
    typed = with_rules("epsilon_plus", by_type={nn.Linear: "zplus"}, first="wsquare", relu="guided")
    assert Composite.from_dict(typed.to_dict()) == typed
    for rule in (R.gamma(0.5, epsilon=1e-4), R.alpha_beta(1.0, 0.0), R.epsilon(0.3), R.zbox(-2.0, 2.0)):
        assert R.make_rule(R.rule_to_dict(rule)) == rule
    with pytest.raises(ValueError, match="tensor bounds"):
        R.rule_to_dict(R.zbox(torch.zeros(3), torch.ones(3)))
    with pytest.raises(ValueError, match="unknown composite key"):
        Composite.from_dict({"name": "x", "convs": {"rule": "zero"}})
    with pytest.raises(ValueError, match="unknown rule 'gama'"):
        Composite.from_dict({"conv": {"rule": "gama"}})
    with pytest.raises(TypeError, match="rule 'gamma'.*its settings"):
        R.make_rule({"rule": "gamma", "gamme": 0.1})
    with pytest.raises(ValueError, match="cannot be imported"):
        Composite.from_dict({"by_type": [["torch.nn:NoSuchLayer", {"rule": "zero"}]]})
    with pytest.raises(ValueError, match="does not exist"):
        make_composite("no/such/composite.json")


def test_candidates_scored_together_equal_one_metric_call_each():
    torch.manual_seed(0)
    model = vgg_like().eval()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    mask = torch.zeros(4, 16, 16, dtype=torch.bool)
    mask[:, 4:10, 3:12] = True
    methods = [xk.LRP(model, composite=c) for c in ("epsilon", "epsilon_plus", "zero")] + [xk.InputXGradient(model)]
    objectives = xk.tune.make_objectives({"pf": xk.metrics.PixelFlipping(pixels_per_step=16),
                                          "rma": "relevance_mass_accuracy", "sparse": "sparseness"})
    scores = xk.tune.score_candidates(model, methods, x, y, mask, objectives)
    for i, method in enumerate(methods):
        attribution = method(x, target=y).attribution
        for o in objectives:
            alone = o.metric(model, x, y, attribution, mask if o.metric.needs_mask else None)
            torch.testing.assert_close(scores[o.name][i], alone.float(), rtol=1e-5, atol=1e-6)


def test_two_objectives_give_a_pareto_front_and_the_holdout_table_is_paired():
    torch.manual_seed(0)
    model = vgg_like().eval()
    x = torch.randn(10, 3, 16, 16)
    space = LRPSpace(model, groups=2, gamma=[0.0, 0.25, 1.0])
    objectives = {"pf": xk.metrics.PixelFlipping(pixels_per_step=32), "sparse": "sparseness"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = xk.tune.tune(model, (x[:6], None), space, objectives, strategy="grid")
    front = result.pareto
    costs = {c.key: (c.mean["pf"], -c.mean["sparse"]) for c in result.candidates}
    for c in front:  # nothing dominates a front member
        assert not any(o[0] <= costs[c.key][0] and o[1] <= costs[c.key][1] and o != costs[c.key]
                       for o in costs.values())
    for c in result.candidates:
        if not c.pareto:  # something dominates every other one
            assert any(o[0] <= costs[c.key][0] and o[1] <= costs[c.key][1] and o != costs[c.key]
                       for o in costs.values())
    assert result.winner.mean["pf"] == min(c.mean["pf"] for c in result.candidates)
    assert "Known unreliability" in result.to_markdown() and "off the data distribution" in result.to_markdown()
    methods = {"winner": result.method(model), "epsilon": xk.LRP(model, composite="epsilon")}
    table = xk.tune.holdout(model, (x[6:], None), methods, objectives)
    direct = objectives["pf"](model, x[6:], model(x[6:]).argmax(1), methods["epsilon"](x[6:]).attribution)
    torch.testing.assert_close(torch.as_tensor(table.scores["pf"]["epsilon"]).float(), direct.float(),
                               rtol=1e-5, atol=1e-6)
    rows = {(r["objective"], r["method"]): r for r in table.summary()}
    assert rows[("pf", "winner")]["diff"] == 0
    diff = table.scores["pf"]["epsilon"] - table.scores["pf"]["winner"]
    assert rows[("pf", "epsilon")]["diff"] == pytest.approx(diff.mean())
    assert rows[("pf", "epsilon")]["diff_sem"] == pytest.approx(diff.std(ddof=1) / len(diff) ** 0.5)


def test_method_space_searches_integrated_gradients_steps():
    model, x, y = _linear_task(8)
    space = MethodSpace("integrated_gradients", steps=[1, 4], baseline=["zero"])
    result = xk.tune.tune(model, (x, y), space, PF, strategy="grid")
    assert len(result.candidates) == 2
    assert isinstance(result.method(model), xk.IntegratedGradients)
    with pytest.raises(TypeError, match="not an LRP composite"):
        result.composite
    assert "integrated_gradients" in result.code()


# ---- the command line -----------------------------------------------------------------------------------------

TINY = """
import torch
from torch import nn
def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4)).eval()
"""


def test_cli_tune_writes_table_and_composite_and_resumes(capsys, tmp_path):
    (tmp_path / "tiny_model.py").write_text(TINY)
    out = tmp_path / "out"
    argv = ["tune", "-m", f"{tmp_path / 'tiny_model.py'}:tiny", "-i", "ground-truth", "--num-samples", "8",
            "--groups", "2", "--gamma", "0", "0.25", "1", "--budget", "30", "--out", str(out), "--objectives",
            "pixel_flipping:pixels_per_step=128", "--presets", "epsilon"]
    assert main(argv) == 0, capsys.readouterr().err
    for name in ("table.csv", "table.md", "composite.json", "composite.py", "plot.png", "holdout.md",
                 "results.jsonl", "result.json"):
        assert (out / name).exists(), name
    composite = make_composite(str(out / "composite.json"))
    assert json.loads((out / "result.json").read_text())["composite"] == composite.to_dict()
    lines = (out / "results.jsonl").read_text()
    assert main(argv) == 0  # again: everything is read back, nothing new appended
    assert (out / "results.jsonl").read_text() == lines
    capsys.readouterr()
    for bad, message in ((["--budget", "0"], "--budget must be a positive integer"),
                         (["--objectives", "pixel_flop"], "unknown metric 'pixel_flop'"),
                         (["--space", "integrated_gradients:stepz=1|2"], "unknown parameter 'stepz'")):
        code = main(argv[:-4] + ["--presets", "epsilon", "--out", str(tmp_path / "bad"), *bad])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
