"""Active learning for the ranking handout: which open task would a human ranking teach the
reward model most? (docs/active-learning.md)

The reward model's score head is linear in its last-token hidden state, so a cheap stand-in
for an ensemble of reward models is an ensemble of linear heads on those frozen features, each
fitted with the product's Plackett-Luce loss (losses.py) on a bootstrap resample of the ranked
tasks. Where the heads disagree about a task's completions, the reward model's data leave that
order open; a human ranking there moves the model most (query by committee). The "margin"
method instead asks where the heads' mean scores two completions nearly equally; "bald" asks
how much a ranking would tell the committee (its mutual information with the pair's winner).

Three steps, each a plain function (no database, no web, no Celery):
  completion_features(model_dir, items)      -> per task a (K, d) tensor
  fit_score_heads(features, rankings)        -> (n_heads, d + 1) heads (weights, then bias)
  task_uncertainty(heads, features, method)  -> per task a float, higher = ask a human first
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from worker.ml.batching import pad_token_ids, position_ids
from worker.ml.data import Prompt
from worker.ml.formatting import encode_reward_texts
from worker.ml.losses import plackett_luce_loss
from worker.ml.models import autocast
from worker.ml.scorer import RewardScorer

Groups = list[list[int]]
"""One ranking: best-first groups of completion indices; members of a group are tied."""


# --- features ---------------------------------------------------------------------------------


@torch.no_grad()
def completion_features(
    model_dir: str | os.PathLike,
    items: Sequence[tuple[Prompt, Sequence[str]]],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    device: torch.device | str | None = None,
    use_autocast: bool = True,
) -> list[torch.Tensor]:
    """Per (prompt, completions) item a (K, d) float32 CPU tensor: the reward model's last
    hidden state at each completion's last token, which is exactly what its score head reads.

    The model folder is loaded like RewardScorer.load (a full model, a LoRA adapter, a LoRA on an
    SFT adapter); a plain causal LM folder works too (its fresh score head is not used). Texts are
    formatted as the reward model sees them (formatting.reward_text) and cut to `max_length`
    tokens from the left (default: the reward model's own max_length). `use_autocast` as in
    RewardScorer.load: bf16 where the device has it (faster, and slightly off fp32 features).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be at least 1, not {batch_size}")
    for n, (_, completions) in enumerate(items):
        if not completions:
            raise ValueError(f"items[{n}]: a task needs at least one completion")
    scorer = RewardScorer.load(model_dir, device=device, use_autocast=use_autocast)
    tokenizer, model = scorer.tokenizer, scorer.model
    prompts = [prompt for prompt, completions in items for _ in completions]
    texts = [c for _, completions in items for c in completions]
    sequences = encode_reward_texts(tokenizer, prompts, texts, max_length or scorer.max_length)
    backbone = model.base_model  # the transformer under the score head
    flat = torch.empty(len(sequences), model.config.hidden_size, dtype=torch.float32)
    # Similar lengths share a batch, so padding stays small; right padding puts each row's last
    # real token at (length - 1), explicit positions make every row compute as if alone.
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = pad_token_ids([sequences[i] for i in chunk], tokenizer.pad_token_id, side="right")
        ids, mask = ids.to(scorer.device), mask.to(scorer.device)
        with autocast(scorer.device, scorer.use_autocast):
            hidden = backbone(
                input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False
            ).last_hidden_state
        last = (mask.sum(dim=1) - 1).clamp(min=0)
        flat[chunk] = hidden[torch.arange(len(chunk), device=hidden.device), last].float().cpu()
    sizes = [len(completions) for _, completions in items]
    return list(flat.split(sizes))


# --- the ensemble -------------------------------------------------------------------------------


def fit_score_heads(
    features: Sequence[torch.Tensor],
    rankings: Sequence[Sequence[Groups]],
    *,
    n_heads: int = 5,
    seed: int = 0,
    l2: float = 1e-2,
    steps: int = 100,
    bootstrap: bool = True,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """(n_heads, d + 1) linear score heads, score(x) = x @ w + b with [w, b] one row.

    Each head is fitted on its own bootstrap resample of the tasks (a task drawn twice counts
    twice; every ranking a task has, from several labelers, goes with it) by minimising the
    Plackett-Luce loss of losses.py (ties as Breslow groups, as in reward training) plus
    l2 * |w|^2 on standardised features, with full-batch L-BFGS (the problem is convex, so
    `steps` iterations settle it and the result is deterministic given `seed`).

    features[t] is task t's (K_t, d) tensor; rankings[t] its rankings (possibly none), each a
    best-first list of groups of indices into 0..K_t-1. Raises ValueError when no ranking orders
    two completions: with nothing learnt there is nothing to disagree about. bootstrap=False
    fits every head on all tasks (n_heads=1: the plain score head, as the reward model's).
    weights[t], when given, multiplies task t's rankings in the loss (e.g. importance weights
    after a non-random handout); each must be finite and >= 0.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads: must be at least 1, not {n_heads}")
    if l2 < 0 or steps < 1:
        raise ValueError(f"l2 must be >= 0 and steps >= 1 (got l2={l2}, steps={steps})")
    d = _check_features(features)
    if len(rankings) != len(features):
        raise ValueError(f"rankings: {len(rankings)} tasks, but features has {len(features)}")
    if weights is not None and (len(weights) != len(features) or not all(math.isfinite(v) and v >= 0 for v in weights)):
        raise ValueError(f"weights: expected {len(features)} finite values >= 0, one per task")
    design = ranking_design(features, rankings)
    rows, x, levels, mu, sd = design.rows, design.x, design.levels, design.mu, design.sd
    tasks = sorted({task for task, _ in rows})
    row_task = torch.tensor([tasks.index(task) for task, _ in rows])
    generator = torch.Generator().manual_seed(seed)
    heads = torch.empty(n_heads, d + 1)
    for h in range(n_heads):
        draw = torch.randint(len(tasks), (len(tasks),), generator=generator)
        counts = torch.bincount(draw, minlength=len(tasks)).float() if bootstrap else torch.ones(len(tasks))
        if weights is not None:
            counts = counts * torch.tensor([float(weights[task]) for task in tasks])
        weight = counts[row_task]  # (R,)
        w, b = _fit_one(x, levels, weight, l2, steps)
        heads[h, :d] = w / sd
        heads[h, d] = b - (mu / sd) @ w
    return heads


def lure_weights(chances: list[float], pool_size: int) -> list[float]:
    """LURE importance weights (Farquhar, Gal & Rainforth 2021, eq. 5) of the M tasks ranked so far,
    the m-th drawn from the N - m + 1 still open with chance q_m: v_m = 1 + (N - M) / (N - m)
    (1 / ((N - m + 1) q_m) - 1). A uniform draw (q_m = 1 / (N - m + 1)) weighs 1, so a random
    handout's fit is unchanged; the weighted mean loss is an unbiased estimate of the whole
    pool's. For fit_score_heads(..., weights=...)."""
    n, total = pool_size, len(chances)
    if total > n or not all(0 < q <= 1 for q in chances):
        raise ValueError(f"chances: expected at most pool_size={n} values in (0, 1], got {total}")
    # m = N only when the whole pool is ranked (M = N): then every weight is 1
    return [
        1 + ((n - total) / (n - m) if m < n else 0.0) * (1 / ((n - m + 1) * q) - 1)
        for m, q in enumerate(chances, start=1)
    ]


class RankingDesign(NamedTuple):
    """The fit's inputs: rankings that order something, their completions' standardised features."""

    rows: list[tuple[int, int]]  # (task, ranking index) per row
    x: torch.Tensor  # (R, K_max, d) standardised features, zero padding
    levels: torch.Tensor  # (R, K_max) group level per completion, -1 = padding
    mu: torch.Tensor  # (d,) feature mean of every labelled completion
    sd: torch.Tensor  # (d,) their sd (at least 1e-6): standardised = (raw - mu) / sd


def ranking_design(features: Sequence[torch.Tensor], rankings: Sequence[Sequence[Groups]]) -> RankingDesign:
    """Validated rankings and standardised features as fit_score_heads reads them; standardising
    lets one l2 suit any hidden size and scale (heads are mapped back to raw features). Raises
    ValueError when no ranking orders two completions."""
    d = _check_features(features)
    rows, levels = _ranking_rows(features, rankings)
    if not rows:
        raise ValueError("rankings: no ranking orders two completions of a task; fit needs at least one")
    flat = torch.cat([f.float() for f in features])
    mu, sd = flat.mean(dim=0), flat.std(dim=0, unbiased=False).clamp(min=1e-6)
    x = torch.zeros(len(rows), levels.shape[1], d)
    for r, (task, _) in enumerate(rows):
        f = (features[task].float() - mu) / sd
        x[r, : len(f)] = f
    return RankingDesign(rows, x, levels, mu, sd)


def _fit_one(
    x: torch.Tensor, levels: torch.Tensor, weight: torch.Tensor, l2: float, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.zeros(x.shape[-1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)  # shifts every score alike: PL ignores it, kept for a readable scale
    optimizer = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-6)
    total = weight.sum().clamp(min=1.0)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        _, per_ranking = plackett_luce_loss(x @ w, levels)
        loss = (per_ranking * weight).sum() / total + l2 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def _check_features(features: Sequence[torch.Tensor]) -> int:
    if not features:
        raise ValueError("features: no tasks")
    d = None
    for t, f in enumerate(features):
        if f.dim() != 2 or f.shape[0] < 1:
            raise ValueError(f"features[{t}]: expected a (K, d) tensor with K >= 1, got shape {tuple(f.shape)}")
        if d is not None and f.shape[1] != d:
            raise ValueError(f"features[{t}]: hidden size {f.shape[1]}, but earlier tasks have {d}")
        d = f.shape[1]
    return int(d)  # type: ignore[arg-type]  # set by the loop: features is non-empty


def _ranking_rows(
    features: Sequence[torch.Tensor], rankings: Sequence[Sequence[Groups]]
) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Validated rankings as ([(task, ranking)], levels (R, K_max)); rankings with a single group
    teach no order and are left out."""
    k_max = max(len(f) for f in features)
    rows, level_rows = [], []
    for t, task_rankings in enumerate(rankings):
        k = len(features[t])
        for n, groups in enumerate(task_rankings):
            where = f"rankings[{t}][{n}]"
            levels = [-1] * k_max
            for level, group in enumerate(groups):
                if not group:
                    raise ValueError(f"{where}: empty group at position {level}")
                for index in group:
                    if not isinstance(index, int) or not 0 <= index < k:
                        raise ValueError(f"{where}: completion index {index!r} outside 0..{k - 1}")
                    if levels[index] >= 0:
                        raise ValueError(f"{where}: completion {index} appears twice")
                    levels[index] = level
            if len(groups) >= 2:
                rows.append((t, n))
                level_rows.append(levels)
    return rows, torch.tensor(level_rows, dtype=torch.long).reshape(len(level_rows), k_max)


# --- uncertainty ----------------------------------------------------------------------------------


def head_scores(heads: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(K, n_heads): every head's score of each completion of one task."""
    return features.float() @ heads[:, :-1].T + heads[:, -1]


def _pairs(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    i, j = zip(*itertools.combinations(range(k), 2), strict=True)
    return torch.tensor(i), torch.tensor(j)


def disagreement(scores: torch.Tensor) -> float:
    """Mean over completion pairs of the variance across heads of P(i preferred to j) =
    sigmoid(s_i - s_j). Unlike the share of heads voting against the majority (vote), it is
    continuous: with 5 heads a vote takes 3 values and most tasks tie at 0 once the heads
    agree on the sign, while the variance still tells a 0.6/0.9 split from a 0.98/0.99 one."""
    i, j = _pairs(len(scores))
    p = torch.sigmoid(scores[i] - scores[j])  # (pairs, heads)
    return float(p.var(dim=1, unbiased=False).mean())


def vote(scores: torch.Tensor) -> float:
    """Mean over completion pairs of the share of heads that order the pair against the
    heads' majority (0 = unanimous, up to just under 0.5)."""
    i, j = _pairs(len(scores))
    above = (scores[i] > scores[j]).float().mean(dim=1)
    return float(torch.minimum(above, 1 - above).mean())


def margin(scores: torch.Tensor) -> float:
    """1 / (1 + the smallest gap between two completions' mean-head scores): a near tie gives
    about 1, a clear order about 0. The same order as "minus the smallest gap", kept finite and
    positive so a task with one completion (no pair, score 0) sorts last with every method."""
    mean = scores.mean(dim=1).sort().values
    return float(1.0 / (1.0 + (mean[1:] - mean[:-1]).min()))


def bald(scores: torch.Tensor) -> float:
    """Mean over completion pairs of the committee's mutual information about who wins the pair
    (BALD, Houlsby et al. 2011): H(mean_h p_h) - mean_h H(p_h) with p_h = sigmoid(s_i - s_j) of
    head h. High where the heads are each confident but disagree, which is what a label settles;
    a pair every head calls a coin flip scores 0, since a ranking of it teaches the heads little
    they do not already expect. For small spreads it is about Var_h(p) / (2 p(1 - p)): the
    disagreement, weighted up where the mean is sure."""
    i, j = _pairs(len(scores))
    p = torch.sigmoid(scores[i] - scores[j]).double()  # (pairs, heads); double keeps the difference exact
    information = _binary_entropy(p.mean(dim=1)) - _binary_entropy(p).mean(dim=1)
    return float(information.clamp(min=0.0).mean())


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


def pool_information(scores: Sequence[torch.Tensor]) -> list[float]:
    """Per task, how much its ranking would tell the committee about the *open pool's* pairs
    (an EPIG-like target-aware score, Bickford Smith et al. 2023), from every open task's
    (K, n_heads) scores at once. Disagreement and BALD reward any uncertainty, also an outlier's
    that no other task shares; here a pair counts by how much observing it would shrink the
    committee's variance over all open pairs: in a Gaussian view of the heads' score
    differences, Cov(c, t)^2 / (Var(c) + 1 / (p_c (1 - p_c))) summed over target pairs t (the
    noise term is a logistic label's inverse Fisher information), each target weighted by
    (p_t (1 - p_t))^2, its variance in probability. Mean over the task's pairs, like the others;
    a task with fewer than two completions: 0.0."""
    pair_rows: list[torch.Tensor] = []
    for s in scores:
        if len(s) >= 2:
            i, j = _pairs(len(s))
            pair_rows.append((s[i] - s[j]).double())
    if not pair_rows:
        return [0.0] * len(scores)
    differences = torch.cat(pair_rows)  # (pairs, heads)
    n_heads = differences.shape[1]
    mean = differences.mean(dim=1)
    centred = differences - mean[:, None]
    p = torch.sigmoid(mean)
    confidence = p * (1 - p)
    weighted = centred * (confidence**2)[:, None]
    spread = weighted.T @ centred / (n_heads**2 * len(differences))  # (heads, heads), mean over targets
    shared = ((centred @ spread) * centred).sum(dim=1)  # sum_t Cov(c, t)^2 weighted, per candidate pair
    own = (centred**2).sum(dim=1) / n_heads
    per_pair = shared / (own + 1 / confidence.clamp(min=1e-12))
    out, at = [], 0
    for s in scores:
        count = len(s) * (len(s) - 1) // 2
        out.append(float(per_pair[at : at + count].mean()) if count else 0.0)
        at += count
    return out


def _each_task(measure: Callable[[torch.Tensor], float]) -> Callable[[Sequence[torch.Tensor]], list[float]]:
    return lambda scores: [measure(s) if len(s) >= 2 else 0.0 for s in scores]


METHODS: dict[str, Callable[[Sequence[torch.Tensor]], list[float]]] = {
    "disagreement": _each_task(disagreement),
    "vote": _each_task(vote),
    "margin": _each_task(margin),
    "bald": _each_task(bald),
    "pool_information": pool_information,
}
"""Per open task's (K, n_heads) head scores, all open tasks at once (pool_information weighs each
task against the rest), its uncertainty; higher = ask first, 0.0 for a task with K < 2."""


def task_uncertainty(
    heads: torch.Tensor, features: Sequence[torch.Tensor], *, method: str = "disagreement"
) -> list[float]:
    """Per task, how much a human ranking of it would teach the reward model; higher first.
    A task with fewer than two completions teaches no order: 0.0 (every method's floor)."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    if heads.dim() != 2 or heads.shape[0] < 1:
        raise ValueError(f"heads: expected an (n_heads, d + 1) tensor, got shape {tuple(heads.shape)}")
    if not features:
        return []
    d = _check_features(features)
    if heads.shape[1] != d + 1:
        raise ValueError(f"heads: {heads.shape[1]} columns, but features have hidden size {d} (needs d + 1)")
    return METHODS[method]([head_scores(heads, f) for f in features])


def rank_tasks(heads: torch.Tensor, features: Sequence[torch.Tensor], *, method: str = "disagreement") -> list[int]:
    """Task indices, most uncertain first (ties keep input order, so the handout is stable)."""
    values = task_uncertainty(heads, features, method=method)
    return sorted(range(len(values)), key=lambda t: -values[t])


def fit_and_rank(
    labelled: Sequence[torch.Tensor],
    rankings: Sequence[Sequence[Groups]],
    open_tasks: Sequence[torch.Tensor],
    *,
    method: str = "disagreement",
    n_heads: int = 5,
    seed: int = 0,
) -> list[float]:
    """fit_score_heads on the labelled tasks, then task_uncertainty of the open ones."""
    heads = fit_score_heads(labelled, rankings, n_heads=n_heads, seed=seed)
    return task_uncertainty(heads, open_tasks, method=method)
