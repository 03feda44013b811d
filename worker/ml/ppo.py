"""PPO for a LoRA policy against a frozen reward: `train_policy(cfg, prompts, reward, out_dir)`.

One backbone holds the policy (LoRA adapter), the reference (adapter disabled) and the value
head (see values.py for the value-function choice and its measured cost). The details follow
Huang et al., "The N Implementation Details of RLHF with PPO": per-token KL penalty with the
score on the last token, temperature-scaled logprobs recomputed by a forward pass, dropout
off, GAE with gamma=1 / lambda=0.95, whitened advantages, clipped policy and value losses,
several epochs over shuffled minibatches, rollouts batched with left padding.
Pure tensor maths lives in ppo_math.py, sampling and scoring in ppo_rollout.py, sampling with
vLLM instead (`rollout_backend`) in rollout_engines.py, the run's set-up, iteration loop and
saving (shared with RLOO/GRPO) in policy_loop.py.
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
from worker.ml.models import Progress, autocast, read_card
from worker.ml.policy_loop import finish_policy_run, run_iterations, start_policy_run
from worker.ml.ppo_config import PPOConfig
from worker.ml.ppo_policy import build_policy, is_policy_adapter
from worker.ml.ppo_rollout import RewardFn, RolloutSampler, roll_out_and_score, rollout_stats
from worker.ml.values import PolicyValue

__all__ = ["PPOConfig", "kl_controller", "ppo_step", "starting_kl_coef", "train_policy"]


def ppo_step(
    policy: PolicyValue,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    kl_ctl,
    reward_fn: RewardFn,
    prompts: Sequence[Prompt],
    cfg: PPOConfig,
    shard: Shard | None = None,
    seeds: Sequence[int] | None = None,
    sampler: RolloutSampler | None = None,
) -> dict[str, float]:
    """One PPO iteration on `prompts`: roll out, score, compute advantages, update. Returns stats.
    With a data-parallel `shard`, `prompts` are this rank's share of the iteration's and the
    whitening, KL and statistics are over every rank's (distributed_rl.py); `seeds`: one
    sampling seed per prompt; `sampler`: what samples (None: HF generate; rollout_engines.py)."""
    shard = shard or Shard()
    device = policy.causal_lm.device
    use_amp = cfg.autocast
    started = time.perf_counter()

    # 1. Roll out with the current policy: one response per prompt, many per generate call;
    # 2. score the decoded responses with the frozen reward; penalise responses without EOS.
    policy.eval()  # dropout is also zeroed for good in build_policy
    rollout, raw_scores, scores = roll_out_and_score(
        policy.peft_model, tokenizer, prompts, reward_fn, cfg, device, group_seeds=seeds, sampler=sampler
    )
    rollout_seconds = time.perf_counter() - started
    input_ids, attention_mask = rollout.input_ids, rollout.attention_mask  # [B, Lq + T]
    response_ids, mask = rollout.response_ids, rollout.response_mask  # [B, T]
    n_context, batch = rollout.query_ids.shape[1], response_ids.shape[0]

    # 3. Logprobs of the sampled tokens under the rollout policy and under the reference
    #    (adapter disabled), plus values. Recomputed by a forward pass, not taken from
    #    generate(), so old and new logprobs come from the same computation.
    old_logprob_chunks: list[torch.Tensor] = []
    ref_logprob_chunks: list[torch.Tensor] = []
    old_value_chunks: list[torch.Tensor] = []
    entropy_chunks: list[torch.Tensor] = []
    with torch.no_grad(), autocast(device, use_amp):
        for rows in torch.arange(batch).split(cfg.minibatch_size):
            ids, am, labels = input_ids[rows], attention_mask[rows], response_ids[rows]
            logits, values = policy(ids, am, n_context, cfg.temperature)  # [b, T, V], [b, T]
            if values is None:
                values = policy.values(ids, am, n_context)
            old_logprob_chunks.append(pm.logprobs_of_labels(logits, labels))  # [b, T]
            entropy_chunks.append(pm.entropy_from_logits(logits))  # [b, T]
            ref_logits = policy.reference_logits(ids, am, n_context, cfg.temperature)
            ref_logprob_chunks.append(pm.logprobs_of_labels(ref_logits, labels))  # [b, T]
            old_value_chunks.append(values.float())
    old_logprobs, ref_logprobs = torch.cat(old_logprob_chunks), torch.cat(ref_logprob_chunks)  # [B, T]
    old_values, entropy = torch.cat(old_value_chunks) * mask, torch.cat(entropy_chunks)  # [B, T]

    # 4. Per-token reward: -beta * KL at every token, plus the score at the last real token.
    kl = pm.kl_estimate(old_logprobs, ref_logprobs, cfg.kl_estimator) * mask  # [B, T]
    rewards = pm.per_token_rewards(scores, kl, mask, kl_ctl.value)  # [B, T]
    if cfg.whiten_rewards:
        rewards = shard.whiten(rewards, mask, shift_mean=False)

    # 5. Advantages by GAE over response tokens, whitened over the batch; returns for the value.
    advantages, returns = pm.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)  # [B, T] each
    advantages = shard.whiten(advantages, mask)

    # 6. Several epochs of clipped PPO updates over shuffled minibatches; each loss a mean over
    #    the global minibatch's tokens (`share`), the gradients averaged over ranks.
    trainable = policy.trainable_parameters()
    update_stats: dict[str, list[float]] = defaultdict(list)
    for _epoch in range(cfg.ppo_epochs):
        for rows in torch.randperm(batch).split(cfg.minibatch_size // shard.world):
            ids, am, labels, mb_mask = input_ids[rows], attention_mask[rows], response_ids[rows], mask[rows]
            share = shard.token_factor(mb_mask)
            with autocast(device, use_amp):
                logits, values = policy(ids, am, n_context, cfg.temperature)  # [b, T, V], [b, T]
                new_logprobs = pm.logprobs_of_labels(logits, labels)  # [b, T]
                pg_loss, pg_stats = pm.clipped_policy_loss(
                    new_logprobs, old_logprobs[rows], advantages[rows], mb_mask, cfg.clip_range
                )
                if values is None:  # value_mode "adapter": free the policy graph, then the value's
                    (pg_loss * share).backward()
                    values = policy.values(ids, am, n_context)  # [b, T]
                vf_loss, vf_stats = pm.clipped_value_loss(
                    values, old_values[rows], returns[rows], mb_mask, cfg.clip_range_value
                )
            if policy.value_mode == "shared":  # one backward through the shared trunk
                ((pg_loss + cfg.vf_coef * vf_loss) * share).backward()
            else:
                (cfg.vf_coef * vf_loss * share).backward()
            shard.all_reduce_grads(trainable)
            if cfg.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for name, value in {"policy_loss": pg_loss, "value_loss": vf_loss, **pg_stats, **vf_stats}.items():
                update_stats[name].append(value.item() * share)

    # 7. Adapt beta to the measured KL, and summarise the iteration.
    seq_kl = (pm.kl_estimate(old_logprobs, ref_logprobs, "k1") * mask).sum(1)  # [B]
    kl_coef_used = kl_ctl.value
    kl_ctl.update(shard.mean(float(seq_kl.mean())), batch * shard.world)
    stats = {name: sum(vals) / len(vals) for name, vals in update_stats.items()}
    stats.update(rollout_stats(rollout, raw_scores, scores, seq_kl, entropy))
    stats.update(
        {
            "non_score_reward": float(-(kl_coef_used * kl).sum(1).mean()),
            "kl_coef": kl_coef_used,
            "rollout_seconds": rollout_seconds,
            "seconds": time.perf_counter() - started,
        }
    )
    return shard.reduce_stats(stats)


def kl_controller(cfg: PPOConfig, start: float | None = None) -> pm.FixedKLController | pm.AdaptiveKLController:
    """beta's controller: fixed, or Ziegler et al.'s adaptive one when a KL target is set. Its
    horizon is counted in samples, as theirs; ours is set in iterations of `batch_size`
    rollouts, so it means the same at every batch size a round may use. The adaptive one starts
    from `start` when given (`starting_kl_coef`), else from cfg.kl_coef."""
    if cfg.adaptive_kl_target <= 0:
        return pm.FixedKLController(cfg.kl_coef)
    horizon = cfg.adaptive_kl_horizon_steps * cfg.batch_size
    return pm.AdaptiveKLController(cfg.kl_coef if start is None else start, cfg.adaptive_kl_target, horizon)


def starting_kl_coef(cfg: PPOConfig) -> float:
    """beta at the start of this run. With adaptive KL, a run continuing a policy adapter whose
    run adapted beta too starts from the beta that run ended with (its card's `kl_coef_next`):
    the controller carries on along one policy line instead of restarting at kl_coef each round.
    Otherwise cfg.kl_coef."""
    if cfg.adaptive_kl_target > 0 and is_policy_adapter(cfg.model):
        carried = read_card(cfg.model).get("kl_coef_next")
        if isinstance(carried, (int, float)) and carried > 0:
            return float(carried)
    return cfg.kl_coef


def train_policy(
    cfg: PPOConfig,
    prompts: Sequence[Prompt],
    reward_model_or_fn,
    out_dir: str | os.PathLike,
    on_progress: Progress | None = None,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    accelerator: Any = None,
    rollout_seeds: bool = False,
) -> dict[str, Any]:
    """Run `cfg.steps` PPO iterations and save the policy adapter (+ card) in `out_dir`.

    `reward_model_or_fn`: a reward artifact folder, a RewardScorer, or any callable
    `reward_fn(prompts, responses) -> tensor [B]`. `on_progress(done, total, "ppo")` after each
    iteration; `on_step(step, stats)` too, for live charts. Returns per-iteration lists (score,
    kl, entropy, clip_fraction, approx_kl, value_loss, response_length, ...), totals, and the
    folders written ("adapter", and "merged" when cfg.merge).
    With `accelerator` and `rollout_seeds`, as rloo.train_rloo's (distributed_rl.py).
    """
    run = start_policy_run(
        cfg,
        prompts,
        reward_model_or_fn,
        accelerator,
        lambda device: build_policy(cfg, device),
        batch_size=cfg.batch_size,
        minibatch_size=cfg.minibatch_size,
    )
    kl_ctl = kl_controller(cfg, start=starting_kl_coef(cfg))

    def step(mine: Sequence[Prompt], seeds: Sequence[int] | None, sampler: RolloutSampler | None) -> dict[str, float]:
        return ppo_step(
            run.policy, run.tokenizer, run.optimizer, kl_ctl, run.reward_fn, mine, cfg, run.shard, seeds, sampler
        )

    done = run_iterations(
        run,
        cfg,
        prompts,
        cfg.batch_size,
        step,
        "ppo",
        on_step=on_step,
        on_progress=on_progress,
        rollout_seeds=rollout_seeds,
    )
    # where the next round of this policy line starts beta
    carried = {"kl_coef_next": kl_ctl.value} if cfg.adaptive_kl_target > 0 else {}
    return finish_policy_run(run, cfg, done, out_dir, carried_fields=carried)
