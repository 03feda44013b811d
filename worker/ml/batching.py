"""Padding token id lists into one batch: the single place that builds ids + attention mask.

Left padding puts every sequence's last token in the last column (what batched generation
and a shared key/value prefix need); right padding starts every sequence at column 0 (what a
reward model reading "the last real token" and suffixes after a cached prefix need). Either
way, pass `position_ids(mask)` to the model: its default positions count pad columns too,
which shifts left-padded rows on models with absolute position embeddings (GPT-2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch


def pad_token_ids(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    *,
    side: Literal["left", "right"],
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (N, longest) int64, padded to this batch's longest.

    Pad positions hold `pad_id` in the ids and 0 in the mask; real tokens have mask 1. An
    empty sequence becomes an all-pad row. Tensors are built on the CPU and moved to `device`
    when one is given (otherwise they stay on the CPU).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")
    longest = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        if n == 0:
            continue  # (a left slice `-0:` would cover the whole row)
        span = slice(longest - n, longest) if side == "left" else slice(0, n)
        ids[row, span] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    if device is not None:
        ids, mask = ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
    return ids, mask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(N, L) positions counted from each row's first real token (0, 1, ...), whichever side is
    padded; pad columns get 0 (the mask hides them). Matches what `generate` assigns."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
