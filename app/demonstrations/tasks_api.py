"""Creating demonstration tasks: POST /api/v1/projects/{id}/demonstration-tasks (token), and the
project admin page's button (cookie + CSRF). Thin: parse → app/demonstrations/service.py → answer.

Included by app/labeling/routes.py (the labeling domain hands the tasks out)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from app.api_types import DbId
from app.demonstrations import service
from app.deps import AdminDep, CsrfDep, DbDep, UploadTokenDep
from app.json_api import UNPROCESSABLE, ErrorOut, JsonApiRoute
from app.models import Prompt, PromptSplit
from app.projects.deps import ProjectDep, get_project_or_404

api_router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["demonstrations"], route_class=JsonApiRoute)
router = APIRouter(include_in_schema=False)

MAX_PROMPTS = 10_000


class DemonstrationTasksIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_ids: list[DbId] = Field(min_length=1, max_length=MAX_PROMPTS, description="Prompts of this project.")
    draft_version_id: DbId | None = Field(
        None, description="A model version whose completion of each prompt is offered as a draft to start from."
    )


class DemonstrationTasksOut(BaseModel):
    created: int
    task_ids: list[int]
    with_draft: int = Field(description="Created tasks offering the draft version's completion.")
    already_queued: list[int] = Field(description="Prompt ids that already had a demonstration task: left alone.")
    no_draft: list[int] = Field(description="Prompt ids the draft version wrote nothing for (their tasks have none).")


@api_router.post(
    "/demonstration-tasks",
    response_model=DemonstrationTasksOut,
    summary="Queue prompts for labelers to write demonstrations",
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}, **UNPROCESSABLE},
)
def create_demonstration_tasks(
    body: DemonstrationTasksIn, project: ProjectDep, db: DbDep, _token: UploadTokenDep
) -> DemonstrationTasksOut:
    """Needs an `upload` (or `admin`) token. One "demonstration" task per prompt: a labeler writes
    the assistant's answer (continuing a chat prompt). Safe to repeat: a prompt that already has
    one is listed in `already_queued`. Eval-split prompts are refused (they are never trained on)."""
    try:
        created = service.create_demonstration_tasks(
            db, project, body.prompt_ids, draft_version_id=body.draft_version_id
        )
    except service.DemonstrationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return DemonstrationTasksOut(created=len(created.task_ids), **created.__dict__)


@router.post("/admin/projects/{project_id}/demonstration-tasks", dependencies=[CsrfDep])
def queue_all_from_admin(request: Request, project_id: int, db: DbDep, _admin: AdminDep):
    """The project page's button: every training prompt that has no demonstration task yet."""
    project = get_project_or_404(db, project_id)
    prompt_ids = list(
        db.scalars(
            select(Prompt.id)
            .where(Prompt.project_id == project.id, Prompt.split != PromptSplit.eval)
            .order_by(Prompt.id)
            .limit(MAX_PROMPTS)
        )
    )
    if prompt_ids:
        service.create_demonstration_tasks(db, project, prompt_ids)
    return RedirectResponse(f"/admin/projects/{project.id}", status_code=303)
