"""Refreshing the handout's active-learning priorities (issue 16 §2, docs/active-learning.md).

After a reward model is trained (worker/loop/reward.py enqueues it when the project's
handout_order is active), after new tasks (a round's generation, an upload; coalesced, see
`refresh_with`) or when an admin asks (app/projects/priorities.py): the reward model's
features of every open task's completions and of every ranked task's, an ensemble of score heads
fitted on the project's rankings (worker/ml/active.py), and each open task's uncertainty stored
as ranking_tasks.handout_priority, which the handout reads (app/labeling/handout.py).

Nothing holds a database transaction while the model runs: the inputs are read, that transaction
ends, the features and heads are computed, then the priorities are written in one short
transaction (a few thousand single-row updates by id; on Postgres the handout skips those rows
while they are locked, so labelers never wait on a refresh).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from app.db import start_write_transaction
from app.models import HandoutOrder, ModelVersion, Project, Prompt, PromptSplit, RankingTask, TaskStatus, utcnow
from worker.loop import data
from worker.loop.runtime import db_session, settings

if TYPE_CHECKING:  # the web process imports this module's callers; torch loads only in the worker
    from torch import Tensor

N_HEADS = 5
LAPLACE_SCORE = "pool"
"""HandoutOrder.information's score in worker.ml.active_laplace: the order that saved the most
rankings with labelers who agree on 85% of pairs (docs/active-learning.md, "Label noise decides it")."""
LAPLACE_L2 = 3.0
"""The head's L2 on standardised features, i.e. the Laplace posterior's prior: the value the
measurement chose on a random-order pilot (docs/active-learning.md)."""
LAPLACE_BATCH = 100
"""Tasks picked greedily, each counted before the next (so a batch does not ask the same thing
twice); the rest follow by their score once those are counted. About a round's handout before
the next reward model refreshes the order; each pick is one pass over every open task."""

_tasks = RankingTask.__table__
_SET_PRIORITY = update(_tasks).where(_tasks.c.id == bindparam("task_id")).values(handout_priority=bindparam("priority"))


@dataclass
class _Inputs:
    order: str
    """uncertainty, margin or information: what this refresh computes."""
    open_ids: list[int]
    """Every open task of the project; those not in `open_items` get no priority (NULL)."""
    newest_task_id: int | None
    """The project's newest task when the inputs were read: a refresh asked for after tasks up to
    it were created is covered by this one (`run`'s covers_task_id)."""
    open_items: dict[int, tuple[Any, list[str]]]
    """Open tasks of the project's own form with two or more completions: (prompt, completions)."""
    ranked: list[tuple[Any, list[str], list[list[list[int]]]]]
    """Ranked tasks: (prompt, completions, its rankings as best-first groups of indices)."""


def refresh_priorities(
    db: Session,
    project_id: int,
    reward_model_dir: str,
    *,
    model_version_id: int | None = None,
    method: str | None = None,
    n_heads: int = N_HEADS,
    seed: int = 0,
    min_ranked_tasks: int | None = None,
) -> dict[str, Any]:
    """Scores the project's open tasks with the reward model at `reward_model_dir` and stores the
    priorities (higher = hand out first), then commits. `method`: uncertainty, margin or information (default:
    the project's handout_order, uncertainty while that is "default" so priorities are ready
    before an admin turns the order on). Returns what the project's priority_stats record.

    Fitted on the project's labelling data of training prompts (worker/loop/data.rankings, which
    leaves out an AI judge's compare-only rankings and the validation prompts, as the reward
    model's training does). With no ranking that orders two completions there is nothing to fit:
    the stored priorities are left as they are and the stats say why; likewise while fewer than
    `min_ranked_tasks` (Settings.active_min_ranked_tasks) training tasks are ranked, since
    uncertainty sampling from a handful of rankings measured worse than the default order."""
    minimum = settings().active_min_ranked_tasks if min_ranked_tasks is None else min_ranked_tasks
    started = time.monotonic()
    inputs = _read(db, project_id, method)
    db.commit()  # no transaction stays open while the model runs
    heads = SCORERS[HandoutOrder(inputs.order)].heads or n_heads
    stats: dict[str, Any] = {
        "tasks": 0,
        "rankings": sum(len(r) for _, _, r in inputs.ranked),
        "heads": heads,
        "newest_task_id": inputs.newest_task_id,
    }
    priorities: dict[int, float | None] | None = None
    if not any(len(groups) >= 2 for _, _, rankings in inputs.ranked for groups in rankings):
        stats["skipped"] = "no human ranking orders two completions yet: nothing to fit the score heads on"
    elif len(inputs.ranked) < minimum:
        stats["skipped"] = (
            f"{len(inputs.ranked)} of the {minimum} ranked tasks needed before the order uses priorities "
            "(cold start: too few rankings to fit on; RANKLAB_ACTIVE_MIN_RANKED_TASKS)"
        )
    elif inputs.open_items:
        scores = _score(reward_model_dir, inputs, n_heads=n_heads, seed=seed)
        priorities = {task_id: scores.get(task_id) for task_id in inputs.open_ids}
        stats["tasks"] = len(scores)
    else:
        priorities = {task_id: None for task_id in inputs.open_ids}
    stats["seconds"] = round(time.monotonic() - started, 2)
    _store(db, project_id, priorities, order=inputs.order, model_version_id=model_version_id, stats=stats)
    db.commit()
    return {"project_id": project_id, "method": inputs.order, **stats}


def _read(db: Session, project_id: int, method: str | None) -> _Inputs:
    project = db.get_one(Project, project_id)
    order = HandoutOrder(method or project.handout_order)
    if order == HandoutOrder.default:
        order = HandoutOrder.uncertainty
    open_rows = db.execute(
        select(RankingTask.id, RankingTask.kind, Prompt.text, Prompt.messages)
        .join(Prompt, Prompt.id == RankingTask.prompt_id)
        .where(RankingTask.project_id == project_id, RankingTask.status == TaskStatus.open)
        .order_by(RankingTask.id)
    ).all()
    # Only the project's own feedback tasks are scored: evaluation and demonstration tasks have
    # no ranking for the reward model to learn from; they keep no priority (handed out after).
    own = [row for row in open_rows if row.kind == project.feedback_form]
    texts = data._task_completions(db, task_ids={row.id for row in own})
    open_items = {
        row.id: (row.text if row.text is not None else row.messages, texts[row.id][1])
        for row in own
        if len(texts[row.id][1]) >= 2
    }
    by_task: dict[tuple[str, tuple[str, ...]], tuple[Any, list[str], list[list[list[int]]]]] = {}
    for ranking in data.rankings(db, project_id=project_id, split=PromptSplit.train):
        key = (ranking.prompt_id, tuple(ranking.completions))
        by_task.setdefault(key, (ranking.prompt, list(ranking.completions), []))[2].append(ranking.groups)
    return _Inputs(
        order=order.value,
        open_ids=[row.id for row in open_rows],
        newest_task_id=db.scalar(select(func.max(RankingTask.id)).where(RankingTask.project_id == project_id)),
        open_items=open_items,
        ranked=list(by_task.values()),
    )


def _score(reward_model_dir: str, inputs: _Inputs, *, n_heads: int, seed: int) -> dict[int, float]:
    from worker.ml.active import completion_features

    open_ids = list(inputs.open_items)
    items = [inputs.open_items[task_id] for task_id in open_ids] + [(p, c) for p, c, _ in inputs.ranked]
    features = completion_features(reward_model_dir, items)
    open_features, ranked_features = features[: len(open_ids)], features[len(open_ids) :]
    rankings = [r for _, _, r in inputs.ranked]
    score = SCORERS[HandoutOrder(inputs.order)].priorities
    values = score(open_features, ranked_features, rankings, n_heads=n_heads, seed=seed)
    return dict(zip(open_ids, values, strict=True))


def _committee_priorities(
    open_features: list[Tensor], ranked_features: list[Tensor], rankings: list, *, method: str, n_heads: int, seed: int
) -> list[float]:
    """worker.ml.active's `method` on a committee of n_heads bootstrap score heads."""
    from worker.ml.active import fit_score_heads, task_uncertainty

    heads = fit_score_heads(ranked_features, rankings, n_heads=n_heads, seed=seed)
    return task_uncertainty(heads, open_features, method=method)


def _laplace_priorities(
    open_features: list[Tensor], ranked_features: list[Tensor], rankings: list, *, n_heads: int, seed: int
) -> list[float]:
    """The Laplace order (one head: n_heads and seed play no part) as priorities in (0, 1], first
    = 1; a task with fewer than two completions (nothing to order) gets 0.0, as the committee
    orders give it."""
    from worker.ml.active_laplace import laplace_order, laplace_posterior

    posterior = laplace_posterior(ranked_features, rankings, l2=LAPLACE_L2)
    order = laplace_order(posterior, open_features, LAPLACE_BATCH, score=LAPLACE_SCORE)
    priorities = [0.0] * len(open_features)
    for position, task in enumerate(order):
        if len(open_features[task]) >= 2:
            priorities[task] = 1.0 - position / len(order)
    return priorities


class _Scorer(NamedTuple):
    heads: int | None
    """Score heads it fits (the refresh's stats); None: the refresh's n_heads, a committee."""
    priorities: Callable[..., list[float]]
    """(open features, ranked features, rankings, *, n_heads, seed) -> a priority per open task."""


SCORERS = {
    HandoutOrder.uncertainty: _Scorer(None, partial(_committee_priorities, method="disagreement")),
    HandoutOrder.margin: _Scorer(None, partial(_committee_priorities, method="margin")),
    HandoutOrder.information: _Scorer(1, _laplace_priorities),
}
"""Each active handout order's priorities (the default order needs none)."""


def _store(
    db: Session,
    project_id: int,
    priorities: dict[int, float | None] | None,
    *,
    order: str,
    model_version_id: int | None,
    stats: dict[str, Any],
) -> None:
    """One short write: every open task's priority (None for those not scored), ids ascending so
    two refreshes lock rows in the same order; then the project's record of the refresh."""
    start_write_transaction(db)
    if priorities:
        db.execute(_SET_PRIORITY, [{"task_id": t, "priority": p} for t, p in sorted(priorities.items())])
    project = db.get_one(Project, project_id)
    if priorities is not None:  # a skipped refresh leaves the priorities and their record as they were
        project.priority_model_id = model_version_id
        project.priority_method = order
        project.priorities_refreshed_at = utcnow()
    project.priority_stats = stats
    db.flush()


def run(project_id: int, model_version_id: int, covers_task_id: int | None = None) -> dict[str, Any]:
    """The Celery task's body (worker/tasks.py)."""
    with db_session(read_only=True) as db:
        return refresh_with(db, project_id, model_version_id, covers_task_id=covers_task_id)


def refresh_with(
    db: Session,
    project_id: int,
    model_version_id: int,
    *,
    covers_task_id: int | None = None,
    min_ranked_tasks: int | None = None,
) -> dict[str, Any]:
    """Refresh with that reward model version. covers_task_id: the project's newest task when the
    refresh was asked for after new tasks (app/projects/priorities.refresh_after_new_tasks);
    skipped when a refresh that read that task, with this model or a newer one and the project's
    current order, has run since, so a client uploading task after task queues many refreshes
    but runs few."""
    version = db.get(ModelVersion, model_version_id)
    if version is None or not version.artifact_path or version.project_id != project_id:
        return {"project_id": project_id, "skipped": f"reward model version {model_version_id} is gone"}
    if covers_task_id is not None and _covered(db.get_one(Project, project_id), model_version_id, covers_task_id):
        return {"project_id": project_id, "skipped": f"a later refresh already scored task {covers_task_id}"}
    return refresh_priorities(
        db, project_id, version.artifact_path, model_version_id=model_version_id, min_ranked_tasks=min_ranked_tasks
    )


def _covered(project: Project, model_version_id: int, task_id: int) -> bool:
    order = HandoutOrder(project.handout_order)
    method = HandoutOrder.uncertainty if order == HandoutOrder.default else order
    return (
        project.priority_model_id is not None
        and project.priority_model_id >= model_version_id
        and project.priority_method == method.value
        and ((project.priority_stats or {}).get("newest_task_id") or 0) >= task_id
    )
