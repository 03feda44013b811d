"""Rollouts for PPO: encode prompts (left padding), sample many per ``generate`` call, find
where each response ends, and score the decoded text.

Shapes: B prompts, Lq prompt tokens (left-padded), T response tokens (right-padded after EOS).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from worker.ml.data import Prompt
from worker.ml.formatting import prompt_text
from worker.ml.models import autocast
from worker.ml.ppo_math import masked_mean
from worker.ml.sampling import sample, sampling_config
from worker.ml.special_tokens import stop_tokens

RewardFn = Callable[[list[Prompt], list[str]], torch.Tensor]
"""reward_fn(prompts, responses) -> scores [B]: one float per (prompt, response) pair."""


@dataclass
class Rollout:
    prompts: list[Prompt]
    responses: list[str]
    query_ids: torch.Tensor  # [B, Lq] left-padded
    query_mask: torch.Tensor  # [B, Lq]
    response_ids: torch.Tensor  # [B, T] pad after the first EOS
    response_mask: torch.Tensor  # [B, T] float: 1 up to and including the first EOS
    has_eos: torch.Tensor  # [B] bool

    @property
    def input_ids(self) -> torch.Tensor:  # [B, Lq + T]
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:  # [B, Lq + T]
        return torch.cat([self.query_mask, self.response_mask.long()], dim=1)

    def select(self, index: torch.Tensor) -> Rollout:
        rows = index.tolist()
        return Rollout(
            [self.prompts[i] for i in rows],
            [self.responses[i] for i in rows],
            self.query_ids[index],
            self.query_mask[index],
            self.response_ids[index],
            self.response_mask[index],
            self.has_eos[index],
        )


def encode_prompts(tokenizer, texts: Sequence[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask [B, Lq]; over-long prompts lose their *start* (the assistant
    header at the end must survive)."""
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    batch = tokenizer(
        list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_tokens, add_special_tokens=False
    )
    return batch["input_ids"], batch["attention_mask"]


def response_mask(response_ids: torch.Tensor, stop_ids: Sequence[int] | int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] -> (mask [B, T] float, has_eos [B] bool).

    A response ends at its first stop id (special_tokens.stop_tokens); positions after it are
    padding. Counting stop tokens (rather than comparing with the pad id) stays right when pad
    is a stop id, as with Qwen's `<|endoftext|>`.
    """
    stops = torch.as_tensor(stop_ids, device=response_ids.device).reshape(-1)
    is_eos = torch.isin(response_ids, stops)
    eos_before = is_eos.long().cumsum(1) - is_eos.long()  # stop tokens strictly before t
    return (eos_before == 0).float(), is_eos.any(1)


@torch.no_grad()
def sample_rollout(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    max_prompt_tokens: int,
    max_new_tokens: int,
    temperature: float,
    generation_batch_size: int = 0,
    group_seeds: Sequence[int] | None = None,
) -> Rollout:
    """Sample one response per prompt with plain temperature sampling (no top-k/top-p and none
    of the checkpoint's generation_config, so the logprobs PPO recomputes are those of the
    sampling distribution). With `group_seeds`, the prompts form len(group_seeds) equal groups
    (a prompt's k copies), each sampled in its own generate call after seeding the RNG with its
    seed: what a group gets does not depend on the groups beside it (distributed_rl.py)."""
    # The same prompt text generation and reward scoring use (worker.ml.formatting).
    texts = [prompt_text(tokenizer, p) for p in prompts]
    query_ids, query_mask = encode_prompts(tokenizer, texts, max_prompt_tokens)  # [B, Lq]
    query_ids, query_mask = query_ids.to(model.device), query_mask.to(model.device)
    # Pure temperature sampling, nothing from the checkpoint's generation_config (sampling.py),
    # stopping where labeling generation stops (special_tokens.py).
    stops = stop_tokens(tokenizer, model.generation_config)
    gen_config = sampling_config(
        temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens, stop_ids=stops.ids, pad_id=stops.pad
    )
    chunk = len(texts) // len(group_seeds) if group_seeds else generation_batch_size or len(texts)
    pieces = []
    for start in range(0, len(texts), chunk):  # many prompts per generate call
        if group_seeds:
            torch.manual_seed(group_seeds[start // chunk])
        out = sample(model, query_ids[start : start + chunk], query_mask[start : start + chunk], gen_config)
        pieces.append(out[:, query_ids.shape[1] :])  # [b, T_chunk]
    width = max(p.shape[1] for p in pieces)
    response_ids = torch.cat(
        [torch.nn.functional.pad(p, (0, width - p.shape[1]), value=tokenizer.pad_token_id) for p in pieces]
    )  # [B, T]
    return finish_rollout(tokenizer, prompts, query_ids, query_mask, response_ids, stops.ids)


def finish_rollout(
    tokenizer,
    prompts: Sequence[Prompt],
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    stop_ids: Sequence[int],
) -> Rollout:
    """The Rollout of sampled `response_ids` [B, T] (whatever sampled them: HF generate here,
    vLLM in rollout_engines.py): masked after the first stop id, padded there, decoded."""
    mask, has_eos = response_mask(response_ids, stop_ids)
    # Pad (not EOS) after the end, so decoded text and the mask agree.
    response_ids = torch.where(mask.bool(), response_ids, tokenizer.pad_token_id)
    responses = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return Rollout(list(prompts), responses, query_ids, query_mask, response_ids, mask, has_eos)


def score_rollout(
    reward_fn: RewardFn, rollout: Rollout, missing_eos_penalty: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw scores [B], scores [B] after subtracting the penalty from responses with no EOS)."""
    raw = torch.as_tensor(reward_fn(rollout.prompts, rollout.responses), dtype=torch.float32)
    raw = raw.detach().reshape(-1).cpu()
    if raw.shape[0] != len(rollout.prompts):
        raise ValueError(f"reward function returned {raw.shape[0]} scores for {len(rollout.prompts)} responses")
    if not torch.isfinite(raw).all():
        raise ValueError("reward function returned a non-finite score")
    penalised = raw - missing_eos_penalty * (~rollout.has_eos.cpu()).float()
    return raw, penalised


RolloutSampler = Callable[..., Rollout]
"""sampler(model, tokenizer, prompts, cfg, group_seeds) -> Rollout: another engine's sampling
(rollout_engines.VllmRolloutSampler), in place of sample_rollout."""


def roll_out_and_score(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    reward_fn: RewardFn,
    cfg,
    device: torch.device,
    group_seeds=None,
    sampler: RolloutSampler | None = None,
):
    """The first two steps of a PPO or RLOO/GRPO iteration: sample one response per entry of
    `prompts` with the current policy at cfg's sampling fields (`group_seeds` as sample_rollout's),
    with HF generate or, when given, `sampler`; then score the decoded text.
    Returns (rollout, raw scores [B] on CPU, scores [B] on `device` after the missing-EOS penalty)."""
    if sampler is not None:
        rollout = sampler(model, tokenizer, prompts, cfg, group_seeds)
    else:
        with autocast(device, cfg.autocast):
            rollout = sample_rollout(
                model,
                tokenizer,
                prompts,
                max_prompt_tokens=cfg.max_prompt_tokens,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                generation_batch_size=cfg.generation_batch_size,
                group_seeds=group_seeds,
            )
    raw_scores, scores = score_rollout(reward_fn, rollout, cfg.missing_eos_penalty)
    return rollout, raw_scores, scores.to(device)


def rollout_stats(
    rollout: Rollout, raw_scores: torch.Tensor, scores: torch.Tensor, seq_kl: torch.Tensor, entropy: torch.Tensor
) -> dict[str, float]:
    """What every sampling optimizer reports about an iteration's responses (same names in PPO,
    RLOO and GRPO, so the round page charts them alike)."""
    mask = rollout.response_mask.to(entropy.device)
    return {
        "score": float(raw_scores.mean()),
        "penalised_score": float(scores.mean()),
        "kl": float(seq_kl.mean()),
        "entropy": float(masked_mean(entropy, mask)),
        "response_length": float(mask.sum(1).mean()),
        "no_eos_fraction": float((~rollout.has_eos).float().mean()),
    }
