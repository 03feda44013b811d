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


class PackedRows:
    """Several prompts with their completions packed into rows without padding between them
    (`pack_prefix_groups`): ids, positions and attention of shape (R, L), (R, L), (R, L, L), and
    `reads` (N, 2): the [row, column] of each completion's last token, where its reward is read."""

    def __init__(self, ids: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor, reads: torch.Tensor):
        self.ids, self.positions, self.allowed, self.reads = ids, positions, allowed, reads

    @property
    def padded_tokens(self) -> int:
        return int(self.ids.numel())


def pack_prefix_groups(
    groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_id: int, *, row_tokens: int
) -> PackedRows:
    """Lay out (prefix, [suffix, ...]) groups as `prefix suffix_1 suffix_2 ...`, whole groups per
    row, a new row when the next group would pass `row_tokens` (a group longer than that gets a
    row of its own); rows are right-padded to the longest.

    `allowed[r, q, k]` says query q may attend key k: a suffix token sees its own prefix and the
    earlier tokens of its own suffix, never another suffix or group, so every completion is scored
    exactly as if it were alone (prefix tokens see only their prefix, causally). Positions restart
    per group and each suffix continues from its prefix's length, as in the full sequence. A pad
    column attends only to itself, so no attention row is empty (an all-masked row gives NaN).
    Every suffix must be non-empty.
    """
    rows: list[list[tuple[Sequence[int], Sequence[Sequence[int]]]]] = []
    size = 0
    for prefix, suffixes in groups:
        if any(len(s) == 0 for s in suffixes):
            raise ValueError("every suffix needs at least one token (its reward is read at its last token)")
        n = len(prefix) + sum(len(s) for s in suffixes)
        if not rows or size + n > row_tokens:
            rows.append([])
            size = 0
        rows[-1].append((prefix, suffixes))
        size += n
    length = max(sum(len(p) + sum(len(s) for s in ss) for p, ss in row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    # segment: which group a column belongs to (-1: pad); branch: which suffix (-1: the prefix)
    segment = torch.full((len(rows), length), -1, dtype=torch.long)
    branch = torch.full((len(rows), length), -1, dtype=torch.long)
    reads = []
    for r, row in enumerate(rows):
        column = 0
        for g, (prefix, suffixes) in enumerate(row):
            p = len(prefix)
            ids[r, column : column + p] = torch.as_tensor(list(prefix), dtype=torch.long)
            positions[r, column : column + p] = torch.arange(p)
            segment[r, column : column + p] = g
            column += p
            for b, suffix in enumerate(suffixes):
                s = len(suffix)
                ids[r, column : column + s] = torch.as_tensor(list(suffix), dtype=torch.long)
                positions[r, column : column + s] = torch.arange(p, p + s)
                segment[r, column : column + s] = g
                branch[r, column : column + s] = b
                column += s
                reads.append((r, column - 1))
    real = segment >= 0
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    same_group = (segment[:, :, None] == segment[:, None, :]) & real[:, :, None]
    key_visible = (branch[:, None, :] == -1) | (branch[:, :, None] == branch[:, None, :])
    allowed = same_group & key_visible & causal
    allowed |= torch.eye(length, dtype=torch.bool) & ~real[:, :, None]  # pads: themselves only
    return PackedRows(ids, positions, allowed, torch.tensor(reads, dtype=torch.long))
