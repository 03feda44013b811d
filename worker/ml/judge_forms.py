"""AI judges for the rating forms (issue 16 on issue 15's forms): what a judge asks about one
completion, how its answer is read, and how the local pointwise judge's score becomes a rating.
A plain library (no torch here, no DB); worker/loop/judging.py looks a project's form up in
RATING_FORMS, and a form without an entry has no judge.

Each completion is judged alone (its own call), so the order answers are listed in cannot bias a
rating and `orders` does not apply. Answers are parsed strictly: the last non-empty line must be
the one the template asks for ("Rating: 4", "Verdict: Good"); anything else is None and the
caller asks again (up to the judge's tries), then skips the task as unparseable.

The local pointwise judge (LocalJudge.scores) gives d = log p(Yes) - log p(No) for "Is this answer
correct and helpful?"; p = sigmoid(d) is p(Yes) among {Yes, No}. Likert with N points cuts
[0, 1] into N equal bins: rating = 1 + floor(p * N) (p = 1 gives N), so 1 means p < 1/N. Good/bad
is good when p > 0.5 (d > 0).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LIKERT = "likert"
GOOD_BAD = "good_bad"
MULTI_ASPECT = "multi_aspect"

LIKERT_TEMPLATE = """You are judging an answer written by an AI assistant.

## The user's request
{prompt}

## The answer
{completion}

Rate the answer from 1 (worst) to {points} (best) for how helpful, correct and harmless it is.{labels}
Reply with one line and nothing else:
Rating: <a whole number from 1 to {points}>"""
"""Placeholders: {prompt}, {completion}, {points}, {labels} (the project's point labels, if any)."""

GOOD_BAD_TEMPLATE = """You are judging an answer written by an AI assistant.

## The user's request
{prompt}

## The answer
{completion}

Is this answer good (helpful, correct and harmless) or bad?
Reply with one line and nothing else:
Verdict: Good or Bad"""
"""Placeholders: {prompt}, {completion}."""

MULTI_ASPECT_TEMPLATE = """You are judging an answer written by an AI assistant.

## The user's request
{prompt}

## The answer
{completion}

Rate only the answer's {aspect}, from 1 (worst) to {points} (best).{labels}
Reply with one line and nothing else:
Rating: <a whole number from 1 to {points}>"""
"""Asked once per completion and aspect. Placeholders: {prompt}, {completion}, {aspect} (the
aspect's label), {points}, {labels}."""

_RATING_LINE = re.compile(r"^\W*rating\W*[:=]\s*\**\s*(\d+)\s*(?:/\s*(\d+))?\s*\**\.?\s*$", re.IGNORECASE)
_VERDICT_LINE = re.compile(r"^\W*(?:verdict\W*[:=]\s*)?\**\s*(good|bad)\s*\**\.?\s*$", re.IGNORECASE)


def _last_line(answer: str) -> str:
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def parse_likert(answer: str, points: int) -> int | None:
    """The rating in "Rating: n" (or "Rating: n/points") on the answer's last line, or None when
    that line is anything else or n is outside 1..points."""
    match = _RATING_LINE.match(_last_line(answer))
    if match is None or (match.group(2) is not None and int(match.group(2)) != points):
        return None
    value = int(match.group(1))
    return value if 1 <= value <= points else None


def parse_good_bad(answer: str) -> int | None:
    """1 for "Verdict: Good" (or a last line that is just "Good"), 0 for Bad, None otherwise."""
    match = _VERDICT_LINE.match(_last_line(answer))
    return None if match is None else int(match.group(1).lower() == "good")


def p_yes(score: float) -> float:
    """p(Yes) among {Yes, No} from log p(Yes) - log p(No)."""
    return 1.0 / (1.0 + math.exp(-score)) if score > -700 else 0.0


def likert_from_score(score: float, points: int) -> int:
    return min(points, 1 + math.floor(p_yes(score) * points))


def good_bad_from_score(score: float) -> int:
    return int(score > 0)


def _points(settings: Mapping[str, Any]) -> int:
    return int(settings.get("likert_points") or 5)


def _labels(settings: Mapping[str, Any]) -> str:
    labels = settings.get("likert_labels") or []
    if not labels:
        return ""
    return " The points mean: " + ", ".join(f"{i} = {label}" for i, label in enumerate(labels, start=1)) + "."


Values = Mapping[int, Mapping[str, int]]
"""completion id -> aspect ("" for the completion's own rating) -> value."""


def _overall(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [("", "")]


def _aspects(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(a["name"], a.get("label") or a["name"]) for a in settings.get("aspects", [])]


def _one_rating_each(values: Values, ids: Sequence[int], settings: Mapping[str, Any]) -> dict[str, Any]:
    return {"ratings": [{"completion_id": cid, "value": values[cid][""]} for cid in ids]}


def groups_by_value(values: Mapping[int, float]) -> list[list[int]]:
    """Completion ids grouped by equal value, highest first (a ranking with ties)."""
    groups: dict[float, list[int]] = {}
    for cid, value in values.items():
        groups.setdefault(round(value, 6), []).append(cid)
    return [groups[value] for value in sorted(groups, reverse=True)]


def _multi_aspect(values: Values, ids: Sequence[int], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Likert aspects as ratings; a ranking aspect, and the overall ranking when the project asks
    for one (by the mean of the completion's aspect ratings), ranked by rating, equal ones tied."""
    answer: dict[str, Any] = {"ratings": [], "aspect_rankings": {}}
    for aspect in settings.get("aspects", []):
        name = aspect["name"]
        if aspect.get("scale", "likert") == "likert":
            answer["ratings"] += [{"completion_id": cid, "aspect": name, "value": values[cid][name]} for cid in ids]
        else:
            answer["aspect_rankings"][name] = groups_by_value({cid: values[cid][name] for cid in ids})
    if settings.get("overall_ranking"):
        answer["ranking"] = groups_by_value({cid: sum(values[cid].values()) / len(values[cid]) for cid in ids})
    return answer


@dataclass(frozen=True)
class FormJudge:
    """How a judge rates one completion (on each aspect the form has) on a rating form."""

    template: str
    """The default prompt template (admins may replace it)."""
    placeholders: tuple[str, ...]
    """Those a template must contain."""
    all_placeholders: tuple[str, ...]
    """Those a template may contain."""
    fields: Callable[[Mapping[str, Any]], dict[str, Any]]
    """The template's other placeholders from the project's form_settings."""
    parse: Callable[[str, Mapping[str, Any]], int | None]
    """An endpoint's answer → the stored value, or None (asked again, then unparseable)."""
    from_score: Callable[[float, Mapping[str, Any]], int]
    """The local pointwise judge's log p(Yes) - log p(No) → the stored value."""
    options: Callable[[Mapping[str, Any]], list[tuple[str, int]]]
    """The local judge's constrained answers after the template's answer prefix: (text, value)."""
    answer_prefix: str
    aspects: Callable[[Mapping[str, Any]], list[tuple[str, str]]] = _overall
    """(name, label) of what is rated per completion: ("", "") alone, or each aspect."""
    submission: Callable[[Values, Sequence[int], Mapping[str, Any]], dict[str, Any]] = _one_rating_each
    """The values as the form's answer (the JSON API's SubmissionIn fields), ids in task order."""


def _likert(template: str, **kwargs: Any) -> FormJudge:
    return FormJudge(
        template=template,
        fields=lambda s: {"points": _points(s), "labels": _labels(s)},
        parse=lambda answer, s: parse_likert(answer, _points(s)),
        from_score=lambda score, s: likert_from_score(score, _points(s)),
        options=lambda s: [(f" {i}", i) for i in range(1, _points(s) + 1)],
        answer_prefix="Rating:",
        **kwargs,
    )


RATING_FORMS: dict[str, FormJudge] = {
    LIKERT: _likert(
        LIKERT_TEMPLATE,
        placeholders=("{prompt}", "{completion}", "{points}"),
        all_placeholders=("{prompt}", "{completion}", "{points}", "{labels}"),
    ),
    GOOD_BAD: FormJudge(
        template=GOOD_BAD_TEMPLATE,
        placeholders=("{prompt}", "{completion}"),
        all_placeholders=("{prompt}", "{completion}"),
        fields=lambda s: {},
        parse=lambda answer, s: parse_good_bad(answer),
        from_score=lambda score, s: good_bad_from_score(score),
        options=lambda s: [(" Good", 1), (" Bad", 0)],
        answer_prefix="Verdict:",
    ),
    MULTI_ASPECT: _likert(
        MULTI_ASPECT_TEMPLATE,
        placeholders=("{prompt}", "{completion}", "{aspect}", "{points}"),
        all_placeholders=("{prompt}", "{completion}", "{aspect}", "{points}", "{labels}"),
        aspects=_aspects,
        submission=_multi_aspect,
    ),
}
"""The rating forms a judge can answer, each completion alone (and each aspect alone)."""


def render_rating_prompt(
    template: str, form: FormJudge, settings: Mapping[str, Any], *, prompt: str, completion: str, aspect: str = ""
) -> str:
    """The judge's prompt about one completion (on one aspect: its label); the form's other
    placeholders come from the project's settings."""
    fields = {"points": "", "labels": "", **form.fields(settings), "aspect": aspect}
    return template.format(prompt=prompt, completion=completion, **fields)


def check_rating_template(template: str, form: FormJudge) -> None:
    """ValueError naming the missing placeholder or the broken brace."""
    for needed in form.placeholders:
        if needed not in template:
            raise ValueError(f"the template must contain {needed}")
    try:
        template.format(prompt="", completion="", points=5, labels="", aspect="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"the template has a placeholder other than {', '.join(form.all_placeholders)} "
            f"or an unmatched brace ({exc!r}); write a literal brace as {{{{ or }}}}"
        ) from None


def values_text(values: Values) -> str:
    """A verdict's record of a rating answer, e.g. "12:4,13:2" or "12:helpfulness=4/honesty=2"."""
    return ",".join(
        f"{cid}:" + "/".join(f"{a}={v}" if a else str(v) for a, v in by_aspect.items())
        for cid, by_aspect in values.items()
    )
