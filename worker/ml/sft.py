"""Supervised fine-tuning on demonstrations (step 1 of the InstructGPT workflow).

`train_sft(cfg, examples, out_dir)` trains the answer tokens only (sft_data.py: the loss mask,
the shared end-of-turn rule, packing), with LoRA (default), DoRA, IA3, prompt tuning, QLoRA
(peft_methods.py) or every weight; AdamW, linear warmup then decay, gradient clipping; the
held-out loss after each epoch, and the best epoch's weights are the ones saved, as a peft
adapter (or a full model) folder with a ranklab_card.json, like the reward and policy stages.

The loss is computed from the backbone's hidden states at the answer positions only: the output
head (for SmolLM2 a fifth of the parameters, its logits 49k wide) never runs on prompt tokens.
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import get_scheduler

from worker.ml import peft_methods
from worker.ml.formatting import has_chat_template
from worker.ml.models import (
    Progress,
    autocast,
    is_adapter_dir,
    load_causal_lm,
    load_tokenizer,
    match_embeddings,
    pick_device,
    report,
    save_artifact,
)
from worker.ml.reward import warmup_step_count
from worker.ml.sft_config import SFTConfig
from worker.ml.sft_data import (
    IGNORE,
    Batch,
    Encoded,
    Messages,
    as_example,
    encode_example,
    packed_batch,
    padded_batch,
    plan_steps,
    split_examples,
)
from worker.ml.special_tokens import stop_tokens

_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
StepHook = Callable[[int, dict[str, float]], None]


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def packing_exact(model, longest: int) -> bool:
    """Whether a block mask is honoured: the attention takes an explicit 4-D mask (SDPA or
    eager; flash-attention kernels take none) and no sliding window is shorter than an example."""
    config = _base(model).config.get_text_config()
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    windows = [getattr(config, name, None) for name in ("sliding_window", "attention_window")]
    return all(not isinstance(w, int) or w <= 0 or longest <= w for w in windows)


def answer_logits(model, batch: Batch, device: torch.device, n_virtual: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) at every position whose next token is an answer token: (n, V), (n,).

    Packed and padded batches go through the backbone, and the output head runs on the answer
    positions alone. Prompt tuning goes through the peft model (it prepends the soft prompt),
    whose logits then start with n_virtual columns for the virtual tokens."""
    ids, labels = batch.ids.to(device), batch.labels.to(device)
    targets = labels[:, 1:].clone()
    if batch.positions is not None:
        targets[batch.positions[:, 1:].to(device) == 0] = IGNORE  # the next example's first token
    rows, cols = (targets != IGNORE).nonzero(as_tuple=True)
    if n_virtual:
        logits = model(input_ids=ids, attention_mask=batch.attention.to(device)).logits[:, n_virtual:]
        return logits[rows, cols], targets[rows, cols]
    base = _base(model)
    backbone, head = getattr(base, base.base_model_prefix), base.get_output_embeddings()
    mask = batch.attention.to(device)
    if mask.dim() == 3:
        mask = mask[:, None]  # (R, 1, L, L): one mask for every head
        if base.config.get_text_config()._attn_implementation == "eager":  # eager adds the mask to its scores
            dtype = next(backbone.parameters()).dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
    positions = batch.positions.to(device) if batch.positions is not None else None
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
    logits = head(hidden[rows, cols])
    cap = getattr(base.config.get_text_config(), "final_logit_softcapping", None)
    if cap:  # Gemma 2/3 squash their logits; the model's own forward does this after its head
        logits = torch.tanh(logits / cap) * cap
    return logits, targets[rows, cols]


def token_loss_sum(model, batch: Batch, device: torch.device, n_virtual: int) -> tuple[torch.Tensor, int]:
    """(sum of the answer tokens' cross-entropy, how many there are)."""
    logits, targets = answer_logits(model, batch, device, n_virtual)
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return loss, int(targets.numel())


class TokenLoss(torch.nn.Module):
    """token_loss_sum as a module, so a data-parallel wrapper (DDP) sees the whole forward:
    answer_logits calls the backbone and head directly, around a wrapper on the bare model."""

    def __init__(self, model, n_virtual: int):
        super().__init__()
        self.model, self.n_virtual = model, n_virtual

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        return token_loss_sum(self.model, batch, next(self.model.parameters()).device, self.n_virtual)


def build_model(cfg: SFTConfig, model_path: str, tokenizer, device: torch.device):
    """The model to train: a peft model (adapter methods) or the whole model (mode "full"), with
    fp32 weights outside QLoRA (autocast supplies bf16 speed; AdamW keeps full precision)."""
    torch.manual_seed(cfg.seed)
    if cfg.peft_method == "qlora":
        if is_adapter_dir(model_path):
            raise ValueError("model: QLoRA quantizes a model folder; merge this adapter into its base first")
        model = peft_methods.quantized_base(model_path, device)
    else:
        model = load_causal_lm(model_path, device=device, dtype=torch.float32)  # an adapter is merged here
    match_embeddings(model, tokenizer)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.mode == "lora":
        model = peft_methods.wrap(cfg, model, model_path)
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    return model if cfg.peft_method == "qlora" else model.to(device)  # a 4-bit model is placed at load


def make_batch(examples: Sequence[Encoded], pad_id: int, packed: bool, row_tokens: int) -> Batch:
    return packed_batch(examples, pad_id, row_tokens) if packed else padded_batch(examples, pad_id)


@torch.no_grad()
def evaluate(
    model, examples: Sequence[Encoded], cfg: SFTConfig, pad_id: int, device, packed: bool, n_virtual: int
) -> float:
    """Mean cross-entropy per answer token over `examples` (every token weighs the same)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for step in plan_steps([len(e.ids) for e in examples], cfg.batch_tokens, None, padded=not packed):
        batch = make_batch([examples[i] for i in step], pad_id, packed, cfg.max_length)
        with autocast(device, cfg.autocast):
            loss, n = token_loss_sum(model, batch, device, n_virtual)
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total / max(count, 1)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def train_sft(
    cfg: SFTConfig,
    data: Sequence[Any],
    out_dir: str | Path,
    on_progress: Progress | None = None,
    eval_data: Sequence[Any] | None = None,
    *,
    on_step: StepHook | None = None,
    accelerator: Any = None,
) -> dict[str, Any]:
    """Fine-tune `cfg.model` on `data` (demonstrations: {"messages": [...]} or {"prompt",
    "completion"}, or message lists) and save the best epoch to `out_dir`; returns the metrics.

    Held out: `eval_data`, else cfg.eval_fraction of the prompts. `on_progress(done, total,
    stage)` as the other stages; `on_step(step, stats)` per optimizer step with the training
    loss and learning rate, and after each epoch with its eval_loss, for a live loss chart.

    With `accelerator` (worker/ml/distributed.py starts the processes; DDP only) this is one of N
    data-parallel ranks: each takes a slice of every planned step, the loss is over the global
    step's answer tokens, every rank evaluates the same held-out set; rank 0 saves, others return {}."""
    if not cfg.model:
        raise ValueError("model: name the model to fine-tune (hub id or local folder)")
    model_path = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    device = accelerator.device if accelerator is not None else pick_device(cfg.device)
    if accelerator is not None and accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"):
        raise ValueError("strategy: SFT runs data-parallel with DDP only (docs/distributed.md)")
    rng = random.Random(cfg.seed)
    examples = [m if isinstance(m, list) else as_example(m, f"example {i + 1}") for i, m in enumerate(data)]
    if eval_data is not None:
        held = [m if isinstance(m, list) else as_example(m, f"eval example {i + 1}") for i, m in enumerate(eval_data)]
        train_examples = examples
    else:
        train_examples, held = split_examples(examples, cfg.eval_fraction, cfg.seed)
    report(on_progress, 0, 1, "loading")

    # 1. tokens and labels; the pad must not be the end-of-turn token (special_tokens.py)
    tokenizer = load_tokenizer(model_path, padding_side="right")
    pad_id = stop_tokens(tokenizer).pad
    train = [e for m in train_examples if (e := encode_example(tokenizer, m, cfg.max_length)) is not None]
    held_enc = [e for m in held if (e := encode_example(tokenizer, m, cfg.max_length)) is not None]
    skipped = len(train_examples) + len(held) - len(train) - len(held_enc)
    if not train:
        raise ValueError("data: no training example has an answer token within max_length tokens")

    # 2. model, batching, optimizer and schedule (every epoch's steps planned now: the schedule
    #    needs their number)
    model = build_model(cfg, model_path, tokenizer, device)
    n_virtual = cfg.num_virtual_tokens if cfg.prompt_tuning else 0
    longest = max(len(e.ids) for e in [*train, *held_enc])
    packed = cfg.padding_free is not False and not cfg.prompt_tuning and packing_exact(model, longest)
    if cfg.padding_free and not packed:
        raise ValueError(
            "padding_free: this model's attention takes no block mask (flash attention or a sliding window)"
        )
    lengths = [len(e.ids) for e in train]
    plans = [plan_steps(lengths, cfg.batch_tokens, rng, padded=not packed) for _ in range(cfg.epochs)]
    total_steps = sum(len(p) for p in plans)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup_steps = warmup_step_count(cfg.warmup_fraction, total_steps)
    scheduler = get_scheduler(_SCHEDULES[cfg.lr_schedule], optimizer, warmup_steps, total_steps)
    wrapped: Any = None
    if accelerator is not None:  # the scheduler stays unprepared: accelerate would step it N times
        wrapped, optimizer = accelerator.prepare(TokenLoss(model, n_virtual), optimizer)

    # 3. train; after each epoch the held-out loss, keeping the best epoch's trainable weights
    losses: list[float] = []
    eval_losses: list[float] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    step, seconds, cpu_seconds, tokens, padded_tokens = 0, 0.0, 0.0, 0, 0
    model.train()
    for epoch, plan in enumerate(plans, start=1):
        for indices in plan:
            started, started_cpu = time.perf_counter(), time.process_time()
            if accelerator is not None:  # this rank's slice of the step; the gradient all-reduced
                step_loss, real, padded = _data_parallel_step(accelerator, wrapped, train, indices, pad_id, packed, cfg)
            else:
                batch = make_batch([train[i] for i in indices], pad_id, packed, cfg.max_length)
                with autocast(device, cfg.autocast):
                    loss_sum, n = token_loss_sum(model, batch, device, n_virtual)
                loss = loss_sum / n
                loss.backward()
                step_loss, real, padded = float(loss.detach()), batch.real_tokens, batch.ids.numel()
            if cfg.grad_clip > 0 and accelerator is not None:
                accelerator.clip_grad_norm_(wrapped.parameters(), cfg.grad_clip)
            elif cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            seconds += time.perf_counter() - started
            cpu_seconds += time.process_time() - started_cpu
            tokens, padded_tokens = tokens + real, padded_tokens + padded
            step += 1
            if on_step is not None:
                on_step(step, {"loss": losses[-1], "learning_rate": scheduler.get_last_lr()[0], "epoch": epoch})
            report(on_progress, step, total_steps, "train")
        if held_enc:
            report(on_progress, epoch, cfg.epochs, "evaluate")
            eval_losses.append(evaluate(model, held_enc, cfg, pad_id, device, packed, n_virtual))
            if on_step is not None:
                on_step(step, {"eval_loss": eval_losses[-1], "epoch": epoch})
            if best is None or eval_losses[-1] < best[0]:
                state = {k: p.detach().to("cpu", copy=True) for k, p in model.named_parameters() if p.requires_grad}
                best = (eval_losses[-1], epoch, state)
    if accelerator is not None:  # every rank's slices' token counts; rank 0 saves alone
        counts = accelerator.reduce(torch.tensor([tokens, padded_tokens], device=device, dtype=torch.float64), "sum")
        tokens, padded_tokens = int(counts[0]), int(counts[1])
        if not accelerator.is_main_process:
            return {}
    if best is not None and best[1] != cfg.epochs:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in best[2]:
                    param.copy_(best[2][name])

    # 4. metrics and the artifact
    model.eval()
    trainable, total_params = peft_methods.parameter_counts(model)
    memory, memory_kind = peak_memory_mb(device)
    metrics: dict[str, Any] = {
        "train_loss": losses,
        "train_loss_first": losses[0],
        "train_loss_last": sum(losses[-5:]) / len(losses[-5:]),
        "eval_loss": eval_losses,
        "best_epoch": best[1] if best else cfg.epochs,
        "best_eval_loss": best[0] if best else None,
        "steps": step,
        "warmup_steps": warmup_steps,
        "train_seconds": round(seconds, 3),
        "train_cpu_seconds": round(cpu_seconds, 3),
        "train_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2),
        "padding_fraction": round(1 - tokens / padded_tokens, 4),
        "batching": "packed" if packed else "padded",
        "trainable_params": trainable,
        "total_params": total_params,
        "peak_memory_mb": round(memory, 1),
        "peak_memory_kind": memory_kind,
    }
    if accelerator is not None:
        metrics["processes"] = accelerator.num_processes
    data_counts = {"train_examples": len(train), "eval_examples": len(held_enc), "skipped_too_long": skipped}
    mergeable = not cfg.prompt_tuning  # (a QLoRA adapter merges into the unquantized base)
    card = {
        "kind": "sft",
        "base_model": model_path,
        "config": cfg.to_dict(),
        "data": data_counts,
        "metrics": {k: v for k, v in metrics.items() if k != "train_loss"},
        "text_format": "chat_template" if has_chat_template(tokenizer) else "plain",
        "mergeable": mergeable,
        "load": "transformers.AutoModelForCausalLM.from_pretrained(path)"
        if cfg.mode == "full"
        else "peft.AutoPeftModelForCausalLM.from_pretrained(path), or worker.ml.models.load_causal_lm(path"
        + (")" if mergeable else ", merge_adapter=False): a soft prompt cannot be merged into the weights)"),
    }
    report(on_progress, 0, 1, "saving")
    save_artifact(model, tokenizer, out_dir, card)
    report(on_progress, 1, 1, "saved")
    return {**metrics, **data_counts}


def _data_parallel_step(
    accelerator, wrapped, train: Sequence[Encoded], indices: Sequence[int], pad_id: int, packed: bool, cfg: SFTConfig
) -> tuple[float, int, int]:
    """Forward and backward this rank's slice of a planned step (`indices`, the same on every
    rank); once all-reduced, the gradient is that of the global step's mean token loss.
    Returns (the global mean loss, this rank's real tokens, its padded tokens)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    mine, weight = list(indices[rank::world]), 1.0
    if not mine:  # fewer examples than ranks this step: join the all-reduce with a zero gradient
        mine, weight = list(indices[:1]), 0.0
    batch = make_batch([train[i] for i in mine], pad_id, packed, cfg.max_length)
    with autocast(accelerator.device, cfg.autocast):
        loss_sum, n = wrapped(batch)
    # the global token count; DDP averages gradients over ranks, so `world` turns that average
    # into the sum of the ranks' shares over the global count: the one-process gradient
    shares = torch.tensor([n, float(loss_sum.detach())], device=accelerator.device, dtype=torch.float64) * weight
    n_global, loss_global = accelerator.reduce(shares, "sum").tolist()
    accelerator.backward(loss_sum * (weight * world / n_global))
    return loss_global / n_global, int(batch.real_tokens * weight), int(batch.ids.numel() * weight)


__all__ = ["SFTConfig", "Messages", "train_sft"]
