"""Routes for a project's AI judge: /api/v1 (admin-scoped tokens) and the admin page with its
settings form, the "Judge open tasks" button, the runs and the agreement table."""

from __future__ import annotations

from typing import Annotated, NoReturn

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.api_types import id_path
from app.deps import AdminDep, AdminTokenDep, CsrfDep, DbDep
from app.json_api import JsonApiRoute, admin_api_responses
from app.judges import agreement as judge_agreement
from app.judges import service
from app.judges.schemas import AgreementOut, JudgeIn, JudgeOut, JudgeRunOut
from app.models import Project
from app.projects.deps import ProjectDep
from app.refusals import http_error
from app.web import page

api_router = APIRouter(prefix="/api/v1", tags=["judges"], route_class=JsonApiRoute)
router = APIRouter(prefix="/admin", tags=["judges"], include_in_schema=False)
ERRORS, CHANGES = admin_api_responses("judge")
RunId = Annotated[int, id_path("The judge run's id.")]


def _fail(exc: service.JudgeError) -> NoReturn:
    raise http_error(exc) from None


def _out(db: Session, judge) -> JudgeOut:
    return JudgeOut.model_validate(judge).model_copy(update={"labeler_name": service.labeler_name(judge)})


def _agreement(db: Session, project_id: int) -> AgreementOut:
    result = judge_agreement.agreement(db, project_id=project_id)
    return AgreementOut(
        measure=result.measure,
        human_pct=result.human.agreement_pct,
        human_comparisons=result.human.comparisons,
        judge_pct=result.judge.agreement_pct,
        judge_comparisons=result.judge.comparisons,
        judge_tasks=result.judge.tasks,
        statistic_name=result.statistic_name,
        human_statistic=result.human.statistic,
        judge_statistic=result.judge.statistic,
        instructgpt_pct=result.instructgpt_pct,
    )


@api_router.get(
    "/projects/{project_id}/judge", response_model=JudgeOut, summary="The project's judge", responses=ERRORS
)
def get_judge(project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    try:
        return _out(db, service.require_judge(db, project_id=project.id))
    except service.JudgeError as exc:
        _fail(exc)


@api_router.put("/projects/{project_id}/judge", response_model=JudgeOut, summary="Set up the judge", responses=CHANGES)
def put_judge(body: JudgeIn, project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    """Creates or changes the project's AI judge. A change to what judges makes a new version,
    whose AI labeler account is named after the judge and the version."""
    try:
        return _out(db, service.save_judge(db, project=project, data=body.model_dump(mode="json")))
    except service.JudgeError as exc:
        _fail(exc)


@api_router.post(
    "/projects/{project_id}/judge/runs",
    status_code=201,
    response_model=JudgeRunOut,
    summary="Judge the project's tasks",
    responses=CHANGES,
)
def launch(project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    """The judge ranks the project's tasks on the worker (open ones; complete ones too in compare
    mode). Poll GET /api/v1/judge-runs/{id} for progress."""
    try:
        run = service.launch_run(db, judge=service.require_judge(db, project_id=project.id))
    except service.JudgeError as exc:
        _fail(exc)
    return JudgeRunOut.model_validate(run)


@api_router.get(
    "/projects/{project_id}/judge/runs", response_model=list[JudgeRunOut], summary="Judge runs", responses=ERRORS
)
def list_runs(project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    return [JudgeRunOut.model_validate(r) for r in service.list_runs(db, project_id=project.id)]


@api_router.get("/judge-runs/{run_id}", response_model=JudgeRunOut, summary="A judge run's progress", responses=ERRORS)
def get_run(run_id: RunId, db: DbDep, _token: AdminTokenDep):
    try:
        return JudgeRunOut.model_validate(service.get_run(db, run_id=run_id))
    except service.JudgeError as exc:
        _fail(exc)


@api_router.get(
    "/projects/{project_id}/judge/agreement",
    response_model=AgreementOut,
    summary="Judge–human agreement beside human–human",
    responses=ERRORS,
)
def agreement(project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    return _agreement(db, project.id)


# ---- admin page ---------------------------------------------------------------------------------


def _page(request: Request, db: Session, project: Project, *, values=None, error: str = "", status_code: int = 200):
    judge = service.get_judge(db, project_id=project.id)
    runs = service.list_runs(db, project_id=project.id)
    if values is None:
        values = JudgeIn().model_dump(mode="json") if judge is None else _out(db, judge).model_dump(mode="json")
        values["prompt_template"] = values.get("prompt_template") or service.default_template(project.feedback_form)
    return page(
        request,
        "judges/judge.html",
        {
            "project": project,
            "judge": judge,
            "labeler_name": service.labeler_name(judge) if judge else "",
            "values": values,
            "error": error,
            "runs": runs,
            "live": any(run.status in service.LIVE for run in runs),
            "agreement": _agreement(db, project.id),
            "placeholders": service.placeholders(project.feedback_form),
        },
        block="runs",  # an htmx poll (every 2 s while a run is live) gets the runs table only
        status_code=status_code,
    )


@router.get("/projects/{project_id}/judge")
def judge_page(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    return _page(request, db, project)


@router.post("/projects/{project_id}/judge", dependencies=[CsrfDep])
async def save(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    posted = dict(await request.form())
    posted.pop("csrf_token", None)
    values: dict[str, object] = {key: str(value) for key, value in posted.items()}
    values["show_suggestion"] = "show_suggestion" in posted
    try:
        data = JudgeIn.model_validate(_typed(values)).model_dump(mode="json")
        service.save_judge(db, project=project, data=data)
    except ValidationError as exc:
        first = exc.errors()[0]
        return _page(request, db, project, values=values, error=f"{first['loc'][0]}: {first['msg']}", status_code=422)
    except service.JudgeError as exc:
        db.rollback()
        return _page(request, db, project, values=values, error=str(exc), status_code=exc.status_code)
    return RedirectResponse(f"/admin/projects/{project.id}/judge", status_code=303)


def _typed(values: dict[str, object]) -> dict[str, object]:
    """The form's numbers as numbers (the API takes them strictly); what does not parse stays a
    string, and validation names the field."""
    typed = dict(values)
    for name, kind in (("orders", int), ("max_attempts", int), ("requests_per_minute", float)):
        try:
            typed[name] = kind(str(values.get(name, "")))
        except ValueError:
            pass
    return typed


@router.post("/projects/{project_id}/judge/runs", dependencies=[CsrfDep])
def launch_page(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    try:
        service.launch_run(db, judge=service.require_judge(db, project_id=project.id))
    except service.JudgeError as exc:
        db.rollback()
        return _page(request, db, project, error=str(exc), status_code=exc.status_code)
    return RedirectResponse(f"/admin/projects/{project.id}/judge", status_code=303)
