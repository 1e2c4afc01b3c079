import torch

import xaikit as xk
from models import mlp


def test_gradient_and_lrp_run_on_an_mlp():
    model = mlp().eval()
    x = torch.randn(4, 8)
    assert xk.Gradient(model)(x).attribution.shape == x.shape
    assert xk.LRP(model, composite="epsilon")(x, target=1).target.tolist() == [1] * 4
