"""Scoring token sequences with a reward model, and `RewardScorer`: a trained reward model
loaded from its artifact folder, giving normalised rewards for (prompt, completion) pairs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

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


def sequence_classifier(name_or_path: str | os.PathLike, *, dtype: torch.dtype = torch.float32):
    """A one-output AutoModelForSequenceClassification on the backbone at `name_or_path` (a
    model folder or hub id, or an adapter folder such as an SFT adapter), with a fresh score head.

    An adapter is merged into its base first (models.load_causal_lm, chains included) and the
    score head goes on that merged backbone, so the reward model starts from the SFT model
    (InstructGPT). transformers' own loading of an adapter folder leaves it unmerged and frozen:
    a LoRA added on top silently dropped it (the reward model trained on the pre-SFT base), and
    full fine-tuning had no trainable parameter. The model keeps `name_or_path` as its name, so
    a LoRA saved on it names the adapter folder as its base (RewardScorer.load merges that chain).
    """
    if not is_adapter_dir(name_or_path):
        return AutoModelForSequenceClassification.from_pretrained(str(name_or_path), num_labels=1, dtype=dtype)
    causal = load_causal_lm(name_or_path, device="cpu", dtype=dtype)
    config = causal.config
    config.num_labels = 1
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
) -> torch.Tensor:
    """(N,) rewards, read by the classification head at each sequence's last real token.
    Explicit positions make a row score as if it were alone, whichever side is padded."""
    input_ids, attention_mask = pad_token_ids(sequences, pad_id, side=side, device=device)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask), use_cache=False
    ).logits
    return logits[:, 0]


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
) -> torch.Tensor:
    """(N,) float32 CPU rewards for many sequences, batched by length."""
    out = torch.empty(len(sequences), dtype=torch.float32)
    for chunk in token_budget_chunks([len(s) for s in sequences], max_tokens):
        with autocast(device, use_autocast):
            scores = sequence_scores(model, [sequences[i] for i in chunk], pad_id, device)
        out[chunk] = scores.float().cpu()
    return out


class RewardScorer:
    """A reward model ready to score: `scorer.score(prompts, completions)` -> (N,) tensor.

    Rewards are normalised with the mean/std measured on training completions (stored in the
    artifact's card), so a PPO run sees rewards of roughly unit scale regardless of the head.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        mean: float = 0.0,
        std: float = 1.0,
        max_length: int = 512,
        device: torch.device | None = None,
        use_autocast: bool = True,
        max_tokens: int = 8192,
    ):
        pad = stop_tokens(tokenizer).pad  # the one pad rule: never the end-of-turn token (special_tokens.py)
        # The classification head reads the score at the last id that is not its config's pad.
        model.config.pad_token_id = pad
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mean, self.std = float(mean), float(std) if std > 0 else 1.0
        self.max_length = max_length
        self.device = device or next(model.parameters()).device
        self.use_autocast = use_autocast
        self.max_tokens = max_tokens

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        use_autocast: bool = True,
    ) -> RewardScorer:
        path = Path(path)
        device = pick_device(device)
        dtype = dtype or pick_dtype(device)
        tokenizer = load_tokenizer(path)
        if is_adapter_dir(path) and is_adapter_dir(base_of_adapter(path)):
            # a LoRA reward model on an SFT adapter: merge the SFT adapter, then this one
            from peft import PeftModel

            model = sequence_classifier(base_of_adapter(path), dtype=dtype)
            rows = len(tokenizer)
            if rows > model.get_input_embeddings().num_embeddings:
                model.resize_token_embeddings(rows)
            model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
        elif is_adapter_dir(path):
            from peft import AutoPeftModelForSequenceClassification

            model = AutoPeftModelForSequenceClassification.from_pretrained(
                str(path), num_labels=1, dtype=dtype
            ).merge_and_unload()
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype)
        card = read_card(path)
        norm = card.get("reward_normalization", {})
        return cls(
            model.to(device),
            tokenizer,
            mean=norm.get("mean", 0.0),
            std=norm.get("std", 1.0),
            max_length=card.get("config", {}).get("max_length", 512),
            device=device,
            use_autocast=use_autocast,
        )

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean) / self.std

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str], *, normalize: bool = True) -> torch.Tensor:
        """(N,) float32 rewards for prompts[i] answered by completions[i]."""
        sequences = encode_reward_texts(self.tokenizer, prompts, completions, self.max_length)
        return self._score(sequences, normalize)

    def score_texts(self, texts: Sequence[str], *, normalize: bool = True) -> torch.Tensor:
        """(N,) rewards for already formatted texts (see formatting.reward_text)."""
        return self._score(encode_texts(self.tokenizer, texts, self.max_length), normalize)

    def _score(self, sequences: list[list[int]], normalize: bool) -> torch.Tensor:
        raw = score_sequences(
            self.model,
            sequences,
            self.tokenizer.pad_token_id,
            self.device,
            max_tokens=self.max_tokens,
            use_autocast=self.use_autocast,
        )
        return self.normalize(raw) if normalize else raw
