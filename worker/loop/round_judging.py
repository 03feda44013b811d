"""judging: an AI-labelled round (RLAIF, `labeling.source = "judge"`) has the project's judge rank
the round's tasks, then moves on to the reward model with no human in the loop.

The step is a round step like the others (claim, heartbeat, failed → retry, the sweep re-enqueues
it when its worker dies) around one judge run (worker/loop/judging.py `judge_tasks`) linked to the
round (judge_runs.round_id): the judge ranks each of the round's open tasks in slot mode, so every
ranking it stores took one of the task's overlap slots through the same service a labeler's goes
through and is training data; a task it cannot decide stays open for humans. A retry reuses the
round's run and skips the tasks it already judged. An endpoint that stays down fails the round
at judging with the endpoint's error; nothing of the task it was on is stored.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from sqlalchemy import select, update

from app.models import RankingTask, TaskStatus, TrainingRound, utcnow
from app.models.judges import Judge, JudgeMode, JudgeRun, JudgeRunStatus
from app.rounds import lifecycle
from app.rounds.lifecycle import S
from worker.loop import judging
from worker.loop.runtime import Reporter, db_session, run_claimed_step

log = logging.getLogger(__name__)


class NoJudge(RuntimeError):
    """The round asks for AI labels but its project has no judge (or the judge stored nothing)."""


def run(round_id: int) -> dict[str, Any]:
    return run_claimed_step(round_id, S.judging, lambda token: _judge_round(round_id, token))


def _judge_round(round_id: int, token: str) -> dict[str, Any]:
    with db_session() as db:
        training_round = db.get_one(TrainingRound, round_id)
        judge = db.scalar(select(Judge).where(Judge.project_id == training_round.project_id))
        if judge is None:
            raise NoJudge("this round is labelled by the project's AI judge, but the project has no judge; set one up")
        cfg = dataclasses.replace(judging.settings_of(judge), mode=JudgeMode.slot)
        run_id = _round_run(db, judge=judge, round_id=round_id, token=token)
        task_ids = list(
            db.scalars(
                select(RankingTask.id)
                .where(RankingTask.round_id == round_id, RankingTask.status == TaskStatus.open)
                .order_by(RankingTask.id)
            )
        )
        name = f"{judge.name} v{judge.version}"
    progress = Reporter(round_id, S.judging)
    try:
        counts = judging.judge_tasks(
            db_session, run_id, token, cfg, task_ids, on_task=lambda done, total: progress(done, total, "judging")
        )
    except Exception as exc:
        _fail_run(run_id, token, exc)
        raise
    stored = counts["judged"] + counts["already"]
    if not stored and not _any_ranking(round_id):
        raise NoJudge(
            f"the judge stored no ranking for the round's {len(task_ids)} tasks "
            f"({counts['undecided']} undecided, {counts['unparseable']} unparseable, {counts['no_slot']} full)"
        )
    with db_session() as db:
        training_round = db.get_one(TrainingRound, round_id)
        summary = {"judge": name, "run_id": run_id, "tasks": len(task_ids), **counts}
        db.execute(
            update(TrainingRound)
            .where(TrainingRound.id == round_id)
            .values(metrics={**(training_round.metrics or {}), "judging": summary})
        )
        lifecycle.log_event(
            db,
            round_id=round_id,
            stage=S.judging,
            kind="metric",
            data=summary,
            message=f"{name} ranked {counts['judged']} of {len(task_ids)} tasks "
            f"({counts['undecided']} undecided, {counts['unparseable']} unparseable, {counts['no_slot']} already full)",
        )
        lifecycle.begin_training(db, training_round=training_round, reason=f"AI labels by {name}", source=(S.judging,))
    return {"round_id": round_id, **summary}


def _round_run(db, *, judge: Judge, round_id: int, token: str) -> int:
    """The round's judge run for the judge's current version (a retry goes on with it), claimed
    with the round step's token so a stale delivery's writes are refused."""
    run = db.scalar(
        select(JudgeRun)
        .where(JudgeRun.round_id == round_id, JudgeRun.user_id == judge.user_id)
        .order_by(JudgeRun.id.desc())
        .limit(1)
    )
    if run is None:
        run = JudgeRun(judge_id=judge.id, project_id=judge.project_id, user_id=judge.user_id, round_id=round_id)
        db.add(run)
    run.status = JudgeRunStatus.running
    run.claim_token = token
    run.heartbeat_at = run.started_at = utcnow()
    run.error_message = run.finished_at = None
    db.flush()
    return run.id


def _fail_run(run_id: int, token: str, exc: BaseException) -> None:
    with db_session() as db:
        db.execute(
            update(JudgeRun)
            .where(JudgeRun.id == run_id, JudgeRun.claim_token == token)
            .values(
                status=JudgeRunStatus.failed, error_message=f"{type(exc).__name__}: {exc}"[:4000], finished_at=utcnow()
            )
        )


def _any_ranking(round_id: int) -> bool:
    """Whether the round's tasks hold any ranking (an earlier run's, or a human's)."""
    with db_session(read_only=True) as db:
        return bool(
            db.scalar(
                select(RankingTask.id).where(RankingTask.round_id == round_id, RankingTask.rankings_count > 0).limit(1)
            )
        )
