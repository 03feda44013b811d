"""/api/v1 exports: raw rankings, per-task consensus, and TRL preference pairs (JSONL or Parquet)."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from app.deps import ExportTokenDep, SettingsDep
from app.exports import formats, service
from app.exports.service import PairStyle, TaskSource
from app.json_api import UNPROCESSABLE, ErrorOut, Responses
from app.projects.deps import ProjectDep

api_router = APIRouter(prefix="/api/v1/projects/{project_id}/exports", tags=["exports"])


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    parquet = "parquet"


FormatQuery = Annotated[ExportFormat, Query(alias="format", description="jsonl (streamed) or parquet.")]
TasksQuery = Annotated[
    TaskSource,
    Query(
        alias="tasks",
        description=(
            "ranking (default): ranking tasks only; evaluation: blind evaluation judgments only (two model "
            "versions' answers to an eval prompt); all: both. Each row's `source` says which it came from."
        ),
    ),
]
RESPONSES: Responses = {
    200: {
        "description": "JSONL (one object per line) or a Parquet file.",
        "content": {"application/x-ndjson": {}, "application/vnd.apache.parquet": {}},
    },
    401: {"model": ErrorOut},
    403: {"model": ErrorOut},
    404: {"model": ErrorOut},
    **UNPROCESSABLE,
}


@api_router.get("/rankings", summary="Export every ranking", response_class=StreamingResponse, responses=RESPONSES)
def export_rankings(
    request: Request,
    project: ProjectDep,
    settings: SettingsDep,
    _token: ExportTokenDep,
    export_format: FormatQuery = ExportFormat.jsonl,
    source: TasksQuery = TaskSource.ranking,
):
    """One row per submitted ranking: `ranking` (groups of completion ids, best first; a group
    of several is a tie) and `ranking_texts` in the same shape, the task's `completions`,
    `display_order` as shown, per-completion `flags`, `none_acceptable`, `time_spent_ms`,
    `comment`, `late`, `submitted_at`, `labeler_id`: a stable pseudonym (never the email), and
    `source` (ranking or evaluation) with `evaluation_id`."""
    produce = partial(
        service.iter_rankings, project_id=project.id, secret=settings.resolved_secret_key(), source=source
    )
    return _respond(request, produce, formats.RANKINGS, export_format, f"project-{project.id}-rankings")


@api_router.get(
    "/consensus", summary="Export the consensus ranking per task", response_class=StreamingResponse, responses=RESPONSES
)
def export_consensus(
    request: Request,
    project: ProjectDep,
    _token: ExportTokenDep,
    export_format: FormatQuery = ExportFormat.jsonl,
    source: TasksQuery = TaskSource.ranking,
):
    """One row per task with at least one ranking. Method: each labeler's ranking gives every
    completion a rank (1 = best, tied completions share the mean of the ranks they span); the
    `consensus` orders completions by mean rank over labelers (the Borda count), equal means
    tied. Agreement (null with one ranking): `kendall_w`, Kendall's coefficient of concordance
    corrected for ties (1 = all agree, 0 = no agreement), and `mean_kendall_tau_b` over pairs of
    labelers (-1..1); both null on evaluation tasks (`source` "evaluation"), which get
    `verdict_agreement` instead: of the `verdict_pairs` pairs of labelers who judged the task, the
    share that gave the same verdict (the same completion better, a tie, or both bad; compared by
    completion, not by side A/B), null with one judgment and on ranking tasks. Each completion
    carries its `mean_rank` and flag counts."""
    return _respond(
        request,
        partial(service.iter_consensus, project_id=project.id, source=source),
        formats.CONSENSUS,
        export_format,
        f"project-{project.id}-consensus",
    )


@api_router.get(
    "/pairs", summary="Export preference pairs for TRL", response_class=StreamingResponse, responses=RESPONSES
)
def export_pairs(
    request: Request,
    project: ProjectDep,
    settings: SettingsDep,
    _token: ExportTokenDep,
    export_format: FormatQuery = ExportFormat.jsonl,
    style: Annotated[PairStyle, Query(description="standard or conversational")] = PairStyle.standard,
    source: TasksQuery = TaskSource.ranking,
):
    """One row per (ranking, chosen above rejected); ties give no pair. `style=standard`:
    prompt/chosen/rejected are strings (a multi-turn chat prompt is flattened to 'Role: content'
    paragraphs). `style=conversational`: prompt is the chat messages (a text prompt becomes one
    user turn), chosen and rejected are `[{"role": "assistant", "content": ...}]`. Loads with
    `datasets.load_dataset("json", ...)` straight into TRL's RewardTrainer or DPOTrainer. The
    extra columns (ids, `rank_gap` = rank groups apart) are dropped by TRL; rename `rank_gap` to
    `margin` to use TRL's margin loss. `tasks=evaluation` (or `all`) adds blind evaluation
    judgments so they can train too: one pair per judgment with a winner (a tie or "both bad"
    gives none), `source` = "evaluation" and its `evaluation_id`."""
    produce = partial(
        service.iter_pairs,
        project_id=project.id,
        secret=settings.resolved_secret_key(),
        style=style,
        source=source,
    )
    schema = formats.PAIRS_CONVERSATIONAL if style is PairStyle.conversational else formats.PAIRS_STANDARD
    return _respond(request, produce, schema, export_format, f"project-{project.id}-pairs-{style}")


def _respond(request: Request, produce, schema, export_format: ExportFormat, name: str):
    sessions = request.app.state.sessionmaker
    if export_format is ExportFormat.parquet:
        path = formats.write_parquet(sessions, produce, schema)
        return FileResponse(
            path,
            media_type="application/vnd.apache.parquet",
            filename=f"{name}.parquet",
            background=BackgroundTask(os.unlink, path),
        )
    return StreamingResponse(
        formats.jsonl_chunks(sessions, produce),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{name}.jsonl"'},
    )
