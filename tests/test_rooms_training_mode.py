"""The rooms built on the engine (concepts, examples, improve's analysis tools) leave a model that is in
training mode exactly as it was: parameters, BatchNorm statistics, hooks and every module's flag."""
import pytest
import torch

from models import assert_unchanged, randomise_batchnorm, snapshot
from xaikit.zoo import ShapesCNN, make_shapes


@pytest.fixture
def case():
    torch.manual_seed(0)
    model = randomise_batchnorm(ShapesCNN(width=4), seed=2).train()
    model.head.eval()  # mixed flags: they must all come back as they were
    data = make_shapes(12, size=16, seed=3)
    return model, data.x, data.y


def _calls(model, x, y):
    from xaikit.concepts import ChannelRelevance, Composition, ReferenceSamples
    from xaikit.examples import CEM, FeatureIndex, TracIn

    yield "Composition", lambda: Composition(model, "features.9", top=2)(x[:2], 0)
    yield "ChannelRelevance", lambda: ChannelRelevance(model, "features.9")([(x, y)])
    yield "ReferenceSamples", lambda: ReferenceSamples(model, "features.9", n=2, progress=False)([(x, y)])
    index = FeatureIndex(model)

    def neighbours():
        index.fit((x, y))
        found = index.neighbours(x[:2], k=2)
        index.heatmaps(x[:2], found)

    yield "FeatureIndex", neighbours
    tracin = TracIn(model)

    def influence():
        tracin.fit((x, y))
        tracin.top(x[:2], k=2)

    yield "TracIn", influence
    yield "CEM", lambda: CEM(model, feature_range=(-1.0, 1.0), c_steps=1, iterations=3)(x[:2])
    yield from _new_tools(model, x, y)


def _new_tools(model, x, y):
    """The tools added with regression, interactions, rules, counterfactuals, data attribution and the peers'
    methods: each runs the model (forward, gradients or training-free fits) and must leave it as it was."""
    import xaikit as xk

    yield "DeepLift", lambda: xk.DeepLift(model)(x[:2], 0)
    yield "GradientShap", lambda: xk.GradientShap(model, background=x[4:6], samples=3, seed=0)(x[:2], 0)
    yield "LayerConductance", lambda: xk.LayerConductance(model, layer="features.9", steps=2)(x[:2], 0)
    yield "NeuronAttribution", lambda: xk.NeuronAttribution(model, layer="features.9")(x[:2], 0)
    yield "Regression", lambda: xk.regression.Regression(model, method="input_x_gradient")(x[:2], 0)
    yield "ShapleyInteractions", lambda: xk.interactions.ShapleyInteractions(
        model, order=2, features="grid:2", seed=0)(x[:2], 0)
    yield "TCAV", lambda: xk.concepts.TCAV(model, "features.9", runs=2, seed=0).fit(
        {"first": x[:4]}, random=x[4:])(x[:2], 0)
    yield "TRAK", lambda: xk.examples.TRAK(model, projection=8).fit((x, y)).scores(x[:2], y[:2])
    yield "InfluenceFunctions", lambda: xk.examples.InfluenceFunctions(model, hessian="exact").fit(
        (x, y)).scores(x[:2], y[:2])
    yield "Counterfactuals", lambda: xk.counterfactuals.Counterfactuals(model, search="gradient")(x[:1], 1)
    yield from _third_session_tools(model, x, y)


def _third_session_tools(model, x, y):
    """Explanatory interactive learning (a revised *copy*), the training samples behind a prediction, and the
    seed's pruning setting: the user's model must stay as it was."""
    import xaikit as xk

    mask = torch.zeros_like(x[:1])
    mask[..., :4, :4] = 1
    yield "Revise", lambda: xk.improve.Revise(model, "rrr", epochs=1, batch_size=6)(x, y, mask)
    yield "training_culprits", lambda: xk.improve.training_culprits(
        xk.examples.TRAK(model, projection=8, newton=False).fit((x, y)), x[:2])
    yield "Anchors", lambda: xk.rules.Anchors(model, features="grid:4", seed=0, max_samples=128)(x[:1])
    yield "channel_importance(reference_samples)", lambda: xk.improve.channel_importance(
        model, "features.9", x[xk.improve.reference_samples(y, 1, 0)], y[xk.improve.reference_samples(y, 1, 0)])


NAMES = ["Composition", "ChannelRelevance", "ReferenceSamples", "FeatureIndex", "TracIn", "CEM", "DeepLift",
         "GradientShap", "LayerConductance", "NeuronAttribution", "Regression", "ShapleyInteractions", "TCAV",
         "TRAK", "InfluenceFunctions", "Counterfactuals", "Revise", "training_culprits",
         "channel_importance(reference_samples)", "Anchors"]


@pytest.mark.parametrize("name", NAMES)
def test_a_model_in_training_mode_is_left_unchanged(case, name):
    model, x, y = case
    call = dict(_calls(model, x, y))[name]
    before = snapshot(model)
    call()
    assert_unchanged(model, before)


# -- a model in training mode that raises inside its forward: every room's entry point leaves it unchanged ---------
class _RaisingReLU(torch.nn.ReLU):
    """A ReLU that raises in its ``fail_at``-th call."""

    def __init__(self, fail_at: int):
        super().__init__()
        self.fail_at, self.calls = fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("boom inside the forward")
        return super().forward(x)


def _raising(fail_at: int) -> ShapesCNN:
    """ShapesCNN whose last ReLU (``features.10``) raises in the ``fail_at``-th forward pass: after
    ``features.9``, so the rooms' hooks on that layer have fired and their tensor hooks are on the graph."""
    model = ShapesCNN(width=4)
    model.features[10] = _RaisingReLU(fail_at)
    return model


def _entry_points(model, x, y):
    """``(room, name, call)`` for the public entry point of each room that runs the model."""
    import xaikit as xk
    from xaikit import concepts, examples, improve, tune

    yield "methods", "LRP", lambda: xk.LRP(model)(x[:2], 0)
    yield "methods", "GradCAM", lambda: xk.GradCAM(model, "features.9")(x[:2], 0)
    yield "methods", "Occlusion", lambda: xk.Occlusion(model, window=8)(x[:2], 0)
    yield "metrics", "PixelFlipping", lambda: xk.metrics.PixelFlipping(pixels_per_step=64)(model, x[:2], 0,
                                                                                           torch.rand(2, 3, 16, 16))
    yield "metrics", "RelativeRepresentationStability", lambda: xk.metrics.RelativeRepresentationStability(
        layer="features.9", samples=2)(model, x[:2], 0, xk.Gradient(model))
    yield "metrics", "MPRT", lambda: xk.metrics.MPRT(layers=["head"])(model, x[:2], 0, xk.Gradient(model))
    yield "concepts", "Composition", lambda: concepts.Composition(model, "features.9", top=2)(x[:2], 0)
    yield "concepts", "ChannelRelevance", lambda: concepts.ChannelRelevance(model, "features.9")([(x, y)])
    yield "concepts", "ReferenceSamples", lambda: concepts.ReferenceSamples(model, "features.9", n=2,
                                                                            progress=False)([(x, y)])
    yield "concepts", "Ablation", lambda: concepts.Ablation(model, "features.9", k=2, draws=1)((x, y), torch.rand(8))
    yield "concepts", "Embedding", lambda: concepts.Embedding(model, "features.9")((x, y))
    yield "concepts", "FeatureVisualisation", lambda: concepts.FeatureVisualisation(
        model, "features.10", (3, 16, 16), steps=2)([0])  # its forward passes stop after this layer
    yield "examples", "channel_relevance", lambda: examples.channel_relevance(model, x[:2], "features.9", target=0)
    yield "examples", "FeatureIndex", lambda: examples.FeatureIndex(model).fit((x, y))
    yield "examples", "TracIn", lambda: examples.TracIn(model).fit((x, y))
    yield "examples", "CEM", lambda: examples.CEM(model, feature_range=(-1.0, 1.0), c_steps=1, iterations=3)(x[:2])
    yield "improve", "channel_importance", lambda: improve.channel_importance(model, "features.9", x[:4], y[:4])
    yield "improve", "channel_importance(taylor)", lambda: improve.channel_importance(
        model, "features.9", x[:4], y[:4], criterion="taylor")
    yield "improve", "fit_cav", lambda: improve.fit_cav(model, "features.9", x[:6], x[6:], classifier="pattern")
    yield "improve", "layers_after", lambda: improve.clarc.layers_after(model, "features.9", x)
    yield "rules", "Anchors", lambda: xk.rules.Anchors(model, features="grid:4", seed=0, max_samples=128)(x[:1])
    yield "tune", "tune", lambda: tune.tune(model, (x, None), tune.MethodSpace("integrated_gradients", steps=[1, 2]),
                                                "pixel_flipping", strategy="grid")


_CASES = [(room, name) for room, name, _ in _entry_points(None, None, None)]


@pytest.mark.parametrize("fail_at", [1, 2])
@pytest.mark.parametrize("room,name", _CASES, ids=[f"{r}-{n}" for r, n in _CASES])
def test_a_model_that_raises_in_training_mode_is_left_unchanged(room, name, fail_at):
    """The error reaches the caller, and the model's flags (mixed: the head in eval mode), hooks, parameters
    and BatchNorm statistics are as before, whether the first or a later forward pass raised."""
    torch.manual_seed(0)
    model = randomise_batchnorm(_raising(fail_at), seed=2).train()
    model.head.eval()
    data = make_shapes(12, size=16, seed=3)
    call = {n: c for _, n, c in _entry_points(model, data.x, data.y)}[name]
    before = snapshot(model)
    try:
        call()
    except RuntimeError as error:
        assert "boom inside the forward" in str(error)
    else:  # a tool that runs the model once only and does not raise at the second call
        assert fail_at == 2 and model.features[10].calls < 2
    assert model.features[10].calls >= 1
    assert_unchanged(model, before)


def test_building_a_wrapper_leaves_the_models_mixed_flags():
    """Wrappers of the user's model (ClArC's Projected, the input-invariance shift, the embedding-space view,
    LayerFeatures) follow its training flag; building one wrote every flag with ``self.train(mode)``."""
    from xaikit.examples import LayerFeatures
    from xaikit.improve import CAV, Projected
    from xaikit.metrics.axiomatic import _Shifted

    torch.manual_seed(0)
    model = ShapesCNN(width=4).train()
    model.head.eval()
    before = snapshot(model)
    cav = CAV("features.9", torch.ones(8, 4, 4), torch.zeros(8, 4, 4), torch.ones(8, 4, 4), "pattern", 1.0)
    wrappers = [Projected(model, cav), _Shifted(model, 0.5), LayerFeatures(model, "features.9")]
    assert_unchanged(model, before)
    assert all(w.training for w in wrappers)
    model.eval()
    assert not any(w.training for w in wrappers)
