"""PPO, RLOO and GRPO across N data-parallel ranks (docs/distributed.md).

Every rank walks the same prompt order (a generator seeded by cfg.seed, not the sampling RNG)
and takes every N-th prompt of each iteration (`Shard.take`): it rolls out that share (for
RLOO/GRPO all k samples of a prompt, so a group's leave-one-out baseline or z-score stays on
one rank), scores it and computes its advantages. What the algorithms take over the whole batch
is reduced across ranks: PPO's whitening of rewards and advantages (mean and variance over every
rank's response tokens, as OpenRLHF's and TRL's PPO trainers all-reduce them), the KL the
adaptive controller sees, and the reported statistics. Each update step's loss is a mean over
the global minibatch's response tokens (`Shard.token_factor`), and the gradients are averaged
over ranks by one flattened all-reduce (`Shard.all_reduce_grads`) rather than a DDP wrapper:
PPO's value_mode "adapter" runs two backwards per forward, which DDP's reducer refuses, and a
LoRA adapter's gradients fit one buffer anyway.

Sampling differs per rank, so N processes do not sample what one does, unless the run keys its
sampling RNG by prompt (`rollout_seeds`: each prompt's samples come from its own generate call
seeded by (seed, iteration, the prompt's place in the iteration)); then, with one update
minibatch per iteration, N processes train as one within float rounding
(tests/ml/test_distributed_rl.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as torch_dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from worker.ml import ppo_math as pm

MAX_STATS = ("advantage_abs_max",)
"""Statistics reduced by max over ranks; the others by mean (equal shares per rank)."""


class Shard:
    """This process's part of a data-parallel run: rank, world size and the collectives the
    trainers need. Without an accelerator it is the whole run in one process, and every method
    is the single-process computation."""

    def __init__(self, accelerator: Any = None):
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.world = accelerator.num_processes if accelerator is not None else 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def check_divides(self, **sizes: int) -> None:
        check_divides(self.world, **sizes)

    def take(self, items: Sequence[Any]) -> list[Any]:
        """This rank's share: items rank, rank + N, ..."""
        return list(items[self.rank :: self.world])

    def positions(self, n: int) -> list[int]:
        """The places in a list of n of the items `take` gives this rank."""
        return list(range(self.rank, n, self.world))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return tensor
        return self.accelerator.reduce(tensor.contiguous(), "sum")

    def token_factor(self, mask: torch.Tensor) -> float:
        """Turns a mean over this rank's minibatch tokens into its share of the mean over the
        global minibatch's tokens, once the ranks' gradients are averaged (n_local * N / n_global)."""
        if self.world == 1:
            return 1.0
        local = mask.sum().double()
        return float(local * self.world / self.sum(local.clone()).clamp(min=1))

    def whiten(self, values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8):
        """ppo_math.masked_whiten with the mean and (unbiased) variance over every rank's tokens."""
        if self.world == 1:
            return pm.masked_whiten(values, mask, shift_mean, eps)
        total, count = self.sum(torch.stack([pm.masked_sum(values, mask), mask.sum()]).double())
        mean = (total / count.clamp(min=1)).to(values.dtype)
        square = self.sum(pm.masked_sum((values - mean) ** 2, mask).double().reshape(1))[0]
        variance = square / count.clamp(min=1) * (count / (count - 1) if count > 1 else 1)
        whitened = (values - mean) * torch.rsqrt(variance.to(values.dtype) + eps)
        return (whitened if shift_mean else whitened + mean) * mask

    def mean(self, value: float) -> float:
        """The mean over ranks of a per-rank mean (shares are equal)."""
        if self.world == 1:
            return value
        return (
            float(self.sum(torch.tensor([value], dtype=torch.float64, device=self.accelerator.device))[0]) / self.world
        )

    def reduce_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """An iteration's statistics over every rank: means, and MAX_STATS by max."""
        if self.world == 1:
            return stats
        names = sorted(stats)
        values = torch.tensor([stats[n] for n in names], dtype=torch.float64, device=self.accelerator.device)
        means = self.sum(values.clone()) / self.world
        torch_dist.all_reduce(values, op=torch_dist.ReduceOp.MAX)
        return {n: float(values[i] if n in MAX_STATS else means[i]) for i, n in enumerate(names)}

    def sync_start(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Every rank starts from rank 0's trainable weights (as DDP's first broadcast)."""
        if self.world > 1:
            for param in params:
                torch_dist.broadcast(param.data, src=0)

    def all_reduce_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Average the gradients over ranks in one flattened all-reduce."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors(grads)
        torch_dist.all_reduce(flat)
        flat /= self.world
        for param, grad in zip(params, _unflatten_dense_tensors(flat, grads), strict=True):
            param.grad = grad


def check_divides(world: int, **sizes: int) -> None:
    """Every rank must run the same number of update steps: each size splits evenly."""
    for name, size in sizes.items():
        if size % world:
            raise ValueError(f"{name}: {size} does not split over {world} processes; use a multiple of {world}")


def prompt_seeds(seed: int, iteration: int, positions: Sequence[int]) -> list[int]:
    """The sampling seed of each prompt at these places of an iteration (rollout_seeds)."""
    return [(seed * 1_000_003 + iteration * 10_007 + p) % (1 << 63) for p in positions]


def prompt_order(seed: int, shard: Shard, rollout_seeds: bool) -> torch.Generator | None:
    """The generator the prompt order is drawn from: one seeded by `seed`, the same on every
    rank and not the one sampling consumes (its state after sampling differs per rank), for a
    data-parallel or keyed (rollout_seeds) run; None (the global RNG, as ever) otherwise."""
    return torch.Generator().manual_seed(seed) if shard.world > 1 or rollout_seeds else None
