"""/api/v1 for training rounds (admin-scoped tokens): launch, status, start, cancel, retry, models.

Thin: parse → service → answer. Status and events come from our DB, which the worker updates,
so a client polls GET /api/v1/rounds/{id}?events_after=<last event id>."""

from __future__ import annotations

from typing import Annotated, NoReturn

from fastapi import APIRouter, Query

from app.api_types import INT32_MAX, id_path
from app.deps import AdminTokenDep, DbDep
from app.json_api import JsonApiRoute, admin_api_responses
from app.projects.deps import ProjectDep
from app.refusals import http_error
from app.rounds import service
from app.rounds.schemas import ModelVersionOut, RoundConfigIn, RoundOut, StartTrainingIn

api_router = APIRouter(prefix="/api/v1", tags=["rounds"], route_class=JsonApiRoute)
ERRORS, CHANGES = admin_api_responses("round")
RoundId = Annotated[int, id_path("The round's id.")]


def _fail(exc: service.RoundError) -> NoReturn:
    raise http_error(exc) from None


def _status(db, round_id: int, events_after: int | None = None) -> RoundOut:
    return RoundOut.model_validate(service.round_status(db, round_id=round_id, events_after=events_after))


@api_router.post(
    "/projects/{project_id}/rounds",
    status_code=201,
    response_model=RoundOut,
    summary="Launch a training round",
    responses=CHANGES,
)
def launch(body: RoundConfigIn, project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    """Generates K completions per prompt for the project's unused prompts (in the worker), then
    opens them for labeling. Every setting is optional; see the schema for defaults."""
    try:
        training_round = service.launch_round(db, project=project, config=body, user=None)
    except service.RoundError as exc:
        _fail(exc)
    return _status(db, training_round.id)


@api_router.get(
    "/projects/{project_id}/rounds", response_model=list[RoundOut], summary="List a project's rounds", responses=ERRORS
)
def list_rounds(project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    return [_status(db, r.id) for r in service.list_rounds(db, project=project)]


@api_router.get(
    "/projects/{project_id}/models",
    response_model=list[ModelVersionOut],
    summary="List model versions (lineage via parent_id)",
    responses=ERRORS,
)
def list_models(project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    return service.list_model_versions(db, project=project)


@api_router.get(
    "/rounds/{round_id}", response_model=RoundOut, summary="A round's status, metrics and events", responses=ERRORS
)
def get_round(
    round_id: RoundId,
    db: DbDep,
    _token: AdminTokenDep,
    events_after: Annotated[
        int | None,
        Query(
            ge=0,
            le=INT32_MAX,
            description=("Include events with a larger id (0 = from the start); left out, no events."),
        ),
    ] = None,
):
    try:
        return _status(db, round_id, events_after)
    except service.RoundError as exc:
        _fail(exc)


@api_router.post(
    "/rounds/{round_id}/start", response_model=RoundOut, summary="Start training (after labeling)", responses=CHANGES
)
def start(round_id: RoundId, db: DbDep, _token: AdminTokenDep, body: StartTrainingIn | None = None):
    try:
        training_round = service.get_round(db, round_id=round_id)
        service.start_training(db, training_round=training_round, force=bool(body and body.force))
    except service.RoundError as exc:
        _fail(exc)
    return _status(db, round_id)


@api_router.post("/rounds/{round_id}/cancel", response_model=RoundOut, summary="Cancel a round", responses=CHANGES)
def cancel(round_id: RoundId, db: DbDep, _token: AdminTokenDep):
    try:
        service.cancel_round(db, training_round=service.get_round(db, round_id=round_id))
    except service.RoundError as exc:
        _fail(exc)
    return _status(db, round_id)


@api_router.post("/rounds/{round_id}/retry", response_model=RoundOut, summary="Retry a failed step", responses=CHANGES)
def retry(round_id: RoundId, db: DbDep, _token: AdminTokenDep):
    try:
        service.retry_round(db, training_round=service.get_round(db, round_id=round_id))
    except service.RoundError as exc:
        _fail(exc)
    return _status(db, round_id)
