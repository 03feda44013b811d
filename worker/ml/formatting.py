"""How prompts and completions become model text: the one definition generation, reward
training, reward scoring and PPO share, so a reward model sees exactly what the policy wrote.

With a chat template: the prompt is a conversation (a plain string becomes one user turn) and
the completion is the assistant's turn. The reward text ends at the end-of-turn token (the
template's trailing newline is dropped) because that is where the reward head reads.
Without a template: plain concatenation, with EOS closing the completion.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.ml.data import Prompt, as_messages
from worker.ml.special_tokens import end_of_turn_token


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer, prompt: Prompt) -> str:
    """The text the policy continues: the conversation plus the assistant-turn opener."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
    if isinstance(prompt, str):
        return prompt
    return "\n".join(message["content"] for message in prompt) + "\n"


def reward_text(tokenizer, prompt: Prompt, completion: str) -> str:
    """Prompt and completion as one text, ending at the end-of-turn token (the template's, which
    may differ from the tokenizer's eos: special_tokens.py) or, without a template, at EOS."""
    end = end_of_turn_token(tokenizer) or ""
    if has_chat_template(tokenizer):
        messages = [*as_messages(prompt), {"role": "assistant", "content": completion}]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        # Cut what the template adds after the turn: ChatML's newline, Phi-3's trailing eos.
        opener = len(prompt_text(tokenizer, prompt))
        cut = text.rfind(end, opener) if end else -1
        return text[: cut + len(end)] if cut >= 0 else text
    return prompt_text(tokenizer, prompt) + completion + end


def encode_reward_texts(
    tokenizer, prompts: Sequence[Prompt], completions: Sequence[str], max_length: int
) -> list[list[int]]:
    """Token ids per (prompt, completion); over-long sequences keep their last max_length tokens
    (the reward is read at the end, and the end of the conversation matters most)."""
    texts = [reward_text(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    return encode_texts(tokenizer, texts, max_length)


def encode_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    # Templated text already spells out its special tokens; plain text gets the tokenizer's own.
    add_special = not has_chat_template(tokenizer)
    ids = tokenizer(list(texts), add_special_tokens=add_special)["input_ids"]
    return [seq[-max_length:] for seq in ids]
