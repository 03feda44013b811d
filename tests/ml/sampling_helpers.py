"""Helpers for the tests that check what distribution generation really samples from.

`off_policy_generation_config` gives a model the kind of generation_config.json a released
checkpoint ships (Qwen's repetition_penalty and top_k, bad words, minimum lengths, ...);
`capture_generate` records what `model.generate` actually used: the processed scores the tokens
were sampled from (`scores`) and the model's raw logits at each step (`logits`). `chatml_tokenizer` builds the
special-token layouts of Qwen's tokenizers.
"""

from __future__ import annotations

import copy

import torch
from transformers import PreTrainedTokenizerFast, WatermarkingConfig

from worker.ml.tiny import CHATML_TEMPLATE, tiny_tokenizer


def off_policy_generation_config(model, tokenizer) -> None:
    """Set every generation_config field that changes the sampling distribution."""
    ids = tokenizer.convert_tokens_to_ids
    settings = {
        "do_sample": True,
        "temperature": 0.3,
        "top_p": 0.5,
        "top_k": 5,
        "min_p": 0.2,
        "typical_p": 0.9,
        "epsilon_cutoff": 3e-4,
        "eta_cutoff": 3e-4,
        "repetition_penalty": 1.3,
        "no_repeat_ngram_size": 2,
        "bad_words_ids": [[ids("cat")]],
        "sequence_bias": [[[ids("dog")], 5.0]],
        "min_length": 4,
        "min_new_tokens": 3,
        "suppress_tokens": [ids("the")],
        "begin_suppress_tokens": [ids("a")],
        "forced_bos_token_id": ids("hello"),
        "forced_eos_token_id": tokenizer.eos_token_id,
        "exponential_decay_length_penalty": (2, 1.5),
        "renormalize_logits": True,
        "remove_invalid_values": True,
        "watermarking_config": WatermarkingConfig(bias=2.0, greenlist_ratio=0.5),
    }
    for name, value in settings.items():
        setattr(model.generation_config, name, value)


def capture_generate(model) -> list:
    """Wrap `model.generate` so each call also returns scores and raw logits, recorded in the
    returned list (the caller still gets plain sequences)."""
    calls: list = []
    original = model.generate

    def generate(*args, generation_config, **kwargs) -> torch.Tensor:
        config = copy.deepcopy(generation_config)
        config.output_scores = config.output_logits = config.return_dict_in_generate = True
        out = original(*args, generation_config=config, **kwargs)
        calls.append(out)
        return out.sequences

    model.generate = generate
    return calls


def chatml_tokenizer(*, eos: str, pad: str, bos: str | None = None) -> PreTrainedTokenizerFast:
    """tiny.py's word-level ChatML tokenizer with another special-token layout:
    Qwen2.5/3-Instruct: eos <|im_end|>, pad <|endoftext|>, no bos;
    Qwen2.5 base: eos = pad = <|endoftext|> (the template still ends turns with <|im_end|>)."""
    tokenizer = tiny_tokenizer()
    backend = tokenizer.backend_tokenizer
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=eos,
        pad_token=pad,
        bos_token=bos,
        unk_token="[UNK]",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        padding_side="left",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
