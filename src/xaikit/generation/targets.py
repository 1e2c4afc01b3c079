"""Targets made of chosen logits of a sequence output ``(N, L, V)``: one generated token, or a whole answer.

:class:`TokenLogits` explains ``Σ_k output[n, positions[n, k], tokens[n, k]]`` per sample ``n``: with one
slot per sample it is the logit of one chosen token (what :class:`~xaikit.NextToken` does with one position
for every sample); with several it is the sum of the logits of an answer's tokens, each read at the position
that predicts it. Since the LRP rules (and the gradient) are linear in the relevance the backward pass
starts from, the relevance of the sum is the sum of the relevances of its terms, each on the same forward
pass.

It is a *per-sample* target: it knows which sample each row belongs to (``take(rows)``), so it can be split
with the batch into chunks and repeated for perturbations like an index target.
"""
from __future__ import annotations

from typing import Any

import torch

from ..settings import checked_init


def _as_rows(value: Any, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"TokenLogits {name} must be an int, a sequence of ints or an integer tensor, "
                        f"got {type(value).__name__}") from None
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"TokenLogits {name} must hold integers, got dtype {t.dtype}")
    if t.ndim > 2:
        raise ValueError(f"TokenLogits {name} must have shape (K,) or (N, K), got {tuple(t.shape)}")
    return t.long().reshape(1, -1) if t.ndim < 2 else t.long()


class TokenLogits:
    """Target ``Σ_k output[n, positions[n, k], tokens[n, k]]`` for sequence outputs ``(N, L, V)``.

    Parameters
    ----------
    positions, tokens : int, sequence or integer tensor, shape ``(K,)`` (the same for every sample) or ``(N, K)``
        Where each logit is read (from 0, or from the end when negative) and which token's logit it is.
    mask : bool tensor ``(N, K)`` or ``(K,)``, optional
        Which slots count (answers of different lengths in one batch); all by default.

    ``expl.target`` reports the token for a one-slot target and ``-1`` (a sum) otherwise.
    """

    @checked_init
    def __init__(self, positions: Any, tokens: Any, mask: Any = None) -> None:
        self.positions = _as_rows(positions, "positions")
        self.tokens = _as_rows(tokens, "tokens")
        if mask is None:
            mask = torch.ones(self.tokens.shape, dtype=torch.bool)
        self.mask = torch.as_tensor(mask, dtype=torch.bool)
        if self.mask.ndim < 2:
            self.mask = self.mask.reshape(1, -1)
        shapes = {tuple(t.shape) for t in (self.positions, self.tokens, self.mask)}
        if len({s[1] for s in shapes}) != 1 or len({s[0] for s in shapes} - {1}) > 1:
            raise ValueError(f"TokenLogits positions, tokens and mask must have the same shape (K,) or (N, K), got "
                             f"{tuple(self.positions.shape)}, {tuple(self.tokens.shape)}, {tuple(self.mask.shape)}")

    @property
    def rows(self) -> int | None:
        """The number of samples this target is for (``None``: the same slots for every sample)."""
        counts = {t.shape[0] for t in (self.positions, self.tokens, self.mask)} - {1}
        return counts.pop() if counts else None

    def take(self, rows: torch.Tensor) -> "TokenLogits":
        """The target of the samples ``rows`` (an index tensor; repeats allowed)."""
        if self.rows is None:
            return self
        rows = torch.as_tensor(rows).long().cpu()
        pick = lambda t: t if t.shape[0] == 1 else t[rows]  # noqa: E731
        return type(self)(pick(self.positions), pick(self.tokens), pick(self.mask))

    def indices(self, output: torch.Tensor) -> torch.Tensor:
        """``(N,)`` the explained token of each sample for one-slot targets, else ``-1``."""
        n = output.shape[0]
        if self.tokens.shape[1] == 1:
            return self.tokens[:, 0].expand(n).to(output.device)
        return torch.full((n,), -1, dtype=torch.long, device=output.device)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim != 3:
            raise ValueError(f"TokenLogits needs a model output of shape (batch, length, vocabulary), got "
                             f"{tuple(output.shape)}")
        n, length, vocabulary = output.shape
        if self.rows not in (None, n):
            raise ValueError(f"the target TokenLogits has {self.rows} rows but the batch has {n} samples")
        positions, tokens, mask = (t.to(output.device).expand(n, -1) for t in (self.positions, self.tokens, self.mask))
        bad = mask & ((positions < -length) | (positions >= length))
        if bad.any():
            raise ValueError(f"target position {positions[bad][0].item()} is beyond the sequence of length {length} "
                             f"(valid: {-length}..{length - 1})")
        bad = mask & ((tokens < 0) | (tokens >= vocabulary))
        if bad.any():
            raise ValueError(f"target token {tokens[bad][0].item()} is outside the vocabulary "
                             f"(valid: 0..{vocabulary - 1})")
        positions = torch.where(mask, positions % length, 0)
        rows = torch.arange(n, device=output.device)[:, None]
        picked = self._pick(output[rows, positions], torch.where(mask, tokens, 0))  # (N, K)
        return torch.where(mask, picked, 0).sum(1)

    def _pick(self, scores: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The explained value of each slot from the scores at its position ``(N, K, V)``: the token's logit."""
        return scores.gather(-1, tokens[..., None])[..., 0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(positions={self.positions.tolist()}, tokens={self.tokens.tolist()})"

    def taylor_bias(self, output: torch.Tensor) -> torch.Tensor:
        """``(N,)`` the part of the explained value that the logits do not pass on (0 for logits)."""
        return torch.zeros(output.shape[0], dtype=output.dtype, device=output.device)


class TokenLogProbs(TokenLogits):
    """Target ``Σ_k log p(tokens[n, k] | position positions[n, k])``: the log-probabilities of chosen tokens,
    ``log_softmax`` of the logits at each slot's position (an answer's log-likelihood given the prompt).

    The same parameters and checks as :class:`TokenLogits`. Gradient methods explain the log-probability itself.
    LRP starts from the logits with the gradient of the log-probability, ``R_v = z_v (δ_vt − p_v)`` (the Taylor
    rule, gradient × input, that AttnLRP applies to softmax): the logits receive ``z_t − Σ_v p_v z_v``, and the
    rest of ``log p_t = z_t − Σ_v p_v z_v − H(p)``, minus the entropy of the slot's distribution, is the
    log-softmax's bias (:meth:`taylor_bias`; the generation functions book it as absorbed by
    ``"log_softmax:taylor"``).
    """

    def _pick(self, scores: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(scores, -1).gather(-1, tokens[..., None])[..., 0]

    def taylor_bias(self, output: torch.Tensor) -> torch.Tensor:
        """``(N,)``: ``−Σ_k H(p_k)`` over the slots, the entropies of the distributions at their positions."""
        n, length = output.shape[:2]
        positions, mask = (t.to(output.device).expand(n, -1) for t in (self.positions, self.mask))
        rows = torch.arange(n, device=output.device)[:, None]
        logp = torch.log_softmax(output.detach()[rows, torch.where(mask, positions % length, 0)], -1)
        entropy = -(logp.exp() * logp).sum(-1)
        return -torch.where(mask, entropy, 0).sum(1)
