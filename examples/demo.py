"""Explain EfficientNet-Lite0 on scikit-image photos with LRP composites and write heatmap PNGs to out/.

Usage: python examples/demo.py [--out out] [--images chelsea coffee]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import xaikit as xk  # noqa: E402
from xaikit.zoo import imagenet_label, load_efficientnet_lite0, load_image  # noqa: E402

METHODS = {
    "Gradient × Input": lambda m: xk.InputXGradient(m),
    "LRP ε+flat": lambda m: xk.LRP(m, composite="epsilon_plus_flat"),
    "LRP εγ-box": lambda m: xk.LRP(m, composite="epsilon_gamma_box", low=-1.0, high=1.0),
    "LRP εα2β1": lambda m: xk.LRP(m, composite="epsilon_alpha2_beta1"),
}


def heatmap(attribution: torch.Tensor) -> torch.Tensor:
    """Sum over channels and scale symmetrically to [-1, 1] at the 99.5th percentile of |R|."""
    r = attribution.sum(0)
    return (r / r.abs().flatten().quantile(0.995).clamp_min(1e-12)).clamp(-1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="out")
    parser.add_argument("--images", nargs="+", default=["chelsea", "coffee", "rocket"])
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_efficientnet_lite0()
    x = torch.cat([load_image(name) for name in args.images])
    fig, axes = plt.subplots(len(args.images), len(METHODS) + 1, figsize=(2.2 * (len(METHODS) + 1), 2.3 * len(args.images)),
                             squeeze=False)
    for col, (title, make) in enumerate(METHODS.items(), start=1):
        expl = make(model)(x)
        for row, name in enumerate(args.images):
            h = heatmap(expl.attribution[row])
            plt.imsave(out / f"{name}_{title.replace(' ', '_').replace('×', 'x')}.png", h.numpy(), cmap="bwr", vmin=-1, vmax=1)
            axes[row, col].imshow(h, cmap="bwr", vmin=-1, vmax=1)
            axes[row, col].set_title(title, fontsize=8)
        conservation = expl.info.get("conservation")
        note = f", input/start relevance {(conservation['input'] / conservation['start']).tolist()}" if conservation else ""
        print(f"{title}: targets {[imagenet_label(t) for t in expl.target.tolist()]}{note}")
    for row, name in enumerate(args.images):
        axes[row, 0].imshow(((x[row].permute(1, 2, 0) + 1) / 2).clamp(0, 1))
        axes[row, 0].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "heatmaps.png", dpi=110)
    print(f"wrote {out / 'heatmaps.png'} and one PNG per image and method")


if __name__ == "__main__":
    main()
