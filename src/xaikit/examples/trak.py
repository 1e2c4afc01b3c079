"""TRAK: training-data attribution by a kernel on random projections of gradients (Park, Georgiev, Ilyas,
Leclerc, Madry, "TRAK: Attributing Model Behavior at Scale", ICML 2023).

For one model with weights ``θ`` and the model output function ``f(z; θ)`` (the classification margin
``log p_y/(1-p_y)``, eq. 9; :func:`xaikit.metrics.data_attribution.margin`):

1. featurise every training sample ``z_i``: ``φ_i = Pᵀ ∇_θ f(z_i; θ)`` with a seeded random ``P ∈ R^{p×k}``
   (§3.2, step 1–2; :class:`~xaikit.examples.gradients.RandomProjection`), per-sample gradients by
   ``torch.func`` (``vmap`` over ``grad``) batch by batch, so no gradient matrix of the data set is held;
2. the kernel ``(Φᵀ Φ + λ I)⁻¹`` with ``Φ = [φ_1 … φ_N]ᵀ`` (``λ = regularisation``, 0 in the paper), by a
   Cholesky factorisation in float64 (a singular kernel falls back to the pseudo-inverse, with a warning);
   optionally shrunk towards its mean eigenvalue, ``((1 − δ) ΦᵀΦ + δ μ I + λ I)⁻¹`` with ``μ = tr(ΦᵀΦ)/k``
   and ``δ = shrinkage`` (not in the paper; scale-free, see :class:`TRAK`);
3. the one-step Newton correction of logistic regression (eq. 14–16): ``Q = diag(1 − p_i)``, the residual
   ``1 − p(y_i | z_i)`` of each training sample (for the margin, ``p = σ(f)``);
4. an ensemble over ``M`` weights (checkpoints, or independently trained models; step 3–4 of Algorithm 1):

       τ(z) = ( (1/M) Σ_m φ_m(z)ᵀ (Φ_mᵀ Φ_m)⁻¹ Φ_mᵀ ) · ( (1/M) Σ_m Q_m ),

   a ``(N,)`` vector per query ``z``; ``τ(z)_i > 0``: ``z_i`` is a proponent (it raised the margin at ``z``).

The paper's optional soft-thresholding of ``τ`` is not applied (it helps only for some tasks). Cost: fit
``M`` passes of per-sample gradients over the training set (``≈ 2–3×`` a backward pass each) plus ``N p k``
multiply-adds for the projection; memory ``M N k`` numbers for the features, ``M k²`` for the kernels.
Scores are computed in blocks of training samples (``Q × block`` numbers at a time).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..batching import batch_size_for, check_batch_size, memory_budget
from ..errors import check_positive
from ..fingerprint import fingerprint
from ..metrics.data_attribution import margin
from ..methods.base import _checked_init
from ..modes import explains_in_eval
from .attribution import AttributionResult, check_indices, labelled_batches, query_labels, top_of, weight_states
from .gradients import RandomProjection, attributed_parameters, flat, gradient_size, stack_states, \
    stacked_per_sample_gradients
from .search import chunk_size
from .store import FeatureStore, StoredFeatures

OutputFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TRAKResult(AttributionResult):
    """The top TRAK proponents (largest ``τ``) and opponents (smallest) of each query."""


def kernel_inverse(gram: torch.Tensor, regularisation: float, shrinkage: float = 0.0) -> torch.Tensor:
    """``((1 − δ) G + δ μ I + λ I)⁻¹`` of a symmetric positive semi-definite ``G`` ``(k, k)`` in float64, with
    ``μ = tr(G)/k`` its mean eigenvalue, ``δ = shrinkage`` and ``λ = regularisation``: Cholesky, or where it
    is singular the eigen-decomposition's pseudo-inverse (eigenvalues below ``k·eps·max`` dropped) with a
    warning that names the fix."""
    gram = gram.double()
    k = gram.shape[0]
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    a = gram + regularisation * eye
    if shrinkage:
        a = (1 - shrinkage) * gram + (shrinkage * gram.diagonal().mean() + regularisation) * eye
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_inverse(factor)
    values, vectors = torch.linalg.eigh(a)
    keep = values > k * torch.finfo(torch.float64).eps * values.abs().max()
    warnings.warn(f"TRAK: the kernel ΦᵀΦ (+λI) is singular (rank {int(keep.sum())} of {k}); using its "
                  "pseudo-inverse. Fit more training samples than the projection dimension, lower projection=, or "
                  "set regularisation > 0 or shrinkage > 0", UserWarning, stacklevel=3)
    return (vectors[:, keep] / values[keep]) @ vectors[:, keep].T


class TRAK:
    """TRAK scores of training samples for queries (Park et al. 2023), ensembled over weights.

    Parameters
    ----------
    model : nn.Module
        The architecture (evaluated in eval mode through ``functional_call``; never modified).
    checkpoints : sequence of state dicts or modules, optional
        The ``M`` weights of the ensemble: independently trained models (the paper's choice) or checkpoints
        of one run. Default: the model's current weights (``M = 1``).
    layer : "all", "last" or a module name
        Whose parameters are attributed: every trainable one (full model), the last ``nn.Linear`` (last
        layer: cheap, weaker), or that module's.
    projection : int or None
        ``k``, the projection dimension (≤ the gradient size ``p``); ``None``: no projection (``φ = ∇f``).
    projection_kind : "gaussian" or "rademacher"
    output : "margin" or callable ``(output, y) -> (N,)``
        The model output function ``f``. With a callable the Newton weights ``Q`` are 1.
    regularisation : float
        ``λ ≥ 0`` added to the kernel's diagonal.
    shrinkage : float
        ``δ ∈ [0, 1]``: the kernel becomes ``((1 − δ) Φ_mᵀΦ_m + δ μ_m I + λ I)⁻¹`` with ``μ_m = tr(Φ_mᵀΦ_m)/k``
        the mean eigenvalue of member ``m``'s ``Φ_mᵀΦ_m`` (a ridge relative to the kernel's own scale, so the
        same ``δ`` fits any model, output function and ``k``; Ledoit–Wolf-style shrinkage towards a multiple
        of the identity). ``0``: the paper's kernel; ``1``: no kernel, ``τ ∝ φ(z)ᵀΦᵀ Q`` (gradient dot
        products, TracIn-like). The paper's unregularised kernel trusts the directions of small eigenvalues as
        if the model were trained to convergence; for a model stopped early (and few training samples) those
        directions are noise. Recommended: ``δ = 0.5`` (chosen on held-out seeds of the shapes CNN; on fresh
        seeds it raised TRAK's LDS there from 0.119 to 0.251 at ``k = 64``, and on digits from 0.445 to 0.636
        at ``k = 256``; ``docs/data_attribution.md``). The default is the paper's 0.
    seed : int
        Seed of the projection (one ``P`` for every ensemble member; each member has its own kernel).
    batch_size : int or "auto"
        Samples per per-sample-gradient batch.
    progress : bool
        Show a progress bar while fitting.
    newton : bool
        ``False``: the Newton weights ``Q`` are 1, so a score is the kernel similarity ``φ(z)ᵀ(ΦᵀΦ)⁻¹φ_i`` of
        the query and the training sample, not weighted by how badly the sample is fitted. Samples fitted by
        a shortcut have ``1 − p_i ≈ 0``, so the paper's ``Q`` hides the samples that teach it; ranking them
        (:func:`xaikit.improve.training_culprits`) works without it (measured in ``docs/data_attribution.md``).

    Examples
    --------
    >>> trak = TRAK(model, checkpoints=[m.state_dict() for m in models], projection=256).fit((x_train, y_train))
    >>> tau = trak.scores(x_test, y_test)          # (Q, N)
    >>> found = trak.top(x_test, k=5)               # TRAKResult: proponents and opponents
    """

    def __init__(self, model: nn.Module, checkpoints: Sequence[Any] | None = None, layer: str = "all",
                 projection: int | None = 512, projection_kind: str = "gaussian",
                 output: str | OutputFunction = "margin", regularisation: float = 0.0, seed: int = 0,
                 batch_size: int | str = 64, progress: bool = False, newton: bool = True,
                 shrinkage: float = 0.0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.checkpoints = weight_states(model, checkpoints)
        self.names = attributed_parameters(model, layer)
        self.layer = layer
        params = dict(model.named_parameters())
        self.gradient_size = gradient_size(model, self.names)
        self.projector = None if projection is None else RandomProjection(
            {n: params[n].shape for n in self.names}, projection, projection_kind, seed)
        if output != "margin" and not callable(output):
            raise ValueError(f"output must be 'margin' or a callable (output, y) -> (N,), got {output!r}")
        if not isinstance(regularisation, (int, float)) or regularisation < 0:
            raise ValueError(f"regularisation must be a number >= 0, got {regularisation!r}")
        if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)) or not 0 <= shrinkage <= 1:
            raise ValueError(f"shrinkage must be a number in [0, 1] (0: the paper's kernel), got {shrinkage!r}")
        self.shrinkage = float(shrinkage)
        check_batch_size(batch_size)
        if not isinstance(newton, bool):
            raise TypeError(f"newton must be True or False, got {newton!r}")
        self.output, self.regularisation, self.seed, self.newton = output, float(regularisation), seed, newton
        self.batch_size, self.progress = batch_size, progress
        self.projection = projection
        self.features: list[Any] = []   #: Φ_m ``(N, k)`` per ensemble member (tensors, or StoredFeatures)
        self.kernels: list[torch.Tensor] = []    #: (Φ_mᵀΦ_m + λI)⁻¹ ``(k, k)`` per member
        self.weights: torch.Tensor | None = None  #: the mean Newton weights ``Q`` ``(N,)``
        self.input_shape: tuple[int, ...] | None = None
        self.train_size = 0
        self.fit_info: dict[str, Any] = {}  #: how a featurisation through xaikit.run went (engine, shards)

    # ---- featurisation --------------------------------------------------------------------------------------

    def _f(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = margin(out, y) if self.output == "margin" else self.output(out, y)
        if not isinstance(f, torch.Tensor) or f.shape != (out.shape[0],):
            raise ValueError("output must return one value per sample (N,), got "
                             f"{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}")
        return f

    def featurise(self, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(φ, q)`` of a batch at weights ``state``: the projected gradients ``(B, k)`` of the output function
        and the Newton weights ``1 − p`` ``(B,)``."""
        phi, q = self._features(stack_states([state]), x, y)
        return phi[0], q[0]

    def _features(self, stacked: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(φ (G, B, k), q (G, B))`` of a batch at ``G`` stacked weights (one ``vmap`` over them)."""
        grads, f = stacked_per_sample_gradients(self.model, stacked, self.names, self._f, x, y)
        members, size = f.shape
        rows = {n: g.flatten(0, 1) for n, g in grads.items()}  # (G B, *shape): one projection for all members
        phi = (flat(rows, self.names) if self.projector is None else self.projector(rows)).reshape(members, size, -1)
        if self.output == "margin" and self.newton:
            q = torch.sigmoid(-f)  # 1 − p of the label, from the forward pass of the gradients
        else:
            q = torch.ones(members, size, dtype=phi.dtype, device=phi.device)
        return phi.detach(), q

    def _groups(self, batch: int) -> list[dict[str, torch.Tensor]]:
        """The ensemble's weights stacked in groups of ``G`` members, ``G`` such that one group's per-sample
        gradients ``G B p`` (twice: the gradients and their flat copy) fit a quarter of the memory budget."""
        param = next(iter(self.model.parameters()))
        per_member = 2 * batch * self.gradient_size * param.element_size()
        size = max(1, min(len(self.checkpoints), memory_budget(param.device) // 4 // max(per_member, 1)))
        return [stack_states(self.checkpoints[s:s + size]) for s in range(0, len(self.checkpoints), size)]

    def featurise_members(self, x: torch.Tensor, y: torch.Tensor, groups: list[dict[str, torch.Tensor]] | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(φ (M, B, k), q (M, B))`` of a batch at every ensemble member, the members in groups
        (:meth:`_groups`) of one ``vmap`` each."""
        parts = [self._features(g, x, y) for g in (groups if groups is not None else self._groups(x.shape[0]))]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    @explains_in_eval
    def fit(self, data: Any, store: str | Path | None = None, shard_size: int = 4096) -> "TRAK":
        """Featurise every labelled sample of ``data`` (any form :mod:`xaikit.data` reads) at each weight and
        form the kernels.

        ``store=None``: the features stay in memory, ``M N k`` numbers. ``store=path``: they are written to a
        resumable zarr store shard by shard (:mod:`.store`; ``shard_size`` samples each) and read back block
        by block when scoring; a run killed midway resumes without recomputing finished shards.

        Memory (numbers, besides the model): one batch's gradients ``G B p`` for a group of ``G`` ensemble
        members featurised in one ``vmap`` (``G`` such that ``2 G B p`` numbers fit a quarter of the memory
        budget) + the projection ``p k`` (cached when ``8 p k`` bytes fit a quarter of
        the memory budget, else ``4096 k`` per generated block) + the kernels ``M k²`` + (with a store) one
        shard ``M S k``, else all features ``M N k``.
        """
        if store is not None:
            return self._fit_stored(data, store, shard_size)
        feats: list[list[torch.Tensor]] = [[] for _ in self.checkpoints]
        qs: list[list[torch.Tensor]] = [[] for _ in self.checkpoints]
        shape, groups = None, None
        bar = tqdm(desc="TRAK features", unit="samples", disable=None if self.progress else True, file=sys.stderr)
        for x, y, shape in labelled_batches(self.model, data, self.batch_size, "TRAK"):
            groups = groups if groups is not None else self._groups(x.shape[0])
            phi, q = self.featurise_members(x, y, groups)
            for m in range(len(self.checkpoints)):
                feats[m].append(phi[m])
                qs[m].append(q[m])
            bar.update(x.shape[0])
        bar.close()
        self.features = [torch.cat(f) for f in feats]
        self.kernels = [kernel_inverse(f.T.double() @ f.double(), self.regularisation, self.shrinkage)
                        for f in self.features]
        self.weights = torch.stack([torch.cat(q) for q in qs]).mean(0)
        self.input_shape = shape
        self.train_size = self.features[0].shape[0]
        return self

    def store_key(self) -> dict[str, Any]:
        """What stored features depend on (the weights, attributed parameters, projection, output function):
        a :class:`~xaikit.examples.store.FeatureStore` of another key is refused."""
        output = "margin" if self.output == "margin" else f"{type(self.output).__module__}:{self.output!r}"
        return {"weights": fingerprint(self.checkpoints), "parameters": self.names, "projection": self.projection,
                "projection_kind": None if self.projector is None else self.projector.kind, "seed": self.seed,
                "output": output, **({} if self.newton else {"newton": False})}

    def _fit_stored(self, data: Any, path: str | Path, shard_size: int) -> "TRAK":
        check_positive(shard_size, "shard_size", integer=True)
        store = FeatureStore(path, self.store_key(), shard_size)
        done = store.done()
        shard, filled, total, shape = 0, 0, 0, None
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        bar = tqdm(desc="TRAK features", unit="samples", disable=None if self.progress else True, file=sys.stderr)
        for x, y, shape in labelled_batches(self.model, data, self.batch_size, "TRAK"):
            while x.shape[0]:
                take = min(shard_size - filled, x.shape[0])
                if shard not in done:
                    pending.append((x[:take], y[:take]))
                x, y, filled, total = x[take:], y[take:], filled + take, total + take
                bar.update(take)
                if filled == shard_size:
                    self._write_shard(store, shard, pending)
                    shard, filled, pending = shard + 1, 0, []
        if filled:
            self._write_shard(store, shard, pending)
        bar.close()
        assert shape is not None
        return self.load_features(store, total, shape)

    def load_features(self, store: FeatureStore, total: int, sample_shape: tuple[int, ...]) -> "TRAK":
        """Use the features of ``total`` training samples (of shape ``sample_shape``) in a complete ``store``
        (written by :meth:`fit` with ``store=`` or by :func:`xaikit.run.featurise`): the kernels are formed
        shard by shard (``M k²`` numbers and one shard held), the features stay on disk for scoring."""
        if any(store.key.get(name) != value for name, value in self.store_key().items()):
            raise ValueError("the store's features were computed with other settings than this TRAK's "
                             "(weights, parameters, projection or output); build TRAK as the store was written")
        shards = -(-total // store.shard_size)
        missing = sorted(set(range(shards)) - store.done())
        if missing:
            raise ValueError(f"the store {str(store.path)!r} misses {len(missing)} of {shards} shards "
                             f"({missing[:5]}...); featurise again on the same path to finish it")
        param = next(iter(self.model.parameters()))
        k = self.projection or self.gradient_size
        grams = torch.zeros(len(self.checkpoints), k, k, dtype=torch.float64)
        weights = []
        for s in range(shards):
            f, q = store.read(s)
            grams += f.double().transpose(1, 2) @ f.double()
            weights.append(q)
        self.features = [StoredFeatures(store, m, total, k, param.dtype, param.device)
                         for m in range(len(self.checkpoints))]
        self.kernels = [kernel_inverse(g, self.regularisation, self.shrinkage).to(param.device) for g in grams]
        self.weights = torch.cat(weights, 1).mean(0).to(param.device, param.dtype)
        self.input_shape, self.train_size = tuple(sample_shape), total
        return self

    def shard_features(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (M, S, k), Newton weights (M, S))`` of samples ``x`` with labels ``y`` at every ensemble
        member, in batches of ``batch_size``: what one shard of a store holds."""
        step = batch_size_for(self.batch_size, x[0])
        return self._members_of([(x[s:s + step], y[s:s + step]) for s in range(0, x.shape[0], step)])

    def _members_of(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (M, S, k), Newton weights (M, S))`` of ``batches`` at every ensemble member, the members
        in groups of one ``vmap`` each (:meth:`featurise_members`), sized for the first (largest) batch."""
        groups = self._groups(batches[0][0].shape[0])
        parts = [self.featurise_members(x, y, groups) for x, y in batches]
        return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)

    def _write_shard(self, store: FeatureStore, shard: int, pending: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if pending:  # else finished in an earlier run
            store.write(shard, *self._members_of(pending))

    # ---- scoring --------------------------------------------------------------------------------------------

    @explains_in_eval
    def _query(self, x: torch.Tensor, y: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The queries' ``φ_m(z)ᵀ (Φ_mᵀΦ_m)⁻¹`` per member ``(Q, k)`` and their labels."""
        y = query_labels(self.model, x, y, self.input_shape, "TRAK")
        step = batch_size_for(self.batch_size, x[0])
        groups = self._groups(min(step, x.shape[0]))
        phi = torch.cat([self.featurise_members(x[s:s + step], y[s:s + step], groups)[0]
                         for s in range(0, x.shape[0], step)], 1)
        out = [(p.double() @ kernel).to(p.dtype) for p, kernel in zip(phi, self.kernels)]
        return out, y

    def _block(self, query: list[torch.Tensor], rows: torch.Tensor | slice) -> torch.Tensor:
        assert self.weights is not None
        total = query[0] @ self.features[0][rows].T  # one (Q, block) matrix, updated in place
        for a, f in zip(query[1:], self.features[1:]):
            total.addmm_(a, f[rows].T)
        return total.mul_((self.weights[rows] / len(query))[None])

    def scores(self, x: torch.Tensor, y: Any = None, indices: Any = None) -> torch.Tensor:
        """TRAK scores ``τ`` ``(Q, N)`` of every training sample (or those at ``indices``) for each query with
        label ``y`` (default: the model's prediction)."""
        query, _ = self._query(x, y)
        idx = check_indices(indices, self.train_size)
        return self._block(query, slice(None) if idx is None else idx.to(self.features[0].device))

    def pairs(self, x: torch.Tensor, y: Any, indices: Any) -> torch.Tensor:
        """The score of each (query ``x[j]``, training sample ``indices[j]``) pair ``(Q,)``."""
        idx = check_indices(indices, self.train_size)
        if idx is None or idx.numel() != x.shape[0]:
            raise ValueError("pairs needs one training index per query (indices of shape (Q,))")
        query, _ = self._query(x, y)
        idx = idx.to(self.features[0].device)
        assert self.weights is not None
        total = sum((a * f[idx]).sum(1) for a, f in zip(query, self.features))
        return total / len(query) * self.weights[idx]

    def self_scores(self) -> torch.Tensor:
        """Self-influence ``τ(z_i)_i`` of every training sample ``(N,)`` (its leverage times ``1 − p_i``): large
        for samples the model can only fit by themselves, e.g. mislabelled ones."""
        if self.weights is None:
            raise ValueError("TRAK has no training data; call fit(data) first")
        total = torch.zeros(self.train_size, dtype=torch.float64, device=self.weights.device)
        step = self.features[0].store.shard_size if isinstance(self.features[0], StoredFeatures) else 65536
        for start in range(0, self.train_size, step):
            for f, kernel in zip(self.features, self.kernels):
                block = f[start:start + step].double()
                total[start:start + step] += ((block @ kernel) * block).sum(1)
        return (total / len(self.features)).to(self.weights.dtype) * self.weights

    def top(self, x: torch.Tensor, y: Any = None, k: int = 5) -> TRAKResult:
        """The ``k`` strongest proponents and opponents of each query (exact, chunked over the training set).

        Blocks of ``S`` training samples, ``S`` chosen so that eight ``(Q, S)`` float32 blocks fit the memory
        budget (:func:`xaikit.batching.memory_budget`), and at most one store shard. Held at once, in bytes:
        ``4 (4 Q k + 2 S (k + 1) + 2 Q S + 2 B p) + 2·12·Q·2·k_top + 8 (k² + p k) + 4 N`` (the queries'
        features and their product with the kernel, one shard read and its row copy, the score block and
        top-k's copy, one batch of query gradients, the running top-k, kernel and projection, Newton weights;
        checked in ``benchmarks/bench_data_attribution_scale.py``)."""
        query, y = self._query(x, y)
        chunk = None
        if isinstance(self.features[0], StoredFeatures):
            chunk = min(self.features[0].store.shard_size, chunk_size(x.shape[0], x.device))
        found = top_of(lambda a, b: self._block(query, slice(a, b)), self.train_size, k, x.shape[0], x.device, chunk)
        return TRAKResult(*found, y)


TRAK.__init__ = _checked_init(TRAK.__init__)  # unknown settings are rejected by name
