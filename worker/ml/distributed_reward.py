"""The reward model across N data-parallel ranks (worker/ml/distributed.py starts them;
docs/distributed.md): a rank's slice of each global batch, and the whole model back on rank 0."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from worker.ml.config import RewardConfig
from worker.ml.losses import LOSSES, informative
from worker.ml.models import autocast
from worker.ml.scorer import token_budget_chunks


def data_parallel_step(accelerator, scorer, sets: Sequence[Any], n_informative: int, cfg: RewardConfig) -> float:
    """Forward and backward this rank's slice of a global batch of EncodedSets (`sets`, the
    same list on every rank); gradients are all-reduced once. Returns the global batch's mean
    loss, the same on every rank and the same as one process computes."""
    rank, world = accelerator.process_index, accelerator.num_processes
    # DDP / FSDP / DeepSpeed average gradients over ranks; `world / n` turns that average into
    # the sum of every rank's share over the global count: the one-process gradient.
    mine, weight = list(sets[rank::world]), world / n_informative
    if not mine:  # fewer rankings than ranks this step: join the all-reduce with a zero gradient
        mine, weight = list(sets[:1]), 0.0
    chunks = token_budget_chunks([s.cost(cfg.share_prompt_prefix) for s in mine], cfg.max_tokens_per_forward)
    if len(chunks) > 1 and accelerator.distributed_type.value == "DEEPSPEED":
        raise ValueError(
            "max_tokens_per_forward: DeepSpeed steps the optimizer on every backward; raise it so "
            f"a rank's slice of a step fits one forward ({len(chunks)} needed)"
        )
    local = 0.0
    for c, chunk in enumerate(chunks):
        # ranks may need different numbers of forwards: all-reduce on the last backward only
        last = c == len(chunks) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(scorer):
            with autocast(accelerator.device, cfg.autocast):
                scores, levels = scorer([mine[i] for i in chunk])  # (rows, K) each
            _, per_ranking = LOSSES[cfg.loss](scores, levels)  # (rows,)
            share = (per_ranking * informative(levels)).sum()
            accelerator.backward(share * weight)
        local += share.item() * weight / world
    return float(accelerator.reduce(torch.tensor([local], device=accelerator.device), "sum")[0])


def main_process_model(accelerator, scorer, model, rebuild: Callable[[], Any]):
    """The trained model, whole, on rank 0; None on the other ranks. Under DDP every rank
    already holds it; under FSDP or DeepSpeed every rank joins the gather of the shards, which
    rank 0 loads into a fresh copy from `rebuild()`."""
    sharded = accelerator.distributed_type.value in ("FSDP", "DEEPSPEED")
    state = accelerator.get_state_dict(scorer) if sharded else None  # a collective
    if not accelerator.is_main_process:
        return None
    if state is not None:
        model = rebuild()
        model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
    return model
