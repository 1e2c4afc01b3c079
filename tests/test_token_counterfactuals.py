"""Text counterfactuals (xaikit.counterfactuals.TokenCounterfactuals, HotFlip): on a tiny bag-of-embeddings model
built here, where the token that flips the class is known, the search finds it with the fewest substitutions,
never touches frozen tokens, leaves the model unchanged and refuses bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from xaikit.counterfactuals import TokenCounterfactuals

from models import assert_unchanged, snapshot


class BagModel(nn.Module):
    """Class score = sum over positions of a per-token weight: token 7 counts +3 for class 1, token 4 counts +1,
    every other token (0 … 9) −0.5 (class 0 has score 0). The embedding holds the weight in its first
    coordinate, so HotFlip's first-order score is exact."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 3)
        with torch.no_grad():
            self.embed.weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
            self.embed.weight[:, 0] = -0.5
            self.embed.weight[7, 0] = 3.0
            self.embed.weight[4, 0] = 1.0

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        s = self.embed(ids)[..., 0].sum(1)
        return torch.stack([torch.zeros_like(s), s], 1)


def test_hotflip_finds_the_known_flipping_token_and_respects_frozen_tokens():
    model = BagModel().eval()
    before = snapshot(model)
    x = torch.tensor([[1, 2, 3, 5], [1, 2, 3, 5], [0, 7, 2, 3]])  # sums −2, −2, 1.5: classes 0, 0, 1
    explainer = TokenCounterfactuals(model, max_changes=3, candidates=4, frozen=[1])
    result = explainer(x, target=torch.tensor([1, 1, 0]))
    assert_unchanged(model, before)
    assert result.found.all() and torch.equal(result.predicted, torch.tensor([1, 1, 0]))
    for i in (0, 1):  # one substitution by 7 gives −1.5 + 3 = 1.5 > 0: exactly one change, to token 7
        assert int(result.changed[i].sum()) == 1 and int(result.counterfactuals[i][result.changed[i]]) == 7
        assert int(result.counterfactuals[i, 0]) == 1  # the frozen token stays
    # back to class 0 from 1.5: replacing the 7 (by any −0.5 token) gives −2 — one substitution
    assert int(result.changed[2].sum()) == 1 and int(result.counterfactuals[2, 1]) != 7
    # brute force: no sample is already of its target, and the single substitutions that flip sample 0 (any
    # non-frozen position to 7, and only those) include the one found
    assert not bool((model(x).argmax(1) == result.target).any())
    flips = {(p, v) for p in range(1, 4) for v in range(10)
             if int(model(x[:1].index_put((torch.tensor([0]), torch.tensor([p])), torch.tensor([v]))).argmax(1)) == 1}
    assert flips == {(1, 7), (2, 7), (3, 7)}
    p = int(result.changed[0].nonzero()[0, 0])
    assert (p, int(result.counterfactuals[0, p])) in flips
    assert "-> 7" in result.changes(0)
    assert list(result.to_pandas().columns)[:3] == ["sample", "original", "target"]


def test_no_counterfactual_within_max_changes_is_reported():
    model = BagModel().eval()
    x = torch.tensor([[2, 3, 5, 6, 8, 9, 0, 2]])  # −4: one 7 gives −0.5, two give 3
    with pytest.warns(UserWarning, match="none found"):
        result = TokenCounterfactuals(model, max_changes=1, frozen=[])(x, target=1)
    assert not result.found.any()
    result = TokenCounterfactuals(model, max_changes=2)(x, target=1)
    assert result.found.all() and int(result.changed.sum()) == 2


def test_bad_input_is_named():
    model = BagModel().eval()
    with pytest.raises(ValueError, match="target must name a class"):
        TokenCounterfactuals(model)(torch.tensor([[1, 2]]), target=5)
    with pytest.raises(ValueError, match="vocabulary"):
        TokenCounterfactuals(model)(torch.tensor([[1, 12]]), target=1)
    with pytest.raises(ValueError, match="token ids"):
        TokenCounterfactuals(model)(torch.rand(1, 3), target=1)
    with pytest.raises(ValueError, match="embedding"):
        TokenCounterfactuals(lambda ids: ids, max_changes=1)
    with pytest.raises(TypeError, match="did you mean 'max_changes'"):
        TokenCounterfactuals(model, max_change=2)
