"""/api/v1/projects: create, list, read, change, and progress."""

from fastapi import APIRouter, HTTPException, status

from app.deps import AdminTokenDep, AnyTokenDep, DbDep, ExportTokenDep, UploadTokenDep
from app.json_api import UNPROCESSABLE, ErrorOut, JsonApiRoute, Responses
from app.projects import priorities, service
from app.projects.deps import ProjectDep
from app.projects.schemas import ProgressOut, ProjectCreate, ProjectOut, ProjectUpdate, RefreshOut
from app.refusals import http_error

api_router = APIRouter(prefix="/api/v1", tags=["projects"], route_class=JsonApiRoute)
ERRORS: Responses = {
    401: {"model": ErrorOut, "description": "Missing or unknown token."},
    403: {"model": ErrorOut, "description": "The token lacks the scope."},
    **UNPROCESSABLE,
}
NOT_FOUND: Responses = {404: {"model": ErrorOut, "description": "No such project."}}


@api_router.post(
    "/projects",
    status_code=201,
    response_model=ProjectOut,
    summary="Create a project",
    responses={**ERRORS, 409: {"model": ErrorOut, "description": "The name is taken."}},
)
def create_project(body: ProjectCreate, db: DbDep, _token: UploadTokenDep):
    """Needs an `upload` (or `admin`) token. K (completions per task) is bounded by the form: ranking 4–9,
    pairwise 2, likert, good_bad and multi_aspect 1–9."""
    try:
        return service.create_project(db, **body.model_dump())
    except service.DuplicateProjectName as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except service.ProjectError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


@api_router.get("/projects", response_model=list[ProjectOut], summary="List projects", responses=ERRORS)
def list_projects(db: DbDep, _token: AnyTokenDep):
    """Any valid token."""
    return service.list_projects(db)


@api_router.get(
    "/projects/{project_id}", response_model=ProjectOut, summary="Read a project", responses={**ERRORS, **NOT_FOUND}
)
def get_project(project: ProjectDep, _token: AnyTokenDep):
    return project


@api_router.patch(
    "/projects/{project_id}",
    response_model=ProjectOut,
    summary="Change a project",
    responses={**ERRORS, **NOT_FOUND, 409: {"model": ErrorOut}},
)
def update_project(body: ProjectUpdate, project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    """Needs an `admin` token. Only the fields sent change; a refused value changes nothing."""
    try:
        return service.update_project(db, project=project, **body.model_dump(exclude_unset=True))
    except service.DuplicateProjectName as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except service.ProjectError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


@api_router.get(
    "/projects/{project_id}/progress",
    response_model=ProgressOut,
    summary="Labeling progress",
    responses={**ERRORS, **NOT_FOUND},
)
def project_progress(project: ProjectDep, db: DbDep, _token: ExportTokenDep):
    """Needs an `export` (or `admin`) token."""
    return service.project_progress(db, project=project)


@api_router.post(
    "/projects/{project_id}/priorities/refresh",
    status_code=202,
    response_model=RefreshOut,
    summary="Refresh the handout's priorities",
    responses={
        **ERRORS,
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "The project has no reward model yet."},
        503: {"model": ErrorOut, "description": "The task queue is unreachable; retry."},
    },
)
def refresh_priorities(project: ProjectDep, db: DbDep, _token: AdminTokenDep):
    """Needs an `admin` token. A worker scores the open tasks with the project's newest reward model
    (docs/active-learning.md); works whatever the handout_order, so priorities can be ready first."""
    try:
        version = priorities.request_refresh(db, project=project)
    except priorities.PriorityError as exc:
        raise http_error(exc) from None
    return RefreshOut(queued=True, reward_model_id=version.id)
