"""Demonstrations for supervised fine-tuning: reading them, the loss mask, and batching.

An example is a conversation whose last turn is the assistant's answer, {"messages": [...]}
(TRL's conversational form); TRL's prompt/completion form converts to it (`as_example`).

The loss mask. The model text is the one the other stages use (formatting.reward_text: the
tokenizer's chat template, or plain text with EOS, ending at the end-of-turn token from
special_tokens.py), so the model learns to end its answer with the token generation stops at.
The answer's tokens are those after the rendering of the conversation without its answer plus
the assistant opener (formatting.prompt_text): system, user and template tokens, and earlier
assistant turns, get label -100. Only the last turn trains: it is the demonstration, earlier
assistant turns are context somebody else wrote.

Batching. Examples are packed whole, back to back, into rows of up to max_length tokens with a
block attention mask and positions restarting per example (batching.pack_prefix_groups), so no
token attends to another example and nothing is padded except each step's last column or so.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worker.ml.batching import pack_prefix_groups, pad_token_ids
from worker.ml.data import prompt_key, read_jsonl
from worker.ml.formatting import has_chat_template, prompt_text, reward_text

IGNORE = -100
"""Label of a token that carries no loss (torch's cross_entropy ignore_index)."""
Messages = list[dict[str, str]]


def _messages(value: Any, where: str, name: str) -> Messages:
    if not (isinstance(value, list) and value):
        raise ValueError(f"{where}: {name} must be a non-empty list of {{role, content}} messages")
    for message in value:
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
            raise ValueError(f"{where}: every message in {name} needs a string role")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"{where}: every message in {name} needs a string content")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def as_example(record: Any, where: str = "example") -> Messages:
    """One demonstration as messages ending with the assistant's answer, from TRL's
    conversational form {"messages": [...]} or its prompt/completion form {"prompt": str |
    [messages], "completion": str | [one assistant message]}. Errors name `where`."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with messages, or prompt and completion")
    if "messages" in record:
        messages = _messages(record["messages"], where, "messages")
    elif "prompt" in record and "completion" in record:
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        messages = _messages(prompt, where, "prompt") + _messages(completion, where, "completion")
    else:
        raise ValueError(f"{where}: needs messages, or prompt and completion")
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"{where}: the last message must be the assistant's answer, not {messages[-1]['role']!r}")
    if len(messages) < 2:
        raise ValueError(f"{where}: an answer needs a prompt before it")
    return messages


def read_examples(path: str | Path) -> list[Messages]:
    """Demonstrations from JSONL (either TRL form per line); errors name the line."""
    return read_jsonl(path, as_example)


@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]
    """Per token: the id it is trained to be (answer tokens) or IGNORE; aligned with ids (the
    shift to next-token prediction happens in the loss)."""

    @property
    def answer_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def answer_start(tokenizer, prompt: Messages, text: str, ids: list[int], add_special: bool) -> int:
    """Index of the answer's first token in `ids` (the tokens of `text`)."""
    opener = prompt_text(tokenizer, prompt)
    if not text.startswith(opener):
        raise ValueError(
            "tokenizer: its chat template renders a conversation with its answer differently from the "
            "conversation alone (plus the assistant opener), so the answer's tokens cannot be found"
        )
    prompt_ids = tokenizer(opener, add_special_tokens=add_special)["input_ids"]
    if ids[: len(prompt_ids)] == prompt_ids:
        return len(prompt_ids)
    # A merge across the boundary (BPE): count the tokens that start inside the opener.
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "tokenizer: the answer's first token merges with the prompt and a slow tokenizer has no offsets"
        )
    offsets = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)["offset_mapping"]
    return sum(1 for start, _ in offsets if start < len(opener))


def encode_example(tokenizer, messages: Messages, max_length: int) -> Encoded | None:
    """Token ids and labels of one demonstration, cut to its first max_length tokens; None when
    the cut leaves no answer token."""
    prompt, answer = messages[:-1], messages[-1]["content"]
    text = reward_text(tokenizer, prompt, answer)
    add_special = not has_chat_template(tokenizer)  # templated text spells out its special tokens
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    start = answer_start(tokenizer, prompt, text, ids, add_special)
    labels = [IGNORE] * start + ids[start:]
    ids, labels = ids[:max_length], labels[:max_length]
    encoded = Encoded(ids, labels)
    return encoded if encoded.answer_tokens else None


def split_examples(examples: Sequence[Messages], fraction: float, seed: int) -> tuple[list[Messages], list[Messages]]:
    """(train, held out), whole prompts to one side (several answers to one prompt stay
    together); with fraction > 0 and two prompts or more, at least one is held out."""
    keys = sorted({prompt_key(m[:-1]) for m in examples})
    random.Random(seed).shuffle(keys)
    n = round(len(keys) * fraction)
    if fraction > 0 and len(keys) >= 2:
        n = min(max(n, 1), len(keys) - 1)
    held = set(keys[:n])
    train = [m for m in examples if prompt_key(m[:-1]) not in held]
    return train, [m for m in examples if prompt_key(m[:-1]) in held]


def plan_steps(
    lengths: Sequence[int], batch_tokens: int, rng: random.Random | None, *, padded: bool
) -> list[list[int]]:
    """Example indices per optimizer step. Packed: a shuffled order (None: as given) cut into
    steps of at most batch_tokens real tokens. Padded: examples of similar length together, so
    that steps of at most batch_tokens padded tokens waste little; step order shuffled."""
    order = list(range(len(lengths)))
    if padded:
        order.sort(key=lambda i: (lengths[i], rng.random() if rng else i))
    elif rng is not None:
        rng.shuffle(order)
    steps: list[list[int]] = []
    size = longest = 0
    for i in order:
        cost = max(longest, lengths[i]) * (len(steps[-1]) + 1) if padded and steps else lengths[i] + size
        if not steps or cost > batch_tokens:
            steps.append([])
            size = longest = 0
        steps[-1].append(i)
        size += lengths[i]
        longest = max(longest, lengths[i])
    if padded and rng is not None:
        rng.shuffle(steps)
    return steps


def first_fit_rows(lengths: Sequence[int], row_tokens: int) -> list[int]:
    """Positions 0..n-1 reordered so rows filled in that order hold first-fit-decreasing bins:
    fewer, fuller rows than the arrival order gives."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([])
            room.append(row_tokens)
            slot = len(rows) - 1
        rows[slot].append(i)
        room[slot] -= lengths[i]
    return [i for row in rows for i in row]


@dataclass
class Batch:
    ids: torch.Tensor
    """(R, L) token ids."""
    labels: torch.Tensor
    """(R, L) the id each token is trained to be, IGNORE elsewhere (pads included)."""
    attention: torch.Tensor
    """(R, L, L) bool block mask (packed) or (R, L) 0/1 mask (padded)."""
    positions: torch.Tensor | None
    """(R, L) positions restarting per example (packed); None (padded: the model's own)."""
    real_tokens: int
    """Tokens of the examples (the rest of R x L is padding)."""


def packed_batch(examples: Sequence[Encoded], pad_id: int, row_tokens: int) -> Batch:
    """The examples back to back in rows of up to row_tokens (first-fit decreasing), each
    attending only to itself, positions restarting at 0 (batching.pack_prefix_groups). The
    rows carry flat token indices through the packer, so ids and labels share its layout."""
    order = first_fit_rows([len(e.ids) for e in examples], row_tokens)
    starts, offset = [], 0
    for i in order:
        starts.append(offset)
        offset += len(examples[i].ids)
    groups: list[tuple[Sequence[int], list[Sequence[int]]]] = [
        (range(s, s + len(examples[i].ids)), []) for s, i in zip(starts, order, strict=True)
    ]
    packed = pack_prefix_groups(groups, -1, row_tokens=row_tokens)
    flat_ids = torch.tensor([t for i in order for t in examples[i].ids] + [pad_id], dtype=torch.long)
    flat_labels = torch.tensor([t for i in order for t in examples[i].labels] + [IGNORE], dtype=torch.long)
    index = torch.where(packed.ids < 0, len(flat_ids) - 1, packed.ids)  # pads point at the trailing pad entry
    return Batch(flat_ids[index], flat_labels[index], packed.allowed, packed.positions, offset)


def padded_batch(examples: Sequence[Encoded], pad_id: int) -> Batch:
    """One right-padded row per example (prompt tuning, or a model that cannot take a block mask)."""
    ids, mask = pad_token_ids([e.ids for e in examples], pad_id, side="right")
    labels, _ = pad_token_ids([e.labels for e in examples], IGNORE, side="right")
    return Batch(ids, labels, mask, None, int(mask.sum()))
