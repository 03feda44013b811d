"""The project named by `{project_id}` in the path, for the /api/v1 routers and the admin pages."""

from typing import Annotated

from fastapi import Depends, HTTPException, status
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
