"""BiLRP: explaining the similarity of two inputs as pairwise (token-by-token) relevance.

Eberle et al., "Building and Interpreting Deep Similarity Models", TPAMI 2022 (eq. 8-9): for a similarity
``y(a, b) = ⟨φ(a), φ(b)⟩`` the second-order relevance of the pair of input features ``(i, j)`` is

    R_ij = Σ_m  LRP(φ_m)(a)_i · LRP(φ_m)(b)_j ,

the sum over the embedding dimensions ``m`` of products of the first-order LRP maps of each embedding
dimension. Where every first-order map conserves its ``φ_m``, ``Σ_ij R_ij = y``. For the cosine
similarity the norms ``‖φ(a)‖‖φ(b)‖`` are held constant (as LayerNorm's σ in CP-LRP/AttnLRP), which scales the
matrix by ``1/(‖φ(a)‖‖φ(b)‖)``.

All first-order maps of a batch are computed in one batched LRP call: each sample is repeated once per
embedding dimension with that dimension as its target (chunked under the memory budget), never a Python
loop over dimensions.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import check_choice, check_input
from ..explanation import Explanation
from ..modes import eval_semantics
from ..propagation.composites import Composite
from .propagation import LRP

SIMILARITIES = ("cosine", "dot")


class BiLRP:
    """Pairwise relevance of the similarity of two sequences (Eberle et al. 2022).

    Parameters
    ----------
    model : nn.Module
        Maps a sequence (token ids ``(N, L)`` or embedding vectors ``(N, L, D)``, with keyword inputs such as
        an attention mask) to an embedding ``(N, E)``, e.g. :class:`xaikit.zoo.text.SentenceEncoder`.
    composite : str or Composite
        The LRP composite of the first-order maps (default ``"attnlrp"``).
    similarity : "cosine" or "dot"
    embedding, batch_size, **settings
        As for :class:`~xaikit.methods.propagation.LRP`.

    Calling ``bilrp(a, b, kwargs_a=..., kwargs_b=...)`` returns an :class:`~xaikit.explanation.Explanation`
    whose ``attribution`` is ``(N, La, Lb)`` (sample ``n`` of ``a`` against sample ``n`` of ``b``), whose
    ``output`` is the similarity ``(N,)``, and whose ``info["conservation"]`` compares ``Σ_ij R_ij`` with it
    (``residual``: what the first-order maps leave with biases, ε, position embeddings and, under AttnLRP,
    the softmax; zero for a bias-free model under CP-LRP with ε → 0).
    """

    def __init__(self, model: nn.Module, composite: str | Composite = "attnlrp", similarity: str = "cosine",
                 embedding: str | nn.Module | None = None, batch_size: int | str = "auto", **settings: Any) -> None:
        check_choice(similarity, "similarity", SIMILARITIES)
        self.lrp = LRP(model, composite, batch_size=batch_size, embedding=embedding, **settings)
        self.model = model
        self.similarity = similarity

    @property
    def name(self) -> str:
        return f"BiLRP({self.lrp.composite.name}, {self.similarity})"

    def first_order(self, x: torch.Tensor, forward_kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding ``(N, E)`` and the LRP maps of all its dimensions, ``(N, E, L)``."""
        with torch.no_grad(), eval_semantics(self.model):  # a model in training mode: eval mode, restored after
            phi = self.model(x, **forward_kwargs)
        if not isinstance(phi, torch.Tensor) or phi.ndim != 2:
            shape = tuple(phi.shape) if isinstance(phi, torch.Tensor) else type(phi).__name__
            raise ValueError(f"BiLRP needs a model that returns embeddings of shape (batch, dims), got {shape}")
        n, dims = phi.shape
        rows = lambda t: t.repeat_interleave(dims, 0) if isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == n else t  # noqa: E731
        target = torch.arange(dims, device=phi.device).repeat(n)
        expl = self.lrp(rows(x), target=target, forward_kwargs={k: rows(v) for k, v in forward_kwargs.items()})
        relevance = expl.attribution
        if relevance.ndim == 3:  # embedding vectors given: relevance per position
            relevance = relevance.sum(-1)
        return phi, relevance.reshape(n, dims, -1)

    def __call__(self, a: torch.Tensor, b: torch.Tensor, kwargs_a: dict[str, Any] | None = None,
                 kwargs_b: dict[str, Any] | None = None) -> Explanation:
        for name, x in (("a", a), ("b", b)):
            check_input(x, name, self.model, allow_int=True)
            if x.ndim not in (2, 3) or (x.ndim == 3 and not x.is_floating_point()):
                raise ValueError(
                    f"{name} must be token ids (N, L) or embedding vectors (N, L, D), got shape {tuple(x.shape)}"
                )
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"a and b must hold the same number of samples, got {a.shape[0]} and {b.shape[0]}")
        phi_a, r_a = self.first_order(a, dict(kwargs_a or {}))
        phi_b, r_b = self.first_order(b, dict(kwargs_b or {}))
        if phi_a.shape[1] != phi_b.shape[1]:
            raise ValueError(f"the embeddings of a and b differ in size: {phi_a.shape[1]} and {phi_b.shape[1]}")
        pairwise = torch.einsum("nma,nmb->nab", r_a, r_b)
        score = (phi_a * phi_b).sum(1)
        if self.similarity == "cosine":
            norms = phi_a.norm(dim=1) * phi_b.norm(dim=1)
            pairwise = pairwise / norms[:, None, None]
            score = score / norms
        total = pairwise.sum((1, 2))
        info = {
            "similarity": self.similarity, "composite": self.lrp.composite.name,
            "conservation": {"start": score, "input": total, "residual": score - total},
        }
        index = torch.full((a.shape[0],), -1, dtype=torch.long, device=score.device)
        return Explanation(pairwise, index, score, self.name, info)
