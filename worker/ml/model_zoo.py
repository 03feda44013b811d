"""Tiny random-weight models of the families teams bring, each with a tokenizer built locally
that reproduces the family's special tokens, chat template and generation_config quirks.

Families: Llama-3, Qwen2.5, Qwen3, Gemma 2, Gemma 3 (text), Mistral, Phi-3, GPT-2, GPT-NeoX.
Every model is hidden 32 / 2 layers (a few thousand parameters), built offline in well under a
second, and saves to a folder (config + weights + tokenizer + generation_config) that the
library's loaders read. What each reproduces, and what the tests check with them:
docs/model-coverage.md.

The vocabularies are word-level (tiny.DEFAULT_WORDS plus a family's own words) rather than the
real BPE/SentencePiece ones; what the library depends on is reproduced: which control tokens
exist and in what id order, bos/eos/pad/unk as the real tokenizer_config names them (Llama-3,
Mistral, GPT-2 and NeoX have no pad; Phi-3's pad is its eos), the chat template (simplified
where the real one handles tools or dates), newlines as tokens, and the generation_config the
checkpoints ship (several eos ids; Qwen2.5's repetition_penalty; sampling defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from worker.ml.chat_templates import (
    GEMMA2_TEMPLATE,
    GEMMA3_TEMPLATE,
    LLAMA3_TEMPLATE,
    MISTRAL_TEMPLATE,
    PHI3_TEMPLATE,
    QWEN3_TEMPLATE,
    QWEN25_TEMPLATE,
)
from worker.ml.tiny import DEFAULT_WORDS, word_level_tokenizer

HIDDEN, LAYERS, HEADS, KV_HEADS = 32, 2, 4, 2
UNK_WORD = "[UNK]"
"""What unknown words become in families whose real tokenizer has no unknowns (byte-level BPE)."""


@dataclass(frozen=True)
class Family:
    """One model family: its tokenizer layout, chat template, architecture and generation_config."""

    name: str
    """Short id ("llama3", "qwen2.5", ...), used in test ids and folder names."""
    make_config: Callable[[], PretrainedConfig]
    """The tiny architecture (vocab size and token ids are filled in by `family_model`)."""
    head_tokens: tuple[str, ...] = ()
    """Tokens with the lowest ids, before the words (Gemma's <pad> is id 0, Mistral's <unk> 0)."""
    tail_tokens: tuple[str, ...] = ()
    """Tokens after the words (Llama-3's and Qwen's control tokens follow the BPE vocabulary)."""
    bos: str | None = None
    eos: str | None = None
    """The tokenizer_config's eos_token (not always the token that ends a chat turn)."""
    pad: str | None = None
    """The tokenizer_config's pad_token; None where the checkpoint ships none."""
    unk: str | None = None
    end_of_turn: str | None = None
    """The token an assistant turn ends with, i.e. where generation must stop."""
    generation_eos: tuple[str, ...] = ()
    """generation_config.eos_token_id, in the checkpoint's order (empty: the tokenizer's eos)."""
    generation_extra: dict[str, Any] = field(default_factory=dict)
    """Other generation_config fields the checkpoint ships (sampling defaults, penalties)."""
    chat_template: str | None = None
    prepend_bos: bool = False
    """The tokenizer adds bos when add_special_tokens is on (Llama/Gemma/Mistral/Phi-3 do)."""
    words: tuple[str, ...] = ()
    """Words of the template's fixed text (default system prompts), added to the vocabulary."""
    non_special: tuple[str, ...] = ()
    """Control tokens kept by decode (Qwen3's <think>); matched in raw text like the others."""
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """The attention projections by their module names: what an empty `lora_targets` adapts in
    a reward model (lora.default_lora_targets), and in a policy together with the MLP's."""


def _sizes(**extra: Any) -> dict[str, Any]:
    return dict(
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=256,
        **extra,
    )


_LLAMA3_TAIL = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)
_QWEN_TAIL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_QWEN_WORDS = ("You", "Qwen", "created", "by", "Alibaba", "Cloud", "helpful")
_GEMMA_HEAD = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(  # Llama-3.1/3.2-Instruct
            name="llama3",
            make_config=lambda: LlamaConfig(**_sizes(tie_word_embeddings=True)),
            tail_tokens=_LLAMA3_TAIL,
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",
            end_of_turn="<|eot_id|>",
            generation_eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
            generation_extra={"do_sample": True, "temperature": 0.6, "top_p": 0.9},
            chat_template=LLAMA3_TEMPLATE,
            prepend_bos=True,
            words=("Cutting", "Knowledge", "Date", ":", "December", "2023", "Today", "26", "Jul", "2024"),
        ),
        Family(  # Qwen2.5-Instruct: pad <|endoftext|> is also a generation eos
            name="qwen2.5",
            make_config=lambda: Qwen2Config(**_sizes(tie_word_embeddings=True)),
            tail_tokens=_QWEN_TAIL,
            eos="<|im_end|>",
            pad="<|endoftext|>",
            end_of_turn="<|im_end|>",
            generation_eos=("<|im_end|>", "<|endoftext|>"),
            generation_extra={
                "do_sample": True,
                "repetition_penalty": 1.05,
                "temperature": 0.7,
                "top_p": 0.8,
                "top_k": 20,
            },
            chat_template=QWEN25_TEMPLATE,
            words=_QWEN_WORDS,
        ),
        Family(  # Qwen3 (hybrid thinking)
            name="qwen3",
            make_config=lambda: Qwen3Config(**_sizes(head_dim=HIDDEN // HEADS, tie_word_embeddings=True)),
            tail_tokens=(*_QWEN_TAIL, "<think>", "</think>"),
            eos="<|im_end|>",
            pad="<|endoftext|>",
            end_of_turn="<|im_end|>",
            generation_eos=("<|im_end|>", "<|endoftext|>"),
            generation_extra={"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20},
            chat_template=QWEN3_TEMPLATE,
            non_special=("<think>", "</think>"),
        ),
        Family(  # Gemma 2 (it): final-logit and attention soft-capping, alternating sliding window
            name="gemma2",
            make_config=lambda: Gemma2Config(**_sizes(head_dim=HIDDEN // HEADS, query_pre_attn_scalar=HIDDEN // HEADS)),
            head_tokens=_GEMMA_HEAD,
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            unk="<unk>",
            end_of_turn="<end_of_turn>",
            generation_eos=("<eos>", "<end_of_turn>"),
            chat_template=GEMMA2_TEMPLATE,
            prepend_bos=True,
            words=("model",),
        ),
        Family(  # Gemma 3 text-only (1B-it layout): local + global layers, no soft-capping
            name="gemma3",
            make_config=lambda: Gemma3TextConfig(
                **_sizes(
                    head_dim=HIDDEN // HEADS,
                    query_pre_attn_scalar=HIDDEN // HEADS,
                    layer_types=["sliding_attention", "full_attention"],
                    sliding_window=512,
                )
            ),
            head_tokens=_GEMMA_HEAD,
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            unk="<unk>",
            end_of_turn="<end_of_turn>",
            generation_eos=("<eos>", "<end_of_turn>"),
            generation_extra={"do_sample": True, "top_k": 64, "top_p": 0.95},
            chat_template=GEMMA3_TEMPLATE,
            prepend_bos=True,
            words=("model",),
        ),
        Family(  # Mistral-7B-Instruct-v0.3: no pad token, </s> ends the turn
            name="mistral",
            make_config=lambda: MistralConfig(**_sizes(sliding_window=None)),
            head_tokens=("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
            bos="<s>",
            eos="</s>",
            unk="<unk>",
            end_of_turn="</s>",
            chat_template=MISTRAL_TEMPLATE,
            prepend_bos=True,
        ),
        Family(  # Phi-3-mini-4k-instruct: pad == eos; <|end|> ends the turn; fused projections
            name="phi3",
            make_config=lambda: Phi3Config(**_sizes()),
            head_tokens=("<unk>", "<s>", "</s>"),
            tail_tokens=("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"),
            bos="<s>",
            eos="<|endoftext|>",
            pad="<|endoftext|>",
            unk="<unk>",
            end_of_turn="<|end|>",
            generation_eos=("<|endoftext|>", "<|assistant|>", "<|end|>"),
            chat_template=PHI3_TEMPLATE,
            prepend_bos=True,
            lora_targets=("qkv_proj", "o_proj"),
        ),
        Family(  # GPT-2: absolute learned positions, bos = eos = unk, no pad, no chat template
            name="gpt2",
            make_config=lambda: GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=256),
            tail_tokens=("<|endoftext|>",),
            bos="<|endoftext|>",
            eos="<|endoftext|>",
            unk="<|endoftext|>",
            end_of_turn="<|endoftext|>",
            lora_targets=("c_attn", "attn.c_proj"),
        ),
        Family(  # GPT-NeoX / Pythia: partial rotary, parallel residual, no pad, no chat template
            name="gpt-neox",
            make_config=lambda: GPTNeoXConfig(
                hidden_size=HIDDEN,
                intermediate_size=2 * HIDDEN,
                num_hidden_layers=LAYERS,
                num_attention_heads=HEADS,
                max_position_embeddings=256,
            ),
            head_tokens=("<|endoftext|>", "<|padding|>"),
            bos="<|endoftext|>",
            eos="<|endoftext|>",
            unk="<|endoftext|>",
            end_of_turn="<|endoftext|>",
            lora_targets=("query_key_value", "attention.dense"),
        ),
    ]
}


def family_tokenizer(name: str, words: Iterable[str] = (), *, padding_side: str = "left") -> PreTrainedTokenizerFast:
    """The family's tokenizer over tiny.DEFAULT_WORDS + its own words + `words`."""
    family = FAMILIES[name]
    control = (*family.head_tokens, *family.tail_tokens)
    # GPT-2/NeoX name eos as unk (byte-level BPE never needs it): unknown words get a word of their own.
    unk_word = family.unk if family.unk and family.unk != family.eos else UNK_WORD
    vocab = [*family.head_tokens, "\n", *DEFAULT_WORDS, *family.words, *words, UNK_WORD, *family.tail_tokens]
    tokenizer = word_level_tokenizer(
        vocab,
        unk_word=unk_word,
        control_tokens=[t for t in control if t not in family.non_special],
        newline_tokens=True,
        prepend_bos=family.prepend_bos,
        padding_side=padding_side,
        bos_token=family.bos,
        eos_token=family.eos,
        pad_token=family.pad,
        unk_token=family.unk,
    )
    if family.non_special:
        tokenizer.add_tokens(list(family.non_special))  # already in the vocabulary: ids unchanged
    tokenizer.chat_template = family.chat_template
    return tokenizer


def family_model(name: str, *, seed: int = 0, words: Iterable[str] = ()) -> tuple[PreTrainedModel, Any]:
    """(model, tokenizer): the family's tiny random-weight causal LM, fp32, eval mode, on CPU,
    with the generation_config its instruct checkpoint ships."""
    family = FAMILIES[name]
    tokenizer = family_tokenizer(name, words)
    config = family.make_config()
    config.vocab_size = len(tokenizer)
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    for key, value in ids.items():
        setattr(config, key, value)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    generation = model.generation_config
    for key, value in ids.items():
        setattr(generation, key, value)
    if family.generation_eos:
        generation.eos_token_id = tokenizer.convert_tokens_to_ids(list(family.generation_eos))
    for key, value in family.generation_extra.items():
        setattr(generation, key, value)
    return model.eval(), tokenizer


def end_of_turn_id(tokenizer, name: str) -> int:
    return tokenizer.convert_tokens_to_ids(FAMILIES[name].end_of_turn)


def favour_token(model: PreTrainedModel, token_id: int, strength: float = 1.0) -> None:
    """Make `token_id` likely (20-85% at strength 1, 95%+ at 2) after any input, so tiny random models end
    their turns within a few tokens. Every input embedding gets +strength on dimension 0, which
    then dominates the final (RMS/Layer)-normed hidden state's dimension 0; the output row of
    `token_id` gets +strength there too, so its logit leads by about strength * sqrt(hidden)."""
    input_rows = cast(torch.Tensor, model.get_input_embeddings().weight)
    output_rows = cast(torch.Tensor, model.get_output_embeddings().weight)  # the same tensor when tied
    with torch.no_grad():
        input_rows[:, 0] += strength
        output_rows[token_id, 0] += strength


def save_family_model(name: str, path: str | Path, *, seed: int = 0, end_of_turn_strength: float = 0.0) -> Path:
    """Write the family's tiny model folder (config, weights, tokenizer, generation_config) for
    `models.load_causal_lm` / `load_tokenizer`; `end_of_turn_strength` > 0 applies
    `favour_token` to the family's end-of-turn token first."""
    model, tokenizer = family_model(name, seed=seed)
    if end_of_turn_strength:
        favour_token(model, end_of_turn_id(tokenizer, name), end_of_turn_strength)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
