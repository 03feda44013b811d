"""Reward-model scores of eval answers (completion_scores): every eval answer of the project's
versions is scored once by each new reward model, so a version's score under the latest RM and
under its own round's RM can both be read later without loading a model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import exists, insert, select

from app.models import Completion, CompletionScore, CompletionSource, Prompt
from worker.loop import eval_answers
from worker.loop.runtime import db_session

CHUNK = 256
"""Answers scored (and stored) per transaction."""


def unscored(db, *, project_id: int, reward_id: int) -> list[tuple[int, Any, str]]:
    """(completion id, prompt, text) of the project's eval answers `reward_id` has not scored."""
    rows = db.execute(
        select(Completion.id, Completion.text, Completion.generation_params, Prompt.text, Prompt.messages)
        .join(Prompt, Prompt.id == Completion.prompt_id)
        .where(
            Prompt.project_id == project_id,
            Completion.model_version_id.is_not(None),
            Completion.source == CompletionSource.model,
            ~exists().where(
                CompletionScore.completion_id == Completion.id, CompletionScore.reward_model_id == reward_id
            ),
        )
        .order_by(Completion.id)
    ).all()
    return [
        (cid, text if text is not None else messages, answer)
        for cid, answer, params, text, messages in rows
        if (params or {}).get("purpose") == eval_answers.PURPOSE
    ]


def score_project(
    project_id: int, reward_id: int, reward_path: str, on_progress: Callable[[int, int, str], None]
) -> int:
    """Score every unscored eval answer of the project with the reward model; returns how many."""
    with db_session(read_only=True) as db:
        todo = unscored(db, project_id=project_id, reward_id=reward_id)
    if not todo:
        return 0
    from worker.ml.scorer import RewardScorer

    scorer = RewardScorer.load(reward_path)
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        scores = scorer.score([p for _, p, _ in chunk], [a for _, _, a in chunk]).tolist()
        store(reward_id, [cid for cid, _, _ in chunk], scores)
        on_progress(start + len(chunk), len(todo), "scoring eval answers")
    return len(todo)


def store(reward_id: int, completion_ids: Sequence[int], scores: Sequence[float]) -> None:
    """Insert the scores not stored yet (a second delivery of the step skips what the first stored)."""
    with db_session() as db:
        have = set(
            db.scalars(
                select(CompletionScore.completion_id).where(
                    CompletionScore.reward_model_id == reward_id,
                    CompletionScore.completion_id.in_(list(completion_ids)),
                )
            )
        )
        values = [
            {"completion_id": cid, "reward_model_id": reward_id, "score": float(score)}
            for cid, score in zip(completion_ids, scores, strict=True)
            if cid not in have
        ]
        if values:
            db.execute(insert(CompletionScore), values)


def scores_of(db, *, completion_ids: Sequence[int], reward_id: int) -> dict[int, float]:
    return dict(
        db.execute(
            select(CompletionScore.completion_id, CompletionScore.score).where(
                CompletionScore.reward_model_id == reward_id, CompletionScore.completion_id.in_(list(completion_ids))
            )
        ).all()
    )
