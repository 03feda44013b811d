"""/api/v1 exports: raw rankings, per-task consensus, TRL preference pairs, and the feedback forms'
unpaired (KTO) rows and raw judgments (JSONL or Parquet)."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import partial
from itertools import chain
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from app.deps import ExportTokenDep, SettingsDep
from app.exports import feedback, formats, service
from app.exports.feedback_pairs import ExportParamError, resolve_scoring
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


AspectQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description=(
            "Multi-aspect projects: derive pairs from this aspect's values (`overall` = the overall "
            "ranking, the default when the project has one). Not with `weights`."
        ),
    ),
]
WeightsQuery = Annotated[
    str | None,
    Query(
        max_length=2000,
        description=(
            "Multi-aspect projects: score each completion by a weighted sum of Likert aspects, "
            "`name:w,name:w` (e.g. `helpfulness:1,honesty:0.5`). Not with `aspect`."
        ),
    ),
]


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
    aspect: AspectQuery = None,
    weights: WeightsQuery = None,
):
    """One row per (ranking, chosen above rejected); ties give no pair. `style=standard`:
    prompt/chosen/rejected are strings (a multi-turn chat prompt is flattened to 'Role: content'
    paragraphs). `style=conversational`: prompt is the chat messages (a text prompt becomes one
    user turn), chosen and rejected are `[{"role": "assistant", "content": ...}]`. Loads with
    `datasets.load_dataset("json", ...)` straight into TRL's RewardTrainer or DPOTrainer. The
    extra columns (ids, `rank_gap` = rank groups apart) are dropped by TRL; rename `rank_gap` to
    `margin` to use TRL's margin loss. `tasks=evaluation` (or `all`) adds blind evaluation
    judgments so they can train too: one pair per judgment with a winner (a tie or "both bad"
    gives none), `source` = "evaluation" and its `evaluation_id`.

    Feedback forms (`form` column): a pairwise judgment gives one pair when it has a winner. A
    Likert, good/bad or multi-aspect judgment gives a pair for every two completions it scored
    differently, the higher chosen (good over bad); equal scores give none. Such rows have
    `feedback_id`, `score_gap` (the score difference) and `scored_by`, and null `ranking_id` and
    `rank_gap`. Multi-aspect projects choose the score with `aspect` or `weights`."""
    try:
        scoring = resolve_scoring(project.feedback_form, project.form_settings, aspect=aspect, weights=weights)
    except ExportParamError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    secret = settings.resolved_secret_key()
    ranking_pairs = partial(service.iter_pairs, project_id=project.id, secret=secret, style=style, source=source)

    def produce(db):
        rating_pairs = (
            feedback.iter_rating_pairs(db, project_id=project.id, secret=secret, style=style, scoring=scoring)
            if scoring is not None and source is not TaskSource.evaluation
            else ()
        )
        return chain(ranking_pairs(db), rating_pairs)

    schema = formats.PAIRS_CONVERSATIONAL if style is PairStyle.conversational else formats.PAIRS_STANDARD
    return _respond(request, produce, schema, export_format, f"project-{project.id}-pairs-{style}")


@api_router.get(
    "/unpaired",
    summary="Export good/bad judgments for TRL's KTOTrainer",
    response_class=StreamingResponse,
    responses=RESPONSES,
)
def export_unpaired(
    request: Request,
    project: ProjectDep,
    settings: SettingsDep,
    _token: ExportTokenDep,
    export_format: FormatQuery = ExportFormat.jsonl,
    style: Annotated[PairStyle, Query(description="standard or conversational")] = PairStyle.standard,
):
    """KTO's unpaired form: one row per completion a good/bad judgment rated, `prompt`,
    `completion` and `label` (true = good), with the ids, the labeler's pseudonym and the
    optional `critique`. `style` as for pairs (conversational: `completion` is one assistant
    message). Empty for projects of other forms. Loads with `datasets.load_dataset` straight into
    TRL's KTOTrainer."""
    produce = partial(feedback.iter_unpaired, project_id=project.id, secret=settings.resolved_secret_key(), style=style)
    schema = formats.UNPAIRED_CONVERSATIONAL if style is PairStyle.conversational else formats.UNPAIRED_STANDARD
    return _respond(request, produce, schema, export_format, f"project-{project.id}-unpaired-{style}")


@api_router.get(
    "/judgments",
    summary="Export every feedback-form judgment",
    response_class=StreamingResponse,
    responses=RESPONSES,
)
def export_judgments(
    request: Request,
    project: ProjectDep,
    settings: SettingsDep,
    _token: ExportTokenDep,
    export_format: FormatQuery = ExportFormat.jsonl,
):
    """One row per submitted judgment of a feedback form, every stored field kept. Rating forms
    (likert, good_bad, multi_aspect; `feedback_id` set): `ratings` lists each value given,
    `{completion_id, aspect, value, critique}` (aspect "" = the completion's own rating: the
    Likert point, 1 good / 0 bad, or its level in a multi-aspect overall ranking, 0 = best; a
    ranked aspect's value is a level too), and `settings` the form settings it was given under.
    Pairwise (`ranking_id` set): `verdict` in completion terms, `first` / `second` (the
    completion at task position 0 / 1 is better), `tie` or `both_bad`, never the sides, which
    `display_order` records (A first); `ranking`, `none_acceptable` and `flags` as stored. Both:
    the task's `completions`, `critiques`, `time_spent_ms`, `comment`, `late`, `submitted_at` and
    the labeler's pseudonym. Ranking-form projects export their rankings at `/rankings`."""
    produce = partial(feedback.iter_judgments, project_id=project.id, secret=settings.resolved_secret_key())
    return _respond(request, produce, formats.JUDGMENTS, export_format, f"project-{project.id}-judgments")


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
