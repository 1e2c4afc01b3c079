"""Agreement of xaikit's DeepLIFT family, layer and neuron methods and SmoothGrad variants with Captum.

Run (a venv with captum; it installs in seconds):

    /work/venvs/<venv>/bin/pip install captum
    PYTHONPATH=src python benchmarks/bench_captum.py

Prints the largest absolute difference per method on float64 models (an MLP with ReLU/tanh/sigmoid, a CNN with
BatchNorm/ReLU/average pooling/sigmoid); the tests (``tests/test_methods_deeplift.py``, ``test_methods_layer.py``)
assert ≤ 1e-5 where Captum is installed.
"""
from __future__ import annotations

import torch
from torch import nn

import xaikit as xk

D = torch.float64


def models():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 4), nn.Sigmoid(),
                        nn.Linear(4, 3)).to(D).eval()
    cnn = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Conv2d(4, 5, 3), nn.Sigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(5, 3)).to(D)
    cnn[1].running_mean.uniform_(-0.5, 0.5)
    cnn[1].running_var.uniform_(0.5, 2.0)
    return {"MLP": (mlp, (5,), "2"), "CNN": (cnn.eval(), (2, 6, 6), "4")}


def main() -> None:
    import captum
    from captum import attr

    print(f"captum {captum.__version__}\n")
    print("| model | method (xaikit) | Captum | max abs diff |")
    print("|---|---|---|---|")
    torch.manual_seed(1)
    for name, (model, shape, layer) in models().items():
        x, ref = torch.randn(8, *shape, dtype=D), torch.randn(1, *shape, dtype=D)
        background = torch.randn(10, *shape, dtype=D)
        module = dict(model.named_modules())[layer]
        pairs = [
            ("DeepLift", "DeepLift", xk.DeepLift(model, baseline=ref)(x, target=1).attribution,
             attr.DeepLift(model).attribute(x, baselines=ref, target=1)),
            ("DeepLiftShap", "DeepLiftShap", xk.DeepLiftShap(model, background=background)(x, target=1).attribution,
             attr.DeepLiftShap(model).attribute(x, baselines=background, target=1)),
            ("LayerGradientXActivation", "LayerGradientXActivation",
             xk.LayerGradientXActivation(model, layer=layer)(x, target=1).attribution,
             attr.LayerGradientXActivation(model, module).attribute(x, target=1)),
            ("LayerConductance(steps=50)", "LayerConductance(n_steps=50, method='riemann_trapezoid')",
             xk.LayerConductance(model, layer=layer, steps=50, baseline=ref)(x, target=1).attribution,
             attr.LayerConductance(model, module).attribute(x, baselines=ref, target=1, n_steps=50,
                                                            method="riemann_trapezoid")),
            ("NeuronAttribution(method='gradient')", "NeuronGradient",
             xk.NeuronAttribution(model, layer=layer)(x, target=2).attribution,
             attr.NeuronGradient(model, module).attribute(x, neuron_selector=lambda out: out.flatten(1)[:, 2])),
            ("NeuronAttribution(method='deep_lift')", "NeuronDeepLift",
             xk.NeuronAttribution(model, layer=layer, method="deep_lift",
                                  method_settings={"baseline": ref})(x, target=2).attribution,
             attr.NeuronDeepLift(model, module).attribute(x, baselines=ref,
                                                          neuron_selector=lambda out: out.flatten(1)[:, 2])),
            ("NeuronAttribution(method='integrated_gradients:steps=50')", "NeuronIntegratedGradients(n_steps=50)",
             xk.NeuronAttribution(model, layer=layer, method="integrated_gradients:steps=50")(x, target=2).attribution,
             attr.NeuronIntegratedGradients(model, module).attribute(
                 x, neuron_selector=lambda out: out.flatten(1)[:, 2], n_steps=50)),
            ("SmoothGradSquared(sigma=0)", "NoiseTunnel(Saliency, 'smoothgrad_sq', stdevs=0)",
             xk.SmoothGradSquared(model, samples=4, sigma=0.0)(x, target=1).attribution,
             attr.NoiseTunnel(attr.Saliency(model)).attribute(x, nt_type="smoothgrad_sq", nt_samples=4, stdevs=0.0,
                                                              target=1, abs=False)),
        ]
        for ours_name, theirs_name, ours, theirs in pairs:
            print(f"| {name} | {ours_name} | {theirs_name} | {(ours - theirs).abs().max().item():.1e} |")
    linear = nn.Linear(5, 2).to(D).eval()
    x, b = torch.randn(8, 5, dtype=D), torch.randn(1, 5, dtype=D)
    diff = (xk.GradientShap(linear, background=b, samples=5, seed=0)(x, target=1).attribution
            - attr.GradientShap(linear).attribute(x, baselines=b, target=1, n_samples=5)).abs().max().item()
    print(f"| Linear | GradientShap (one background row) | GradientShap | {diff:.1e} |")


if __name__ == "__main__":
    main()
