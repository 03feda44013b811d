"""Shared pieces of the PPO tests: a toy reward, a small config, one PPO step on tiny models."""

from __future__ import annotations

import torch

from worker.ml.ppo import PPOConfig, ppo_step
from worker.ml.ppo_math import FixedKLController
from worker.ml.ppo_policy import build_policy

CPU = torch.device("cpu")
PROMPTS = ["say cat", "tell a story", "hello world", "write a poem about the sun"]
TARGET_WORDS = {"cat", "dog", "bird", "fish", "red", "blue", "green", "one", "two", "three"}


def toy_reward(prompts, responses) -> torch.Tensor:
    """Fraction of response words from TARGET_WORDS (10 of the 73 words of the tiny vocab)."""
    return torch.tensor([sum(w in TARGET_WORDS for w in r.split()) / max(len(r.split()), 1) for r in responses])


def small_cfg(model_dir, **overrides) -> PPOConfig:
    values = {
        "model": str(model_dir),
        "steps": 1,
        "batch_size": 4,
        "minibatch_size": 2,
        "ppo_epochs": 1,
        "max_new_tokens": 6,
        "learning_rate": 1e-2,
        "device": "cpu",
    }
    return PPOConfig(**{**values, **overrides})


def one_step(cfg: PPOConfig, reward_fn=toy_reward):
    torch.manual_seed(cfg.seed)
    policy, tokenizer = build_policy(cfg, CPU)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.learning_rate)
    stats = ppo_step(policy, tokenizer, optimizer, FixedKLController(cfg.kl_coef), reward_fn, PROMPTS, cfg)
    return policy, tokenizer, stats


def lora_weights(model, adapter: str = "default") -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n and f".{adapter}." in n}
