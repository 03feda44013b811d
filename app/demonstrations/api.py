"""/api/v1 demonstrations: upload a JSONL file in TRL's forms, export in the same forms."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from app.demonstrations import export, upload
from app.deps import DbDep, ExportTokenDep, SettingsDep, UploadTokenDep
from app.exports import formats
from app.json_api import UNPROCESSABLE, ErrorOut, JsonApiRoute, Responses, UnprocessableOut
from app.projects.deps import ProjectDep
from app.prompts.jsonl import read_lines
from app.prompts.routes import FILE_ERRORS, JSONL_BODY, _uploaded_file
from app.prompts.schemas import RejectedLine

api_router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["demonstrations"], route_class=JsonApiRoute)


class UploadOut(BaseModel):
    created: int
    already_present: int = Field(description="Lines whose id was already stored with the same prompt and answer.")
    prompts_created: int = Field(description="Prompts that were new (the others were already stored).")
    pending_review: int = Field(description="Of `created`, those waiting for a reviewer.")


class UploadRefusedOut(UnprocessableOut):
    """A refused file (the request itself was well-formed: `detail` is one sentence), or, like
    every 422 of /api/v1, a request FastAPI could not parse (then only `detail` and `message`)."""

    rejected: int = Field(0, description="Lines refused.")
    conflicts: int = Field(0, description="Of `rejected`, lines whose id is stored with a different prompt or answer.")
    errors: list[RejectedLine] = Field(
        default_factory=list, description="The first refused lines, each with its number, field and reason."
    )
    errors_omitted: int = Field(0, description="Refused lines beyond the list.")


@api_router.post(
    "/demonstrations",
    response_model=UploadOut,
    summary="Upload demonstrations (JSONL, TRL's SFT forms)",
    openapi_extra=JSONL_BODY,
    responses={
        **FILE_ERRORS,
        409: {"model": UploadRefusedOut, "description": "Ids already stored with another body; nothing stored."},
        422: {"model": UploadRefusedOut, "description": "Refused lines, numbered; nothing was stored."},
    },
)
async def upload_demonstrations(
    request: Request, project: ProjectDep, db: DbDep, settings: SettingsDep, _token: UploadTokenDep
):
    """One demonstration per line, in any of TRL's SFT dataset forms:
    `{"messages": [..., {"role": "assistant", "content": ...}]}` (the turns before the last are
    the prompt), or `{"prompt": ..., "completion": ...}` with strings or chat turns
    (`completion` one assistant turn). Optional: `id` (yours; re-sending an id with the same
    prompt and answer stores nothing and counts it as already_present; with another prompt or
    answer it is a conflict) and `status` (accepted, pending_review or rejected; by default
    pending_review when the project reviews demonstrations, else accepted). Send the file as
    multipart field `file` or as the raw body (`application/x-ndjson`); it is streamed.

    All or nothing: any refused line and nothing is stored; the answer lists the lines (number,
    field, reason): 409 when every refused line is a conflict, else 422. docs/demonstrations.md."""
    async with _uploaded_file(request) as file:
        lines = read_lines(file, max_line_bytes=settings.max_body_bytes)
        report = await run_in_threadpool(
            upload.ingest_demonstrations, db, project=project, lines=lines, max_text_chars=settings.max_text_chars
        )
    if report.refused:
        first = report.errors[0] if report.errors else None
        detail = f"{report.rejected} line(s) refused; nothing was stored" + (
            f". line {first.line}: {first.reason}" if first else ""
        )
        body = UploadRefusedOut(
            detail=detail,
            rejected=report.rejected,
            conflicts=report.conflicts,
            errors=[RejectedLine(line=e.line, reason=e.reason) for e in report.errors],
            errors_omitted=report.errors_omitted,
        )
        code = status.HTTP_409_CONFLICT if report.conflicts == report.rejected else 422
        return JSONResponse(body.model_dump(exclude_none=True), status_code=code)
    return UploadOut.model_validate(report, from_attributes=True)


FormQuery = Annotated[
    export.ExportForm,
    Query(alias="format", description="messages (default) or prompt_completion: TRL's two SFT dataset forms."),
]
StyleQuery = Annotated[
    export.ExportStyle,
    Query(
        description=(
            "conversational (default): chat turns, a text prompt as one user turn; standard: plain strings "
            "(format=prompt_completion only; a multi-turn prompt becomes 'Role: content' paragraphs)."
        )
    ),
]
StatusQuery = Annotated[
    export.StatusFilter,
    Query(alias="status", description="accepted (default: what trains), pending_review, rejected, or all."),
]
EXPORT_RESPONSES: Responses = {
    200: {"description": "JSONL, one demonstration per line.", "content": {"application/x-ndjson": {}}},
    401: {"model": ErrorOut},
    403: {"model": ErrorOut},
    404: {"model": ErrorOut},
    **UNPROCESSABLE,
}


@api_router.get(
    "/demonstrations/export",
    summary="Export demonstrations for TRL's SFTTrainer",
    response_class=StreamingResponse,
    responses=EXPORT_RESPONSES,
)
def export_demonstrations(
    request: Request,
    project: ProjectDep,
    _token: ExportTokenDep,
    form: FormQuery = export.ExportForm.messages,
    style: StyleQuery = export.ExportStyle.conversational,
    status_filter: StatusQuery = export.StatusFilter.accepted,
):
    """Streamed JSONL in the upload's forms, oldest first: `{"id", "messages"}` or `{"id",
    "prompt", "completion"}`. The assistant's turn is the training text (a reviewer's edit when
    there is one). `id` is the uploader's id, or `ranklab-demonstration-N` for those written here.
    Loads with `datasets.load_dataset("json", data_files=...)` straight into TRL's SFTTrainer."""
    return stream_export(request, project.id, form, style, status_filter)


def stream_export(
    request: Request,
    project_id: int,
    form: export.ExportForm,
    style: export.ExportStyle,
    status_filter: export.StatusFilter,
) -> StreamingResponse:
    """Shared with the admin page's download link."""
    try:
        export.check_options(form, style)
    except export.ExportRefused as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    produce = partial(export.iter_demonstrations, project_id=project_id, form=form, style=style, status=status_filter)
    name = f"project-{project_id}-demonstrations-{form}-{style}-{status_filter}"
    return StreamingResponse(
        formats.jsonl_chunks(request.app.state.sessionmaker, produce),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{name}.jsonl"'},
    )
