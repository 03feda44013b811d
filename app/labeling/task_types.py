"""Task types: what differs between the kinds of ranking_tasks rows, one TaskType per kind.

Every kind shares the handout and the submit path (app/labeling/submission.py): overlap, leases,
never twice, idempotent retries, skipped → 409, late submits, the next task in the same
transaction. What differs is how the task is shown (a template partial, the keys panel), which
fields its answer takes, and how that answer is stored: the TaskType's `recorder`
(app/labeling/recorders.py) either turns it into an ordinary Ranking (RankingRecorder with the
kind's `judgment`) or records something else. Routes, services and templates look the kind up here
(`task_type(kind)`) instead of branching on it, so a new kind is one entry in TASK_TYPES, one
template partial, and a `judgment` function (its answer becomes ranking groups) or a recorder.

  * "ranking": 4–9 completions to order, ties allowed (templates/labeling/_ranking.html).
  * "pairwise_eval": a blind evaluation (app/models/evaluation.py): two completions from two model
    versions, shown as "A" and "B" in the labeler's own shuffled display order, judged with a
    verdict (only a verdict: the page and the JSON API name no completion ids). A wins → [[a], [b]];
    tie → [[a, b]]; both bad → [[a, b]] with none_acceptable; the reason → the comment. Nothing
    shown says which version wrote which response.
  * "demonstration": the labeler writes the assistant's next turn for the prompt (a chat is
    continued); its one completion, if any, is a model draft they may start from (the edit
    distance from it is stored). Stored as a Demonstration (app/demonstrations/recorders.py):
    accepted at once, or pending review when the project has demonstration_review on.
  * "demonstration_review": a second labeler accepts, edits (the corrected text is stored beside
    the original) or rejects (with a reason) one pending demonstration
    (ranking_tasks.demonstration_id); no completions. Its author is barred from the task when it
    is created, so nobody reviews their own demonstration. Only accepted demonstrations train.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.demonstrations.recorders import DemonstrationRecorder, ReviewRecorder, load_review
from app.demonstrations.service import DEMONSTRATION, DEMONSTRATION_REVIEW
from app.labeling.content import TaskContent
from app.labeling.errors import InvalidSubmission
from app.labeling.recorders import RankingRecorder, Recorder
from app.labeling.schemas import (
    FormInput,
    RankingIn,
    Submission,
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
class TaskType:
    """What differs between kinds of ranking_tasks rows: how a task shows (template, keys, title,
    blind), which answer fields it reads (the rest refused by name) and how the answer is stored
    (`recorder`). The handout and the submit path around it are the same for every kind."""

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
    recorder: Recorder = field(repr=False)
    """The storage hook (app/labeling/recorders.py): checks the answer (422 naming the field) and
    stores it: as a Ranking (RankingRecorder, given the kind's `judgment`) or as something else."""
    answer_fields: frozenset[str] = field(repr=False)
    """The submitted fields this kind reads; any other one sent non-empty is refused by name."""
    expects: str = ""
    """What to send instead, for that refusal ("`response`: the answer you wrote")."""
    load_extra: Callable[[Session, TaskContent], Any] | None = field(default=None, repr=False)
    """What the task shows besides its prompt and completions (TaskView.extra): the demonstration
    a review task reviews. None: nothing."""

    def refuse_foreign_fields(self, data: Submission) -> None:
        """InvalidSubmission naming the first field this kind does not take (a ranking sent to a
        demonstration task, a response sent to a ranking task)."""
        if isinstance(data, FormInput):
            sent = {name for name, value in data.fields.items() if value} | ({"flag"} if data.flags else set())
        else:
            sent = {name for name in type(data).model_fields if getattr(data, name)}
        foreign = sorted(sent - self.answer_fields - ({"flag"} if "flags" in self.answer_fields else set()))
        if foreign:
            name = foreign[0]
            raise InvalidSubmission(f"{name}: a {self.name.lower()} task takes no `{name}`; send {self.expects}")


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


_RANKING_FIELDS = frozenset({"ranking", "verdict", "flags", "none_acceptable", "time_spent_ms", "comment"})


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
        recorder=RankingRecorder(_ranking_judgment, takes_flags=True, name="Ranking"),
        answer_fields=_RANKING_FIELDS,
        expects="`ranking` (groups of completion ids, best first)",
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
        recorder=RankingRecorder(_pairwise_judgment, takes_flags=False, name="Blind comparison"),
        answer_fields=_RANKING_FIELDS,
        expects='a `verdict`: "A", "B", "tie" or "both_bad"',
    ),
    DEMONSTRATION: TaskType(
        kind=DEMONSTRATION,
        name="Demonstration",
        template="labeling/_demonstration.html",
        completions=(0, 1),
        takes_flags=False,
        keys=_keys(
            ("<kbd>W</kbd>", "write: focus the answer box"),
            ("<kbd>D</kbd>", "start from the model draft (when the task has one)"),
            ("<kbd>Esc</kbd>", "leave the answer box (so the letter keys work again)"),
            ("<kbd>P</kbd>", "preview the answer as it will be shown"),
            ("<kbd>Ctrl</kbd>+<kbd>Enter</kbd>", "submit the demonstration (also inside the box)"),
        ),
        title="Write",
        done="written",
        blind=False,
        recorder=DemonstrationRecorder(),
        answer_fields=frozenset({"response", "from_draft", "time_spent_ms"}),
        expects="`response`: the assistant's answer you wrote (markdown)",
    ),
    DEMONSTRATION_REVIEW: TaskType(
        kind=DEMONSTRATION_REVIEW,
        name="Demonstration review",
        template="labeling/_demonstration_review.html",
        completions=(0, 0),
        takes_flags=False,
        keys=_keys(
            ("<kbd>A</kbd>", "accept the demonstration as it is"),
            ("<kbd>E</kbd>", "edit it: its text goes into the box, your corrected version is stored"),
            ("<kbd>R</kbd>", "reject it: say why in the comment box"),
            ("<kbd>Esc</kbd>", "leave a text box"),
            ("<kbd>Ctrl</kbd>+<kbd>Enter</kbd>", "submit the review"),
        ),
        title="Review",
        done="reviewed",
        blind=False,
        recorder=ReviewRecorder(),
        answer_fields=frozenset({"decision", "reviewed_response", "comment", "time_spent_ms"}),
        expects='a `decision`: "accept", "edit" (with `reviewed_response`) or "reject" (with a `comment`)',
        load_extra=load_review,
    ),
}


def task_type(kind: str) -> TaskType:
    """The type of a ranking_tasks row's `kind`; LookupError for a kind this code does not know."""
    try:
        return TASK_TYPES[kind]
    except KeyError:
        raise LookupError(f"unknown task kind {kind!r}; known: {', '.join(TASK_TYPES)}") from None
