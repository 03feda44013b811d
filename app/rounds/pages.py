"""Admin pages for training rounds and model versions (server-rendered, htmx polling).

Thin: parse → rounds service (changes) or views (reads) → render. The round page's URL answers
with the whole page, or with only its `live` block when htmx polls it every 2 s; the block
leaves out the polling trigger once the round is finished, so polling stops by itself."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlalchemy.orm import Session

from app.deps import AdminDep, CsrfDep, DbDep, SettingsDep
from app.models import ModelVersion, Project, TrainingRound
from app.projects.deps import ProjectDep, get_project_or_404
from app.rounds import charts, eval_views, launch_form, service, views
from app.rounds.downloads import ArtifactUnavailable, artifact_files, download_filename, resolve_artifact, stream_zip
from app.settings import Settings
from app.web import is_htmx, page

router = APIRouter(prefix="/admin", tags=["rounds"], include_in_schema=False)

ROUND_TEMPLATE = "rounds/round.html"


def _round_or_404(db: Session, round_id: int) -> TrainingRound:
    training_round = views.get_round(db, round_id=round_id)
    if training_round is None:
        raise HTTPException(404, f"No training round with id {round_id}.")
    return training_round


def _version_or_404(db: Session, version_id: int) -> ModelVersion:
    version = views.get_version(db, version_id=version_id)
    if version is None:
        raise HTTPException(404, f"No model version with id {version_id}.")
    return version


# ---- rounds list and launch ---------------------------------------------------------------------


@router.get("/projects/{project_id}/rounds")
def rounds_list(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    rounds = views.list_rounds(db, project_id=project.id)
    return page(request, "rounds/list.html", {"project": project, "rounds": rounds, "labels": views.STATUS_LABELS})


@router.get("/projects/{project_id}/rounds/new")
def launch_page(request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep):
    return _launch_form(request, db, project, launch_form.blank_form())


def _launch_form(request: Request, db: Session, project: Project, form: launch_form.LaunchForm, status_code: int = 200):
    return page(
        request,
        "rounds/launch.html",
        {
            "project": project,
            "form": form,
            "sections": launch_form.sections(),
            "choice_labels": launch_form.CHOICE_LABELS,
            "placeholders": launch_form.placeholders(project),
            "options": launch_form.version_options(db, project),
        },
        status_code=status_code,
    )


async def _posted_text(request: Request) -> dict[str, str]:
    """The form's text fields by name (the launch form's names are dotted paths, not parameters)."""
    return {key: value for key, value in (await request.form()).items() if isinstance(value, str)}


@router.post("/projects/{project_id}/rounds", dependencies=[CsrfDep])
def launch(
    request: Request,
    db: DbDep,
    admin: AdminDep,
    project: ProjectDep,
    posted: Annotated[dict[str, str], Depends(_posted_text)],
):
    """A plain (threadpool) endpoint: launching talks to the DB and the broker, which block."""
    form, config = launch_form.parse(posted)
    if config is None:
        return _launch_form(request, db, project, form, status_code=422)
    try:
        training_round = service.launch_round(db, project=project, config=config, user=admin)
    except service.RoundError as exc:
        db.rollback()
        if exc.field in form.values:
            form.errors[exc.field] = exc.message
        else:
            form.error = exc.message
        response = _launch_form(request, db, project, form, status_code=exc.status_code)
        response.headers.update(service.retry_headers(exc))
        return response
    return RedirectResponse(f"/admin/rounds/{training_round.id}", status_code=303)


# ---- one round ------------------------------------------------------------------------------------


@router.get("/rounds/{round_id}")
def round_page(request: Request, db: DbDep, _admin: AdminDep, round_id: int):
    return _round_page(request, db, _round_or_404(db, round_id))


def _round_page(
    request: Request, db: Session, training_round: TrainingRound, *, action_error: str = "", status_code: int = 200
):
    project = get_project_or_404(db, training_round.project_id)
    settings = request.app.state.settings
    specs = views.charts_for(training_round)
    series = views.metric_series(db, round_id=training_round.id, specs=specs)
    rendered = [
        charts.line_chart(series[spec.title], title=spec.title, unit=spec.unit) for spec in specs if series[spec.title]
    ]
    waiting = [spec.title for spec in specs if not series[spec.title]]
    versions = views.round_versions(db, training_round=training_round)
    history = eval_views.evaluation_history(db, project_id=training_round.project_id)
    context = {
        "project": project,
        "round": training_round,
        "finished": views.is_finished(training_round.status),
        "status_label": views.STATUS_LABELS.get(training_round.status, training_round.status),
        "steps": views.stepper(training_round, last_stage=views.last_stage(db, round_id=training_round.id)),
        "logs": views.recent_logs(db, round_id=training_round.id),
        "labeling": service.round_status(db, round_id=training_round.id)["labeling"],
        "overlap": project.overlap,
        "charts": rendered,
        "waiting": waiting,
        "versions": versions,
        "download_problems": _download_problems(versions, settings),
        "action_error": action_error,
        "labels_by_key": views.STATUS_LABELS,
        "evaluation": eval_views.round_evaluation(training_round),
        "eval_rows": eval_views.EVAL_ROWS,
        "eval_charts": [
            charts.line_chart(history[title], title=title, unit=unit, x_label="round")
            for title, _key, unit in eval_views.EVAL_HISTORY
            if history[title]
        ],
        "human_evaluations": eval_views.round_evaluations(db, round_id=training_round.id),
    }
    return page(request, ROUND_TEMPLATE, context, block="live", status_code=status_code)


def _after_action(request: Request, db: Session, training_round: TrainingRound, action):
    """Runs a service action; htmx gets the refreshed live block, a plain form a redirect.
    A refusal is shown in the round's live block (409), and nothing of it is kept."""
    try:
        action()
    except service.RoundError as exc:
        db.rollback()
        return _round_page(request, db, training_round, action_error=exc.message, status_code=exc.status_code)
    if not is_htmx(request):
        return RedirectResponse(f"/admin/rounds/{training_round.id}", status_code=303)
    db.flush()
    return _round_page(request, db, training_round)


@router.post("/rounds/{round_id}/start-training", dependencies=[CsrfDep])
def start_training(request: Request, db: DbDep, _admin: AdminDep, round_id: int):
    """The admin's click forces the start even below the round's labeling threshold (the page says so)."""
    training_round = _round_or_404(db, round_id)
    return _after_action(
        request, db, training_round, lambda: service.start_training(db, training_round=training_round, force=True)
    )


@router.post("/rounds/{round_id}/cancel", dependencies=[CsrfDep])
def cancel(request: Request, db: DbDep, _admin: AdminDep, round_id: int):
    training_round = _round_or_404(db, round_id)
    return _after_action(request, db, training_round, lambda: service.cancel_round(db, training_round=training_round))


@router.post("/rounds/{round_id}/retry", dependencies=[CsrfDep])
def retry(request: Request, db: DbDep, _admin: AdminDep, round_id: int):
    training_round = _round_or_404(db, round_id)
    return _after_action(request, db, training_round, lambda: service.retry_round(db, training_round=training_round))


def _download_problems(versions: list[ModelVersion], settings: Settings) -> dict[int, str]:
    """version id → why its artifact cannot be downloaded ("" when it can)."""
    problems = {}
    for version in versions:
        try:
            resolve_artifact(version.artifact_path, artifacts_dir=settings.artifacts_dir)
            problems[version.id] = ""
        except ArtifactUnavailable as exc:
            problems[version.id] = str(exc)
    return problems


# ---- model versions --------------------------------------------------------------------------


@router.get("/projects/{project_id}/models")
def versions_page(
    request: Request, db: DbDep, _admin: AdminDep, project: ProjectDep, a: int | None = None, b: int | None = None
):
    versions = views.list_versions(db, project_id=project.id)
    by_id = {v.id: v for v in versions}
    counts = views.completion_counts(db, version_ids=list(by_id))
    compare = None
    if a is not None and b is not None:
        missing = [str(i) for i in (a, b) if i not in by_id]
        if missing:
            raise HTTPException(404, f"No model version {', '.join(missing)} in this project.")
        compare = {"a": by_id[a], "b": by_id[b], "rows": views.side_by_side(db, a_id=a, b_id=b)}
    with_completions = [v for v in versions if counts.get(v.id)]
    return page(
        request,
        "rounds/models.html",
        {
            "project": project,
            "versions": versions,
            "counts": counts,
            "compare": compare,
            "choices": with_completions,
            "round_numbers": views.round_numbers(db, round_ids=[v.round_id for v in versions]),
            "selected": (a, b),
        },
    )


@router.get("/models/{version_id}")
def version_page(request: Request, db: DbDep, _admin: AdminDep, settings: SettingsDep, version_id: int):
    version = _version_or_404(db, version_id)
    chain = views.lineage(db, version=version)
    project = db.get(Project, version.project_id) if version.project_id is not None else None
    return page(
        request,
        "rounds/model.html",
        {
            "version": version,
            "project": project,
            "lineage": chain,
            "round_numbers": views.round_numbers(db, round_ids=[v.round_id for v in chain]),
            "rankings": views.rankings_behind(db, version=version),
            "download_problem": _download_problems([version], settings)[version.id],
            "completions": views.completion_counts(db, version_ids=[version.id]).get(version.id, 0),
            "charts": [
                charts.line_chart(points, title=key)
                for key, points in views.per_step_metrics(version.metrics or {}).items()
            ],
        },
    )


@router.get("/models/{version_id}/download")
def download(db: DbDep, _admin: AdminDep, settings: SettingsDep, version_id: int):
    """The artifact folder as a zip stream; only from under settings.artifacts_dir."""
    version = _version_or_404(db, version_id)
    try:
        path = resolve_artifact(version.artifact_path, artifacts_dir=settings.artifacts_dir)
    except ArtifactUnavailable as exc:
        raise HTTPException(exc.status_code, f"Cannot download: {exc}.") from exc
    files = artifact_files(path, root=settings.artifacts_dir)
    filename = download_filename(version.id, version.kind)
    return StreamingResponse(
        stream_zip(files),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
