"""Interaction indices at a budget of model evaluations: stratified sampling and a regression-adjusted estimate.

The coalitions are those of xaikit's KernelSHAP (:func:`xaikit.methods.machinery.kernel_design.kernel_design`):
the cheap sizes (1 and d-1, 2 and d-2, ...) enumerated while sampling would spend as much on them, the rest
drawn without replacement, each coalition with its complement. Written in the values (:mod:`.indices`),
``I(S) = Σ_U c(|S|, |U ∩ S|, |U|) v(U)``; per size u the sum over the ``C(d, u)`` coalitions is

- exact on the enumerated sizes,
- on a sampled size, ``C(d, u) / n_u`` times the sum over the ``n_u`` coalitions drawn (uniform within the size:
  the Horvitz-Thompson estimate of the stratum, as SHAP-IQ does, Fumagalli et al., NeurIPS 2023).

``estimator="sampling"`` applies this to ``v``. ``estimator="regression"`` (the default) first fits a polynomial
surrogate ``g(U) = v(∅) + Σ_{T ⊆ U, 1 <= |T| <= k} a(T)`` to the same values by least squares (every evaluated
coalition alike, a ridge prior on the interaction terms chosen by cross-validation, the fit constrained to
``g(N) = v(N)``; :func:`_fit`), takes the index of ``g`` exactly from its Möbius coefficients ``a``
(:func:`.indices.from_mobius`), and adds the sampling estimate of the index of the residual ``v - g``
(regression-adjusted Monte Carlo, Witter et al. 2025): the sampling then only estimates what the polynomial
misses. Any surrogate serves (a control variate); earlier versions fitted FSII's Shapley-kernel weighted least
squares (Tsai et al. 2023) with a fixed prior, less accurate on every benchmark game (:func:`_fit`). Both are
efficient exactly (each coalition's weights sum to zero over the sets, for every efficient index; the sampling
estimate is linear in the values, the regression estimate for a fixed prior); once every size is enumerated
both are exact.

``estimator="kernel"`` is a Bayesian alternative to the polynomial: a Gaussian-process prior on the game with
independent Möbius coefficients, ``m(T) ~ N(0, a q^{|T|})`` for every ``T ≠ ∅`` (all orders, not only up to k),
whose covariance is ``K(U, U') = a ((1 + q)^{|U ∩ U'|} - 1)``. The posterior mean of ``m(T)`` is ``q^{|T|} Σ_c
α_c [T ⊆ U_c]`` with ``α = K^{-1} (v - v(∅))`` over the evaluated coalitions (N noise-free, the others with a
relative nugget of 1e-9), so the index of the posterior-mean game is in closed form,
``I(S) = Σ_c α_c [S ⊆ U_c] Σ_{t=s}^{|U_c|} ω(s, t) q^t C(|U_c| - s, t - s)``, and ``q`` is chosen per game by
the marginal likelihood (``a`` profiled out) over :data:`KERNEL_Q`. The posterior mean interpolates the values,
so it converges to the index as the budget grows; on a complete design the regression estimate (exact) is
returned. Efficient: the posterior mean interpolates ``v(N)`` (what the Cholesky's rounding leaves of it is
spread over the singletons).
Cost ``O(C^3)`` in the C coalitions (one Cholesky per q, shared by all samples); at most :data:`KERNEL_MAX`.

``link="logit"`` (scores that are probabilities, e.g. a softmax output) adds a surrogate before any: a probability
that saturates is far from any low-order polynomial (its Möbius coefficients grow with the order and cancel), while
its log-odds often are close to one. :func:`logit_surrogate` fits ``h(U) = σ(b + Σ_{T ⊆ U, 1 <= |T| <= k} β(T))``
to the log-odds of the evaluated values (weighted as a logistic regression, the prior on its interaction terms
chosen per game by cross-validation), its index is computed without a model
evaluation (all ``2^d`` coalitions of ``h`` for ``d <= 16``, else the regression estimate from many coalitions of
``h``), and the estimator above estimates only the index of the residual ``v - h`` (a control variate: Witter et
al. 2025 adjust by any function whose index is known). Still efficient exactly (both parts are) and exact once
every coalition is evaluated (the residual's estimate is). ``link="auto"`` (the tool's default) takes it per game
where the model's output is a softmax and the scores lie in [0, 1] (:func:`resolve_links`).

``estimator="sparse"`` is the regression estimator with a sparse polynomial: it bets on the sparsity of interactions
that trained models show (Kang et al., "SPEX: Scaling feature interaction explanations for LLMs", ICML 2025; Butler
et al., "ProxySPEX", NeurIPS 2025: few interactions carry most of the game). The Möbius coefficients of order
``1..k`` are fitted to the evaluated values by L1-penalised least squares (the Lasso, Tibshirani 1996;
scikit-learn's coordinate descent), the penalty chosen by :data:`SPARSE_FOLDS`-fold cross-validation on the
evaluated coalitions themselves (folds drawn from the seed), then refitted without penalty on the sets the Lasso
keeps and the singletons, constrained to ``g(N) = v(N)`` (the relaxed Lasso, Meinshausen 2007: the Lasso picks the
sets, least squares sizes them). Its index is taken exactly and the sampled estimate of the residual's added, as
above: efficient exactly, exact once every coalition is evaluated, and converging to the index (without that
correction the sparse polynomial alone was more accurate on the breast-cancer blocks at 512 evaluations, 0.35
against 0.42, but stopped improving on the wine MLP at 0.42 from 1,024 evaluations on: a biased estimate). One fit
per game (a loop over samples in scikit-learn: ``SPARSE_FOLDS`` Lasso paths of ``SPARSE_ALPHAS`` penalties and a
final fit): 1-3 s per sample at d = 30 against 0.1-0.2 s for ``"regression"`` (loaded 2-core machine).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..methods.machinery.kernel_design import kernel_design
from .indices import MAX_EXACT_PLAYERS, exact, from_mobius, value_table

ESTIMATORS = ("regression", "sampling", "kernel", "sparse")
#: the sparse estimator's cross-validation: folds, penalties (a geometric grid down to ``SPARSE_RANGE`` × the largest)
SPARSE_FOLDS, SPARSE_ALPHAS, SPARSE_RANGE = 5, 20, 1e-3
#: the prior ratios q of the kernel estimator, chosen by marginal likelihood
KERNEL_Q = (0.01, 0.03, 0.1, 0.3)
#: most coalitions the kernel estimator accepts (a C × C matrix per q)
KERNEL_MAX = 2**13
#: the surrogate's link: chosen from the scores, none, or the logistic function of a polynomial (for probabilities)
LINKS = ("auto", "identity", "logit")
#: probabilities are clamped to [EPS, 1 - EPS] before their log-odds are taken
EPS = 1e-6
#: coalitions of the logit surrogate whose index is estimated above 16 players: this many per evaluation, at most
SURROGATE_FACTOR, SURROGATE_MAX = 16, 2**15
#: the surrogates' priors on their interaction coefficients (relative, see :func:`_fit`), chosen per game by
#: cross-validation over CV_FOLDS folds; RIDGE where the polynomial has more than CV_MAX_SETS sets
PRIORS, CV_FOLDS, RIDGE, CV_MAX_SETS = (0.0, 0.03, 0.1, 0.3, 1.0), 5, 0.3, 1024


def min_budget(d: int, k: int) -> int:
    """Fewest evaluations an estimate of order k on d players accepts: one per set of size 1..k."""
    return min(sum(math.comb(d, s) for s in range(1, k + 1)), 2**d - 2)


@dataclass
class Plan:
    """The evaluated coalitions ``z`` ``(C, d)`` (never ∅ or N), their sizes and each one's stratum factor
    ``scale`` ``(C,)`` (1 on enumerated sizes, ``C(d, u) / n_u`` on sampled ones)."""

    z: torch.Tensor
    size: torch.Tensor
    scale: torch.Tensor
    exact_sizes: list[int]

    @property
    def complete(self) -> bool:
        """Whether every coalition is evaluated (then the estimate is exact)."""
        return len(self.exact_sizes) == self.z.shape[1] - 1


def plan(d: int, budget: int, paired: bool, generator: torch.Generator) -> Plan:
    """The coalitions of KernelSHAP's design for ``budget`` evaluations and their stratum factors."""
    design = kernel_design(d, budget, paired, generator)
    size = design.size
    counts = torch.bincount(size, minlength=d + 1).double()
    total = torch.tensor([float(math.comb(d, u)) for u in range(d + 1)], dtype=torch.float64)
    scale = (total / counts.clamp_min(1))[size]
    return Plan(design.z, size, scale, list(design.exact_sizes))


def resolve_links(link: str, probability_rows: torch.Tensor, empty: torch.Tensor, full: torch.Tensor,
                  values: torch.Tensor) -> list[str]:
    """The link of each game: ``link``, or for ``"auto"`` ``"logit"`` where the model's output at the sample is a
    probability vector (``probability_rows`` ``(G,)``: see :func:`probability_outputs`) and every score of the game
    (``v(∅)``, ``v(N)``, every evaluated coalition) lies in [0, 1], else ``"identity"``. Per game: a sample's link
    does not depend on the others explained with it. The choice only decides the surrogate, a control variate:
    either estimate stays efficient and converges to the index."""
    if link != "auto":
        return [link] * values.shape[0]
    inside = lambda t: (t >= 0) & (t <= 1)  # noqa: E731
    probability = probability_rows.to(values.device) & inside(empty) & inside(full) & inside(values).all(1)
    return ["logit" if p else "identity" for p in probability.tolist()]


def probability_outputs(output: torch.Tensor, tolerance: float = 1e-4) -> torch.Tensor:
    """``(N,)``: whether each row of a model's output ``(N, C)`` is a probability vector over ``C >= 2`` classes
    (non-negative, summing to 1 within ``tolerance``: a softmax). Any other shape: no row is. A single sigmoid
    output is not recognised (it cannot be told from a score that happens to lie in [0, 1]): pass
    ``link="logit"`` for it."""
    if output.ndim != 2 or output.shape[1] < 2 or not output.is_floating_point():
        return torch.zeros(output.shape[0], dtype=torch.bool, device=output.device)
    return (output >= 0).all(1) & ((output.double().sum(1) - 1).abs() <= tolerance)


def estimate(empty: torch.Tensor, full: torch.Tensor, values: torch.Tensor, design: Plan, index: str, k: int,
             estimator: str, sets_member: torch.Tensor, link: str | list[str] = "identity",
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The index ``(G, P)`` of G games from ``v(∅)`` ``(G,)``, ``v(N)`` ``(G,)`` and the values ``(G, C)`` of
    ``design.z``; ``sets_member`` ``(P, d)`` are the sets S. ``link="logit"``: with the logit surrogate
    (``generator`` draws its coalitions above 16 players); a list: one link per game (:func:`resolve_links`)."""
    links = [link] * values.shape[0] if isinstance(link, str) else list(link)
    if len(set(links)) > 1:  # each part from the same generator state: as if explained alone
        state = generator.get_state() if generator is not None else None
        out = torch.zeros((values.shape[0], sets_member.shape[0]), dtype=torch.float64, device=values.device)
        for chosen in sorted(set(links)):
            rows = torch.tensor([g for g, one in enumerate(links) if one == chosen], device=values.device)
            if state is not None:
                generator.set_state(state)
            out[rows] = estimate(empty[rows], full[rows], values[rows], design, index, k, estimator, sets_member,
                                 chosen, generator).to(out)
        return out
    link = links[0] if links else "identity"
    if link == "logit":
        surrogate = logit_surrogate(empty, full, values, design.z, sets_member)
        known = surrogate.index(index, k, design, generator)
        ends = surrogate.values(torch.stack([torch.zeros_like(design.z[0]), torch.ones_like(design.z[0])]))
        residual = values - surrogate.values(design.z)
        return known + estimate(empty - ends[:, 0], full - ends[:, 1], residual, design, index, k, estimator,
                                sets_member, generator=generator)
    d = design.z.shape[1]
    z = design.z.to(values.device)
    member = sets_member.to(values.device)
    contains = (z.double() @ member.double().T) == member.sum(1).double()[None]  # (C, P): [T ⊆ U]
    correction = _correction_weights(z, design, member, index, d, k)  # (C, P) weights of the residuals
    if estimator == "sampling":
        return (values @ correction + _ends(empty, full, member, index, d, k))
    if estimator == "kernel" and not design.complete:
        return _kernel(empty, full, values, z, member, index, k)
    if estimator == "sparse":
        coefficients = _sparse_fit(empty, full, values, contains.double(), member, generator)
    else:
        coefficients = _fit(empty, full, values, contains.double(), member.sum(1) > 1)  # (G, P) of g
    residual = values - empty[:, None] - coefficients @ contains.double().T
    # the residual at N (0 up to the rounding of the constrained fit) keeps the estimate efficient exactly
    ends = _ends(torch.zeros_like(full), full - empty - coefficients.sum(1), member, index, d, k)
    return from_mobius(coefficients, member.cpu(), index, d, k).to(values.device) + residual @ correction + ends


def _kernel(empty, full, values, z, member, index: str, k: int) -> torch.Tensor:
    """The kernel estimator (module docstring): the index of the posterior-mean game, q by marginal likelihood."""
    from .indices import omega

    d = z.shape[1]
    coalitions = torch.cat([z, torch.ones((1, d), dtype=torch.bool, device=z.device)]).double()
    y = torch.cat([values, full[:, None]], 1) - empty[:, None]  # (G, C + 1)
    overlap = coalitions @ coalitions.T
    sizes = member.sum(1).to(z.device)
    size_u = coalitions.sum(1).long()
    contains = ((coalitions @ member.double().T) == sizes.double()[None]).double()  # (C + 1, P)
    nugget = torch.ones(len(coalitions), dtype=torch.float64, device=z.device)
    nugget[-1] = 0.0  # v(N) is matched exactly: efficiency
    best_ll, best = None, None
    for q in KERNEL_Q:
        gram = torch.pow(1.0 + q, overlap) - 1.0
        gram = gram + torch.diag(nugget * 1e-9 * gram.diagonal().mean())
        factor = torch.linalg.cholesky(gram)
        alpha = torch.cholesky_solve(y.T, factor)  # (C + 1, G)
        quad = (y.T * alpha).sum(0).clamp_min(1e-300)
        ll = -0.5 * y.shape[1] * torch.log(quad / y.shape[1]) - torch.log(factor.diagonal()).sum()
        table = torch.zeros((k + 1, d + 1), dtype=torch.float64)
        for s in range(1, k + 1):
            for u in range(s, d + 1):
                table[s, u] = sum(float(omega(index, s, t, k)) * q**t * math.comb(u - s, t - s)
                                  for t in range(s, u + 1))
        weights = contains * table.to(z.device)[sizes[None, :], size_u[:, None]]  # (C + 1, P)
        result = alpha.T @ weights
        if best is None:
            best_ll, best = ll, result
        else:
            pick = ll > best_ll
            best_ll, best = torch.where(pick, ll, best_ll), torch.where(pick[:, None], result, best)
    # the posterior mean matches v(N) in exact arithmetic; what the Cholesky leaves (about 1e-10 of the values)
    # is spread over the singletons, so that efficiency holds to rounding
    gap = y[:, -1] - best.sum(1) if index != "SII" else torch.zeros_like(y[:, -1])
    return best + gap[:, None] * (sizes == 1).double()[None] / d


def _sparse_fit(empty, full, values, x, member, generator: torch.Generator | None) -> torch.Tensor:
    """Möbius coefficients ``(G, P)``: Lasso with the penalty by cross-validation, relaxed refit on its support and
    the singletons with ``Σ a = v(N) - v(∅)``. ``x`` ``(C, P)`` is ``[T ⊆ U_c]``; the folds are drawn from
    ``generator`` (seeded: the same estimate for the same seed)."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LassoCV
    from sklearn.model_selection import KFold

    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    folds = KFold(SPARSE_FOLDS, shuffle=True, random_state=int(torch.randint(2**31 - 1, (1,), generator=generator)))
    xs = x.cpu().numpy()
    targets = (values - empty[:, None]).cpu().numpy()
    gaps = (full - empty).cpu().numpy()
    singletons = (member.sum(1) == 1).cpu().numpy()
    coefficients = np.zeros((targets.shape[0], xs.shape[1]))
    for g, (y, gap) in enumerate(zip(targets, gaps)):
        top = float(np.abs(xs.T @ y).max()) / len(y)
        if top > 0:
            alphas = top * np.geomspace(1.0, SPARSE_RANGE, SPARSE_ALPHAS)
            with warnings.catch_warnings():  # the smallest penalties of the path may stop at max_iter: they only
                warnings.simplefilter("ignore", ConvergenceWarning)  # lose the cross-validation to larger ones
                lasso = LassoCV(alphas=alphas, cv=folds, fit_intercept=False, max_iter=3000, tol=1e-3).fit(xs, y)
            support = (lasso.coef_ != 0) | singletons
        else:
            support = singletons
        chosen = xs[:, support]
        p = chosen.shape[1]
        kkt = np.zeros((p + 1, p + 1))
        kkt[:p, :p], kkt[:p, p], kkt[p, :p] = chosen.T @ chosen, 1.0, 1.0
        solved = np.linalg.lstsq(kkt, np.concatenate([chosen.T @ y, [gap]]), rcond=None)[0]
        coefficients[g, support] = solved[:p]
    return torch.from_numpy(coefficients).to(values)


def _correction_weights(z, design: Plan, member, index, d, k) -> torch.Tensor:
    """``c(|S|, |U ∩ S|, |U|) × scale(U)`` ``(C, P)``."""
    table = value_table(index, d, k).to(z.device)
    overlap = (z.double() @ member.double().T).long()  # |U ∩ S|
    sizes = member.sum(1)
    return table[sizes[None, :], overlap, design.size.to(z.device)[:, None]] * design.scale.to(z.device)[:, None]


def _ends(empty, full, member, index, d, k) -> torch.Tensor:
    """The terms of ``v(∅)`` and ``v(N)``: ``c(s, 0, 0) v(∅) + c(s, s, d) v(N)``."""
    table = value_table(index, d, k).to(empty.device)
    sizes = member.sum(1).to(empty.device)
    return empty[:, None] * table[sizes, 0, 0][None] + full[:, None] * table[sizes, sizes, d][None]


def _fit(empty, full, values, x, higher: torch.Tensor) -> torch.Tensor:
    """Möbius coefficients ``(G, P)`` of the least-squares polynomial with ``Σ a = v(N) - v(∅)``, every evaluated
    coalition weighing alike, as KKT systems shared by all games.

    The coefficients of order >= 2 (``higher``) get a ridge penalty ``r × (their mean Gram diagonal) × P / C``
    (P coefficients, C coalitions): a prior that interactions are smaller than main effects, which fades as the
    evaluations grow; ``r`` is chosen per game from :data:`PRIORS` by :data:`CV_FOLDS`-fold cross-validation
    (held-out squared error; the folds of :func:`cv_folds`), or is :data:`RIDGE` above :data:`CV_MAX_SETS` sets.
    It only shapes the surrogate: the sampled correction keeps the estimate exact once every coalition is
    evaluated. A floor of ``1e-9 ×`` the mean Gram diagonal on every coefficient keeps a fold with fewer
    coalitions than sets solvable.

    Measured (benchmarks/results/interactions.md, median error of the pairs at 128-4,096 evaluations): the
    Shapley-kernel weighted fit of FSII with the fixed ``r = 0.3`` of earlier versions was 1.01 / 0.63 / 0.39 /
    0.20 on the breast-cancer log-odds at 512-4,096 and 0.84-0.036 on the MiniLM probe; this fit 0.77 / 0.59 /
    0.25 / 0.12 and 0.69-0.019, and no worse anywhere else but by 0.3 % (superpixels at 128).
    """
    p = x.shape[1]
    y = values - empty[:, None]
    gap = (full - empty)[:, None]
    higher = higher.to(x.device)
    if p > CV_MAX_SETS or not higher.any():
        gram = x.T @ x
        return _kkt_solve(gram[None], torch.cat([y @ x, gap], 1)[None], higher, RIDGE, p / max(x.shape[0], 1))[0]
    fold = cv_folds(x.shape[0]).to(x.device)
    held = [fold == f for f in range(CV_FOLDS)]
    gram_out = torch.stack([x[h].T @ x[h] for h in held])  # (F, P, P)
    rhs_out = torch.stack([y[:, h] @ x[h] for h in held])  # (F, G, P)
    gram_all, rhs_all = gram_out.sum(0), rhs_out.sum(0)
    train = torch.tensor([x.shape[0] - int(h.sum()) for h in held], dtype=torch.float64, device=x.device)
    loss = []
    for prior in PRIORS:
        a = _kkt_solve(gram_all[None] - gram_out, torch.cat([rhs_all[None] - rhs_out, gap.expand(CV_FOLDS, -1, 1)],
                                                             2), higher, prior, p / train)  # (F, G, P)
        loss.append(sum(((y[:, h] - a[f] @ x[h].T) ** 2).sum(1) for f, h in enumerate(held)))
    best = torch.stack(loss).argmin(0)  # (G,)
    fits = torch.stack([_kkt_solve(gram_all[None], torch.cat([rhs_all, gap], 1)[None], higher, prior,
                                   p / x.shape[0])[0] for prior in PRIORS])  # (R, G, P)
    return fits[best, torch.arange(y.shape[0], device=x.device)]


def _kkt_solve(gram, rhs, higher, prior: float, per_coalition) -> torch.Tensor:
    """Coefficients ``(F, G, P)`` minimising ``‖y - X a‖² + aᵀ D a`` with ``Σ a = gap`` for each of F Gram
    matrices ``gram`` ``(F, P, P)`` and right-hand sides ``rhs`` ``(F, G, P + 1)`` (``Xᵀy`` and the gap), where
    ``D`` is the floor plus ``prior × per_coalition × (mean Gram diagonal of the higher orders)`` on ``higher``
    (``per_coalition``: ``P / C`` per fold, a number or ``(F,)``). With ``A = XᵀX + D`` (positive definite: the
    floor) the solution is ``A⁻¹(Xᵀy - λ 1)``, ``λ`` set by the constraint: one Cholesky factor per fold."""
    diagonal = gram.diagonal(dim1=1, dim2=2)
    per = torch.as_tensor(per_coalition, dtype=torch.float64, device=gram.device).reshape(-1, 1)
    penalty = 1e-9 * diagonal.mean(1, keepdim=True) + higher.double() * prior * per * (
        diagonal[:, higher].mean(1, keepdim=True) if higher.any() else 0.0)
    factor = torch.linalg.cholesky(gram + torch.diag_embed(penalty))
    ones = torch.ones_like(rhs[:, :1, :-1])
    solved = torch.cholesky_solve(torch.cat([rhs[..., :-1], ones], 1).transpose(1, 2), factor)  # (F, P, G + 1)
    free, unit = solved[..., :-1], solved[..., -1:]  # A⁻¹Xᵀy (F, P, G), A⁻¹1 (F, P, 1)
    multiplier = (free.sum(1) - rhs[..., -1]) / unit.sum(1)  # (F, G)
    return (free - unit * multiplier[:, None, :]).transpose(1, 2)


@dataclass
class LogitSurrogate:
    """``h(U) = σ(b + Σ_{T ⊆ U} β(T))`` per game: ``intercept`` ``(G,)``, ``beta`` ``(G, P)`` on the sets of
    ``member`` ``(P, d)``."""

    intercept: torch.Tensor
    beta: torch.Tensor
    member: torch.Tensor

    def values(self, z: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """``h`` ``(G, M)`` on the coalitions ``z`` ``(M, d)`` (in chunks of coalitions)."""
        member = self.member.to(self.beta.device).double()
        parts = []
        for start in range(0, z.shape[0], chunk):
            zc = z[start:start + chunk].to(self.beta.device).double()
            contains = ((zc @ member.T) == member.sum(1)[None]).double()
            parts.append(torch.sigmoid(self.intercept[:, None] + self.beta @ contains.T))
        return torch.cat(parts, 1)

    def index(self, index: str, k: int, design: Plan, generator: torch.Generator | None) -> torch.Tensor:
        """The index ``(G, P)`` of ``h``: exact from all ``2^d`` coalitions for ``d <= 16``, else the regression
        estimate from ``min(16 × evaluations, 2^15)`` coalitions of ``h`` (no model evaluation either way)."""
        d = self.member.shape[1]
        if d <= MAX_EXACT_PLAYERS:
            c = torch.arange(2**d, device=self.beta.device)
            every = (c[:, None] >> torch.arange(d, device=c.device)) & 1 == 1
            return exact(self.values(every).contiguous(), index, k).to(self.beta)
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        budget = min(max(SURROGATE_FACTOR * design.z.shape[0], design.z.shape[0]), SURROGATE_MAX)
        big = plan(d, budget, True, generator)
        ends = self.values(torch.stack([torch.zeros_like(big.z[0]), torch.ones_like(big.z[0])]))
        return estimate(ends[:, 0], ends[:, 1], self.values(big.z), big, index, k, "regression", self.member)


def logit_surrogate(empty: torch.Tensor, full: torch.Tensor, values: torch.Tensor, z: torch.Tensor,
                    member: torch.Tensor, ridge: float = 1e-3) -> LogitSurrogate:
    """Fit ``logit h`` to the log-odds ``y = log(p / (1 - p))`` of the values ``p`` on ∅, N and the coalitions
    ``z``: least squares weighted by ``p (1 - p)``, the weights of iteratively reweighted least squares for a
    logistic (quasi-binomial) regression of the probabilities, one step from the observed log-odds (McCullagh &
    Nelder, *Generalized Linear Models*, 1989, §2.5). A saturated probability, whose log-odds its float
    rounding decides, weighs next to nothing. A small ridge ``ridge`` × the mean weight on every coefficient, and
    on the interaction coefficients (order >= 2) a prior ``r × their mean Gram diagonal × P / C`` that interactions
    are smaller than main effects (fading with the evaluations, as in :func:`_fit`), with ``r`` chosen per game
    from :data:`PRIORS` by :data:`CV_FOLDS`-fold cross-validation (``r =`` :data:`RIDGE` above :data:`CV_MAX_SETS`
    sets): the squared error of the held-out coalitions' probabilities, ∅ and N always in the fit (Stone 1974),
    the folds a fixed function of the number of coalitions (the same estimate for the same values). No single ``r``
    served every game: on the shapes CNN's superpixels ``r = 0`` was best at 128 evaluations (error 0.48 against
    0.60 at ``r = 0.3``), on the MiniLM probe ``r = 0`` broke down there (1.40 against 0.40); cross-validated 0.45
    and 0.41 (see benchmarks/results/interactions.md). Probabilities clamped to ``[EPS, 1 - EPS]``."""
    if bool(((values < 0) | (values > 1)).any()) or bool(((empty < 0) | (empty > 1) | (full < 0) | (full > 1)).any()):
        raise ValueError('link="logit" needs scores in [0, 1] (probabilities, e.g. a softmax output); these scores '
                         'leave it: use link="identity" or explain the probabilities')
    d = z.shape[1]
    device = values.device
    every = torch.cat([torch.zeros((1, d), dtype=torch.bool, device=z.device), z,
                       torch.ones((1, d), dtype=torch.bool, device=z.device)]).to(device).double()
    m = member.to(device).double()
    x = torch.cat([torch.ones((every.shape[0], 1), dtype=torch.float64, device=device),
                   ((every @ m.T) == m.sum(1)[None]).double()], 1)  # (C + 2, 1 + P)
    p = torch.cat([empty[:, None], values, full[:, None]], 1).double().clamp(EPS, 1 - EPS)
    y = torch.log(p) - torch.log1p(-p)
    weight = p * (1 - p)  # (G, C + 2)
    higher = torch.cat([torch.zeros(1, dtype=torch.bool), member.sum(1) > 1]).to(device)
    rhs_all = (weight * y) @ x
    if x.shape[1] > CV_MAX_SETS + 1:  # the fixed prior
        gram_all = _weighted_gram(x, weight)
        prior = torch.full((1, p.shape[0]), RIDGE, dtype=torch.float64, device=device)
    else:
        gram_all, prior = _logit_prior(x, p, y, weight, rhs_all, higher, ridge)
    per = torch.full((1, 1), x.shape[1] / every.shape[0], dtype=torch.float64, device=device)
    chosen = _logit_solve(gram_all[None], rhs_all[None], weight[None], higher, prior, ridge, per)[0, 0]  # (G, 1 + P)
    return LogitSurrogate(chosen[:, 0], chosen[:, 1:], member.to(device))


def _logit_prior(x, p, y, weight, rhs_all, higher, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gram matrices ``(G, Q, Q)`` of :func:`logit_surrogate`'s fit on every coalition ``x`` ``(C + 2, Q)`` (∅
    first, N last) and each game's prior ``(1, G)`` from :data:`PRIORS` by cross-validation: the squared error of
    the held-out probabilities ``p`` ``(G, C + 2)``, ∅ and N always fitted (``rhs_all``: the fit's right-hand
    side on every coalition)."""
    priors = torch.tensor(PRIORS, dtype=torch.float64, device=x.device)[:, None]  # (R, 1)
    # fold f of coalition c (∅ and N: -1, always fitted); the Gram and right-hand side of each fold's held-out part
    inner = cv_folds(x.shape[0] - 2).to(x.device)
    fold = torch.cat([inner.new_tensor([-1]), inner, inner.new_tensor([-1])])
    held = torch.stack([fold == f for f in range(CV_FOLDS)])  # (F, C + 2)
    gram_out = torch.stack([_weighted_gram(x[h], weight[:, h]) for h in held])  # (F, G, Q, Q)
    rhs_out = torch.stack([(weight * y)[:, h] @ x[h] for h in held])
    gram_all = gram_out.sum(0) + _weighted_gram(x[fold < 0], weight[:, fold < 0])
    train_gram, train_rhs = gram_all[None] - gram_out, rhs_all[None] - rhs_out
    held = held.double()
    kept = 1.0 - held.sum(1) / x.shape[0]  # share of coalitions each fold fits
    coefficients = _logit_solve(train_gram, train_rhs, weight[None] * (1 - held[:, None]), higher, priors, ridge,
                                x.shape[1] / (x.shape[0] * kept[:, None]))  # (R, F, G, Q)
    predicted = torch.sigmoid(coefficients @ x.T)  # (R, F, G, C + 2)
    loss = ((predicted - p) ** 2 * held[None, :, None]).sum((1, 3))  # (R, G)
    return gram_all, priors[loss.argmin(0), 0][None]


def cv_folds(count: int) -> torch.Tensor:
    """The fold ``(count,)`` of each of ``count`` coalitions, in ``0..CV_FOLDS-1``: ``c × 7919 mod count mod F``
    (7919 a prime: a fixed shuffle, so that a fold is not one run of the design's sizes; no generator needed)."""
    return torch.arange(count) * 7919 % max(count, 1) % CV_FOLDS


def _weighted_gram(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Σ_c weight[g, c] x_c x_cᵀ`` ``(G, Q, Q)`` of ``x`` ``(C, Q)`` (one batched matrix product)."""
    return (x.T[None] * weight[:, None, :]) @ x


def _logit_solve(gram, rhs, weight, higher, priors, ridge: float, per_coalition) -> torch.Tensor:
    """The penalised weighted least squares of :func:`logit_surrogate` for every row of ``priors`` ``(R, 1)``
    (one prior for all games) or ``(R, G)`` (one per game), and every fold of ``gram`` ``(F, G, Q, Q)``, ``rhs``
    ``(F, G, Q)`` (``weight`` ``(F, G, C)`` the fold's weights, ``per_coalition`` ``(F, 1)`` = ``Q / C`` of the
    fold): ``(R, F, G, Q)``."""
    penalty = ridge * weight.mean(2)[..., None] * torch.ones_like(gram[..., 0])  # (F, G, Q)
    if higher.any():
        scale = gram.diagonal(dim1=-2, dim2=-1)[..., higher].mean(-1) * per_coalition  # (F, G)
        penalty = penalty[None] + priors[:, None, :, None] * scale[None, ..., None] * higher.double()
    else:
        penalty = penalty[None].expand(priors.shape[0], *penalty.shape)
    factor = torch.linalg.cholesky(gram[None] + torch.diag_embed(penalty))  # positive definite: the ridge
    return torch.cholesky_solve(rhs[None].expand(priors.shape[0], *rhs.shape)[..., None], factor)[..., 0]
