"""Labeler loops run in threads and in separate processes by the race tests.

Every task a labeler was handed and every error it met are reported (an error is a failure:
nothing may be swallowed)."""

from __future__ import annotations

import threading
import traceback

from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine
from app.labeling import service, submission
from app.labeling.schemas import RankingIn, SubmissionIn
from app.labeling.task_types import PAIRWISE_EVAL
from app.models import Project, User

Report = tuple[int, list[int], list[str]]  # user id, task ids handed to them, errors


def take_one(sessions: sessionmaker[Session], *, user_id: int, project_id: int, start: threading.Barrier) -> Report:
    """Asks once for a task and keeps the lease (racing for the last slots)."""
    with sessions() as db:
        user, project = db.get(User, user_id), db.get(Project, project_id)
        db.commit()
        start.wait()
        try:
            view = service.current_task(db, user=user, project=project, sweep_every=3600)
            db.commit()
        except Exception:
            return user_id, [], [traceback.format_exc()]
    return user_id, [] if view is None else [view.task_id], []


def label_until_empty(
    sessions: sessionmaker[Session], *, user_id: int, project_id: int, start: threading.Barrier | None = None
) -> Report:
    """Next task, submit, repeat until nothing is left."""
    handed: list[int] = []
    with sessions() as db:
        user, project = db.get(User, user_id), db.get(Project, project_id)
        db.commit()
        if start is not None:
            start.wait()
        try:
            while (view := service.current_task(db, user=user, project=project, sweep_every=3600)) is not None:
                db.commit()
                handed.append(view.task_id)
                data: RankingIn | SubmissionIn = (
                    SubmissionIn(verdict="B")
                    if view.kind == PAIRWISE_EVAL
                    else RankingIn(ranking=[[c.id] for c in view.completions])
                )
                submission.submit_answer(
                    db, user=user, project=project, assignment_id=view.assignment_id, data=data, sweep_every=3600
                )
                db.commit()
            db.commit()
        except Exception:
            db.rollback()
            return user_id, handed, [traceback.format_exc()]
    return user_id, handed, []


def process_main(url: str, user_ids: list[int], project_id: int, start, results) -> None:
    """One OS process, one thread per labeler; puts a Report per labeler on `results`."""
    engine = make_engine(url)
    sessions = sessionmaker(bind=engine, expire_on_commit=False)

    def run(user_id: int) -> None:
        try:
            results.put(label_until_empty(sessions, user_id=user_id, project_id=project_id, start=start))
        except Exception:
            results.put((user_id, [], [traceback.format_exc()]))

    # `start` is shared by every labeler thread of every process: all have connected and loaded
    # their user before anyone asks for a task. A barrier per process let the first process to
    # get going take every slot while the others were still connecting (a flaky "no race").
    threads = [threading.Thread(target=run, args=(uid,)) for uid in user_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()
