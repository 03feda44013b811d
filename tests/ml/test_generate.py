"""Batched sampling with tiny models: K per prompt, finish reasons, real batching, order."""

import pytest
import torch

from tests.ml.sampling_helpers import capture_generate, off_policy_generation_config
from worker.ml.config import GenerationConfig
from worker.ml.generate import generate
from worker.ml.tiny import tiny_causal_lm

PROMPTS = [
    "hello world",
    [{"role": "system", "content": "be good"}, {"role": "user", "content": "tell a story"}],
    "why",
    "what is a cat ?",
]


def forced_model(tokenizer, favourite: str):
    """A tiny model whose output head always prefers one token (bias +30, weights 0)."""
    model, _ = tiny_causal_lm(tokenizer, tie_word_embeddings=False)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    head.bias.data[tokenizer.convert_tokens_to_ids(favourite)] = 30.0
    model.lm_head = head
    return model


def test_k_completions_per_prompt_in_prompt_order(tiny_model):
    model, tokenizer = tiny_model
    cfg = GenerationConfig(k=5, max_new_tokens=6, batch_size=10)
    results = generate(model, PROMPTS, cfg, tokenizer=tokenizer, model_version="round-3")
    assert [len(samples) for samples in results] == [5, 5, 5, 5]
    for samples in results:
        for c in samples:
            assert c.model_version == "round-3"
            assert c.finish_reason in ("eos", "length") and 0 <= c.token_count <= 6
            assert (c.finish_reason == "length") == (c.token_count == 6)


def test_batched_left_padded_results_match_each_prompt_alone(tiny_tok):
    """Near-greedy decoding: each prompt's text depends only on that prompt, so batching,
    length sorting and left padding must give exactly what the prompt gives on its own."""
    # larger random weights than the default, so different prompts lead to different texts
    model, tokenizer = tiny_causal_lm(tiny_tok, initializer_range=0.5)
    cfg = GenerationConfig(k=4, max_new_tokens=8, temperature=1e-4, autocast=False)
    batched = generate(model, PROMPTS, cfg, tokenizer=tokenizer)
    alone = [generate(model, [p], cfg, tokenizer=tokenizer)[0] for p in PROMPTS]
    assert [[c.text for c in s] for s in batched] == [[c.text for c in s] for s in alone]
    assert len({s[0].text for s in batched}) > 1  # prompts really lead to different texts


def test_finish_reasons_follow_eos_and_length(tiny_tok):
    cfg = GenerationConfig(k=4, max_new_tokens=5)
    talker = forced_model(tiny_tok, "cat")
    stopper = forced_model(tiny_tok, "<|im_end|>")
    (talked,) = generate(talker, ["hello"], cfg, tokenizer=tiny_tok)
    (stopped,) = generate(stopper, ["hello"], cfg, tokenizer=tiny_tok)
    assert [(c.text, c.token_count, c.finish_reason) for c in talked] == [("cat cat cat cat cat", 5, "length")] * 4
    assert [(c.text, c.token_count, c.finish_reason) for c in stopped] == [("", 0, "eos")] * 4


def test_many_prompts_share_each_forward(tiny_model):
    model, tokenizer = tiny_model
    batch_rows = []
    model.register_forward_pre_hook(
        lambda mod, args, kwargs: batch_rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    cfg = GenerationConfig(k=4, max_new_tokens=8, batch_size=16)  # 4 prompts x 4 samples per call
    generate(model, PROMPTS, cfg, tokenizer=tokenizer)
    assert set(batch_rows) == {16}  # every forward carries all 4 prompts x K rows
    assert len(batch_rows) <= cfg.max_new_tokens

    batch_rows.clear()
    generate(model, PROMPTS, GenerationConfig(k=4, max_new_tokens=8, batch_size=8), tokenizer=tokenizer)
    assert set(batch_rows) == {8}  # two calls of 2 prompts each


def test_same_seed_gives_the_same_samples(tiny_model):
    model, tokenizer = tiny_model
    cfg = GenerationConfig(k=4, max_new_tokens=6, seed=7, autocast=False)
    first = generate(model, PROMPTS, cfg, tokenizer=tokenizer)
    again = generate(model, PROMPTS, cfg, tokenizer=tokenizer)
    assert [[c.text for c in s] for s in first] == [[c.text for c in s] for s in again]


def test_generate_from_a_folder_and_chat_template_is_used(tiny_model_dir):
    cfg = GenerationConfig(k=4, max_new_tokens=4, device="cpu")
    results = generate(str(tiny_model_dir), ["hello", "why"], cfg, model_version="base")
    assert len(results) == 2 and all(len(s) == 4 for s in results)
    assert all(c.model_version == "base" for s in results for c in s)


def test_bad_generation_settings_name_the_field():
    with pytest.raises(ValueError, match="^k: must be between 1 and 9"):
        GenerationConfig(k=0)
    with pytest.raises(ValueError, match="^top_p"):
        GenerationConfig(top_p=0)
    with pytest.raises(ValueError, match="^temperature"):
        GenerationConfig(temperature=0)
    with pytest.raises(ValueError, match="^backend"):
        GenerationConfig(backend="tgi")


def test_vllm_backend_refuses_clearly_when_it_cannot_run(tiny_model):
    model, tokenizer = tiny_model  # an in-memory model: vLLM needs a folder
    with pytest.raises(ValueError, match="^backend: vllm needs"):
        generate(model, ["hi"], GenerationConfig(backend="vllm"), tokenizer=tokenizer)


def test_sampling_follows_the_config_not_the_model_generation_config(tiny_tok):
    """A checkpoint's generation_config (repetition penalty, top-k, bad words, ...) must not
    reach the sampler: the scores each token was drawn from are the model's logits / T, cut to
    the top-p nucleus when top_p < 1, and nothing else."""
    model, tokenizer = tiny_causal_lm(tiny_tok, initializer_range=0.5)
    off_policy_generation_config(model, tokenizer)
    calls = capture_generate(model)
    for top_p in (1.0, 0.8):
        calls.clear()
        cfg = GenerationConfig(k=4, max_new_tokens=6, temperature=0.7, top_p=top_p, autocast=False)
        generate(model, PROMPTS, cfg, tokenizer=tokenizer)
        assert calls
        for out in calls:
            for scores, logits in zip(out.scores, out.logits, strict=True):  # [rows, V] per step
                expected = logits / 0.7
                kept = torch.isfinite(scores)
                torch.testing.assert_close(scores[kept], expected[kept])
                if top_p == 1.0:
                    assert kept.all()
                    continue
                probs = expected.softmax(-1)
                mass = (probs * kept).sum(-1)
                smallest_kept = probs.masked_fill(~kept, 2.0).min(-1).values
                assert (mass >= top_p - 1e-6).all()  # the nucleus holds top_p of the mass ...
                assert (mass - smallest_kept < top_p).all()  # ... and is the smallest set that does


def test_forced_outputs_are_unchanged_by_the_model_generation_config(tiny_tok):
    """Bad words, minimum lengths, n-gram bans in the checkpoint's generation_config would stop
    these models saying "cat" or ending at once; the configured sampling does not."""
    cfg = GenerationConfig(k=4, max_new_tokens=5)
    talker = forced_model(tiny_tok, "cat")
    stopper = forced_model(tiny_tok, "<|im_end|>")
    for model in (talker, stopper):
        off_policy_generation_config(model, tiny_tok)
    (talked,) = generate(talker, ["hello"], cfg, tokenizer=tiny_tok)
    (stopped,) = generate(stopper, ["hello"], cfg, tokenizer=tiny_tok)
    assert [(c.text, c.finish_reason) for c in talked] == [("cat cat cat cat cat", "length")] * 4
    assert [(c.text, c.finish_reason) for c in stopped] == [("", "eos")] * 4
