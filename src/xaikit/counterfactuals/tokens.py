"""Text counterfactuals: token substitutions from the model's own vocabulary that give a wanted class.

HotFlip (Ebrahimi, Rao, Lowd, Dou, ACL 2018, §3): the first-order change of the loss when token ``x_i`` at
position ``i`` is replaced by vocabulary token ``v`` is ``(E_v − E_{x_i}) · ∇_{e_i} J`` (eq. 1–2), one matrix
product of the embedding table with the gradient at the input embeddings for every position and token at once.
Here ``J`` is the margin of the wanted class over the best other class. Each step, the ``candidates`` best
substitutions of every unfinished sample by that score are evaluated exactly (all samples' candidates in one
batched forward pass), the best by the model's actual margin is kept (greedy, as HotFlip's beam of width 1),
and the search stops at the wanted class or after ``max_changes`` substitutions.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..batching import batch_size_for, batched_forward, check_batch_size
from ..errors import check_model, check_positive
from ..modes import eval_semantics
from ..results import ResultExport
from ..settings import CheckedSettings


@dataclass
class TokenCounterfactualsResult(ResultExport):
    """Token counterfactuals of a batch: ``counterfactuals[i]`` is ``x[i]`` with the substitutions found;
    ``found[i]`` whether the model gives ``target[i]`` for it; ``changed`` marks the replaced positions."""

    x: torch.Tensor
    counterfactuals: torch.Tensor
    found: torch.Tensor
    target: torch.Tensor
    original: torch.Tensor
    predicted: torch.Tensor
    vocabulary: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> torch.Tensor:
        """``(N, L)`` bool: the substituted positions."""
        return self.counterfactuals != self.x

    def changes(self, i: int) -> str:
        """``pos: old -> new`` for each substitution of sample ``i``."""
        return ", ".join(f"{p}: {self._word(int(self.x[i, p]))} -> {self._word(int(self.counterfactuals[i, p]))}"
                         for p in self.changed[i].nonzero().flatten().tolist())

    def _word(self, token: int) -> str:
        if self.vocabulary is None:
            return str(token)
        if hasattr(self.vocabulary, "convert_ids_to_tokens"):
            return repr(self.vocabulary.convert_ids_to_tokens([token])[0])
        return repr(self.vocabulary[token])

    def _rows(self) -> list[dict[str, Any]]:
        return [{"sample": i, "original": int(self.original[i]), "target": int(self.target[i]),
                 "predicted": int(self.predicted[i]), "found": bool(self.found[i]),
                 "substitutions": int(self.changed[i].sum()), "changes": self.changes(i)}
                for i in range(self.x.shape[0])]


class TokenCounterfactuals(CheckedSettings):
    """HotFlip-style text counterfactuals (Ebrahimi et al., ACL 2018): the fewest token substitutions, chosen by
    first-order scores and checked exactly, that make the model predict ``target``.

    Parameters
    ----------
    model : nn.Module
        ``ids (N, L) -> (N, classes)`` scores, with an embedding layer (``embedding=`` or the model's
        ``get_input_embeddings()``) whose rows are the vocabulary's tokens.
    embedding : nn.Embedding, optional
        The token embedding (default: ``model.get_input_embeddings()``).
    max_changes : int
        The most substitutions per sample.
    candidates : int
        Substitutions per sample evaluated exactly at each step (the best by first-order score).
    frozen : sequence of int, optional
        Token ids that are never replaced nor inserted (special tokens: ``[CLS]``, ``[SEP]``, padding).
    batch_size : "auto" or int
        Inputs per forward pass.
    """

    def __init__(self, model: Any, embedding: nn.Module | None = None, max_changes: int = 3, candidates: int = 16,
                 frozen: Sequence[int] | None = None, vocabulary: Any = None,
                 batch_size: int | str = "auto") -> None:
        check_model(model)
        check_positive(max_changes, "max_changes", integer=True)
        check_positive(candidates, "candidates", integer=True)
        check_batch_size(batch_size)
        embedding = embedding if embedding is not None else getattr(model, "get_input_embeddings", lambda: None)()
        if not isinstance(embedding, nn.Embedding):
            raise ValueError("embedding must be the model's token embedding (an nn.Embedding): pass embedding= or "
                             "give the model a get_input_embeddings() method")
        self.model, self.embedding, self.max_changes, self.candidates = model, embedding, max_changes, candidates
        self.frozen = sorted({int(t) for t in frozen}) if frozen is not None else []
        self.vocabulary, self.batch_size = vocabulary, batch_size

    def __call__(self, x: torch.Tensor, target: Any) -> TokenCounterfactualsResult:
        """Counterfactuals of token ids ``x`` ``(N, L)`` for the wanted class ``target`` (an int or ``(N,)``)."""
        began = time.perf_counter()
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.is_floating_point() or x.shape[0] == 0:
            raise ValueError(f"x must be token ids (N, L) of an integer dtype, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        vocab = self.embedding.num_embeddings
        if bool((x < 0).any() or (x >= vocab).any()):
            raise ValueError(f"x holds token ids outside the embedding's vocabulary 0 … {vocab - 1}")
        with eval_semantics(self.model):
            chunk = batch_size_for(self.batch_size, x[0])
            with torch.no_grad():
                scores = batched_forward(self.model, x, chunk)
            classes = scores.shape[1]
            target_t = torch.as_tensor(target).long().flatten().expand(x.shape[0]).clone() if not isinstance(
                target, torch.Tensor) or target.numel() == 1 else target.long().flatten().clone()
            if target_t.shape[0] != x.shape[0] or bool((target_t < 0).any() or (target_t >= classes).any()):
                raise ValueError(f"target must name a class in 0 … {classes - 1} (one int or one per sample), "
                                 f"got {target!r}")
            original = scores.argmax(1).cpu()
            current = x.clone()
            evaluations = x.shape[0]
            for _ in range(self.max_changes):
                with torch.no_grad():
                    predicted = batched_forward(self.model, current, chunk).argmax(1).cpu()
                open_ = (predicted != target_t).nonzero().flatten()
                if open_.numel() == 0:
                    break
                ids = current[open_]
                flips = self._scores(ids, target_t[open_].to(x.device), x[open_])  # (n, L, V)
                n, length, _ = flips.shape
                k = min(self.candidates, flips[0].numel())
                top = flips.reshape(n, -1).topk(k, dim=1).indices  # (n, k): position·V + token
                trial = ids[:, None, :].expand(n, k, length).clone()
                pos, tok = top // vocab, top % vocab
                trial.scatter_(2, pos[..., None], tok[..., None])
                with torch.no_grad():
                    out = batched_forward(self.model, trial.reshape(n * k, length), chunk).reshape(n, k, -1)
                evaluations += n * k
                margin = self._margin(out, target_t[open_, None].to(out.device).expand(n, k))
                margin = torch.where(torch.isfinite(flips.reshape(n, -1).gather(1, top)), margin, -torch.inf)
                best = margin.argmax(1)
                current[open_] = trial[torch.arange(n), best]
            with torch.no_grad():
                predicted = batched_forward(self.model, current, chunk).argmax(1).cpu()
        found = predicted == target_t
        if not bool(found.all()):
            missing = (~found).nonzero().flatten().tolist()
            warnings.warn(f"TokenCounterfactuals: none found within max_changes={self.max_changes} substitutions "
                          f"for sample(s) {missing}; raise max_changes or candidates", UserWarning, stacklevel=2)
        info = {"max_changes": self.max_changes, "candidates": self.candidates, "evaluations": evaluations,
                "time_s": time.perf_counter() - began}
        return TokenCounterfactualsResult(x, current, found, target_t, original, predicted, self.vocabulary, info)

    @staticmethod
    def _margin(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Score of ``target`` minus the best other class's."""
        wanted = out.gather(-1, target[..., None]).squeeze(-1)
        other = out.scatter(-1, target[..., None], -torch.inf).amax(-1)
        return wanted - other

    def _scores(self, ids: torch.Tensor, target: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """HotFlip's first-order gains ``(E_v − E_{x_i}) · ∇_{e_i} margin`` for every position and token ``(n, L, V)``;
        ``-inf`` where a substitution is not allowed (a frozen token, the same token, a position already
        changed)."""
        table = self.embedding.weight
        captured: dict[str, torch.Tensor] = {}

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            leaf = output.detach().requires_grad_(True)
            captured["e"] = leaf
            return leaf

        handle = self.embedding.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                margin = self._margin(self.model(ids), target)
                (grad,) = torch.autograd.grad(margin.sum(), captured["e"])
        finally:
            handle.remove()
        with torch.no_grad():
            gain = grad @ table.detach().t() - (grad * table.detach()[ids]).sum(-1, keepdim=True)  # (n, L, V)
            blocked = torch.zeros_like(gain, dtype=torch.bool)
            if self.frozen:
                frozen = torch.tensor(self.frozen, device=ids.device)
                blocked[..., frozen] = True
                blocked |= torch.isin(ids, frozen)[..., None]
            blocked.scatter_(2, ids[..., None], True)
            blocked |= (ids != start)[..., None]  # one substitution per position
            return gain.masked_fill(blocked, -torch.inf)
