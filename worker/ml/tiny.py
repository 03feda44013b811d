"""Tiny random-weight Llama models and a word-level tokenizer, built locally in milliseconds.

Tests (ours and PPO's) use these so they never need the real SmolLM2. The tokenizer mirrors
SmolLM2's special-token layout (ChatML, `<|im_end|>` as EOS, a distinct `<|endoftext|>` pad)
so code paths that care about pad/eos behave the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[UNK]"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DEFAULT_WORDS = (
    "user assistant system the a an is are was be to of and or not in on at it this that "
    "good bad great poor yes no maybe please thanks hello world cat dog bird fish tree sun moon "
    "red blue green one two three four five six seven eight nine ten zebra apple banana "
    "write say tell story poem answer question why how what when . , ! ?"
).split()


def tiny_tokenizer(words: Iterable[str] = (), *, padding_side: str = "left") -> PreTrainedTokenizerFast:
    """Word-level tokenizer over DEFAULT_WORDS + `words`; unknown words map to [UNK]."""
    tokenizer = word_level_tokenizer(
        [*SPECIAL_TOKENS, *DEFAULT_WORDS, *words],
        unk_word="[UNK]",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="[UNK]",
        padding_side=padding_side,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def word_level_tokenizer(
    tokens: Iterable[str],
    *,
    unk_word: str,
    control_tokens: Iterable[str] = (),
    newline_tokens: bool = False,
    prepend_bos: bool = False,
    padding_side: str = "left",
    **special: str | None,
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose ids follow the order of `tokens` (duplicates keep the first).

    `unk_word` (one of `tokens`) is what unknown words become. `control_tokens` are matched in
    raw text before splitting into words and dropped by `skip_special_tokens` (a chat template's
    markers); `special` names bos/eos/pad/unk_token (None: the tokenizer has none).
    `newline_tokens` keeps "\\n" as a token of its own (chat templates put newlines in their
    headers); otherwise all whitespace only separates words. `prepend_bos` adds bos when
    `add_special_tokens` is on, as Llama/Gemma tokenizers do.
    """
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk_word))
    if newline_tokens:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r"[ \t\r]+"), behavior="removed"),
                pre_tokenizers.Split(Regex(r"\n|[^\w\s]+"), behavior="isolated"),
            ]
        )
    else:
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    named = [t for t in special.values() if t is not None]
    markers = list(dict.fromkeys([*named, *control_tokens]))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in markers])
    bos = special.get("bos_token")
    if prepend_bos:
        if bos is None:
            raise ValueError("prepend_bos needs a bos_token")
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    extra = [t for t in markers if t not in named]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, padding_side=padding_side, additional_special_tokens=extra, **special
    )


def tiny_config(
    vocab_size: int,
    *,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 512,
    tie_word_embeddings: bool = True,
    pad_token_id: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    **extra,
) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        **extra,
    )


def tiny_causal_lm(
    tokenizer: PreTrainedTokenizerFast | None = None, *, seed: int = 0, **config_overrides
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """(model, tokenizer): a random-weight Llama of ~30k parameters, fp32, eval mode, on CPU."""
    tokenizer = tokenizer or tiny_tokenizer()
    config = tiny_config(
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **config_overrides,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval(), tokenizer


def save_tiny_model(path, *, seed: int = 0, words: Iterable[str] = ()) -> None:
    """Write a tiny model + tokenizer folder that `load_causal_lm`/`load_tokenizer` can read."""
    model, tokenizer = tiny_causal_lm(tiny_tokenizer(words), seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
