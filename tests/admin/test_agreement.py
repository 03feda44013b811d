"""Agreement measures on rankings worked out by hand (values checked against the tau-b formula
(C - D) / sqrt((n0 - n1)(n0 - n2)) on paper)."""

import math

import pytest

from app.admin.agreement import agreement_report, compare_rankings, verdict_agreement, verdict_outcome


def test_identical_and_reversed_rankings():
    same = compare_rankings([[1], [2], [3], [4]], [[1], [2], [3], [4]])
    assert (same.pairs, same.agreeing, same.tau_b) == (6, 6, 1.0)
    reversed_ = compare_rankings([[1], [2], [3], [4]], [[4], [3], [2], [1]])
    assert (reversed_.pairs, reversed_.agreeing, reversed_.tau_b) == (6, 0, -1.0)


def test_one_adjacent_swap():
    # 5 concordant pairs, 1 discordant: tau = (5 - 1) / 6.
    result = compare_rankings([[1], [2], [3], [4]], [[2], [1], [3], [4]])
    assert result.agreeing == 5
    assert result.tau_b == pytest.approx(4 / 6)


def test_tie_on_one_side_uses_tau_b_denominator():
    # a ties 1 and 2; b orders them. C = 5, D = 0, n0 = 6, n1 = 1, n2 = 0 -> 5 / sqrt(5 * 6).
    result = compare_rankings([[1, 2], [3], [4]], [[1], [2], [3], [4]])
    assert result.tau_b == pytest.approx(5 / math.sqrt(30))  # 0.91287...
    assert result.agreeing == 5  # the tie-vs-order pair is a disagreement


def test_ties_on_both_sides():
    # Both tie (1, 2): agree, and it is in neither C nor D. a ties (3, 4), b does not.
    # C = 4, D = 0, n1 = 2, n2 = 1 -> 4 / sqrt((6 - 2) * (6 - 1)).
    result = compare_rankings([[1, 2], [3, 4]], [[1, 2], [3], [4]])
    assert result.tau_b == pytest.approx(4 / math.sqrt(20))
    assert (result.pairs, result.agreeing) == (6, 5)


def test_all_tied_has_no_tau():
    result = compare_rankings([[1, 2, 3, 4]], [[1], [2], [3], [4]])
    assert result.tau_b is None
    assert result.agreeing == 0
    both_tied = compare_rankings([[1, 2, 3]], [[3, 2, 1]])
    assert both_tied.tau_b is None and both_tied.agreeing == 3


def test_only_shared_completions_are_compared():
    result = compare_rankings([[1], [2], [9]], [[2], [1], [3]])
    assert result.pairs == 1 and result.agreeing == 0 and result.tau_b == -1.0


def test_report_per_labeler_and_overall():
    rankings = {
        10: {1: [[1], [2], [3], [4]], 2: [[1], [2], [3], [4]], 3: [[4], [3], [2], [1]]},
        11: {1: [[5], [6], [7], [8]], 2: [[6], [5], [7], [8]]},
        12: {3: [[9], [10], [11], [12]]},  # one ranking: nothing to compare
    }
    report = agreement_report(rankings)
    # Comparisons: t10 (1,2) tau 1 agree 6/6; t10 (1,3) tau -1 0/6; t10 (2,3) tau -1 0/6; t11 (1,2) tau 2/3 5/6.
    assert report.overall.comparisons == 4
    assert report.overall.tasks == {10, 11}
    assert report.overall.agreement_pct == pytest.approx(100 * 11 / 24)
    assert report.overall.mean_tau_b == pytest.approx((1 - 1 - 1 + 2 / 3) / 4)

    one = report.per_labeler[1]
    assert one.comparisons == 3
    assert one.agreement_pct == pytest.approx(100 * 11 / 18)
    assert one.mean_tau_b == pytest.approx((1 - 1 + 2 / 3) / 3)
    three = report.per_labeler[3]
    assert three.agreement_pct == 0.0 and three.mean_tau_b == -1.0
    assert set(report.per_labeler) == {1, 2, 3}


def test_report_skips_undefined_tau_in_mean():
    report = agreement_report({1: {1: [[1, 2, 3]], 2: [[1], [2], [3]]}, 2: {1: [[1], [2]], 2: [[1], [2]]}})
    assert report.overall.comparisons == 2
    assert report.overall.mean_tau_b == 1.0
    assert report.overall.agreement_pct == pytest.approx(100 * 1 / 4)
    assert agreement_report({}).overall.agreement_pct is None


def test_verdict_outcomes_name_the_winner_not_the_side():
    assert verdict_outcome([[7], [8]], none_acceptable=False) == 7
    assert verdict_outcome([[8], [7]], none_acceptable=False) == 8
    assert verdict_outcome([[7, 8]], none_acceptable=False) == "tie"
    assert verdict_outcome([[7, 8]], none_acceptable=True) == "both_bad"


def test_verdict_agreement_counts_labeler_pairs_with_the_same_verdict_ties_included():
    outcomes = {
        20: {1: 7, 2: 7, 3: 8},  # pairs (1,2) agree, (1,3) and (2,3) do not
        21: {1: "tie", 2: "tie", 3: "both_bad"},  # a tie agrees with a tie; both bad is its own verdict
        22: {1: 9},  # one judgment: nothing to compare
    }
    report = verdict_agreement(outcomes)
    assert (report.overall.comparisons, report.overall.agreeing, report.overall.tasks) == (6, 2, {20, 21})
    assert report.overall.agreement_pct == pytest.approx(100 * 2 / 6)
    assert report.per_labeler[1].agreement_pct == 50.0 and report.per_labeler[1].comparisons == 4
    assert report.per_labeler[3].agreement_pct == 0.0 and set(report.per_labeler) == {1, 2, 3}
    assert verdict_agreement({}).overall.agreement_pct is None
