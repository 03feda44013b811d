"""Score K completions of one prompt while forwarding the prompt only once.

Two exact ways, chosen in reward_sets.forward_sets:

- `packed_scores` (default where the attention takes a 4-D mask): each prompt and its K
  completions are laid out back to back in one row, with a block mask that keeps every
  completion to its own prompt and itself (batching.pack_prefix_groups). One forward, no
  padding between sequences, no key/value cache (so it also runs under gradient checkpointing).
- `prefix_shared_scores` (fallback): two forwards through a key/value cache, described below.

The K sequences of a ranking share their first tokens (system prompt, user turn, assistant
opener). We run the backbone over each ranking's shared prefix once, copy its key/value cache
to that ranking's K rows (an index_select, so gradients flow back into the single prefix
pass), then run only the K differing suffixes against that cache. The result equals scoring
the full sequences (up to float rounding) at a fraction of the tokens.

Exactness needs explicit positions. Prefixes are left-padded (each ends right before its
suffixes), so with the model's default positions a row's tokens would sit `pad` places later
than in the full sequence: RoPE models would not notice (attention sees relative positions
only) but models with absolute position embeddings (GPT-2) would score differently. So the
prefix pass counts positions from each row's first real token and the suffix pass continues
from each row's prefix length; tests/ml/test_reward.py checks shared == full on every family
in model_zoo.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from worker.ml.batching import pack_prefix_groups, pad_token_ids, position_ids

PACKED_ROW_TOKENS = 512
"""Tokens per packed row: long enough to hold a ranking's prompt and its K completions, short
enough that the (row x row) attention a packed row costs stays small next to its projections."""


def common_prefix_len(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens all sequences share at the start, leaving each at least one token of its own
    (the reward is read at a sequence's last token, which must be in the suffix pass)."""
    shortest = min(len(s) for s in sequences)
    limit = shortest - 1
    first = sequences[0]
    n = 0
    while n < limit and all(s[n] == first[n] for s in sequences):
        n += 1
    return n


def supports_prefix_sharing(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, getattr(base, "base_model_prefix", ""), None)
    return backbone is not None and hasattr(base, "score")


def prefix_shared_scores(
    model,
    groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    pad_id: int,
    device: torch.device,
    *,
    all_heads: bool = False,
) -> torch.Tensor:
    """groups: (prefix ids, [suffix ids, ...]) per ranking -> (sum of suffixes,) rewards, in order;
    with all_heads, (sum of suffixes, heads): every output of a multi-aspect score head.

    Every suffix must be non-empty. Prefixes are left-padded (so each ends right before its
    suffixes), suffixes right-padded; the reward is read at each suffix's last real token.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone, head = getattr(base, base.base_model_prefix), base.score
    cache_arg = _cache_argument(backbone)

    # 1. one pass over the B prefixes -> a key/value cache with B rows
    prefix_ids, prefix_mask = pad_token_ids([prefix for prefix, _ in groups], pad_id, side="left")  # (B, P), CPU
    cache = None
    if prefix_ids.shape[1] > 0:
        out = backbone(
            input_ids=prefix_ids.to(device),
            attention_mask=prefix_mask.to(device),
            position_ids=position_ids(prefix_mask).to(device),  # from each row's first real token
            use_cache=True,
        )
        cache = out.get(cache_arg)
        if cache is None:  # gradient checkpointing in training mode turns the cache off
            raise RuntimeError(
                "prefix sharing needs the key/value cache, which transformers drops under gradient "
                "checkpointing; score full sequences instead (RewardConfig.share_prompt_prefix=False)"
            )

    # 2. copy each prefix's cache to its rankings' N suffix rows (differentiable gather)
    owner = torch.tensor([g for g, (_, suffixes) in enumerate(groups) for _ in suffixes], dtype=torch.long)
    if cache is not None:
        cache.reorder_cache(owner.to(device))

    # 3. one pass over the N right-padded suffixes, attending to the cached prefixes and
    #    positioned right after them
    suffixes = [s for _, group in groups for s in group]
    suffix_ids, suffix_mask = pad_token_ids(suffixes, pad_id, side="right")  # (N, S), CPU
    attention_mask = torch.cat([prefix_mask[owner], suffix_mask], dim=1)  # (N, P + S)
    prefix_lengths = prefix_mask[owner].sum(dim=1, keepdim=True)  # (N, 1)
    suffix_positions = prefix_lengths + torch.arange(suffix_ids.shape[1])  # (N, S)
    hidden = backbone(
        input_ids=suffix_ids.to(device),
        attention_mask=attention_mask.to(device),
        position_ids=suffix_positions.to(device),
        use_cache=cache is not None,
        **{cache_arg: cache},
    ).last_hidden_state  # (N, S, H)
    last = (suffix_mask.sum(dim=1) - 1).to(device)  # (N,)
    pooled = hidden[torch.arange(len(suffixes), device=device), last]  # (N, H)
    scores = head(pooled)  # (N, heads)
    return scores if all_heads else scores[:, 0]


def supports_packing(model, longest_position: int) -> bool:
    """Whether `packed_scores` is exact for this model: the attention takes an explicit 4-D mask
    (SDPA or eager; flash-attention kernels take none), and no sliding window could cut a
    sequence shorter than `longest_position + 1` tokens (the mask replaces the window)."""
    if not supports_prefix_sharing(model):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config()
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    windows = [getattr(config, name, None) for name in ("sliding_window", "attention_window")]
    return all(not isinstance(w, int) or w <= 0 or longest_position < w for w in windows)


def packed_scores(
    model,
    groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    pad_id: int,
    device: torch.device,
    *,
    row_tokens: int = PACKED_ROW_TOKENS,
    all_heads: bool = False,
) -> torch.Tensor:
    """Same result as `prefix_shared_scores` (all_heads too) in one forward without padding between sequences:
    each prompt and its suffixes are laid out back to back in a row and a block mask keeps every
    suffix to its own prompt and itself (batching.pack_prefix_groups). No key/value cache is
    involved, so this also works under gradient checkpointing."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone, head = getattr(base, base.base_model_prefix), base.score
    packed = pack_prefix_groups(groups, pad_id, row_tokens=row_tokens)
    mask = packed.allowed[:, None].to(device)  # (R, 1, L, L): one mask for every head
    if base.config.get_text_config()._attn_implementation == "eager":
        # eager attention adds the mask to its scores
        dtype = next(backbone.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
    hidden = backbone(
        input_ids=packed.ids.to(device),
        attention_mask=mask,
        position_ids=packed.positions.to(device),
        use_cache=False,
    ).last_hidden_state  # (R, L, H)
    reads = packed.reads.to(device)
    scores = head(hidden[reads[:, 0], reads[:, 1]])  # (N, heads)
    return scores if all_heads else scores[:, 0]


def _cache_argument(backbone) -> str:
    """transformers 5.25+ calls the key/value cache `cache` (argument and output field);
    earlier versions call it `past_key_values`."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"
