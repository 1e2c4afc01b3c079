"""One definition of relevance at a layer (issue 22, defect 2): :class:`~xaikit.propagation.record.Recorder`.

On Conv → BatchNorm → ReLU the engine folds the BatchNorm into the convolution: the folded layer is one linear
layer whose output is the BatchNorm's, and the gradient that reaches the convolution's own output is the
folded layer's (``FoldGate`` passes it on unchanged). The relevance at the convolution is therefore that of the
folded output, ``R = BN(z) ⊙ g``; the product of the *unfolded* output with that gradient, ``z ⊙ g`` (what a
hand-written hook reads), belongs to no layer and breaks conservation.
"""
import pytest
import torch
from torch import nn

import xaikit as xk
from xaikit.examples import channel_relevance
from xaikit.propagation.record import Recorder


def _conv_bn_relu(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 2, bias=False))
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    return model.eval()


def _closed_form(model: nn.Sequential, x: torch.Tensor, target: int):
    """The bias-free head gives ``g = W_t ⊙ 1[z' > 0]`` at the BatchNorm output ``z'``. Per channel: the
    relevance at the BatchNorm (= ReLU) output ``Σ_pos z' ⊙ g``, the same without the BatchNorm's shift ``c``
    ``Σ_pos (z' − c) ⊙ g``; and per sample the logit and what the shift absorbs, ``Σ c ⊙ g``."""
    conv, bn, head = model[0], model[1], model[4]
    with torch.no_grad():
        z = bn(conv(x))
        g = head.weight[target].view(1, 4, 6, 6) * (z > 0)
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        shift = (bn.bias - scale * bn.running_mean).view(1, 4, 1, 1)
        at_bn = (z * g).flatten(2).sum(2)
        without_shift = ((z - shift) * g).flatten(2).sum(2)
        logit = head(z.relu().flatten(1))[:, target]
    return at_bn, without_shift, logit, (shift * g).flatten(1).sum(1)


@pytest.mark.parametrize("layer", ["0", "1", "2"])
@pytest.mark.parametrize("composite", ["epsilon", "zero"])
def test_relevance_at_a_layer_is_the_closed_form_and_conserves(layer, composite):
    """ε: the BatchNorm is folded into the convolution, whose relevance is the folded output's. LRP-0 layers
    are plain autograd (no fold): the BatchNorm is an affine map whose shift absorbs ``c ⊙ g`` between the
    convolution and its output. Either way the relevance at the layer is what the rules redistribute."""
    model = _conv_bn_relu()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    at_bn, without_shift, logit, absorbed = _closed_form(model, x, 0)
    settings = {"epsilon": 1e-9} if composite == "epsilon" else {}
    folded = composite == "epsilon"
    expected = at_bn if folded or layer != "0" else without_shift
    with Recorder(model, [layer]) as rec:
        expl = xk.LRP(model, composite=composite, **settings)(x, target=0)
    recorded = rec[layer].per_channel()
    torch.testing.assert_close(recorded, expected, rtol=1e-5, atol=1e-5)
    # conservation: what reaches the input plus what is absorbed between (the shift, folded or not) is the
    # relevance at the layer, which the bias-free head passes on from the logit unchanged
    input_total = expl.attribution.flatten(1).sum(1)
    between = absorbed if folded or layer != "0" else torch.zeros_like(absorbed)
    torch.testing.assert_close(recorded.sum(1), input_total + between, rtol=1e-4, atol=1e-5)
    if folded or layer != "0":
        torch.testing.assert_close(recorded.sum(1), logit, rtol=1e-5, atol=1e-5)
    # the examples room reads the same relevance (its own hook read z ⊙ g at the convolution: with the fold,
    # the unfolded output times the folded layer's gradient, which belongs to no layer)
    vectors = channel_relevance(model, x, layer, target=0, method=f"lrp:composite={composite}",
                                method_settings=settings, normalise=False)
    torch.testing.assert_close(vectors, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_plus_flat"])
def test_channel_relevance_agrees_with_the_recorder(composite):
    model = _conv_bn_relu(seed=2)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 0, 1])
    for layer in ("0", "1", "2"):
        with Recorder(model, [layer], keep=("relevance",)) as rec:
            xk.LRP(model, composite=composite)(x, target=y)
        vectors = channel_relevance(model, x, layer, target=y, method=f"lrp:composite={composite}",
                                    normalise=False, batch_size=3)  # chunks of the batch land in the samples' order
        torch.testing.assert_close(vectors, rec[layer].per_channel(), rtol=1e-5, atol=1e-6)


def test_channel_relevance_of_a_token_layer_by_axis():
    """An ``(N, L, D)`` output: the hidden units by default (Recorder's channel axis), the tokens with axis=1;
    both sum to the same relevance at the layer."""
    torch.manual_seed(0)

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = nn.Linear(4, 6)
            self.head = nn.Linear(5 * 6, 2)

        def forward(self, x):
            return self.head(torch.relu(self.mix(x)).flatten(1))

    model = Tokens().eval()
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(4))
    units = channel_relevance(model, x, "mix", target=1, method="lrp:composite=epsilon", normalise=False)
    tokens = channel_relevance(model, x, "mix", target=1, method="lrp:composite=epsilon", normalise=False,
                               axis=1)
    assert units.shape == (3, 6) and tokens.shape == (3, 5)
    torch.testing.assert_close(units.sum(1), tokens.sum(1), rtol=1e-5, atol=1e-6)
    with Recorder(model, ["mix"], axis=1, keep=("relevance",)) as rec:
        xk.LRP(model, composite="epsilon")(x, target=1)
    torch.testing.assert_close(tokens, rec["mix"].per_channel(), rtol=1e-5, atol=1e-6)
