"""Episodic few-shot classification with explanation-guided training (Sun et al., ICPR 2020).

A prototypical network (Snell et al., NeurIPS 2017) classifies the queries of an episode by their squared
Euclidean distance to the class prototypes ``c_k`` (means of the embedded support images). Snell et al.
(sec. 2.7) write it as a linear layer on the query embedding ``f``:

    −‖f − c_k‖² = 2 c_kᵀ f − ‖c_k‖² − ‖f‖²,

and ``−‖f‖²`` is the same for every class, so the softmax, the loss and the prediction are those of the logits
``2 c_kᵀ f − ‖c_k‖²``. :class:`PrototypicalEpisode` is the episode as a module on the query images that outputs
these logits, with the query embedding passing a named identity module ``"features"``. Explanation-guided
training is then :class:`~xaikit.improve.ExplanationGuidedLoss` at ``"features"`` on the episode — the same
implementation as for supervised training: ``R(f)`` is the relevance of each query's true-class logit at its
embedding (LRP in the engine's training mode), normalised to [−1, 1], ``f_lrp = (1 + R(f)) ⊙ f`` and
``L = L(y, p(f)) + λ L(y, p(f_lrp))``; prediction uses ``p(f)``.

The support images are encoded in the same encoder call as the queries (BatchNorm in training mode takes its
statistics over the whole episode, as in Snell et al.'s code); the prototypes carry the gradient to the
encoder through the support. The explanation is that of the model in eval semantics (running statistics).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_positive
from ..settings import checked_init


def prototypes(embedding: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Class means ``c_k`` (n_way, D) of ``embedding`` (N, D) by ``labels`` in 0 … n_way−1 (Snell et al. eq. 1)."""
    onehot = F.one_hot(labels, n_way).to(embedding.dtype)  # (N, K)
    counts = onehot.sum(0)
    if bool((counts == 0).any()):
        raise ValueError(f"support_y must hold every class 0 … {n_way - 1}; missing "
                         f"{(counts == 0).nonzero().flatten().tolist()}")
    return onehot.T @ embedding / counts[:, None]


def prototype_logits(query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """``2 c_kᵀ f − ‖c_k‖²`` (N, K): the negative squared distances up to the per-query ``‖f‖²`` (Snell et al.
    sec. 2.7)."""
    return query @ (2 * protos).T - protos.pow(2).sum(1)


class PrototypeClassifier(nn.Module):
    """``encoder → features → head``: the prototype logits ``2 c_kᵀ f − ‖c_k‖²`` of fixed prototypes as a linear
    layer (``head.weight = 2c``, ``head.bias = −‖c‖²``, constants), the form in which LRP explains a query's
    logit (the last layer's rule with the prototypes as weights). Built by :meth:`PrototypicalEpisode.classifier`.
    """

    @checked_init
    def __init__(self, encoder: nn.Module, protos: torch.Tensor) -> None:
        super().__init__()
        self.encoder, self.features = encoder, nn.Identity()
        protos = protos.detach()
        self.head = nn.Linear(protos.shape[1], protos.shape[0]).to(protos)
        self.head.requires_grad_(False)
        with torch.no_grad():
            self.head.weight.copy_(2 * protos)
            self.head.bias.copy_(-protos.pow(2).sum(1))

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.encoder(query).flatten(1)))


class PrototypicalEpisode(nn.Module):
    """One episode as a classifier of query images: ``episode(query) → (N, n_way)`` prototype logits.

    Parameters
    ----------
    encoder : nn.Module
        Maps images (N, ...) to embeddings (N, D) (flattened inside if more dimensions).
    support, support_y : torch.Tensor
        The support images and their episode labels 0 … n_way−1 (every class at least once).
    n_way : int, optional
        Number of classes (default ``support_y.max() + 1``).

    Notes
    -----
    Submodules: ``encoder`` (shared with the caller: training the episode trains the encoder) and ``features``,
    an identity through which the query embeddings pass (the layer to re-weight or record). Support and queries
    are encoded in one call, so the prototypes carry the gradient to the encoder; the support is held as a plain
    attribute (not a buffer or parameter). :meth:`classifier` gives the same logits in eval semantics with the
    prototypes as constants: the module whose relevance :class:`~xaikit.improve.ExplanationGuidedLoss` takes
    (``explain_with=``).
    """

    @checked_init
    def __init__(self, encoder: nn.Module, support: torch.Tensor, support_y: torch.Tensor,
                 n_way: int | None = None) -> None:
        super().__init__()
        if support.shape[0] != support_y.shape[0]:
            raise ValueError(f"support ({support.shape[0]} images) and support_y ({support_y.shape[0]} labels) "
                             "must have the same length")
        self.encoder, self.features = encoder, nn.Identity()
        self.support, self.support_y = support, support_y.long()
        self.n_way = int(support_y.max()) + 1 if n_way is None else n_way
        check_positive(self.n_way, "n_way", integer=True)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        n = self.support.shape[0]
        z = self.encoder(torch.cat([self.support.to(query), query])).flatten(1)
        protos = prototypes(z[:n], self.support_y, self.n_way)
        return prototype_logits(self.features(z[n:]), protos)

    @torch.no_grad()
    def classifier(self) -> PrototypeClassifier:
        """The episode with its prototypes computed in eval semantics (BatchNorm running statistics, no buffer
        written) and held constant: equal logits to ``self`` in eval mode, and an ordinary layer stack to
        explain."""
        was = self.encoder.training
        try:
            self.encoder.eval()
            z = self.encoder(self.support).flatten(1)
        finally:
            self.encoder.train(was)
        return PrototypeClassifier(self.encoder, prototypes(z, self.support_y, self.n_way))


def episode_loss(encoder: nn.Module, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                 query_y: torch.Tensor, loss_fn: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, logits)`` of one training episode: cross entropy of the prototype logits, or ``loss_fn(episode,
    query, query_y, return_parts=True)`` (an :class:`~xaikit.improve.ExplanationGuidedLoss` at ``"features"``)."""
    episode = PrototypicalEpisode(encoder, support, support_y)
    if loss_fn is None:
        logits = episode(query)
        return F.cross_entropy(logits, query_y), logits
    parts = loss_fn(episode, query, query_y, return_parts=True, explain_with=episode.classifier())
    return parts.loss, parts.logits


@torch.no_grad()
def episode_accuracy(encoder: nn.Module, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                     query_y: torch.Tensor, transductive: bool = False) -> float:
    """Query accuracy of one test episode (encoder in eval mode: running statistics).

    ``transductive=True``: BatchNorm uses the statistics of the episode (support and queries together), as in
    the transductive setting of Sun et al.'s tables (Nichol et al. 2018); the running statistics are restored.
    """
    was = encoder.training
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    try:
        encoder.eval()
        if transductive:
            for m in norms:
                m.train()
        logits = PrototypicalEpisode(encoder, support, support_y)(query)
    finally:
        encoder.train(was)
        for m, state in zip(norms, saved):  # the running statistics a transductive forward updated
            m.load_state_dict(state)
    return float((logits.argmax(1) == query_y).float().mean())


def episodes_accuracy(support_z: torch.Tensor, support_y: torch.Tensor, query_z: torch.Tensor,
                      query_y: torch.Tensor) -> torch.Tensor:
    """Query accuracy of many episodes at once from embeddings: ``support_z`` (E, N·K, D), ``query_z``
    (E, M, D), labels (E, N·K) and (E, M) in 0 … N−1. The same prediction as :func:`episode_accuracy` for an
    encoder that embeds each image on its own (eval mode), batched over the episodes. Returns (E,)."""
    n_way = int(support_y.max()) + 1
    onehot = F.one_hot(support_y, n_way).to(support_z.dtype)  # (E, NK, N)
    protos = onehot.transpose(1, 2) @ support_z / onehot.sum(1)[..., None]
    logits = query_z @ (2 * protos).transpose(1, 2) - protos.pow(2).sum(-1)[:, None]
    return (logits.argmax(-1) == query_y).to(support_z.dtype).mean(-1)


def mean_ci(values: Sequence[float] | torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """``(mean, half-width)`` of the normal-approximation confidence interval of the mean (1.96·sd/√n at 95 %),
    the interval reported in few-shot tables (per-episode accuracies)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.numel() < 2:
        raise ValueError(f"values must hold at least 2 numbers, got {v.numel()}")
    z = math.sqrt(2) * torch.special.erfinv(torch.tensor(level, dtype=torch.float64))
    return float(v.mean()), float(z * v.std() / math.sqrt(v.numel()))


def conv4(channels: int = 32, in_channels: int = 1, blocks: int = 4) -> nn.Sequential:
    """The few-shot "Conv-4" encoder (Vinyals et al. 2016; Snell et al. 2017): ``blocks`` × (3×3 convolution,
    BatchNorm, ReLU, 2×2 max pooling), flattened. A 28×28 input gives ``channels`` features after 4 blocks."""
    check_positive(channels, "channels", integer=True)
    layers: list[nn.Module] = []
    for b in range(blocks):
        layers += [nn.Conv2d(in_channels if b == 0 else channels, channels, 3, padding=1),
                   nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten())
