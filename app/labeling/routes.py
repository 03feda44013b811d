"""Labeler pages (queue, labeling page) and a small JSON API for the same actions.

Thin: parse → service → render. The labeling page's URL answers with the whole page, or with only
its `task` block when htmx asks (polling, next task); submit and skip answer with the next task's
block, so the browser swaps it in without a reload. What differs between task kinds (a ranking, a
blind pairwise evaluation) is looked up in app/labeling/task_types.py: the partial that renders
the task, the keyboard help, how the answer is checked and stored (its recorder, inside submit_answer)."""

from __future__ import annotations

import json
from typing import Annotated, NoReturn

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.api_types import id_path
from app.demonstrations import tasks_api
from app.deps import CsrfDep, DbDep, SettingsDep, UserDep
from app.json_api import UNPROCESSABLE, ErrorOut, JsonApiRoute, Responses
from app.judges import suggestions
from app.labeling import service, submission
from app.labeling.errors import LabelingError
from app.labeling.hot_path import LabelerRequest, as_labeler
from app.labeling.schemas import (
    MAX_RESPONSE_CHARS,
    CompletionOut,
    DemonstrationOut,
    NextTaskOut,
    PromptOut,
    SkipIn,
    SkipOut,
    SubmissionIn,
    SubmitOut,
    SuggestionOut,
    TaskOut,
    form_family,
    form_out,
    skip_from_form,
)
from app.labeling.task_types import RANKING, FormInput, task_type
from app.markdown import render_markdown
from app.models import Project, User
from app.web import is_htmx, page

router = APIRouter(tags=["labeling"])
api_router = APIRouter(prefix="/api/v1/labeling", tags=["labeling"], route_class=JsonApiRoute)

# Creating demonstration tasks (an admin's action) lives with the demonstrations service; its
# routes join this domain's routers, which app/main.py includes first.
router.include_router(tasks_api.router)
router.include_router(tasks_api.api_router)  # keeps its JsonApiRoute class and its own prefix

LABEL_TEMPLATE = "labeling/label.html"
SUBMIT_FIELDS = (
    "ranking",
    "verdict",
    "none_acceptable",
    "time_spent_ms",
    "comment",
    "response",
    "from_draft",
    "decision",
    "reviewed_response",
)


# ---- pages ------------------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
def queue_page(request: Request, db: DbDep, user: UserDep):
    return page(request, "labeling/queue.html", {"projects": service.list_projects_for(db, user=user)})


@router.get("/projects/{project_id}/label", include_in_schema=False)
def label_page(request: Request, project_id: int, db: DbDep, user: UserDep, settings: SettingsDep):
    try:
        task_page = service.open_task_page(
            db, user=user, project_id=project_id, sweep_every=settings.lease_sweep_seconds
        )
    except LabelingError as exc:
        return _error(request, db, exc)
    return _render_task(request, task_page, db=db)


@router.post("/projects/{project_id}/label/preview", include_in_schema=False, dependencies=[CsrfDep])
def label_preview(
    request: Request,
    project_id: int,
    db: DbDep,
    user: UserDep,
    response: Annotated[str, Form(max_length=MAX_RESPONSE_CHARS)] = "",
    reviewed_response: Annotated[str, Form(max_length=MAX_RESPONSE_CHARS)] = "",
):
    """The answer being written, rendered by the one markdown renderer (raw HTML escaped): the
    demonstration page's live preview. Declared before the submit route, whose path it shares."""
    try:
        service.get_project_for_labeler(db, user=user, project_id=project_id)
    except LabelingError as exc:
        _raise(exc)
    text = response or reviewed_response
    if not text.strip():
        return HTMLResponse('<p class="muted">Nothing written yet.</p>')
    return HTMLResponse(str(render_markdown(text)))


# Submit and skip are most of a labeler's requests: hot_path.as_labeler runs the login, the CSRF
# check, the work and the commit in one thread hop, with the project and the labeler's lock read
# in the login's own statement. Same checks, same answers as the dependencies.


@router.post("/projects/{project_id}/label/{assignment_id}", include_in_schema=False)
async def submit_form(request: Request, project_id: int, assignment_id: int):
    def work(db: Session, labeler: LabelerRequest, form: FormData):
        try:
            project = labeler.project_to_label()
            # The named fields, and the per-completion ones (critique-12, rating-12, rating-12-honesty...).
            fields = {name: str(form.get(name, "")) for name in SUBMIT_FIELDS}
            fields |= {name: v for name, v in form.multi_items() if form_family(name) != name and isinstance(v, str)}
            data = FormInput(fields, [str(flag) for flag in form.getlist("flag")])
            result, view = submission.submit_answer(
                db,
                user=labeler.user,
                project=project,
                assignment_id=assignment_id,
                data=data,
                sweep_every=request.app.state.settings.lease_sweep_seconds,
                labeler_locked=True,
            )
        except LabelingError as exc:
            return _error(request, db, exc)
        if not is_htmx(request):
            return RedirectResponse(f"/projects/{project_id}/label", status_code=303)
        notice = "Late, but accepted: a slot was still free." if result.late else "Saved."
        return _task_page(request, db, user=labeler.user, project=project, view=view, notice=notice)

    return await as_labeler(request, project_id, work)


@router.post("/projects/{project_id}/label/{assignment_id}/skip", include_in_schema=False)
async def skip_form(request: Request, project_id: int, assignment_id: int):
    def work(db: Session, labeler: LabelerRequest, form: FormData):
        try:
            project = labeler.project_to_label()
            data = skip_from_form({"reason": str(form.get("reason", "")), "detail": str(form.get("detail", ""))})
            view = submission.skip_task(
                db,
                user=labeler.user,
                project=project,
                assignment_id=assignment_id,
                reason=data.reason,
                sweep_every=request.app.state.settings.lease_sweep_seconds,
                labeler_locked=True,
            )
        except LabelingError as exc:
            return _error(request, db, exc)
        if not is_htmx(request):
            return RedirectResponse(f"/projects/{project_id}/label", status_code=303)
        return _task_page(request, db, user=labeler.user, project=project, view=view, notice="Skipped.")

    return await as_labeler(request, project_id, work)


def _task_page(
    request: Request, db: Session, *, user: User, project: Project, view: service.TaskView | None, notice: str = ""
):
    progress = service.progress_with(db, view, user_id=user.id, project=project)
    task_page = service.TaskPage(project=project, view=view, progress=progress)
    return _render_task(request, task_page, db=db, notice=notice)


def _render_task(request: Request, task_page: service.TaskPage, *, db: Session, notice: str = ""):
    view = task_page.view
    # The project's AI judge's verdict, shown as a suggestion only (app/judges/suggestions.py).
    hint = None
    if view is not None:
        hint = suggestions.suggestion(db, project_id=view.project_id, task_id=view.task_id, kind=view.kind)
    context = {
        "project": task_page.project,
        "view": view,
        "task_type": view.task_type if view else task_type(RANKING),
        "progress": task_page.progress,
        "initial_ranking": json.dumps([[c.id] for c in view.completions]) if view else "[]",
        "notice": notice,
        "suggestion_lines": hint.lines({c.id: c.letter for c in view.completions}) if hint and view else [],
        "suggested_by": hint.judge if hint else "",
        # An htmx swap also replaces the shortcuts panel (out of band): the next task may be of another kind.
        "swap_keys": is_htmx(request),
    }
    return page(request, LABEL_TEMPLATE, context, block="task")


def _error(request: Request, db: Session, exc: LabelingError):
    """Inline for htmx (ranking.js puts it beside the submit button; the cards stay as they are),
    a small page otherwise. Nothing of the failed request is kept."""
    db.rollback()
    project_id = request.path_params.get("project_id")
    context = {"message": exc.message, "status": exc.status_code, "project_id": project_id, "inline": is_htmx(request)}
    return page(request, "labeling/error.html", context, block="error", status_code=exc.status_code)


# ---- JSON API (cookie session + X-CSRF-Token, like the pages) --------------------------------

ProjectId = Annotated[int, id_path("The project's id.")]
AssignmentId = Annotated[int, id_path("The assignment's id (`task.assignment_id` of /next).")]
API_ERRORS: Responses = {
    401: {"model": ErrorOut, "description": "Not logged in."},
    403: {"model": ErrorOut, "description": "Not a member of the project, or a missing CSRF token."},
    404: {"model": ErrorOut, "description": "No such project or assignment."},
    **UNPROCESSABLE,
}
CHANGE_ERRORS: Responses = {
    **API_ERRORS,
    409: {"model": ErrorOut, "description": "The task no longer takes this ranking."},
}


def _raise(exc: LabelingError) -> NoReturn:
    raise HTTPException(exc.status_code, exc.message)


def _task_out(view: service.TaskView | None, project: Project, db: Session) -> TaskOut | None:
    if view is None:
        return None
    kind = view.task_type
    hint = suggestions.suggestion(db, project_id=view.project_id, task_id=view.task_id, kind=view.kind)
    labels = {c.id: c.letter for c in view.completions}
    return TaskOut(
        kind=view.kind,
        assignment_id=view.assignment_id,
        task_id=view.task_id,
        project_id=view.project_id,
        lease_expires_at=view.lease_expires_at,
        prompt=PromptOut(text=view.prompt_text, messages=view.prompt_messages),
        # A blind task's completions go without ids: sequential ids hint at which version came first.
        completions=[
            CompletionOut(id=None if kind.blind else c.id, label=c.letter, text=c.text) for c in view.completions
        ],
        flags=list(project.flags or []) if kind.takes_flags else [],
        demonstration=None
        if view.extra is None
        else DemonstrationOut(id=view.extra.demonstration_id, response=view.extra.response),
        form=form_out(project.form_settings or {}) if kind.shows_form else None,
        suggestion=None if hint is None else SuggestionOut(judge=hint.judge, **hint.answer(labels)),
    )


@api_router.get("/projects/{project_id}/next", response_model=NextTaskOut, responses=API_ERRORS)
def api_next_task(project_id: ProjectId, db: DbDep, user: UserDep, settings: SettingsDep) -> NextTaskOut:
    """Your current task in the project (the same one until you submit or skip it), or null."""
    try:
        project = service.get_project_for_labeler(db, user=user, project_id=project_id)
        view = service.current_task(db, user=user, project=project, sweep_every=settings.lease_sweep_seconds)
    except LabelingError as exc:
        _raise(exc)
    return NextTaskOut(task=_task_out(view, project, db))


@api_router.post(
    "/projects/{project_id}/assignments/{assignment_id}/ranking",
    response_model=SubmitOut,
    dependencies=[CsrfDep],
    responses=CHANGE_ERRORS,
)
def api_submit(
    project_id: ProjectId,
    assignment_id: AssignmentId,
    body: SubmissionIn,
    db: DbDep,
    user: UserDep,
    settings: SettingsDep,
) -> SubmitOut:
    """Stores your answer to the task (safe to retry: a retry returns the stored one) and returns
    your next task. A ranking task takes `ranking` groups; a pairwise_eval or pairwise task a
    `verdict` ("A" or "B" is better, in the order of `task.completions`; "tie"; "both_bad") and an
    optional `comment` (the reason), and no `ranking` (it is blind: its completions carry no ids).
    A likert or good_bad task takes `ratings` (one per completion: 1..`task.form.likert_points`, or
    "good"/"bad"); a multi_aspect task `ratings` with an `aspect` per rated aspect, `aspect_rankings`
    per ranked aspect and `ranking` (overall) when `task.form.overall_ranking`. Every one of these
    takes optional `critiques` (completion id, or "A"/"B" on pairwise tasks, -> text). A
    demonstration task takes `response` (the answer you wrote; `from_draft` if you started from
    the model draft); a demonstration_review task a `decision` ("accept", "edit" with
    `reviewed_response`, "reject" with a `comment`). A field the task's kind does not take is a 422."""
    try:
        project = service.lock_project_for_labeler(db, user=user, project_id=project_id)
        result, view = submission.submit_answer(
            db,
            user=user,
            project=project,
            assignment_id=assignment_id,
            data=body,
            sweep_every=settings.lease_sweep_seconds,
            labeler_locked=True,
        )
    except LabelingError as exc:
        _raise(exc)
    return SubmitOut(
        ranking_id=result.ranking_id,
        demonstration_id=result.id if result.stores == "demonstration" else None,
        feedback_id=result.id if result.stores == "feedback" else None,
        late=result.late,
        duplicate=result.duplicate,
        next=_task_out(view, project, db),
    )


@api_router.post(
    "/projects/{project_id}/assignments/{assignment_id}/skip",
    response_model=SkipOut,
    dependencies=[CsrfDep],
    responses=CHANGE_ERRORS,
)
def api_skip(
    project_id: ProjectId, assignment_id: AssignmentId, body: SkipIn, db: DbDep, user: UserDep, settings: SettingsDep
) -> SkipOut:
    try:
        project = service.lock_project_for_labeler(db, user=user, project_id=project_id)
        view = submission.skip_task(
            db,
            user=user,
            project=project,
            assignment_id=assignment_id,
            reason=body.reason,
            sweep_every=settings.lease_sweep_seconds,
            labeler_locked=True,
        )
    except LabelingError as exc:
        _raise(exc)
    return SkipOut(next=_task_out(view, project, db))
