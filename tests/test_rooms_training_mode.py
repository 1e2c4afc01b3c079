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


@pytest.mark.parametrize("name", ["Composition", "ChannelRelevance", "ReferenceSamples", "FeatureIndex", "TracIn",
                                  "CEM"])
def test_a_model_in_training_mode_is_left_unchanged(case, name):
    model, x, y = case
    call = dict(_calls(model, x, y))[name]
    before = snapshot(model)
    call()
    assert_unchanged(model, before)
