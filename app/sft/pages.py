"""Admin pages for SFT runs: the project's runs with the "Run SFT" form, and one run's page
(live progress and loss chart polled by htmx, like the round page; cancel and retry)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.deps import AdminDep, CsrfDep, DbDep
from app.models import ModelVersion, Project, User
from app.models.demonstrations import Demonstration
from app.models.jobs import JOB_TERMINAL, TrainingJob
from app.projects.deps import ProjectDep, get_project_or_404
from app.rounds import charts
from app.rounds.launch_form import CHOICE_LABELS, LaunchForm
from app.sft import form as sft_form
from app.sft import service
from app.web import is_htmx, page

router = APIRouter(prefix="/admin", tags=["sft"], include_in_schema=False)
CHARTS = (("Training loss", "loss"), ("Held-out loss", "eval_loss"), ("Learning rate", "learning_rate"))
"""Metric series of a run's page: title and the key in its metric events."""


def _job_or_404(db: Session, job_id: int) -> TrainingJob:
    try:
        return service.get_job(db, job_id=job_id)
    except service.JobNotFound:
        raise HTTPException(404, f"no SFT run {job_id}") from None


def _authors(db: Session, project: Project) -> list[User]:
    """Users who wrote demonstrations in the project (the labeler filter's choices)."""
    return list(
        db.scalars(
            select(User)
            .where(User.id.in_(select(Demonstration.user_id).where(Demonstration.project_id == project.id)))
            .order_by(User.email)
        )
    )


def _runs_page(request: Request, db: Session, project: Project, form: LaunchForm, status_code: int = 200):
    return page(
        request,
        "sft/runs.html",
        {
            "project": project,
            "runs": service.list_jobs(db, project=project),
            "form": form,
            "fields": sft_form.hyper_fields(),
            "choice_labels": CHOICE_LABELS,
            "start_models": service.start_models(db, project_id=project.id),
            "authors": _authors(db, project),
            "statuses": sft_form.STATUSES,
            "accepted": service.selection.count(db, project_id=project.id, selection={"statuses": ["accepted"]}),
        },
        status_code=status_code,
    )


@router.get("/projects/{project_id}/sft")
def runs_page(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    return _runs_page(request, db, project, sft_form.blank_form())


@router.post("/projects/{project_id}/sft", dependencies=[CsrfDep])
async def launch(request: Request, db: DbDep, admin: AdminDep, project: ProjectDep):
    posted = await request.form()
    statuses = [str(v) for v in posted.getlist("demonstrations.statuses")]
    labelers = [str(v) for v in posted.getlist("demonstrations.labeler_ids")]
    form, run = sft_form.parse(dict(posted), statuses, labelers)
    if run is None:
        return _runs_page(request, db, project, form, status_code=422)
    try:
        job = service.launch(db, project=project, run=run, user=admin)
    except service.JobError as exc:
        db.rollback()
        if exc.field in form.values or exc.field == "demonstrations":
            form.errors[exc.field] = exc.message
        else:
            form.error = exc.message
        return _runs_page(request, db, project, form, status_code=exc.status_code)
    return RedirectResponse(f"/admin/sft/{job.id}", status_code=303)


def _job_page(request: Request, db: Session, job: TrainingJob, *, action_error: str = "", status_code: int = 200):
    status = service.job_status(db, job_id=job.id)
    points = service.job_events(db, job_id=job.id, kind="metric", limit=100_000)
    series = {
        key: [(float(e.step or 0), float(e.data[key])) for e in points if key in e.data] for _title, key in CHARTS
    }
    context = {
        "project": get_project_or_404(db, job.project_id),
        "job": job,
        "status": status,
        "finished": job.status in JOB_TERMINAL,
        "charts": [charts.line_chart(series[key], title=title) for title, key in CHARTS if series[key]],
        "logs": [e for e in service.job_events(db, job_id=job.id, kind="log", limit=100_000)][-30:][::-1],
        "start": db.get(ModelVersion, job.start_model_id) if job.start_model_id else None,
        "result": db.get(ModelVersion, job.result_model_id) if job.result_model_id else None,
        "action_error": action_error,
    }
    return page(request, "sft/job.html", context, block="live", status_code=status_code)


@router.get("/sft/{job_id}")
def job_page(request: Request, db: DbDep, _admin: AdminDep, job_id: int):
    return _job_page(request, db, _job_or_404(db, job_id))


def _after_action(request: Request, db: Session, job: TrainingJob, action):
    try:
        action()
    except service.JobError as exc:
        db.rollback()
        return _job_page(request, db, job, action_error=exc.message, status_code=exc.status_code)
    if not is_htmx(request):
        return RedirectResponse(f"/admin/sft/{job.id}", status_code=303)
    db.flush()
    return _job_page(request, db, job)


@router.post("/sft/{job_id}/cancel", dependencies=[CsrfDep])
def cancel(request: Request, db: DbDep, _admin: AdminDep, job_id: int):
    job = _job_or_404(db, job_id)
    return _after_action(request, db, job, lambda: service.cancel(db, job=job))


@router.post("/sft/{job_id}/retry", dependencies=[CsrfDep])
def retry(request: Request, db: DbDep, _admin: AdminDep, job_id: int):
    job = _job_or_404(db, job_id)
    return _after_action(request, db, job, lambda: service.retry(db, job=job))
