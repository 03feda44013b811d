"""Automatic metrics of a model version on a fixed eval set, and the length-controlled reward
win rate of one version against another (docs/evaluation-metrics.md).

Plain library: texts, token counts, scores and models in; numbers out. The loop
(worker/loop/evaluation.py) loads the rows and stores the results.

- distinct-n (Li et al. 2016): unique word n-grams / all word n-grams over every answer of a
  version (words = whitespace split, lower-cased), so repetition across answers counts too.
- mean tokens and EOS share: from the generation's own token counts and finish reasons.
- KL to the reference: per answer, the sum over its response tokens of
  log p_policy(token) − log p_ref(token), both at the sampling temperature (as PPO computes it),
  on the tokens the policy sampled; a Monte-Carlo estimate of KL(policy ‖ ref) per answer.
- length-controlled win rate (AlpacaEval LC, Dubois et al. 2024): per prompt y = 1 when the
  reward model scores B's answer above A's, 0 below, 0.5 on an exact tie (hard labels, not
  σ(r_B − r_A): a win rate counts wins); a logistic regression
  logit P(y) = θ + φ · tanh(Δlen / sd(Δlen)), Δlen = len_B − len_A in tokens; the LC win rate is
  σ(θ), the win rate at equal length. A 95% interval from a seeded bootstrap over prompts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch

from worker.ml.config import GenerationConfig
from worker.ml.data import Prompt
from worker.ml.formatting import encode_texts, prompt_text
from worker.ml.generate import Completion, generate
from worker.ml.models import Progress, load_causal_lm, load_tokenizer, match_embeddings, pick_device
from worker.ml.ppo_math import logprobs_of_labels
from worker.ml.special_tokens import stop_tokens

RIDGE = 1e-3
"""L2 penalty (per prompt) on θ and φ: keeps the fit finite when one side wins every prompt of a
length bucket (separable data); moves a non-separable fit by well under a point."""
K = TypeVar("K")
BOOTSTRAP = 1000
"""Bootstrap resamples of the prompts for the 95% intervals."""


# ---- answers of one version ---------------------------------------------------------------------


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over all `texts` (0.0 when there are none)."""
    total, seen = 0, set()
    for text in texts:
        words = text.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for fewer than two values)."""
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def length_stats(token_counts: Sequence[int], finish_reasons: Sequence[str]) -> dict[str, float]:
    """mean_tokens and eos_share (answers that ended by themselves, not at the length budget)."""
    n = len(token_counts)
    return {
        "mean_tokens": sum(token_counts) / n if n else 0.0,
        "eos_share": sum(reason == "eos" for reason in finish_reasons) / n if n else 0.0,
    }


def text_metrics(texts: Sequence[str], token_counts: Sequence[int], finish_reasons: Sequence[str]) -> dict[str, float]:
    return {
        **length_stats(token_counts, finish_reasons),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
    }


def answer_config(
    *, temperature: float, top_p: float, max_new_tokens: int, seed: int, device: str | None = None
) -> GenerationConfig:
    """Sampling of the eval answers: one per prompt, the round's temperature, top-p and budget,
    a fixed seed."""
    return GenerationConfig(
        k=1, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, device=device
    )


def generate_answers(
    model: str | os.PathLike, prompts: Sequence[Prompt], cfg: GenerationConfig, on_progress: Progress | None = None
) -> list[Completion]:
    """One answer per prompt, in prompt order (generate.generate with `answer_config`)."""
    return [answers[0] for answers in generate(model, prompts, cfg, on_progress)]


# ---- KL to the reference ------------------------------------------------------------------------


def encode_answers(
    tokenizer, prompts: Sequence[Prompt], answers: Sequence[str], ended: Sequence[bool], *, max_prompt_tokens: int
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) per answer, as the policy saw and wrote them: the generation
    prompt, then the answer's tokens and, when it ended by itself, the end-of-turn token (PPO's
    mask counts the first stop token too)."""
    end = stop_tokens(tokenizer).end_of_turn
    prompt_ids = encode_texts(tokenizer, [prompt_text(tokenizer, p) for p in prompts], max_prompt_tokens)
    out = []
    for query, answer, finished in zip(prompt_ids, answers, ended, strict=True):
        response = tokenizer(answer, add_special_tokens=False)["input_ids"] if answer else []
        out.append((query, [*response, end] if finished else response))
    return out


@torch.no_grad()
def answer_logprobs(
    model, pairs: Sequence[tuple[list[int], list[int]]], *, pad_id: int, temperature: float, batch_size: int = 8
) -> list[float]:
    """Per (prompt ids, response ids): the sum of log softmax(logits / T) of the response tokens."""
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        width = max(len(q) + len(r) for q, r in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (query, response) in enumerate(chunk):  # right-padded: positions start at 0
            seq = query + response
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()
        logp = logprobs_of_labels(logits[:, :-1] / temperature, ids[:, 1:].to(device))  # [b, width - 1]
        for row, (query, response) in enumerate(chunk):
            # token t is predicted at position t - 1
            out.append(float(logp[row, len(query) - 1 : len(query) + len(response) - 1].sum()) if response else 0.0)
    return out


def kl_per_answer(policy_logprobs: Sequence[float], reference_logprobs: Sequence[float]) -> list[float]:
    return [p - r for p, r in zip(policy_logprobs, reference_logprobs, strict=True)]


def kl_to_reference(
    policy: str | os.PathLike,
    reference: str | os.PathLike,
    prompts: Sequence[Prompt],
    answers: Sequence[str],
    ended: Sequence[bool],
    *,
    temperature: float,
    max_prompt_tokens: int = 512,
    device: str | None = None,
) -> list[float]:
    """KL estimate per answer of the model at `policy` (a folder or adapter folder, loaded with
    its chain merged) against the one at `reference`, on answers `policy` sampled. The same
    folder on both sides gives exactly 0."""
    return kl_to_reference_many(
        {0: policy},
        {0: (prompts, answers, ended)},
        reference,
        temperature=temperature,
        max_prompt_tokens=max_prompt_tokens,
        device=device,
    )[0]


def _same_folder(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return str(a) == str(b) or (os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))


def kl_to_reference_many(
    policies: Mapping[K, str | os.PathLike],
    answers: Mapping[K, tuple[Sequence[Prompt], Sequence[str], Sequence[bool]]],
    reference: str | os.PathLike,
    *,
    temperature: float,
    max_prompt_tokens: int = 512,
    device: str | None = None,
) -> dict[K, list[float]]:
    """`kl_to_reference` for several versions against one reference: key -> KL per answer, for
    `answers[key]` = (prompts, answers, ended). The reference loads once and each policy once,
    one model in memory at a time (loading is what costs on a real model)."""
    out: dict[K, list[float]] = {key: [0.0] * len(answers[key][1]) for key in policies}
    todo = [key for key, path in policies.items() if answers[key][1] and not _same_folder(path, reference)]
    if not todo:
        return out
    tokenizer = load_tokenizer(reference)
    pairs = {key: encode_answers(tokenizer, *answers[key], max_prompt_tokens=max_prompt_tokens) for key in todo}
    where = pick_device(device)
    # float32 on CPU: a merged LoRA delta in bf16 is partly rounded away, biasing small KLs.
    dtype = torch.float32 if where.type == "cpu" else None

    def logprobs(path: str | os.PathLike, keys: Sequence[K]) -> dict[K, list[float]]:
        model = load_causal_lm(path, device=where, dtype=dtype)
        match_embeddings(model, tokenizer)
        pad = tokenizer.pad_token_id
        return {key: answer_logprobs(model, pairs[key], pad_id=pad, temperature=temperature) for key in keys}

    ref = logprobs(reference, todo)
    for key in todo:
        out[key] = kl_per_answer(logprobs(policies[key], [key])[key], ref[key])
    return out


def rm_scores(
    reward_path: str | os.PathLike, prompts: Sequence[Prompt], answers: Sequence[str], *, device: str | None = None
) -> list[float]:
    """The reward model's normalised scores (scorer.RewardScorer, as PPO sees them)."""
    if not answers:
        return []
    from worker.ml.scorer import RewardScorer

    scorer = RewardScorer.load(reward_path, device=device)
    return scorer.score(list(prompts), list(answers)).tolist()


# ---- length-controlled win rate -----------------------------------------------------------------


def _fit(y: torch.Tensor, x: torch.Tensor, *, iterations: int = 50) -> torch.Tensor:
    """Ridge logistic regression of y on [1, x] by Newton's method, batched over rows.
    y, x: [R, n] (fractional y allowed) → [R, 2] (θ, φ)."""
    rows, n = y.shape
    design = torch.stack([torch.ones_like(x), x], dim=-1)  # [R, n, 2]
    beta = torch.zeros(rows, 2, dtype=torch.float64)
    ridge = RIDGE * n * torch.eye(2, dtype=torch.float64)
    for _ in range(iterations):
        p = torch.sigmoid((design @ beta.unsqueeze(-1)).squeeze(-1))  # [R, n]
        grad = (design * (y - p).unsqueeze(-1)).sum(1) - beta @ ridge  # [R, 2]
        weights = (p * (1 - p)).unsqueeze(-1).unsqueeze(-1)  # [R, n, 1, 1]
        hessian = (weights * design.unsqueeze(-1) * design.unsqueeze(-2)).sum(1) + ridge  # [R, 2, 2]
        step = torch.linalg.solve(hessian, grad.unsqueeze(-1)).squeeze(-1)
        beta = beta + step
        if float(step.abs().max()) < 1e-10:
            break
    return beta


def win_labels(scores_a: Sequence[float], scores_b: Sequence[float]) -> list[float]:
    """1 where B scored higher, 0 where lower, 0.5 on an exact tie."""
    return [1.0 if b > a else 0.0 if b < a else 0.5 for a, b in zip(scores_a, scores_b, strict=True)]


def lc_win_rate(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    lengths_a: Sequence[float],
    lengths_b: Sequence[float],
    *,
    seed: int = 0,
    bootstrap: int = BOOTSTRAP,
) -> dict[str, Any]:
    """B's reward win rate against A over paired prompts, raw and length-controlled, with 95%
    bootstrap intervals (percentile, prompts resampled with `seed`)."""
    n = len(scores_a)
    if not (n == len(scores_b) == len(lengths_a) == len(lengths_b)):
        raise ValueError("scores and lengths: one per prompt for both versions")
    if n == 0:
        raise ValueError("scores: need at least one paired prompt")
    y = torch.tensor(win_labels(scores_a, scores_b), dtype=torch.float64)
    delta = torch.tensor(lengths_b, dtype=torch.float64) - torch.tensor(lengths_a, dtype=torch.float64)
    sd = float(delta.std()) if n > 1 else 0.0
    # The length scale is fixed from the full sample, so resamples fit the same feature.
    x = torch.tanh(delta / sd) if sd > 0 else torch.zeros_like(delta)
    theta, phi = _fit(y.unsqueeze(0), x.unsqueeze(0))[0].tolist()

    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, n, (bootstrap, n), generator=generator)
    raw_boot = y[index].mean(1)
    lc_boot = torch.sigmoid(_fit(y[index], x[index])[:, 0])
    return {
        "prompts": n,
        "win_rate": float(y.mean()),
        "win_rate_ci": _interval(raw_boot),
        "lc_win_rate": float(torch.sigmoid(torch.tensor(theta))),
        "lc_win_rate_ci": _interval(lc_boot),
        "length_coef": phi,
        "ties": int((y == 0.5).sum()),
        "mean_length_delta": float(delta.mean()),
        "length_sd": sd,
    }


def _interval(samples: torch.Tensor) -> list[float]:
    low, high = torch.quantile(samples, torch.tensor([0.025, 0.975], dtype=samples.dtype)).tolist()
    return [low, high]
