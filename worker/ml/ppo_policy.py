"""Loading and saving around PPO and RLOO/GRPO: the LoRA policy on one backbone, the frozen
reward, and the saved policy artifact (a peft adapter folder + ranklab_card.json, optionally a
merged model).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from worker.ml.lora import resolve_lora_targets
from worker.ml.models import (
    base_of_adapter,
    disable_dropout,
    is_adapter_dir,
    load_causal_lm,
    load_tokenizer,
    match_embeddings,
    read_card,
    save_artifact,
)
from worker.ml.ppo_rollout import RewardFn
from worker.ml.values import VALUE_ADAPTER, LoraPolicy, PolicyValue, check_head_matches


def lora_config(cfg, model: nn.Module) -> LoraConfig:
    """The policy's (and the value adapter's) LoRA on `model`: `cfg.lora_targets`, each checked
    to exist, or by default the model's attention and MLP projections (lora.py)."""
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(resolve_lora_targets(model, cfg.lora_targets, mlp=True)),
        task_type="CAUSAL_LM",
    )


def is_policy_adapter(path: str | os.PathLike) -> bool:
    """An adapter folder that an earlier PPO or RLOO/GRPO run saved (its card says kind "policy")."""
    return is_adapter_dir(path) and read_card(path).get("kind") == "policy"


def load_lora_policy(cfg, device: torch.device) -> tuple[Any, Any]:
    """(peft model on `device`, left-padding tokenizer) from `cfg.model`, dropout off, eval mode.
    `cfg` needs `model` and the LoRA fields (PPOConfig, RLOOConfig).

    The reference (adapter disabled) is always the model the run starts from:
    - a model folder, or an adapter folder that is not a policy (an SFT adapter): that model,
      with any adapter merged into its base, gets a fresh LoRA (B = 0, so policy == reference
      at first); the saved policy adapter names `cfg.model` as its base;
    - a policy adapter from an earlier PPO or RLOO/GRPO run continues that adapter, and the
      model that run started from (its base, itself merged when it is an SFT adapter) stays
      the reference.
    """
    model_path = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    if not model_path:
        raise ValueError("model: name the starting policy (a model or adapter folder)")
    tokenizer = load_tokenizer(model_path)
    if is_policy_adapter(model_path):
        base = load_causal_lm(base_of_adapter(model_path), device=device)
        match_embeddings(base, tokenizer)
        peft_model = PeftModel.from_pretrained(base, model_path, is_trainable=True)
    else:
        base = load_causal_lm(model_path, device=device)  # an SFT adapter is merged here
        match_embeddings(base, tokenizer)
        peft_model = get_peft_model(base, lora_config(cfg, base))
        # so the saved adapter loads on top of the start (load_causal_lm merges that one first)
        peft_model.peft_config["default"].base_model_name_or_path = model_path
    disable_dropout(peft_model)  # rollouts and updates must see the same network (Huang et al.)
    peft_model.eval()
    probe = tokenizer(["a b c"], return_tensors="pt")
    check_head_matches(peft_model, probe["input_ids"].to(device), probe["attention_mask"].to(device))
    return peft_model, tokenizer


def build_policy(cfg, device: torch.device) -> tuple[PolicyValue, Any]:
    """(policy-with-value on `device`, left-padding tokenizer) from `cfg.model`: the LoRA policy
    of `load_lora_policy` (which says what the reference is) plus PPO's value function."""
    peft_model, tokenizer = load_lora_policy(cfg, device)
    policy = PolicyValue(peft_model, cfg.value_mode, lora_config(cfg, peft_model.get_base_model()))
    disable_dropout(policy)
    policy.eval()
    return policy, tokenizer


def resolve_reward(reward, device: torch.device, *, use_autocast: bool = True) -> RewardFn:
    """A reward artifact folder (loaded frozen via RewardScorer, normalised scores), an object
    with `.score(prompts, completions)`, or any `reward_fn(prompts, responses) -> [B]`.

    `use_autocast` is the run's own setting: a run with autocast off scores in fp32 as well. bf16
    scores depend on the batch's shape by ~1e-2, so with autocast on two processes scoring half a
    batch each do not reproduce one process's scores."""
    if isinstance(reward, (str, os.PathLike)):
        from worker.ml.scorer import RewardScorer

        if not (Path(reward) / "config.json").is_file() and not Path(reward, "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"reward: {reward} is not a reward model folder (train one with `python -m worker.ml train-reward`)"
            )
        reward = RewardScorer.load(reward, device=device, use_autocast=use_autocast)
        for param in reward.model.parameters():
            param.requires_grad_(False)
    if hasattr(reward, "score") and callable(reward.score):
        return reward.score
    if callable(reward):
        return reward
    raise TypeError(
        "reward: pass a reward artifact folder, a RewardScorer, or a callable "
        "reward_fn(prompts, responses) -> tensor of scores"
    )


def save_policy(
    policy: LoraPolicy, tokenizer, out_dir: str | os.PathLike, card: dict[str, Any], merge: bool
) -> dict[str, str]:
    """Save the policy adapter (loads with peft, or with models.load_causal_lm) and, when
    `merge`, a merged full model in `out_dir/merged`. Returns the folders written."""
    peft_model = policy.peft_model
    if VALUE_ADAPTER in peft_model.peft_config:
        # The value adapter is only meaningful with its head; the artifact is the policy.
        peft_model.delete_adapter(VALUE_ADAPTER)
    out_dir = save_artifact(peft_model, tokenizer, out_dir, card)
    written = {"adapter": str(out_dir)}
    if merge:
        merged = peft_model.merge_and_unload()  # in place: the adapter is gone afterwards
        written["merged"] = str(
            save_artifact(merged, tokenizer, Path(out_dir) / "merged", {**card, "merged_from": str(out_dir)})
        )
    return written
