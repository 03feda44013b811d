"""Many labelers at once, each with its own session (threads), and in separate OS processes:
zero duplicate handouts, zero rankings over overlap, every slot handed out exactly once."""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from app.models import Assignment, HandoutOrder, Ranking, RankingTask
from tests.factories import make_eval_task, make_project, make_task
from tests.labeling.helpers import fresh, make_labelers
from tests.labeling.race_worker import label_until_empty, process_main, take_one

LABELERS = 24


def _check_every_slot_handed_exactly_once(db, reports, *, tasks, overlap):
    errors = [e for _, _, errs in reports for e in errs]
    assert not errors, errors[0]
    handouts = [(task_id, user_id) for user_id, handed, _ in reports for task_id in handed]
    assert len(handouts) == len(set(handouts)), "a labeler was handed the same task twice"
    per_task = Counter(task_id for task_id, _ in handouts)
    assert per_task == {t.id: overlap for t in tasks}, "some task was handed out more or less than overlap times"

    fresh(db)
    rankings = Counter(db.scalars(select(Ranking.task_id)))
    assert rankings == per_task
    assert db.scalar(select(func.count()).select_from(Assignment)) == len(handouts)
    for task in db.scalars(select(RankingTask).where(RankingTask.id.in_([t.id for t in tasks]))):
        assert (task.slots_taken, task.rankings_count, task.status) == (overlap, overlap, "complete")


@pytest.mark.parametrize(
    ("overlap", "queue"), [(1, "ranking"), (2, "ranking"), (1, "mixed"), (2, "mixed"), (2, "by_priority")]
)
def test_threads_labeling_at_once_share_no_slot(app, db, overlap, queue):
    """`mixed`: every third task a blind pairwise evaluation, judged with a verdict. `by_priority`:
    an active handout order over shuffled priorities, every fourth task unscored."""
    project = make_project(db, overlap=overlap)
    tasks = [
        make_eval_task(db, project) if queue == "mixed" and i % 3 == 2 else make_task(db, project) for i in range(30)
    ]
    if queue == "by_priority":
        project.handout_order = HandoutOrder.uncertainty
        for task, priority in zip(tasks, random.Random(0).sample(range(30), 30), strict=True):
            task.handout_priority = None if priority % 4 == 0 else float(priority)
        db.commit()
    users = make_labelers(db, project, LABELERS)
    sessions = sessionmaker(bind=app.state.engine, expire_on_commit=False)
    start = threading.Barrier(len(users))

    with ThreadPoolExecutor(len(users)) as pool:
        reports = list(
            pool.map(lambda u: label_until_empty(sessions, user_id=u.id, project_id=project.id, start=start), users)
        )
    _check_every_slot_handed_exactly_once(db, reports, tasks=tasks, overlap=overlap)
    assert sum(1 for _, handed, _ in reports if handed) > 1, "the race never happened: one thread did everything"


@pytest.mark.parametrize("overlap", [1, 2])
def test_racing_for_the_last_slots_only_overlap_labelers_win(app, db, overlap):
    project = make_project(db, overlap=overlap)
    task = make_task(db, project)
    users = make_labelers(db, project, 32)
    sessions = sessionmaker(bind=app.state.engine, expire_on_commit=False)
    start = threading.Barrier(len(users))

    with ThreadPoolExecutor(len(users)) as pool:
        reports = list(pool.map(lambda u: take_one(sessions, user_id=u.id, project_id=project.id, start=start), users))
    errors = [e for _, _, errs in reports for e in errs]
    assert not errors, errors[0]
    winners = [user_id for user_id, handed, _ in reports if handed == [task.id]]
    assert len(winners) == overlap
    fresh(db)
    assert db.get(RankingTask, task.id).slots_taken == overlap
    assert sorted(db.scalars(select(Assignment.user_id))) == sorted(winners)


def test_processes_labeling_at_once_share_no_slot(db_url, db):
    """Four OS processes (as with several web workers), four labeler threads each."""
    overlap = 2
    project = make_project(db, overlap=overlap)
    tasks = [make_task(db, project) for _ in range(24)]
    users = make_labelers(db, project, 16)
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(len(users)), ctx.Queue()
    groups = [[u.id for u in users[i::4]] for i in range(4)]
    processes = [ctx.Process(target=process_main, args=(db_url, ids, project.id, start, results)) for ids in groups]
    for process in processes:
        process.start()
    reports = [results.get(timeout=120) for _ in users]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    _check_every_slot_handed_exactly_once(db, reports, tasks=tasks, overlap=overlap)
    busy = {uid for uid, handed, _ in reports if handed}
    assert sum(1 for ids in groups if busy & set(ids)) > 1, "the race never happened: one process did everything"
