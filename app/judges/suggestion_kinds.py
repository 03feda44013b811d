"""How each task kind's AI verdict is read and shown as a suggestion (issue 16 §1 (a)): a table
keyed by task kind (SUGGESTION_KINDS), so app/judges/suggestions.py runs one statement and never
branches on the kind. A kind without an entry shows no suggestion.

Ranking and pairwise read the current judge version's Ranking row (an order, ties grouped); the
rating forms (likert, good_bad, multi_aspect) read its Feedback row with its FeedbackRatings, on the
feedback (task_id, user_id) unique index and feedback_ratings' (feedback_id, ...) one. Each entry
renders the verdict two ways, both in the labeler's own letters (display order is per labeler):
`lines` for the labeling page (plain text, autoescaped by the template) and `answer` for the JSON
API, shaped like the answer a labeler submits (order / ratings / aspect_rankings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.sql.base import Executable

from app.models import OVERALL, Feedback, FeedbackRating, Ranking
from app.models.judges import Judge
from app.projects.forms_config import aspects_of

SHORT_LABEL_CHARS = 16
"""Likert point labels are shown beside the number only when every one is at most this long."""

Labels = Mapping[int, str]
"""Completion id -> the labeler's letter for it, in the labeler's display order."""

Groups = list[list[int]]


@dataclass(frozen=True)
class SuggestionLine:
    aspect: str
    """A multi-aspect task's aspect name ("" for the whole task, or the overall ranking)."""
    label: str
    """What the labeler reads before the text: the aspect's label, "Overall"; "" for a task's one line."""
    text: str
    """E.g. "C > A = B", "A 4 (good) · B 2 (poor)", "A good · B bad"."""


@dataclass(frozen=True)
class Suggestion:
    judge: str
    """The judge's name and version, e.g. "critic v2"."""
    kind: str
    """The task's kind (a key of SUGGESTION_KINDS)."""
    groups: Groups = field(default_factory=list)
    """ranking and pairwise: completion ids, best first; a group of several is a tie."""
    values: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    """Rating forms: aspect (OVERALL "" for the completion's own value) -> completion id -> the
    stored value (Likert 1..N, good 1 / bad 0, a ranked aspect's level with 0 best)."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Rating forms: the form settings the judge answered under (its Feedback row's)."""

    def lines(self, labels: Labels) -> list[SuggestionLine]:
        """For the labeling page."""
        return SUGGESTION_KINDS[self.kind].lines(self, labels)

    def answer(self, labels: Labels) -> dict[str, Any]:
        """For the JSON API: `order`, `ratings` and/or `aspect_rankings`, in the task's labels."""
        return SUGGESTION_KINDS[self.kind].answer(self, labels)


@dataclass(frozen=True)
class SuggestionKind:
    statement: Executable
    """Bind parameters task_id and project_id; only the current version of a judge that shows
    suggestions matches."""
    read: Callable[[Sequence[Any], str], Suggestion]
    """The statement's rows (at least one) and the task's kind -> the suggestion."""
    lines: Callable[[Suggestion, Labels], list[SuggestionLine]]
    answer: Callable[[Suggestion, Labels], dict[str, Any]]


def _current_judge(user_id: Any) -> Any:
    return (Judge.user_id == user_id) & (Judge.project_id == bindparam("project_id")) & Judge.show_suggestion.is_(True)


# Built once with bind parameters (statement building costs more CPU than running it).
_ORDER = (
    select(Ranking.groups, Judge.name, Judge.version)
    .join(Judge, _current_judge(Ranking.user_id))
    .where(Ranking.task_id == bindparam("task_id"))
)
_RATINGS = (
    select(FeedbackRating.completion_id, FeedbackRating.aspect, FeedbackRating.value)
    .add_columns(Feedback.settings, Judge.name, Judge.version)
    .select_from(Feedback)
    .join(Judge, _current_judge(Feedback.user_id))
    .join(FeedbackRating, FeedbackRating.feedback_id == Feedback.id)
    .where(Feedback.task_id == bindparam("task_id"))
)


def _judge(name: str, version: int) -> str:
    return f"{name} v{version}"


# ---- naming completions by the labeler's letters ---------------------------------------------


def _named(groups: Groups, labels: Labels) -> list[list[str]]:
    named = [[labels[c] for c in group if c in labels] for group in groups]
    return [group for group in named if group]


def _order_text(groups: Groups, labels: Labels) -> str:
    return " > ".join(" = ".join(group) for group in _named(groups, labels))


def _groups_of_levels(levels: Mapping[int, int], labels: Labels) -> Groups:
    """A ranked aspect's levels (0 best, equal levels tie) as groups best first, each group in
    the labeler's display order."""
    by_level: dict[int, list[int]] = {}
    for cid in labels:
        if cid in levels:
            by_level.setdefault(levels[cid], []).append(cid)
    return [by_level[level] for level in sorted(by_level)]


def _rated_text(values: Mapping[int, int], labels: Labels, word: Callable[[int], str]) -> str:
    return " · ".join(f"{letter} {word(values[cid])}" for cid, letter in labels.items() if cid in values)


def _likert_word(settings: Mapping[str, Any]) -> Callable[[int], str]:
    """ "4", or "4 (good)" when the project's point labels are all short."""
    names = list(settings.get("likert_labels") or [])
    if not names or any(len(name) > SHORT_LABEL_CHARS for name in names):
        return str
    return lambda value: f"{value} ({names[value - 1]})" if 1 <= value <= len(names) else str(value)


def _good_bad_word(value: int) -> str:
    return "good" if value else "bad"


def _one_line(text: str) -> list[SuggestionLine]:
    """The whole task's suggestion (every kind but multi_aspect)."""
    return [SuggestionLine(aspect="", label="", text=text)]


def _rated(values: Mapping[int, int], labels: Labels, **extra: Any) -> list[dict[str, Any]]:
    return [{"label": letter, "value": values[cid], **extra} for cid, letter in labels.items() if cid in values]


# ---- ranking and pairwise ----------------------------------------------------------------------


def _read_order(rows: Sequence[Any], kind: str) -> Suggestion:
    groups, name, version = rows[0]
    return Suggestion(judge=_judge(name, version), kind=kind, groups=groups)


def _order_lines(found: Suggestion, labels: Labels) -> list[SuggestionLine]:
    return _one_line(_order_text(found.groups, labels))


def _order_answer(found: Suggestion, labels: Labels) -> dict[str, Any]:
    return {"order": _named(found.groups, labels)}


# ---- the rating forms ------------------------------------------------------------------------


def _read_ratings(rows: Sequence[Any], kind: str) -> Suggestion:
    values: dict[str, dict[int, int]] = {}
    for completion_id, aspect, value, *_ in rows:
        if value is not None:  # an overall row of a project without an overall ranking
            values.setdefault(aspect, {})[completion_id] = value
    settings, name, version = rows[0][3:]
    return Suggestion(judge=_judge(name, version), kind=kind, values=values, settings=settings or {})


def _likert_lines(found: Suggestion, labels: Labels) -> list[SuggestionLine]:
    return _one_line(_rated_text(found.values.get(OVERALL, {}), labels, _likert_word(found.settings)))


def _likert_answer(found: Suggestion, labels: Labels) -> dict[str, Any]:
    return {"ratings": _rated(found.values.get(OVERALL, {}), labels)}


def _good_bad_lines(found: Suggestion, labels: Labels) -> list[SuggestionLine]:
    return _one_line(_rated_text(found.values.get(OVERALL, {}), labels, _good_bad_word))


def _good_bad_answer(found: Suggestion, labels: Labels) -> dict[str, Any]:
    ratings = _rated(found.values.get(OVERALL, {}), labels)
    return {"ratings": [{**rating, "value": _good_bad_word(rating["value"])} for rating in ratings]}


def _multi_aspect_lines(found: Suggestion, labels: Labels) -> list[SuggestionLine]:
    """One line per aspect, in the admin's order, then the overall ranking (if the project has one)."""
    word = _likert_word(found.settings)
    lines = []
    for aspect in aspects_of(dict(found.settings)):
        values = found.values.get(aspect.name, {})
        if aspect.scale == "likert":
            text = _rated_text(values, labels, word)
        else:
            text = _order_text(_groups_of_levels(values, labels), labels)
        lines.append(SuggestionLine(aspect=aspect.name, label=aspect.label, text=text))
    if found.values.get(OVERALL):
        text = _order_text(_groups_of_levels(found.values[OVERALL], labels), labels)
        lines.append(SuggestionLine(aspect=OVERALL, label="Overall", text=text))
    return [line for line in lines if line.text]


def _multi_aspect_answer(found: Suggestion, labels: Labels) -> dict[str, Any]:
    aspects = aspects_of(dict(found.settings))
    ratings, rankings = [], {}
    for aspect in aspects:
        values = found.values.get(aspect.name, {})
        if aspect.scale == "likert":
            ratings += _rated(values, labels, aspect=aspect.name)
        else:
            rankings[aspect.name] = _named(_groups_of_levels(values, labels), labels)
    order = _named(_groups_of_levels(found.values.get(OVERALL, {}), labels), labels)
    return {"order": order, "ratings": ratings, "aspect_rankings": rankings}


_RANKING = SuggestionKind(statement=_ORDER, read=_read_order, lines=_order_lines, answer=_order_answer)

SUGGESTION_KINDS: dict[str, SuggestionKind] = {
    "ranking": _RANKING,
    "pairwise": _RANKING,  # a pairwise task is a ranking of two
    "likert": SuggestionKind(statement=_RATINGS, read=_read_ratings, lines=_likert_lines, answer=_likert_answer),
    "good_bad": SuggestionKind(statement=_RATINGS, read=_read_ratings, lines=_good_bad_lines, answer=_good_bad_answer),
    "multi_aspect": SuggestionKind(
        statement=_RATINGS, read=_read_ratings, lines=_multi_aspect_lines, answer=_multi_aspect_answer
    ),
}
"""Task kind -> how its judge's verdict is read and shown (the kinds a judge answers)."""
