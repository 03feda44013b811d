"""What the evaluating step (worker/loop/evaluation.py) leaves behind, read from the database:
eval answers, reward-model scores, VersionEval rows and the human evaluation a round launched.
Used by the loop tests, which run the step inside their rounds rather than in rounds of its own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from app.models import Completion, CompletionScore, Evaluation, RankingTask, TaskCompletion, VersionEval

EVAL_PROMPTS = [
    {"external_id": "eval-0", "text": "tell a story about the moon", "split": "eval"},
    {"external_id": "eval-1", "text": "write a poem about the sun", "split": "eval"},
    {
        "external_id": "eval-2",
        "messages": [{"role": "user", "content": "say something about the fish"}],
        "split": "eval",
    },
]
EVAL_SETTINGS = {"seed": 77, "human": True, "human_against": ["previous"], "human_prompts": 3}


def upload_eval_prompts(api, project_id: int) -> None:
    answer = api.post(f"/api/v1/projects/{project_id}/prompts", {"prompts": EVAL_PROMPTS})
    assert answer["created"] == len(EVAL_PROMPTS), answer


def eval_answers(db) -> dict[int, int]:
    """version id -> how many eval answers it has."""
    db.rollback()
    rows = db.execute(
        select(Completion.model_version_id, Completion.generation_params).where(
            Completion.model_version_id.is_not(None)
        )
    ).all()
    counts: dict[int, int] = {}
    for version_id, params in rows:
        if (params or {}).get("purpose") == "eval":
            assert params["seed"] == EVAL_SETTINGS["seed"] and "temperature" in params
            counts[version_id] = counts.get(version_id, 0) + 1
    return counts


def scores_by_rm(db) -> dict[int, int]:
    """reward model id -> completions it scored."""
    db.rollback()
    rows = db.execute(
        select(CompletionScore.reward_model_id, func.count()).group_by(CompletionScore.reward_model_id)
    ).all()
    return dict(rows)


def version_evals(db, *, reward_model_id: int) -> dict[int, dict[str, Any]]:
    db.rollback()
    rows = db.scalars(select(VersionEval).where(VersionEval.reward_model_id == reward_model_id))
    return {row.version_id: {"round_id": row.round_id, "prompts": row.prompts, **row.metrics} for row in rows}


def check_version_metrics(metrics: dict[str, Any], *, prompts: int) -> None:
    assert metrics["prompts"] == prompts
    assert isinstance(metrics["rm_score"], float) and metrics["rm_score_sd"] >= 0
    assert 0 <= metrics["eos_share"] <= 1 and 0 < metrics["mean_tokens"] <= 8  # max_new_tokens 8
    assert 0 <= metrics["distinct_1"] <= 1 and 0 <= metrics["distinct_2"] <= 1
    assert isinstance(metrics["kl_to_reference"], float)


def human_evaluation(db, *, round_id: int) -> tuple[Evaluation, list[set[int]]]:
    """The round's evaluation and, per task, the versions of its two completions."""
    db.rollback()
    evaluation = db.scalars(select(Evaluation).where(Evaluation.round_id == round_id)).one()
    tasks = db.scalars(select(RankingTask.id).where(RankingTask.evaluation_id == evaluation.id)).all()
    versions = []
    for task_id in tasks:
        versions.append(
            set(
                db.scalars(
                    select(Completion.model_version_id)
                    .join(TaskCompletion, TaskCompletion.completion_id == Completion.id)
                    .where(TaskCompletion.task_id == task_id)
                )
            )
        )
    return evaluation, versions
