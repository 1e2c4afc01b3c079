"""xk.improve.training_culprits: the training samples behind a planted artifact found by TRAK on decoy digits;
the score equals its definition computed by hand; bad input named."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaikit as xk
from xaikit.metrics import detection_auc
from xaikit.zoo import make_decoy_digits


@pytest.fixture(scope="module")
def planted():
    """Decoy digits without decoys; a bright 2×2 corner patch (the decoy set's mask) planted on half of the
    class-3 training images only, an MLP that learns it (poisoned test digits of other classes flip to 3)."""
    train, test = make_decoy_digits(seed=0, n_train=600, decoy=False)
    g = torch.Generator().manual_seed(0)
    artifact = (train.y == 3) & (torch.rand(600, generator=g) < 0.5)
    x = torch.where(artifact.view(-1, 1, 1, 1) & train.mask, torch.tensor(1.0), train.x)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), train.y).backward()
        opt.step()
    model.eval()
    poisoned = torch.where(test.mask, torch.tensor(1.0), test.x)
    with torch.no_grad():
        wrong = ((model(poisoned).argmax(1) == 3) & (test.y != 3)).nonzero()[:30, 0]
    return model, x, train.y, artifact, poisoned[wrong], test.x[wrong]


def test_trak_culprits_find_the_training_samples_that_carry_the_artifact(planted):
    model, x, y, artifact, queries, clean = planted
    assert queries.shape[0] == 30 and int(artifact.sum()) == 26  # the shortcut is learnt: 30 wrong-reason flips
    trak = xk.examples.TRAK(model, projection=128, newton=False).fit((x, y))
    found = xk.improve.training_culprits(trak, queries, reference=clean)
    auc = detection_auc(found.score, artifact)
    precision = float(artifact[found.top(20)].float().mean())
    assert auc > 0.75 and precision > 0.4  # measured 0.81 and 13/20; the base rate is 26/600 = 0.043
    inside = y == 3  # not just "class 3": the patched images rank above the clean images of their class
    assert detection_auc(found.score[inside], artifact[inside]) > 0.8
    by_hand = (trak.scores(queries, found.label).double() - trak.scores(clean, found.label).double()).mean(0)
    torch.testing.assert_close(found.score, by_hand, rtol=1e-5, atol=1e-5 * float(by_hand.abs().max()))
    assert (found.score[found.ranking].diff() <= 0).all()  # strongest suspect first
    assert list(found.to_pandas().columns) == ["rank", "index", "score"]


def test_training_culprits_rejects_bad_input(planted):
    model, x, y, _, queries, clean = planted
    trak = xk.examples.TRAK(model, projection=16).fit((x[:100], y[:100]))
    with pytest.raises(TypeError, match="attributor"):
        xk.improve.training_culprits(model, queries)
    with pytest.raises(ValueError, match="reference"):
        xk.improve.training_culprits(trak, queries, reference=clean[:3])
    with pytest.raises(ValueError, match="labels"):
        xk.improve.training_culprits(trak, queries, y=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        xk.improve.training_culprits(trak, queries[:0])
