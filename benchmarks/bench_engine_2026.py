"""The engine on the architectures of 2026 (issue 29): conservation, unknown operations and the absorbed share
per model and composite, for the model matrix of the tests and larger configs.

Run (one source tree; run it once per tree to compare before/after):

    PYTHONPATH=src .venv/bin/python benchmarks/bench_engine_2026.py [--size small|large] [--only NAME,...]

Every model is built from a config with random weights (seeded; no download). Two explanations per model and
composite: with biases in float64 (``residual/start``: what no operation accounted for; ``unknown``: the
operations the engine did not know; ``rules``: the share the rules' own terms absorbed,
:func:`xaikit.propagation.balance.rule_share`) and with every additive constant zeroed in float32 and ε = 1e-9
(``bias-free``: ``|input − start| / |start|``, for AttnLRP ``|input + absorbed − start| / |start|``).
``input/start`` (minimum over the samples, with biases and bias-free) is how much of the logit the attribution
carries; the
other values are maxima over the samples. A model that raises is reported with its error.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

VOCAB = 64
#: the inputs' random numbers, seeded again for every row (each model and composite sees the same inputs in any tree)
GENERATOR = torch.Generator()
CONSTANT_TERMS = ("bias", "position", "token_type", "wpe", "cls_token")


def _quiet(build: Callable[[], nn.Module]) -> nn.Module:
    from transformers.utils import logging

    logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build()


def _causal(cls_name: str, config_name: str, large: bool, **extra: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers as hf

        size = dict(vocab_size=VOCAB, hidden_size=64 if large else 16, num_hidden_layers=4 if large else 2,
                    num_attention_heads=4 if large else 2, intermediate_size=128 if large else 32,
                    max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        size.update(extra)
        config = getattr(hf, config_name)(**size)
        return getattr(hf, cls_name)(config)

    return build


def _image(cls_name: str, config_name: str, reinit: bool = False, **extra: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers as hf

        model = getattr(hf, cls_name)(getattr(hf, config_name)(num_labels=3, **extra))
        return _trained_like(model) if reinit else model

    return build


def _trained_like(model: nn.Module) -> nn.Module:
    """Weights on the scale of a trained CNN (transformers initialises EfficientNet's BatchNorm scales near 0,
    so that its logits are 0): He-normal convolutions and linear layers, BatchNorm scales near 1, biases and
    running statistics of a few tenths."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)
                if module.bias is not None:
                    module.bias.normal_(0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.normal_(1, 0.1)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


class MaskedAttention(nn.Module):
    """Single-head attention written out, ``masked_fill(softmax(scores), ~mask, 0)`` after the softmax."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(1, 2) / x.shape[-1] ** 0.5
        weights = torch.softmax(scores.masked_fill(~mask[:, None, :], -1e9), -1).masked_fill(~mask[:, None, :], 0)
        return self.head(self.out(weights @ self.v(x)).mean(1))


def _cpmant(large: bool) -> nn.Module:
    """CPM-Ant explained at its token vectors (``tests/text_models.CpmAntOnVectors``)."""
    import transformers as hf
    from text_models import CpmAntOnVectors

    config = hf.CpmAntConfig(vocab_size=VOCAB, hidden_size=64 if large else 16, num_attention_heads=2,
                             dim_head=8, dim_ff=128 if large else 32, num_hidden_layers=4 if large else 2,
                             prompt_length=2, position_bias_num_buckets=8, position_bias_max_distance=16,
                             segment_types=4)
    return CpmAntOnVectors(hf.CpmAntForCausalLM(config))


class IndexAddGCN(nn.Module):
    """Two graph convolutions as message passing: ``out.index_add_(0, dst, h[src] · w_e)``, then a Linear."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.l1, self.l2, self.head = nn.Linear(4, dim), nn.Linear(dim, dim), nn.Linear(dim, 3)
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("src", torch.randint(0, 5, (12,), generator=generator))
        self.register_buffer("dst", torch.randint(0, 5, (12,), generator=generator))
        self.register_buffer("w", torch.rand(12, generator=generator))

    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(h)
        return out.index_add_(1, self.dst, h[:, self.src] * self.w[None, :, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, nodes, features)
        h = torch.relu(self.propagate(self.l1(x)))
        return self.head(self.propagate(self.l2(h)).mean(1))


class Recurrent(nn.Module):
    """A time-major, bidirectional, 2-layer LSTM or GRU classifier over embedding vectors."""

    def __init__(self, cell: type) -> None:
        super().__init__()
        self.rnn, self.head = cell(4, 8, num_layers=2, bidirectional=True), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, F) -> time-major inside
        return self.head(self.rnn(x.transpose(0, 1))[0][-1])


class Checkpointed(nn.Module):
    """Residual MLP blocks run under ``torch.utils.checkpoint`` (non-reentrant)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim)) for _ in range(2))
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return self.head(x)


def models(large: bool) -> dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple], tuple[str, ...]]]:
    """name -> (build, inputs (x, target, forward kwargs), composites)."""
    import xaikit as xk

    generator = GENERATOR
    length = 16 if large else 8
    ids = lambda: (torch.randint(3, VOCAB, (2, length), generator=generator), xk.NextToken(-1), {})  # noqa: E731
    moe = dict(num_local_experts=4, num_experts_per_tok=2)
    qwen_moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)
    ssm = dict(state_size=8, expand=2, conv_kernel=4)
    image = lambda size: (lambda: (torch.randn(2, 3, size, size, generator=generator), 0, {}))  # noqa: E731
    lm = ("epsilon", "cp_lrp", "attnlrp")

    def cpmant_inputs() -> tuple:
        tokens = torch.randint(3, VOCAB, (2, length), generator=generator)
        tokens[1, :2] = 0  # left padding: those queries see no key
        vectors = torch.randn(2, length, 64 if large else 16, generator=generator) * 0.02
        return vectors, 7, {"input_ids": tokens}
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    return {
        "mixtral": (_causal("MixtralForCausalLM", "MixtralConfig", large, num_key_value_heads=1, **moe), ids, lm),
        "qwen2_moe": (_causal("Qwen2MoeForCausalLM", "Qwen2MoeConfig", large, num_key_value_heads=1, **qwen_moe),
                      ids, lm),
        "olmoe": (_causal("OlmoeForCausalLM", "OlmoeConfig", large, num_key_value_heads=1, num_experts=4,
                          num_experts_per_tok=2), ids, lm),
        "qwen3_moe": (_causal("Qwen3MoeForCausalLM", "Qwen3MoeConfig", large, num_key_value_heads=1, num_experts=4,
                              num_experts_per_tok=2, moe_intermediate_size=32, head_dim=8), ids, lm),
        "mamba": (_causal("MambaForCausalLM", "MambaConfig", large, **ssm), ids, lm),
        "falcon_mamba": (_causal("FalconMambaForCausalLM", "FalconMambaConfig", large, **ssm), ids, lm),
        "mamba2": (_causal("Mamba2ForCausalLM", "Mamba2Config", large, num_heads=16 if large else 4, head_dim=8, n_groups=1,
                           state_size=8, expand=2, conv_kernel=4, chunk_size=8), ids, lm),
        "rwkv": (_causal("RwkvForCausalLM", "RwkvConfig", large, attention_hidden_size=16 * (4 if large else 1),
                         context_length=64, use_cache=False),
                 lambda: (*ids()[:2], {"use_cache": False}), lm),
        "cpmant": (lambda: _cpmant(large), cpmant_inputs, lm),
        "swinv2": (_image("Swinv2ForImageClassification", "Swinv2Config", image_size=32, patch_size=4, embed_dim=8,
                          depths=[1, 1], num_heads=[2, 2], window_size=4), image(32), lm),
        "convnextv2": (_image("ConvNextV2ForImageClassification", "ConvNextV2Config", hidden_sizes=[8, 16],
                              depths=[1, 1], num_stages=2), image(32), ("epsilon", "epsilon_plus_flat", "cp_lrp")),
        "efficientnet_b0": (_image("EfficientNetForImageClassification", "EfficientNetConfig", True, image_size=32,
                                   **({} if large else dict(width_coefficient=0.5, depth_coefficient=0.5,
                                                            hidden_dim=640))), image(32),
                            ("epsilon", "epsilon_plus_flat", "attnlrp")),
        "lstm_bi2_time_major": (lambda: Recurrent(nn.LSTM), lambda: (torch.randn(2, 6, 4, generator=generator), 0, {}),
                                ("epsilon", "cp_lrp", "attnlrp")),
        "gru_bi2_time_major": (lambda: Recurrent(nn.GRU), lambda: (torch.randn(2, 6, 4, generator=generator), 0, {}),
                               ("epsilon", "cp_lrp", "attnlrp")),
        "gcn_index_add": (IndexAddGCN, lambda: (torch.randn(2, 5, 4, generator=generator), 0, {}),
                          ("epsilon", "epsilon_plus", "cp_lrp")),
        "masked_fill_attention": (MaskedAttention, lambda: (torch.randn(2, 6, 8, generator=generator), 0,
                                                            {"mask": mask}), lm),
        "checkpoint": (Checkpointed, lambda: (torch.randn(2, 8, generator=generator), 0, {}),
                       ("epsilon", "epsilon_plus", "cp_lrp")),
    }


def bias_free(model: nn.Module) -> nn.Module:
    """Every additive constant zeroed: biases, position and segment terms, BatchNorm running means, and what a
    model names itself (``zero_constants``)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(key in name for key in CONSTANT_TERMS):
                p.zero_()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
            if hasattr(module, "zero_constants"):
                module.zero_constants()
    return model


def measure(build, inputs, composite: str) -> dict[str, Any]:
    import xaikit as xk

    try:
        from xaikit.propagation.balance import rule_share
    except ImportError:  # a tree from before the per-operation account
        rule_share = None
    torch.manual_seed(0)
    row: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        try:
            model = _quiet(build).eval()
            GENERATOR.manual_seed(0)
            x, target, kwargs = inputs()
            try:
                wide = model.double()
                expl = xk.LRP(wide, composite=composite)(x.double() if x.is_floating_point() else x,
                                                         target=target, forward_kwargs=kwargs)
            except RuntimeError as error:  # kernels without float64 (torch._grouped_mm): float32
                if "Double" not in str(error):
                    raise
                row["float32"] = True
                expl = xk.LRP(model.float(), composite=composite)(x, target=target, forward_kwargs=kwargs)
            c = expl.info["conservation"]
            row["unknown"] = expl.info["coverage"]["unknown"]
            row["residual"] = float((c["residual"].abs() / c["start"].abs()).max())
            row["rules"] = float(rule_share(c).max()) if rule_share is not None else float("nan")
            row["given"] = float((c["input"] / c["start"]).min())
            free = bias_free(model.float())
            expl = xk.LRP(free, composite=composite, epsilon=1e-9)(x, target=target, forward_kwargs=kwargs)
            c = expl.info["conservation"]
            total = c["input"] + c["absorbed"] if composite == "attnlrp" else c["input"]
            row["bias_free"] = float(((total - c["start"]).abs() / c["start"].abs()).max())
            row["carried"] = float((c["input"] / c["start"]).min())
        except Exception as error:  # noqa: BLE001 - reported, the table goes on
            row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
        row["seconds"] = time.perf_counter() - start
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "large"), default="small")
    parser.add_argument("--only", default="", help="comma-separated model names")
    args = parser.parse_args()
    wanted = [name for name in args.only.split(",") if name]
    print("| model | composite | unknown | residual/start | input/start | rules' share | bias-free error | "
          "input/start (bias-free) | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (build, inputs, composites) in models(args.size == "large").items():
        if wanted and name not in wanted:
            continue
        for composite in composites:
            row = measure(build, inputs, composite)
            if "error" in row:
                print(f"| {name} | {composite} | — | {row['error']} | | | | | {row['seconds']:.1f} |", flush=True)
                continue
            unknown = ", ".join(f"{k} {v}" for k, v in row["unknown"].items()) or "none"
            wide = "" if row.get("float32") else " (f64)"
            print(f"| {name} | {composite} | {unknown} | {row['residual']:.1e}{wide} | {row['given']:.3f} | "
                  f"{row['rules']:.2f} | {row['bias_free']:.1e} | {row['carried']:.3f} | {row['seconds']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
