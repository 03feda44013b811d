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


@dataclass(frozen=True)
class FormJudge:
    """How a judge rates one completion on a rating form."""

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


RATING_FORMS: dict[str, FormJudge] = {
    LIKERT: FormJudge(
        template=LIKERT_TEMPLATE,
        placeholders=("{prompt}", "{completion}", "{points}"),
        all_placeholders=("{prompt}", "{completion}", "{points}", "{labels}"),
        fields=lambda s: {"points": _points(s), "labels": _labels(s)},
        parse=lambda answer, s: parse_likert(answer, _points(s)),
        from_score=lambda score, s: likert_from_score(score, _points(s)),
        options=lambda s: [(f" {i}", i) for i in range(1, _points(s) + 1)],
        answer_prefix="Rating:",
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
}
"""The rating forms a judge can answer. multi_aspect has none yet (docs/ai-judges.md)."""


def render_rating_prompt(template: str, form: FormJudge, settings: Mapping[str, Any], *, prompt: str, completion: str):
    return template.format(
        prompt=prompt, completion=completion, **{"points": "", "labels": "", **form.fields(settings)}
    )


def check_rating_template(template: str, form: FormJudge) -> None:
    """ValueError naming the missing placeholder or the broken brace."""
    for needed in form.placeholders:
        if needed not in template:
            raise ValueError(f"the template must contain {needed}")
    try:
        template.format(prompt="", completion="", points=5, labels="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"the template has a placeholder other than {{prompt}}, {{completion}}, {{points}}, {{labels}} "
            f"or an unmatched brace ({exc!r}); write a literal brace as {{{{ or }}}}"
        ) from None


def values_text(ids: Sequence[int], values: Sequence[int]) -> str:
    """A verdict's record of a rating answer: "completion id:value" pairs, e.g. "12:4,13:2"."""
    return ",".join(f"{cid}:{value}" for cid, value in zip(ids, values, strict=True))
