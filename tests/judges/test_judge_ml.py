"""worker/ml/judge.py: the prompt, parsing answers, combining orders, the local judge (tiny model)."""

from __future__ import annotations

import pytest

from worker.ml.judge import (
    DEFAULT_TEMPLATE,
    LocalJudge,
    TemplateError,
    check_template,
    combine_orders,
    groups_by_score,
    parse_ranking,
    presentation_orders,
    render_prompt,
    to_task_order,
)

JUDGE_WORDS = [str(i) for i in range(1, 10)] + [">", "Ranking", ":", "Answer", "#", "Yes", "No", "Question"]
"""Words the tiny tokenizer must know for the judge's prompt and answers (others become [UNK])."""


@pytest.mark.parametrize(
    ("answer", "k", "expected"),
    [
        ("Ranking: 3 > 1 > 2 > 4", 4, [2, 0, 1, 3]),
        ("Let me think. Answer 2 is wrong.\nRanking: 2 > 4 > 1 > 3\n", 4, [1, 3, 0, 2]),
        ("ranking: [3, 1, 2]", 3, [2, 0, 1]),
        ("Ranking: 2 > 1 > 3", 4, [1, 0, 2, 3]),  # the worst left out is implied
        ("Ranking: 2 > 2 > 1 > 3 > 4", 4, [1, 0, 2, 3]),  # a repeat is ignored
        ("1 > 3 > 2", 3, [0, 2, 1]),  # no "Ranking:" but a complete line
        ("Ranking: 5 > 1 > 2", 3, None),  # 5 is no answer's number; 3 and one more missing
        ("They are all good.", 4, None),
        ("Ranking: 1.5 > 2 > 10", 4, None),  # decimals and 10 are not numbers 1..k
        ("", 4, None),
    ],
)
def test_parse_ranking(answer, k, expected):
    assert parse_ranking(answer, k) == expected


def test_the_default_template_renders_numbered_answers():
    check_template(DEFAULT_TEMPLATE)
    text = render_prompt(DEFAULT_TEMPLATE, prompt="Say hi", completions=["hi", "hello", "hey"])
    assert "### Answer 1\nhi" in text and "### Answer 3\nhey" in text
    assert "Rank all 3 answers" in text and "Say hi" in text


@pytest.mark.parametrize(
    ("template", "needle"),
    [("{completions} only", "{prompt}"), ("{prompt} only", "{completions}"), ("{prompt} {completions} {oops}", "oops")],
)
def test_a_broken_template_is_refused_with_the_reason(template, needle):
    with pytest.raises(TemplateError, match=needle.strip("{}")):
        check_template(template)


def test_presentation_orders_are_the_given_order_its_reverse_then_rotations():
    assert presentation_orders(4, 1) == [[0, 1, 2, 3]]
    assert presentation_orders(4, 2) == [[0, 1, 2, 3], [3, 2, 1, 0]]
    assert presentation_orders(3, 3) == [[0, 1, 2], [2, 1, 0], [1, 2, 0]]
    assert to_task_order([0, 2, 1], shown=[2, 1, 0]) == [2, 0, 1]


def test_pure_position_bias_cancels_into_a_tie():
    # A judge that always answers "1 > 2 > 3 > 4" whatever it is shown:
    shown = presentation_orders(4, 2)
    answers = [to_task_order([0, 1, 2, 3], s) for s in shown]
    assert combine_orders(answers, 4) == [[0, 1, 2, 3]]


def test_consistent_answers_survive_and_disagreements_tie():
    assert combine_orders([[2, 0, 1, 3], [2, 0, 1, 3]], 4) == [[2], [0], [1], [3]]
    # The orders agree that 2 is best and 3 worst, and disagree about 0 and 1: those tie.
    assert combine_orders([[2, 0, 1, 3], [2, 1, 0, 3]], 4) == [[2], [0, 1], [3]]


def test_the_local_judge_always_answers_a_complete_order():
    from worker.ml.tiny import tiny_causal_lm, tiny_tokenizer

    model, tokenizer = tiny_causal_lm(tiny_tokenizer(JUDGE_WORDS), seed=3)
    judge = LocalJudge(model=model, tokenizer=tokenizer)
    rendered = render_prompt(DEFAULT_TEMPLATE, prompt="write a poem", completions=["a cat", "a dog", "the sun", "bad"])
    order = judge.rank(rendered, 4)
    assert sorted(order) == [0, 1, 2, 3]
    assert judge.rank(rendered, 4) == order  # scoring, not sampling: the same answer again


def test_the_local_judge_picks_the_most_likely_number_first():
    """With the prompt's end forced to make one number likelier, that number comes first: the
    scores are the model's own log-probabilities of each number after "Ranking:"."""
    import torch

    from worker.ml.tiny import tiny_causal_lm, tiny_tokenizer

    model, tokenizer = tiny_causal_lm(tiny_tokenizer(JUDGE_WORDS), seed=0)
    three = tokenizer.convert_tokens_to_ids("3")
    with torch.no_grad():
        model.lm_head.weight[three] += 5.0  # tied embeddings: the unembedding row of "3" grows
    judge = LocalJudge(model=model, tokenizer=tokenizer)
    order = judge.rank(render_prompt(DEFAULT_TEMPLATE, prompt="hi", completions=["a", "b", "c", "d"]), 4)
    assert order[0] == 2


def test_the_pointwise_judge_scores_each_answer_alone():
    """log p(Yes) - log p(No) per answer: the same score wherever an answer is listed."""
    from worker.ml.tiny import tiny_causal_lm, tiny_tokenizer

    model, tokenizer = tiny_causal_lm(tiny_tokenizer(JUDGE_WORDS), seed=1)
    judge = LocalJudge(model=model, tokenizer=tokenizer)
    forward = judge.scores("write a poem", ["a cat", "a dog", "the sun"])
    backward = judge.scores("write a poem", ["the sun", "a dog", "a cat"])
    assert forward == pytest.approx(backward[::-1])
    assert len(set(forward)) == 3


def test_groups_by_score_ties_equal_scores_best_first():
    assert groups_by_score([0.5, 2.0, 0.5, -1.0]) == [[1], [0, 2], [3]]
