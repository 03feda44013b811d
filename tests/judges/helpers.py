"""Helpers for the judge tests."""

from __future__ import annotations

from sqlalchemy import select

from app.judges import service
from app.models import Project, Ranking, RankingTask
from app.models.judges import JudgeRun, JudgeVerdict


def set_judge(db, project: Project, **fields):
    data = {
        "name": "tiny",
        "kind": "local",
        "model_path": "",
        "endpoint_url": "",
        "endpoint_model": "",
        "api_key_env": "",
        "prompt_template": None,
        "orders": 2,
        "mode": "compare",
        "show_suggestion": False,
        "max_attempts": 3,
        "requests_per_minute": 100000.0,
        **fields,
    }
    judge = service.save_judge(db, project=project, data=data)
    db.commit()
    return judge


def new_run(db, judge) -> int:
    """A pending run as launch_run makes one (the queue is not needed: the test runs the body)."""
    run = JudgeRun(judge_id=judge.id, project_id=judge.project_id, user_id=judge.user_id)
    db.add(run)
    db.commit()
    return run.id


def fresh(db, model, id_):
    db.commit()  # ends the read snapshot
    return db.get_one(model, id_, populate_existing=True)


def ai_rankings(db, user_id: int) -> list[Ranking]:
    db.commit()
    return list(db.scalars(select(Ranking).where(Ranking.user_id == user_id).order_by(Ranking.task_id)))


def verdicts(db, user_id: int) -> dict[int, str]:
    db.commit()
    rows = db.execute(select(JudgeVerdict.task_id, JudgeVerdict.outcome).where(JudgeVerdict.user_id == user_id))
    return dict(rows.all())


def task_counts(db, task_id: int) -> tuple[int, int, str]:
    task = fresh(db, RankingTask, task_id)
    return task.slots_taken, task.rankings_count, task.status


def populate_judge_rows(db, project: Project, *, task: RankingTask) -> None:
    """Rows for every judge table (the migration and backup tests): a judge with its AI labeler
    account, a finished run, and its verdict on `task` with the compare-only ranking it stored."""
    from app.judges.store import STORED, record_verdict

    judge = service.save_judge(db, project=project, data={"name": "critic ✓", "kind": "local", "orders": 2})
    run = JudgeRun(judge_id=judge.id, project_id=project.id, user_id=judge.user_id, status="done", judged=1, calls=2)
    db.add(run)
    db.flush()
    ids = task.completion_ids
    record_verdict(
        db,
        run_id=run.id,
        user_id=judge.user_id,
        task_id=task.id,
        mode="compare",
        groups=[[c] for c in ids],
        outcome=STORED,
        shown=ids,
        orders=";".join([",".join(map(str, ids))] * 2),
    )
    db.commit()
