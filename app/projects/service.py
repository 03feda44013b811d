"""Projects: create, read, update, and how far their labeling has come.

Every function takes the session first and only flushes; the caller commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import (
    DEFAULT_FLAGS,
    Assignment,
    AssignmentState,
    Feedback,
    FeedbackForm,
    HandoutOrder,
    Project,
    Prompt,
    PromptSplit,
    Ranking,
    RankingTask,
    TaskStatus,
    utcnow,
)
from app.projects import forms_config

K_LOWEST, K_HIGHEST = 4, 9
"""Every ranking task shows between 4 and 9 completions (the InstructGPT range); other forms have
their own range (forms_config.K_RANGE)."""
MAX_OVERLAP = 50
MAX_LEASE_MINUTES = 7 * 24 * 60
UPDATABLE_FIELDS = {
    "name",
    "description",
    "guidelines",
    "k_min",
    "k_max",
    "overlap",
    "lease_minutes",
    "flags",
    "demonstration_review",
    "feedback_form",
    "form_settings",
    "handout_order",
}
FIXED_ONCE_TASKED = ("feedback_form", "form_settings")
"""Changing these would change what the answers already given mean."""


class ProjectError(ValueError):
    """A project value was refused. `field` names it; the message says what to send instead."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class DuplicateProjectName(ProjectError):
    def __init__(self, name: str) -> None:
        super().__init__("name", f"a project named {name!r} already exists; choose another name")


def create_project(
    db: Session,
    *,
    name: str,
    guidelines: str = "",
    description: str = "",
    k_min: int | None = None,
    k_max: int | None = None,
    overlap: int = 1,
    lease_minutes: int = 30,
    flags: list[str] | None = None,
    demonstration_review: bool = False,
    feedback_form: str = FeedbackForm.ranking,
    form_settings: dict[str, Any] | None = None,
    handout_order: str = HandoutOrder.default,
) -> Project:
    """Raises ProjectError (a ValueError) naming the field for any refused value. k_min/k_max
    default to the form's usual range (forms_config.DEFAULT_K: ranking 4–9, pairwise 2)."""
    default_k = forms_config.DEFAULT_K.get(feedback_form, (K_LOWEST, K_HIGHEST))
    values = _validated(
        name=name,
        guidelines=guidelines,
        description=description,
        k_min=default_k[0] if k_min is None else k_min,
        k_max=default_k[1] if k_max is None else k_max,
        overlap=overlap,
        lease_minutes=lease_minutes,
        flags=list(DEFAULT_FLAGS) if flags is None else flags,
        demonstration_review=demonstration_review,
        feedback_form=feedback_form,
        form_settings=form_settings,
        handout_order=handout_order,
    )
    _check_name_free(db, values["name"], except_id=None)
    project = Project(**values)
    db.add(project)
    db.flush()
    return project


def list_projects(db: Session) -> list[Project]:
    return list(db.scalars(select(Project).order_by(Project.id)))


def get_project(db: Session, *, project_id: int) -> Project | None:
    return db.get(Project, project_id)


def get_project_by_name(db: Session, *, name: str) -> Project | None:
    return db.scalar(select(Project).where(Project.name == name.strip()))


def update_project(db: Session, *, project: Project, **fields: Any) -> Project:
    """Changes only the given fields (see UPDATABLE_FIELDS); the result is checked as a whole,
    so k_min may not pass k_max either way. Raises ProjectError; nothing changes then."""
    unknown = sorted(set(fields) - UPDATABLE_FIELDS)
    if unknown:
        raise ProjectError(unknown[0], f"cannot be changed; changeable fields are {sorted(UPDATABLE_FIELDS)}")
    current = {key: getattr(project, key) for key in UPDATABLE_FIELDS}
    values = _validated(**{**current, **fields})
    for key in FIXED_ONCE_TASKED:
        if key in fields and values[key] != current[key] and _has_tasks(db, project.id):
            raise ProjectError(
                key,
                "cannot change once the project has tasks (the answers given would change meaning); "
                "create a new project for another form",
            )
    if values["name"] != project.name:
        _check_name_free(db, values["name"], except_id=project.id)
    for key in fields:
        setattr(project, key, values[key])
    db.flush()
    return project


def project_progress(db: Session, *, project: Project) -> dict[str, Any]:
    """Counts for dashboards and API clients. Retired tasks are left out of tasks and coverage.

    coverage = rankings on live tasks / (live tasks × overlap), 1.0 when every task has all the
    rankings it wants (0.0 for a project without tasks). A rating-form answer counts as a ranking."""
    live = RankingTask.status != TaskStatus.retired
    prompts = db.scalar(select(func.count()).select_from(Prompt).where(Prompt.project_id == project.id))
    in_eval = Prompt.split == PromptSplit.eval
    eval_prompts = db.scalar(select(func.count()).select_from(Prompt).where(Prompt.project_id == project.id, in_eval))
    by_status = dict(
        db.execute(
            select(RankingTask.status, func.count())
            .where(RankingTask.project_id == project.id)
            .group_by(RankingTask.status)
        ).all()
    )
    by_count = db.execute(
        select(RankingTask.rankings_count, func.count())
        .where(RankingTask.project_id == project.id, live)
        .group_by(RankingTask.rankings_count)
        .order_by(RankingTask.rankings_count)
    ).all()
    # Answers: rankings (ranking and pairwise forms) and rating-form answers (Feedback rows).
    rankings_live = rankings_all = 0
    for answer in (Ranking, Feedback):
        rankings_live += db.execute(
            select(func.count()).select_from(answer).join(RankingTask).where(answer.project_id == project.id, live)
        ).scalar_one()
        rankings_all += db.execute(
            select(func.count()).select_from(answer).where(answer.project_id == project.id)
        ).scalar_one()
    open_leases = db.scalar(
        select(func.count())
        .select_from(Assignment)
        .where(
            Assignment.project_id == project.id,
            Assignment.state == AssignmentState.leased,
            Assignment.lease_expires_at > utcnow(),
        )
    )
    tasks = by_status.get(TaskStatus.open, 0) + by_status.get(TaskStatus.complete, 0)
    wanted = tasks * project.overlap
    return {
        "prompts": prompts,
        "eval_prompts": eval_prompts,
        "tasks": tasks,
        "tasks_open": by_status.get(TaskStatus.open, 0),
        "tasks_complete": by_status.get(TaskStatus.complete, 0),
        "tasks_retired": by_status.get(TaskStatus.retired, 0),
        "rankings": rankings_all,
        "overlap": project.overlap,
        "coverage": round(min(rankings_live, wanted) / wanted, 4) if wanted else 0.0,
        "tasks_by_rankings": {str(count): n for count, n in by_count},
        "open_leases": open_leases,
    }


def _has_tasks(db: Session, project_id: int) -> bool:
    return db.scalar(select(RankingTask.id).where(RankingTask.project_id == project_id).limit(1)) is not None


def _check_name_free(db: Session, name: str, *, except_id: int | None) -> None:
    query = select(Project.id).where(Project.name == name)
    if except_id is not None:
        query = query.where(Project.id != except_id)
    if db.scalar(query) is not None:
        raise DuplicateProjectName(name)


def _validated(
    *,
    name,
    guidelines,
    description,
    k_min,
    k_max,
    overlap,
    lease_minutes,
    flags,
    demonstration_review,
    feedback_form,
    form_settings,
    handout_order,
) -> dict[str, Any]:
    try:
        feedback_form = forms_config.check_form(feedback_form)
        form_settings = forms_config.check_form_settings(feedback_form, form_settings)
    except forms_config.FormSettingsError as exc:
        raise ProjectError(exc.field, exc.message) from None
    k_low, k_high = forms_config.K_RANGE[feedback_form]
    if handout_order not in set(HandoutOrder):
        choices = ", ".join(order.value for order in HandoutOrder)
        raise ProjectError("handout_order", f"is {handout_order!r}; choose one of {choices}")
    if not isinstance(demonstration_review, bool):
        raise ProjectError("demonstration_review", "must be true or false")
    if not isinstance(name, str) or not name.strip():
        raise ProjectError("name", "must be a non-empty string")
    name = name.strip()
    if len(name) > 200:
        raise ProjectError("name", f"is {len(name)} characters long; at most 200 are allowed")
    for field, value in (("guidelines", guidelines), ("description", description)):
        if not isinstance(value, str):
            raise ProjectError(field, "must be a string (Markdown)")
    for field, value in (
        ("name", name),
        ("guidelines", guidelines),
        ("description", description),
        *(("flags", f) for f in (flags if isinstance(flags, (list, tuple)) else ()) if isinstance(f, str)),
    ):
        if "\x00" in value:
            raise ProjectError(field, "contains a NUL character (\\x00), which cannot be stored; remove it")
    for field, value, low, high in (
        ("k_min", k_min, k_low, k_high),
        ("k_max", k_max, k_low, k_high),
        ("overlap", overlap, 1, MAX_OVERLAP),
        ("lease_minutes", lease_minutes, 1, MAX_LEASE_MINUTES),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProjectError(field, f"must be an integer from {low} to {high}")
        if not low <= value <= high:
            for_form = f" for the {feedback_form} form" if field.startswith("k_") else ""
            raise ProjectError(field, f"is {value}; allowed range is {low}–{high}{for_form}")
    if k_min > k_max:
        raise ProjectError("k_min", f"is {k_min}, more than k_max ({k_max}); k_min must be ≤ k_max")
    if not isinstance(flags, (list, tuple)) or not all(isinstance(f, str) and f.strip() for f in flags):
        raise ProjectError("flags", "must be a list of non-empty strings")
    cleaned_flags = list(dict.fromkeys(f.strip() for f in flags))
    if any(len(f) > 64 for f in cleaned_flags):
        raise ProjectError("flags", "each flag name may be at most 64 characters")
    return {
        "name": name,
        "guidelines": guidelines,
        "description": description,
        "k_min": k_min,
        "k_max": k_max,
        "overlap": overlap,
        "lease_minutes": lease_minutes,
        "flags": cleaned_flags,
        "demonstration_review": demonstration_review,
        "feedback_form": feedback_form,
        "form_settings": form_settings,
        "handout_order": HandoutOrder(handout_order).value,
    }
