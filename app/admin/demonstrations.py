"""Admin page for a project's demonstrations: counts, per-labeler numbers, the latest ones, a file
upload, and download links for the SFT export (the same service and rows as the API's, with the
admin's session)."""

from __future__ import annotations

from fastapi import APIRouter, Request, UploadFile

from app.demonstrations import export, stats, upload
from app.demonstrations.api import FormQuery, StatusQuery, StyleQuery, stream_export
from app.deps import AdminDep, CsrfDep, DbDep, SettingsDep
from app.models import Project
from app.projects.deps import ProjectDep
from app.prompts.jsonl import read_lines
from app.web import page

router = APIRouter(prefix="/admin/projects/{project_id}/demonstrations", tags=["admin"], include_in_schema=False)


@router.get("")
def demonstrations_page(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    return _page(request, db, project)


@router.post("/upload", dependencies=[CsrfDep])
def upload_file(
    request: Request,
    db: DbDep,
    _admin: AdminDep,
    settings: SettingsDep,
    project: ProjectDep,
    file: UploadFile | None = None,
):
    """The API's upload from the page: all or nothing, the refused lines listed on the page."""
    if file is None or not file.filename:
        return _page(request, db, project, error="file: choose a .jsonl file to upload", status_code=422)
    lines = read_lines(file.file, max_line_bytes=settings.max_body_bytes)
    report = upload.ingest_demonstrations(db, project=project, lines=lines, max_text_chars=settings.max_text_chars)
    result = {"filename": file.filename, "report": report}
    return _page(request, db, project, upload=result, status_code=422 if report.refused else 200)


def _page(request: Request, db, project: Project, *, upload=None, error: str = "", status_code: int = 200):
    return page(
        request,
        "admin/demonstrations.html",
        {
            "project": project,
            "stats": stats.project_stats(db, project_id=project.id),
            "recent": stats.recent(db, project_id=project.id),
            "upload": upload,
            "upload_error": error,
        },
        status_code=status_code,
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
