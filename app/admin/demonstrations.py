"""Admin page for a project's demonstrations: counts, per-labeler numbers, the latest ones, and
download links for the SFT export (the same rows as the API's, with the admin's session)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.demonstrations import export, stats
from app.demonstrations.api import FormQuery, StatusQuery, StyleQuery, stream_export
from app.deps import AdminDep, DbDep
from app.projects.deps import ProjectDep
from app.web import page

router = APIRouter(prefix="/admin/projects/{project_id}/demonstrations", tags=["admin"], include_in_schema=False)


@router.get("")
def demonstrations_page(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    return page(
        request,
        "admin/demonstrations.html",
        {
            "project": project,
            "stats": stats.project_stats(db, project_id=project.id),
            "recent": stats.recent(db, project_id=project.id),
            "statuses": [s.value for s in export.StatusFilter],
        },
    )


@router.get("/export.jsonl")
def download_export(
    request: Request,
    _admin: AdminDep,
    project: ProjectDep,
    form: FormQuery = export.ExportForm.messages,
    style: StyleQuery = export.ExportStyle.conversational,
    status_filter: StatusQuery = export.StatusFilter.accepted,
):
    """The API export as a file download (Content-Disposition: attachment)."""
    return stream_export(request, project.id, form, style, status_filter)
