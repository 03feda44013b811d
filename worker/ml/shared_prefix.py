"""Score K completions of one prompt while forwarding the prompt only once.

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

from worker.ml.batching import pad_token_ids, position_ids


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
    model, groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_id: int, device: torch.device
) -> torch.Tensor:
    """groups: (prefix ids, [suffix ids, ...]) per ranking -> (sum of suffixes,) rewards, in order.

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
    return head(pooled)[:, 0]


def _cache_argument(backbone) -> str:
    """transformers 5.25+ calls the key/value cache `cache` (argument and output field);
    earlier versions call it `past_key_values`."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"
