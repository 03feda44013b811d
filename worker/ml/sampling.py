"""Sampling with exactly the distribution we configure, whatever the checkpoint ships.

A released checkpoint's generation_config.json often sets sampling options (Qwen2.5-Instruct:
repetition_penalty 1.05, top_k 20, top_p 0.8, temperature 0.7). transformers fills every field a
`GenerationConfig` passed to `generate` leaves unset (None) from the model's own config, and a
field such as `bad_words_ids`, `suppress_tokens` or `min_new_tokens` cannot be "unset" by passing
None. So a config that names only temperature and top-p still samples with the checkpoint's
penalties, and PPO, which recomputes logprobs as softmax(logits / T), trains off-policy.

`sampling_config` builds the configuration from scratch, naming every field that changes the
distribution; `sample` runs `generate` with that same configuration standing in for the model's
own for the duration of the call, so nothing is inherited. The tokens are then drawn from
softmax(logits / temperature), cut to the top-p nucleus when top_p < 1, and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GenerationConfig


def sampling_config(
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    num_return_sequences: int = 1,
) -> GenerationConfig:
    """Plain ancestral sampling at `temperature` (and top-p when < 1), stopping at any of
    `stop_ids`; every other field that could reshape the distribution is neutral."""
    return GenerationConfig(
        # what we choose
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        num_return_sequences=num_return_sequences,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        # neutral: no truncation besides top-p
        top_k=0,
        min_p=None,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        # neutral: no penalties, bans, biases, forced or suppressed tokens, minimum lengths
        repetition_penalty=1.0,
        encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0,
        bad_words_ids=None,
        sequence_bias=None,
        min_length=0,
        min_new_tokens=None,
        suppress_tokens=None,
        begin_suppress_tokens=None,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        exponential_decay_length_penalty=None,
        renormalize_logits=False,
        remove_invalid_values=False,
        guidance_scale=None,
        watermarking_config=None,
        # one sequence per row, no beams or assistants
        num_beams=1,
        use_cache=True,
    )


@torch.no_grad()
def sample(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """`model.generate` with `config` and nothing inherited from the model's generation_config.

    Returns the sequences [rows x num_return_sequences, prompt + new tokens].
    """
    # peft forwards generate to the wrapped model and reads that model's generation_config.
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    own = inner.generation_config
    inner.generation_config = config
    try:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    finally:
        inner.generation_config = own
