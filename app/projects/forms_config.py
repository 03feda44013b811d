"""A project's feedback form (issue 15) and its settings: what each form allows and checks.

The form (models.FeedbackForm) is chosen at creation and fixed once the project has tasks; its
tasks are of that kind (app/labeling/task_types.py). `form_settings` holds the options below; the
checks raise ProjectError naming the field ("form_settings.aspects[1].scale: ...").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.models import FeedbackForm, Project


class FormSettingsError(ValueError):
    """A form value was refused; `field` names it (projects.service turns it into a ProjectError)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


FORMS: tuple[str, ...] = tuple(form.value for form in FeedbackForm)

K_RANGE: dict[str, tuple[int, int]] = {
    FeedbackForm.ranking: (4, 9),
    FeedbackForm.pairwise: (2, 2),
    FeedbackForm.likert: (1, 9),
    FeedbackForm.multi_aspect: (1, 9),
    FeedbackForm.good_bad: (1, 9),
}
"""Completions per task each form allows (the project's k_min..k_max must lie inside)."""

DEFAULT_K: dict[str, tuple[int, int]] = {
    FeedbackForm.ranking: (4, 9),
    FeedbackForm.pairwise: (2, 2),
    FeedbackForm.likert: (1, 4),
    FeedbackForm.multi_aspect: (2, 4),
    FeedbackForm.good_bad: (1, 4),
}
"""The k range a new project of each form gets when none is given."""

LIKERT_POINTS = (3, 9)
DEFAULT_LIKERT_POINTS = 7
MAX_LABEL_CHARS = 40
MAX_ASPECTS = 8
ASPECT_NAME = re.compile(r"[a-z0-9_]{1,32}")
SCALES = ("likert", "ranking")

DEFAULT_ASPECTS = [
    {"name": "helpfulness", "label": "Helpful", "scale": "likert"},
    {"name": "harmlessness", "label": "Harmless", "scale": "likert"},
    {"name": "honesty", "label": "Honest", "scale": "likert"},
]


@dataclass(frozen=True)
class Aspect:
    name: str
    """[a-z0-9_]{1,32}: the key in answers, exports and reward-model heads."""
    label: str
    """What labelers read."""
    scale: str
    """"likert" (each completion rated 1..likert_points) or "ranking" (the completions ordered)."""


def task_kind_for(project: Project) -> str:
    """The kind of the tasks a project's uploads and rounds create (ranking_tasks.kind): its form's."""
    return str(project.feedback_form or FeedbackForm.ranking)


def k_range(form: str) -> tuple[int, int]:
    return K_RANGE[form]


def check_form(form: Any) -> str:
    if form not in FORMS:
        raise FormSettingsError("feedback_form", f"is {form!r}; choose one of {', '.join(FORMS)}")
    return str(form)


def check_form_settings(form: str, settings: Any) -> dict[str, Any]:
    """The settings cleaned and completed with defaults, or FormSettingsError naming the field.
    Ranking and pairwise take none; likert takes likert_points and likert_labels; multi_aspect
    takes aspects, likert_points, likert_labels and overall_ranking; good_bad takes none."""
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise FormSettingsError("form_settings", "must be an object")
    allowed = {
        FeedbackForm.likert: {"likert_points", "likert_labels"},
        FeedbackForm.multi_aspect: {"likert_points", "likert_labels", "aspects", "overall_ranking"},
    }.get(FeedbackForm(form), set())
    unknown = sorted(set(settings) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no settings"
        raise FormSettingsError(f"form_settings.{unknown[0]}", f"the {form} form takes {takes}")
    if not allowed:
        return {}
    cleaned: dict[str, Any] = _likert_settings(settings)
    if form == FeedbackForm.multi_aspect:
        cleaned["aspects"] = _aspects(settings.get("aspects", DEFAULT_ASPECTS))
        overall = settings.get("overall_ranking", False)
        if not isinstance(overall, bool):
            raise FormSettingsError("form_settings.overall_ranking", "must be true or false")
        cleaned["overall_ranking"] = overall
    return cleaned


def _likert_settings(settings: dict[str, Any]) -> dict[str, Any]:
    points = settings.get("likert_points", DEFAULT_LIKERT_POINTS)
    low, high = LIKERT_POINTS
    if isinstance(points, bool) or not isinstance(points, int) or not low <= points <= high:
        raise FormSettingsError("form_settings.likert_points", f"is {points!r}; must be a whole number {low}–{high}")
    labels = settings.get("likert_labels") or []
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise FormSettingsError("form_settings.likert_labels", "must be a list of strings, one per point")
    labels = [label.strip() for label in labels]
    if labels and len(labels) != points:
        raise FormSettingsError(
            "form_settings.likert_labels", f"has {len(labels)} labels for {points} points; give one per point or none"
        )
    for i, label in enumerate(labels):
        if not label or len(label) > MAX_LABEL_CHARS or "\x00" in label:
            raise FormSettingsError(
                f"form_settings.likert_labels[{i}]", f"must be 1–{MAX_LABEL_CHARS} characters (no NUL)"
            )
    return {"likert_points": points, "likert_labels": labels}


def _aspects(aspects: Any) -> list[dict[str, str]]:
    if not isinstance(aspects, list) or not 1 <= len(aspects) <= MAX_ASPECTS:
        raise FormSettingsError("form_settings.aspects", f"must be a list of 1–{MAX_ASPECTS} aspects")
    cleaned: list[dict[str, str]] = []
    for i, aspect in enumerate(aspects):
        where = f"form_settings.aspects[{i}]"
        if not isinstance(aspect, dict):
            raise FormSettingsError(where, 'must be an object {"name", "label", "scale"}')
        unknown = sorted(set(aspect) - {"name", "label", "scale"})
        if unknown:
            raise FormSettingsError(f"{where}.{unknown[0]}", "unknown; an aspect has name, label and scale")
        name = aspect.get("name")
        if not isinstance(name, str) or not ASPECT_NAME.fullmatch(name):
            raise FormSettingsError(f"{where}.name", f"is {name!r}; use 1–32 of a-z, 0-9 and _")
        if any(seen["name"] == name for seen in cleaned):
            raise FormSettingsError(f"{where}.name", f"{name!r} is given twice; aspect names must differ")
        label = aspect.get("label") or name.replace("_", " ").capitalize()
        if not isinstance(label, str) or len(label.strip()) > 80 or "\x00" in label:
            raise FormSettingsError(f"{where}.label", "must be a string of at most 80 characters")
        scale = aspect.get("scale", "likert")
        if scale not in SCALES:
            raise FormSettingsError(f"{where}.scale", f"is {scale!r}; choose likert or ranking")
        cleaned.append({"name": name, "label": label.strip(), "scale": scale})
    return cleaned


def aspects_of(settings: dict[str, Any]) -> list[Aspect]:
    """The project's aspects (multi_aspect), in the admin's order."""
    return [Aspect(**aspect) for aspect in settings.get("aspects", [])]


def likert_points(settings: dict[str, Any]) -> int:
    return int(settings.get("likert_points", DEFAULT_LIKERT_POINTS))


def likert_labels(settings: dict[str, Any]) -> list[str]:
    """One label per point, "1".."N" where the admin gave none."""
    points = likert_points(settings)
    return list(settings.get("likert_labels") or []) or [str(i) for i in range(1, points + 1)]
