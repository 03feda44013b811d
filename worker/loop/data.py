"""Rankings and prompts from the database in worker.ml's formats."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.judges.data_filter import labelling_data
from app.models import (
    OVERALL,
    Completion,
    FeedbackForm,
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

RATING_FORMS = (FeedbackForm.likert, FeedbackForm.good_bad, FeedbackForm.multi_aspect)
"""Task kinds whose answers are ratings (Feedback rows), not Rankings."""


def rankings(
    db: Session,
    *,
    project_id: int,
    round_id: int | None = None,
    round_ids: Sequence[int] | None = None,
    split: str | None = None,
    weights: Mapping[str, float] | None = None,
) -> list:
    """Every labeler's ranking in the project (or of one round's, or some rounds' tasks), and every
    rating-form judgment turned into one (`rated_rankings`), as worker.ml Rankings:
    completions in task order, groups as indices into them, prompt_id = our prompt id (so the
    ML code keeps a prompt's rankings together)."""
    from worker.ml.data import Ranking as MLRanking

    query = (
        select(Ranking.task_id, Ranking.groups, RankingTask.prompt_id, Prompt.text, Prompt.messages)
        .join(RankingTask, RankingTask.id == Ranking.task_id)
        .join(Prompt, Prompt.id == RankingTask.prompt_id)
        .where(Ranking.project_id == project_id, labelling_data())  # no compare-only AI judgments
        .order_by(Ranking.id)
    )
    query = _where_tasks(query, round_id=round_id, round_ids=round_ids, split=split)
    rows = db.execute(query).all()
    rated = rated_rankings(
        db, project_id=project_id, round_id=round_id, round_ids=round_ids, split=split, weights=weights
    )
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
    return out + rated


def rated_rankings(
    db: Session,
    *,
    project_id: int,
    round_id: int | None = None,
    round_ids: Sequence[int] | None = None,
    split: str | None = None,
    weights: Mapping[str, float] | None = None,
) -> list:
    """Likert, good/bad and multi-aspect judgments as worker.ml Rankings (app/labeling/feedback_read):
    completions grouped by score, best first, equal scores tied (so they give no pair). A
    multi-aspect judgment also carries each aspect's groups (`aspect_groups`, the multi-aspect
    reward model's rows); its overall groups are its overall ranking when the project asks for one,
    else the `weights` combination of the aspects (None or empty: equal weights)."""
    from app.labeling.feedback_read import groups_from_scores, load_feedback, scores
    from app.projects.forms_config import aspects_of
    from worker.ml.data import Ranking as MLRanking

    query = (
        select(RankingTask.id, RankingTask.prompt_id, Prompt.text, Prompt.messages)
        .join(Prompt, Prompt.id == RankingTask.prompt_id)
        .where(RankingTask.project_id == project_id, RankingTask.kind.in_(RATING_FORMS))
    )
    query = _where_tasks(query, round_id=round_id, round_ids=round_ids, split=split)
    tasks = {row.id: row for row in db.execute(query)}
    judgments = [j for j in load_feedback(db, project_id=project_id) if j.task_id in tasks] if tasks else []
    texts = _task_completions(db, task_ids={j.task_id for j in judgments})
    out = []
    for judgment in judgments:
        ids, completions = texts[judgment.task_id]
        index = {cid: i for i, cid in enumerate(ids)}
        aspects = [aspect.name for aspect in aspects_of(judgment.settings)]
        own = [value for value in judgment.values.get(OVERALL, {}).values() if value is not None]
        overall: str | dict[str, float] = OVERALL
        if aspects and not own:  # no overall rating or ranking asked: combine the aspects
            overall = {name: weights.get(name, 0.0) for name in aspects} if weights else dict.fromkeys(aspects, 1.0)
        groups = _positions(groups_from_scores(scores(judgment, overall)), index)
        aspect_groups = {
            name: g for name in aspects if len(g := _positions(groups_from_scores(scores(judgment, name)), index)) > 1
        }
        if len(groups) < 2 and not aspect_groups:
            continue  # all tied: nothing to learn or measure
        task = tasks[judgment.task_id]
        out.append(
            MLRanking(
                prompt=task.text if task.text is not None else task.messages,
                completions=completions,
                groups=groups if len(groups) > 1 else [list(range(len(completions)))],
                prompt_id=str(task.prompt_id),
                aspect_groups=aspect_groups,
            )
        )
    return out


def labelled(
    db: Session, *, project_id: int, round_ids: Sequence[int], split: str, weights: Mapping[str, float] | None = None
) -> list:
    """Every good/bad judgment on the given rounds' tasks with prompts of `split`, as worker.ml
    Labelled examples (KTO's unpaired form): one per judged completion, label = good. (`weights`
    is there to match `rankings`: good/bad has no aspects.)"""
    from app.labeling.feedback_read import kto_labels, load_feedback
    from worker.ml.kto import Labelled

    prompts: dict[int, tuple[int, Any]] = {
        task_id: (prompt_id, text if text is not None else messages)
        for task_id, prompt_id, text, messages in db.execute(
            select(RankingTask.id, Prompt.id, Prompt.text, Prompt.messages)
            .join(Prompt, Prompt.id == RankingTask.prompt_id)
            .where(RankingTask.round_id.in_(list(round_ids)), Prompt.split == split)
        )
    }
    judgments = [j for j in load_feedback(db, project_id=project_id, form="good_bad") if j.task_id in prompts]
    texts = _task_completions(db, task_ids={j.task_id for j in judgments})
    out = []
    for judgment in judgments:
        prompt_id, prompt = prompts[judgment.task_id]
        text_of = dict(zip(*texts[judgment.task_id], strict=True))
        for completion_id, good in kto_labels(judgment).items():
            out.append(Labelled(prompt=prompt, completion=text_of[completion_id], label=good, prompt_id=str(prompt_id)))
    return out


def _where_tasks(query, *, round_id: int | None, round_ids: Sequence[int] | None, split: str | None):
    """`query` (joined to RankingTask and Prompt) narrowed to one round's or some rounds' tasks and
    to prompts of one split, for the arguments given."""
    if round_id is not None:
        query = query.where(RankingTask.round_id == round_id)
    if round_ids is not None:
        query = query.where(RankingTask.round_id.in_(list(round_ids)))
    if split is not None:
        query = query.where(Prompt.split == split)
    return query


def _positions(groups: list[list[int]], index: Mapping[int, int]) -> list[list[int]]:
    """Groups of completion ids -> groups of positions in the task's completion list."""
    return [[index[cid] for cid in group if cid in index] for group in groups]


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
