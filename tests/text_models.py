"""Small sequence models for the transformer tests: tiny BERT, GPT-2 and ViT from `transformers` configs
(random weights), an LSTM/GRU classifier, an nn.TransformerEncoder classifier, and `bias_free`."""
from __future__ import annotations

import warnings

import torch
from torch import nn

VOCAB = 40


def _quiet(build):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.utils import logging

        level = logging.get_verbosity()
        logging.set_verbosity_error()
        try:
            return build()
        finally:
            logging.set_verbosity(level)


def bert(attn: str = "sdpa", labels: int = 3, seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=labels,
                        attn_implementation=attn)
    return _quiet(lambda: BertForSequenceClassification(config).eval())


def bert_encoder(attn: str = "sdpa", seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, attn_implementation=attn)
    return _quiet(lambda: BertModel(config, add_pooling_layer=False).eval())


def gpt2(attn: str = "sdpa", seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    return _quiet(lambda: GPT2LMHeadModel(config).eval())


def vit(attn: str = "sdpa", seed: int = 0) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=32, num_labels=3, attn_implementation=attn)
    return _quiet(lambda: ViTForImageClassification(config).eval())


class RecurrentClassifier(nn.Module):
    """Embedding -> (bi)LSTM/GRU/RNN -> linear head on the last output step."""

    def __init__(self, cell: type = nn.LSTM, bias: bool = True, bidirectional: bool = True, layers: int = 2,
                 seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, 8)
        self.rnn = cell(8, 6, num_layers=layers, bias=bias, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(6 * (2 if bidirectional else 1), 3, bias=bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.rnn(self.embed(ids))[0]
        return self.head(out[:, -1])


class EncoderClassifier(nn.Module):
    """nn.TransformerEncoder over given embedding vectors, mean-pooled, linear head."""

    def __init__(self, bias: bool = True, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True, bias=bias,
                                           activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3, bias=bias)

    def forward(self, x: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encoder(x, src_key_padding_mask=src_key_padding_mask).mean(1))


class CpmAntOnVectors(nn.Module):
    """Hugging Face CPM-Ant explained at its token vectors: it puts prompt ids ahead of the ids and embeds them
    together (xaikit's token path does not find that embedding call), so the vectors ``x`` of the ids are
    substituted in its input embedding's output; the logits of the last position."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def zero_constants(self) -> None:
        """Its additive constants beyond biases: the segment embedding and the prompt vectors put ahead."""
        with torch.no_grad():
            self.model.cpmant.segment_embedding.weight.zero_()
            self.model.cpmant.input_embedding.weight[self.model.config.vocab_size:].zero_()

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        prompt = self.model.cpmant.prompt_length
        handle = self.model.cpmant.input_embedding.register_forward_hook(
            lambda module, inputs, out: torch.cat([out[:, :prompt], x], 1))
        try:
            return self.model(input_ids=input_ids, use_cache=False).logits[:, -1]
        finally:
            handle.remove()


#: parameters that add an input-independent term: biases, LayerNorm shifts, position/type embeddings, CLS
CONSTANT_TERMS = ("bias", "position", "token_type", "wpe", "cls_token")


def bias_free(model: nn.Module) -> nn.Module:
    """Zero every input-independent additive term (biases, LayerNorm shifts, position and token-type
    embeddings, the ViT CLS token), leaving the weights: the relevance then has nowhere else to go."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(key in name for key in CONSTANT_TERMS):
                p.zero_()
    return model
