"""Shared pieces of the /api/v1 routers and admin pages: the project named in the path, and a route class
that answers a non-UTF-8 JSON body with a message instead of FastAPI's bare 400."""

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from app.api_types import id_path
from app.deps import DbDep
from app.models import Project
from app.projects import service


def get_project_or_404(db: Session, project_id: int) -> Project:
    project = service.get_project(db, project_id=project_id)
    if project is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"project_id: no project {project_id}.")
    return project


def project_from_path(db: DbDep, project_id: Annotated[int, id_path("The project's id.")]) -> Project:
    return get_project_or_404(db, project_id)


ProjectDep = Annotated[Project, Depends(project_from_path)]
"""The project named by `{project_id}` in the path, or a 404; used by the API and the admin pages."""


class JsonApiRoute(APIRoute):
    """FastAPI turns a JSON body that is not UTF-8 into "400 There was an error parsing the
    body"; this checks the (cached) body first and says what is wrong."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.headers.get("content-type", "").startswith("application/json"):
                try:
                    (await request.body()).decode("utf-8")
                except UnicodeDecodeError as exc:
                    message = f"body: invalid UTF-8 at byte {exc.start + 1}; send JSON encoded as UTF-8"
                    return JSONResponse({"detail": message, "message": message}, status_code=422)
            return await handler(request)

        return checked
