"""Ranking losses on a padded score matrix, vectorised with masks (no per-pair Python loops).

Inputs, shared by every function here:
  scores  (R, K) float  reward of completion k in ranking r (padding slots: any value)
  levels  (R, K) long   group position of completion k in ranking r, 0 = best; -1 = unranked
                        or padding. Equal levels are ties.

A ranking contributes only if it has at least two distinct levels; otherwise it holds no
preference and is skipped (the loss of a batch without any is 0, still differentiable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def better_mask(levels: torch.Tensor) -> torch.Tensor:
    """(R, K, K) bool: [r, i, j] is True when i is ranked strictly above j. Ties give no pair."""
    ranked = levels >= 0
    both = ranked[:, :, None] & ranked[:, None, :]
    return both & (levels[:, :, None] < levels[:, None, :])


def informative(levels: torch.Tensor) -> torch.Tensor:
    """(R,) bool: rankings with at least two distinct levels."""
    ranked = levels >= 0
    top = torch.where(ranked, levels, levels.new_full((), 1 << 30)).min(dim=1).values
    bottom = torch.where(ranked, levels, levels.new_full((), -1)).max(dim=1).values
    return bottom > top


def kwise_loss(scores: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """InstructGPT's K-wise loss: per ranking, the mean of -log sigmoid(r_i - r_j) over all
    ordered pairs with i ranked above j; then the mean over rankings. Equal to averaging the
    pairwise loss over the C(K,2) expansion, but every completion is scored once.

    Returns (loss, per_ranking (R,)) where per_ranking is 0 for rankings without pairs.
    """
    better = better_mask(levels)  # (R, K, K)
    diff = scores[:, :, None] - scores[:, None, :]  # (R, K, K) r_i - r_j
    pair_loss = torch.where(better, F.softplus(-diff.float()), 0.0)  # -log sigmoid(d)
    n_pairs = better.sum(dim=(1, 2))  # (R,)
    per_ranking = pair_loss.sum(dim=(1, 2)) / n_pairs.clamp(min=1)
    return _mean_over(per_ranking, n_pairs > 0), per_ranking


def plackett_luce_loss(scores: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Listwise Plackett-Luce negative log-likelihood of the ranked order, per ranking the mean
    over its terms, then the mean over rankings.

    Ties use Breslow's approximation: every member i of a group is "chosen" from the set made
    of its own group (tied peers included) and all lower groups, giving the term
    logsumexp(r over that set) - r_i. The last group is never chosen against anything below it,
    so it adds no term (a ranking of one tied group therefore contributes nothing, as with the
    K-wise loss). Without ties this is the exact Plackett-Luce likelihood minus its final,
    constant term.
    """
    ranked = levels >= 0
    last = torch.where(ranked, levels, levels.new_full((), -1)).max(dim=1, keepdim=True).values
    chosen = ranked & (levels < last)  # (R, K) terms that count
    k = levels.shape[1]
    eye = torch.eye(k, dtype=torch.bool, device=levels.device)
    # risk[r, i, j]: j is still available when i is chosen. The diagonal keeps every row finite
    # (padding rows would otherwise be all -inf and poison the gradient with NaN).
    risk = (ranked[:, None, :] & (levels[:, None, :] >= levels[:, :, None])) | eye
    expanded = scores.float()[:, None, :].expand(-1, k, -1)
    log_denominator = torch.logsumexp(expanded.masked_fill(~risk, float("-inf")), dim=-1)  # (R, K)
    terms = torch.where(chosen, log_denominator - scores.float(), 0.0)
    n_terms = chosen.sum(dim=1)
    per_ranking = terms.sum(dim=1) / n_terms.clamp(min=1)
    return _mean_over(per_ranking, n_terms > 0), per_ranking


LOSSES = {"kwise": kwise_loss, "plackett_luce": plackett_luce_loss}


def pair_accuracy_counts(scores: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct (R,), total (R,)): per ranking, pairs whose better completion scored higher.
    An exact score tie counts as half right (a constant model scores 50%)."""
    better = better_mask(levels)
    diff = scores[:, :, None] - scores[:, None, :]
    right = (diff > 0).float() + 0.5 * (diff == 0).float()
    return (right * better).sum(dim=(1, 2)), better.sum(dim=(1, 2)).float()


def _mean_over(per_ranking: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # Masked mean without a host sync; a batch without any preference gives 0 (graph intact).
    return (per_ranking * keep).sum() / keep.sum().clamp(min=1)
