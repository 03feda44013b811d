"""Active learning with a Laplace posterior of the score head instead of a bootstrap committee
(docs/active-learning.md, "Laplace posterior").

A committee of 5 bootstrap heads spans at most 4 directions of a 576-dimensional head, so its
variances miss most of what the data leave open. The linear Plackett-Luce head has a full-rank
Gaussian (Laplace) posterior for the price of one d x d matrix: around the fitted head w (MAP),
the covariance is the inverse Hessian of the fit's objective. With it, what one more ranking of
an open task would teach has a closed form, and a batch of tasks can be chosen so that its
members teach different things (each pick updates the posterior before the next one).

Two scores per open task, both under the Gaussian approximation:
  "information" (D-optimal): the mutual information between the task's ranking and the head,
      log det(I + Sigma F_task), F_task the ranking's expected Fisher information;
  "pool" (V-optimal, EPIG-like): how much the ranking would shrink the posterior variance of the
      open pool's pair score differences, each pair weighted by (p (1 - p))^2, its variance in
      probability;
  "error" (expected error reduction, Roy & McCallum 2001, on the pool's pairs): how many of the
      open pool's pairs the head is expected to order correctly once the ranking is in, under
      the Gaussian preposterior. A pair's score difference z.w is N(mu, s^2); the head orders it
      right with chance Phi(|mu| / s); after the batch its variance is s'^2 and its mean moves by
      N(0, s^2 - s'^2), so the expected chance is E Phi(|mu + sqrt(s^2 - s'^2) xi| / s'),
      xi ~ N(0, 1) (24-node Gauss-Hermite). Unlike "pool" it ignores pairs whose order is
      already settled however wide their variance, and pairs no ranking can settle.

Plain functions on tensors, like worker/ml/active.py: no database, web or Celery.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy
import torch

from worker.ml.active import Groups, fit_score_heads, ranking_design

SCORES = ("information", "pool", "error")
"""What laplace_batch maximises: the task's information about the head, about the pool, or the
pool pairs' expected misorderings it removes."""
ERROR_TARGET_PAIRS = 2000
"""At most this many open pool pairs (a fixed-seed sample) for the "error" score: its cost grows
with candidates x pairs, and 2,000 pairs estimate the pool's error to about a percent."""
_NODES, _WEIGHTS = (a.tolist() for a in numpy.polynomial.hermite_e.hermegauss(24))
"""Gauss-Hermite (probabilists') nodes and weights: E f(xi) = sum w f(node) / sqrt(2 pi)."""


class LaplacePosterior(NamedTuple):
    """Gaussian posterior of the score head's weights on standardised features."""

    head: torch.Tensor  # (1, d + 1) the fitted head on raw features, as fit_score_heads gives it
    mean: torch.Tensor  # (d,) its weights on standardised features (the MAP)
    covariance: torch.Tensor  # (d, d) float64, the inverse Hessian of the fit's summed objective
    mu: torch.Tensor  # (d,) standardised = (raw - mu) / sd, the fit's standardisation
    sd: torch.Tensor  # (d,)


def ranking_hessian(scores: torch.Tensor, levels: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(d, d) float64 Hessian in w of sum_r weight_r * per_ranking_r, the per-ranking loss of
    losses.plackett_luce_loss (Breslow ties; each ranking the mean over its terms) at scores =
    x @ w. A term logsumexp(s over its risk set) - s_i has the Hessian Cov(x) under the softmax
    over its risk set, whatever the chosen member: x (R, K, d), levels (R, K) with -1 padding."""
    ranked = levels >= 0
    last = torch.where(ranked, levels, levels.new_full((), -1)).max(dim=1, keepdim=True).values
    chosen = ranked & (levels < last)  # (R, K)
    risk = ranked[:, None, :] & (levels[:, None, :] >= levels[:, :, None])  # (R, i, j): j at risk when i is chosen
    risk = risk | torch.eye(levels.shape[1], dtype=torch.bool)  # keeps padding rows finite (never chosen)
    logits = scores.double()[:, None, :].expand(-1, levels.shape[1], -1).masked_fill(~risk, float("-inf"))
    p = torch.softmax(logits, dim=-1)  # (R, i, K)
    covariance = torch.diag_embed(p) - p[..., :, None] * p[..., None, :]  # (R, i, K, K)
    per_term = weight.double() / chosen.sum(dim=1).clamp(min=1).double()  # (R,)
    m = (covariance * chosen[..., None, None]).sum(dim=1) * per_term[:, None, None]  # (R, K, K)
    xd = x.double()
    return torch.einsum("rkd,rkl,rle->de", xd, m, xd)


def laplace_posterior(
    features: Sequence[torch.Tensor],
    rankings: Sequence[Sequence[Groups]],
    *,
    l2: float,
    steps: int = 100,
    head: torch.Tensor | None = None,
) -> LaplacePosterior:
    """Fit one head on every ranking (fit_score_heads(..., n_heads=1, bootstrap=False), or take
    `head`, that fit's result) and its Laplace posterior. The fit minimises mean_r loss_r +
    l2 |w|^2 over the R rankings that order something; read as a negative log posterior that is
    R times it, sum_r loss_r + l2 R |w|^2, so the precision is sum_r Hessian_r + 2 l2 R I (the
    prior's precision grows with R, exactly as the fit's regularisation does)."""
    if head is None:
        head = fit_score_heads(features, rankings, n_heads=1, bootstrap=False, l2=l2, steps=steps)
    design = ranking_design(features, rankings)
    d = design.x.shape[-1]
    mean = head[0, :d] * design.sd
    n_rankings = len(design.rows)
    precision = ranking_hessian(design.x @ mean, design.levels, design.x, torch.ones(n_rankings))
    precision += 2 * l2 * n_rankings * torch.eye(d, dtype=torch.float64)
    covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    return LaplacePosterior(head, mean, covariance, design.mu, design.sd)


def expected_ranking_information(scores: torch.Tensor) -> torch.Tensor:
    """(n, K, K) expected Hessian, in the task's scores, of one strict ranking's per-ranking loss
    when the ranking is drawn from the Plackett-Luce model itself (scores (n, K), one row a task).
    A stage choosing from the remaining set S contributes Cov under the softmax over S whatever
    is chosen, so the expectation weighs each S by the chance that the others were picked
    first (a sum over subsets, 2^K of them), divided by the K - 1 terms as the loss is."""
    n, k = scores.shape
    information = torch.zeros(n, k, k, dtype=torch.float64)
    if k < 2:
        return information
    weights = torch.exp(scores.double() - scores.double().max(dim=1, keepdim=True).values)
    picked_first = {0: torch.ones(n, dtype=torch.float64)}  # bitmask of picked completions -> chance
    for size in range(k - 1):
        for members in itertools.combinations(range(k), size):
            mask = sum(1 << i for i in members)
            remaining = [i for i in range(k) if not mask >> i & 1]
            chance = picked_first[mask]
            p = weights[:, remaining] / weights[:, remaining].sum(dim=1, keepdim=True)
            block = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
            index = torch.tensor(remaining)
            information[:, index[:, None], index[None, :]] += chance[:, None, None] * block
            for n_pick, i in enumerate(remaining):
                after = mask | 1 << i
                picked_first[after] = picked_first.get(after, 0) + chance * p[:, n_pick]
    return information / (k - 1)


def laplace_batch(
    posterior: LaplacePosterior,
    features: Sequence[torch.Tensor],
    batch: int,
    *,
    score: str = "information",
    target: Sequence[torch.Tensor] | None = None,
) -> list[int]:
    """Indices of `batch` open tasks (features[t] is task t's (K_t, d) raw features), best first:
    greedily the task with the highest score under the current posterior, which is then updated
    as if its ranking were observed (rank-K update: the Gaussian's information gain does not
    depend on the outcome), so a batch does not ask the same thing twice. Tasks with fewer than
    two completions teach nothing and come last. target ("pool" only): groups of raw features,
    (n_g, d) each, whose every within-group pair is the pool the score is about (default: the
    open tasks, each its own group; e.g. every open answer to a prompt as one group, so pairs
    across a prompt's tasks count too)."""
    return _greedy(posterior, features, batch, score=score, rank_rest=False, target=target)


def laplace_order(
    posterior: LaplacePosterior, features: Sequence[torch.Tensor], batch: int, *, score: str = "information"
) -> list[int]:
    """Every task's index in handout order: laplace_batch's `batch` greedy picks, then the rest
    by their score once that batch is counted (no further updates: each greedy pick costs a pass
    over every open task, and a refresh comes after the next reward model anyway). Tasks with
    fewer than two completions come last."""
    return _greedy(posterior, features, batch, score=score, rank_rest=True)


def laplace_draw(
    posterior: LaplacePosterior,
    features: Sequence[torch.Tensor],
    batch: int,
    generator: torch.Generator,
    *,
    score: str = "pool",
) -> list[tuple[int, float]]:
    """(index, probability it was drawn with) for `batch` open tasks drawn at random, each with
    probability proportional to its score under the current posterior (power acquisition with
    exponent 1, Kirsch et al. 2023: a greedy top-k over a noisy score chases its outliers), the
    posterior updated after each draw as in laplace_batch. The probabilities are what an
    importance-weighted refit needs (LURE, Farquhar et al. 2021; worker.ml.active.lure_weights).
    A negative score counts as 0; when no open task scores above 0 the draw is uniform among
    those that can teach (any open task when none can)."""
    drawn: list[tuple[int, float]] = []

    def choose(gains: torch.Tensor) -> int:
        usable = torch.isfinite(gains) & (gains > -torch.finfo(gains.dtype).max)
        if not bool(usable.any()):  # nothing open can teach: any open task
            usable = torch.isfinite(gains)
        weight = torch.where(usable, gains.clamp(min=0), torch.zeros_like(gains))
        if float(weight.sum()) <= 0:
            weight = usable.to(gains.dtype)
        probability = weight / weight.sum()
        pick = int(torch.multinomial(probability.float(), 1, generator=generator))
        drawn.append((pick, float(probability[pick])))
        return pick

    _greedy(posterior, features, batch, score=score, rank_rest=False, choose=choose)
    return drawn


def _greedy(
    posterior: LaplacePosterior,
    features: Sequence[torch.Tensor],
    batch: int,
    *,
    score: str,
    rank_rest: bool,
    target: Sequence[torch.Tensor] | None = None,
    choose: Callable[[torch.Tensor], int] | None = None,
) -> list[int]:
    if score not in SCORES:
        raise ValueError(f"score: {score!r} is not one of {', '.join(SCORES)}")
    if batch < 0:
        raise ValueError(f"batch: must be at least 0, not {batch}")
    if not features:
        return []
    d = posterior.mean.shape[0]
    for t, f in enumerate(features):
        if f.dim() != 2 or f.shape[1] != d:
            raise ValueError(f"features[{t}]: expected a (K, {d}) tensor (the posterior's hidden size)")
    for g, f in enumerate(target or []):
        if f.dim() != 2 or f.shape[1] != d:
            raise ValueError(f"target[{g}]: expected an (n, {d}) tensor (the posterior's hidden size)")
    x = [((f.float() - posterior.mu) / posterior.sd).double() for f in features]  # (K_t, d) each
    k_max = max(len(f) for f in x)
    # F_t = U_t U_t^T, U_t = X_t^T L_t with L_t L_t^T = M_t; zero columns pad every U_t to K_max
    # (they add 1 to I + U^T Sigma U's diagonal and nothing to either score).
    u = torch.zeros(len(x), d, k_max, dtype=torch.float64)
    for t, f in enumerate(x):
        u[t, :, : len(f)] = f.T @ _information_root(f @ posterior.mean.double())
    covariance = posterior.covariance.clone()
    if score == "pool":
        groups = x if target is None else [((f.float() - posterior.mu) / posterior.sd).double() for f in target]
        target_matrix = _pool_target(groups, posterior.mean.double())
    else:
        target_matrix = None
    pairs = _pool_pairs(x) if score == "error" else None
    if pairs is not None:
        pair_mean = pairs @ posterior.mean.double()  # (P,) fixed: a hallucinated ranking has no outcome
        pair_variance_before = ((pairs @ covariance) * pairs).sum(-1)  # s^2, before this batch
    eye = torch.eye(k_max, dtype=torch.float64)
    picked: list[int] = []
    open_ = torch.ones(len(x), dtype=torch.bool)
    teaches = torch.tensor([len(f) >= 2 for f in x])  # a lone completion orders nothing: last
    while len(picked) < len(x) and (len(picked) < batch or rank_rest):
        spread = covariance @ u  # (n, d, K)
        inner = eye + u.transpose(1, 2) @ spread  # (n, K, K)
        if pairs is not None:
            gains = _expected_correct(pairs, pair_mean, pair_variance_before, covariance, spread, inner)
        elif target_matrix is None:
            gains = torch.linalg.slogdet(inner).logabsdet
        else:  # tr((I + U^T Sigma U)^-1 U^T Sigma A Sigma U): the target's variance removed
            gains = (
                torch.linalg.solve(inner, spread.transpose(1, 2) @ target_matrix @ spread)
                .diagonal(dim1=1, dim2=2)
                .sum(-1)
            )
        gains = gains.masked_fill(~teaches, -torch.finfo(gains.dtype).max).masked_fill(~open_, float("-inf"))
        if len(picked) >= batch:  # the rest by this score, stable among equals
            rest = sorted(torch.nonzero(open_).flatten().tolist(), key=lambda t: -float(gains[t]))
            return picked + rest
        best = int(gains.argmax()) if choose is None else choose(gains)
        picked.append(best)
        open_[best] = False
        covariance = covariance - spread[best] @ torch.linalg.solve(inner[best], spread[best].T)
        covariance = (covariance + covariance.T) / 2
    return picked


def _information_root(scores: torch.Tensor) -> torch.Tensor:
    """(K, K) L with L L^T the task's expected ranking information in its scores."""
    information = expected_ranking_information(scores[None])[0]
    values, vectors = torch.linalg.eigh(information)
    return vectors * values.clamp(min=0).sqrt()


def _pool_target(x: list[torch.Tensor], mean: torch.Tensor) -> torch.Tensor:
    """(d, d) sum over every open pair (i, j) of a task of (p (1 - p))^2 (x_i - x_j)(x_i - x_j)^T:
    the posterior variance of a pair's probability is about (p (1 - p))^2 Var(s_i - s_j)."""
    difference = _pair_differences(x)
    p = torch.sigmoid(difference @ mean)
    return (difference * ((p * (1 - p)) ** 2)[:, None]).T @ difference


def _pool_pairs(x: list[torch.Tensor]) -> torch.Tensor:
    """_pair_differences, at most ERROR_TARGET_PAIRS of them (a fixed-seed sample, so a batch is
    reproducible)."""
    difference = _pair_differences(x)
    if len(difference) > ERROR_TARGET_PAIRS:
        keep = torch.randperm(len(difference), generator=torch.Generator().manual_seed(0))[:ERROR_TARGET_PAIRS]
        difference = difference[keep.sort().values]
    return difference


def _pair_differences(x: list[torch.Tensor]) -> torch.Tensor:
    """(P, d) x_i - x_j for every pair of completions of every open task (P = 0 when none has two)."""
    rows = [torch.zeros(0, x[0].shape[1], dtype=x[0].dtype)]
    for f in x:
        if len(f) >= 2:
            i, j = zip(*itertools.combinations(range(len(f)), 2), strict=True)
            rows.append(f[list(i)] - f[list(j)])
    return torch.cat(rows)


def _expected_correct(
    pairs: torch.Tensor,
    mean: torch.Tensor,
    variance_before: torch.Tensor,
    covariance: torch.Tensor,
    spread: torch.Tensor,
    inner: torch.Tensor,
) -> torch.Tensor:
    """(n,) per candidate task, the expected number of the pairs the head orders right (by the
    posterior's sign of z.w) once the batch so far and the candidate are in. covariance: the
    posterior after the batch so far; spread = covariance U (n, d, K); inner = I + U^T spread."""
    variance_now = ((pairs @ covariance) * pairs).sum(-1)  # (P,)
    chol = torch.linalg.cholesky(inner)  # (n, K, K)
    projected = torch.linalg.solve_triangular(chol, spread.transpose(1, 2) @ pairs.T, upper=False)  # (n, K, P)
    variance_after = (variance_now - projected.square().sum(1)).clamp(min=1e-12)  # (n, P)
    moved = (variance_before - variance_after).clamp(min=0).sqrt()  # (n, P) sd of the mean's move
    correct = torch.zeros_like(variance_after)
    for node, weight in zip(_NODES, _WEIGHTS, strict=True):
        correct += weight * torch.special.ndtr((mean + moved * node).abs() / variance_after.sqrt())
    return correct.sum(-1) / math.sqrt(2 * math.pi)
