"""A judge run whose worker is killed mid-run (SIGKILL, real Celery workers): the sweep
(worker/loop/recovery.py) sends it again, a new worker finishes it, and every task is judged
exactly once. SQLite only (13 s; Postgres + Redis passes too, 20 s more): kombu's SQL transport
never redelivers a lost message, so only the sweep can have sent it again."""

from __future__ import annotations

import re
import threading

import pytest
from sqlalchemy import select

from app.models.judges import JudgeRun, JudgeVerdict
from tests.factories import make_project, make_task, make_token
from tests.judges.helpers import ai_rankings, fresh, set_judge
from tests.loop.conftest import settings, start_worker, workers  # noqa: F401  (a broker the workers share)
from tests.loop.helpers import wait_for
from tests.openai_server import OpenAIServer

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_a_judge_run_whose_worker_died_is_sent_again_and_finished(app, db, client, start_worker):  # noqa: F811
    project = make_project(db)
    tasks = [make_task(db, project, texts=["good", "bad"], prompt_text=f"task-{i}") for i in range(3)]
    stalled, release = threading.Event(), threading.Event()

    def reply(messages, _i) -> str:
        text = messages[-1]["content"]
        if "task-1" in text and not release.is_set():
            stalled.set()  # the first worker is on the second task: hold its call until it is killed
            release.wait(60)
        shown = re.findall(r"### Answer (\d)\n(\w+)", text)
        return "Ranking: " + " > ".join(n for n, word in sorted(shown, key=lambda s: s[1] != "good"))

    with OpenAIServer(model_name="judge", reply=reply) as server:
        judge = set_judge(db, project, kind="endpoint", endpoint_url=server.url, endpoint_model="judge", orders=1)
        launched = client.post(
            f"/api/v1/projects/{project.id}/judge/runs",
            headers={"Authorization": f"Bearer {make_token(db, 'admin')}"},
        )
        assert launched.status_code == 201, launched.text
        run_id = launched.json()["id"]

        first = start_worker()
        wait_for(stalled.is_set, timeout=60, what="the first worker on the second task", worker=first)
        first.kill()
        release.set()
        killed = fresh(db, JudgeRun, run_id)
        assert (killed.status, killed.judged) == ("running", 1) and killed.claim_token is not None

        second = start_worker()  # its sweep finds the heartbeat stale (3 s in these settings)
        wait_for(
            lambda: fresh(db, JudgeRun, run_id).status == "done", timeout=60, what="the run sent again", worker=second
        )

    run = fresh(db, JudgeRun, run_id)
    assert (run.already, run.judged, run.error_message) == (1, 2, None)  # the new delivery skipped task 0
    verdicts = db.scalars(select(JudgeVerdict.task_id).where(JudgeVerdict.user_id == judge.user_id)).all()
    assert sorted(verdicts) == [t.id for t in tasks]  # each task once
    good_first = [[[t.completion_ids[0]], [t.completion_ids[1]]] for t in tasks]
    assert [r.groups for r in ai_rankings(db, judge.user_id)] == good_first
