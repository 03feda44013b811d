"""Feedback-form agreement (app/admin/form_agreement.py): overall and per labeler, by hand."""

import pytest

from app.admin.form_agreement import categorical_agreement, pairwise_category, scale_agreement


def test_pairwise_category_is_in_completion_terms():
    # Task positions: completion 7 first, 8 second. The sides a labeler saw do not matter.
    assert pairwise_category([[7], [8]], none_acceptable=False, first_id=7) == "first"
    assert pairwise_category([[8], [7]], none_acceptable=False, first_id=7) == "second"
    assert pairwise_category([[8, 7]], none_acceptable=False, first_id=7) == "tie"
    assert pairwise_category([[7, 8]], none_acceptable=True, first_id=7) == "both_bad"


def test_categorical_agreement_overall_and_per_labeler():
    # Users 1, 2, 3. Task 10: all "first". Task 11: 1 and 2 "first", 3 "second".
    # Task 12: 1 "tie", 2 "tie". Task 13: only user 3 (unpairable, ignored).
    units = {
        10: {1: "first", 2: "first", 3: "first"},
        11: {1: "first", 2: "first", 3: "second"},
        12: {1: "tie", 2: "tie"},
        13: {3: "both_bad"},
    }
    result = categorical_agreement("pairwise", "Pairwise verdicts", units)
    assert (result.units, result.judgments, result.comparisons, result.agreeing) == (3, 8, 7, 5)
    assert result.agreement_pct == pytest.approx(100 * 5 / 7)
    # Fleiss: P_10 = 1, P_11 = (2*1) / (3*2) = 1/3, P_12 = 1 -> P-bar = 7/9.
    # Ratings: first 5, second 1, tie 2 of 8 -> P_e = (25 + 1 + 4) / 64 = 30/64.
    # kappa = (7/9 - 30/64) / (1 - 30/64) = (448 - 270) / 576 / (34/64) = 178/306.
    assert result.kappa == pytest.approx(178 / 306)
    # User 3 vs others: pairs (first, first) x2 on task 10, (second, first) x2 on task 11.
    # p_o = 1/2; user 3's marginal first 2/4, second 2/4; others' first 4/4 -> p_e = 1/2 -> 0.
    user3 = result.per_labeler[3]
    assert (user3.units, user3.comparisons, user3.agreeing) == (2, 4, 2)
    assert user3.kappa == pytest.approx(0.0)
    # User 1 vs others: (f,f) (f,f) on 10; (f,f) (f,s) on 11; (t,t) on 12 -> p_o = 4/5.
    # User 1: first 4, tie 1; others: first 3, second 1, tie 1 -> p_e = (4*3 + 1*1) / 25 = 13/25.
    # kappa = (20/25 - 13/25) / (12/25) = 7/12.
    user1 = result.per_labeler[1]
    assert (user1.units, user1.comparisons, user1.agreeing) == (3, 5, 4)
    assert user1.kappa == pytest.approx(7 / 12)
    assert 13 not in {u for u in result.per_labeler}  # users, not tasks, key the table


def test_scale_agreement_matches_alpha_by_hand():
    # The three-unit example of test_agreement_forms_stats: [1,1], [2,3], [3,3] as users 1 and 2.
    units = {("t", 1): {1: 1, 2: 1}, ("t", 2): {1: 2, 2: 3}, ("t", 3): {1: 3, 2: 3}, ("t", 4): {1: 5}}
    result = scale_agreement("likert", "Likert ratings", units)
    assert result.alpha_interval == pytest.approx(24 / 29)
    assert result.alpha_ordinal == pytest.approx(7 / 9)
    assert (result.units, result.comparisons, result.agreeing) == (3, 3, 2)
    # Two labelers: each one's pairs against the other are the same units, so the same alpha.
    assert result.per_labeler[1].alpha_interval == pytest.approx(24 / 29)
    assert result.per_labeler[2].alpha_ordinal == pytest.approx(7 / 9)
    ranked = scale_agreement("aspect:x", "x (ranked)", units, interval=False)
    assert ranked.alpha_interval is None and ranked.per_labeler[1].alpha_interval is None
    assert ranked.alpha_ordinal == pytest.approx(7 / 9)


def test_scale_agreement_singles_out_the_outlier():
    # Users 1 and 2 agree on every completion, user 3 reverses the scale.
    units = {c: {1: v, 2: v, 3: 8 - v} for c, v in enumerate([1, 3, 5, 7, 2, 6])}
    result = scale_agreement("likert", "Likert ratings", units)
    per = result.per_labeler
    assert per[3].alpha_interval < 0 < per[1].alpha_interval
    assert per[1].alpha_interval == pytest.approx(per[2].alpha_interval)
    assert per[3].agreement_pct == 0 and per[1].agreement_pct == 50
    assert result.alpha_interval is not None and result.alpha_interval < per[1].alpha_interval


def test_nothing_overlapped_is_undefined_not_zero():
    result = scale_agreement("likert", "Likert ratings", {1: {1: 4}, 2: {2: 5}})
    assert result.units == 0 and result.alpha_ordinal is None and result.agreement_pct is None
    assert result.per_labeler == {}
    same = categorical_agreement("good_bad", "Good / bad", {1: {1: "good", 2: "good"}})
    assert same.agreement_pct == 100 and same.kappa is None  # all "good": kappa is 0/0
