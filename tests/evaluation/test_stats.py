"""The win-rate and leaderboard maths (app/evaluation/stats.py), on cases worked out by hand."""

from __future__ import annotations

import math

import pytest

from app.evaluation.stats import ELO_SCALE, Judgment, bradley_terry, per_labeler, wilson, win_rate


def J(outcome: str, labeler: str = "x", a: int = 1, b: int = 2) -> Judgment:
    return Judgment(a, b, outcome, labeler)  # type: ignore[arg-type]


def test_wilson_matches_the_published_interval_for_7_of_10():
    """Wilson (1927) for 7/10 at 95%: centre (7 + 1.92)/(10 + 3.84) = 0.6448, half-width
    1.96·sqrt(0.21·10 + 0.96)/13.84 = 0.2477, so 0.3968–0.8922 (as in Newcombe 1998, table I)."""
    interval = wilson(7, 10)
    assert interval.rate == 0.7
    assert interval.low == pytest.approx(0.3968, abs=1e-4) and interval.high == pytest.approx(0.8922, abs=1e-4)
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == pytest.approx(1.0)
    assert wilson(0, 0).rate is None


def test_a_hand_computed_case_with_ties_and_both_bad():
    """10 judgments of A (1) vs B (2): A wins 5, B wins 2, 2 ties, 1 both bad.
    Ties split: (5 + 3/2) / 10 = 0.65. Ties excluded: 5 / 7 = 0.7143, Wilson(5, 7) = 0.3589–0.9178.
    Tie share 3/10, both-bad share 1/10. Per-judgment scores: five 1s, two 0s, three ½s:
    mean 0.65, variance (5·1 + 3·¼)/10 − 0.65² = 0.575 − 0.4225 = 0.1525; n_eff = 10·0.65·0.35/0.1525
    = 14.918, and the split interval is Wilson(0.65·n_eff, n_eff): z² = 3.8415, denominator
    1 + z²/n_eff = 1.2575, centre (0.65 + z²/(2·n_eff))/1.2575 = 0.6193, half-width
    1.96·sqrt(0.2275/n_eff + z²/(4·n_eff²))/1.2575 = 0.2180, so 0.4013–0.8373 (narrower than
    Wilson's 0.3537–0.8631 for 6.5/10, which would treat every tie as a coin flip)."""
    judgments = [J("a")] * 5 + [J("b")] * 2 + [J("tie")] * 2 + [J("both_bad")]
    rate = win_rate(judgments, 1, 2)
    assert (rate.n, rate.wins, rate.losses, rate.ties, rate.both_bad) == (10, 5, 2, 2, 1)
    assert rate.split.rate == pytest.approx(0.65)
    n_eff = 10 * 0.65 * 0.35 / 0.1525
    expected = wilson(0.65 * n_eff, n_eff)
    assert rate.split.low == pytest.approx(expected.low) and rate.split.high == pytest.approx(expected.high)
    assert rate.split.low == pytest.approx(0.4013, abs=1e-4) and rate.split.high == pytest.approx(0.8373, abs=1e-4)
    assert rate.excluded.rate == pytest.approx(5 / 7)
    assert rate.excluded.low == pytest.approx(0.3589, abs=1e-4) and rate.excluded.high == pytest.approx(
        0.9178, abs=1e-4
    )
    assert rate.tie_share == pytest.approx(0.3) and rate.both_bad_share == pytest.approx(0.1)
    # The same judgments seen from B's side mirror A's.
    mirrored = win_rate(judgments, 2, 1)
    assert mirrored.split.rate == pytest.approx(0.35) and mirrored.split.low == pytest.approx(1 - rate.split.high)


def test_without_ties_the_split_interval_is_plain_wilson():
    rate = win_rate([J("a")] * 7 + [J("b")] * 3, 1, 2)
    assert (rate.split.low, rate.split.high) == pytest.approx((wilson(7, 10).low, wilson(7, 10).high))
    assert rate.excluded == rate.split


def test_only_ties_give_an_even_split_and_no_excluded_rate():
    rate = win_rate([J("tie")] * 3 + [J("both_bad")], 1, 2)
    assert rate.split.rate == 0.5 and rate.split.low < 0.5 < rate.split.high
    assert rate.excluded.rate is None and rate.both_bad_share == 0.25


def test_judgments_of_the_pair_in_either_order_count_and_others_do_not():
    judgments = [Judgment(2, 1, "b", "x"), Judgment(1, 2, "a", "x"), Judgment(1, 3, "a", "x")]
    rate = win_rate(judgments, 1, 2)
    assert (rate.wins, rate.losses, rate.n) == (2, 0, 2)


def test_per_labeler_splits_the_counts():
    judgments = [J("a", "ann"), J("a", "ann"), J("b", "bob"), J("tie", "bob")]
    rates = per_labeler(judgments, 1, 2)
    assert set(rates) == {"ann", "bob"}
    assert rates["ann"].split.rate == 1.0 and rates["bob"].split.rate == pytest.approx(0.25)


def test_bradley_terry_recovers_a_known_ratio_and_its_fisher_interval():
    """A beats B 30 times of 40: the maximum-likelihood strength ratio is 30/10 = 3, so B's Elo is
    1000 − 400·log10(3) = 809.2. Fisher information of the log-ratio: 40·¾·¼ = 7.5, standard error
    1/sqrt(7.5) = 0.3651, so B's interval is 809.2 ± 1.96·0.3651·173.7 = 809.2 ± 124.3."""
    judgments = [J("a")] * 30 + [J("b")] * 10
    board = bradley_terry(judgments, anchor=1, prior=0)
    top, second = board.ratings
    assert (top.version, top.elo, top.elo_low) == (1, 1000.0, None)
    assert second.strength == pytest.approx(1 / 3, rel=1e-6)
    assert second.elo == pytest.approx(1000 - 400 * math.log10(3), abs=1e-3)
    half = 1.959964 * ELO_SCALE / math.sqrt(7.5)
    assert second.elo_low == pytest.approx(second.elo - half, abs=1e-3)
    assert second.elo_high == pytest.approx(second.elo + half, abs=1e-3)
    assert (second.judgments, second.wins) == (40, 10)


def test_bradley_terry_counts_ties_as_half_wins():
    """A 2 wins, B 1 win, 2 ties: A 3 points, B 2, so the ratio is 3/2."""
    judgments = [J("a"), J("a"), J("b"), J("tie"), J("both_bad")]
    board = bradley_terry(judgments, anchor=2, prior=0)
    assert {r.version: r.strength for r in board.ratings}[1] == pytest.approx(1.5, rel=1e-6)


def test_bradley_terry_on_three_versions_matches_a_consistent_model():
    """Judgments drawn exactly from strengths 1 : 2 : 4 (each pair's win counts in proportion)
    are fitted back to those strengths: 1 vs 2 → 10:20, 2 vs 3 → 10:20, 1 vs 3 → 6:24."""
    judgments = (
        [J("b", a=1, b=2)] * 20
        + [J("a", a=1, b=2)] * 10
        + [J("b", a=2, b=3)] * 20
        + [J("a", a=2, b=3)] * 10
        + [J("b", a=1, b=3)] * 24
        + [J("a", a=1, b=3)] * 6
    )
    board = bradley_terry(judgments, anchor=1, prior=0)
    strengths = {r.version: r.strength for r in board.ratings}
    assert strengths == pytest.approx({1: 1.0, 2: 2.0, 3: 4.0}, rel=1e-6)
    assert [r.version for r in board.ratings] == [3, 2, 1]


def test_a_version_that_never_won_gets_a_finite_rating_with_the_prior():
    judgments = [J("a")] * 5
    with pytest.raises(ValueError, match="prior"):
        bradley_terry(judgments, anchor=1, prior=0)
    board = bradley_terry(judgments, anchor=1)
    loser = board.ratings[-1]
    assert loser.version == 2 and math.isfinite(loser.elo) and loser.elo < 1000 and loser.elo_low < loser.elo
