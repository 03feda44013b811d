"""/api/v1 uploads: prompts (JSON batch or JSONL file) and completions (per prompt or JSONL file)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api_types import Text
from app.deps import DbDep, SettingsDep, UploadTokenDep
from app.json_api import UNPROCESSABLE, ErrorOut, JsonApiRoute, Responses
from app.limits import STREAMED_TYPES
from app.projects.deps import ProjectDep
from app.prompts import service
from app.prompts.jsonl import read_lines, spool_stream
from app.prompts.schemas import (
    BatchRejectedOut,
    CompletionOut,
    CompletionsIn,
    GroupIngestOut,
    IngestOut,
    PromptBatchIn,
    TaskOut,
)

api_router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["uploads"], route_class=JsonApiRoute)
ERRORS: Responses = {
    401: {"model": ErrorOut},
    403: {"model": ErrorOut},
    404: {"model": ErrorOut, "description": "No such project."},
    413: {"model": ErrorOut, "description": "Body over the size limit."},
    **UNPROCESSABLE,
}
FILE_ERRORS: Responses = {**ERRORS, 415: {"model": ErrorOut, "description": "Neither multipart nor JSONL."}}
JSONL_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@api_router.post(
    "/prompts",
    response_model=IngestOut,
    summary="Upload prompts (JSON batch)",
    responses={
        **ERRORS,
        422: {"model": BatchRejectedOut, "description": "A refused prompt; nothing of the batch was stored."},
    },
)
def upload_prompts(body: PromptBatchIn, project: ProjectDep, db: DbDep, settings: SettingsDep, _token: UploadTokenDep):
    """All or nothing: if any prompt is refused the answer is 422 naming it (`prompts[i].field`)
    and nothing is stored. Prompts whose external_id is already stored are counted as
    `already_present` and left unchanged, so a batch can be re-sent safely."""
    try:
        report = service.add_prompts(db, project=project, prompts=body.prompts, max_text_chars=settings.max_text_chars)
    except service.PromptBatchRejected as exc:
        return JSONResponse(
            {"detail": str(exc), "errors": [{"line": e.line, "reason": e.reason} for e in exc.errors]}, status_code=422
        )
    return IngestOut.model_validate(report, from_attributes=True)


@api_router.post(
    "/prompts/jsonl",
    response_model=IngestOut,
    summary="Upload prompts (JSONL file)",
    openapi_extra=JSONL_BODY,
    responses=FILE_ERRORS,
)
async def upload_prompts_jsonl(
    request: Request, project: ProjectDep, db: DbDep, settings: SettingsDep, _token: UploadTokenDep
):
    """One prompt object per line (same fields as the JSON batch). Send the file as multipart
    field `file`, or as the raw body with `Content-Type: application/x-ndjson`.

    Streamed: the body goes to a temporary file and is read back line by line in batches of 1000,
    so a large file never sits in memory. Good lines are stored, bad lines are reported with their
    line number and reason (the first 1000; `errors_omitted` counts the rest). Idempotent by
    external_id."""
    async with _uploaded_file(request) as file:
        lines = read_lines(file, max_line_bytes=settings.max_body_bytes)
        report = await run_in_threadpool(
            service.ingest_prompts, db, project=project, lines=lines, max_text_chars=settings.max_text_chars
        )
    return IngestOut.model_validate(report, from_attributes=True)


@api_router.post(
    "/prompts/{external_id:path}/completions",
    response_model=TaskOut,
    status_code=201,
    summary="Upload completions for a prompt",
    responses={
        **ERRORS,
        200: {"model": TaskOut, "description": "This set was already uploaded."},
        422: {**UNPROCESSABLE[422], "description": "K outside the project's range, empty text, ..."},
    },
)
def upload_completions(
    body: CompletionsIn,
    project: ProjectDep,
    db: DbDep,
    settings: SettingsDep,
    response: Response,
    _token: UploadTokenDep,
    external_id: Annotated[Text, Path(description="The prompt's external_id (URL-encoded).", examples=["faq-17"])],
):
    """The completions (between the project's k_min and k_max) become one ranking task, shown
    to labelers in random order. Re-posting the same set of texts for the prompt returns the
    existing task with status 200 (`created: false`) and stores nothing; a different set makes
    another task."""
    try:
        task, report = service.add_completions(
            db,
            project=project,
            prompt_external_id=external_id,
            completions=body.completions,
            max_text_chars=settings.max_text_chars,
        )
    except service.PromptNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except service.CompletionsRejected as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    if not report.created:
        response.status_code = status.HTTP_200_OK
    return TaskOut(
        task_id=task.id,
        prompt_id=task.prompt_id,
        prompt_external_id=task.prompt.external_id,
        status=task.status,
        created=report.created,
        completions=[
            CompletionOut(
                id=item.completion_id,
                position=item.position,
                text=item.completion.text,
                model=item.completion.model_name,
            )
            for item in task.items
        ],
    )


@api_router.post(
    "/completions/jsonl",
    response_model=GroupIngestOut,
    summary="Upload completions (JSONL file)",
    openapi_extra=JSONL_BODY,
    responses=FILE_ERRORS,
)
async def upload_completions_jsonl(
    request: Request, project: ProjectDep, db: DbDep, settings: SettingsDep, _token: UploadTokenDep
):
    """One task per line: `{"external_id": "p1", "completions": [{"text": ..., "model": ...,
    "generation_params": {...}}, ...]}`. A line may also carry the prompt (`text` or `messages`,
    `metadata`), stored first when new, so prompts and completions can come in one file.
    `created` counts new tasks, `already_present` lines whose set was already uploaded.
    Good lines are stored, bad lines reported, as for prompt files."""
    async with _uploaded_file(request) as file:
        lines = read_lines(file, max_line_bytes=settings.max_body_bytes)
        report = await run_in_threadpool(
            service.ingest_completion_groups, db, project=project, lines=lines, max_text_chars=settings.max_text_chars
        )
    return GroupIngestOut.model_validate(report, from_attributes=True)


@asynccontextmanager
async def _uploaded_file(request: Request) -> AsyncIterator[IO[bytes]]:
    """The uploaded JSONL as a binary file: multipart field `file` (spooled to disk by Starlette)
    or a raw JSONL body (spooled here)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=10)
        except StarletteHTTPException as exc:
            if exc.status_code != status.HTTP_400_BAD_REQUEST:
                raise  # 413 from the body limit
            # Starlette's bare 400 "Invalid multipart data." becomes a 422 that says what to send.
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"file: the multipart body could not be read ({exc.detail}); send the JSONL file "
                "as multipart field 'file'",
            ) from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    "file: missing; send the JSONL file as multipart field 'file'",
                )
            yield upload.file
        finally:
            await form.close()
        return
    if content_type.startswith(STREAMED_TYPES):
        spool = await spool_stream(request.stream())
        try:
            yield spool
        finally:
            spool.close()
        return
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        f"Content-Type {content_type or '(none)'} is not accepted here; send multipart/form-data "
        "with a 'file' field, or the raw file as application/x-ndjson",
    )
