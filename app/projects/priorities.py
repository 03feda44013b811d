"""The handout's active-learning priorities (issue 16 §2): asking a worker to refresh them.

The web process only enqueues (worker/loop/active_order.py computes, with torch): after each
reward-model training when the project's handout_order is active (the reward step calls
`refresh_after_training`; `refresh_after_new_tasks` is the same for a new batch of tasks: a
round's generation or an upload of completions), or when an admin asks (`request_refresh`)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import HandoutOrder, ModelKind, ModelVersion, Project, RankingTask, TaskStatus
from app.refusals import Refusal
from app.rounds.queue import QueueUnreachable, check_reachable, enqueue_on_commit, settings_of
from worker.celery_app import EVALUATE, REFRESH_PRIORITIES, queue_for


class PriorityError(Refusal):
    pass


class NoRewardModel(PriorityError):
    status_code = 409


class QueueDown(PriorityError):
    status_code = 503


def latest_reward_model(db: Session, *, project_id: int) -> ModelVersion | None:
    """The project's newest reward model with an artifact on disk."""
    return db.scalar(
        select(ModelVersion)
        .where(
            ModelVersion.project_id == project_id,
            ModelVersion.kind == ModelKind.reward,
            ModelVersion.artifact_path.is_not(None),
        )
        .order_by(ModelVersion.id.desc())
        .limit(1)
    )


def _enqueue(db: Session, *args: int | None) -> None:
    enqueue_on_commit(db, REFRESH_PRIORITIES, *args, queue=queue_for(EVALUATE, settings_of(db)))


def _active(db: Session, project_id: int) -> bool:
    order = db.scalar(select(Project.handout_order).where(Project.id == project_id))
    return order not in (None, HandoutOrder.default)


def refresh_after_training(db: Session, *, project_id: int, reward_model_id: int) -> bool:
    """In the transaction that registers a new reward model: a refresh with it, sent on commit,
    only when the project hands out by priority. True when one was enqueued."""
    if not _active(db, project_id):
        return False
    _enqueue(db, project_id, reward_model_id)
    return True


def refresh_after_new_tasks(db: Session, *, project_id: int) -> bool:
    """In the transaction that creates a batch of tasks (a round's generation, an upload): a
    refresh with the newest reward model, so the new tasks are scored rather than handed out
    after every scored one. Only when the order is active and a reward model exists. The message
    names the project's newest task: the worker skips it when a later refresh has already read
    that task (worker/loop/active_order.run), so uploads task by task queue a refresh each but
    run few."""
    if not _active(db, project_id):  # first: the default order's uploads pay one cheap query
        return False
    version = latest_reward_model(db, project_id=project_id)
    if version is None:
        return False
    newest = db.scalar(select(func.max(RankingTask.id)).where(RankingTask.project_id == project_id))
    _enqueue(db, project_id, version.id, newest)
    return True


def request_refresh(db: Session, *, project: Project) -> ModelVersion:
    """An admin's "refresh priorities now", with the newest reward model; sent after the caller
    commits. Works whatever the order, so priorities can be ready before the order is turned on."""
    version = latest_reward_model(db, project_id=project.id)
    if version is None:
        raise NoRewardModel(
            "reward_model", "the project has no reward model yet; priorities come from one (train a round first)"
        )
    try:
        check_reachable(settings_of(db))
    except QueueUnreachable as exc:
        raise QueueDown("queue", str(exc)) from None
    _enqueue(db, project.id, version.id)
    return version


def scored_open_tasks(db: Session, *, project_id: int) -> tuple[int, int]:
    """(open tasks with a priority, open tasks) of the project, for the admin page."""
    scored, total = db.execute(
        select(func.count(RankingTask.handout_priority), func.count()).where(
            RankingTask.project_id == project_id, RankingTask.status == TaskStatus.open
        )
    ).one()
    return scored, total
