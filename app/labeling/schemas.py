"""What a labeler sends (a ranking, a verdict, ratings, a demonstration, a review, a skip) and what
the JSON API answers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

from app.api_types import INT32_MAX, DbId, Text
from app.labeling.errors import InvalidSubmission

MAX_COMMENT_CHARS = 10_000
MAX_RESPONSE_CHARS = 30_000
"""A demonstration (or a reviewer's edit of one): longer than any answer a model is trained to give."""
MAX_TIME_SPENT_MS = 24 * 3600 * 1000
MAX_CRITIQUE_CHARS = 10_000
Critique = Annotated[Text, Field(max_length=MAX_CRITIQUE_CHARS)]
AspectName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$")]


class RatingIn(BaseModel):
    """One value given to one completion (likert, good_bad and multi_aspect tasks)."""

    model_config = ConfigDict(extra="forbid")

    completion_id: DbId
    """One of the task's completions (`task.completions[].id`)."""
    value: StrictInt | Annotated[str, Field(max_length=16)]
    """likert (and a likert-scale aspect): 1..likert_points; good_bad: "good" or "bad" (or 1 / 0)."""
    aspect: AspectName | None = None
    """multi_aspect tasks: which of the project's likert-scale aspects (`task.form.aspects`)."""


class RankingIn(BaseModel):
    """One labeler's judgement of one task."""

    model_config = ConfigDict(extra="forbid")

    ranking: list[list[DbId]]
    """Groups of completion ids, best first; ids in one group are tied."""
    flags: dict[Annotated[int, Field(ge=1, le=INT32_MAX)], list[Text]] = Field(default_factory=dict)
    """Completion id -> names from the project's flag list."""
    # Strict: JSON `false` or "12" is a client bug, not a number of milliseconds (the form parses its own).
    none_acceptable: StrictBool = False
    time_spent_ms: Annotated[StrictInt, Field(ge=0, le=MAX_TIME_SPENT_MS)] | None = None
    """Active time the client measured (the server also keeps leased_at -> submitted)."""
    comment: Text = Field(default="", max_length=MAX_COMMENT_CHARS)
    critiques: dict[Annotated[int, Field(ge=1, le=INT32_MAX)], Critique] = Field(default_factory=dict)
    """Completion id -> the labeler's optional critique of it."""


Verdict = Literal["A", "B", "tie", "both_bad"]
"""A blind pairwise judgment: A or B (in the labeler's display order) is better, a tie, or both bad."""


class SubmissionIn(BaseModel):
    """A judgment through the JSON API: `ranking` groups (any task), or a `verdict` (pairwise_eval
    tasks only). Which one the task takes is checked against the task (app/labeling/task_types.py)."""

    model_config = ConfigDict(extra="forbid")

    ranking: list[list[DbId]] | None = None
    """Groups of completion ids, best first; ids in one group are tied. Ranking tasks only (a
    pairwise_eval task names no completion ids, so it takes a `verdict`)."""
    verdict: Verdict | None = None
    """For pairwise_eval tasks: "A" or "B" (the first or second completion of `task.completions`,
    your display order) is better, "tie", or "both_bad". Instead of `ranking`."""
    flags: dict[Annotated[int, Field(ge=1, le=INT32_MAX)], list[Text]] = Field(default_factory=dict)
    """Completion id -> names from the project's flag list (ranking tasks)."""
    none_acceptable: StrictBool = False
    """With `ranking` only; a verdict says "both_bad" instead."""
    time_spent_ms: Annotated[StrictInt, Field(ge=0, le=MAX_TIME_SPENT_MS)] | None = None
    """Active time the client measured (the server also keeps leased_at -> submitted)."""
    comment: Text = Field(default="", max_length=MAX_COMMENT_CHARS)
    """Optional; for a verdict, the reason; for a rejected demonstration, why (required)."""
    response: Text | None = Field(default=None, max_length=MAX_RESPONSE_CHARS)
    """For demonstration tasks: the ideal assistant answer you wrote (markdown). Instead of `ranking`."""
    from_draft: StrictBool = False
    """For demonstration tasks: you started from the task's model draft (the first of
    `task.completions`); the edit distance from it is stored."""
    decision: Literal["accept", "edit", "reject"] | None = None
    """For demonstration_review tasks: accept the demonstration as it is, accept your edit of it
    (`reviewed_response`), or reject it (say why in `comment`)."""
    reviewed_response: Text | None = Field(default=None, max_length=MAX_RESPONSE_CHARS)
    """For demonstration_review tasks with decision "edit": the corrected answer."""
    ratings: list[RatingIn] | None = Field(default=None, max_length=9 * 8)
    """For likert and good_bad tasks: one per completion; for multi_aspect tasks: one per completion
    and likert-scale aspect. Instead of `ranking` (which a multi_aspect task takes as its optional
    overall ranking)."""
    aspect_rankings: dict[AspectName, list[list[DbId]]] | None = None
    """For multi_aspect tasks: each ranking-scale aspect's groups of completion ids, best first."""
    critiques: dict[Annotated[str, Field(max_length=12)], Critique] = Field(default_factory=dict)
    """Optional, every form: completion id (as a string; "A"/"B" on blind pairwise tasks) -> your
    critique of that completion."""


@dataclass(frozen=True)
class FormInput:
    """The browser form as sent: its text fields, and the `flag` checkboxes' values.

    Per-completion fields are named `<family>-<key>`: critique-<completion id> (critique-A on
    pairwise tasks), rating-<completion id>, rating-<completion id>-<aspect>, aspect_ranking-<aspect>
    (JSON groups), place-<completion id>[-<aspect>] (a place 1..K; the same place ties)."""

    fields: Mapping[str, str]
    flags: list[str] = field(default_factory=list)


FORM_FAMILIES = {"critique": "critiques", "rating": "ratings", "aspect_ranking": "aspect_rankings", "place": "ranking"}
"""A per-completion form field's prefix -> the JSON field it fills (refusals name that one)."""


def form_family(name: str) -> str:
    """The answer field a form field fills: "critique-12" -> "critiques", "comment" -> "comment"."""
    prefix, sep, _key = name.partition("-")
    return FORM_FAMILIES.get(prefix, name) if sep else name


def prefixed(fields: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The `<prefix>-<key>` fields sent non-empty, by key."""
    start = f"{prefix}-"
    return {name.removeprefix(start): value for name, value in fields.items() if name.startswith(start) and value}


def critiques_from_form(fields: Mapping[str, str]) -> dict[str, str]:
    """critique-<key> boxes with text, by key; CRLF from browsers stored as LF."""
    texts = {key: value.replace("\r\n", "\n").strip() for key, value in prefixed(fields, "critique").items()}
    return {key: text for key, text in texts.items() if text}


Submission = RankingIn | SubmissionIn | FormInput
"""What a route hands to submission.submit_answer; the task's type checks it (app/labeling/
task_types.py). A RankingIn (tests, internal callers) is taken as it is by the ranking kinds."""


class SkipIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(max_length=1000)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("say why you skip this task")
        return value


def describe_validation_error(exc: ValidationError) -> str:
    return "; ".join(f"{_where(e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:10])


def _where(loc: tuple[int | str, ...]) -> str:
    """("ratings", 2, "value") -> "ratings[2].value"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def ranking_from_form(form: Mapping[str, Any], flag_values: list[str]) -> RankingIn:
    """The browser form: `ranking` holds the groups as JSON (kept current by ranking.js),
    each flag checkbox sends `flag=<completion id>:<flag name>`."""
    raw = form.get("ranking")
    if not raw:
        raise InvalidSubmission("ranking: missing; reload the page if this keeps happening")
    try:
        groups = json.loads(raw)
    except ValueError:
        raise InvalidSubmission("ranking: not valid JSON") from None
    flags: dict[str, list[str]] = {}
    for value in flag_values:
        completion_id, sep, name = str(value).partition(":")
        if not sep:
            raise InvalidSubmission(f"flag: {value!r} is not '<completion id>:<flag name>'")
        flags.setdefault(completion_id, []).append(name)
    try:
        return RankingIn(
            ranking=groups,
            flags=flags,
            none_acceptable=str(form.get("none_acceptable", "")).lower() in ("on", "true", "1"),
            time_spent_ms=form_int(form.get("time_spent_ms")),
            comment=str(form.get("comment") or ""),
            critiques=_critique_ids(critiques_from_form(form)),
        )
    except ValidationError as exc:
        raise InvalidSubmission(describe_validation_error(exc)) from None


def _critique_ids(critiques: dict[str, str]) -> dict[int, str]:
    for key in critiques:
        if not (key.isascii() and key.isdigit()):
            raise InvalidSubmission(f"critiques.{key}: not a completion id; reload the page if this keeps happening")
    return {int(key): text for key, text in critiques.items()}


def form_int(value: Any) -> Any:
    """A form field is text: digits become an int, other text is left for the model to refuse."""
    text = str(value or "").strip()
    return int(text) if text.isascii() and text.isdigit() else (text or None)


def skip_from_form(form: Mapping[str, Any]) -> SkipIn:
    reason = str(form.get("reason") or "").strip()
    detail = str(form.get("detail") or "").strip()
    try:
        return SkipIn(reason=f"{reason}: {detail}" if reason and detail else reason or detail)
    except ValidationError as exc:
        raise InvalidSubmission(describe_validation_error(exc)) from None


class CompletionOut(BaseModel):
    id: int | None
    """The completion's id (what `ranking` groups and `flags` name) on ranking tasks; null on
    pairwise_eval tasks, which are blind: ids are sequential, so they would hint at which model
    version was generated first. Judge those by `label` with a `verdict`."""
    label: str
    """Its name in this labeler's display order: "A", "B", ..."""
    text: str


class PromptOut(BaseModel):
    text: str | None
    messages: list[dict[str, str]] | None


class DemonstrationOut(BaseModel):
    id: int
    response: str
    """The demonstration under review, as its author wrote it (markdown)."""


class AspectOut(BaseModel):
    name: str
    """What `ratings[].aspect` and `aspect_rankings` name."""
    label: str
    scale: Literal["likert", "ranking"]
    """likert: rate each completion 1..likert_points (in `ratings`); ranking: order the completions
    (in `aspect_rankings`)."""


class FormOut(BaseModel):
    """The project's form settings a rating task is answered under."""

    likert_points: int | None
    """likert and multi_aspect: the highest rating (1 is the lowest)."""
    likert_labels: list[str]
    """One label per point, lowest first (empty: the numbers alone)."""
    aspects: list[AspectOut]
    """multi_aspect only."""
    overall_ranking: bool
    """multi_aspect: also send `ranking`, the completions ranked overall."""


def form_out(settings: Mapping[str, Any]) -> FormOut:
    return FormOut(
        likert_points=settings.get("likert_points"),
        likert_labels=list(settings.get("likert_labels") or []),
        aspects=[AspectOut(**aspect) for aspect in settings.get("aspects") or []],
        overall_ranking=bool(settings.get("overall_ranking")),
    )


class SuggestedRatingOut(BaseModel):
    """One value the judge gave one completion, as a labeler would send it in `ratings`."""

    label: str
    """The completion's label (A, B, ...)."""
    value: StrictInt | str
    """likert (and a likert-scale aspect): 1..likert_points; good_bad: "good" or "bad"."""
    aspect: str | None = None
    """multi_aspect: which likert-scale aspect (`task.form.aspects[].name`); null otherwise."""


class SuggestionOut(BaseModel):
    """The judge's answer in the task's labels, shaped like the answer a labeler submits."""

    judge: str
    """The judge's name and version, e.g. "critic v2"."""
    order: list[list[str]] = []
    """Completion labels (A, B, ...) best first; a group of several is a tie. ranking and
    pairwise: the judge's order; multi_aspect: its overall ranking (when the project asks for
    one); empty otherwise."""
    ratings: list[SuggestedRatingOut] = []
    """likert, good_bad and multi_aspect (its likert-scale aspects): one per completion (and
    aspect); empty for ranking and pairwise."""
    aspect_rankings: dict[str, list[list[str]]] = {}
    """multi_aspect: each ranking-scale aspect's order, in labels as `order`; empty otherwise."""


class TaskOut(BaseModel):
    kind: Literal[
        "ranking",
        "pairwise_eval",
        "demonstration",
        "demonstration_review",
        "pairwise",
        "likert",
        "good_bad",
        "multi_aspect",
    ]
    """ranking: order the completions (submit `ranking`). pairwise_eval and pairwise: a blind
    comparison of the two completions, A then B (submit a `verdict`). likert, good_bad: rate each
    completion (submit `ratings`); multi_aspect: rate or rank each aspect (see `form`).
    demonstration: write the assistant's next turn (submit `response`); the one completion, if
    any, is a model draft to start from.
    demonstration_review: judge `demonstration` (submit a `decision`)."""
    assignment_id: int
    task_id: int
    project_id: int
    lease_expires_at: datetime
    prompt: PromptOut
    completions: list[CompletionOut]
    """In this labeler's (shuffled) display order, labelled A, B, ...: for pairwise_eval, A then B,
    without ids (blind)."""
    flags: list[str]
    """The project's flag names this task takes (none for pairwise_eval)."""
    demonstration: DemonstrationOut | None = None
    """The demonstration to review (demonstration_review tasks only)."""
    form: FormOut | None = None
    """The rating scale and aspects (likert, good_bad and multi_aspect tasks only)."""
    suggestion: SuggestionOut | None = None
    """The project's AI judge's answer on this task (its order, or its ratings on a rating form),
    when the project shows suggestions (off by default) and the judge has judged this task: a
    hint, never the right answer."""


class NextTaskOut(BaseModel):
    task: TaskOut | None
    """None: nothing left for you right now; ask again later."""


class SubmitOut(BaseModel):
    ranking_id: int | None
    """The stored ranking (ranking and pairwise_eval tasks); null for the other kinds."""
    demonstration_id: int | None = None
    """The demonstration written or reviewed (demonstration and demonstration_review tasks)."""
    feedback_id: int | None = None
    """The stored ratings (likert, good_bad and multi_aspect tasks)."""
    late: bool
    """Sent after the lease expired, accepted because a slot was still free."""
    duplicate: bool
    """This ranking had already been stored (a retry); the stored one stands."""
    next: TaskOut | None


class SkipOut(BaseModel):
    next: TaskOut | None
