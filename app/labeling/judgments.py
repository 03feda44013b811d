"""The answers of the kinds stored as a Ranking ("ranking", "pairwise_eval", "pairwise"): what the
labeler sent, as ranking groups (a RankingIn) for RankingRecorder (app/labeling/recorders.py).

A verdict (pairwise kinds) names sides, "A" and "B" in the labeler's own display order, never ids:
A better → [[a], [b]]; tie → [[a, b]]; both bad → [[a, b]] with none_acceptable. Critiques are keyed
by completion id on ranking tasks and by side ("A", "B") on pairwise ones; both are stored by id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import get_args

from pydantic import ValidationError

from app.labeling.errors import InvalidSubmission
from app.labeling.schemas import (
    FormInput,
    RankingIn,
    Submission,
    SubmissionIn,
    Verdict,
    critiques_from_form,
    describe_validation_error,
    form_int,
    ranking_from_form,
)

VERDICTS: tuple[str, ...] = get_args(Verdict)


# ---- ranking ------------------------------------------------------------------------------------


def ranking_judgment(data: Submission, display_order: Sequence[int]) -> RankingIn:
    if isinstance(data, RankingIn):
        return data
    if isinstance(data, FormInput):
        if data.fields.get("verdict"):
            raise InvalidSubmission(_NOT_A_VERDICT_TASK)
        return ranking_from_form(data.fields, data.flags)
    if data.verdict is not None:
        raise InvalidSubmission(_NOT_A_VERDICT_TASK)
    if data.ranking is None:
        raise InvalidSubmission("ranking: missing; rank every completion of the task (groups of ids, best first)")
    return _as_ranking(data, data.ranking, critiques=_critiques_by_id(data.critiques))


_NOT_A_VERDICT_TASK = (
    "verdict: this is a ranking task, not a pairwise evaluation; send `ranking` "
    "(groups of completion ids, best first) instead"
)


def _critiques_by_id(critiques: Mapping[str, str]) -> dict[int, str]:
    by_id: dict[int, str] = {}
    for key, text in critiques.items():
        if not (key.isascii() and key.isdigit()):
            raise InvalidSubmission(f"critiques.{key}: not a completion id; key each critique by its completion's id")
        by_id[int(key)] = text
    return by_id


def _as_ranking(data: SubmissionIn, groups: list[list[int]], *, critiques: dict[int, str]) -> RankingIn:
    try:
        return RankingIn(
            ranking=groups,
            flags=data.flags,
            none_acceptable=data.none_acceptable,
            time_spent_ms=data.time_spent_ms,
            comment=data.comment,
            critiques=critiques,
        )
    except ValidationError as exc:  # already checked as a SubmissionIn; kept for safety
        raise InvalidSubmission(describe_validation_error(exc)) from None


# ---- pairwise (pairwise_eval and the pairwise form) --------------------------------------------


def pairwise_judgment(data: Submission, display_order: Sequence[int], *, task: str = "an evaluation task") -> RankingIn:
    """`task` names the kind in messages ("an evaluation task", "a pairwise task")."""
    if isinstance(data, RankingIn):
        return data
    if isinstance(data, FormInput):
        if not data.fields.get("verdict") and data.fields.get("ranking"):
            raise InvalidSubmission(_SEND_A_VERDICT)
        if data.flags:
            raise InvalidSubmission(f"flag: {task} takes no flags; say why in the reason instead")
        try:
            data = SubmissionIn(
                verdict=data.fields.get("verdict") or None,
                time_spent_ms=form_int(data.fields.get("time_spent_ms")),
                comment=str(data.fields.get("comment") or ""),
                critiques=critiques_from_form(data.fields),
            )
        except ValidationError as exc:
            raise InvalidSubmission(describe_validation_error(exc)) from None
    if data.ranking is not None:
        raise InvalidSubmission(_SEND_A_VERDICT)
    if data.verdict is None:
        raise InvalidSubmission("verdict: missing; choose A is better, B is better, tie or both bad")
    if data.flags:
        raise InvalidSubmission(f"flags: {task} takes no flags; say why in the comment instead")
    if data.none_acceptable:
        raise InvalidSubmission('none_acceptable: with a verdict, say "both_bad" instead')
    if len(display_order) != 2:
        raise InvalidSubmission(f"verdict: this task has {len(display_order)} completions; send a `ranking`")
    a, b = display_order
    sides = {"A": a, "B": b}
    critiques: dict[int, str] = {}
    for side, text in data.critiques.items():
        if side not in sides:
            raise InvalidSubmission(f'critiques.{side}: {task} names its responses "A" and "B"')
        critiques[sides[side]] = text
    groups = {"A": [[a], [b]], "B": [[b], [a]], "tie": [[a, b]], "both_bad": [[a, b]]}[data.verdict]
    judged = _as_ranking(data, groups, critiques=critiques)
    return judged.model_copy(update={"none_acceptable": data.verdict == "both_bad"})


_SEND_A_VERDICT = (
    'ranking: a blind comparison takes no ranking (its completions have no ids); send a `verdict`: "A" or "B" '
    '(the first or second of `task.completions`) is better, "tie" or "both_bad"'
)


def verdict_of(groups: Sequence[Sequence[int]], display_order: Sequence[int], *, none_acceptable: bool) -> str:
    """The verdict a stored pairwise Ranking records (its inverse of `pairwise_judgment`)."""
    if len(groups) == 1:
        return "both_bad" if none_acceptable else "tie"
    return "A" if groups[0][0] == display_order[0] else "B"
