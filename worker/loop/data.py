"""Rankings and prompts from the database in worker.ml's formats."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import (
    Completion,
    ModelKind,
    ModelVersion,
    Prompt,
    PromptSplit,
    Ranking,
    RankingTask,
    RoundPrompt,
    TaskCompletion,
    TrainingRound,
)


def rankings(
    db: Session,
    *,
    project_id: int,
    round_id: int | None = None,
    round_ids: Sequence[int] | None = None,
    split: str | None = None,
) -> list:
    """Every labeler's ranking in the project (or of one round's, or some rounds' tasks), as worker.ml Rankings:
    completions in task order, groups as indices into them, prompt_id = our prompt id (so the
    ML code keeps a prompt's rankings together)."""
    from worker.ml.data import Ranking as MLRanking

    query = (
        select(Ranking.task_id, Ranking.groups, RankingTask.prompt_id, Prompt.text, Prompt.messages)
        .join(RankingTask, RankingTask.id == Ranking.task_id)
        .join(Prompt, Prompt.id == RankingTask.prompt_id)
        .where(Ranking.project_id == project_id)
        .order_by(Ranking.id)
    )
    if round_id is not None:
        query = query.where(RankingTask.round_id == round_id)
    if round_ids is not None:
        query = query.where(RankingTask.round_id.in_(list(round_ids)))
    if split is not None:
        query = query.where(Prompt.split == split)
    rows = db.execute(query).all()
    texts = _task_completions(db, task_ids={row.task_id for row in rows})
    out = []
    for row in rows:
        ids, completions = texts[row.task_id]
        index = {cid: i for i, cid in enumerate(ids)}
        groups = [[index[cid] for cid in group if cid in index] for group in row.groups]
        groups = [g for g in groups if g]
        if len(groups) < 2:
            continue  # all tied: nothing to learn or measure
        out.append(
            MLRanking(
                prompt=row.text if row.text is not None else row.messages,
                completions=completions,
                groups=groups,
                prompt_id=str(row.prompt_id),
            )
        )
    return out


def _task_completions(db: Session, *, task_ids: set[int]) -> dict[int, tuple[list[int], list[str]]]:
    found: dict[int, tuple[list[int], list[str]]] = defaultdict(lambda: ([], []))
    ids = sorted(task_ids)
    for start in range(0, len(ids), 500):
        for task_id, cid, text in db.execute(
            select(TaskCompletion.task_id, Completion.id, Completion.text)
            .join(Completion, Completion.id == TaskCompletion.completion_id)
            .where(TaskCompletion.task_id.in_(ids[start : start + 500]))
            .order_by(TaskCompletion.task_id, TaskCompletion.position)
        ):
            found[task_id][0].append(cid)
            found[task_id][1].append(text)
    return found


def ppo_prompts(db: Session, *, training_round: TrainingRound) -> list[Any]:
    """Train-split prompts of this round and the project's earlier rounds (never validation ones,
    never prompts of rounds still to come)."""
    rows = db.execute(
        select(Prompt.text, Prompt.messages)
        .join(RoundPrompt, RoundPrompt.prompt_id == Prompt.id)
        .join(TrainingRound, TrainingRound.id == RoundPrompt.round_id)
        .where(
            TrainingRound.project_id == training_round.project_id,
            TrainingRound.number <= training_round.number,
            Prompt.split == PromptSplit.train,
        )
        .order_by(Prompt.id)
    ).all()
    return [text if text is not None else messages for text, messages in rows]


def policy_line_rounds(db: Session, *, training_round: TrainingRound) -> list[int]:
    """Ids of this round and of the earlier rounds of its policy line: the rounds whose starting
    policy is this round's or one of its ancestors, back to the SFT model or base the line began
    with. A round started from another model (another line) is not among them."""
    line: set[int] = set()
    version_id = training_round.policy_in_id
    while version_id is not None and version_id not in line:
        line.add(version_id)
        version = db.get_one(ModelVersion, version_id)
        if version.kind in (ModelKind.base, ModelKind.sft):
            break
        version_id = version.parent_id
    return list(
        db.scalars(
            select(TrainingRound.id).where(
                TrainingRound.project_id == training_round.project_id,
                TrainingRound.number <= training_round.number,
                TrainingRound.policy_in_id.in_(line),
            )
        )
    )
