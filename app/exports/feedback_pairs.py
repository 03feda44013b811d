"""What a caller of the pairs export may choose for rating-form projects (issue 15): the
aspect or the weighted combination of aspects that scores each completion, checked against the
project's form before anything is streamed. The scores themselves are the shared reading of
ratings, app/labeling/feedback_read.py `scores` (in [0, 1], higher = better); every two
completions of one judgment with different scores give a pair, equal scores none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.models import OVERALL, FeedbackForm

RATING_FORMS = (FeedbackForm.likert.value, FeedbackForm.good_bad.value, FeedbackForm.multi_aspect.value)
OVERALL_PARAM = "overall"
"""What `aspect=` calls multi_aspect's overall ranking (stored as aspect OVERALL, "")."""
_NAME = re.compile(r"^[a-z0-9_]{1,32}$")


class ExportParamError(ValueError):
    """A refused export parameter; `param` is its query name, so the 422 can say which."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass(frozen=True)
class Scoring:
    """How one judgment's ratings become one score per completion."""

    target: str | Mapping[str, float] = OVERALL
    """What feedback_read.scores reads: OVERALL (the completion's own rating, or multi_aspect's
    overall ranking), an aspect name, or {aspect: weight} (weights summing to 1)."""
    name: str = "rating"
    """What the rows' `scored_by` column says: "rating", "overall", an aspect name, or the weights."""


def resolve_scoring(
    form: str, form_settings: Mapping[str, Any], *, aspect: str | None, weights: str | None
) -> Scoring | None:
    """The caller's choice checked against the project's form. None: the form gives no rating
    pairs (ranking and pairwise projects; their pairs come from rankings)."""
    if aspect is not None and weights is not None:
        raise ExportParamError("weights", "give aspect=<name> or weights=<name:w,...>, not both")
    if form not in RATING_FORMS:
        if aspect is not None or weights is not None:
            param = "aspect" if aspect is not None else "weights"
            raise ExportParamError(param, f"this project uses the {form} form, which has no aspects; leave it out")
        return None
    if form != FeedbackForm.multi_aspect.value:
        if aspect is not None or weights is not None:
            param = "aspect" if aspect is not None else "weights"
            raise ExportParamError(param, f"the {form} form rates each completion once; leave {param} out")
        return Scoring()
    scales = {a["name"]: a.get("scale", "likert") for a in form_settings.get("aspects", [])}
    has_overall = bool(form_settings.get("overall_ranking"))
    choices = ", ".join([*scales, *([OVERALL_PARAM] if has_overall else [])])
    if weights is not None:
        return Scoring(target=parse_weights(weights, scales), name=weights.replace(" ", ""))
    if aspect is None:
        if has_overall:
            return Scoring(name=OVERALL_PARAM)
        raise ExportParamError(
            "aspect", f"this project rates several aspects; choose aspect=<one of {choices}> or weights=name:w,..."
        )
    if aspect == OVERALL_PARAM and has_overall:
        return Scoring(name=OVERALL_PARAM)
    if aspect not in scales:
        raise ExportParamError("aspect", f"no aspect {aspect!r} in this project; choose one of {choices}")
    return Scoring(target=aspect, name=aspect)


def parse_weights(text: str, scales: Mapping[str, str]) -> dict[str, float]:
    """`name:w,name:w` over the project's aspects (Likert or ranked, each scored in [0, 1]),
    weights finite and >= 0 with one above 0; returned normalised to sum 1."""
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, number = item.strip().partition(":")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise ExportParamError("weights", f"{item.strip()!r} is not name:weight (e.g. helpfulness:1,honesty:0.5)")
        try:
            weight = float(number)
        except ValueError:
            raise ExportParamError("weights", f"the weight of {name} is not a number: {number.strip()!r}") from None
        if not math.isfinite(weight) or weight < 0:
            message = f"the weight of {name} must be a finite number >= 0, got {number.strip()}"
            raise ExportParamError("weights", message)
        if name in weights:
            raise ExportParamError("weights", f"{name} is given twice")
        if name not in scales:
            raise ExportParamError("weights", f"no aspect {name!r} in this project; choose from {', '.join(scales)}")
        weights[name] = weight
    total = sum(weights.values())
    if total <= 0:
        raise ExportParamError("weights", "give at least one aspect a weight above 0")
    return {name: weight / total for name, weight in weights.items()}
