"""Tiny decoder LLMs of the families people run today, and T5, built from `transformers` configs (random
weights, no download): 2 layers, hidden size 16, grouped-query attention where the family has it.

`llm(family, attn)` builds one; `FAMILIES` lists them, `SDPA_FAMILIES` those with both an SDPA and an eager
attention. `zero_constants` zeroes every additive constant (see `text_models.bias_free`); `padded_prompts`
makes a padded batch of sequences of different lengths.
"""
from __future__ import annotations

import torch
from torch import nn

from text_models import VOCAB, _quiet, bias_free

#: decoder-only families (causal LM heads) and T5 (encoder–decoder)
FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "gpt_neox", "t5")
#: families whose attention has both an "sdpa" and an "eager" implementation in transformers
SDPA_FAMILIES = ("llama", "mistral", "qwen2", "gemma", "phi3", "gpt_neox")

_SIZE = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=32, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _config(family: str, attn: str):
    import transformers as hf

    gqa = dict(num_key_value_heads=1)
    if family == "llama":
        return hf.LlamaForCausalLM, hf.LlamaConfig(**_SIZE, **gqa)
    if family == "mistral":  # sliding window smaller than the test sequences
        return hf.MistralForCausalLM, hf.MistralConfig(**_SIZE, **gqa, sliding_window=4)
    if family == "qwen2":  # biases on q, k, v
        return hf.Qwen2ForCausalLM, hf.Qwen2Config(**_SIZE, **gqa)
    if family == "gemma":  # embeddings scaled by √d, RMSNorm (1 + w), GeGLU
        return hf.GemmaForCausalLM, hf.GemmaConfig(**_SIZE, **gqa, head_dim=8)
    if family == "gemma2":  # + soft-capped attention scores and logits, sandwich norms, sliding window
        return hf.Gemma2ForCausalLM, hf.Gemma2Config(**_SIZE, **gqa, head_dim=8, sliding_window=4)
    if family == "phi3":  # fused qkv and gate-up projections
        return hf.Phi3ForCausalLM, hf.Phi3Config(**_SIZE, **gqa)
    if family == "gpt_neox":  # LayerNorm with biases, partial rotary, parallel residual
        return hf.GPTNeoXForCausalLM, hf.GPTNeoXConfig(**_SIZE, rotary_pct=0.5)
    if family == "t5":  # relative position bias, RMSNorm, ReLU MLP, encoder–decoder
        return hf.T5ForConditionalGeneration, hf.T5Config(
            vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, pad_token_id=0,
            eos_token_id=2, decoder_start_token_id=0)
    raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")


def llm(family: str, attn: str = "eager", seed: int = 0) -> nn.Module:
    """A tiny model of ``family`` in eval mode with the given attention implementation (float32)."""
    cls, config = _config(family, attn)
    config._attn_implementation = attn
    torch.manual_seed(seed)
    model = _quiet(lambda: cls(config).eval())
    with torch.no_grad():  # norm weights start at 1 (Gemma: 0): make them differ, so a wrong norm rule shows
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.add_(torch.rand_like(p) * 0.5)
    return model


def zero_constants(model: nn.Module) -> nn.Module:
    """Zero every additive constant: biases, LayerNorm shifts, position embeddings, T5's relative position
    bias (rotary embeddings and norms are multiplicative and stay)."""
    return bias_free(model)


def padded_prompts(lengths, side: str = "right", seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences of the given lengths in one batch, padded with id 0 on ``side``; (ids, mask)."""
    generator = torch.Generator().manual_seed(seed)
    rows = [torch.randint(3, VOCAB, (n,), generator=generator) for n in lengths]
    ids = torch.zeros(len(rows), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        cols = slice(0, len(row)) if side == "right" else slice(ids.shape[1] - len(row), None)
        ids[i, cols], mask[i, cols] = row, 1
    return ids, mask
