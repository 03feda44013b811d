import pytest

from app.labeling.partition import InvalidRanking, pairs_from_groups, rank_positions, validate_partition


def test_pairs_skip_ties_and_record_margin():
    assert pairs_from_groups([[1], [2, 3], [4]]) == [(1, 2, 1), (1, 3, 1), (1, 4, 2), (2, 4, 1), (3, 4, 1)]
    assert pairs_from_groups([[1, 2, 3, 4]]) == []


def test_rank_positions_share_tied_ranks():
    assert rank_positions([[7], [8, 9], [10]]) == {7: 1, 8: 2.5, 9: 2.5, 10: 4}


@pytest.mark.parametrize(
    "groups, message",
    [
        ([[1], [2], [2], [3, 4]], "appears more than once"),
        ([[1], [2], [3]], "missing"),
        ([[1], [2], [3], [4], [99]], "not part of this task"),
        ([[1], [], [2, 3, 4]], "non-empty"),
        ([["a"], [1, 2, 3, 4]], "not a completion id"),
        ([], "non-empty list"),
    ],
)
def test_invalid_partitions_name_the_problem(groups, message):
    with pytest.raises(InvalidRanking, match=message):
        validate_partition(groups, [1, 2, 3, 4])
