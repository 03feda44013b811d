"""/api/v1 for evaluations (admin-scoped tokens): hold out an eval set, launch, list, read, close, cancel.

Thin: parse → service → answer. Results are computed from the stored judgments on every read."""

from __future__ import annotations

from typing import Annotated, NoReturn

from fastapi import APIRouter
from sqlalchemy.orm import Session

from app.api_types import id_path
from app.deps import AdminTokenDep, DbDep
from app.evaluation import results, service
from app.evaluation.schemas import EvalSetIn, EvalSetOut, EvaluationIn, EvaluationOut
from app.json_api import JsonApiRoute, admin_api_responses
from app.models import Evaluation, Project
from app.projects.deps import ProjectDep
from app.refusals import http_error

api_router = APIRouter(prefix="/api/v1", tags=["evaluations"], route_class=JsonApiRoute)
ERRORS, CHANGES = admin_api_responses("evaluation")
EvaluationId = Annotated[int, id_path("The evaluation's id.")]


def _fail(exc: service.EvaluationError) -> NoReturn:
    raise http_error(exc) from None


def evaluation_out(db: Session, evaluation: Evaluation) -> EvaluationOut:
    return EvaluationOut.model_validate(
        {
            **{
                column: getattr(evaluation, column)
                for column in (
                    "id",
                    "project_id",
                    "round_id",
                    "name",
                    "status",
                    "version_ids",
                    "comparisons",
                    "config",
                    "error_message",
                    "created_at",
                    "finished_at",
                )
            },
            "progress": results.progress(db, evaluation=evaluation),
            "results": results.results(db, evaluation=evaluation),
        }
    )


def launch_from(db: Session, project: Project, body: EvaluationIn, *, created_by_id: int | None) -> Evaluation:
    """Every way of choosing versions (a list, a version with opponents, a named preset) ends in service.launch."""
    version_ids, comparisons = service.chosen(
        db,
        project_id=project.id,
        version_id=body.version_id,
        against=body.against or [],
        version_ids=body.version_ids or [],
        comparisons=body.comparisons,
        preset=body.preset,
    )
    return service.launch(
        db,
        project_id=project.id,
        version_ids=version_ids,
        comparisons=comparisons,
        prompts=body.prompts,
        seed=body.seed,
        name=body.name,
        created_by_id=created_by_id,
    )


@api_router.post(
    "/projects/{project_id}/evaluations",
    status_code=201,
    response_model=EvaluationOut,
    summary="Launch a blind human evaluation",
    responses=CHANGES,
)
def launch(body: EvaluationIn, project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    """The worker writes each version's missing answers to the first `prompts` eval prompts (fixed
    seed), then one pairwise task per prompt and pair goes out to labelers, sides shuffled."""
    try:
        evaluation = launch_from(db, project, body, created_by_id=None)
    except service.EvaluationError as exc:
        _fail(exc)
    return evaluation_out(db, evaluation)


@api_router.get(
    "/projects/{project_id}/evaluations",
    response_model=list[EvaluationOut],
    summary="List a project's evaluations",
    responses=ERRORS,
)
def list_evaluations(project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    return [evaluation_out(db, e) for e in service.list_evaluations(db, project_id=project.id)]


@api_router.post(
    "/projects/{project_id}/eval-set",
    response_model=EvalSetOut,
    summary="Hold out unused prompts as the eval set",
    responses=ERRORS,
)
def hold_out(body: EvalSetIn, project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    """Moves `count` prompts that no round or task uses into the eval split (a seeded random
    choice). Rounds never take eval prompts; evaluations and eval metrics use only them."""
    try:
        moved = service.hold_out_eval_set(db, project_id=project.id, count=body.count, seed=body.seed)
    except service.EvaluationError as exc:
        _fail(exc)
    size = len(service.eval_prompts(db, project_id=project.id, limit=None))
    return EvalSetOut(eval_prompts=size, moved=[p.id for p in moved])


@api_router.get(
    "/evaluations/{evaluation_id}",
    response_model=EvaluationOut,
    summary="An evaluation's status and results",
    responses=ERRORS,
)
def get_evaluation(evaluation_id: EvaluationId, db: DbDep, _token: AdminTokenDep):
    """Win rates of a over b per comparison (ties split and excluded, 95% intervals), overall and
    per labeler, and the project's Bradley–Terry leaderboard with Elo-scale intervals."""
    try:
        return evaluation_out(db, service.get_evaluation(db, evaluation_id=evaluation_id))
    except service.EvaluationError as exc:
        _fail(exc)


@api_router.post(
    "/evaluations/{evaluation_id}/close", response_model=EvaluationOut, summary="Close labeling", responses=CHANGES
)
def close(evaluation_id: EvaluationId, db: DbDep, _token: AdminTokenDep):
    """Withdraws the open tasks; the results stay readable."""
    try:
        evaluation = service.close(db, evaluation=service.get_evaluation(db, evaluation_id=evaluation_id))
    except service.EvaluationError as exc:
        _fail(exc)
    return evaluation_out(db, evaluation)


@api_router.post(
    "/evaluations/{evaluation_id}/cancel",
    response_model=EvaluationOut,
    summary="Cancel an evaluation",
    responses=CHANGES,
)
def cancel(evaluation_id: EvaluationId, db: DbDep, _token: AdminTokenDep):
    try:
        evaluation = service.cancel(db, evaluation=service.get_evaluation(db, evaluation_id=evaluation_id))
    except service.EvaluationError as exc:
        _fail(exc)
    return evaluation_out(db, evaluation)
