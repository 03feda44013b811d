"""Admin pages: the dashboard and per-project pages (settings, uploads, progress, labelers, members).
Accounts and API tokens are in people_routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse

from app.admin import form_stats, forms, service, stats
from app.admin.agreement import AgreementReport
from app.admin.people_routes import router as people_router
from app.deps import AdminDep, CsrfDep, DbDep, SettingsDep
from app.models import ModelVersion, Project, Role
from app.projects import priorities
from app.projects import service as projects
from app.projects.deps import ProjectDep
from app.projects.handout_advice import HandoutAdvice, handout_advice
from app.prompts import service as prompts
from app.prompts.jsonl import read_lines
from app.web import page, render_markdown

pages = APIRouter(prefix="/admin", tags=["admin"], include_in_schema=False)

UPLOAD_KINDS = {"prompts": "Prompts", "completions": "Completions"}


@pages.get("")
def dashboard(request: Request, db: DbDep, _admin: AdminDep):
    rows = [(p, projects.project_progress(db, project=p)) for p in projects.list_projects(db)]
    return page(request, "admin/dashboard.html", {"rows": rows})


@pages.get("/projects/new")
def new_project(request: Request, _admin: AdminDep, settings: SettingsDep):
    return page(
        request, "admin/project_form.html", {"form": forms.blank_form(settings.default_lease_minutes), "project": None}
    )


FormText = Annotated[str, Form()]
ProjectFields = Annotated[forms.ProjectFields, Form()]


@pages.post("/projects", dependencies=[CsrfDep])
def create_project(
    request: Request,
    db: DbDep,
    _admin: AdminDep,
    fields: ProjectFields,
):
    form = forms.parse(fields.model_dump())
    project = forms.save(db, form=form)
    if project is None:
        return page(request, "admin/project_form.html", {"form": form, "project": None}, status_code=422)
    return RedirectResponse(f"/admin/projects/{project.id}", status_code=303)


@pages.get("/projects/{project_id}/settings")
def project_settings(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    context = {
        "form": forms.form_of(project),
        "project": project,
        "advice": _advice(stats.project_agreement(db, project_id=project.id)),
    }
    return page(request, "admin/project_form.html", context)


@pages.post("/projects/{project_id}/settings", dependencies=[CsrfDep])
def save_settings(
    request: Request,
    db: DbDep,
    _admin: AdminDep,
    project: ProjectDep,
    fields: ProjectFields,
):
    form = forms.parse(fields.model_dump())
    if forms.save(db, form=form, project=project) is None:  # refused: nothing was changed
        context = {
            "form": form,
            "project": project,
            "advice": _advice(stats.project_agreement(db, project_id=project.id)),
        }
        return page(request, "admin/project_form.html", context, status_code=422)
    return RedirectResponse(f"/admin/projects/{project.id}?saved=1", status_code=303)


@pages.post("/markdown-preview", dependencies=[CsrfDep])
def markdown_preview(_admin: AdminDep, guidelines: FormText = ""):
    """htmx: the guidelines as labelers will see them (raw HTML escaped, unsafe links dropped)."""
    return HTMLResponse(render_markdown(guidelines))


def _project_page(request: Request, db, project: Project, *, upload=None, errors=None, status_code: int = 200):
    labelers = stats.labeler_stats(db, project_id=project.id)
    members = service.project_members(db, project_id=project.id)
    member_ids = {m.id for m in members}
    candidates = [
        u for u in service.list_users(db) if u.id not in member_ids and u.is_active and u.role == Role.labeler
    ]
    agreement = stats.project_agreement(db, project_id=project.id)
    return page(
        request,
        "admin/project.html",
        {
            "project": project,
            "progress": projects.project_progress(db, project=project),
            "labelers": labelers,
            "agreement": agreement,
            "advice": _advice(agreement),
            "form_agreement": form_stats.project_form_agreement(
                db, project_id=project.id, form_settings=project.form_settings
            ),
            "members": members,
            "candidates": candidates,
            "upload": upload,
            "upload_kinds": UPLOAD_KINDS,
            "errors": errors or {},
            "saved": request.query_params.get("saved") == "1",
            "handout": _handout_state(db, project),
            "refresh_queued": request.query_params.get("refresh") == "queued",
        },
        status_code=status_code,
    )


def _advice(agreement: AgreementReport) -> HandoutAdvice:
    """Which handout order the measurement supports at the team's own pair agreement."""
    return handout_advice(agreement.overall.agreement_pct, agreement.overall.pairs)


def _handout_state(db, project: Project) -> dict:
    """The handout order's card: what produced the stored priorities and how many tasks have one."""
    scored, open_tasks = priorities.scored_open_tasks(db, project_id=project.id)
    model = db.get(ModelVersion, project.priority_model_id) if project.priority_model_id else None
    return {"scored": scored, "open": open_tasks, "model": model}


@pages.post("/projects/{project_id}/priorities/refresh", dependencies=[CsrfDep])
def refresh_priorities(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    """Sends a refresh of the handout priorities to a worker (app/projects/priorities.py)."""
    try:
        priorities.request_refresh(db, project=project)
    except priorities.PriorityError as exc:
        return _project_page(request, db, project, errors={"priorities": exc.message}, status_code=exc.status_code)
    return RedirectResponse(f"/admin/projects/{project.id}?refresh=queued#handout-order", status_code=303)


@pages.get("/projects/{project_id}")
def project_detail(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    return _project_page(request, db, project)


@pages.post("/projects/{project_id}/upload", dependencies=[CsrfDep])
def upload(
    request: Request,
    db: DbDep,
    _admin: AdminDep,
    settings: SettingsDep,
    project: ProjectDep,
    kind: FormText = "",
    file: UploadFile | None = None,
):
    """A JSONL file of prompts, or of completion groups (one ranking task per line)."""
    if kind not in UPLOAD_KINDS:
        return _project_page(
            request, db, project, errors={"upload": "kind: choose prompts or completions"}, status_code=422
        )
    if file is None or not file.filename:
        return _project_page(
            request, db, project, errors={f"upload_{kind}": "file: choose a .jsonl file to upload"}, status_code=422
        )
    # One line is at most as large as a JSON request body may be.
    lines = read_lines(file.file, max_line_bytes=settings.max_body_bytes)
    ingest = prompts.ingest_prompts if kind == "prompts" else prompts.ingest_completion_groups
    report = ingest(db, project=project, lines=lines, max_text_chars=settings.max_text_chars)
    return _project_page(request, db, project, upload={"kind": kind, "filename": file.filename, "report": report})


@pages.post("/projects/{project_id}/members", dependencies=[CsrfDep])
def add_member(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep, user_id: FormText = ""):
    try:
        service.add_member(db, project_id=project.id, user_id=int(user_id))
    except (ValueError, service.AdminError) as exc:
        message = exc.message if isinstance(exc, service.AdminError) else "user: choose a user to add"
        return _project_page(request, db, project, errors={"members": message}, status_code=422)
    return RedirectResponse(f"/admin/projects/{project.id}#members", status_code=303)


@pages.post("/projects/{project_id}/members/{user_id}/remove", dependencies=[CsrfDep])
def remove_member(db: DbDep, _admin: AdminDep, project: ProjectDep, user_id: int):
    service.remove_member(db, project_id=project.id, user_id=user_id)
    return RedirectResponse(f"/admin/projects/{project.id}#members", status_code=303)


# main.py includes `router`: the project pages and the account and token pages.
router = APIRouter()
router.include_router(pages)
router.include_router(people_router)
