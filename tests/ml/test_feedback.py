"""Ratings -> rankings and pairs (worker/ml/feedback.py), on hand-worked judgments."""

import pytest

from worker.ml.data import Ranking, parse_ranking
from worker.ml.feedback import (
    OVERALL,
    Pair,
    Rated,
    combine_aspects,
    good_bad_scores,
    group_pairs,
    level_scores,
    normalized_weights,
    ranking_pairs,
    score_groups,
    to_multi_aspect_ranking,
    to_multi_aspect_rankings,
    to_pairs,
    to_ranking,
    to_rankings,
)

COMPLETIONS = ["a", "b", "c", "d", "e"]


def test_likert_scores_group_by_level_best_first_and_unrated_are_left_out():
    assert score_groups([5, 7, 5, None, 1]) == [[1], [0, 2], [4]]
    assert score_groups([3, 3, 3]) == [[0, 1, 2]]
    assert score_groups([None, None]) == []
    ranking = to_ranking(Rated("p", COMPLETIONS, {OVERALL: [5, 7, 5, None, 1]}, "p1"))
    assert ranking == Ranking("p", COMPLETIONS, [[1], [0, 2], [4]], "p1")
    # the ranking's levels: the unrated completion is -1 (the reward model ignores it)
    assert ranking.levels() == [1, 0, 1, -1, 2]


def test_equal_ratings_hold_no_preference():
    assert to_ranking(Rated("p", ["a", "b"], {OVERALL: [4, 4]})) is None
    assert to_ranking(Rated("p", ["a", "b"], {OVERALL: [4, None]})) is None
    assert to_pairs(Rated("p", ["a", "b", "c"], {OVERALL: [4, 4, 4]})) == []
    judgments = [Rated("p", ["a", "b"], {OVERALL: [4, 4]}), Rated("q", ["a", "b"], {OVERALL: [2, 6]}, "q")]
    assert to_rankings(judgments) == [Ranking("q", ["a", "b"], [[1], [0]], "q")]


def test_good_bad_makes_two_groups_good_above_bad():
    scores = good_bad_scores([True, False, None, True])
    assert scores == [1.0, 0.0, None, 1.0]
    ranking = to_ranking(Rated("p", ["a", "b", "c", "d"], {OVERALL: scores}))
    assert ranking is not None and ranking.groups == [[0, 3], [1]]
    # good > bad only: the two good ones tie, the unrated one is in no pair
    assert [(p.chosen, p.rejected) for p in ranking_pairs(ranking)] == [("a", "b"), ("d", "b")]
    assert to_ranking(Rated("p", ["a", "b"], {OVERALL: good_bad_scores([True, True])})) is None


def test_pairs_from_scores_every_two_different_scores_higher_chosen():
    rated = Rated("p", ["a", "b", "c", "d"], {OVERALL: [2, 7, 2, 5]}, "p9")
    pairs = to_pairs(rated)
    # groups [[1], [3], [0, 2]]: b>d, b>a, b>c, d>a, d>c; a and c tie
    assert {(p.chosen, p.rejected) for p in pairs} == {("b", "d"), ("b", "a"), ("b", "c"), ("d", "a"), ("d", "c")}
    assert len(pairs) == 5 and all(p.prompt == "p" and p.prompt_id == "p9" for p in pairs)
    assert group_pairs([[0], [1, 2], [3]]) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]


def test_pairwise_answers_give_their_pair_and_a_tie_gives_none():
    a_better = Ranking("p", ["left", "right"], [[1], [0]], "p1")
    assert ranking_pairs(a_better) == [Pair("p", "right", "left", "p1")]
    assert ranking_pairs(Ranking("p", ["left", "right"], [[0, 1]], "p1")) == []


def test_a_ranked_aspect_scores_minus_its_level():
    assert level_scores([0, 2, None, 1]) == [0.0, -2.0, None, -1.0]
    assert score_groups(level_scores([0, 2, None, 1, 0])) == [[0, 4], [3], [1]]


def test_weights_are_normalised_to_sum_one_and_checked():
    assert normalized_weights({"help": 3, "harm": 1}) == {"help": 0.75, "harm": 0.25}
    with pytest.raises(ValueError, match=r"weights\['harm'\]: must be a finite number >= 0"):
        normalized_weights({"help": 1, "harm": -1})
    with pytest.raises(ValueError, match="at least one aspect needs a weight above 0"):
        normalized_weights({"help": 0, "harm": 0})


def test_weighted_combination_by_hand():
    scores = {"help": [7, 1, 4, 4], "harm": [1, 7, 4, None]}
    # weights 3:1 -> 0.75 / 0.25: a = 5.5, b = 2.5, c = 4, d misses harm -> not rated
    assert combine_aspects(scores, {"help": 3, "harm": 1}) == [5.5, 2.5, 4.0, None]
    # the other way round: b comes first
    assert combine_aspects(scores, {"help": 1, "harm": 3})[:3] == [2.5, 5.5, 4.0]
    # a zero weight ignores an aspect, missing scores included
    assert combine_aspects(scores, {"help": 1, "harm": 0}) == [7.0, 1.0, 4.0, 4.0]
    rated = Rated("p", ["a", "b", "c", "d"], scores)
    assert to_ranking(rated, weights={"help": 3, "harm": 1}).groups == [[0], [2], [1]]
    assert to_ranking(rated, weights={"help": 1, "harm": 3}).groups == [[1], [2], [0]]
    # equal weights tie all three: no preference left
    assert to_ranking(rated, weights={"help": 1, "harm": 1}) is None
    with pytest.raises(ValueError, match="no scores for aspect"):
        combine_aspects(scores, {"honest": 1})


def test_ranges_put_aspects_on_one_scale_before_weighting():
    # a 7-point Likert aspect and a ranked aspect of 3 completions (levels 0..2 -> scores -2..0)
    scores = {"help": [7, 4, 1], "rank": level_scores([2, 0, 1])}
    raw = combine_aspects(scores, {"help": 1, "rank": 1})
    assert raw == [2.5, 2.0, 0.0]  # the 7-point scale dominates
    scaled = combine_aspects(scores, {"help": 1, "rank": 1}, ranges={"help": (1, 7), "rank": (-2, 0)})
    assert scaled == pytest.approx([0.5, 0.75, 0.25])  # (1 + 0) / 2, (0.5 + 1) / 2, (0 + 0.5) / 2
    with pytest.raises(ValueError, match=r"ranges\['help'\]: high must be above low"):
        combine_aspects(scores, {"help": 1}, ranges={"help": (7, 1)})


def test_multi_aspect_judgment_becomes_per_aspect_rankings_of_the_same_completions():
    rated = Rated(
        "p",
        ["a", "b", "c"],
        {"help": [7, 3, 5], "harm": [6, 6, 6], "honest": [None, 2, 1], OVERALL: level_scores([1, 0, 2])},
        "p1",
    )
    ranking = to_multi_aspect_ranking(rated, ["help", "harm", "honest", "fair"])
    # harm ties everything (no preference) and fair was not rated: both absent
    assert ranking.aspect_groups == {"help": [[0], [2], [1]], "honest": [[1], [2]]}
    assert ranking.groups == [[1], [0], [2]]  # the optional overall ranking
    assert ranking.levels("honest") == [-1, 0, 1] and ranking.levels("fair") == [-1, -1, -1]
    assert [(p.chosen, p.rejected) for p in ranking_pairs(ranking, aspect="honest")] == [("b", "c")]
    only_ties = Rated("q", ["a", "b"], {"help": [4, 4]})
    assert to_multi_aspect_ranking(only_ties, ["help"]) is None
    assert to_multi_aspect_rankings([rated, only_ties], ["help"]) == [
        Ranking("p", ["a", "b", "c"], [[1], [0], [2]], "p1", aspect_groups={"help": [[0], [2], [1]]})
    ]


def test_scores_must_match_the_completions():
    with pytest.raises(ValueError, match=r"scores\['help'\]: 2 scores for 3 completions"):
        Rated("p", ["a", "b", "c"], {"help": [1, 2]})


def test_aspect_rankings_round_trip_through_jsonl():
    record = {
        "prompt": "p",
        "completions": ["a", "b", "c"],
        "aspects": {"help": [[0], [2], [1]], "honest": [[1], [2]]},
        "prompt_id": "p1",
    }
    parsed = parse_ranking(record, "line 1")
    assert parsed.groups == [] and parsed.aspect_groups == record["aspects"]
    with pytest.raises(ValueError, match=r"line 3: aspects\['help'\] index 5 is not a completion index"):
        parse_ranking({**record, "aspects": {"help": [[0], [5]]}}, "line 3")
    with pytest.raises(ValueError, match="line 3: missing field 'ranking'"):
        parse_ranking({"prompt": "p", "completions": ["a"]}, "line 3")
