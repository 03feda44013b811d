"""The comparison layout for bench/ppo_memory.py: policy, reference, value (critic) and reward
as four separate models (OpenRLHF style). It runs the same PPO maths (worker.ml.ppo_math) and
the same rollout code as worker.ml.ppo, so only the model layout differs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel

from worker.ml import ppo_math as pm
from worker.ml.batching import position_ids
from worker.ml.lora import resolve_lora_targets
from worker.ml.models import (
    autocast,
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    match_embeddings,
    pick_dtype,
)
from worker.ml.ppo_policy import lora_config
from worker.ml.ppo_rollout import sample_rollout, score_rollout
from worker.ml.values import ValueHead


@dataclass
class FourModels:
    policy: nn.Module
    reference: nn.Module
    critic: nn.Module  # a full trunk (AutoModel) of its own
    value_head: ValueHead
    tokenizer: object
    policy_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer

    @classmethod
    def load(cls, cfg, device: torch.device, lora: bool) -> FourModels:
        tokenizer = load_tokenizer(cfg.model)
        policy, reference = (load_causal_lm(cfg.model, device=device) for _ in range(2))
        critic = AutoModel.from_pretrained(cfg.model, dtype=pick_dtype(device)).to(device)
        for model in (policy, reference):
            match_embeddings(model, tokenizer)
        reference.requires_grad_(False)
        if lora:
            policy = get_peft_model(policy, lora_config(cfg, policy))
            critic = get_peft_model(
                critic,
                LoraConfig(
                    r=cfg.lora_r,
                    lora_alpha=cfg.lora_alpha,
                    lora_dropout=0.0,
                    target_modules=list(resolve_lora_targets(critic, cfg.lora_targets, mlp=True)),
                ),
            )
        for model in (policy, reference, critic):
            disable_dropout(model)
            model.eval()
        value_head = ValueHead(critic.config.hidden_size).to(device)

        def trainable(module):
            return [p for p in module.parameters() if p.requires_grad]

        return cls(
            policy,
            reference,
            critic,
            value_head,
            tokenizer,
            torch.optim.AdamW(trainable(policy), lr=cfg.learning_rate, eps=1e-5),
            torch.optim.AdamW(trainable(critic) + list(value_head.parameters()), lr=cfg.learning_rate, eps=1e-5),
        )

    def trainable_count(self) -> int:
        return sum(
            p.numel() for m in (self.policy, self.critic, self.value_head) for p in m.parameters() if p.requires_grad
        )


def _causal(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def response_logits(model, ids, mask, n_context: int, temperature: float) -> torch.Tensor:
    """[B, T, V] fp32 logits of the response positions, as values.PolicyValue computes them."""
    causal = _causal(model)
    hidden = causal.base_model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).last_hidden_state
    head = causal.get_output_embeddings()
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return F.linear(hidden[:, n_context - 1 : -1].float(), head.weight.float()) / temperature


def critic_values(models: FourModels, ids, mask, n_context: int) -> torch.Tensor:
    trunk = _causal(models.critic)
    hidden = trunk(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).last_hidden_state
    return models.value_head(hidden[:, n_context - 1 : -1])  # [B, T]


def four_models_step(models: FourModels, kl_ctl, reward_fn, prompts, cfg) -> dict[str, float]:
    device = next(models.policy.parameters()).device
    started = time.perf_counter()
    # 1. Roll out with the policy model.
    with autocast(device, cfg.autocast):
        rollout = sample_rollout(
            models.policy,
            models.tokenizer,
            prompts,
            max_prompt_tokens=cfg.max_prompt_tokens,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
        )
    rollout_seconds = time.perf_counter() - started
    ids_all, mask_all = rollout.input_ids, rollout.attention_mask  # [B, Lq + T]
    labels_all, mask = rollout.response_ids, rollout.response_mask  # [B, T]
    n_context, batch = rollout.query_ids.shape[1], labels_all.shape[0]
    # 2. Score with the separate reward model.
    _, scores = score_rollout(reward_fn, rollout, cfg.missing_eos_penalty)
    scores = scores.to(device)
    # 3. Old logprobs (policy model), reference logprobs (reference model), values (critic).
    old, ref, vals = [], [], []
    with torch.no_grad(), autocast(device, cfg.autocast):
        for rows in torch.arange(batch).split(cfg.minibatch_size):
            ids, am, labels = ids_all[rows], mask_all[rows], labels_all[rows]
            old.append(
                pm.logprobs_of_labels(response_logits(models.policy, ids, am, n_context, cfg.temperature), labels)
            )
            ref.append(
                pm.logprobs_of_labels(response_logits(models.reference, ids, am, n_context, cfg.temperature), labels)
            )
            vals.append(critic_values(models, ids, am, n_context))
    old_logprobs, ref_logprobs = torch.cat(old), torch.cat(ref)
    old_values = torch.cat(vals) * mask
    # 4-5. Rewards, GAE, whitening: identical to worker.ml.ppo.
    kl = pm.kl_estimate(old_logprobs, ref_logprobs, cfg.kl_estimator) * mask
    rewards = pm.per_token_rewards(scores, kl, mask, kl_ctl.value)
    advantages, returns = pm.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
    advantages = pm.masked_whiten(advantages, mask)
    # 6. PPO epochs: the policy and the critic each take their own step.
    for _epoch in range(cfg.ppo_epochs):
        for rows in torch.randperm(batch).split(cfg.minibatch_size):
            ids, am, labels, mb_mask = ids_all[rows], mask_all[rows], labels_all[rows], mask[rows]
            with autocast(device, cfg.autocast):
                logprobs = pm.logprobs_of_labels(
                    response_logits(models.policy, ids, am, n_context, cfg.temperature), labels
                )
                pg_loss, _ = pm.clipped_policy_loss(
                    logprobs, old_logprobs[rows], advantages[rows], mb_mask, cfg.clip_range
                )
            pg_loss.backward()
            with autocast(device, cfg.autocast):
                vf_loss, _ = pm.clipped_value_loss(
                    critic_values(models, ids, am, n_context),
                    old_values[rows],
                    returns[rows],
                    mb_mask,
                    cfg.clip_range_value,
                )
            (cfg.vf_coef * vf_loss).backward()
            for optimizer in (models.policy_optimizer, models.critic_optimizer):
                params = [p for group in optimizer.param_groups for p in group["params"]]
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    return {"response_length": float(mask.sum(1).mean()), "rollout_seconds": rollout_seconds}
