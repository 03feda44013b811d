"""Direct preference optimisation from K-way rankings (dpo_losses.py holds the losses).

Each ranked task is one batch element: its prompt and its K completions are packed into one
row with a block attention mask (batching.pack_prefix_groups), so the prompt is forwarded once
and every completion once, each scored exactly as if alone. The policy is a LoRA adapter on the
starting model; the reference is the same model with the adapter disabled (peft's
`disable_adapter()`), so no second copy of the weights is held. The reference never changes,
so its log-probs are computed once, before training, and cached. Only response tokens count.
Several labelers' rankings of one task share its forward and all count in the loss.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from transformers import get_scheduler

from worker.ml.batching import pack_prefix_groups
from worker.ml.data import RankedSet, Ranking, group_rankings, split_by_prompt
from worker.ml.distributed_dpo import (
    STAT_SUMS,
    PolicyLogps,
    dpo_batch_stats,
    dpo_batch_sums,
    dpo_step,
    shared_reference,
)
from worker.ml.dpo_config import DPOConfig
from worker.ml.dpo_losses import dpo_loss
from worker.ml.formatting import encode_texts, has_chat_template, prompt_text, reward_text
from worker.ml.lora import resolve_lora_targets
from worker.ml.losses import informative
from worker.ml.models import (
    Progress,
    autocast,
    base_of_adapter,
    disable_dropout,
    is_adapter_dir,
    load_causal_lm,
    load_tokenizer,
    match_embeddings,
    pick_device,
    read_card,
    report,
    save_artifact,
)
from worker.ml.reward import warmup_step_count
from worker.ml.sft import packing_exact
from worker.ml.shared_prefix import PACKED_ROW_TOKENS
from worker.ml.special_tokens import stop_tokens

StepHook = Callable[[int, dict[str, float]], None]


class EncodedRanking:
    """One task as token ids: the shared prompt, the K ranked responses, levels (n_rankings, K)."""

    def __init__(self, prompt: list[int], responses: list[list[int]], levels: torch.Tensor):
        self.prompt, self.responses, self.levels = prompt, responses, levels
        self.n_rankings = int(levels.shape[0])


def encode_rankings(tokenizer, sets: Sequence[RankedSet], max_length: int) -> list[EncodedRanking]:
    """Tokenise each completion once (completions nobody ranked are dropped). The prompt/response
    boundary is where the full texts stop agreeing with the prompt text (a tokenizer may merge
    across the boundary); each response keeps at least one token and its first max_length - 1,
    the prompt its last tokens that fit beside the longest response."""
    stop_tokens(tokenizer)  # refuses a pad that is the end-of-turn token
    encoded = []
    for s in sets:
        used = [k for k in range(len(s.completions)) if any(row[k] >= 0 for row in s.levels)]
        prompt = encode_texts(tokenizer, [prompt_text(tokenizer, s.prompt)], 1 << 30)[0]
        full = encode_texts(tokenizer, [reward_text(tokenizer, s.prompt, s.completions[k]) for k in used], 1 << 30)
        split = min(len(prompt), *(len(f) - 1 for f in full))
        while split > 0 and any(f[:split] != prompt[:split] for f in full):
            split -= 1
        if split == 0:
            raise ValueError(f"rankings: the prompt of task {s.prompt_id!r} encodes to no token")
        responses = [f[split:][: max_length - 1] for f in full]
        keep = max(1, max_length - max(len(r) for r in responses))
        levels = torch.tensor([[row[k] for k in used] for row in s.levels], dtype=torch.long)
        encoded.append(EncodedRanking(full[0][:split][-keep:], responses, levels))
    return encoded


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def response_logps(model, rankings: Sequence[EncodedRanking], pad_id: int, device: torch.device, *, full=False):
    """Sum of log-probs of each response's tokens -> (total K,), in order. With `full`, also the
    (tokens, vocab) log-softmax rows at every response token (for the KL to the reference).

    One forward over packed rows; the output head runs on the response positions only. The first
    response token is predicted from the prompt's last column, the others from their own
    response's previous column (pack_prefix_groups lays suffixes out back to back)."""
    groups = [(r.prompt, r.responses) for r in rankings]
    packed = pack_prefix_groups(groups, pad_id, row_tokens=PACKED_ROW_TOKENS)
    reads = packed.reads.tolist()
    rows, predict, target, owner = [], [], [], []
    n = 0
    for _, responses in groups:
        prompt_last = reads[n][1] - len(responses[0])  # the column before the first response
        for response in responses:
            row, last = reads[n]
            columns = list(range(last - len(response) + 1, last + 1))
            rows += [row] * len(columns)
            predict += [prompt_last, *columns[:-1]]
            target += columns
            owner += [n] * len(columns)
            n += 1
    base = _base(model)
    backbone, head = getattr(base, base.base_model_prefix), base.get_output_embeddings()
    mask = packed.allowed[:, None].to(device)  # (R, 1, L, L): one mask for every head
    if base.config.get_text_config()._attn_implementation == "eager":  # eager adds the mask to its scores
        dtype = next(backbone.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
    ids = packed.ids.to(device)
    hidden = backbone(
        input_ids=ids, attention_mask=mask, position_ids=packed.positions.to(device), use_cache=False
    ).last_hidden_state
    row_index = torch.tensor(rows, device=device)
    logits = head(hidden[row_index, torch.tensor(predict, device=device)]).float()
    cap = getattr(base.config.get_text_config(), "final_logit_softcapping", None)
    if cap:  # Gemma 2/3 squash their logits after the head
        logits = torch.tanh(logits / cap) * cap
    log_probs = F.log_softmax(logits, dim=-1)
    tokens = ids[row_index, torch.tensor(target, device=device)]
    token_logps = log_probs.gather(1, tokens[:, None])[:, 0]
    sums = torch.zeros(n, device=device, dtype=token_logps.dtype).index_add(
        0, torch.tensor(owner, device=device), token_logps
    )
    return (sums, log_probs) if full else sums


@torch.no_grad()
def reference_logps(model, rankings: Sequence[EncodedRanking], pad_id: int, device, cfg: DPOConfig) -> list:
    """Per ranking, its (K,) response log-probs under the reference (the adapter disabled), on CPU."""
    cached = []
    with model.disable_adapter():
        for start in range(0, len(rankings), cfg.batch_rankings):
            chunk = rankings[start : start + cfg.batch_rankings]
            with autocast(device, cfg.autocast):
                flat = response_logps(model, chunk, pad_id, device).float().cpu()
            cached += list(flat.split([len(r.responses) for r in chunk]))
    return cached


def assemble(flat: torch.Tensor, rankings: Sequence[EncodedRanking]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat per-response values -> (values, levels), both (n_rankings, K_max); a task ranked by
    several labelers gives one row per ranking. Padding slots have level -1."""
    k_max = max(len(r.responses) for r in rankings)
    index_rows, level_rows, offset = [], [], 0
    for r in rankings:
        k = len(r.responses)
        index_rows.append(F.pad(torch.arange(offset, offset + k).expand(r.n_rankings, k), (0, k_max - k)))
        level_rows.append(F.pad(r.levels, (0, k_max - k), value=-1))
        offset += k
    return flat[torch.cat(index_rows).to(flat.device)], torch.cat(level_rows).to(flat.device)


class PolicyAdapterSettings(Protocol):
    """The fields build_policy reads (DPOConfig and KTOConfig both have them)."""

    seed: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_targets: tuple[str, ...]


def build_policy(cfg: PolicyAdapterSettings, model_path: str, tokenizer, device: torch.device):
    """The LoRA policy in fp32; the reference is always the model the policy line started from.

    - a model folder, or an adapter folder that is no policy (an SFT adapter, merged into its base
      here): a fresh LoRA adapter (B = 0, so policy == reference before the first step), saved
      naming `model_path` as its base;
    - a policy adapter from an earlier run of any policy step (card kind "policy": PPO, RLOO, GRPO
      or DPO, e.g. the previous round's): that adapter trains on, and the model that run started
      from stays the reference, as PPO does across rounds (iterative DPO)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(cfg.seed)
    if is_adapter_dir(model_path) and read_card(model_path).get("kind") == "policy":
        base = load_causal_lm(base_of_adapter(model_path), device="cpu", dtype=torch.float32)
        match_embeddings(base, tokenizer)
        model = PeftModel.from_pretrained(base, model_path, is_trainable=True)
    else:
        base = load_causal_lm(model_path, device="cpu", dtype=torch.float32)
        match_embeddings(base, tokenizer)
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(resolve_lora_targets(base, cfg.lora_targets, mlp=True)),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, lora)
        # so the saved adapter loads on top of the start (load_causal_lm merges an SFT adapter first)
        model.peft_config["default"].base_model_name_or_path = model_path
    disable_dropout(model)
    return model.to(device)


@torch.no_grad()
def evaluate(model, rankings, reference: list, pad_id: int, device, cfg: DPOConfig) -> dict[str, float | None]:
    """On held-out rankings: the loss, implicit-reward pair accuracy (a tie counts half) and mean
    margin, chosen/rejected log-prob drift, and the KL(policy || reference) per response token,
    taken over the full vocabulary at each position of the ranked responses."""
    if not rankings:
        return {"val_loss": None, "val_accuracy": None, "val_margin": None, "val_pairs": 0}
    was_training = model.training
    model.eval()
    policy_parts, kl_sum, kl_tokens = [], 0.0, 0
    for start in range(0, len(rankings), cfg.batch_rankings):
        chunk = rankings[start : start + cfg.batch_rankings]
        with autocast(device, cfg.autocast):
            flat, log_p = response_logps(model, chunk, pad_id, device, full=True)
            with model.disable_adapter():
                _, log_q = response_logps(model, chunk, pad_id, device, full=True)
        policy_parts.append(flat.float().cpu())
        kl_sum += float((log_p.exp() * (log_p - log_q)).sum())
        kl_tokens += int(log_p.shape[0])
    model.train(was_training)
    policy, levels = assemble(torch.cat(policy_parts), rankings)
    ref, _ = assemble(torch.cat(reference), rankings)
    loss, _ = dpo_loss(policy, ref, levels, beta=cfg.beta, loss=cfg.loss, label_smoothing=cfg.label_smoothing)
    stats = dpo_batch_stats(sums := dpo_batch_sums(policy, ref, levels, cfg.beta))
    return {
        "val_loss": round(float(loss), 5),
        "val_accuracy": round(stats["accuracy"], 4),
        "val_margin": round(stats["margin"], 5),
        "val_chosen_drift": round(stats["chosen_drift"], 5),
        "val_rejected_drift": round(stats["rejected_drift"], 5),
        "val_kl_per_token": round(kl_sum / max(kl_tokens, 1), 6),
        "val_pairs": int(sums[STAT_SUMS.index("pairs")]),
    }


def train_dpo(
    cfg: DPOConfig,
    rankings: Sequence[Ranking],
    out_dir: str | Path,
    on_progress: Progress | None = None,
    on_step: StepHook | None = None,
    *,
    held_out: Sequence[Ranking] | None = None,
    accelerator: Any = None,
) -> dict[str, Any]:
    """Train a LoRA policy on `rankings` by DPO, save the adapter to `out_dir`, return metrics.

    `held_out`: rankings to measure on (a round passes its validation prompts' rankings); when
    given, every ranking in `rankings` trains and cfg.val_fraction is not used. Otherwise a
    cfg.val_fraction share of the prompts is held out.
    `on_progress(done, total, stage)` as the other stages; `on_step(step, stats)` per optimizer
    step (loss, accuracy and margin of the batch, chosen/rejected drift, learning rate), and with
    the held-out metrics (evaluate()) before training (step 0) and after each epoch.
    With `accelerator`, one of N data-parallel ranks (distributed_dpo.py); rank 0 alone
    evaluates and saves, the others return {}."""
    model_path = starting_model_path(cfg.model)
    device = accelerator.device if accelerator is not None else pick_device(cfg.device)
    main = accelerator is None or accelerator.is_main_process
    on_step = on_step if main else None  # rank 0 alone evaluates and reports
    rng = random.Random(cfg.seed)
    report(on_progress, 0, 1, "loading")

    # 1. data: labelers' rankings of one task merged, split by prompt, tokenised once
    tokenizer = load_tokenizer(model_path, padding_side="right")
    pad_id = tokenizer.pad_token_id
    if held_out is None:
        train_sets, val_sets = split_by_prompt(group_rankings(rankings), cfg.val_fraction, cfg.seed)
    else:
        train_sets, val_sets = group_rankings(rankings), group_rankings(held_out)
    train = [r for r in encode_rankings(tokenizer, train_sets, cfg.max_length) if bool(informative(r.levels).any())]
    held = encode_rankings(tokenizer, val_sets, cfg.max_length)
    if not train:
        raise ValueError("rankings: no training ranking orders two completions (all ties?)")

    # 2. the policy, and the reference's log-probs computed once (the reference never changes)
    model = build_policy(cfg, model_path, tokenizer, device)
    longest = max(len(r.prompt) + max(len(x) for x in r.responses) for r in [*train, *held])
    if not packing_exact(model, longest):
        raise ValueError(
            "model: its attention takes no block mask (flash attention) or has a sliding window shorter "
            "than a ranking's longest sequence; load it with sdpa or eager attention"
        )
    report(on_progress, 0, 1, "reference")
    train_ref = shared_reference(accelerator, lambda part: reference_logps(model, part, pad_id, device, cfg), train)
    held_ref = reference_logps(model, held, pad_id, device, cfg) if main else []

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total_steps = math.ceil(len(train) / cfg.batch_rankings) * cfg.epochs
    warmup_steps = warmup_step_count(cfg.warmup_fraction, total_steps)
    scheduler = get_scheduler("linear", optimizer, warmup_steps, total_steps)
    forward: Any = partial(response_logps, model, pad_id=pad_id, device=device)
    if accelerator is not None:  # the scheduler stays unprepared: accelerate would step it N times
        forward, optimizer = accelerator.prepare(PolicyLogps(model, pad_id), optimizer)
    before = evaluate(model, held if main else [], held_ref, pad_id, device, cfg)
    if held and on_step is not None:  # the held-out charts start where the reference stands
        on_step(0, {k: v for k, v in before.items() if isinstance(v, float)} | {"epoch": 0})

    # 3. train: per step, whole rankings; each ranking's prompt once, each completion once
    model.train()
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    step, started = 0, time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        order = list(range(len(train)))
        rng.shuffle(order)
        for start in range(0, len(order), cfg.batch_rankings):
            batch = order[start : start + cfg.batch_rankings]
            sets = [train[i] for i in batch]
            step_loss, stats = dpo_step(accelerator, forward, sets, [train_ref[i] for i in batch], cfg, device)
            if cfg.grad_clip > 0 and accelerator is not None:
                accelerator.clip_grad_norm_(forward.parameters(), cfg.grad_clip)
            elif cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(step_loss)
            if on_step is not None:
                on_step(step, {"loss": step_loss, **stats, "learning_rate": scheduler.get_last_lr()[0], "epoch": epoch})
            report(on_progress, step, total_steps, "train")
        if held and on_step is not None:
            report(on_progress, epoch, cfg.epochs, "evaluate")
            history.append(evaluate(model, held, held_ref, pad_id, device, cfg))
            on_step(step, {k: v for k, v in history[-1].items() if isinstance(v, float)} | {"epoch": epoch})
    seconds = time.perf_counter() - started
    if not main:
        return {}

    # 4. held-out metrics and the artifact (a peft adapter on the starting model)
    after = history[-1] if history else evaluate(model, held, held_ref, pad_id, device, cfg)
    model.eval()
    n_rankings = sum(r.n_rankings for r in train)
    metrics: dict[str, Any] = {
        "train_loss_first": losses[0],
        "train_loss_last": sum(losses[-5:]) / len(losses[-5:]),
        "steps": step,
        "warmup_steps": warmup_steps,
        "train_seconds": round(seconds, 3),
        "train_rankings_per_second": round(n_rankings * cfg.epochs / seconds, 3),
        **after,
        "val_accuracy_before": before["val_accuracy"],
        "val_loss_before": before["val_loss"],
    }
    if accelerator is not None:
        metrics["processes"] = accelerator.num_processes
    data = {
        "rankings": len(rankings),
        "train_tasks": len(train),
        "val_tasks": len(held),
        "train_rankings": n_rankings,
        "val_rankings": sum(r.n_rankings for r in held),
    }
    save_policy_adapter(model, tokenizer, out_dir, "dpo", model_path, cfg, data, metrics, on_progress)
    return {**metrics, **data}


def starting_model_path(model: str) -> str:
    """The starting policy as loaded and recorded as the adapter's base: an existing folder made
    absolute, else the hub id as given."""
    if not model:
        raise ValueError("model: name the starting policy (hub id, model or adapter folder)")
    return str(Path(model).resolve()) if Path(model).exists() else model


def save_policy_adapter(
    model, tokenizer, out_dir, optimizer: str, model_path: str, cfg, data: dict, metrics: dict, on_progress=None
) -> None:
    """Save a DPO or KTO policy: the peft adapter on the starting model, with a card of kind
    "policy" so a later PPO, RLOO, GRPO, DPO or KTO run continues it (against the same reference)."""
    card = {
        "kind": "policy",
        "optimizer": optimizer,
        "base_model": model_path,
        "config": cfg.to_dict(),
        "data": data,
        "metrics": metrics,
        "text_format": "chat_template" if has_chat_template(tokenizer) else "plain",
        "load": "peft.AutoPeftModelForCausalLM.from_pretrained(path) when the base is a model folder, "
        "or worker.ml.models.load_causal_lm(path) (also when the base is an SFT adapter folder)",
    }
    report(on_progress, 0, 1, "saving")
    save_artifact(model, tokenizer, out_dir, card)
    report(on_progress, 1, 1, "saved")


__all__ = ["DPOConfig", "save_policy_adapter", "starting_model_path", "train_dpo"]
