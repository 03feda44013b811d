"""/api/v1 for SFT runs (admin-scoped tokens): launch, list, status with events, cancel, retry.

Thin: parse → service → answer. A client polls GET /api/v1/sft-runs/{id}?events_after=<last id>;
metric events carry the loss points the job page charts."""

from __future__ import annotations

from typing import Annotated, NoReturn

from fastapi import APIRouter, Query

from app.api_types import INT32_MAX, id_path
from app.deps import AdminTokenDep, DbDep
from app.json_api import JsonApiRoute, admin_api_responses
from app.projects.deps import ProjectDep
from app.refusals import http_error
from app.sft import service
from app.sft.schemas import JobOut, SFTRunIn

api_router = APIRouter(prefix="/api/v1", tags=["sft"], route_class=JsonApiRoute)
ERRORS, CHANGES = admin_api_responses("SFT run")
JobId = Annotated[int, id_path("The SFT run's id.")]


def _fail(exc: service.JobError) -> NoReturn:
    raise http_error(exc) from None


def _status(db, job_id: int, events_after: int | None = None) -> JobOut:
    return JobOut.model_validate(service.job_status(db, job_id=job_id, events_after=events_after))


@api_router.post(
    "/projects/{project_id}/sft-runs", status_code=201, response_model=JobOut, summary="Launch SFT", responses=CHANGES
)
def launch(body: SFTRunIn, project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    """Fine-tunes the start model (default: the bundled base) on the demonstrations the filter
    selects (default: every accepted one), in the worker; the result is a model version of kind sft."""
    try:
        job = service.launch(db, project=project, run=body, user=None)
    except service.JobError as exc:
        _fail(exc)
    return _status(db, job.id)


@api_router.get(
    "/projects/{project_id}/sft-runs", response_model=list[JobOut], summary="List SFT runs", responses=ERRORS
)
def list_runs(project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    return [_status(db, job.id) for job in service.list_jobs(db, project=project)]


@api_router.get(
    "/sft-runs/{job_id}", response_model=JobOut, summary="An SFT run's status, metrics and events", responses=ERRORS
)
def get_run(
    job_id: JobId,
    db: DbDep,
    _token: AdminTokenDep,
    events_after: Annotated[
        int | None,
        Query(ge=0, le=INT32_MAX, description="Include events with a larger id (0 = from the start); left out, none."),
    ] = None,
):
    try:
        return _status(db, job_id, events_after)
    except service.JobError as exc:
        _fail(exc)


@api_router.post("/sft-runs/{job_id}/cancel", response_model=JobOut, summary="Cancel an SFT run", responses=CHANGES)
def cancel(job_id: JobId, db: DbDep, _token: AdminTokenDep):
    try:
        service.cancel(db, job=service.get_job(db, job_id=job_id))
    except service.JobError as exc:
        _fail(exc)
    return _status(db, job_id)


@api_router.post("/sft-runs/{job_id}/retry", response_model=JobOut, summary="Retry an SFT run", responses=CHANGES)
def retry(job_id: JobId, db: DbDep, _token: AdminTokenDep):
    try:
        service.retry(db, job=service.get_job(db, job_id=job_id))
    except service.JobError as exc:
        _fail(exc)
    return _status(db, job_id)
