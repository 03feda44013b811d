"""The consensus and agreement numbers, checked against values worked out by hand."""

import pytest

from app.exports.consensus import consensus, groups_by_score, kendall_tau_b, kendall_w
from app.labeling.partition import rank_positions


def test_single_ranking_is_its_own_consensus_without_agreement():
    result = consensus([[[3], [1, 2], [4]]])
    assert result.groups == [[3], [1, 2], [4]]
    assert result.mean_rank == {3: 1.0, 1: 2.5, 2: 2.5, 4: 4.0}
    assert result.n_rankings == 1 and result.kendall_w is None and result.mean_kendall_tau_b is None


def test_identical_and_reversed_rankings():
    same = consensus([[[1], [2], [3], [4]]] * 3)
    assert same.kendall_w == pytest.approx(1.0) and same.mean_kendall_tau_b == pytest.approx(1.0)
    opposite = consensus([[[1], [2], [3], [4]], [[4], [3], [2], [1]]])
    assert opposite.kendall_w == pytest.approx(0.0) and opposite.mean_kendall_tau_b == pytest.approx(-1.0)
    assert opposite.groups == [[1, 2, 3, 4]]  # every mean rank is 2.5: a full tie


def test_three_labelers_three_items_by_hand():
    # ranks a,b,c: (1,2,3), (1,3,2), (2,1,3); rank sums 4, 6, 8; mean sum 6; S = 8
    # W = 12·8 / (3²·(27−3)) = 96/216
    result = consensus([[["a"], ["b"], ["c"]], [["a"], ["c"], ["b"]], [["b"], ["a"], ["c"]]])
    assert result.kendall_w == pytest.approx(96 / 216)
    assert result.groups == [["a"], ["b"], ["c"]]
    assert result.mean_rank == pytest.approx({"a": 4 / 3, "b": 2.0, "c": 8 / 3})
    # tau between the pairs: (1)-(2) one discordant of 3 -> 1/3; (1)-(3) 1/3; (2)-(3) C=1,D=2 -> -1/3
    assert result.mean_kendall_tau_b == pytest.approx((1 / 3 + 1 / 3 - 1 / 3) / 3)


def test_ties_use_the_corrected_formulas():
    a = rank_positions([[1, 2], [3]])  # ranks 1.5, 1.5, 3
    b = rank_positions([[1], [2], [3]])  # ranks 1, 2, 3
    # pairs (1,2): a tied; (1,3) concordant; (2,3) concordant -> C=2, D=0, n0=3, ties_a=1, ties_b=0
    assert kendall_tau_b(a, b) == pytest.approx(2 / (2 * 3) ** 0.5)
    # rank sums 2.5, 3.5, 6; mean 4; S = 2.25+0.25+4 = 6.5; T = 2³−2 = 6; W = 78 / (4·24 − 2·6) = 78/84
    assert kendall_w([a, b]) == pytest.approx(78 / 84)


def test_undefined_agreement_when_everything_is_tied():
    all_tied = rank_positions([[1, 2, 3, 4]])
    assert kendall_tau_b(all_tied, all_tied) is None
    assert kendall_w([all_tied, all_tied]) is None
    assert consensus([[[1, 2, 3, 4]], [[1, 2, 3, 4]]]).mean_kendall_tau_b is None


def test_groups_by_score_and_mismatched_rankings():
    assert groups_by_score({5: 2.0, 6: 1.0, 7: 2.0}) == [[6], [5, 7]]
    with pytest.raises(ValueError, match="ranking 1"):
        consensus([[[1], [2]], [[1], [3]]])
    with pytest.raises(ValueError):
        consensus([])
