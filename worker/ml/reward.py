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
from worker.ml.data import RankedSet, Ranking, group_rankings, split_by_prompt
from worker.ml.distributed_reward import data_parallel_step, main_process_model
from worker.ml.formatting import encode_reward_texts, has_chat_template
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
from worker.ml.scorer import (
    aspect_normalization,
    combined_stats,
    head_count,
    score_sequences,
    sequence_classifier,
    sequence_scores,
    token_budget_chunks,
)
from worker.ml.shared_prefix import (
    common_prefix_len,
    packed_scores,
    prefix_shared_scores,
    supports_packing,
    supports_prefix_sharing,
)
from worker.ml.special_tokens import stop_tokens

_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


class EncodedSet:
    """A RankedSet as token ids: sequences (K lists) and levels (rows, K): one row per ranking,
    or for a multi-aspect model one per (ranking, aspect) ranked."""

    def __init__(
        self, sequences: list[list[int]], levels: torch.Tensor, n_rankings: int, heads: torch.Tensor | None = None
    ):
        self.sequences, self.levels, self.n_rankings = sequences, levels, n_rankings
        self.heads = heads if heads is not None else torch.zeros(levels.shape[0], dtype=torch.long)
        """(rows,) the score head that reads each row of levels: its aspect's (0 with one head)."""
        self.longest = max(len(s) for s in sequences)
        self.prefix_len = common_prefix_len(sequences)
        """Tokens the K sequences share (the prompt), forwarded once when prefixes are shared."""

    def cost(self, share_prefix: bool) -> int:
        """Tokens this set adds to a forward pass: its prompt once and each completion's own
        tokens when prefixes are shared (packed, no padding), else K sequences padded alike."""
        if share_prefix:
            return self.prefix_len + sum(len(s) - self.prefix_len for s in self.sequences)
        return self.longest * len(self.sequences)


def encode_sets(tokenizer, sets: Sequence[RankedSet], max_length: int, aspects: Sequence[str] = ()) -> list[EncodedSet]:
    """Tokenise each completion once; completions nobody ranked are dropped, and so are sets
    with none ranked. Rows: each set's overall rankings, or with `aspects` (a multi-aspect
    model) its rankings of each of those aspects, read by that aspect's head. Refuses a
    tokenizer whose pad is the end-of-turn token (special_tokens.stop_tokens)."""
    stop_tokens(tokenizer)
    encoded = []
    for ranked in sets:
        if aspects:
            rows = [(h, row) for h, aspect in enumerate(aspects) for row in ranked.aspect_levels.get(aspect, [])]
        else:
            rows = [(0, row) for row in ranked.levels]
        used = [k for k in range(len(ranked.completions)) if any(row[k] >= 0 for _, row in rows)]
        if not used:
            continue
        sequences = encode_reward_texts(
            tokenizer, [ranked.prompt] * len(used), [ranked.completions[k] for k in used], max_length
        )
        levels = torch.tensor([[row[k] for k in used] for _, row in rows], dtype=torch.long)
        heads = torch.tensor([h for h, _ in rows], dtype=torch.long)
        encoded.append(EncodedSet(sequences, levels, len(ranked.levels), heads))
    return encoded


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


def batches_by_length(sets: Sequence[EncodedSet], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices of sets, bucketed so each batch holds similar lengths; batch order shuffled."""
    order = sorted(range(len(sets)), key=lambda i: (sets[i].longest, rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def assemble(flat: torch.Tensor, sets: Sequence[EncodedSet]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of all completions of `sets` (flat (N,), in order; or (N, heads) from a
    multi-aspect head) -> (scores, levels), both (rows, K_max). A task ranked by several
    labelers gives one row per ranking, sharing its scores; a row takes its head's column.
    Padding slots have level -1 (their score is never used)."""
    k_max = max(len(s.sequences) for s in sets)
    index_rows, level_rows, offset = [], [], 0
    for s in sets:
        k = len(s.sequences)
        index = torch.arange(offset, offset + k).expand(s.levels.shape[0], k)
        index_rows.append(torch.nn.functional.pad(index, (0, k_max - k)))
        level_rows.append(torch.nn.functional.pad(s.levels, (0, k_max - k), value=-1))
        offset += k
    index = torch.cat(index_rows).to(flat.device)
    levels = torch.cat(level_rows).to(flat.device)
    if flat.dim() == 1:
        return flat[index], levels
    heads = torch.cat([s.heads for s in sets]).to(flat.device)  # (rows,)
    return flat[index, heads[:, None]], levels


def forward_sets(
    model,
    sets: Sequence[EncodedSet],
    pad_id: int,
    device: torch.device,
    share_prefix: bool = True,
    *,
    packed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every completion of `sets` once -> assemble()'s (scores, levels).
    With share_prefix, each set's common prompt is forwarded once (shared_prefix.py): packed
    with its completions into rows without padding where the model allows it (one forward),
    else through a key/value cache of the padded prompts (two forwards, completions padded).
    A multi-aspect head gives (N, heads) scores; each row of levels takes its head's column."""
    all_heads = head_count(model) > 1
    if share_prefix and supports_prefix_sharing(model):
        groups = [(s.sequences[0][: s.prefix_len], [seq[s.prefix_len :] for seq in s.sequences]) for s in sets]
        if packed and supports_packing(model, max(s.longest for s in sets) - 1):
            flat = packed_scores(model, groups, pad_id, device, all_heads=all_heads)
        else:
            flat = prefix_shared_scores(model, groups, pad_id, device, all_heads=all_heads)
    else:
        flat = sequence_scores(model, [seq for s in sets for seq in s.sequences], pad_id, device, all_heads=all_heads)
    return assemble(flat, sets)


class SetScorer(torch.nn.Module):
    """forward_sets as a module, so a data-parallel wrapper (DDP, FSDP, DeepSpeed) sees the whole
    forward: prefix sharing calls the backbone and head directly, which would bypass the hooks
    of a wrapper around the bare model (DDP would then all-reduce nothing)."""

    def __init__(self, model, pad_id: int, share_prefix: bool):
        super().__init__()
        self.model, self.pad_id, self.share_prefix = model, pad_id, share_prefix
        self._no_split_modules = getattr(model, "_no_split_modules", None)  # FSDP's wrap policy reads it

    def forward(self, sets: Sequence[EncodedSet]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        return forward_sets(self.model, sets, self.pad_id, device, self.share_prefix)


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
