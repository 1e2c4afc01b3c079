"""One calling convention across the rooms: settings checks, the explainer's name, batch_size, loss results."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import warnings

import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.batching import batch_size_for, check_batch_size
from xaikit.methods.resolve import DEFAULT_METHODS, parse_spec, resolve_method
from xaikit.settings import UnknownSetting

ROOMS = ["xaikit.methods", "xaikit.concepts", "xaikit.examples", "xaikit.improve", "xaikit.tune", "xaikit.metrics",
         "xaikit.generation", "xaikit.interactions", "xaikit.rules", "xaikit.counterfactuals"]


def _public_tools() -> list[type]:
    """Every public class of the rooms' ``__all__`` that is built with settings (not a result or a base)."""
    found = {}
    for room in ROOMS:
        module = importlib.import_module(room)
        for name in module.__all__:
            cls = getattr(module, name)
            if not inspect.isclass(cls) or dataclasses.is_dataclass(cls) or issubclass(cls, (tuple, BaseException)):
                continue
            params = inspect.signature(inspect.unwrap(cls.__init__)).parameters.values()
            if not any(p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self" for p in params) \
                    and name == "Metric":
                continue  # the metrics' base class: its subclasses are the tools
            found[f"{room}.{name}"] = cls
    return [found[k] for k in sorted(found)]


TOOLS = _public_tools()

#: classes whose constructor needs real arguments before it reaches its own check of the settings
CALLS = {
    "MethodSpace": (("integrated_gradients",), "steps"),
}


def _setting(cls: type) -> str | None:
    """The setting to misspell: the first parameter with a default (else the first one), ``None`` if none."""
    params = [p for p in inspect.signature(inspect.unwrap(cls.__init__)).parameters.values()
              if p.name not in ("self", "model") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    with_default = [p for p in params if p.default is not p.empty]
    chosen = with_default or params
    return chosen[0].name if chosen else None


def test_the_rooms_have_public_tools():
    names = {cls.__name__ for cls in TOOLS}
    assert {"LRP", "BiLRP", "Ablation", "FeatureVisualisation", "RightForRightReasonsLoss", "ExplanationGuidedLoss",
            "LRPSpace", "MethodSpace", "Prototypes", "FeatureIndex", "PixelFlipping", "TokenLogits"} <= names
    assert "ChannelScores" not in names  # results are not tools


@pytest.mark.parametrize("cls", TOOLS, ids=lambda c: c.__name__)
def test_every_public_constructor_refuses_a_misspelt_setting_with_the_close_name(cls):
    takes_model = "model" in inspect.signature(inspect.unwrap(cls.__init__)).parameters
    args, setting = CALLS.get(cls.__name__, ((_mlp(),) if takes_model else (), _setting(cls)))
    if setting is None:  # no settings at all: any keyword is refused by name
        with pytest.raises(TypeError, match="unknown setting 'bogus'"):
            cls(bogus=1)
        return
    misspelt = setting + setting[-1]
    with pytest.raises(TypeError) as caught:
        cls(*args, **{misspelt: 1})
    message = str(caught.value)
    assert repr(misspelt) in message and f"did you mean {setting!r}" in message, message


def test_close_names_in_the_binder_and_lrp_settings():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(UnknownSetting, match="did you mean 'composite'"):
        xk.LRP(model, composit="epsilon")
    with pytest.raises(TypeError, match="unknown LRP setting 'epsilom'; did you mean 'epsilon'"):
        xk.LRP(model, epsilom=0.1)
    with pytest.raises(TypeError, match="did you mean 'similarity'"):
        xk.BiLRP(model, similarty="dot")


# ---- one way to name the explainer ------------------------------------------------------------------------------


class _Pooled(nn.Module):
    """Embedding vectors (N, L, 6) -> a sequence embedding (N, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).sum(1)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def test_parse_spec_reads_literals_and_keeps_tuples_together():
    assert parse_spec("lrp:composite=epsilon,epsilon=0.1") == ("lrp", {"composite": "epsilon", "epsilon": 0.1})
    assert parse_spec("occlusion:window=(8, 8),stride=4") == ("occlusion", {"window": (8, 8), "stride": 4})
    assert parse_spec("gradient") == ("gradient", {})
    with pytest.raises(ValueError, match="bad setting"):
        parse_spec("lrp:composite")


def test_the_cli_reads_specs_with_the_same_parser():
    from xaikit.cli.errors import UsageError
    from xaikit.cli.specs import parse_spec as cli_parse

    assert cli_parse("integrated_gradients:steps=32,baseline=blur") == parse_spec(
        "integrated_gradients:steps=32,baseline=blur")
    with pytest.raises(UsageError, match="empty name"):
        cli_parse(":steps=3")


def test_resolve_method_takes_a_name_a_spec_a_class_or_an_object():
    model = _mlp()
    assert isinstance(resolve_method(model, "gradient"), xk.Gradient)
    ig = resolve_method(model, "integrated_gradients:steps=4", {"baseline": "zero"})
    assert isinstance(ig, xk.IntegratedGradients) and ig.steps == 4
    lrp = resolve_method(model, xk.LRP, {"composite": "epsilon"})
    assert lrp.composite.name == "epsilon"
    own = xk.InputXGradient(model)
    assert resolve_method(model, own) is own
    default = resolve_method(model, None, default=DEFAULT_METHODS["training"])
    assert default.composite.name == "epsilon_plus"
    adjusted = resolve_method(model, None, {"composite": "zero"}, default=DEFAULT_METHODS["image"])
    assert adjusted.composite.name == "zero"  # method_settings adjust the default


def test_resolve_method_errors_name_the_argument_and_the_fix():
    model = _mlp()
    with pytest.raises(ValueError, match="unknown method 'integrated_gradient'; did you mean 'integrated_gradients'"):
        resolve_method(model, "integrated_gradient")
    with pytest.raises(TypeError, match="method='integrated_gradients:step=4'.*did you mean 'steps'"):
        resolve_method(model, "integrated_gradients:step=4")
    with pytest.raises(ValueError, match="steps given both"):
        resolve_method(model, "integrated_gradients:steps=4", {"steps": 8})
    with pytest.raises(ValueError, match="built on another model"):
        resolve_method(model, xk.Gradient(_mlp()))
    with pytest.raises(ValueError, match="method_settings apply to a method given by name"):
        resolve_method(model, xk.Gradient(model), {"batch_size": 2})
    with pytest.raises(TypeError, match="method_settings must be a dict"):
        resolve_method(model, "gradient", "epsilon")
    with pytest.raises(ValueError, match="has no relevance inside"):
        xk.concepts.ChannelRelevance(model, "1", method="occlusion:window=2")


def test_concepts_take_a_spec_string_like_the_cli():
    model = _mlp()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    by_spec = xk.concepts.ChannelRelevance(model, "1", method="lrp:composite=epsilon,epsilon=1e-6")
    by_settings = xk.concepts.ChannelRelevance(model, "1", method="lrp",
                                               method_settings={"composite": "epsilon", "epsilon": 1e-6})
    assert by_spec.method.composite.name == by_settings.method.composite.name == "epsilon"
    y = torch.tensor([0, 1, 2, 0])
    a, b = by_spec((x, y)), by_settings((x, y))
    torch.testing.assert_close(a.score, b.score)


def test_improve_old_explainer_keywords_warn_and_match_the_new_form():
    from xaikit.improve import ExplanationGuidedLoss, RightForRightReasonsLoss, rrr_penalty

    model = _mlp()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(5, 6, generator=g), torch.randint(0, 3, (5,), generator=g)
    masks = (torch.rand(5, 6, generator=g) > 0.5)
    new = rrr_penalty(model, x, masks, y, method="lrp:composite=epsilon")
    with pytest.warns(DeprecationWarning, match="method='lrp:composite=NAME'"):
        old = rrr_penalty(model, x, masks, y, explainer="lrp", composite="epsilon")
    torch.testing.assert_close(new, old)
    with pytest.warns(DeprecationWarning):
        old_default = rrr_penalty(model, x, masks, y, explainer="lrp")  # the old default composite epsilon_plus
    torch.testing.assert_close(old_default, rrr_penalty(model, x, masks, y, method=DEFAULT_METHODS["training"]))
    with pytest.warns(DeprecationWarning):
        RightForRightReasonsLoss(explainer="input_x_gradient")
    with pytest.warns(DeprecationWarning):
        ExplanationGuidedLoss("1", composite="epsilon")
    with pytest.raises(ValueError, match="does not support create_graph"):
        RightForRightReasonsLoss(method="occlusion")
    with pytest.raises(TypeError, match="did you mean 'composite'"):  # refused when built, not when trained
        ExplanationGuidedLoss("1", method="lrp:composit=epsilon")


def test_loss_modules_return_their_parts_and_keep_no_graph():
    from xaikit.improve import ExplanationGuidedLoss, RightForRightReasonsLoss

    model = _mlp()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g)
    masks = torch.ones(4, 6)
    for loss_fn, args in ((RightForRightReasonsLoss(lam=1.0), (masks,)), (ExplanationGuidedLoss("1"), ())):
        total = loss_fn(model, x, y, *args)
        parts = loss_fn(model, x, y, *args, return_parts=True)
        torch.testing.assert_close(parts.loss, total)
        torch.testing.assert_close(parts.logits, model(x))
        assert parts.logits.requires_grad and set(parts.terms) >= {"task"}
        with pytest.warns(DeprecationWarning, match="return_parts=True"):
            kept = loss_fn.logits
        assert not kept.requires_grad  # the deprecated view holds no graph
        with pytest.warns(DeprecationWarning):
            assert loss_fn.last == parts.terms


def test_renamed_keywords_of_other_things_than_explainers():
    from xaikit.examples import Prototypes
    from xaikit.improve import fit_cav

    with pytest.warns(DeprecationWarning, match="clustering="):
        protos = Prototypes(method="kmedoids")
    assert protos.clustering == "kmedoids"
    model = _mlp()
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(8, 6, generator=g) + 1, torch.randn(8, 6, generator=g)
    with pytest.warns(DeprecationWarning, match="classifier="):
        old = fit_cav(model, "1", a, b, method="pattern")
    new = fit_cav(model, "1", a, b, classifier="pattern")
    torch.testing.assert_close(old.direction, new.direction)


def test_bilrp_and_channel_relevance_accept_the_old_composite_with_a_warning():
    model = _mlp()
    torch.manual_seed(0)
    encoder = _Pooled().eval()
    a = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(5))
    new = xk.BiLRP(encoder, "lrp:composite=epsilon", similarity="dot")(a, a)
    with pytest.warns(DeprecationWarning):
        old = xk.BiLRP(encoder, "epsilon", similarity="dot")(a, a)
    torch.testing.assert_close(new.attribution, old.attribution)
    assert xk.BiLRP(encoder).method.composite.name == "attnlrp"  # DEFAULT_METHODS["transformer"]
    from xaikit.examples import channel_relevance

    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(6))
    with pytest.warns(DeprecationWarning):
        old = channel_relevance(model, x, "1", target=0, composite="epsilon")
    new = channel_relevance(model, x, "1", target=0, method="lrp:composite=epsilon")
    torch.testing.assert_close(old, new)


# ---- batch_size ---------------------------------------------------------------------------------------------------


def test_batch_size_is_auto_or_a_positive_int_everywhere():
    assert check_batch_size("auto") == "auto" and check_batch_size(3) == 3
    for bad in (0, -1, 2.5, True, "big"):
        with pytest.raises(ValueError, match="batch_size must be 'auto' or a positive int"):
            check_batch_size(bad)
    assert batch_size_for(7, torch.zeros(3)) == 7 and batch_size_for("auto", torch.zeros(3)) >= 1
    model = _mlp()
    for build in (lambda b: xk.concepts.Ablation(model, "1", 2, batch_size=b),
                  lambda b: xk.examples.FeatureIndex(model, batch_size=b),
                  lambda b: xk.examples.TracIn(model, batch_size=b),
                  lambda b: xk.BiLRP(model, batch_size=b)):
        build("auto")
        with pytest.raises(ValueError, match="batch_size"):
            build(0)


def test_feature_index_with_auto_batches_finds_the_same_neighbours():
    model = _mlp()
    x = torch.randn(20, 6, generator=torch.Generator().manual_seed(7))
    fixed = xk.examples.FeatureIndex(model, batch_size=3).fit(x)
    auto = xk.examples.FeatureIndex(model, batch_size="auto").fit(x)
    torch.testing.assert_close(fixed.vectors, auto.vectors)


def test_tune_chunk_is_renamed_batch_size():
    from xaikit.tune import MethodSpace, tune

    model = _mlp()
    g = torch.Generator().manual_seed(8)
    data = (torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g))
    space = MethodSpace("integrated_gradients:baseline=zero", steps=[1, 2])
    assert space.fixed == {"baseline": "zero"}
    new = tune(model, data, space, "pixel_flipping", strategy="grid", batch_size="auto")
    with pytest.warns(DeprecationWarning, match="batch_size="):
        old = tune(model, data, space, "pixel_flipping", strategy="grid", chunk=1)
    assert new.winner.key == old.winner.key
    from xaikit.tune import holdout

    table = holdout(model, data, {"spec": "integrated_gradients:steps=1", "object": xk.IntegratedGradients(model)},
                    "pixel_flipping", batch_size="auto")
    assert set(table.scores["pixel_flipping"]) == {"spec", "object"}


def test_run_spec_reads_method_specs():
    from xaikit.run.spec import RunSpec

    spec = RunSpec("xaikit.zoo:nothing", methods=["lrp:composite=epsilon_gamma_box,gamma=0.5", "gradient"])
    assert spec.method_items["lrp:composite=epsilon_gamma_box,gamma=0.5"] == (
        "lrp", {"composite": "epsilon_gamma_box", "gamma": 0.5})
    assert spec.method_items["gradient"] == ("gradient", {})


def test_no_deprecation_warning_on_the_new_forms():
    model = _mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        xk.BiLRP(_Pooled(), method="lrp:composite=epsilon", method_settings={"epsilon": 0.1})
        xk.improve.RightForRightReasonsLoss(method="input_x_gradient")
        xk.examples.Prototypes(clustering="kmeans")
        xk.concepts.Composition(model, "1", method="gradient")


def test_generation_takes_a_spec_with_the_model():
    from llm_models import llm, padded_prompts
    from xaikit.generation import explain_generation

    model = llm("llama", "sdpa", seed=3).double()
    ids, mask = padded_prompts((4, 3), "right")
    by_object = explain_generation(xk.LRP(model, composite="attnlrp"), ids, mask, max_new_tokens=2)
    by_default = explain_generation(None, ids, mask, max_new_tokens=2, model=model)
    torch.testing.assert_close(by_object.relevance, by_default.relevance)
    by_spec = explain_generation("input_x_gradient", ids, mask, max_new_tokens=2, model=model)
    assert by_spec.relevance.shape == by_object.relevance.shape
    with pytest.raises(TypeError, match="give model="):
        explain_generation("lrp", ids, mask)


def test_pruning_names_its_explainer_like_every_room():
    from xaikit.improve import channel_importance

    model = _mlp()
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(6, 6, generator=g), torch.randint(0, 3, (6,), generator=g)
    new = channel_importance(model, "1", x, y, "lrp", "lrp:composite=zero")["1"]
    with pytest.warns(DeprecationWarning):
        by_position = channel_importance(model, "1", x, y, "lrp", "zero")["1"]  # the old positional composite
    with pytest.warns(DeprecationWarning):
        by_keyword = channel_importance(model, "1", x, y, "lrp", composite="zero")["1"]
    torch.testing.assert_close(new, by_position)
    torch.testing.assert_close(new, by_keyword)
    torch.testing.assert_close(channel_importance(model, "1", x, y, "lrp", "input_x_gradient")["1"],
                               channel_importance(model, "1", x, y, "lrp", xk.InputXGradient(model))["1"])
    with pytest.raises(ValueError, match="applies to the relevance criterion"):
        channel_importance(model, "1", x, y, "taylor", "gradient")


def test_metrics_take_a_method_spec_as_the_explanation():
    model = _mlp()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(10))
    metric = xk.metrics.LocalLipschitzEstimate(samples=2)
    by_spec = metric(model, x, 0, "integrated_gradients:steps=2")
    by_object = metric(model, x, 0, xk.IntegratedGradients(model, steps=2))
    torch.testing.assert_close(by_spec, by_object)


def test_a_tools_own_settings_reach_a_method_given_by_name_unless_it_sets_them():
    """``passed_on``: the one rule by which a tool's ``batch_size``/``progress`` reach its explainer."""
    from xaikit.methods.resolve import passed_on

    model = torch.nn.Linear(3, 2)
    assert passed_on("gradient", None, batch_size=4) == {"batch_size": 4}
    assert passed_on(None, {"composite": "zero"}, "lrp", batch_size=4) == {"composite": "zero", "batch_size": 4}
    assert passed_on("lrp:batch_size=2", None, batch_size=4) is None  # the spec sets it
    assert passed_on("gradient", {"batch_size": 2}, batch_size=4) == {"batch_size": 2}
    assert passed_on(xk.Gradient, None, progress=True) == {"progress": True}
    assert passed_on("gradient", None, batch_size=None, unknown_setting=1) is None  # no opinion; not accepted
    assert passed_on(xk.Gradient(model), None, batch_size=4) is None  # an object keeps its own settings
    assert passed_on("no_such_method", None, batch_size=4) is None  # refused later, by resolve_method
