"""KTO (Ethayarajh et al. 2024) from good/bad labels: one completion at a time, no pairs needed.

A labelled example is (prompt, completion, good or bad). With r = log pi(y|x) - log ref(y|x) and
the KL reference point z0 (below), each example's loss is (paper eq. 7; TRL's `kto` loss)

    good:  lambda_D * (1 - sigmoid(beta * (r - z0)))
    bad:   lambda_U * (1 - sigmoid(beta * (z0 - r)))

and a batch's loss is the mean over its examples. z0 estimates KL(pi || ref) on mismatched
pairs: within a batch, the completions of prompt j are scored after prompt j + 1 (cyclically),
so the same completions that carry the loss are paired with another prompt of the same batch,
as the paper advises and as TRL's (x_i, y_{i-1}) rotation does, by prompt instead of by row so
that no completion meets its own prompt. z0 = max(0, mean over those completions of
log pi - log ref), detached: it moves the point rewards are judged from, not the gradient.

Batches are fixed once (whole prompts, shuffled by the seed; only their order changes between
epochs), so the mismatched pairs never change and the reference's log-probs of both the matched
and the mismatched pairs are computed once, with the adapter disabled, and cached (TRL fixes
them the same way). Forwards reuse dpo.response_logps: each prompt once, each of its unique
completions once, in packed rows; a completion labelled by several labelers counts once per
label. The policy is dpo.build_policy's LoRA adapter, so a policy adapter from any earlier policy
step trains on with the same reference.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from transformers import get_scheduler

from worker.ml.data import Prompt, RankedSet, parse_prompt, prompt_key, read_jsonl, split_by_prompt
from worker.ml.dpo import (
    EncodedRanking,
    StepHook,
    build_policy,
    encode_rankings,
    response_logps,
    save_policy_adapter,
    starting_model_path,
)
from worker.ml.kto_config import KTOConfig
from worker.ml.models import Progress, autocast, load_tokenizer, pick_device, report
from worker.ml.reward import warmup_step_count
from worker.ml.sft import packing_exact


@dataclass
class Labelled:
    """One judgment of one completion: TRL's unpaired {"prompt", "completion", "label"} row."""

    prompt: Prompt
    completion: str
    label: bool
    """True: good (desirable); False: bad (undesirable)."""
    prompt_id: str = ""


def parse_labelled(record: Any, where: str) -> Labelled:
    """One JSONL record: prompt (text or messages), completion (text or [one assistant message]),
    label (true/false), optional prompt_id. Errors name `where` and the field."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with prompt, completion and label")
    for key in ("prompt", "completion", "label"):
        if key not in record:
            raise ValueError(f"{where}: missing field {key!r}")
    prompt = parse_prompt(record["prompt"], where)
    completion = record["completion"]
    if isinstance(completion, list) and len(completion) == 1 and isinstance(completion[0], dict):
        if completion[0].get("role") == "assistant":
            completion = completion[0].get("content")
    if not isinstance(completion, str):
        raise ValueError(f"{where}: completion must be a string or [one assistant message]")
    if not isinstance(record["label"], bool):
        raise ValueError(f"{where}: label must be true (good) or false (bad), got {record['label']!r}")
    prompt_id = record.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, (str, int)):
        raise ValueError(f"{where}: prompt_id must be a string or integer")
    return Labelled(prompt, completion, record["label"], str(prompt_id) if prompt_id is not None else "")


def read_labelled(path: str | Path) -> list[Labelled]:
    return read_jsonl(path, parse_labelled)


@dataclass
class LabelledSet:
    """One prompt, its unique completions, and every label given to them."""

    prompt: Prompt
    prompt_id: str
    completions: list[str]
    labels: list[tuple[int, bool]]
    """(completion index, good) per example."""


def group_labelled(examples: Sequence[Labelled]) -> list[LabelledSet]:
    """Examples of one prompt text share its forward, and a completion judged twice is scored once."""
    sets: dict[str, LabelledSet] = {}
    for example in examples:
        key = json.dumps(example.prompt, sort_keys=True, ensure_ascii=False)
        s = sets.get(key)
        if s is None:
            s = sets[key] = LabelledSet(example.prompt, example.prompt_id or prompt_key(example.prompt), [], [])
        if example.completion not in s.completions:
            s.completions.append(example.completion)
        s.labels.append((s.completions.index(example.completion), example.label))
    return list(sets.values())


@dataclass
class Batch:
    """Whole prompts trained in one step, with the reference's log-probs filled in once."""

    groups: list[EncodedRanking]
    """Each prompt with its unique completions (K_b completions in all, flat order)."""
    kl_groups: list[EncodedRanking]
    """Prompt j with the completions of prompt j - 1 (cyclic): the same K_b completions, mismatched."""
    index: torch.Tensor
    """(E,) long: each example's completion in the flat order."""
    label: torch.Tensor
    """(E,) bool: good."""
    reference: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    """(K_b,) log ref of each completion after its own prompt (cache_reference fills it)."""
    kl_reference: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    """(K_b,) log ref of kl_groups' completions, in their order (only their mean is used)."""


def make_batches(tokenizer, sets: Sequence[LabelledSet], cfg: KTOConfig, rng: random.Random | None) -> list[Batch]:
    """Chunks of cfg.batch_prompts prompts (shuffled when `rng` is given); a lone last prompt joins
    the chunk before it, since z0 needs another prompt to pair with."""
    encoded = encode_rankings(
        tokenizer,
        [RankedSet(s.prompt, s.completions, s.prompt_id, [[0] * len(s.completions)]) for s in sets],
        cfg.max_length,
    )
    order = list(range(len(sets)))
    if rng is not None:
        rng.shuffle(order)
    chunks = [order[i : i + cfg.batch_prompts] for i in range(0, len(order), cfg.batch_prompts)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        lone = chunks.pop()
        chunks[-1] += lone
    batches = []
    for chunk in chunks:
        groups = [encoded[i] for i in chunk]
        kl_groups = []
        for j, group in enumerate(groups):
            responses = groups[j - 1].responses  # j = 0 takes the last prompt's completions
            keep = max(1, cfg.max_length - max(len(r) for r in responses))
            kl_groups.append(
                EncodedRanking(group.prompt[-keep:], responses, torch.zeros(0, len(responses), dtype=torch.long))
            )
        offsets = [0]
        for group in groups[:-1]:
            offsets.append(offsets[-1] + len(group.responses))
        index = [offsets[j] + k for j, i in enumerate(chunk) for k, _ in sets[i].labels]
        label = [good for i in chunk for _, good in sets[i].labels]
        batches.append(Batch(groups, kl_groups, torch.tensor(index), torch.tensor(label, dtype=torch.bool)))
    return batches


@torch.no_grad()
def cache_reference(model, batches: Sequence[Batch], pad_id: int, device, cfg: KTOConfig) -> None:
    """Fill each batch's reference log-probs, matched and mismatched. Packed exactly as the policy's
    forwards pack them, so before the first step log pi - log ref is exactly 0, not rounding noise
    (a fresh adapter adds exactly 0)."""
    with model.disable_adapter():
        for batch in batches:
            with autocast(device, cfg.autocast):
                batch.reference = response_logps(model, batch.groups, pad_id, device).float().cpu()
                batch.kl_reference = response_logps(model, batch.kl_groups, pad_id, device).float().cpu()


def kl_reference_point(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor) -> torch.Tensor:
    """z0 = max(0, mean log pi - log ref over mismatched pairs), detached (a scalar tensor)."""
    return (policy_kl_logps.detach().float() - reference_kl_logps.float()).mean().clamp(min=0)


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    good: torch.Tensor,
    z0: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, per-example losses (E,)) for (E,) log-probs and (E,) bool labels (see above)."""
    log_ratio = policy_logps.float() - reference_logps.float()
    z0 = z0.detach()
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - log_ratio)))
    per_example = torch.where(good, desirable, undesirable)
    return per_example.mean(), per_example


def auc(rewards: torch.Tensor, good: torch.Tensor) -> float | None:
    """P(a good completion's reward > a bad one's), ties half (Mann-Whitney); None without both."""
    positive, negative = rewards[good].float(), rewards[~good].float().sort().values
    if not len(positive) or not len(negative):
        return None
    below = torch.searchsorted(negative, positive, side="left").float()
    tied = torch.searchsorted(negative, positive, side="right").float() - below
    return float((below + tied / 2).sum() / (len(positive) * len(negative)))


def label_stats(log_ratio: torch.Tensor, good: torch.Tensor, beta: float) -> dict[str, float]:
    """Sign accuracy (r > 0 for good, r < 0 for bad, 0 counts half), mean reward and drift per label."""
    right = torch.where(good, log_ratio > 0, log_ratio < 0).float() + (log_ratio == 0).float() / 2
    stats = {"accuracy": float(right.mean())}
    for side, name, mask in (("desirable", "chosen", good), ("undesirable", "rejected", ~good)):
        if mask.any():
            stats[f"reward_{side}"] = beta * float(log_ratio[mask].mean())
            stats[f"{name}_drift"] = float(log_ratio[mask].mean())
    return stats


@torch.no_grad()
def evaluate(model, batches: Sequence[Batch], pad_id: int, device, cfg: KTOConfig) -> dict[str, Any]:
    """On held-out prompts: the loss with z0 over all their mismatched pairs, AUC and sign accuracy
    of the implicit reward vs the labels, mean rewards and drifts per label, z0, and KL(policy ||
    reference) per completion token over the full vocabulary (teacher-forced)."""
    if not batches:
        return {"val_loss": None, "val_auc": None, "val_accuracy": None, "val_examples": 0}
    was_training = model.training
    model.eval()
    ratios, kl_ratios, labels, kl_sum, kl_tokens = [], [], [], 0.0, 0
    for batch in batches:
        with autocast(device, cfg.autocast):
            flat, log_p = response_logps(model, batch.groups, pad_id, device, full=True)
            kl_flat = response_logps(model, batch.kl_groups, pad_id, device)
            with model.disable_adapter():
                _, log_q = response_logps(model, batch.groups, pad_id, device, full=True)
        ratios.append((flat.float().cpu() - batch.reference)[batch.index])
        kl_ratios.append(kl_flat.float().cpu() - batch.kl_reference)
        labels.append(batch.label)
        kl_sum += float((log_p.exp() * (log_p - log_q)).sum())
        kl_tokens += int(log_p.shape[0])
    model.train(was_training)
    log_ratio, good = torch.cat(ratios), torch.cat(labels)
    z0 = kl_reference_point(torch.cat(kl_ratios), torch.zeros(1))
    loss, _ = kto_loss(log_ratio, torch.zeros_like(log_ratio), good, z0, **_loss_args(cfg))
    area = auc(log_ratio, good)
    return {
        "val_loss": round(float(loss), 5),
        "val_auc": None if area is None else round(area, 4),
        **{f"val_{k}": round(v, 5) for k, v in label_stats(log_ratio, good, cfg.beta).items()},
        "val_kl": round(float(z0), 6),
        "val_kl_per_token": round(kl_sum / max(kl_tokens, 1), 6),
        "val_examples": len(good),
    }


def _loss_args(cfg: KTOConfig) -> dict[str, float]:
    return {"beta": cfg.beta, "desirable_weight": cfg.desirable_weight, "undesirable_weight": cfg.undesirable_weight}


def train_kto(
    cfg: KTOConfig,
    examples: Sequence[Labelled],
    out_dir: str | Path,
    on_progress: Progress | None = None,
    on_step: StepHook | None = None,
    *,
    held_out: Sequence[Labelled] | None = None,
) -> dict[str, Any]:
    """Train a LoRA policy on good/bad `examples` by KTO, save the adapter to `out_dir`, return metrics.

    `held_out`: examples to measure on (a round passes its validation prompts'); when given, every
    example trains and cfg.val_fraction is not used. Otherwise a cfg.val_fraction share of the
    prompts is held out. `on_progress(done, total, stage)` as the other stages; `on_step(step,
    stats)` per optimizer step (loss, kl = z0, mean reward and drift of good and bad completions,
    sign accuracy, learning rate), and with the held-out metrics (evaluate()) before training
    (step 0) and after each epoch."""
    model_path = starting_model_path(cfg.model)
    device = pick_device(cfg.device)
    rng = random.Random(cfg.seed)
    report(on_progress, 0, 1, "loading")

    # 1. data: examples grouped by prompt, split by prompt, tokenised once, cut into fixed batches
    tokenizer = load_tokenizer(model_path, padding_side="right")
    pad_id = tokenizer.pad_token_id
    sets = group_labelled(examples)
    if held_out is None:
        proxies = [RankedSet(s.prompt, [], s.prompt_id) for s in sets]
        val_ids = {p.prompt_id for p in split_by_prompt(proxies, cfg.val_fraction, cfg.seed)[1]}
        train_sets, val_sets = (
            [s for s in sets if s.prompt_id not in val_ids],
            [s for s in sets if s.prompt_id in val_ids],
        )
    else:
        train_sets, val_sets = sets, group_labelled(held_out)
    if len(train_sets) < 2:
        raise ValueError("examples: KTO needs at least two training prompts (z0 pairs completions with other prompts)")
    train = make_batches(tokenizer, train_sets, cfg, rng)
    held = make_batches(tokenizer, val_sets, cfg, None) if len(val_sets) >= 2 else []

    # 2. the policy, and the reference's log-probs computed once (the reference never changes)
    model = build_policy(cast(Any, cfg), model_path, tokenizer, device)  # it reads the LoRA fields DPOConfig has too
    groups = [g for b in [*train, *held] for g in [*b.groups, *b.kl_groups]]
    if not packing_exact(model, max(len(g.prompt) + max(len(r) for r in g.responses) for g in groups)):
        raise ValueError(
            "model: its attention takes no block mask (flash attention) or has a sliding window shorter "
            "than an example's sequence; load it with sdpa or eager attention"
        )
    report(on_progress, 0, 1, "reference")
    cache_reference(model, [*train, *held], pad_id, device, cfg)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total_steps = len(train) * cfg.epochs
    warmup_steps = warmup_step_count(cfg.warmup_fraction, total_steps)
    scheduler = get_scheduler("linear", optimizer, warmup_steps, total_steps)
    before = evaluate(model, held, pad_id, device, cfg)
    if held and on_step is not None:  # the held-out charts start where the reference stands
        on_step(0, {k: v for k, v in before.items() if isinstance(v, float)} | {"epoch": 0})

    # 3. train: per step, one fixed batch of whole prompts
    model.train()
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    step, started = 0, time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        for b in rng.sample(range(len(train)), len(train)):
            batch = train[b]
            # 3a. log pi of each unique completion after its own prompt: (K_b,), with gradient
            with autocast(device, cfg.autocast):
                flat = response_logps(model, batch.groups, pad_id, device).float()
                # 3b. the same completions after the next prompt: z0, no gradient (it is detached anyway)
                with torch.no_grad():
                    kl_flat = response_logps(model, batch.kl_groups, pad_id, device).float()
            z0 = kl_reference_point(kl_flat, batch.kl_reference.to(device))
            # 3c. per example (a completion judged twice counts twice): (E,)
            index = batch.index.to(device)
            policy, reference = flat[index], batch.reference.to(device)[index]
            good = batch.label.to(device)
            loss, _ = kto_loss(policy, reference, good, z0, **_loss_args(cfg))
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(float(loss.detach()))
            if on_step is not None:
                stats = label_stats((policy.detach() - reference).cpu(), good.cpu(), cfg.beta)
                on_step(step, {"loss": losses[-1], "kl": float(z0), **stats,
                               "learning_rate": scheduler.get_last_lr()[0], "epoch": epoch})  # fmt: skip
            report(on_progress, step, total_steps, "train")
        if held and on_step is not None:
            report(on_progress, epoch, cfg.epochs, "evaluate")
            history.append(evaluate(model, held, pad_id, device, cfg))
            on_step(step, {k: v for k, v in history[-1].items() if isinstance(v, float)} | {"epoch": epoch})
    seconds = time.perf_counter() - started

    # 4. held-out metrics and the artifact (a peft adapter on the starting model)
    after = history[-1] if history else evaluate(model, held, pad_id, device, cfg)
    model.eval()
    n_train = sum(len(b.label) for b in train)
    metrics: dict[str, Any] = {
        "train_loss_first": losses[0],
        "train_loss_last": sum(losses[-5:]) / len(losses[-5:]),
        "steps": step,
        "warmup_steps": warmup_steps,
        "train_seconds": round(seconds, 3),
        "train_examples_per_second": round(n_train * cfg.epochs / seconds, 3),
        **after,
        "val_auc_before": before["val_auc"],
        "val_accuracy_before": before["val_accuracy"],
        "val_loss_before": before["val_loss"],
    }
    data = {
        "examples": len(examples),
        "train_prompts": len(train_sets),
        "val_prompts": len(val_sets),
        "train_examples": n_train,
        "train_desirable": sum(int(b.label.sum()) for b in train),
        "val_examples": sum(len(b.label) for b in held),
    }
    save_policy_adapter(model, tokenizer, out_dir, "kto", model_path, cfg, data, metrics, on_progress)
    return {**metrics, **data}


__all__ = ["KTOConfig", "Labelled", "kto_loss", "read_labelled", "train_kto"]
