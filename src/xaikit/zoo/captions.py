"""A synthetic captioning task with a co-occurrence bias, and a small attention captioning model (the structure
of Sun et al., Information Fusion 2022: image features and the previous word into an LSTM, an attention over
the image regions, the word predicted from ``c_t + h_t``).

Images: ``2 × 2`` cells of ``cell × cell`` pixels (one channel); each image holds 1 to 3 objects of distinct
types, one per cell, drawn from :data:`GLYPHS` (small binary glyphs, jittered, scaled by a random contrast,
pixel noise added). The caption names the objects in the order of their type index, then ``<eos>``. The bias:
in the training captions the object ``pair[1]`` comes with ``pair[0]`` with probability ``cooccur`` (and rarely
alone), so after the word ``pair[0]`` the language prior says ``pair[1]``; test data (``cooccur=None``) draws
every object independently, so a model that follows the prior hallucinates ``pair[1]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .rows import Rows

GLYPHS = ("plus", "cross", "box", "bar", "column", "diagonal")
BOS, EOS = 0, 1
VOCAB = ("<bos>", "<eos>", *GLYPHS)
MAX_OBJECTS = 3


def _glyphs(size: int) -> torch.Tensor:
    """``(len(GLYPHS), size, size)`` binary patterns."""
    g = torch.zeros(len(GLYPHS), size, size)
    mid, last = size // 2, size - 1
    g[0, mid, :] = 1
    g[0, :, mid] = 1
    idx = torch.arange(size)
    g[1, idx, idx] = 1
    g[1, idx, last - idx] = 1
    g[2, 0, :] = g[2, last, :] = g[2, :, 0] = g[2, :, last] = 1
    g[3, mid - 1:mid + 1, :] = 1
    g[4, :, mid - 1:mid + 1] = 1
    g[5, idx, idx] = 1
    g[5, idx[:-1], idx[1:]] = 1
    return g


@dataclass
class CaptionData(Rows):
    """``images (N, 1, H, W)``, ``captions (N, MAX_OBJECTS + 1)`` word ids (object words then ``<eos>``, padded
    with ``<eos>``), ``lengths (N,)`` (words including the first ``<eos>``), ``objects (N, K)`` bool."""

    images: torch.Tensor
    captions: torch.Tensor
    lengths: torch.Tensor
    objects: torch.Tensor


def make_caption_shapes(n: int = 1000, *, cooccur: float | None = 0.9, pair: tuple[int, int] = (0, 1),
                        presence: float = 0.45, noise: float = 0.35, cell: int = 8,
                        seed: int = 0) -> CaptionData:
    """``n`` images with their captions (see the module docstring).

    Parameters
    ----------
    cooccur : float or None
        Training bias: ``P(pair[1] present | pair[0] present)``; ``pair[1]`` without ``pair[0]`` appears with
        probability ``(1 − cooccur) · presence``. ``None``: every object independent with ``presence``.
    presence : float
        Probability of each other object type (resampled until 1 to 3 objects are present).
    noise : float
        Standard deviation of the pixel noise (the glyph contrast is uniform in [0.6, 1]).
    """
    if not 0 <= presence <= 1 or (cooccur is not None and not 0 <= cooccur <= 1):
        raise ValueError(f"presence and cooccur must be probabilities, got {presence!r} and {cooccur!r}")
    if len(set(pair)) != 2 or not all(0 <= p < len(GLYPHS) for p in pair):
        raise ValueError(f"pair must name two distinct object types in 0..{len(GLYPHS) - 1}, got {pair!r}")
    g = torch.Generator().manual_seed(seed)
    k = len(GLYPHS)
    objects = torch.zeros(n, k, dtype=torch.bool)
    todo = torch.ones(n, dtype=torch.bool)
    while todo.any():  # rejection: 1 to MAX_OBJECTS objects per image
        m = int(todo.sum())
        draw = torch.rand(m, k, generator=g) < presence
        if cooccur is not None:
            a = draw[:, pair[0]]
            u = torch.rand(m, generator=g)
            draw[:, pair[1]] = torch.where(a, u < cooccur, u < (1 - cooccur) * presence)
        count = draw.sum(1)
        ok = (count >= 1) & (count <= MAX_OBJECTS)
        rows = torch.nonzero(todo).flatten()
        objects[rows[ok]] = draw[ok]
        todo[rows[ok]] = False
    glyph = _glyphs(cell - 2)
    images = torch.zeros(n, 1, 2 * cell, 2 * cell)
    cells = torch.rand(n, 4, generator=g).argsort(1)  # a random cell per object (first free ones)
    contrast = 0.6 + 0.4 * torch.rand(n, k, generator=g)
    jitter = torch.randint(0, 3, (n, k, 2), generator=g)
    for i in range(n):  # data generation, not a hot path
        slot = 0
        for obj in torch.nonzero(objects[i]).flatten().tolist():
            r, c = divmod(int(cells[i, slot]), 2)
            slot += 1
            y0, x0 = r * cell + int(jitter[i, obj, 0]), c * cell + int(jitter[i, obj, 1])
            images[i, 0, y0:y0 + cell - 2, x0:x0 + cell - 2] = contrast[i, obj] * glyph[obj]
    images += noise * torch.randn(images.shape, generator=g)
    captions = torch.full((n, MAX_OBJECTS + 1), EOS, dtype=torch.long)
    lengths = objects.sum(1) + 1
    for i in range(n):
        words = torch.nonzero(objects[i]).flatten() + 2
        captions[i, :words.numel()] = words
    return CaptionData(images, captions, lengths, objects)


class CaptionModel(nn.Module):
    """A small attention captioning model (Sun et al. 2022's structure, Xu et al. 2015's additive attention).

    ``encode(images) → v (N, P, D)``: a two-layer CNN, ``P = 16`` regions. ``decode(v, e) → logits (N, T, V)``
    with the previous words' embeddings ``e (N, T, D)`` (teacher forcing; ``e[:, 0]`` is ``<bos>``):

        x_t = [e_t, mean_k v_k],  h_t = LSTM(x_t, h_{t−1}),  α_t = softmax_k(w_a · tanh(W_v v_k + W_h h_t)),
        c_t = Σ_k α_tk v_k,  y_t = W_o (c_t + h_t) + b_o

    ``decode(..., parts=True)`` also returns ``c`` and ``h`` ``(N, T, D)``; :meth:`head` is ``W_o (c + h) + b_o``.
    ``forward(images, words)`` = ``decode(encode(images), embed(words))``.
    """

    def __init__(self, dim: int = 32, vocab: int = len(VOCAB)) -> None:
        super().__init__()
        self.dim = dim
        self.encoder = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Conv2d(16, dim, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(2 * dim, dim, batch_first=True)
        self.att_v = nn.Linear(dim, dim)
        self.att_h = nn.Linear(dim, dim, bias=False)
        self.att_w = nn.Linear(dim, 1, bias=False)
        self.out = nn.Linear(dim, vocab)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images).flatten(2).transpose(1, 2)

    def decode(self, v: torch.Tensor, e: torch.Tensor, parts: bool = False):
        mean = v.mean(1, keepdim=True).expand(-1, e.shape[1], -1)
        h, _ = self.lstm(torch.cat([e, mean], -1))
        scores = self.att_w(torch.tanh(self.att_v(v).unsqueeze(1) + self.att_h(h).unsqueeze(2))).squeeze(-1)
        alpha = torch.softmax(scores, -1)  # (N, T, P)
        c = alpha @ v
        logits = self.out(c + h)
        return (logits, c, h) if parts else logits

    def head(self, c: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.out(c + h)

    def forward(self, images: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images), self.embed(words))

    @torch.no_grad()
    def generate(self, images: torch.Tensor, max_len: int = MAX_OBJECTS + 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding: ``(words (N, max_len), probs (N, max_len, V))``; after ``<eos>`` the words are
        ``<eos>`` (their probabilities are still returned)."""
        v = self.encode(images)
        words = torch.full((images.shape[0], 1), BOS, dtype=torch.long, device=images.device)
        probs = []
        for _ in range(max_len):
            logits = self.decode(v, self.embed(words))[:, -1]
            probs.append(logits.softmax(-1))
            words = torch.cat([words, logits.argmax(-1, keepdim=True)], 1)
        out = words[:, 1:]
        ended = (out == EOS).cumsum(1) > 0
        out = torch.where(ended.cumsum(1) > 1, EOS, out)
        return out, torch.stack(probs, 1)
