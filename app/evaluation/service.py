"""Blind human evaluations of model versions: launch, open the tasks, close, cancel.

Keyword-only functions taking the caller's session first; they flush, never commit (the request
or the worker step owns the commit), and GENERATE_EVAL is sent by name only after that commit
(app/rounds/queue.py). Results (win rates, leaderboard) are read in results.py; the arithmetic is
in stats.py. An evaluation task is an ordinary ranking_tasks row of kind "pairwise_eval" holding
the two versions' eval completions for one prompt, so the handout treats it like any task.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import combinations
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from app.db import start_write_transaction
from app.evaluation.choices import (  # re-exported (__all__): callers find the whole interface here
    EVALUATED_KINDS,
    OPPONENTS,
    EvaluationConflict,
    EvaluationError,
    EvaluationNotFound,
    QueueDown,
    eval_prompts,
    evaluable_versions,
    hold_out_eval_set,
    named_preset_comparisons,
    named_presets,
    opponents,
    preset_comparisons,
    project_version,
    versions_for_round,
)
from app.models import (
    Completion,
    CompletionSource,
    Evaluation,
    EvaluationStatus,
    RankingTask,
    TaskCompletion,
    TaskStatus,
    utcnow,
)
from app.rounds import lifecycle
from app.rounds.queue import QueueUnreachable, check_reachable, enqueue_on_commit, settings_of
from worker.celery_app import EVALUATE, GENERATE_EVAL, queue_for

E = EvaluationStatus
ACTIVE = (E.generating, E.labeling)
TASK_KIND = "pairwise_eval"
DEFAULT_PROMPTS = 32
DEFAULT_SEED = 1234


# ---- launching ---------------------------------------------------------------------------------


def get_evaluation(db: Session, *, evaluation_id: int) -> Evaluation:
    evaluation = db.get(Evaluation, evaluation_id)
    if evaluation is None:
        raise EvaluationNotFound("evaluation_id", f"no evaluation {evaluation_id}")
    return evaluation


def list_evaluations(db: Session, *, project_id: int) -> list[Evaluation]:
    return list(
        db.scalars(select(Evaluation).where(Evaluation.project_id == project_id).order_by(Evaluation.id.desc()))
    )


def chosen(
    db: Session,
    *,
    project_id: int,
    version_id: int | None,
    against: Sequence[str] = (),
    version_ids: Sequence[int] = (),
    comparisons: Sequence[Sequence[int]] | None = None,
    preset: str | None = None,
) -> tuple[list[int], list[list[int]] | None]:
    """(version_ids, comparisons) for `launch` from either way of choosing, the same in the API and
    the pages: a named `preset` (choices.NAMED_PRESETS), `version_id` against presets ("previous",
    "base", "sft"), or `version_ids` (every pair, unless `comparisons` names the pairs)."""
    if preset:
        pairs = named_preset_comparisons(db, project_id=project_id, name=preset)
        return list(dict.fromkeys(v for pair in pairs for v in pair)), pairs
    if version_id is not None:
        pairs = preset_comparisons(db, project_id=project_id, version_id=version_id, against=against)
        return list(dict.fromkeys(v for pair in pairs for v in pair)), pairs
    return list(version_ids), None if comparisons is None else [list(pair) for pair in comparisons]


def launch(
    db: Session,
    *,
    project_id: int,
    version_ids: Sequence[int],
    comparisons: Sequence[Sequence[int]] | None = None,
    prompts: int = DEFAULT_PROMPTS,
    seed: int = DEFAULT_SEED,
    created_by_id: int | None = None,
    round_id: int | None = None,
    name: str | None = None,
    check_queue: bool = True,
) -> Evaluation:
    """Validates, stores the evaluation (status generating) and enqueues GENERATE_EVAL on commit.
    `comparisons` defaults to every pair of `version_ids`; each pair [a, b] gets one task per eval
    prompt (the first `prompts` of the eval split). The worker writes missing completions, then
    calls open_for_labeling."""
    ids = list(dict.fromkeys(int(v) for v in version_ids))
    if len(ids) < 2:
        raise EvaluationError("version_ids", "choose at least two different model versions")
    versions = [project_version(db, project_id=project_id, version_id=v, field="version_ids") for v in ids]
    pairs = _checked_pairs(ids, comparisons)
    if prompts < 1:
        raise EvaluationError("prompts", "must be at least 1")
    chosen = eval_prompts(db, project_id=project_id, limit=prompts)
    if not chosen:
        raise EvaluationError(
            "prompts",
            "the project has no eval prompts: upload prompts with split “eval” or hold out unused ones as the eval set",
        )
    if check_queue:
        try:
            check_reachable(settings_of(db))
        except QueueUnreachable as exc:
            raise QueueDown("queue", str(exc)) from None
    label = name or " vs ".join(f"{v.kind} #{v.id}" for v in versions)
    evaluation = Evaluation(
        project_id=project_id,
        round_id=round_id,
        name=label[:200],
        status=E.generating,
        version_ids=ids,
        comparisons=pairs,
        config={"prompts": len(chosen), "prompt_ids": [p.id for p in chosen], "seed": seed},
        progress=0.0,
        created_by_id=created_by_id,
    )
    db.add(evaluation)
    db.flush()
    enqueue_on_commit(db, GENERATE_EVAL, evaluation.id, queue=queue_for(EVALUATE, settings_of(db)))
    return evaluation


def _checked_pairs(ids: list[int], comparisons: Sequence[Sequence[int]] | None) -> list[list[int]]:
    if comparisons is None:
        return [[a, b] for a, b in combinations(ids, 2)]
    pairs: list[list[int]] = []
    seen: set[frozenset[int]] = set()
    for index, pair in enumerate(comparisons):
        if len(pair) != 2 or pair[0] == pair[1]:
            raise EvaluationError(f"comparisons[{index}]", "must be two different version ids")
        outside = [v for v in pair if v not in ids]
        if outside:
            raise EvaluationError(f"comparisons[{index}]", f"version {outside[0]} is not one of version_ids")
        if frozenset(pair) not in seen:
            seen.add(frozenset(pair))
            pairs.append([int(pair[0]), int(pair[1])])
    if not pairs:
        raise EvaluationError("comparisons", "choose at least one pair of versions")
    return pairs


# ---- completions and tasks ---------------------------------------------------------------------


def eval_completions(db: Session, *, evaluation: Evaluation) -> dict[tuple[int, int], Completion]:
    """(version id, prompt id) -> that version's eval completion with the evaluation's seed."""
    seed = evaluation.config.get("seed")
    rows = db.scalars(
        select(Completion)
        .where(
            Completion.prompt_id.in_(evaluation.config.get("prompt_ids", [])),
            Completion.model_version_id.in_(evaluation.version_ids),
            Completion.source == CompletionSource.model,
        )
        .order_by(Completion.id)
    )
    found: dict[tuple[int, int], Completion] = {}
    for completion in rows:
        params = completion.generation_params or {}
        if params.get("purpose") == "eval" and params.get("seed") == seed:
            found.setdefault((cast(int, completion.model_version_id), completion.prompt_id), completion)
    return found


def missing_completions(db: Session, *, evaluation: Evaluation) -> dict[int, list[int]]:
    """version id -> prompt ids it still has to answer (what GENERATE_EVAL generates)."""
    have = eval_completions(db, evaluation=evaluation)
    return {
        v: missing
        for v in evaluation.version_ids
        if (missing := [p for p in evaluation.config.get("prompt_ids", []) if (v, p) not in have])
    }


def open_for_labeling(db: Session, evaluation: Evaluation) -> int:
    """Creates the pairwise_eval tasks (one per eval prompt × comparison; the pair's two
    completions in a seeded random order) and moves the evaluation to labeling; returns the number
    of tasks created. Idempotent: a task already made is not made again, and an evaluation
    already labeling only gets what it lacks. Refuses while a completion is missing."""
    start_write_transaction(db)
    locked = db.scalar(select(Evaluation).where(Evaluation.id == evaluation.id).with_for_update())
    if locked is None:
        raise EvaluationNotFound("evaluation_id", f"no evaluation {evaluation.id}")
    db.refresh(locked)
    if locked.status not in ACTIVE:
        raise EvaluationConflict("status", f"evaluation {locked.id} is {locked.status}; it cannot open for labeling")
    missing = missing_completions(db, evaluation=locked)
    if missing:
        described = ", ".join(f"version {v}: {len(p)} prompt{'s' if len(p) != 1 else ''}" for v, p in missing.items())
        raise EvaluationConflict("completions", f"eval completions are missing ({described})")
    have = eval_completions(db, evaluation=locked)
    existing = {
        (task.prompt_id, frozenset(task.completion_ids))
        for task in db.scalars(select(RankingTask).where(RankingTask.evaluation_id == locked.id))
    }
    seed = locked.config.get("seed", 0)
    created = 0
    for prompt_id in locked.config.get("prompt_ids", []):
        for a, b in locked.comparisons:
            pair = [have[(a, prompt_id)], have[(b, prompt_id)]]
            if pair[0].id == pair[1].id or (prompt_id, frozenset(c.id for c in pair)) in existing:
                continue
            if random.Random(f"{seed}:{locked.id}:{prompt_id}:{a}:{b}").random() < 0.5:
                pair.reverse()
            task = RankingTask(
                project_id=locked.project_id,
                prompt_id=prompt_id,
                round_id=None,
                kind=TASK_KIND,
                evaluation_id=locked.id,
                status=TaskStatus.open,
            )
            db.add(task)
            db.flush()
            db.add_all(TaskCompletion(task_id=task.id, completion_id=c.id, position=i) for i, c in enumerate(pair))
            created += 1
    db.flush()
    if locked.status == E.generating:
        _transition(db, evaluation_id=locked.id, source=[E.generating], target=E.labeling, progress=0.0)
    db.refresh(locked)
    if locked is not evaluation:
        db.refresh(evaluation)
    return created


# ---- closing -----------------------------------------------------------------------------------


def close(db: Session, *, evaluation: Evaluation) -> Evaluation:
    """labeling → done: open tasks are withdrawn (retired) and the results stay readable."""
    return _finish(db, evaluation=evaluation, source=[E.labeling], target=E.done, verb="closed")


def cancel(db: Session, *, evaluation: Evaluation) -> Evaluation:
    """generating or labeling → cancelled: open tasks are withdrawn; judgments already made stay."""
    return _finish(db, evaluation=evaluation, source=list(ACTIVE), target=E.cancelled, verb="cancelled")


def _finish(db: Session, *, evaluation: Evaluation, source: list[str], target: str, verb: str) -> Evaluation:
    if evaluation.status not in source:
        raise EvaluationConflict(
            "status",
            f"evaluation {evaluation.id} is {evaluation.status} and cannot be {verb} (only when {' or '.join(source)})",
        )
    if not _transition(db, evaluation_id=evaluation.id, source=source, target=target, finished_at=utcnow()):
        raise EvaluationConflict("status", "the evaluation changed meanwhile; reload it")
    db.execute(
        update(RankingTask)
        .where(RankingTask.evaluation_id == evaluation.id, RankingTask.status == TaskStatus.open)
        .values(status=TaskStatus.retired)
        .execution_options(synchronize_session=False)
    )
    db.refresh(evaluation)
    return evaluation


def _transition(db: Session, *, evaluation_id: int, source: Sequence[str], target: str, **values: Any) -> bool:
    """One conditional UPDATE, so of two requests (or deliveries) only one moves the evaluation."""
    result = db.execute(
        update(Evaluation)
        .where(Evaluation.id == evaluation_id, Evaluation.status.in_(source))
        .values(status=target, **values)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult, result).rowcount == 1


__all__ = [
    "ACTIVE",
    "EVALUATED_KINDS",
    "OPPONENTS",
    "TASK_KIND",
    "EvaluationConflict",
    "EvaluationError",
    "EvaluationNotFound",
    "QueueDown",
    "cancel",
    "close",
    "eval_completions",
    "eval_prompts",
    "evaluable_versions",
    "get_evaluation",
    "hold_out_eval_set",
    "launch",
    "lifecycle",
    "list_evaluations",
    "missing_completions",
    "named_preset_comparisons",
    "named_presets",
    "open_for_labeling",
    "opponents",
    "preset_comparisons",
    "versions_for_round",
]
