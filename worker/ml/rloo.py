"""RLOO and GRPO for a LoRA policy against a frozen reward: `train_rloo(cfg, prompts, reward, out_dir)`.

Both sample K responses per prompt and judge each against the others of its group, so they need
no value function: the advantage of a whole response is its score minus the leave-one-out mean
of the other K-1 (RLOO: Ahmadian et al. 2024, "Back to Basics") or its z-score within the group
(GRPO: Shao et al. 2024, DeepSeekMath). Every token of a response gets that one advantage.

What is shared with PPO (ppo.py): the sampling (ppo_rollout.sample_rollout, or vLLM by
`rollout_backend`: plain temperature sampling, nothing from the checkpoint's generation_config),
the reference (the same backbone with the adapter disabled), logprobs recomputed by a forward
pass at the sampling temperature, the clipped-ratio loss averaged over response tokens
(ppo_math), loading and saving the LoRA policy (ppo_policy), the run's set-up, iteration loop
and saving (policy_loop). What is not: the value head, GAE and whitening.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from worker.ml import ppo_math as pm
from worker.ml.data import Prompt
from worker.ml.distributed_rl import Shard
from worker.ml.models import Progress, autocast
from worker.ml.policy_loop import finish_policy_run, run_iterations, start_policy_run
from worker.ml.ppo_policy import load_lora_policy
from worker.ml.ppo_rollout import RewardFn, RolloutSampler, roll_out_and_score, rollout_stats
from worker.ml.rloo_config import ESTIMATORS, RLOOConfig
from worker.ml.values import LoraPolicy

__all__ = ["RLOOConfig", "group_advantages", "group_spread", "rloo_step", "sequence_advantages", "train_rloo"]

GRPO_STD_EPS = 1e-4
"""Added to the group's std before dividing (as TRL's GRPOTrainer), so a near-tie cannot blow up."""


# --- advantages over groups of K (pure tensor maths) --------------------------------------------


def group_advantages(scores: torch.Tensor, k: int, estimator: str) -> torch.Tensor:
    """[P*k] scores, each prompt's k responses contiguous -> [P*k] advantages.

    "rloo": A_i = r_i - (sum_j r_j - r_i) / (k - 1), the mean of the *other* responses, so a
    response's own score never enters its baseline (unbiased).
    "grpo": A_i = (r_i - mean) / (std + 1e-4), mean and std (Bessel's) over the group.
    A group whose k scores are all equal says nothing about which response is better: its
    advantages are exactly 0 under both (not a rounding residue divided by 1e-4).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if k < 2 or scores.numel() % k:
        raise ValueError(f"need groups of k >= 2 scores, got {scores.numel()} scores for k={k}")
    grouped = scores.float().view(-1, k)  # [P, k]
    if estimator == "rloo":
        baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)  # [P, k]
        advantages = grouped - baseline
    else:
        mean, std = grouped.mean(1, keepdim=True), grouped.std(1, keepdim=True)  # [P, 1]
        advantages = (grouped - mean) / (std + GRPO_STD_EPS)
    tied = (grouped == grouped[:, :1]).all(1, keepdim=True)  # [P, 1]
    return torch.where(tied, torch.zeros_like(advantages), advantages).reshape(-1)


def sequence_advantages(
    scores: torch.Tensor, seq_kl: torch.Tensor, *, k: int, estimator: str, kl_coef: float, kl_in: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages [P*k], the rewards they were taken from [P*k]).

    With kl_in "reward" each score first loses kl_coef * its response's sequence KL (the sum of
    its per-token log-ratios), so a response that strayed further from the reference ranks lower
    within its group; with "loss" the scores are used as they are (the KL acts in the loss)."""
    rewards = scores - kl_coef * seq_kl if kl_in == "reward" else scores
    return group_advantages(rewards, k, estimator), rewards


def group_spread(scores: torch.Tensor, k: int) -> tuple[float, float]:
    """(mean within-group std of the scores, share of groups whose k scores are all equal)."""
    grouped = scores.float().view(-1, k)  # [P, k]
    tied = (grouped == grouped[:, :1]).all(1)  # [P]
    return float(grouped.std(1).mean()), float(tied.float().mean())


# --- one iteration ------------------------------------------------------------------------------


def rloo_step(
    policy: LoraPolicy,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    reward_fn: RewardFn,
    prompts: Sequence[Prompt],
    cfg: RLOOConfig,
    shard: Shard | None = None,
    seeds: Sequence[int] | None = None,
    sampler: RolloutSampler | None = None,
) -> dict[str, float]:
    """One iteration on `prompts` (P of them): sample K responses each, score, take group
    advantages, update. Returns stats. With a data-parallel `shard`, `prompts` are this rank's
    share of the iteration's (distributed_rl.py); `seeds`: one sampling seed per prompt;
    `sampler`: what samples (None: HF generate; rollout_engines.py)."""
    shard = shard or Shard()
    device = policy.causal_lm.device
    use_amp = cfg.autocast
    started = time.perf_counter()

    # 1. Roll out K responses per prompt, each prompt's K in adjacent rows (one group), all in
    #    as few generate calls as generation_batch_size allows;
    # 2. score the decoded responses with the frozen reward; penalise responses without EOS.
    policy.eval()  # dropout is also zeroed for good in load_lora_policy
    repeated = [prompt for prompt in prompts for _ in range(cfg.k)]  # [B = P*k]
    rollout, raw_scores, scores = roll_out_and_score(
        policy.peft_model, tokenizer, repeated, reward_fn, cfg, device, group_seeds=seeds, sampler=sampler
    )
    rollout_seconds = time.perf_counter() - started
    input_ids, attention_mask = rollout.input_ids, rollout.attention_mask  # [B, Lq + T]
    response_ids, mask = rollout.response_ids, rollout.response_mask  # [B, T]
    n_context, batch = rollout.query_ids.shape[1], response_ids.shape[0]

    # 3. Logprobs of the sampled tokens under the rollout policy and under the reference
    #    (adapter disabled), recomputed by a forward pass as PPO does.
    old_logprob_chunks: list[torch.Tensor] = []
    ref_logprob_chunks: list[torch.Tensor] = []
    entropy_chunks: list[torch.Tensor] = []
    with torch.no_grad(), autocast(device, use_amp):
        for rows in torch.arange(batch).split(cfg.minibatch_size):
            ids, am, labels = input_ids[rows], attention_mask[rows], response_ids[rows]
            logits = policy.policy_logits(ids, am, n_context, cfg.temperature)  # [b, T, V]
            old_logprob_chunks.append(pm.logprobs_of_labels(logits, labels))  # [b, T]
            entropy_chunks.append(pm.entropy_from_logits(logits))  # [b, T]
            ref_logits = policy.reference_logits(ids, am, n_context, cfg.temperature)
            ref_logprob_chunks.append(pm.logprobs_of_labels(ref_logits, labels))  # [b, T]
    old_logprobs, ref_logprobs = torch.cat(old_logprob_chunks), torch.cat(ref_logprob_chunks)  # [B, T]
    entropy = torch.cat(entropy_chunks)  # [B, T]

    # 4. One advantage per response from its group; every one of its tokens gets it.
    seq_kl = (pm.kl_estimate(old_logprobs, ref_logprobs, "k1") * mask).sum(1)  # [B]
    advantages, rewards = sequence_advantages(
        scores, seq_kl, k=cfg.k, estimator=cfg.estimator, kl_coef=cfg.kl_coef, kl_in=cfg.kl_in
    )  # [B], [B]
    token_advantages = advantages.unsqueeze(1).expand_as(mask)  # [B, T]

    # 5. Clipped-ratio updates over shuffled minibatches; the loss is the mean over response
    #    tokens (plus beta * per-token k3 KL when kl_in is "loss"), over the global minibatch.
    trainable = policy.trainable_parameters()
    update_stats: dict[str, list[float]] = defaultdict(list)
    for _epoch in range(cfg.update_epochs):
        for rows in torch.randperm(batch).split(cfg.minibatch_size // shard.world):
            ids, am, labels, mb_mask = input_ids[rows], attention_mask[rows], response_ids[rows], mask[rows]
            with autocast(device, use_amp):
                logits = policy.policy_logits(ids, am, n_context, cfg.temperature)  # [b, T, V]
                new_logprobs = pm.logprobs_of_labels(logits, labels)  # [b, T]
                pg_loss, pg_stats = pm.clipped_policy_loss(
                    new_logprobs, old_logprobs[rows], token_advantages[rows], mb_mask, cfg.clip_range
                )
                loss, extra = pg_loss, dict[str, torch.Tensor]()
                if cfg.kl_in == "loss":  # k3 >= 0 per token, its gradient pulls toward the reference
                    extra["kl_loss"] = pm.masked_mean(pm.kl_estimate(new_logprobs, ref_logprobs[rows], "k3"), mb_mask)
                    loss = pg_loss + cfg.kl_coef * extra["kl_loss"]
            share = shard.token_factor(mb_mask)
            (loss * share).backward()
            shard.all_reduce_grads(trainable)
            if cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for name, value in {"policy_loss": pg_loss, **pg_stats, **extra}.items():
                update_stats[name].append(value.item() * share)

    # 6. Summarise the iteration (over every rank's share).
    group_reward_std, zero_std_groups = group_spread(scores, cfg.k)
    stats = {name: sum(vals) / len(vals) for name, vals in update_stats.items()}
    stats.update(rollout_stats(rollout, raw_scores, scores, seq_kl, entropy))
    stats.update(
        {
            "non_score_reward": float((rewards - scores).mean()),
            "kl_coef": cfg.kl_coef,
            "advantage_mean": float(advantages.mean()),
            "advantage_std": float(advantages.std()),
            "advantage_abs_max": float(advantages.abs().max()),
            "group_reward_std": group_reward_std,
            "zero_std_groups": zero_std_groups,
            "rollout_seconds": rollout_seconds,
            "seconds": time.perf_counter() - started,
        }
    )
    return shard.reduce_stats(stats)


def train_rloo(
    cfg: RLOOConfig,
    prompts: Sequence[Prompt],
    reward_model_or_fn,
    out_dir: str | os.PathLike,
    on_progress: Progress | None = None,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    accelerator: Any = None,
    rollout_seeds: bool = False,
) -> dict[str, Any]:
    """Run `cfg.steps` RLOO or GRPO iterations and save the policy adapter (+ card) in `out_dir`.

    `reward_model_or_fn`: a reward artifact folder, a RewardScorer, or any callable
    `reward_fn(prompts, responses) -> tensor [B]`. `on_progress(done, total, "rloo")` after each
    iteration; `on_step(step, stats)` too, for live charts. Returns per-iteration lists (score,
    kl, entropy, policy_loss, clip_fraction, advantage statistics, ...), totals, and the folders
    written ("adapter", and "merged" when cfg.merge). The card says kind "policy", so a later
    PPO, RLOO or GRPO run continues this adapter with the same reference.

    With `accelerator`, one of N data-parallel ranks (distributed_rl.py): each rolls out every
    N-th prompt of an iteration; rank 0 saves, the others return {}. `rollout_seeds`: sample
    each prompt with its own seed, so the samples do not depend on the number of processes.
    """

    def load_policy(device: torch.device) -> tuple[LoraPolicy, Any]:
        peft_model, tokenizer = load_lora_policy(cfg, device)
        return LoraPolicy(peft_model), tokenizer

    run = start_policy_run(
        cfg,
        prompts,
        reward_model_or_fn,
        accelerator,
        load_policy,
        prompts_per_step=cfg.prompts_per_step,
        minibatch_size=cfg.minibatch_size,
    )

    def step(mine: Sequence[Prompt], seeds: Sequence[int] | None, sampler: RolloutSampler | None) -> dict[str, float]:
        return rloo_step(run.policy, run.tokenizer, run.optimizer, run.reward_fn, mine, cfg, run.shard, seeds, sampler)

    done = run_iterations(
        run,
        cfg,
        prompts,
        cfg.prompts_per_step,
        step,
        "rloo",
        on_step=on_step,
        on_progress=on_progress,
        rollout_seeds=rollout_seeds,
    )
    return finish_policy_run(run, cfg, done, out_dir, card_fields={"optimizer": cfg.estimator})
