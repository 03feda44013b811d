"""Scoring token sequences with a reward model, and `RewardScorer`: a trained reward model
loaded from its artifact folder, giving normalised rewards for (prompt, completion) pairs.

A multi-aspect reward model (RewardConfig.aspects) has one score head per aspect; its scorer
combines the aspects' normalised scores with weights (the model's stored ones, or the caller's)
into the one reward PPO and RLOO optimise (docs/feedback-training.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForSequenceClassification

from worker.ml.batching import pad_token_ids, position_ids
from worker.ml.data import Prompt
from worker.ml.formatting import encode_reward_texts, encode_texts
from worker.ml.models import (
    autocast,
    base_of_adapter,
    is_adapter_dir,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    pick_dtype,
    read_card,
)
from worker.ml.special_tokens import stop_tokens


def sequence_classifier(name_or_path: str | os.PathLike, *, dtype: torch.dtype = torch.float32, num_labels: int = 1):
    """An AutoModelForSequenceClassification with `num_labels` outputs (one per aspect; 1 by
    default) on the backbone at `name_or_path` (a model folder or hub id, or an adapter folder
    such as an SFT adapter), with a fresh score head.

    An adapter is merged into its base first (models.load_causal_lm, chains included) and the
    score head goes on that merged backbone, so the reward model starts from the SFT model
    (InstructGPT). transformers' own loading of an adapter folder leaves it unmerged and frozen:
    a LoRA added on top silently dropped it (the reward model trained on the pre-SFT base), and
    full fine-tuning had no trainable parameter. The model keeps `name_or_path` as its name, so
    a LoRA saved on it names the adapter folder as its base (RewardScorer.load merges that chain).
    """
    if not is_adapter_dir(name_or_path):
        return AutoModelForSequenceClassification.from_pretrained(str(name_or_path), num_labels=num_labels, dtype=dtype)
    causal = load_causal_lm(name_or_path, device="cpu", dtype=dtype)
    config = causal.config
    config.num_labels = num_labels
    config.name_or_path = str(name_or_path)
    model = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
    model.base_model.load_state_dict(causal.base_model.state_dict())
    model.name_or_path = str(name_or_path)
    return model.eval()


def sequence_scores(
    model,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device,
    *,
    side: Literal["left", "right"] = "right",
    all_heads: bool = False,
) -> torch.Tensor:
    """(N,) rewards, read by the classification head at each sequence's last real token; with
    all_heads, (N, heads): every output of a multi-aspect head. Explicit positions make a row
    score as if it were alone, whichever side is padded."""
    input_ids, attention_mask = pad_token_ids(sequences, pad_id, side=side, device=device)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask), use_cache=False
    ).logits
    return logits if all_heads else logits[:, 0]


def token_budget_chunks(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped so each group's padded size (count x longest) stays within max_tokens;
    sorted by length first so padding is small. Every group has at least one index."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # lengths ascend, so the newcomer is the longest of the group
        if current and (len(current) + 1) * lengths[index] > max_tokens:
            chunks.append(current)
            current = []
        current.append(index)
    if current:
        chunks.append(current)
    return chunks


@torch.no_grad()
def score_sequences(
    model,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device,
    *,
    max_tokens: int = 8192,
    use_autocast: bool = True,
    all_heads: bool = False,
) -> torch.Tensor:
    """(N,) float32 CPU rewards for many sequences, batched by length; with all_heads
    (N, heads), one column per output of the score head."""
    shape = (len(sequences), head_count(model)) if all_heads else (len(sequences),)
    out = torch.empty(shape, dtype=torch.float32)
    for chunk in token_budget_chunks([len(s) for s in sequences], max_tokens):
        with autocast(device, use_autocast):
            scores = sequence_scores(model, [sequences[i] for i in chunk], pad_id, device, all_heads=all_heads)
        out[chunk] = scores.float().cpu()
    return out


def aspect_normalization(raw: torch.Tensor | None, n: int) -> dict[str, Any]:
    """A multi-aspect model's reward_normalization (its card) from raw (N, aspects) scores of
    training completions: per aspect the mean and std, and the aspects' correlation, from which
    RewardScorer.combine scales any weighted sum to unit std. None (too few scores): identity."""
    if raw is None:
        return {"mean": [0.0] * n, "std": [1.0] * n, "correlation": torch.eye(n).tolist()}
    std = raw.std(dim=0).clamp(min=1e-6)
    z = (raw - raw.mean(dim=0)) / std
    correlation = (z.T @ z) / (len(z) - 1)  # (aspects, aspects); a constant head: 0 off the diagonal
    correlation.fill_diagonal_(1.0)
    return {"mean": raw.mean(dim=0).tolist(), "std": std.tolist(), "correlation": correlation.tolist()}


def combined_stats(normalization: Mapping[str, Any], weights: Mapping[str, float]) -> tuple[float, float]:
    """Mean and std over training completions of the weighted sum of raw aspect scores
    (w'mean, sqrt(w'Sw), S the covariance): a multi-aspect model's reward_mean / reward_std."""
    w = torch.tensor(list(weights.values()), dtype=torch.float32)
    std = torch.tensor(normalization["std"])
    covariance = std[:, None] * torch.tensor(normalization["correlation"]) * std[None, :]
    return float(w @ torch.tensor(normalization["mean"])), float((w @ covariance @ w).clamp(min=1e-12).sqrt())


def head_count(model) -> int:
    """Outputs of the score head: 1, or one per aspect of a multi-aspect reward model."""
    return int(model.config.num_labels)


class RewardScorer:
    """A reward model ready to score: `scorer.score(prompts, completions)` -> (N,) tensor.

    Rewards are normalised with the mean/std measured on training completions (stored in the
    artifact's card), so a PPO run sees rewards of roughly unit scale regardless of the head.

    A multi-aspect model (`aspects` non-empty) normalises each aspect's score the same way,
    z_a = (raw_a - mean_a) / std_a, and `score` returns the weighted sum of the z_a divided by
    its standard deviation on the training completions, sqrt(w' C w) with C the aspects'
    correlation there (stored in the card): unit scale again, whatever the weights.
    `score_aspects` gives the per-aspect scores.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
        max_length: int = 512,
        device: torch.device | None = None,
        use_autocast: bool = True,
        max_tokens: int = 8192,
        aspects: Sequence[str] = (),
        weights: Mapping[str, float] | None = None,
        correlation: Sequence[Sequence[float]] | None = None,
    ):
        pad = stop_tokens(tokenizer).pad  # the one pad rule: never the end-of-turn token (special_tokens.py)
        # The classification head reads the score at the last id that is not its config's pad.
        model.config.pad_token_id = pad
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = device or next(model.parameters()).device
        self.use_autocast = use_autocast
        self.max_tokens = max_tokens
        self.aspects = tuple(aspects)
        self.mean: float | torch.Tensor
        self.std: float | torch.Tensor
        if not self.aspects:
            self.mean, self.std = float(mean), float(std) if std > 0 else 1.0  # type: ignore[operator,arg-type]
            return
        n = len(self.aspects)
        if head_count(model) != n:
            named = ", ".join(self.aspects)
            raise ValueError(f"aspects: {n} named ({named}) but the model has {head_count(model)} heads")
        self.mean = _per_aspect(mean, n, "mean")
        self.std = _per_aspect(std, n, "std").clamp(min=1e-6)
        self.correlation = torch.eye(n) if correlation is None else torch.tensor(correlation, dtype=torch.float32)
        self.set_weights(weights if weights is not None else dict.fromkeys(self.aspects, 1.0))

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Weights that combine the aspects into `score`: {aspect: weight >= 0}; an aspect left
        out weighs 0; normalised to sum 1."""
        from worker.ml.feedback import normalized_weights

        unknown = sorted(set(weights) - set(self.aspects))
        if unknown:
            raise ValueError(f"weights: {', '.join(unknown)} not among the model's aspects ({', '.join(self.aspects)})")
        norm = normalized_weights(weights)
        self.weights = {aspect: norm.get(aspect, 0.0) for aspect in self.aspects}
        self._w = torch.tensor([self.weights[a] for a in self.aspects], dtype=torch.float32)  # (A,)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        use_autocast: bool = True,
        weights: Mapping[str, float] | None = None,
    ) -> RewardScorer:
        """The artifact at `path`; a multi-aspect model combines its aspects with `weights`
        (default: the weights stored with it)."""
        path = Path(path)
        device = pick_device(device)
        dtype = dtype or pick_dtype(device)
        tokenizer = load_tokenizer(path)
        card = read_card(path)
        aspects = tuple(card.get("aspects", ()))
        num_labels = max(1, len(aspects))
        if is_adapter_dir(path) and is_adapter_dir(base_of_adapter(path)):
            # a LoRA reward model on an SFT adapter: merge the SFT adapter, then this one
            from peft import PeftModel

            model = sequence_classifier(base_of_adapter(path), dtype=dtype, num_labels=num_labels)
            rows = len(tokenizer)
            if rows > model.get_input_embeddings().num_embeddings:
                model.resize_token_embeddings(rows)
            model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
        elif is_adapter_dir(path):
            from peft import AutoPeftModelForSequenceClassification

            model = AutoPeftModelForSequenceClassification.from_pretrained(
                str(path), num_labels=num_labels, dtype=dtype
            ).merge_and_unload()
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype)
        norm = card.get("reward_normalization", {})
        return cls(
            model.to(device),
            tokenizer,
            mean=norm.get("mean", 0.0),
            std=norm.get("std", 1.0),
            max_length=card.get("config", {}).get("max_length", 512),
            device=device,
            use_autocast=use_autocast,
            aspects=aspects,
            weights=weights if weights is not None else card.get("aspect_weights"),
            correlation=norm.get("correlation"),
        )

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw scores, (N,) or (N, aspects), shifted and scaled by the training statistics."""
        return (raw - self.mean) / self.std

    def combine(self, per_aspect: torch.Tensor, *, normalized: bool = True) -> torch.Tensor:
        """(N, aspects) -> (N,): the weighted sum; of normalised scores, divided by its standard
        deviation on the training completions (sqrt(w' C w)), so the reward has unit scale."""
        combined = per_aspect @ self._w
        if normalized:
            combined = combined / (self._w @ self.correlation @ self._w).clamp(min=1e-12).sqrt()
        return combined

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str], *, normalize: bool = True) -> torch.Tensor:
        """(N,) float32 rewards for prompts[i] answered by completions[i] (a multi-aspect model:
        its aspects combined with the scorer's weights; raw: the weighted sum of raw scores)."""
        sequences = encode_reward_texts(self.tokenizer, prompts, completions, self.max_length)
        return self._score(sequences, normalize)

    def score_aspects(
        self, prompts: Sequence[Prompt], completions: Sequence[str], *, normalize: bool = True
    ) -> torch.Tensor:
        """(N, aspects) float32 scores of a multi-aspect model, columns in `self.aspects` order."""
        if not self.aspects:
            raise ValueError("score_aspects: this reward model has one head and no aspects; use score")
        sequences = encode_reward_texts(self.tokenizer, prompts, completions, self.max_length)
        raw = self._raw(sequences)
        return self.normalize(raw) if normalize else raw

    def score_texts(self, texts: Sequence[str], *, normalize: bool = True) -> torch.Tensor:
        """(N,) rewards for already formatted texts (see formatting.reward_text)."""
        return self._score(encode_texts(self.tokenizer, texts, self.max_length), normalize)

    def _raw(self, sequences: list[list[int]]) -> torch.Tensor:
        return score_sequences(
            self.model,
            sequences,
            self.tokenizer.pad_token_id,
            self.device,
            max_tokens=self.max_tokens,
            use_autocast=self.use_autocast,
            all_heads=bool(self.aspects),
        )

    def _score(self, sequences: list[list[int]], normalize: bool) -> torch.Tensor:
        raw = self._raw(sequences)
        if self.aspects:
            return self.combine(self.normalize(raw) if normalize else raw, normalized=normalize)
        return self.normalize(raw) if normalize else raw


def _per_aspect(value: float | Sequence[float], n: int, name: str) -> torch.Tensor:
    values = [float(value)] * n if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} values for {n} aspects")
    return torch.tensor(values, dtype=torch.float32)
