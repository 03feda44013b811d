"""Admin pages for evaluations: the project's list with the launch form and eval set, one
evaluation's status and results, and the launch posted from the model versions page.

Thin: parse the form → service → render. The evaluation page answers with only its `live` block
when htmx polls it (every 3 s while generating or labeling); a finished one stops polling."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from app.deps import AdminDep, CsrfDep, DbDep
from app.evaluation import charts, results, service
from app.models import Evaluation, Project
from app.projects.deps import ProjectDep, get_project_or_404
from app.refusals import retry_headers
from app.web import is_htmx, page

router = APIRouter(prefix="/admin", tags=["evaluations"], include_in_schema=False)
PRESET_LABELS = {"previous": "its previous policy", "base": "the base model", "sft": "the SFT model"}


def _evaluation_or_404(db: Session, evaluation_id: int) -> Evaluation:
    try:
        return service.get_evaluation(db, evaluation_id=evaluation_id)
    except service.EvaluationNotFound as exc:
        raise HTTPException(404, exc.message) from None


async def _posted(request: Request) -> FormData:
    """The form, read on the event loop so the endpoints (DB and broker work) run in the threadpool."""
    return await request.form()


Posted = Annotated[FormData, Depends(_posted)]


def _int(value: Any, field: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise service.EvaluationError(field, "must be a whole number") from None
    if not 0 <= number <= 2**31 - 1:
        raise service.EvaluationError(field, "is out of range")
    return number


# ---- the project's evaluations -----------------------------------------------------------------


def _list_page(
    request: Request, db: Session, project: Project, *, errors: dict[str, str] | None = None, status_code: int = 200
):
    versions = service.evaluable_versions(db, project_id=project.id)
    series = results.rounds_vs_previous(db, project_id=project.id)
    return page(
        request,
        "evaluation/list.html",
        {
            "project": project,
            "evaluations": service.list_evaluations(db, project_id=project.id),
            "versions": versions,
            "eval_size": len(service.eval_prompts(db, project_id=project.id, limit=None)),
            "free_prompts": len(service.lifecycle.unused_prompts(db, project_id=project.id, limit=None)),
            "presets": PRESET_LABELS,
            "named_presets": service.named_presets(db, project_id=project.id),
            "leaderboard": results.leaderboard(db, project_id=project.id),
            "chart": _series_chart(series),
            "errors": errors or {},
            "posted": dict(request.query_params),
        },
        status_code=status_code,
    )


def _series_chart(series: list[dict[str, Any]]):
    points = [
        charts.RatePoint(x=row["round"], rate=row["split"]["rate"], low=row["split"]["low"], high=row["split"]["high"])
        for row in series
    ]
    return charts.interval_chart(points, title="Win rate of each round’s policy vs its previous policy")


@router.get("/projects/{project_id}/evaluations")
def evaluations_page(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    return _list_page(request, db, project)


@router.post("/projects/{project_id}/evaluations", dependencies=[CsrfDep])
def launch(request: Request, db: DbDep, admin: AdminDep, project: ProjectDep, form: Posted):
    """From the evaluations page or the model versions page: either versions ticked (two or more),
    or `version_id` with presets ticked in `against`."""
    try:
        prompts = _int(form.get("prompts") or service.DEFAULT_PROMPTS, "prompts")
        seed = _int(form.get("seed") or service.DEFAULT_SEED, "seed")
        name = str(form.get("name") or "").strip()[:200] or None
        version_ids, comparisons = service.chosen(
            db,
            project_id=project.id,
            version_id=_int(form.get("version_id"), "version_id") if form.get("version_id") else None,
            against=[a for a in map(str, form.getlist("against")) if a in PRESET_LABELS],
            version_ids=[_int(v, "version_ids") for v in form.getlist("version_ids")],
            preset=str(form.get("preset") or "") or None,
        )
        evaluation = service.launch(
            db,
            project_id=project.id,
            version_ids=version_ids,
            comparisons=comparisons,
            prompts=prompts,
            seed=seed,
            name=name,
            created_by_id=admin.id,
        )
    except service.EvaluationError as exc:
        db.rollback()
        response = _list_page(request, db, project, errors={exc.field: exc.message}, status_code=exc.status_code)
        response.headers.update(retry_headers(exc))
        return response
    return RedirectResponse(f"/admin/evaluations/{evaluation.id}", status_code=303)


@router.post("/projects/{project_id}/eval-set", dependencies=[CsrfDep])
def hold_out(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep, form: Posted):
    """ "Hold out N unused prompts as the eval set", from the project page or the evaluations page."""
    try:
        count = _int(form.get("count") or "", "count")
        seed = _int(form.get("seed") or 0, "seed")
        service.hold_out_eval_set(db, project_id=project.id, count=count, seed=seed)
    except service.EvaluationError as exc:
        db.rollback()
        return _list_page(request, db, project, errors={"eval_set": f"{exc.field}: {exc.message}"}, status_code=422)
    return RedirectResponse(f"/admin/projects/{project.id}/evaluations#eval-set", status_code=303)


# ---- one evaluation ----------------------------------------------------------------------------


@router.get("/evaluations/{evaluation_id}")
def evaluation_page(request: Request, db: DbDep, _admin: AdminDep, evaluation_id: int):
    return _evaluation_page(request, db, _evaluation_or_404(db, evaluation_id))


def _evaluation_page(
    request: Request, db: Session, evaluation: Evaluation, *, action_error: str = "", status_code: int = 200
):
    project = get_project_or_404(db, evaluation.project_id)
    found = results.results(db, evaluation=evaluation)
    versions = results.version_names(
        db, ids=sorted({*evaluation.version_ids, *(r["version"] for r in found["leaderboard"]["ratings"])})
    )
    return page(
        request,
        "evaluation/evaluation.html",
        {
            "project": project,
            "evaluation": evaluation,
            "finished": evaluation.status not in service.ACTIVE,
            "progress": results.progress(db, evaluation=evaluation),
            "results": found,
            "reasons": results.reasons(db, evaluation=evaluation),
            "versions": versions,
            "chart": _series_chart(results.rounds_vs_previous(db, project_id=project.id)),
            "action_error": action_error,
        },
        block="live",
        status_code=status_code,
    )


def _after_action(request: Request, db: Session, evaluation: Evaluation, action):
    try:
        action()
    except service.EvaluationError as exc:
        db.rollback()
        return _evaluation_page(request, db, evaluation, action_error=exc.message, status_code=exc.status_code)
    if not is_htmx(request):
        return RedirectResponse(f"/admin/evaluations/{evaluation.id}", status_code=303)
    db.flush()
    return _evaluation_page(request, db, evaluation)


@router.post("/evaluations/{evaluation_id}/close", dependencies=[CsrfDep])
def close(request: Request, db: DbDep, _admin: AdminDep, evaluation_id: int):
    evaluation = _evaluation_or_404(db, evaluation_id)
    return _after_action(request, db, evaluation, lambda: service.close(db, evaluation=evaluation))


@router.post("/evaluations/{evaluation_id}/cancel", dependencies=[CsrfDep])
def cancel(request: Request, db: DbDep, _admin: AdminDep, evaluation_id: int):
    evaluation = _evaluation_or_404(db, evaluation_id)
    return _after_action(request, db, evaluation, lambda: service.cancel(db, evaluation=evaluation))
