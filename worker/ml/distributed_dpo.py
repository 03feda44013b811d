"""DPO across N data-parallel ranks (worker/ml/distributed.py starts them; docs/distributed.md).

Every rank builds the same global batches from the same seed (dpo.train_dpo); a rank forwards
and backwards its slice of each batch (`dpo_data_parallel_step`), with the loss normalised by the
global batch's count of rankings that hold a pair, so the all-reduced gradient is the one a
single process computes. The step's loss and statistics (accuracy, margin, drift) are sums
all-reduced once, so every rank, and rank 0's charts, see the global batch's values. The
reference's log-probs, computed once before training, are split over the ranks and gathered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from worker.ml.dpo_losses import dpo_loss, implicit_rewards, reward_margin_counts
from worker.ml.losses import informative, pair_accuracy_counts
from worker.ml.models import autocast

STAT_SUMS = ("right", "pairs", "margin", "chosen", "n_chosen", "rejected", "n_rejected")


class PolicyLogps(nn.Module):
    """The policy's response log-probs as a module's forward, so DDP (which all-reduces the
    gradients of what ran through its forward) wraps it; dpo.response_logps does the work."""

    def __init__(self, model, pad_id: int):
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, rankings):
        from worker.ml.dpo import response_logps

        return response_logps(self.model, rankings, self.pad_id, next(self.model.parameters()).device)


def dpo_batch_sums(policy: torch.Tensor, reference: torch.Tensor, levels: torch.Tensor, beta: float) -> torch.Tensor:
    """The sums a step's statistics are made of (STAT_SUMS), float64: summed over ranks they are
    the global batch's; dpo_batch_stats turns them into means."""
    rewards = implicit_rewards(policy, reference, beta)
    right, pairs = pair_accuracy_counts(rewards, levels)
    margin, _ = reward_margin_counts(rewards, levels)
    ranked = levels >= 0
    top = torch.where(ranked, levels, 1 << 30).min(dim=1, keepdim=True).values
    bottom = torch.where(ranked, levels, -1).max(dim=1, keepdim=True).values
    keep = informative(levels)[:, None]
    delta = (policy - reference).float()
    chosen, rejected = (levels == top) & keep, (levels == bottom) & keep
    values = [right.sum(), pairs.sum(), margin.sum(), delta[chosen].sum(), chosen.sum(), delta[rejected].sum()]
    return torch.stack([v.double() for v in [*values, rejected.sum()]])


def dpo_batch_stats(sums: torch.Tensor) -> dict[str, float]:
    """accuracy (a tie counts half) and mean margin per ordered pair; chosen / rejected drift:
    mean log pi - log ref of each ranking's best and worst group (as dpo.drift)."""
    s = dict(zip(STAT_SUMS, sums.tolist(), strict=True))
    n_pairs = max(s["pairs"], 1.0)
    return {
        "accuracy": s["right"] / n_pairs,
        "margin": s["margin"] / n_pairs,
        "chosen_drift": s["chosen"] / s["n_chosen"] if s["n_chosen"] else 0.0,
        "rejected_drift": s["rejected"] / s["n_rejected"] if s["n_rejected"] else 0.0,
    }


def dpo_step(
    accelerator, forward, sets: Sequence[Any], references: Sequence[torch.Tensor], cfg, device
) -> tuple[float, dict[str, float]]:
    """Forward (`forward(rankings)` -> flat log-probs) and backward one global batch (`sets` and
    their cached reference log-probs); returns its loss and statistics. With an `accelerator`
    this rank takes its slice of the batch (the same lists on every rank), gradients are
    all-reduced once, and the loss and statistics are the global batch's, the same on every rank
    and as one process computes them. Without one, the whole batch in this process."""
    from worker.ml.dpo import assemble

    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    n_keep = sum(int(informative(s.levels).sum()) for s in sets)  # dpo_loss's count, global
    index, weight = list(range(rank, len(sets), world)), world / max(n_keep, 1)
    if not index:  # fewer rankings than ranks this step: join the all-reduce with a zero gradient
        index, weight = [0], 0.0
    mine = [sets[i] for i in index]
    with autocast(device, cfg.autocast):
        flat = forward(mine)
    policy, levels = assemble(flat.float(), mine)
    reference, _ = assemble(torch.cat([references[i] for i in index]).to(device), mine)
    _, per_ranking = dpo_loss(
        policy, reference, levels, beta=cfg.beta, loss=cfg.loss, label_smoothing=cfg.label_smoothing
    )
    share = (per_ranking * informative(levels)).sum()
    # DDP averages gradients over ranks; `world / n_keep` turns that average into the sum of the
    # ranks' shares over the global count: the gradient of one process's batch mean
    (accelerator.backward if accelerator else torch.Tensor.backward)(share * weight)
    sums = dpo_batch_sums(policy.detach(), reference, levels, cfg.beta) * (weight > 0)
    total = torch.cat([(share.detach().double() * weight / world).reshape(1), sums])
    if accelerator:
        total = accelerator.reduce(total.to(device), "sum")
    return float(total[0]), dpo_batch_stats(total[1:].cpu())


def shared_reference(accelerator, compute, items: Sequence[Any]) -> list[torch.Tensor]:
    """`compute(items)` (a list of per-item CPU tensors, in order) with the work split over the
    ranks: rank r computes items r, r + N, ...; every rank gets the whole list back."""
    if accelerator is None:
        return compute(items)
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = compute(list(items[rank::world])) if items[rank::world] else []
    gathered: list[Any] = [None] * world
    torch_dist.all_gather_object(gathered, mine)
    whole: list[torch.Tensor] = [torch.empty(0)] * len(items)
    for r, values in enumerate(gathered):
        whole[r::world] = values
    return whole
