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

from ..batching import check_batch_size
from ..errors import check_choice, check_input
from ..explanation import Explanation
from ..modes import eval_semantics
from ..propagation.composites import Composite, SETTINGS
from ..settings import CheckedSettings
from .base import Method
from .resolve import DEFAULT_METHODS, legacy_lrp_settings, passed_on, resolve_method

SIMILARITIES = ("cosine", "dot")


class BiLRP(CheckedSettings):
    """Pairwise relevance of the similarity of two sequences (Eberle et al. 2022).

    Parameters
    ----------
    model : nn.Module
        Maps a sequence (token ids ``(N, L)`` or embedding vectors ``(N, L, D)``, with keyword inputs such as
        an attention mask) to an embedding ``(N, E)``, e.g. :class:`xaikit.zoo.text.SentenceEncoder`.
    method : str, Method or None
        The first-order explainer of each embedding dimension (:func:`~xaikit.methods.resolve.resolve_method`):
        default ``DEFAULT_METHODS["transformer"]``, LRP with ``attnlrp``; e.g. ``"lrp:composite=cp_lrp"``.
    method_settings : dict, optional
        Settings added to a method given by name or spec (``{"epsilon": 1e-9}``, ``{"embedding": ...}``).
    similarity : "cosine" or "dot"
    batch_size : int or "auto"
        Passed to a method given by name or spec (first-order maps per pass), unless its settings set it.
    composite, embedding, **settings
        Deprecated: ``composite=C, epsilon=e`` is ``method="lrp:composite=C", method_settings={"epsilon": e}``
        (a composite given by position too).

    Calling ``bilrp(a, b, kwargs_a=..., kwargs_b=...)`` returns an :class:`~xaikit.explanation.Explanation`
    whose ``attribution`` is ``(N, La, Lb)`` (sample ``n`` of ``a`` against sample ``n`` of ``b``), whose
    ``output`` is the similarity ``(N,)``, and whose ``info["conservation"]`` compares ``Σ_ij R_ij`` with it
    (``residual``: what the first-order maps leave with biases, ε, position embeddings and, under AttnLRP,
    the softmax; zero for a bias-free model under CP-LRP with ε → 0).

    Notes
    -----
    BiLRP is not a :class:`~xaikit.methods.base.Method`: a method explains one input's output for a
    ``target`` (``method(x, target)``), and every room that runs registered methods calls them so; BiLRP
    explains a function of two inputs and has no target. It follows the same convention otherwise: built with
    the model and checked settings, called on data, returning an :class:`~xaikit.explanation.Explanation`.
    """

    #: the LRP rule settings that the deprecated ``**settings`` forwards
    forwarded_settings = SETTINGS

    def __init__(self, model: nn.Module, method: str | Method | None = None,
                 method_settings: dict[str, Any] | None = None, similarity: str = "cosine",
                 batch_size: int | str = "auto", *, composite: str | Composite | None = None,
                 embedding: str | nn.Module | None = None, **settings: Any) -> None:
        check_choice(similarity, "similarity", SIMILARITIES)
        check_batch_size(batch_size)
        if embedding is not None:
            settings = {**settings, "embedding": embedding}
        method, method_settings = legacy_lrp_settings(method, method_settings, composite, settings, "BiLRP", 5)
        self.method = _first_order_method(model, method, method_settings, batch_size, DEFAULT_METHODS["transformer"])
        self.model = model
        self.similarity = similarity

    @property
    def lrp(self) -> Method:
        """The first-order method (named ``lrp`` before any method could be chosen)."""
        return self.method

    @property
    def name(self) -> str:
        return f"BiLRP({self.info_name}, {self.similarity})"

    @property
    def info_name(self) -> str:
        """The composite's name for LRP (as BiLRP's name always showed it), the method's name otherwise."""
        return _short_name(self.method)

    def embed(self, x: torch.Tensor, forward_kwargs: dict[str, Any]) -> torch.Tensor:
        """The embedding ``(N, E)`` of ``x`` (checked to be one vector per sample)."""
        with torch.no_grad(), eval_semantics(self.model):  # a model in training mode: eval mode, restored after
            phi = self.model(x, **forward_kwargs)
        if not isinstance(phi, torch.Tensor) or phi.ndim != 2:
            shape = tuple(phi.shape) if isinstance(phi, torch.Tensor) else type(phi).__name__
            raise ValueError(f"BiLRP needs a model that returns embeddings of shape (batch, dims), got {shape}")
        return phi

    def first_order(self, x: torch.Tensor, forward_kwargs: dict[str, Any], dims: torch.Tensor | None = None,
                    phi: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding ``(N, E)`` and the LRP maps of its dimensions ``dims`` (default: all), ``(N, |dims|, L)``
        (``phi``: the embedding, when already computed)."""
        phi = self.embed(x, forward_kwargs) if phi is None else phi
        n = phi.shape[0]
        chosen = torch.arange(phi.shape[1], device=phi.device) if dims is None else dims.to(phi.device)
        dims = chosen.numel()
        rows = lambda t: t.repeat_interleave(dims, 0) if isinstance(t, torch.Tensor) and t.ndim and t.shape[0] == n else t  # noqa: E731
        target = chosen.repeat(n)
        expl = self.method(rows(x), target=target, forward_kwargs={k: rows(v) for k, v in forward_kwargs.items()})
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
            "similarity": self.similarity, "composite": _short_name(self.method), "method": self.method.name,
            "conservation": {"start": score, "input": total, "residual": score - total},
        }
        index = torch.full((a.shape[0],), -1, dtype=torch.long, device=score.device)
        return Explanation(pairwise, index, score, self.name, info)


def _short_name(method: Method) -> str:
    """The composite's name for LRP (as BiLRP's name always showed it), the method's name otherwise."""
    composite = getattr(method, "composite", None)
    return composite.name if composite is not None else method.name


def _first_order_method(model: nn.Module, method: Any, method_settings: dict[str, Any] | None,
                        batch_size: int | str, default: str) -> Method:
    """The first-order method of BiLRP: ``batch_size`` reaches a method given by name or spec unless set."""
    method_settings = passed_on(method, method_settings, default,
                                batch_size=None if batch_size == "auto" else batch_size)
    return resolve_method(model, method, method_settings, default=default)
