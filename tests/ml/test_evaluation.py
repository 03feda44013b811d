"""Eval-set metrics (worker/ml/evaluation.py): distinct-n, length stats, KL to the reference,
and the length-controlled win rate on a constructed case where length alone wins."""

from __future__ import annotations

import math

import pytest
import torch

from worker.ml.evaluation import (
    answer_config,
    answer_logprobs,
    distinct_n,
    encode_answers,
    generate_answers,
    kl_to_reference,
    lc_win_rate,
    length_stats,
    mean_sd,
    text_metrics,
    win_labels,
)


def test_distinct_n_by_hand():
    texts = ["the cat the cat", "The dog"]
    # words: the cat the cat | the dog → unigrams {the, cat, dog} of 6; bigrams
    # (the cat), (cat the), (the cat), (the dog) → 3 unique of 4
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["one"], 2) == 0.0  # no bigram at all
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["a b c", "d e f"], 1) == 1.0


def test_length_stats_and_eos_share():
    assert length_stats([4, 8, 0, 12], ["eos", "length", "eos", "length"]) == {"mean_tokens": 6.0, "eos_share": 0.5}
    assert length_stats([], []) == {"mean_tokens": 0.0, "eos_share": 0.0}
    metrics = text_metrics(["a b", "a c"], [2, 2], ["eos", "eos"])
    assert metrics["eos_share"] == 1.0 and metrics["distinct_1"] == pytest.approx(3 / 4)
    assert mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))


def test_win_labels_split_exact_ties():
    assert win_labels([0.0, 1.0, 2.0], [1.0, 0.0, 2.0]) == [1.0, 0.0, 0.5]


def _longer_but_worse(n_equal: int = 90, n_longer: int = 110, seed: int = 0):
    """B writes much longer answers on most prompts and the reward model likes length, so B wins
    most of those; at equal length B is worse and wins a third."""
    rng = torch.Generator().manual_seed(seed)
    scores_a, scores_b, len_a, len_b = [], [], [], []
    for i in range(n_equal + n_longer):
        length_a = 20 + int(torch.randint(0, 10, (1,), generator=rng))
        extra = 0 if i < n_equal else 30 + int(torch.randint(0, 20, (1,), generator=rng))
        if i < n_equal:
            b_wins = i % 3 == 0  # 30 of 90
        else:
            b_wins = (i - n_equal) % 7 != 0  # 94 of 110
        a = float(torch.randn(1, generator=rng))
        scores_a.append(a)
        scores_b.append(a + (0.5 if b_wins else -0.5))
        len_a.append(length_a)
        len_b.append(length_a + extra)
    return scores_a, scores_b, len_a, len_b


def test_longer_but_worse_wins_raw_but_loses_length_controlled():
    scores_a, scores_b, len_a, len_b = _longer_but_worse()
    result = lc_win_rate(scores_a, scores_b, len_a, len_b, seed=1)
    assert result["win_rate"] == pytest.approx(124 / 200)
    assert result["win_rate_ci"][0] > 0.5  # raw: B "wins", clearly
    assert result["lc_win_rate"] < 0.5  # at equal length B loses ...
    assert result["lc_win_rate"] == pytest.approx(1 / 3, abs=0.05)  # ... a third of the time
    low, high = result["lc_win_rate_ci"]
    assert low < result["lc_win_rate"] < high < 0.5
    assert result["length_coef"] > 1.0 and result["ties"] == 0
    # seeded: the same intervals again
    assert lc_win_rate(scores_a, scores_b, len_a, len_b, seed=1) == result


def test_lc_win_rate_without_length_differences_is_the_raw_rate():
    scores_a = [0.0] * 10
    scores_b = [1.0] * 6 + [-1.0] * 3 + [0.0]  # 6 wins, 3 losses, 1 tie
    result = lc_win_rate(scores_a, scores_b, [5] * 10, [5] * 10, bootstrap=200)
    assert result["win_rate"] == pytest.approx(0.65) and result["ties"] == 1
    assert result["lc_win_rate"] == pytest.approx(0.65, abs=0.01)  # only the (tiny) ridge moves it
    with pytest.raises(ValueError, match="scores"):
        lc_win_rate([], [], [], [])


def test_lc_win_rate_stays_finite_when_one_side_wins_everything():
    result = lc_win_rate([0.0] * 8, [1.0] * 8, list(range(8)), list(range(1, 9)), bootstrap=100)
    assert result["win_rate"] == 1.0 and 0.9 < result["lc_win_rate"] < 1.0


def test_kl_is_zero_when_policy_is_reference(tiny_model_dir):
    prompts, answers = ["tell a story", "say hello"], ["the cat is good .", "hello world"]
    assert kl_to_reference(tiny_model_dir, tiny_model_dir, prompts, answers, [True, False], temperature=0.7) == [
        0.0,
        0.0,
    ]
    # A copy loaded twice gives 0 too (the computation, not only the shortcut).
    kl = kl_to_reference(
        tiny_model_dir, f"{tiny_model_dir}/.", prompts, answers, [True, False], temperature=0.7, device="cpu"
    )
    assert kl == pytest.approx([0.0, 0.0], abs=1e-5)


def test_answer_logprobs_match_a_direct_sum(tiny_model):
    model, tokenizer = tiny_model
    pairs = encode_answers(tokenizer, ["tell a story", "hi"], ["the cat", ""], [True, True], max_prompt_tokens=64)
    assert pairs[1][1] == [tokenizer.convert_tokens_to_ids("<|im_end|>")]  # empty answer: just the stop
    got = answer_logprobs(model, pairs, pad_id=tokenizer.pad_token_id, temperature=0.5, batch_size=2)
    for (query, response), value in zip(pairs, got, strict=True):
        ids = torch.tensor([query + response])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float() / 0.5, dim=-1)
        expected = sum(float(logp[len(query) - 1 + t, tok]) for t, tok in enumerate(response))
        assert value == pytest.approx(expected, abs=1e-4)


def test_eval_answers_are_one_per_prompt_and_seeded(tiny_model_dir):
    cfg = answer_config(temperature=0.7, top_p=1.0, max_new_tokens=5, seed=7, device="cpu")
    first = generate_answers(str(tiny_model_dir), ["tell a story", "say hello", "why"], cfg)
    again = generate_answers(str(tiny_model_dir), ["tell a story", "say hello", "why"], cfg)
    assert cfg.k == 1 and len(first) == 3
    assert [a.text for a in first] == [a.text for a in again]
    assert all(a.finish_reason in ("eos", "length") and a.token_count <= 5 for a in first)


def test_kl_against_another_model_is_nonzero_and_the_same_batched(tiny_model_dir, tmp_path):
    from worker.ml.evaluation import kl_to_reference_many
    from worker.ml.tiny import save_tiny_model

    other = tmp_path / "other"
    save_tiny_model(other, seed=1)
    prompts, answers, ended = ["tell a story", "say hello"], ["the cat is good .", "hello world"], [True, False]
    kl = kl_to_reference(other, tiny_model_dir, prompts, answers, ended, temperature=0.7, device="cpu")
    assert all(value != 0.0 for value in kl)
    # several versions at once: the same numbers, the reference itself exactly 0
    many = kl_to_reference_many(
        {"other": other, "ref": tiny_model_dir},
        {"other": (prompts, answers, ended), "ref": (prompts[:1], answers[:1], ended[:1])},
        tiny_model_dir,
        temperature=0.7,
        device="cpu",
    )
    assert many["other"] == pytest.approx(kl, abs=1e-5) and many["ref"] == [0.0]
