"""The project named in an /api/v1 path, or 404."""
from typing import Annotated

from fastapi import Depends, HTTPException, Path, status

from app.deps import DbDep
from app.models import Project
from app.projects import service


def project_from_path(db: DbDep, project_id: Annotated[int, Path(description="The project's id.")]) -> Project:
    project = service.get_project(db, project_id=project_id)
    if project is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"project_id: no project {project_id}.")
    return project


ProjectDep = Annotated[Project, Depends(project_from_path)]
