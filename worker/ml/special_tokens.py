"""The one EOS/pad rule: which ids end a response, which id pads, and the end-of-turn token the
reward model reads. Generation, PPO rollouts, reward texts, reward training and scoring (which
refuse a tokenizer given in memory that breaks the pad rule) and the tokenizer loader all ask
here (SFT and DPO must too), so a response ends at the same token everywhere.

Stop ids = the tokenizer's eos ∪ the model's generation_config eos (an id or a list) ∪ the chat
template's end-of-turn token. Checkpoints disagree on which of these is "the" EOS: Qwen2.5/3-
Instruct has eos `<|im_end|>` but generation_config eos [`<|im_end|>`, `<|endoftext|>`]; Qwen2.5
base has eos `<|endoftext|>` while its template ends a turn with `<|im_end|>`; Llama 3 ends a
turn with `<|eot_id|>`. A model may emit any of them to end its answer.

Pad must differ from the end-of-turn token. The reward text ends at the end-of-turn token
(formatting.reward_text) and the reward is read at the last real token; transformers'
sequence-classification heads find it as the last id that is not pad, so a pad equal to the
end-of-turn id would make them read the token *before* it (docs/measured-facts.md: SmolLM2's
GGUF ships pad == eos == `<|im_end|>`). Pad MAY equal another stop id (Qwen's `<|endoftext|>`):
nothing here derives a mask from `ids != pad`. A response ends at its first stop id (ppo_rollout
.response_mask, generate._completion), padded batches carry their mask from lengths
(batching.pad_token_ids), and a reward text never ends in the pad id.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateError

_PROBE = "ranklab-end-of-turn-probe"


@dataclass(frozen=True)
class StopTokens:
    ids: tuple[int, ...]
    """Every id that ends a response (the tokenizer's eos first)."""
    end_of_turn: int
    """The id that closes an assistant turn: where the reward text ends and the reward is read."""
    pad: int
    """The padding id; never the end-of-turn id, possibly another stop id."""


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template puts right after an assistant message (`<|im_end|>`,
    `<|eot_id|>`, `<end_of_turn>`, `</s>` ...); the tokenizer's eos without a template or when
    the template puts no special token there."""
    if not getattr(tokenizer, "chat_template", None):
        return tokenizer.eos_token
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except (TemplateError, ValueError, TypeError, KeyError):
        return tokenizer.eos_token  # a template that cannot render this conversation
    if not isinstance(text, str) or _PROBE not in text:
        return tokenizer.eos_token
    after = text[text.rindex(_PROBE) + len(_PROBE) :].lstrip()
    specials = {
        *tokenizer.all_special_tokens,
        *(t.content for t in tokenizer.added_tokens_decoder.values() if t.special),
    }
    # the longest special token the text after the answer starts with
    found = max((t for t in specials if t and after.startswith(t)), key=len, default=None)
    return found or tokenizer.eos_token


def stop_tokens(tokenizer, generation_config=None) -> StopTokens:
    """The stop ids, end-of-turn id and pad id for `tokenizer` and the model's
    `generation_config` (its eos_token_id, when given). Raises ValueError, saying what to do,
    when pad is missing or is the end-of-turn token."""
    end_token = end_of_turn_token(tokenizer)
    end_id = tokenizer.convert_tokens_to_ids(end_token) if end_token is not None else None
    if end_id is None:
        raise ValueError("tokenizer: it has no eos token and its chat template names no end-of-turn token")
    configured = getattr(generation_config, "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured]
    ids = tuple(dict.fromkeys(i for i in [tokenizer.eos_token_id, *configured, end_id] if i is not None))
    pad = tokenizer.pad_token_id
    if pad is None or pad == end_id:
        what = "has no pad token" if pad is None else f"pad token {tokenizer.pad_token} is the end-of-turn token"
        raise ValueError(
            f"tokenizer: {what}, so a reward model would not read the reward at the end of the answer; "
            "load the tokenizer with worker.ml.models.load_tokenizer, which picks a distinct pad token "
            "(or call worker.ml.models.ensure_distinct_pad on it)"
        )
    return StopTokens(ids=ids, end_of_turn=end_id, pad=pad)
