"""Turning the project settings form into service arguments, with per-field messages.

The form posts strings; the projects service owns the rules (ranges, unique name). This only
does what a browser form needs on top: numbers typed as text, flags as one comma-separated line,
the feedback form's settings as plain fields (aspects one per line: `name | Label | scale`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from app.models import DEFAULT_FLAGS, FeedbackForm, HandoutOrder, Project
from app.projects import forms_config
from app.projects import service as projects

NUMBER_FIELDS = ("k_min", "k_max", "overlap", "lease_minutes")
OPTIONAL_NUMBERS = ("k_min", "k_max")
"""Blank: the feedback form's usual range (forms_config.DEFAULT_K)."""
FORM_SETTING_FIELDS = ("likert_points", "likert_labels", "aspects", "overall_ranking")
TEXT_FIELDS = ("name", "description", "guidelines")


class ProjectFields(BaseModel):
    """The settings form as posted: every field a string, blank when missing (parse() says what is
    wrong with each, so a missing field is a message on the page, not a 422 from the framework)."""

    name: str = ""
    description: str = ""
    guidelines: str = ""
    k_min: str = ""
    k_max: str = ""
    overlap: str = ""
    lease_minutes: str = ""
    flags: str = ""
    demonstration_review: str = ""
    """A checkbox: "on" when ticked, absent otherwise."""
    feedback_form: str = ""
    likert_points: str = ""
    likert_labels: str = ""
    """Comma-separated, one per point (or blank)."""
    aspects: str = ""
    """One aspect per line: `name | Label | likert` (label and scale optional)."""
    overall_ranking: str = ""
    handout_order: str = ""
    """default, uncertainty, margin or information (blank: default)."""


@dataclass
class ProjectForm:
    """What was typed (shown back on errors) and what it parses to."""

    raw: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def blank_form(default_lease_minutes: int) -> ProjectForm:
    return ProjectForm(
        raw={
            "name": "",
            "description": "",
            "guidelines": "",
            "k_min": "",
            "k_max": "",
            "overlap": "1",
            "lease_minutes": str(default_lease_minutes),
            "flags": ", ".join(DEFAULT_FLAGS),
            "demonstration_review": "",
            "feedback_form": FeedbackForm.ranking.value,
            "likert_points": str(forms_config.DEFAULT_LIKERT_POINTS),
            "likert_labels": "",
            "aspects": _aspect_lines(forms_config.DEFAULT_ASPECTS),
            "overall_ranking": "",
            "handout_order": HandoutOrder.default.value,
        }
    )


def form_of(project: Project) -> ProjectForm:
    raw = {key: str(getattr(project, key)) for key in TEXT_FIELDS + NUMBER_FIELDS}
    raw["flags"] = ", ".join(project.flags)
    raw["demonstration_review"] = "on" if project.demonstration_review else ""
    settings = project.form_settings or {}
    raw["feedback_form"] = project.feedback_form
    raw["likert_points"] = str(forms_config.likert_points(settings))
    raw["likert_labels"] = ", ".join(settings.get("likert_labels") or [])
    raw["aspects"] = _aspect_lines(settings.get("aspects") or forms_config.DEFAULT_ASPECTS)
    raw["overall_ranking"] = "on" if settings.get("overall_ranking") else ""
    raw["handout_order"] = project.handout_order
    return ProjectForm(raw=raw)


def _aspect_lines(aspects: list[dict[str, str]]) -> str:
    return "\n".join(f"{a['name']} | {a['label']} | {a['scale']}" for a in aspects)


def parse(raw: dict[str, str]) -> ProjectForm:
    form = ProjectForm(raw=raw)
    for key in TEXT_FIELDS:
        form.values[key] = raw.get(key, "").replace("\r\n", "\n")
    for key in NUMBER_FIELDS:
        text = raw.get(key, "").strip()
        if key in OPTIONAL_NUMBERS and not text:
            form.values[key] = None
            continue
        try:
            form.values[key] = int(text)
        except ValueError:
            form.errors[key] = f"enter a whole number (got {text!r})" if text else "enter a whole number"
    form.values["flags"] = [flag.strip() for flag in raw.get("flags", "").split(",") if flag.strip()]
    form.values["demonstration_review"] = raw.get("demonstration_review", "") in ("on", "true", "1")
    form.values["feedback_form"] = raw.get("feedback_form", "").strip() or FeedbackForm.ranking.value
    form.values["form_settings"] = _form_settings(form)
    form.values["handout_order"] = raw.get("handout_order", "").strip() or HandoutOrder.default.value
    return form


def _form_settings(form: ProjectForm) -> dict[str, Any]:
    """Only the fields the chosen form reads; the service checks them (and names what is wrong)."""
    raw, chosen = form.raw, form.values["feedback_form"]
    if chosen not in (FeedbackForm.likert, FeedbackForm.multi_aspect):
        return {}
    settings: dict[str, Any] = {}
    points = raw.get("likert_points", "").strip()
    if points:
        try:
            settings["likert_points"] = int(points)
        except ValueError:
            form.errors["likert_points"] = f"enter a whole number (got {points!r})"
    settings["likert_labels"] = [label.strip() for label in raw.get("likert_labels", "").split(",") if label.strip()]
    if chosen == FeedbackForm.multi_aspect:
        aspects = []
        for line in raw.get("aspects", "").replace("\r\n", "\n").split("\n"):
            if not line.strip():
                continue
            name, label, scale = ([part.strip() for part in line.split("|")] + ["", ""])[:3]
            aspects.append(
                {"name": name, "label": label or name.replace("_", " ").capitalize(), "scale": scale or "likert"}
            )
        settings["aspects"] = aspects
        settings["overall_ranking"] = raw.get("overall_ranking", "") in ("on", "true", "1")
    return settings


def save(db, *, form: ProjectForm, project: Project | None = None) -> Project | None:
    """Creates or updates through the projects service; on refusal fills `form.errors` and returns None."""
    if form.errors:
        return None
    try:
        if project is None:
            return projects.create_project(db, **form.values)
        return projects.update_project(db, project=project, **form.values)
    except projects.ProjectError as exc:
        # The service's message starts with the field name; the page shows it beside the field.
        message = str(exc).removeprefix(f"{exc.field}: ")
        field_name = exc.field
        if field_name.startswith("form_settings."):  # e.g. form_settings.aspects[1].name -> the aspects box
            path = field_name.removeprefix("form_settings.")
            field_name = next((f for f in FORM_SETTING_FIELDS if path.startswith(f)), "feedback_form")
            message = f"{path}: {message}" if path != field_name else message
        form.errors[field_name] = message
        return None
