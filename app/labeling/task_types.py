"""Task types: what differs between the kinds of ranking_tasks rows, one TaskType per kind.

Every kind shares the handout (overlap, leases, never twice, idempotent and late submits) and
stores its judgment as an ordinary Ranking: what differs is only how the task is shown and how a
labeler's answer becomes ranking groups. Routes, services and templates look the kind up here
(`task_type(kind)`) instead of branching on it, so a new kind is one entry in TASK_TYPES, one
template partial, and (when its answer is not ranking groups) one `judgment` function.

  * "ranking": 4–9 completions to order, ties allowed (templates/labeling/_ranking.html).
  * "pairwise_eval": a blind evaluation (app/models/evaluation.py): two completions from two model
    versions, shown as "A" and "B" in the labeler's own shuffled display order, judged with a
    verdict (only a verdict: the page and the JSON API name no completion ids). A wins → [[a], [b]];
    tie → [[a, b]]; both bad → [[a, b]] with none_acceptable; the reason → the comment. Nothing
    shown says which version wrote which response.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import get_args

from markupsafe import Markup
from pydantic import ValidationError

from app.labeling.errors import InvalidSubmission
from app.labeling.schemas import (
    RankingIn,
    SubmissionIn,
    Verdict,
    describe_validation_error,
    form_int,
    ranking_from_form,
)

RANKING = "ranking"
PAIRWISE_EVAL = "pairwise_eval"
VERDICTS: tuple[str, ...] = get_args(Verdict)


@dataclass(frozen=True)
class FormInput:
    """The browser form as sent: its text fields, and the `flag` checkboxes' values."""

    fields: Mapping[str, str]
    flags: list[str] = field(default_factory=list)


Submission = RankingIn | SubmissionIn | FormInput
"""What a route hands to submission.submit_ranking; the task's type turns it into a RankingIn.
A RankingIn (tests, internal callers) is taken as it is by every kind."""


@dataclass(frozen=True)
class TaskType:
    kind: str
    name: str
    """What a labeler calls it ("Ranking", "Blind comparison")."""
    template: str
    """The partial that renders the task's form (included by templates/labeling/_task.html)."""
    completions: tuple[int, int]
    """How many completions a task of this kind has (fewest, most)."""
    takes_flags: bool
    """Whether the project's flags are offered (and accepted) on this kind's tasks."""
    keys: tuple[tuple[Markup, Markup], ...]
    """The keyboard shortcuts panel: (keys, what they do), as HTML made only of our own text."""
    title: str
    """The labeling page's title while a task of this kind is shown ("Rank", "Compare")."""
    done: str
    """What the labeler did to a task, for the progress line ("3 ranked by you")."""
    blind: bool
    """Which completion is which stays hidden from the labeler: no completion id reaches the page or
    the JSON API (ids are sequential, so they hint at which model version was generated first), and
    the answer names sides ("A", "B"), never ids."""
    judgment: Callable[[Submission, Sequence[int]], RankingIn] = field(repr=False)
    """The labeler's answer as ranking groups, given the completions in display order; raises
    InvalidSubmission (422) naming the field."""


# ---- ranking ------------------------------------------------------------------------------------


def _ranking_judgment(data: Submission, display_order: Sequence[int]) -> RankingIn:
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
    return _as_ranking(data, data.ranking)


_NOT_A_VERDICT_TASK = (
    "verdict: this is a ranking task, not a pairwise evaluation; send `ranking` "
    "(groups of completion ids, best first) instead"
)


def _as_ranking(data: SubmissionIn, groups: list[list[int]]) -> RankingIn:
    try:
        return RankingIn(
            ranking=groups,
            flags=data.flags,
            none_acceptable=data.none_acceptable,
            time_spent_ms=data.time_spent_ms,
            comment=data.comment,
        )
    except ValidationError as exc:  # already checked as a SubmissionIn; kept for safety
        raise InvalidSubmission(describe_validation_error(exc)) from None


# ---- pairwise_eval ----------------------------------------------------------------------------


def _pairwise_judgment(data: Submission, display_order: Sequence[int]) -> RankingIn:
    if isinstance(data, RankingIn):
        return data
    if isinstance(data, FormInput):
        if not data.fields.get("verdict") and data.fields.get("ranking"):
            raise InvalidSubmission(_SEND_A_VERDICT)
        if data.flags:
            raise InvalidSubmission("flag: an evaluation task takes no flags; say why in the reason instead")
        try:
            data = SubmissionIn(
                verdict=data.fields.get("verdict") or None,
                time_spent_ms=form_int(data.fields.get("time_spent_ms")),
                comment=str(data.fields.get("comment") or ""),
            )
        except ValidationError as exc:
            raise InvalidSubmission(describe_validation_error(exc)) from None
    if data.ranking is not None:
        raise InvalidSubmission(_SEND_A_VERDICT)
    if data.verdict is None:
        raise InvalidSubmission("verdict: missing; choose A is better, B is better, tie or both bad")
    if data.flags:
        raise InvalidSubmission("flags: an evaluation task takes no flags; say why in the comment instead")
    if data.none_acceptable:
        raise InvalidSubmission('none_acceptable: with a verdict, say "both_bad" instead')
    if len(display_order) != 2:
        raise InvalidSubmission(f"verdict: this task has {len(display_order)} completions; send a `ranking`")
    a, b = display_order
    groups = {"A": [[a], [b]], "B": [[b], [a]], "tie": [[a, b]], "both_bad": [[a, b]]}[data.verdict]
    judged = _as_ranking(data, groups)
    return judged.model_copy(update={"none_acceptable": data.verdict == "both_bad"})


_SEND_A_VERDICT = (
    'ranking: a blind comparison takes no ranking (its completions have no ids); send a `verdict`: "A" or "B" '
    '(the first or second of `task.completions`) is better, "tie" or "both_bad"'
)


def verdict_of(groups: Sequence[Sequence[int]], display_order: Sequence[int], *, none_acceptable: bool) -> str:
    """The verdict a stored pairwise Ranking records (its inverse of `_pairwise_judgment`)."""
    if len(groups) == 1:
        return "both_bad" if none_acceptable else "tie"
    return "A" if groups[0][0] == display_order[0] else "B"


# ---- the registry -----------------------------------------------------------------------------


def _keys(*rows: tuple[str, str]) -> tuple[tuple[Markup, Markup], ...]:
    return tuple((Markup(keys), Markup(what)) for keys, what in rows)


TASK_TYPES: dict[str, TaskType] = {
    RANKING: TaskType(
        kind=RANKING,
        name="Ranking",
        template="labeling/_ranking.html",
        completions=(2, 9),
        takes_flags=True,
        keys=_keys(
            (
                "<kbd>Tab</kbd> <kbd>↑</kbd> <kbd>↓</kbd>",
                "focus a completion (<kbd>↑</kbd>/<kbd>↓</kbd> go to the previous/next one)",
            ),
            (
                "<kbd>Shift</kbd>+<kbd>↑</kbd> / <kbd>Shift</kbd>+<kbd>↓</kbd>",
                "move it up / down (also <kbd>Alt</kbd>+arrows)",
            ),
            (
                "<kbd>Space</kbd>",
                "pick it up, move with <kbd>↑</kbd>/<kbd>↓</kbd>, drop with <kbd>Space</kbd> or <kbd>Esc</kbd>",
            ),
            ("<kbd>1</kbd>…<kbd>9</kbd>", "move it to that place"),
            ("<kbd>T</kbd> or <kbd>=</kbd>", "tie it with the one above; again to split the tie"),
            ("<kbd>E</kbd>", "show more / less of a long completion"),
            ("<kbd>Tab</kbd> inside a card", "reach its flags and buttons"),
            ("<kbd>Ctrl</kbd>+<kbd>Enter</kbd>", "submit the ranking"),
        ),
        title="Rank",
        done="ranked",
        blind=False,
        judgment=_ranking_judgment,
    ),
    PAIRWISE_EVAL: TaskType(
        kind=PAIRWISE_EVAL,
        name="Blind comparison",
        template="labeling/_pairwise.html",
        completions=(2, 2),
        takes_flags=False,
        keys=_keys(
            ("<kbd>A</kbd> / <kbd>B</kbd>", "response A / B is better"),
            ("<kbd>T</kbd>", "a tie: both are about as good"),
            ("<kbd>X</kbd>", "both are bad"),
            ("<kbd>R</kbd>", "write a reason (optional); <kbd>Esc</kbd> leaves the box"),
            ("<kbd>Enter</kbd>", "submit the judgment (<kbd>Ctrl</kbd>+<kbd>Enter</kbd> from the reason box)"),
        ),
        title="Compare",
        done="judged",
        blind=True,
        judgment=_pairwise_judgment,
    ),
}


def task_type(kind: str) -> TaskType:
    """The type of a ranking_tasks row's `kind`; LookupError for a kind this code does not know."""
    try:
        return TASK_TYPES[kind]
    except KeyError:
        raise LookupError(f"unknown task kind {kind!r}; known: {', '.join(TASK_TYPES)}") from None
