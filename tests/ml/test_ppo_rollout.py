"""PPO rollouts: the logprobs PPO recomputes are those the tokens were sampled with (left
padding, a checkpoint's own generation_config), responses end at the first EOS, and the rollout
defaults add no length prior."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig as HFGenerationConfig

from tests.ml.ppo_helpers import CPU, PROMPTS, one_step, small_cfg
from tests.ml.sampling_helpers import capture_generate, off_policy_generation_config
from worker.ml.config import GenerationConfig
from worker.ml.formatting import prompt_text
from worker.ml.ppo import PPOConfig
from worker.ml.ppo_math import logprobs_of_labels
from worker.ml.ppo_policy import build_policy
from worker.ml.ppo_rollout import Rollout, encode_prompts, response_mask, sample_rollout, score_rollout
from worker.ml.tiny import tiny_causal_lm, tiny_tokenizer


def test_recomputed_logprobs_are_the_sampling_distribution_under_left_padding(tiny_model_dir):
    cfg = small_cfg(tiny_model_dir, autocast=False)
    policy, tokenizer = build_policy(cfg, CPU)
    texts = [prompt_text(tokenizer, p) for p in ["hi", "tell me a long story about a cat and a dog"]]
    query, query_mask = encode_prompts(tokenizer, texts, 256)  # [2, Lq]
    assert query_mask[0, 0] == 0  # the short prompt really is left-padded
    out = policy.peft_model.generate(
        input_ids=query,
        attention_mask=query_mask,
        output_scores=True,
        return_dict_in_generate=True,
        generation_config=HFGenerationConfig(
            do_sample=True,
            temperature=0.7,
            top_k=0,
            top_p=1.0,
            max_new_tokens=6,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
    )
    response = out.sequences[:, query.shape[1] :]  # [2, T]
    mask, _ = response_mask(response, tokenizer.eos_token_id)
    sampled = logprobs_of_labels(torch.stack(out.scores, 1), response)  # [2, T]

    with torch.no_grad():
        logits, values = policy(
            torch.cat([query, response], 1), torch.cat([query_mask, mask.long()], 1), query.shape[1], 0.7
        )
    ours = logprobs_of_labels(logits, response)
    torch.testing.assert_close(ours * mask, sampled * mask, atol=1e-4, rtol=1e-4)
    assert values.shape == response.shape and torch.all(values == 0)  # zero-initialised head


def test_rollouts_sample_from_the_policy_not_the_checkpoint_generation_config(tmp_path):
    """A checkpoint whose generation_config sets repetition_penalty, no_repeat_ngram_size, top_k,
    bad words, minimum lengths ... (as Qwen's does): the logprobs PPO recomputes must still be
    those the rollout tokens were sampled with, or every update is off-policy."""
    model, tokenizer = tiny_causal_lm(tiny_tokenizer(), initializer_range=0.5)
    off_policy_generation_config(model, tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cfg = small_cfg(tmp_path, autocast=False, max_new_tokens=8, temperature=0.7)
    policy, tokenizer = build_policy(cfg, CPU)
    assert policy.causal_lm.generation_config.repetition_penalty == 1.3  # the checkpoint's own
    calls = capture_generate(policy.peft_model)
    rollout = sample_rollout(
        policy.peft_model, tokenizer, PROMPTS, max_prompt_tokens=256, max_new_tokens=8, temperature=0.7
    )
    (out,) = calls
    steps = len(out.scores)
    response, mask = rollout.response_ids[:, :steps], rollout.response_mask[:, :steps]  # [B, T]
    sampled = logprobs_of_labels(torch.stack(out.scores, 1), response)  # [B, T]
    with torch.no_grad():
        logits, _ = policy(rollout.input_ids, rollout.attention_mask, rollout.query_ids.shape[1], 0.7)
    ours = logprobs_of_labels(logits[:, :steps], response)
    assert mask.sum() > len(PROMPTS)  # responses of more than one token
    torch.testing.assert_close(ours * mask, sampled * mask, atol=1e-4, rtol=1e-4)


def test_response_mask_ends_at_the_first_eos_even_when_pad_is_eos():
    eos = 2
    ids = torch.tensor([[5, eos, eos, eos], [5, 6, 7, 8], [eos, 9, 9, 9]])
    mask, has_eos = response_mask(ids, eos)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


def test_rollout_defaults_are_the_labeling_defaults_and_add_no_length_prior():
    """The reward model learns from GenerationConfig's completions and scores PPOConfig's
    rollouts: one length budget, one temperature, no top-p, and no hidden penalty on answers
    that reach the budget (the labelers already judged such answers)."""
    gen, ppo = GenerationConfig(), PPOConfig()
    assert (ppo.max_new_tokens, ppo.temperature) == (gen.max_new_tokens, gen.temperature)
    assert gen.top_p == 1.0
    assert ppo.missing_eos_penalty == 0.0


def test_missing_eos_penalty_is_subtracted_from_the_score(tiny_model_dir):
    rollout = Rollout(
        ["p", "q"],
        ["ends", "runs on"],
        torch.zeros(2, 1, dtype=torch.long),
        torch.ones(2, 1, dtype=torch.long),
        torch.zeros(2, 2, dtype=torch.long),
        torch.ones(2, 2),
        torch.tensor([True, False]),
    )
    raw, scores = score_rollout(lambda p, r: torch.tensor([0.5, 0.5]), rollout, 1.5)
    assert raw.tolist() == [0.5, 0.5] and scores.tolist() == [0.5, -1.0]
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        score_rollout(lambda p, r: torch.tensor([0.5]), rollout, 1.5)

    # In a real step: 3 new tokens rarely reach EOS; every such response pays the penalty.
    _, _, stats = one_step(
        small_cfg(tiny_model_dir, batch_size=8, max_new_tokens=3, missing_eos_penalty=2.0),
        reward_fn=lambda p, r: torch.zeros(len(r)),
    )
    assert stats["no_eos_fraction"] > 0 and stats["score"] == 0
    assert stats["penalised_score"] == pytest.approx(-2.0 * stats["no_eos_fraction"])
