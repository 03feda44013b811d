"""DPO losses on whole K-way rankings, vectorised with masks like losses.py.

Inputs, shared by every function here:
  policy_logps    (R, K) float  log pi(y_k | x) of completion k in ranking r (its response tokens)
  reference_logps (R, K) float  the same under the reference model (no gradient needed)
  levels          (R, K) long   group position, 0 = best; -1 = unranked or padding; equal = tie

The implicit reward of a completion is beta * (log pi - log ref) (DPO paper, eq. 5). Every
ordered pair (i above j; ties give none) contributes a pairwise loss on the margin; a ranking's
loss is the mean over its pairs, and a batch's the mean over rankings that hold a pair. So a
K-way ranking weighs as much as one pair, and its loss equals the mean over its C(K,2) pairwise
expansion while each completion is forwarded once.

- "sigmoid": -(1 - eps) log sigmoid(m) - eps log sigmoid(-m), m = beta * (delta_i - delta_j),
  delta = log pi - log ref (DPO; eps > 0 is conservative DPO's label smoothing: labels flipped
  with probability eps).
- "ipo": (delta_i - delta_j - 1 / (2 beta))^2 (IPO, Azar et al. 2023, eq. 17): regresses the
  log-ratio margin to a fixed target instead of pushing it to infinity.
- "plackett_luce": the listwise likelihood of the ranked order under the implicit rewards (DPO
  paper, appendix A.3), ties by Breslow's approximation (losses.plackett_luce_loss). For K = 2 it
  is the sigmoid loss without smoothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worker.ml.losses import better_mask, plackett_luce_loss

DPO_LOSSES = ("sigmoid", "ipo", "plackett_luce")


def implicit_rewards(policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """(R, K): beta * (log pi - log ref), the reward the policy implicitly assigns."""
    return beta * (policy_logps.float() - reference_logps.float())


def dpo_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    levels: torch.Tensor,
    *,
    beta: float,
    loss: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch loss, per_ranking (R,)); per_ranking is 0 for rankings without an ordered pair, and
    the batch loss is the mean over the others (0, still differentiable, when there are none)."""
    if loss not in DPO_LOSSES:
        raise ValueError(f"loss: must be one of {DPO_LOSSES}, got {loss!r}")
    rewards = implicit_rewards(policy_logps, reference_logps, beta)
    if loss == "plackett_luce":
        return plackett_luce_loss(rewards, levels)
    better = better_mask(levels)  # (R, K, K): i above j
    margin = rewards[:, :, None] - rewards[:, None, :]  # beta * (delta_i - delta_j)
    if loss == "sigmoid":
        # softplus(-m) = -log sigmoid(m); the smoothing term is the loss of the flipped label
        pair = (1 - label_smoothing) * F.softplus(-margin) + label_smoothing * F.softplus(margin)
    else:
        pair = (margin / beta - 1 / (2 * beta)) ** 2
    pair = torch.where(better, pair, 0.0)
    n_pairs = better.sum(dim=(1, 2))
    per_ranking = pair.sum(dim=(1, 2)) / n_pairs.clamp(min=1)
    keep = n_pairs > 0
    return (per_ranking * keep).sum() / keep.sum().clamp(min=1), per_ranking


def reward_margin_counts(rewards: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of r_i - r_j over ordered pairs, number of pairs), per ranking (R,)."""
    better = better_mask(levels)
    margin = rewards[:, :, None] - rewards[:, None, :]
    return torch.where(better, margin, 0.0).sum(dim=(1, 2)), better.sum(dim=(1, 2)).float()
