"""Token-id inputs and sequence targets.

A language model reads integer token ids, which have no gradient. Methods that accept ids (``LRP``,
``Gradient``, ``InputXGradient``) explain the model at the output of its *input embedding*: the embedding
vectors ``e`` of the ids become the explained input, substituted into the model's own forward pass by a
forward hook registered for the call only, and the relevance of a token is the sum of ``e ⊙ g`` over the
embedding dimension (an ``(N, L)`` map for ``(N, L)`` ids). Position and token-type embeddings that the model
adds to ``e`` are constants of the explanation.

The input embedding is found automatically: the module named by ``embedding=``; else
``model.get_input_embeddings()`` (Hugging Face models), or that of the first submodule that has it (a
wrapper around one); else the model's only ``nn.Embedding`` or ``nn.EmbeddingBag``.

An ``nn.EmbeddingBag`` reads ``(N, L)`` ids as ``N`` bags of ``L`` tokens and returns one vector per bag, a
sum, mean or maximum of the tokens' vectors (``padding_idx`` left out, ``per_sample_weights`` applied). The
explained input is then the tokens' vectors ``(N, L, D)`` and the bag's output is computed from them in the
model's forward pass (:func:`bag_of`), so the relevance is per token, as for ``nn.Embedding``: the bag is
linear in the vectors (a selection for ``mode="max"``). Bags given as 1-D ids with ``offsets`` are refused.

:class:`NextToken` is the target for sequence outputs ``(N, L, V)`` such as a language model's logits.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Hooks, find_layer
from .modes import eager

#: keyword inputs of Hugging Face models that carry one value per token and must match the ids' shape
PER_TOKEN_KWARGS = ("attention_mask", "token_type_ids", "position_ids")


class TokenInput:
    """The input embedding of ``model`` (see module docstring) and the checks and substitution for ids.

    Parameters
    ----------
    model : nn.Module
    embedding : str, nn.Module or None
        The input embedding module or its name in ``model.named_modules()``; ``None`` finds it.
    """

    def __init__(self, model: nn.Module, embedding: str | nn.Module | None = None) -> None:
        if embedding is not None and not isinstance(embedding, (str, nn.Module)):
            raise TypeError(f"embedding must be a module, a module name or None, got {type(embedding).__name__}")
        self.model = eager(model)  # a torch.compile wrapper: its module, run eagerly (see modes.eager)
        self.embedding = embedding
        if isinstance(embedding, str):
            self.module  # noqa: B018 - fail early on a wrong name

    @property
    def module(self) -> nn.Module:
        """The input embedding module (a ``TypeError`` saying how to name it when none is found)."""
        found = self.embedding if isinstance(self.embedding, nn.Module) else None
        if isinstance(self.embedding, str):
            found = find_layer(self.model, self.embedding, "embedding")[1]
        if found is None:
            found = _find_input_embedding(self.model)
        if found is None:
            names = _embedding_names(self.model)
            raise TypeError(
                "x must be a floating-point tensor, or token ids for a model with an input embedding; none was "
                "found (no get_input_embeddings() and not exactly one nn.Embedding or nn.EmbeddingBag): convert x "
                "with x.float(), or pass embedding=<module or name>"
                f"{' (one of: ' + ', '.join(names) + ')' if names else ''}"
            )
        return found

    def check(self, ids: torch.Tensor, forward_kwargs: dict[str, Any]) -> None:
        """Token ids within the vocabulary; per-token keyword inputs (attention mask, ...) of the ids' shape."""
        module = self.module
        if ids.ndim != 2:
            raise ValueError(f"token ids x must have shape (batch, length), got {tuple(ids.shape)}")
        vocabulary = getattr(module, "num_embeddings", None)
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or (vocabulary is not None and high >= vocabulary):
            bad = low if low < 0 else high
            limit = f"0..{vocabulary - 1}" if vocabulary is not None else ">= 0"
            raise ValueError(f"x holds token id {bad}, outside the vocabulary of the input embedding (valid: {limit})")
        check_per_token_kwargs(ids.shape[0], ids.shape[1], forward_kwargs)

    def dim(self) -> int:
        """The embedding width (for memory estimates)."""
        weight = getattr(self.module, "weight", None)
        return int(weight.shape[-1]) if isinstance(weight, torch.Tensor) else 1

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The embedding vectors of ``ids`` (detached): ``(N, L, D)``, one per token (also for a bag)."""
        module = self.module
        with torch.no_grad():
            if isinstance(module, nn.EmbeddingBag):
                return F.embedding(ids, module.weight).detach()
            return module(ids).detach()

    def modules(self) -> list[nn.Module]:
        """The input embedding and the modules that share its weight: the copies a model ties to it, such as
        an encoder–decoder's ``encoder.embed_tokens`` next to ``get_input_embeddings()``."""
        module = self.module
        weight = getattr(module, "weight", None)
        tied = [m for m in self.model.modules()
                if m is not module and isinstance(weight, torch.Tensor) and getattr(m, "weight", None) is weight]
        return [module, *tied]

    @contextlib.contextmanager
    def substituted(self, vectors: torch.Tensor, ids: torch.Tensor | None = None) -> Iterator[None]:
        """Within the block, the input embedding returns ``vectors`` (once per forward pass).

        With ``ids``, the substitution happens where the model embeds exactly these ids, at the input embedding
        or a module tied to it (the encoder's, in an encoder–decoder); calls on other ids (a decoder's) keep
        their own output. Where the model embeds the ids together with tokens of its own put before or after
        them (CPM-Ant's prompt ids), the ids' positions get ``vectors`` and the others keep the embedding's
        output: constants of the explanation, like a position embedding.
        """
        calls, other = [], []

        def hook(module: nn.Module, inputs: tuple, options: dict, out: torch.Tensor) -> torch.Tensor | None:
            read = inputs[0] if inputs else options.get("input")
            if isinstance(module, nn.EmbeddingBag) and isinstance(read, torch.Tensor) and read.ndim != 2:
                bag_of(module, vectors, read, inputs, options)  # refuses bags given by offsets, by name
            start = None if ids is None or isinstance(module, nn.EmbeddingBag) else _span(read, ids)
            if start is not None:  # the ids among tokens of the model's own: their positions get the vectors
                calls.append(tuple(out.shape))
                end = start + ids.shape[1]
                return torch.cat([out[:, :start], vectors.to(out.dtype), out[:, end:]], 1)
            if ids is not None and not (isinstance(read, torch.Tensor) and read.shape == ids.shape
                                        and torch.equal(read, ids)):
                other.append(tuple(read.shape) if isinstance(read, torch.Tensor) else type(read).__name__)
                return None
            calls.append(tuple(out.shape))
            if len(calls) > 1:
                raise ValueError(
                    "the model calls its input embedding more than once per forward pass; pass embedding= to name "
                    "the one to explain at, or pass embedding vectors instead of ids"
                )
            value = bag_of(module, vectors, read, inputs, options, ids is None) \
                if isinstance(module, nn.EmbeddingBag) else vectors
            if out.shape != value.shape:
                raise ValueError(
                    f"the input embedding returned shape {tuple(out.shape)}, not {tuple(value.shape)} as for the "
                    "ids x; does the model reshape its ids before embedding them?"
                )
            if ids is not None and isinstance(module, nn.EmbeddingBag) and \
                    not torch.allclose(out.detach(), value.detach(), rtol=1e-5, atol=1e-6):
                raise ValueError(
                    f"the {type(module).__name__} computes other bags than a {module.mode} of its tokens' vectors "
                    "(max_norm renormalising the weight?); pass embedding vectors instead of ids"
                )
            if module is not self.module and not torch.equal(out.detach(), value.detach()):
                raise ValueError(
                    f"the model embeds the ids x with {type(module).__name__}, which shares the input embedding's "
                    "weight but computes other vectors; pass embedding= to name the module to explain at"
                )
            return value

        with Hooks() as hooks:
            for m in (self.modules() if ids is not None else [self.module]):
                hooks.forward(m, hook, with_kwargs=True)
            yield
        if not calls:
            seen = f" (only on other ids, of shapes {', '.join(map(str, other))})" if other else ""
            raise ValueError(
                f"the model did not call its input embedding on the ids x{seen}; pass embedding= to name the right one"
            )

    def forward(self, ids: torch.Tensor, run: Callable[..., Any] | None = None) -> Callable[..., Any]:
        """A ``forward(vectors, *args, **kwargs)`` for :func:`~xaikit.methods.gradient.backprop`: the model on
        ``ids`` with the embedding output replaced by ``vectors``; ``run(vectors, call, inputs)`` wraps the
        call (e.g. :meth:`~xaikit.propagation.session.Session.run`)."""

        def forward(vectors: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            def call() -> Any:
                with self.substituted(vectors, ids):
                    return self.model(ids, *args, **kwargs)

            return call() if run is None else run(vectors, call, (args, kwargs))

        return forward


def _span(read: Any, ids: torch.Tensor) -> int | None:
    """Where the 2-D ``ids`` lie, as one block of columns, inside longer ids ``read`` of the same rows (tokens
    put before or after them by the model); ``None`` when they do not."""
    if not isinstance(read, torch.Tensor) or read.ndim != 2 or ids.ndim != 2 or read.shape[0] != ids.shape[0] \
            or read.shape[1] <= ids.shape[1] or read.device != ids.device:
        return None
    length = ids.shape[1]
    starts = [k for k in range(read.shape[1] - length + 1) if torch.equal(read[:, k:k + length], ids)]
    return starts[0] if len(starts) == 1 else None


def check_per_token_kwargs(n: int, length: int, forward_kwargs: dict[str, Any]) -> None:
    """Raise when an attention mask (or token-type/position ids) does not have one value per token."""
    for key in PER_TOKEN_KWARGS:
        value = forward_kwargs.get(key)
        if isinstance(value, torch.Tensor) and value.ndim == 2 and tuple(value.shape) != (n, length):
            raise ValueError(
                f"forward_kwargs[{key!r}] has shape {tuple(value.shape)}, but x has {n} sequences of {length} "
                f"tokens; give one value per token, shape ({n}, {length})"
            )


def bag_of(module: nn.EmbeddingBag, vectors: torch.Tensor, ids: Any, inputs: tuple, options: dict,
           placeholder: bool = False) -> torch.Tensor:
    """What ``module`` returns for the 2-D ``ids``, computed from their tokens' vectors ``(N, L, D)``.

    PyTorch's ``embedding_bag`` on ``(N, L)`` ids: per row, the sum (``per_sample_weights`` multiplying each
    token), the mean or the element-wise maximum of the tokens' vectors, tokens equal to ``padding_idx`` left
    out (an empty bag is zero). Linear in the vectors (a selection for the maximum), so the engine passes the
    relevance of a bag to its tokens. ``placeholder``: ``ids`` are placeholders (the method perturbs the
    vectors, not the ids), so padding cannot be read from them.
    """
    offsets = inputs[1] if len(inputs) > 1 else options.get("offsets")
    weights = inputs[2] if len(inputs) > 2 else options.get("per_sample_weights")
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or offsets is not None:
        raise ValueError(
            "the input embedding is an nn.EmbeddingBag called with 1-D ids and offsets; token relevance needs "
            "bags of equal length given as 2-D ids (batch, length) (pad the bags with padding_idx), or pass "
            "the bag's output vectors to the method instead of ids"
        )
    if module.padding_idx is not None and placeholder:
        raise ValueError(
            "this method runs the model on placeholder ids, so an nn.EmbeddingBag with padding_idx cannot tell "
            "its padding tokens; use LRP, Gradient or InputXGradient on the ids, or an EmbeddingBag without "
            "padding_idx"
        )
    keep = None if module.padding_idx is None else (ids != module.padding_idx).unsqueeze(-1)
    if isinstance(weights, torch.Tensor):
        vectors = vectors * weights.to(vectors.dtype).unsqueeze(-1)
    if module.mode == "max":
        if keep is None:
            return vectors.amax(1)
        return vectors.masked_fill(~keep, float("-inf")).amax(1).masked_fill(~keep.any(1), 0.0)
    total = (vectors if keep is None else vectors.masked_fill(~keep, 0.0)).sum(1)
    if module.mode != "mean":
        return total
    count = vectors.new_full((vectors.shape[0], 1), vectors.shape[1]) if keep is None else keep.sum(1).clamp(min=1)
    return total / count


def _find_input_embedding(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        getter = getattr(module, "get_input_embeddings", None)
        if callable(getter):
            try:
                found = getter()
            except (NotImplementedError, AttributeError):
                continue
            if isinstance(found, nn.Module):
                return found
    embeddings = [m for m in model.modules() if isinstance(m, _EMBEDDINGS)]
    return embeddings[0] if len(embeddings) == 1 else None


_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def _embedding_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, _EMBEDDINGS)]


def model_scores(output: Any) -> Any:
    """A model output as a tensor of scores: Hugging Face outputs give their ``logits``."""
    if not isinstance(output, torch.Tensor) and isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    return output


@dataclass(frozen=True)
class NextToken:
    """Target for sequence outputs ``(N, L, V)``: the logit of ``token`` at ``position`` (default: the last
    position and the token the model predicts there, i.e. its arg-max).

    ``position`` counts from 0, or from the end when negative; a position outside the sequence or a token
    outside the vocabulary raises a ``ValueError``. For a per-sample token, use a callable target.
    """

    position: int = -1
    token: int | None = None

    def __post_init__(self) -> None:
        for name in ("position", "token"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"NextToken {name} must be an int, got {type(value).__name__}")

    def indices(self, output: torch.Tensor) -> torch.Tensor:
        """The token whose logit is explained, per sample ``(N,)`` (reported as ``expl.target``)."""
        if output.ndim != 3:
            raise ValueError(
                f"NextToken needs a model output of shape (batch, length, vocabulary), got {tuple(output.shape)}"
            )
        length, vocabulary = output.shape[1:]
        if not -length <= self.position < length:
            raise ValueError(
                f"target position {self.position} is beyond the sequence of length {length} "
                f"(valid: {-length}..{length - 1})"
            )
        if self.token is None:
            return output[:, self.position].argmax(-1).detach()
        if not 0 <= self.token < vocabulary:
            raise ValueError(f"target token {self.token} is outside the vocabulary (valid: 0..{vocabulary - 1})")
        return torch.full((output.shape[0],), self.token, dtype=torch.long, device=output.device)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        index = self.indices(output)
        return output[:, self.position].gather(1, index[:, None])[:, 0]
