"""A needle-in-a-haystack retrieval task with a known answer, and a small transformer that solves it.

The context is a list of key–value pairs ``k_1 v_1 k_2 v_2 … k_n v_n``, then a query marker and one key
``q``; the answer is the value that follows ``q`` in the context (the *needle*: its key appears exactly once
there, the distractor pairs use other keys, which may repeat among themselves). Which tokens the answer depends
on is known: the needle's value (and its key), so an attribution method can be scored on whether its top
relevance falls there (a faithfulness check at any context length; the associative-recall task of Ba et al.
2016 and the "needle in a haystack" tests of long-context LLMs).

:class:`NeedleTransformer` is a decoder of one or more causal attention blocks without position embeddings.
Each block first mixes every token with the one before it (a learned linear map of the previous token, the
"token shift" of RWKV, the smeared key of Olsson et al. 2022's induction heads), so that the position of a value
carries its key; the attention of the last position then finds the value whose key matches the query. Without
positions the model runs at any length: it is trained on short contexts in seconds and explained at 1k–4k.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: token ids: 0 padding, 1 query marker, then the keys, then the values
PAD, QUERY = 0, 1


@dataclass
class NeedleData:
    """Prompts of the task and where their answer comes from.

    Attributes
    ----------
    ids : LongTensor ``(N, L)``
        ``k_1 v_1 … k_n v_n QUERY q`` (``L = 2n + 2``).
    answer : LongTensor ``(N,)``
        The value that follows ``q`` in the context.
    value_position, key_position : LongTensor ``(N,)``
        Where the needle's value and key are in ``ids``.
    """

    ids: torch.Tensor
    answer: torch.Tensor
    value_position: torch.Tensor
    key_position: torch.Tensor


def needle_vocabulary(keys: int = 32, values: int = 32) -> int:
    """The vocabulary size of a task with ``keys`` keys and ``values`` values (2 special tokens)."""
    return 2 + keys + values


def make_needle(n: int, length: int, keys: int = 32, values: int = 32,
                generator: torch.Generator | None = None) -> NeedleData:
    """``n`` prompts of ``length`` tokens (even, ≥ 4): ``(length − 2) / 2`` pairs, one of them the needle.

    Batched in torch: the distractor keys are drawn from the keys other than the needle's, the values uniformly.
    """
    if length < 4 or length % 2:
        raise ValueError(f"length must be an even number ≥ 4, got {length}")
    if keys < 2 or values < 2:
        raise ValueError(f"keys and values must be ≥ 2, got {keys}, {values}")
    pairs = (length - 2) // 2
    g = generator
    needle_key = torch.randint(keys, (n,), generator=g)
    shift = torch.randint(1, keys, (n, pairs), generator=g)  # distractors: any key but the needle's
    pair_keys = (needle_key[:, None] + shift) % keys
    pair_values = torch.randint(values, (n, pairs), generator=g)
    slot = torch.randint(pairs, (n,), generator=g)
    rows = torch.arange(n)
    pair_keys[rows, slot] = needle_key
    ids = torch.empty(n, length, dtype=torch.long)
    ids[:, 0:-2:2] = 2 + pair_keys
    ids[:, 1:-2:2] = 2 + keys + pair_values
    ids[:, -2] = QUERY
    ids[:, -1] = 2 + needle_key
    return NeedleData(ids, 2 + keys + pair_values[rows, slot], 2 * slot + 1, 2 * slot)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.shift = nn.Linear(width, width, bias=False)
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.heads = heads

    def forward(self, h: torch.Tensor, weights: list | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        previous = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)
        h = h + self.shift(previous)
        n, length, width = h.shape
        q, k, v = self.qkv(self.norm1(h)).reshape(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        if weights is not None:  # the attention written out, for attention rollout
            scores = q @ k.transpose(-1, -2) / (width // self.heads) ** 0.5
            causal = torch.ones(length, length, dtype=torch.bool, device=h.device).tril() if mask is None else mask
            weights.append(scores.masked_fill(~causal, float("-inf")).softmax(-1).detach())
        if mask is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.out(a.transpose(1, 2).reshape(n, length, width))
        return h + self.mlp(self.norm2(h))


class NeedleTransformer(nn.Module):
    """A causal transformer without position embeddings for :func:`make_needle` (module docstring).

    ``forward(ids)`` returns logits ``(N, L, V)``; ``attention_weights(ids)`` the attention of every block,
    ``(N, heads, L, L)`` each (for attention rollout).
    """

    def __init__(self, vocabulary: int, width: int = 64, heads: int = 2, blocks: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocabulary, bias=False)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(N, L, V)``; ``attention_mask`` ``(N, L)`` (1: token, 0: padding) hides padding from every
        token (without positions, a left-padded prompt then computes what it computes alone)."""
        h = self.embed(ids)
        mask = _mask(attention_mask, ids.shape[1], ids.device)
        for block in self.blocks:
            h = block(_zero_padding(h, attention_mask), mask=mask)
        return self.head(self.norm(h))

    @torch.no_grad()
    def attention_weights(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The attention weights of every block, ``(N, heads, L, L)`` each."""
        weights: list[torch.Tensor] = []
        h = self.embed(ids)
        mask = _mask(attention_mask, ids.shape[1], ids.device)
        for block in self.blocks:
            h = block(_zero_padding(h, attention_mask), weights, mask)
        return weights


def _zero_padding(h: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Padding positions set to 0, so that the token shift of the first real token reads what it reads at the
    start of a sequence."""
    return h if attention_mask is None else h * attention_mask[..., None].to(h.dtype)


def _mask(attention_mask: torch.Tensor | None, length: int, device: torch.device) -> torch.Tensor | None:
    """The boolean attention mask ``(N, 1, L, L)``: causal, padding hidden (a padding row sees itself only)."""
    if attention_mask is None:
        return None
    eye = torch.eye(length, dtype=torch.bool, device=device)
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return (causal & attention_mask.bool()[:, None, :])[:, None] | eye


def train_needle_model(steps: int = 600, lengths: tuple[int, int] = (16, 64), batch: int = 32, keys: int = 32,
                       values: int = 32, width: int = 64, heads: int = 2, blocks: int = 1, lr: float = 3e-3,
                       seed: int = 0) -> NeedleTransformer:
    """Train a :class:`NeedleTransformer` on prompts of random even lengths in ``lengths`` (cross-entropy of
    the answer at the last position; AdamW). Seeded; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = NeedleTransformer(needle_vocabulary(keys, values), width, heads, blocks)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=0.1)
    low, high = lengths
    for _ in range(steps):
        length = 2 * int(torch.randint(low // 2, high // 2 + 1, (1,), generator=g))
        data = make_needle(batch, length, keys, values, g)
        loss = F.cross_entropy(model(data.ids)[:, -1], data.answer)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def needle_accuracy(model: nn.Module, data: NeedleData, batch: int = 16) -> float:
    """The share of prompts whose arg-max prediction at the last position is the needle's value."""
    right = 0
    for start in range(0, data.ids.shape[0], batch):
        right += int((model(data.ids[start:start + batch])[:, -1].argmax(-1) == data.answer[start:start + batch]).sum())
    return right / data.ids.shape[0]
