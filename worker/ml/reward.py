"""Reward-model training from K-wise rankings.

The model is the causal-LM backbone with a one-output classification head
(AutoModelForSequenceClassification, num_labels=1) that reads the reward at the last real
token, i.e. the end-of-turn token (the tokenizer's pad is kept distinct from EOS for that).
Each ranking forwards its K completions once; the loss over its pairs is computed from the K
scores with masks (losses.py). Several labelers' rankings of one task share that forward.

A multi-aspect reward model (RewardConfig.aspects) has one output per aspect on the same
backbone (num_labels = aspects). Each (ranking, aspect) becomes one row of levels read by that
aspect's head, so the loss is the mean over every aspect ranking labelers gave (an aspect a
labeler did not rank adds no row), i.e. with every aspect ranked, the mean over aspects of each
aspect's K-wise (or Plackett-Luce) loss; validation reports each aspect's accuracy.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import get_scheduler
from transformers.utils import logging as hf_logging

from worker.ml.config import RewardConfig
from worker.ml.data import Ranking, group_rankings, split_by_prompt
from worker.ml.distributed_reward import data_parallel_step, main_process_model
from worker.ml.formatting import has_chat_template
from worker.ml.lora import resolve_lora_targets
from worker.ml.losses import LOSSES, informative, pair_accuracy_counts
from worker.ml.models import (
    Progress,
    autocast,
    disable_dropout,
    load_tokenizer,
    match_embeddings,
    pick_device,
    save_artifact,
)
from worker.ml.reward_sets import EncodedSet, SetScorer, batches_by_length, encode_sets, forward_sets
from worker.ml.scorer import (
    aspect_normalization,
    combined_stats,
    score_sequences,
    sequence_classifier,
    token_budget_chunks,
)
from worker.ml.special_tokens import stop_tokens

_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def build_reward_model(cfg: RewardConfig, tokenizer, device: torch.device):
    """Backbone + fresh score head, in fp32 weights (autocast supplies bf16 speed). Refuses a
    tokenizer whose pad is the end-of-turn token: the head would read the reward before it."""
    stop_tokens(tokenizer)
    torch.manual_seed(cfg.seed)
    # The score head is new by design; silence the loader's "missing weights" report for it.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        # an SFT adapter folder is merged into its base; one head output per aspect
        model = sequence_classifier(cfg.model, num_labels=max(1, len(cfg.aspects)))
    finally:
        hf_logging.set_verbosity(verbosity)
    if cfg.aspects:  # a full model's config.json then names its outputs
        model.config.id2label = dict(enumerate(cfg.aspects))
        model.config.label2id = {aspect: i for i, aspect in enumerate(cfg.aspects)}
    match_embeddings(model, tokenizer)
    disable_dropout(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.mode == "lora":
        from peft import LoraConfig, get_peft_model

        targets = resolve_lora_targets(model, cfg.lora_targets, mlp=False)
        lora = LoraConfig(
            task_type="SEQ_CLS",
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(targets),
            modules_to_save=["score"],
        )
        model = get_peft_model(model, lora)
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    return model.to(device)


def warmup_step_count(fraction: float, total_steps: int) -> int:
    """Steps of linear warmup: the fraction rounded up, as transformers' Trainer does (rounding
    down gave a short run none: 5% of 12 steps made the first Adam step, at full learning rate,
    move every weight of a fresh score head by the learning rate), but always leaving one step
    at a learning rate above zero."""
    if fraction <= 0 or total_steps <= 1:
        return 0
    return min(math.ceil(fraction * total_steps), total_steps - 1)


def train_reward(
    cfg: RewardConfig,
    rankings: Sequence[Ranking],
    out_dir: str | Path,
    on_progress: Progress | None = None,
    *,
    accelerator: Any = None,
) -> dict[str, Any]:
    """Train a reward model on `rankings`, save it to `out_dir`, return its metrics.

    With `accelerator` (an accelerate.Accelerator; worker/ml/distributed.py starts the processes)
    this is one of N data-parallel ranks: every rank builds the same global batches, takes its
    slice of each, and the all-reduced gradient is that of the whole batch, so N processes train
    as one would (docs/distributed.md). Rank 0 then evaluates and saves; the others return {}."""
    if not cfg.model:
        raise ValueError("model: name the backbone to train (hub id or local folder)")
    device = accelerator.device if accelerator is not None else pick_device(cfg.device)
    world = accelerator.num_processes if accelerator is not None else 1
    rng = random.Random(cfg.seed)
    tokenizer = load_tokenizer(cfg.model, padding_side="right")

    # 1. data: merge labelers' rankings of one task, split by prompt, tokenise once
    train_sets, val_sets = split_by_prompt(group_rankings(rankings), cfg.val_fraction, cfg.seed)
    train_enc = [
        s for s in encode_sets(tokenizer, train_sets, cfg.max_length, cfg.aspects) if bool(informative(s.levels).any())
    ]
    val_enc = encode_sets(tokenizer, val_sets, cfg.max_length, cfg.aspects)
    if not train_enc and cfg.aspects:
        raise ValueError(f"rankings: no training ranking of aspect {', '.join(cfg.aspects)} orders two completions")
    if not train_enc:
        raise ValueError("rankings: no training ranking orders two completions (all ties?)")

    # 2. model, optimizer, LR schedule (warmup, then decay)
    model = build_reward_model(cfg, tokenizer, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_enc) / cfg.batch_rankings)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = warmup_step_count(cfg.warmup_fraction, total_steps)
    scheduler = get_scheduler(
        _SCHEDULES[cfg.lr_schedule], optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps
    )
    loss_fn = LOSSES[cfg.loss]
    pad_id = tokenizer.pad_token_id
    scorer: Any = None
    if accelerator is not None:
        # the scheduler stays unprepared: accelerate would step it once per process per step
        scorer, optimizer = accelerator.prepare(SetScorer(model, pad_id, cfg.share_prompt_prefix), optimizer)

    # 3. training loop: per step, whole rankings are packed into forwards by token budget
    model.train()
    step, losses = 0, []
    started, started_cpu = time.perf_counter(), time.process_time()
    n_train_rankings = sum(s.n_rankings for s in train_enc)
    for _epoch in range(cfg.epochs):
        for batch in batches_by_length(train_enc, cfg.batch_rankings, rng):
            sets = [train_enc[i] for i in batch]
            n_informative = sum(int(informative(s.levels).sum()) for s in sets)  # of the global batch
            if accelerator is not None:  # this rank's slice; the gradient all-reduced
                step_loss = data_parallel_step(accelerator, scorer, sets, n_informative, cfg)
            else:
                step_loss = 0.0
                for chunk in token_budget_chunks(
                    [s.cost(cfg.share_prompt_prefix) for s in sets], cfg.max_tokens_per_forward
                ):
                    with autocast(device, cfg.autocast):
                        scores, levels = forward_sets(
                            model, [sets[i] for i in chunk], pad_id, device, cfg.share_prompt_prefix
                        )
                    _, per_ranking = loss_fn(scores, levels)  # (rows,)
                    # sum over this chunk / informative rankings in the step = the step's mean
                    loss = (per_ranking * informative(levels)).sum() / n_informative
                    loss.backward()
                    step_loss += loss.item()
            if cfg.max_grad_norm > 0 and accelerator is not None:
                accelerator.clip_grad_norm_(scorer.parameters(), cfg.max_grad_norm)
            elif cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            step += 1
            _report(on_progress, step, total_steps, "train")
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - started_cpu
    if accelerator is not None:
        # every rank joins the gather of sharded weights; rank 0 alone evaluates and saves
        model = main_process_model(accelerator, scorer, model, lambda: build_reward_model(cfg, tokenizer, device))
        if model is None:
            return {}

    # 4. validation metrics and the reward normalisation, then save
    model.eval()
    metrics: dict[str, Any] = {
        "train_loss_first": losses[0],
        "train_loss_last": sum(losses[-10:]) / len(losses[-10:]),
        "train_seconds": round(train_seconds, 3),
        "train_cpu_seconds": round(train_cpu_seconds, 3),
        "steps": step,
        "warmup_steps": warmup_steps,
        "train_rankings_per_second": round(n_train_rankings * cfg.epochs / train_seconds, 3),
    }
    if accelerator is not None:
        metrics["processes"] = world
    _report(on_progress, 0, 1, "validate")
    metrics.update(evaluate(model, val_enc, pad_id, device, cfg))
    _report(on_progress, 0, 1, "normalize")
    if cfg.aspects:
        raw = _sample_scores(model, train_enc, pad_id, device, cfg, rng, all_heads=True)  # (N, aspects)
        normalization = aspect_normalization(raw, len(cfg.aspects))
        mean, std = combined_stats(normalization, cfg.default_weights())
    else:
        mean, std = reward_stats(model, train_enc, pad_id, device, cfg, rng)
        normalization = {"mean": mean, "std": std}
    data: dict[str, Any] = {
        "rankings": len(rankings),
        "tasks": len(train_sets) + len(val_sets),
        "train_tasks": len(train_sets),
        "val_tasks": len(val_sets),
        "train_rankings": n_train_rankings,
        "val_rankings": sum(s.n_rankings for s in val_enc),
        "train_prompts": len({s.prompt_id for s in train_sets}),
        "val_prompts": len({s.prompt_id for s in val_sets}),
    }
    if cfg.aspects:
        every = [*train_sets, *val_sets]
        data["aspect_rankings"] = {a: sum(len(s.aspect_levels.get(a, [])) for s in every) for a in cfg.aspects}
    card = {
        "kind": "reward_model",
        "base_model": cfg.model,
        "config": cfg.to_dict(),
        "data": data,
        "metrics": metrics,
        "reward_normalization": normalization,
        "text_format": "chat_template" if has_chat_template(tokenizer) else "plain",
        "load": "worker.ml.scorer.RewardScorer.load(path); or AutoPeftModelForSequence"
        f"Classification.from_pretrained(path, num_labels={max(1, len(cfg.aspects))}) for LoRA artifacts "
        "whose base is a model folder (a base that is an adapter folder must be merged first, as "
        "RewardScorer.load does)",
    }
    if cfg.aspects:  # the heads' order, and the weights a scorer combines them with by default
        card["aspects"] = list(cfg.aspects)
        card["aspect_weights"] = cfg.default_weights()
    save_artifact(model, tokenizer, out_dir, card)
    _report(on_progress, 1, 1, "saved")
    return {**metrics, "reward_mean": mean, "reward_std": std, **data}


@torch.no_grad()
def evaluate(model, sets: Sequence[EncodedSet], pad_id: int, device: torch.device, cfg: RewardConfig) -> dict[str, Any]:
    """Validation pairwise accuracy, loss, and accuracy by K (completions ranked); for a
    multi-aspect model also by aspect (None for an aspect without validation pairs)."""
    if not sets:
        empty: dict[str, Any] = {"val_accuracy": None, "val_loss": None, "val_accuracy_by_k": {}, "val_pairs": 0}
        return {**empty, "val_accuracy_by_aspect": dict.fromkeys(cfg.aspects)} if cfg.aspects else empty
    losses: list[torch.Tensor] = []
    correct_chunks: list[torch.Tensor] = []
    pair_chunks: list[torch.Tensor] = []
    ranked_k_chunks: list[torch.Tensor] = []
    keep: list[torch.Tensor] = []
    chunks = token_budget_chunks([s.cost(cfg.share_prompt_prefix) for s in sets], cfg.max_tokens_per_forward)
    for chunk in chunks:
        with autocast(device, cfg.autocast):
            scores, levels = forward_sets(model, [sets[i] for i in chunk], pad_id, device, cfg.share_prompt_prefix)
        scores, levels = scores.float().cpu(), levels.cpu()
        losses.append(LOSSES[cfg.loss](scores, levels)[1])
        right, pairs = pair_accuracy_counts(scores, levels)
        correct_chunks.append(right)
        pair_chunks.append(pairs)
        ranked_k_chunks.append((levels >= 0).sum(dim=1))
        keep.append(informative(levels))
    correct, total, ranked_k = torch.cat(correct_chunks), torch.cat(pair_chunks), torch.cat(ranked_k_chunks)
    # rows in the order assemble() laid them out: chunk by chunk, set by set
    heads = torch.cat([sets[i].heads for chunk in chunks for i in chunk])
    loss = torch.cat(losses)[torch.cat(keep)].mean() if bool(torch.cat(keep).any()) else torch.tensor(0.0)
    by_k = {}
    for k in sorted(set(ranked_k.tolist())):
        pick = (ranked_k == k) & (total > 0)
        if bool(pick.any()):
            by_k[str(k)] = round(float(correct[pick].sum() / total[pick].sum()), 4)
    result = {
        "val_accuracy": round(float(correct.sum() / total.sum().clamp(min=1)), 4),
        "val_loss": round(float(loss), 4),
        "val_accuracy_by_k": by_k,
        "val_pairs": int(total.sum()),
    }
    if cfg.aspects:
        pairs_of = [total[heads == h].sum() for h in range(len(cfg.aspects))]
        result["val_accuracy_by_aspect"] = {
            aspect: round(float(correct[heads == h].sum() / pairs), 4) if pairs > 0 else None
            for h, (aspect, pairs) in enumerate(zip(cfg.aspects, pairs_of, strict=True))
        }
    return result


def reward_stats(
    model, sets: Sequence[EncodedSet], pad_id: int, device: torch.device, cfg: RewardConfig, rng: random.Random
) -> tuple[float, float]:
    """Mean and std of raw rewards over (a sample of up to norm_samples) training completions."""
    raw = _sample_scores(model, sets, pad_id, device, cfg, rng)
    if raw is None:
        return 0.0, 1.0
    return float(raw.mean()), float(raw.std().clamp(min=1e-6))


def _sample_scores(
    model,
    sets: Sequence[EncodedSet],
    pad_id: int,
    device: torch.device,
    cfg: RewardConfig,
    rng: random.Random,
    *,
    all_heads: bool = False,
) -> torch.Tensor | None:
    """Raw scores of (a sample of up to norm_samples) training completions; None when fewer than two."""
    sequences = [seq for s in sets for seq in s.sequences]
    if cfg.norm_samples == 0 or len(sequences) < 2:
        return None
    if len(sequences) > cfg.norm_samples:
        sequences = rng.sample(sequences, cfg.norm_samples)
    return score_sequences(
        model,
        sequences,
        pad_id,
        device,
        max_tokens=cfg.max_tokens_per_forward,
        use_autocast=cfg.autocast,
        all_heads=all_heads,
    )


def _report(on_progress: Progress | None, done: int, total: int, stage: str) -> None:
    if on_progress is not None:
        on_progress(done, total, stage)
