"""One EOS/pad rule for every path: which ids end a response, which id pads, and why a
Qwen-style layout (pad is one of several EOS ids) works while pad == end-of-turn is refused."""

import pytest
import torch

from tests.ml.sampling_helpers import chatml_tokenizer
from worker.ml.config import GenerationConfig
from worker.ml.formatting import reward_text
from worker.ml.generate import generate
from worker.ml.models import load_tokenizer
from worker.ml.ppo_rollout import sample_rollout
from worker.ml.special_tokens import end_of_turn_token, stop_tokens
from worker.ml.tiny import tiny_causal_lm, tiny_tokenizer

IM_END, ENDOFTEXT = "<|im_end|>", "<|endoftext|>"


def qwen_instruct():
    """Qwen2.5/3-Instruct: eos <|im_end|>, pad <|endoftext|>, generation_config eos [im_end, endoftext]."""
    tokenizer = chatml_tokenizer(eos=IM_END, pad=ENDOFTEXT)
    model, _ = tiny_causal_lm(tokenizer, tie_word_embeddings=False)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    return model, tokenizer


def say_only(model, tokenizer, token: str):
    """Make the model's head always prefer `token` (bias +30, weights 0)."""
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[tokenizer.convert_tokens_to_ids(token)] = 30.0
    model.lm_head = head
    return model


def test_qwen_instruct_layout_stops_at_either_eos_and_pads_with_endoftext():
    model, tokenizer = qwen_instruct()
    stops = stop_tokens(tokenizer, model.generation_config)
    assert set(stops.ids) == set(tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT]))
    assert stops.end_of_turn == tokenizer.convert_tokens_to_ids(IM_END)
    assert stops.pad == tokenizer.convert_tokens_to_ids(ENDOFTEXT)


def test_qwen_instruct_layout_generates_and_ends_at_endoftext():
    """Was refused ("pad token equals EOS; load it with models.load_tokenizer") although the
    tokenizer came from load_tokenizer: its pad is one of the generation_config's EOS ids."""
    model, tokenizer = qwen_instruct()
    say_only(model, tokenizer, ENDOFTEXT)
    (samples,) = generate(model, ["hello"], GenerationConfig(k=4, max_new_tokens=5), tokenizer=tokenizer)
    assert [(c.text, c.token_count, c.finish_reason) for c in samples] == [("", 0, "eos")] * 4


def test_the_chat_template_end_of_turn_token_stops_generation():
    """Qwen2.5 base: eos = pad = <|endoftext|>, but its chat template ends a turn with
    <|im_end|>; a chat answer that ends its turn has ended."""
    tokenizer = chatml_tokenizer(eos=ENDOFTEXT, pad=ENDOFTEXT)
    assert end_of_turn_token(tokenizer) == IM_END
    model, _ = tiny_causal_lm(tokenizer, tie_word_embeddings=False)
    stops = stop_tokens(tokenizer, model.generation_config)
    assert set(stops.ids) == set(tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT]))
    say_only(model, tokenizer, IM_END)
    (samples,) = generate(model, ["hello"], GenerationConfig(k=4, max_new_tokens=5), tokenizer=tokenizer)
    assert [(c.text, c.finish_reason) for c in samples] == [("", "eos")] * 4


def test_load_tokenizer_keeps_a_pad_that_is_not_the_end_of_turn(tmp_path):
    """Qwen2.5 base pads with its eos <|endoftext|>; the reward is read at <|im_end|>, so that
    pad is fine as it is: no new token, no resized embeddings."""
    tokenizer = chatml_tokenizer(eos=ENDOFTEXT, pad=ENDOFTEXT)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == ENDOFTEXT and len(loaded) == len(tokenizer)


def test_reward_text_ends_at_the_end_of_turn_token():
    """The reward head reads the last token: the end-of-turn, where generation stops, also when
    eos is another token or the template appends eos after the turn (as Phi-3's does)."""
    appends_eos = chatml_tokenizer(eos=ENDOFTEXT, pad=ENDOFTEXT)
    appends_eos.chat_template += "{% if not add_generation_prompt %}{{ eos_token }}{% endif %}"
    assert appends_eos.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).endswith(ENDOFTEXT)
    for tokenizer in (tiny_tokenizer(), chatml_tokenizer(eos=ENDOFTEXT, pad=ENDOFTEXT), appends_eos):
        assert reward_text(tokenizer, "hi", "the cat").endswith("the cat" + IM_END)
        assert stop_tokens(tokenizer).pad != tokenizer.convert_tokens_to_ids(IM_END)


def test_pad_equal_to_the_end_of_turn_is_refused_with_what_to_do():
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = IM_END  # SmolLM2's GGUF layout, not loaded through load_tokenizer
    with pytest.raises(ValueError, match=r"pad token <\|im_end\|> is the end-of-turn token.*load_tokenizer"):
        stop_tokens(tokenizer)


def test_labeling_and_ppo_rollouts_end_a_response_at_the_same_token():
    """Before: generation stopped at either Qwen EOS, PPO only at the tokenizer's, so an answer
    ending in <|endoftext|> was finished for the reward model and unfinished (and penalised) in PPO."""
    model, tokenizer = qwen_instruct()
    say_only(model, tokenizer, ENDOFTEXT)
    (samples,) = generate(model, ["hello"], GenerationConfig(k=4, max_new_tokens=4), tokenizer=tokenizer)
    rollout = sample_rollout(
        model, tokenizer, ["hello", "why"], max_prompt_tokens=64, max_new_tokens=4, temperature=1.0
    )
    assert {c.finish_reason for c in samples} == {"eos"}
    assert rollout.has_eos.tolist() == [True, True]
    assert rollout.response_mask.sum(1).tolist() == [1.0, 1.0]  # the stop token itself, nothing after
    assert rollout.responses == ["", ""]
