"""NEON for kernel-density outlier scores (Kauffmann, Müller & Montavon, "Towards explaining anomalies: a deep
Taylor decomposition of one-class models", Pattern Recognition 2020; Kauffmann et al. 2022).

A Gaussian kernel density over support points ``u_j`` with weights ``α_j`` gives the outlier score

    o(x) = -(1/γ) log Σ_j α_j exp(-γ ‖x - u_j‖²),

a soft min-pooling over the distances ``d_j = ‖x - u_j‖²`` (shifted by ``-(1/γ) log α_j``). NEON
redistributes it to the support points by the soft-min itself, ``R_j = p_j o(x)`` with
``p_j ∝ α_j exp(-γ d_j)``, and each ``R_j`` to the input dimensions in proportion to their share of the
distance, ``R_ij = (x_i - u_ij)² / d_j · R_j``. The relevance sums to ``o(x)``.
"""
from __future__ import annotations

from typing import Any

import torch

from ..explanation import Explanation
from ..settings import checked_init


def _density(estimator: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Support points, their weights and γ of a fitted ``KernelDensity`` (Gaussian) or ``OneClassSVM`` (RBF)."""
    name = type(estimator).__name__
    if name == "KernelDensity":
        if not hasattr(estimator, "tree_"):
            raise ValueError("estimator: the KernelDensity is not fitted; call estimator.fit(X) first")
        if estimator.kernel != "gaussian":
            raise ValueError(f"estimator: NEON's soft-min needs a Gaussian kernel, got kernel={estimator.kernel!r}")
        support = torch.as_tensor(estimator.tree_.data).double()
        bandwidth = float(getattr(estimator, "bandwidth_", estimator.bandwidth))
        return support, torch.full((support.shape[0],), 1.0 / support.shape[0], dtype=torch.float64), \
            1.0 / (2 * bandwidth ** 2)
    if name == "OneClassSVM":
        if not hasattr(estimator, "support_vectors_"):
            raise ValueError("estimator: the OneClassSVM is not fitted; call estimator.fit(X) first")
        if estimator.kernel != "rbf" or not hasattr(estimator, "_gamma"):
            raise ValueError("estimator: NEON's soft-min needs an RBF kernel (kernel='rbf')")
        alpha = torch.as_tensor(estimator.dual_coef_[0]).double()
        return torch.as_tensor(estimator.support_vectors_).double(), alpha / alpha.sum(), float(estimator._gamma)
    raise TypeError(f"estimator must be a fitted sklearn KernelDensity (Gaussian) or OneClassSVM (RBF), got {name}")


class OutlierScore:
    """NEON explanation of a kernel density's outlier score (module docstring).

    Parameters
    ----------
    estimator : fitted ``sklearn.neighbors.KernelDensity`` (Gaussian kernel) or ``sklearn.svm.OneClassSVM`` (RBF)

    Notes
    -----
    ``tool(x)`` returns an :class:`~xaikit.explanation.Explanation` of ``o(x)`` with ``info["score"]``
    (``o(x)``; for a KernelDensity ``-score_samples(x) / γ`` up to a constant) and ``info["conservation_gap"]``.
    """

    @checked_init
    def __init__(self, estimator: Any) -> None:
        self.support, self.alpha, self.gamma = _density(estimator)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``o(x)`` per sample ``(N,)``."""
        distances = torch.cdist(x.double(), self.support) ** 2
        return -torch.logsumexp(-self.gamma * distances + self.alpha.log(), dim=1) / self.gamma

    def __call__(self, x: torch.Tensor) -> Explanation:
        if x.ndim != 2 or x.shape[1] != self.support.shape[1]:
            raise ValueError(f"x must be (N, {self.support.shape[1]}) like the fitted data, got {tuple(x.shape)}")
        z = x.detach().double()
        diff = (z[:, None, :] - self.support[None]) ** 2  # (N, J, D)
        distances = diff.sum(-1)
        p = torch.softmax(-self.gamma * distances + self.alpha.log(), dim=1)
        score = -torch.logsumexp(-self.gamma * distances + self.alpha.log(), dim=1) / self.gamma
        share = diff / distances.clamp_min(torch.finfo(z.dtype).tiny)[..., None]
        relevance = (p[..., None] * share).sum(1) * score[:, None]
        info = {"score": score, "gamma": self.gamma, "conservation_gap": relevance.sum(1) - score}
        target = torch.zeros(x.shape[0], dtype=torch.long)
        return Explanation(relevance.to(x.dtype), target, score[:, None].to(x.dtype), "NEON(outlier score)", info)
