"""Which handout order the active-learning measurement supports for a team, read off the team's
own pair agreement (docs/active-learning.md, "Label noise decides it").

The measurement found that label noise decides whether an active order saves rankings: with
simulated labelers who agree on InstructGPT's 72.6% of completion pairs no order was shown to beat
the default, at 80% the `information` order gained a little, at 85% it saved 11-39% of the
rankings for the same reward-model accuracy. The admin pages show this next to the setting, with the team's measured
agreement (the same measure: the share of completion pairs two labelers order alike on a task both
ranked), so the choice is made on the team's numbers and not on a hope. A pure function: the
caller passes the agreement (app/admin/stats.project_agreement)."""

from __future__ import annotations

from dataclasses import dataclass

MIN_PAIRS = 100
"""Compared completion pairs before the team's agreement is read: about 17 overlapped K = 4
rankings; fewer leave the share several points either way."""
SMALL_GAIN_FROM = 80.0
"""Pair agreement (%) from which the measurement saw `information` gain: +0.2 points at 80%."""
CLEAR_GAIN_FROM = 85.0
"""Pair agreement (%) at which it saved 11-39% of the rankings (50 seeds)."""


@dataclass(frozen=True)
class HandoutAdvice:
    supported: tuple[str, ...]
    """The handout orders the measurement supports at this agreement; empty: too few overlapped
    pairs to tell."""
    agreement_pct: float | None
    pairs: int
    text: str


def handout_advice(agreement_pct: float | None, pairs: int) -> HandoutAdvice:
    """The advice for a team whose labelers agree on `agreement_pct` % of `pairs` compared
    completion pairs."""
    if agreement_pct is None or pairs < MIN_PAIRS:
        text = (
            f"Too few overlapped completion pairs to read the team's agreement ({pairs} of the {MIN_PAIRS} "
            "needed): set overlap to 2 for some tasks. Until then keep the default order: at InstructGPT's "
            "72.6% pair agreement no active order was measured to need fewer rankings than it."
        )
        return HandoutAdvice((), agreement_pct, pairs, text)
    measured = f"Your labelers agree on {agreement_pct:.1f}% of {pairs} compared completion pairs."
    if agreement_pct >= CLEAR_GAIN_FROM:
        text = (
            f"{measured} With labelers agreeing on 85%, the information order reached the default order's "
            "reward-model accuracy with 11-39% fewer rankings (50 simulated seeds): use it."
        )
        return HandoutAdvice(("information",), agreement_pct, pairs, text)
    if agreement_pct >= SMALL_GAIN_FROM:
        text = (
            f"{measured} At 80% the information order was 0.2 accuracy points above the default order "
            "(standard error 0.15): a small gain, about one standard error; either order will do."
        )
        return HandoutAdvice(("default", "information"), agreement_pct, pairs, text)
    text = (
        f"{measured} At InstructGPT's 72.6% no active order was shown to need fewer rankings than the "
        "default one (information, after the 30 ranked tasks it waits for: +0.14 accuracy points, standard "
        "error 0.15, on one simulated pool and -0.11, standard error 0.18, on another; noisy labelers rank "
        "the near ties an active order picks almost at random): keep the default."
    )
    return HandoutAdvice(("default",), agreement_pct, pairs, text)
