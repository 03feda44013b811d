"""A reward model's data as token ids and its forward over ranked sets: each ranking's K
completions tokenised once (EncodedSet), batched by length, scored in one forward with the
prompt shared (forward_sets), and laid out as (scores, levels) rows for the losses (assemble).
Split from reward.py, which trains and evaluates on these."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from worker.ml.data import RankedSet
from worker.ml.formatting import encode_reward_texts
from worker.ml.scorer import head_count, sequence_scores
from worker.ml.shared_prefix import (
    common_prefix_len,
    packed_scores,
    prefix_shared_scores,
    supports_packing,
    supports_prefix_sharing,
)
from worker.ml.special_tokens import stop_tokens


class EncodedSet:
    """A RankedSet as token ids: sequences (K lists) and levels (rows, K): one row per ranking,
    or for a multi-aspect model one per (ranking, aspect) ranked."""

    def __init__(
        self, sequences: list[list[int]], levels: torch.Tensor, n_rankings: int, heads: torch.Tensor | None = None
    ):
        self.sequences, self.levels, self.n_rankings = sequences, levels, n_rankings
        self.heads = heads if heads is not None else torch.zeros(levels.shape[0], dtype=torch.long)
        """(rows,) the score head that reads each row of levels: its aspect's (0 with one head)."""
        self.longest = max(len(s) for s in sequences)
        self.prefix_len = common_prefix_len(sequences)
        """Tokens the K sequences share (the prompt), forwarded once when prefixes are shared."""

    def cost(self, share_prefix: bool) -> int:
        """Tokens this set adds to a forward pass: its prompt once and each completion's own
        tokens when prefixes are shared (packed, no padding), else K sequences padded alike."""
        if share_prefix:
            return self.prefix_len + sum(len(s) - self.prefix_len for s in self.sequences)
        return self.longest * len(self.sequences)


def encode_sets(tokenizer, sets: Sequence[RankedSet], max_length: int, aspects: Sequence[str] = ()) -> list[EncodedSet]:
    """Tokenise each completion once; completions nobody ranked are dropped, and so are sets
    with none ranked. Rows: each set's overall rankings, or with `aspects` (a multi-aspect
    model) its rankings of each of those aspects, read by that aspect's head. Refuses a
    tokenizer whose pad is the end-of-turn token (special_tokens.stop_tokens)."""
    stop_tokens(tokenizer)
    encoded = []
    for ranked in sets:
        if aspects:
            rows = [(h, row) for h, aspect in enumerate(aspects) for row in ranked.aspect_levels.get(aspect, [])]
        else:
            rows = [(0, row) for row in ranked.levels]
        used = [k for k in range(len(ranked.completions)) if any(row[k] >= 0 for _, row in rows)]
        if not used:
            continue
        sequences = encode_reward_texts(
            tokenizer, [ranked.prompt] * len(used), [ranked.completions[k] for k in used], max_length
        )
        levels = torch.tensor([[row[k] for k in used] for _, row in rows], dtype=torch.long)
        heads = torch.tensor([h for h, _ in rows], dtype=torch.long)
        encoded.append(EncodedSet(sequences, levels, len(ranked.levels), heads))
    return encoded


def batches_by_length(sets: Sequence[EncodedSet], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices of sets, bucketed so each batch holds similar lengths; batch order shuffled."""
    order = sorted(range(len(sets)), key=lambda i: (sets[i].longest, rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def assemble(flat: torch.Tensor, sets: Sequence[EncodedSet]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of all completions of `sets` (flat (N,), in order; or (N, heads) from a
    multi-aspect head) -> (scores, levels), both (rows, K_max). A task ranked by several
    labelers gives one row per ranking, sharing its scores; a row takes its head's column.
    Padding slots have level -1 (their score is never used)."""
    k_max = max(len(s.sequences) for s in sets)
    index_rows, level_rows, offset = [], [], 0
    for s in sets:
        k = len(s.sequences)
        index = torch.arange(offset, offset + k).expand(s.levels.shape[0], k)
        index_rows.append(torch.nn.functional.pad(index, (0, k_max - k)))
        level_rows.append(torch.nn.functional.pad(s.levels, (0, k_max - k), value=-1))
        offset += k
    index = torch.cat(index_rows).to(flat.device)
    levels = torch.cat(level_rows).to(flat.device)
    if flat.dim() == 1:
        return flat[index], levels
    heads = torch.cat([s.heads for s in sets]).to(flat.device)  # (rows,)
    return flat[index, heads[:, None]], levels


def forward_sets(
    model,
    sets: Sequence[EncodedSet],
    pad_id: int,
    device: torch.device,
    share_prefix: bool = True,
    *,
    packed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every completion of `sets` once -> assemble()'s (scores, levels).
    With share_prefix, each set's common prompt is forwarded once (shared_prefix.py): packed
    with its completions into rows without padding where the model allows it (one forward),
    else through a key/value cache of the padded prompts (two forwards, completions padded).
    A multi-aspect head gives (N, heads) scores; each row of levels takes its head's column."""
    all_heads = head_count(model) > 1
    if share_prefix and supports_prefix_sharing(model):
        groups = [(s.sequences[0][: s.prefix_len], [seq[s.prefix_len :] for seq in s.sequences]) for s in sets]
        if packed and supports_packing(model, max(s.longest for s in sets) - 1):
            flat = packed_scores(model, groups, pad_id, device, all_heads=all_heads)
        else:
            flat = prefix_shared_scores(model, groups, pad_id, device, all_heads=all_heads)
    else:
        flat = sequence_scores(model, [seq for s in sets for seq in s.sequences], pad_id, device, all_heads=all_heads)
    return assemble(flat, sets)


class SetScorer(torch.nn.Module):
    """forward_sets as a module, so a data-parallel wrapper (DDP, FSDP, DeepSpeed) sees the whole
    forward: prefix sharing calls the backbone and head directly, which would bypass the hooks
    of a wrapper around the bare model (DDP would then all-reduce nothing)."""

    def __init__(self, model, pad_id: int, share_prefix: bool):
        super().__init__()
        self.model, self.pad_id, self.share_prefix = model, pad_id, share_prefix
        self._no_split_modules = getattr(model, "_no_split_modules", None)  # FSDP's wrap policy reads it

    def forward(self, sets: Sequence[EncodedSet]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        return forward_sets(self.model, sets, self.pad_id, device, self.share_prefix)
