"""A project's AI judge: its settings and versions, the AI labeler account of each version,
launching a run on the worker, and the suggestion shown to labelers (app/judges/suggestions.py).
Agreement with humans is app/judges/agreement.py."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.judges import suggestions
from app.judges.schemas import JudgeIn
from app.models import FeedbackForm, Project, User
from app.models.judges import AI_ROLE, Judge, JudgeKind, JudgeRun, JudgeRunStatus
from app.refusals import Refusal
from app.rounds.queue import QueueUnreachable, check_reachable, enqueue_on_commit, settings_of
from worker.celery_app import GENERATE, JUDGE_RUN, queue_for
from worker.ml.judge import DEFAULT_TEMPLATE, PLACEHOLDERS, TemplateError, check_template
from worker.ml.judge_forms import RATING_FORMS, check_rating_template

KEY_ENV = re.compile(r"^(RANKLAB_JUDGE_[A-Z0-9_]+|OPENAI_API_KEY)$")
JUDGING_FIELDS = ("kind", "model_path", "endpoint_url", "endpoint_model", "prompt_template", "orders")
"""A change to any of these makes a new judge version (and AI labeler account)."""
LIVE = (JudgeRunStatus.pending, JudgeRunStatus.running)
JUDGED_FORMS = (FeedbackForm.ranking, FeedbackForm.pairwise, *RATING_FORMS)
"""A pairwise task is a ranking of two (a verdict stored as a Ranking, app/labeling/form_types.py):
the judge ranks its two answers in both orders; orders that disagree tie and store nothing. The
rating forms with a judge (worker/ml/judge_forms.py) rate each completion alone."""


class JudgeError(Refusal):
    pass


class JudgeNotFound(JudgeError):
    status_code = 404


class JudgeConflict(JudgeError):
    status_code = 409


class QueueDown(JudgeError):
    status_code = 503


def get_judge(db: Session, *, project_id: int) -> Judge | None:
    return db.scalar(select(Judge).where(Judge.project_id == project_id))


def require_judge(db: Session, *, project_id: int) -> Judge:
    judge = get_judge(db, project_id=project_id)
    if judge is None:
        raise JudgeNotFound("judge", "this project has no judge yet; set one up first (PUT .../judge)")
    return judge


def labeler_name(judge: Judge) -> str:
    return f"{judge.name} v{judge.version} (AI)"


def save_judge(db: Session, *, project: Project, data: dict) -> Judge:
    """Creates or updates the project's judge from JudgeIn fields (those left out take JudgeIn's
    defaults); refuses what cannot work."""
    data = {**JudgeIn().model_dump(mode="json"), **data}
    data["prompt_template"] = data.get("prompt_template") or default_template(project.feedback_form)
    _check(project, data)
    judge = get_judge(db, project_id=project.id)
    if judge is None:
        judge = Judge(project_id=project.id, version=0, **data)
        db.add(judge)
        db.flush()
        new_version = True
    else:
        new_version = any(getattr(judge, name) != data[name] for name in JUDGING_FIELDS)
        for name, value in data.items():
            setattr(judge, name, value)
    if new_version or judge.user_id is None:
        judge.version += 1
        judge.user_id = _ai_account(db, judge).id
    elif data["name"]:
        user = db.get(User, judge.user_id)
        if user is not None:
            user.display_name = labeler_name(judge)
    db.flush()
    suggestions.forget(db, project_id=project.id)
    return judge


def default_template(form: str) -> str:
    """The prompt a new judge of a project of this form starts with."""
    rating = RATING_FORMS.get(form)
    return DEFAULT_TEMPLATE if rating is None else rating.template


def placeholders(form: str) -> str:
    """What a template for this form may name, for the admin page."""
    rating = RATING_FORMS.get(form)
    return ", ".join(PLACEHOLDERS if rating is None else rating.all_placeholders)


def _check(project: Project, data: dict) -> None:
    if project.feedback_form not in JUDGED_FORMS:
        judged = ", ".join(str(form) for form in JUDGED_FORMS)
        raise JudgeError("project", f"judges answer {judged} projects; not {project.feedback_form} yet")
    rating = RATING_FORMS.get(project.feedback_form)
    try:
        if rating is None:
            check_template(data["prompt_template"])
        else:
            check_rating_template(data["prompt_template"], rating)
    except (TemplateError, ValueError) as exc:
        raise JudgeError("prompt_template", str(exc)) from None
    if data["kind"] == JudgeKind.endpoint:
        if not re.match(r"^https?://[^\s/]+", data["endpoint_url"] or ""):
            raise JudgeError("endpoint_url", "give the endpoint's base URL, e.g. http://vllm:8000/v1")
        if not data["endpoint_model"]:
            raise JudgeError("endpoint_model", "name the model the endpoint should answer with")
    if data.get("api_key_env") and not KEY_ENV.match(data["api_key_env"]):
        raise JudgeError(
            "api_key_env",
            "name an environment variable of the worker that starts with RANKLAB_JUDGE_ (or OPENAI_API_KEY); "
            "put the key there, never in this form",
        )


def _ai_account(db: Session, judge: Judge) -> User:
    """The AI labeler of this judge version: no usable password, inactive, role "ai"."""
    user = User(
        email=f"judge-{judge.id}-v{judge.version}@ai.ranklab.invalid",
        display_name=labeler_name(judge),
        password_hash="!ai-judge: cannot log in",
        role=AI_ROLE,
        is_active=False,
    )
    db.add(user)
    db.flush()
    return user


def launch_run(db: Session, *, judge: Judge) -> JudgeRun:
    """A run of the judge over the project's tasks, sent to the worker after the caller commits."""
    live = db.scalar(select(JudgeRun.id).where(JudgeRun.judge_id == judge.id, JudgeRun.status.in_(LIVE)))
    if live is not None:
        raise JudgeConflict("run", f"judge run {live} is still going; wait for it to finish")
    try:
        check_reachable(settings_of(db))
    except QueueUnreachable as exc:
        raise QueueDown("queue", str(exc)) from None
    run = JudgeRun(judge_id=judge.id, project_id=judge.project_id, user_id=judge.user_id)
    db.add(run)
    db.flush()
    enqueue_on_commit(db, JUDGE_RUN, run.id, queue=queue_for(GENERATE, settings_of(db)))
    return run


def get_run(db: Session, *, run_id: int) -> JudgeRun:
    run = db.get(JudgeRun, run_id)
    if run is None:
        raise JudgeNotFound("run", f"no judge run {run_id}")
    return run


def list_runs(db: Session, *, project_id: int, limit: int = 20) -> list[JudgeRun]:
    return list(
        db.scalars(select(JudgeRun).where(JudgeRun.project_id == project_id).order_by(JudgeRun.id.desc()).limit(limit))
    )


def suggestion(db: Session, *, project_id: int, task_id: int) -> list[list[int]] | None:
    """The judge's order of the task's completions (groups, best first) to show a human labeler
    as a suggestion, or None: none when the project turned suggestions off (the default)."""
    found = suggestions.suggestion(db, project_id=project_id, task_id=task_id)
    return None if found is None else found.groups
