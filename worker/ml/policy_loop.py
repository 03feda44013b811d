"""What a PPO run (ppo.train_policy) and an RLOO/GRPO run (rloo.train_rloo) share around their
own iteration step: the set-up (`start_policy_run`), the loop over iterations
(`run_iterations`) and the tail that saves the policy (`finish_policy_run`).

Each optimiser keeps its step function (ppo.ppo_step, rloo.rloo_step) and its own card fields;
everything here is done in the same order for both, so the global RNG is drawn from in the
same places whichever optimiser runs.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from worker.ml.data import Prompt
from worker.ml.distributed_rl import Shard, prompt_order, prompt_seeds
from worker.ml.models import Progress, pick_device
from worker.ml.ppo_config import PPOConfig
from worker.ml.ppo_policy import resolve_reward, save_policy
from worker.ml.ppo_rollout import RewardFn, RolloutSampler
from worker.ml.rloo_config import RLOOConfig
from worker.ml.rollout_engines import resolve_rollout_backend, rollout_sampler
from worker.ml.values import LoraPolicy

PolicyT = TypeVar("PolicyT", bound=LoraPolicy)
RunConfig = PPOConfig | RLOOConfig
IterationStep = Callable[[Sequence[Prompt], Sequence[int] | None, RolloutSampler | None], dict[str, float]]
"""One iteration on this rank's prompts, their sampling seeds (rollout_seeds) and the sampler;
returns the iteration's statistics."""


def zero_reward(prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
    """The control run's reward (reward_source "zero"): 0 for every response."""
    return torch.zeros(len(responses))


@dataclass
class PolicyRun(Generic[PolicyT]):
    """A run once set up: this rank's share of it, the policy and its tokenizer, the frozen
    reward, the optimizer, and what samples the rollouts ("hf" or "vllm")."""

    shard: Shard
    policy: PolicyT
    tokenizer: Any
    reward_fn: RewardFn
    optimizer: torch.optim.Optimizer
    backend: str


@dataclass
class Iterations:
    """What the loop left: per-iteration statistics, its wall time, whether vLLM sampled."""

    history: dict[str, list[float]]
    seconds: float
    rollout_backend: str


def start_policy_run(
    cfg: RunConfig,
    prompts: Sequence[Prompt],
    reward_model_or_fn: Any,
    accelerator: Any,
    load_policy: Callable[[torch.device], tuple[PolicyT, Any]],
    **sizes: int,
) -> PolicyRun[PolicyT]:
    """Check the run, seed it, load the policy (`load_policy(device)` -> (policy, tokenizer)) and
    the reward, and make the optimizer. `sizes` must each split over the ranks. The rollout
    backend is resolved before loading, so a vLLM run that cannot run fails before it loads."""
    if not prompts:
        raise ValueError("prompts: need at least one prompt")
    shard = Shard(accelerator)
    shard.check_divides(**sizes)
    torch.manual_seed(cfg.seed)
    device = accelerator.device if accelerator is not None else pick_device(cfg.device)
    backend = resolve_rollout_backend(cfg.rollout_backend, device, shard.world)
    policy, tokenizer = load_policy(device)
    shard.sync_start(policy.trainable_parameters())
    if shard.world > 1:  # each rank samples its own stream
        torch.manual_seed(cfg.seed + shard.rank)
    reward_fn = (
        zero_reward
        if cfg.reward_source == "zero"
        else resolve_reward(reward_model_or_fn, device, use_autocast=cfg.autocast)
    )
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate, eps=1e-5)
    return PolicyRun(shard, policy, tokenizer, reward_fn, optimizer, backend)


def run_iterations(
    run: PolicyRun[Any],
    cfg: RunConfig,
    prompts: Sequence[Prompt],
    prompts_per_step: int,
    step: IterationStep,
    stage: str,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None,
    on_progress: Progress | None,
    rollout_seeds: bool,
) -> Iterations:
    """`cfg.steps` iterations of `step`, each on `prompts_per_step` prompts of which this rank
    takes its share. Reports `on_step(step, stats)` and `on_progress(done, total, stage)` after
    each; the sampler is closed however the loop ends."""
    shard = run.shard
    history: dict[str, list[float]] = defaultdict(list)
    order: list[int] = []
    shuffle = prompt_order(cfg.seed, shard, rollout_seeds)
    sampler = rollout_sampler(run.backend, cfg.rollout_backend, run.policy.peft_model)  # None: HF generate
    started = time.perf_counter()
    try:
        for iteration in range(cfg.steps):
            # Walk the prompts in a fresh random order each pass (prompts may be fewer than a step's).
            while len(order) < prompts_per_step:
                order += torch.randperm(len(prompts), generator=shuffle).tolist()
            step_prompts, order = [prompts[i] for i in order[:prompts_per_step]], order[prompts_per_step:]
            seeds = prompt_seeds(cfg.seed, iteration, shard.positions(len(step_prompts))) if rollout_seeds else None
            stats = step(shard.take(step_prompts), seeds, sampler)
            for name, value in stats.items():
                history[name].append(value)
            if on_step is not None:
                on_step(iteration + 1, stats)
            if on_progress is not None:
                on_progress(iteration + 1, cfg.steps, stage)
    finally:
        if sampler is not None:
            sampler.close()
    seconds = time.perf_counter() - started
    return Iterations(history, seconds, "hf" if sampler is None else "vllm")


def finish_policy_run(
    run: PolicyRun[Any],
    cfg: RunConfig,
    done: Iterations,
    out_dir: str | os.PathLike,
    *,
    card_fields: dict[str, Any] | None = None,
    carried_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Rank 0 saves the policy adapter (+ card, and the merged model when cfg.merge) and returns
    the metrics: the per-iteration lists, totals and the folders written; other ranks return {}.
    `card_fields` go into the card only; `carried_fields` into the card and the metrics both."""
    if not run.shard.main:
        return {}
    carried_fields = carried_fields or {}
    metrics: dict[str, Any] = dict(done.history)
    if run.shard.accelerator is not None:
        metrics["processes"] = run.shard.world
    metrics.update(total_seconds=done.seconds, samples_per_second=cfg.steps * cfg.batch_size / done.seconds)
    card = {
        "kind": "policy",
        **(card_fields or {}),
        "config": cfg.to_dict(),
        "metrics": {name: values[-1] for name, values in done.history.items()},
        "samples_per_second": metrics["samples_per_second"],
        "rollout_backend": done.rollout_backend,
        **carried_fields,
    }
    metrics.update(carried_fields)
    metrics.update(save_policy(run.policy, run.tokenizer, out_dir, card, merge=cfg.merge))
    return metrics
