"""Turning the project settings form into service arguments, with per-field messages.

The form posts strings; the projects service owns the rules (ranges, unique name). This only
does what a browser form needs on top: numbers typed as text, flags as one comma-separated line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from app.models import DEFAULT_FLAGS, Project
from app.projects import service as projects

NUMBER_FIELDS = ("k_min", "k_max", "overlap", "lease_minutes")
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
            "k_min": "4",
            "k_max": "9",
            "overlap": "1",
            "lease_minutes": str(default_lease_minutes),
            "flags": ", ".join(DEFAULT_FLAGS),
            "demonstration_review": "",
        }
    )


def form_of(project: Project) -> ProjectForm:
    raw = {key: str(getattr(project, key)) for key in TEXT_FIELDS + NUMBER_FIELDS}
    raw["flags"] = ", ".join(project.flags)
    raw["demonstration_review"] = "on" if project.demonstration_review else ""
    return ProjectForm(raw=raw)


def parse(raw: dict[str, str]) -> ProjectForm:
    form = ProjectForm(raw=raw)
    for key in TEXT_FIELDS:
        form.values[key] = raw.get(key, "").replace("\r\n", "\n")
    for key in NUMBER_FIELDS:
        text = raw.get(key, "").strip()
        try:
            form.values[key] = int(text)
        except ValueError:
            form.errors[key] = f"enter a whole number (got {text!r})" if text else "enter a whole number"
    form.values["flags"] = [flag.strip() for flag in raw.get("flags", "").split(",") if flag.strip()]
    form.values["demonstration_review"] = raw.get("demonstration_review", "") in ("on", "true", "1")
    return form


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
        form.errors[exc.field] = message
        return None
