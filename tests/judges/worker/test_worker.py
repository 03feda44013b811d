"""A judge run launched over the API runs in a real Celery worker (SQL transport on SQLite,
Redis on Postgres) and stores the judge's rankings; the worker reaches the real OpenAI-compatible
test server with the API key from its own environment."""

from __future__ import annotations

from sqlalchemy import select

from app.models import Ranking
from app.models.judges import JudgeRun
from tests.factories import make_project, make_task, make_token
from tests.judges.test_judging import TEXTS, _best_first, _right
from tests.loop.helpers import wait_for
from tests.openai_server import OpenAIServer


def _run(db, run_id: int) -> JudgeRun:
    db.commit()
    return db.get_one(JudgeRun, run_id, populate_existing=True)


def test_a_launched_run_is_judged_by_the_worker(db, client, start_worker):
    token = {"Authorization": f"Bearer {make_token(db, 'admin')}"}
    project = make_project(db)
    tasks = [make_task(db, project, texts=TEXTS) for _ in range(2)]
    with OpenAIServer(model_name="j", api_key="sk-worker", reply=_best_first) as server:
        body = {"kind": "endpoint", "endpoint_url": server.url, "endpoint_model": "j"}
        body["api_key_env"] = "RANKLAB_JUDGE_KEY"  # the worker's variable, set when it starts
        judge = client.put(f"/api/v1/projects/{project.id}/judge", json=body, headers=token).json()
        run = client.post(f"/api/v1/projects/{project.id}/judge/runs", headers=token).json()
        worker = start_worker(RANKLAB_JUDGE_KEY="sk-worker")
        finished = lambda: _run(db, run["id"]).status in ("done", "failed")  # noqa: E731
        wait_for(finished, timeout=120, what="the judge run", worker=worker)
    done = _run(db, run["id"])
    assert done.status == "done", (done.error_message, worker.output())
    assert (done.task_ids, done.judged, done.calls) == (2, 2, 4)
    stored = db.execute(select(Ranking.task_id, Ranking.groups).where(Ranking.user_id == judge["user_id"])).all()
    assert sorted(stored) == sorted((t.id, _right(t)) for t in tasks)
    assert "sk-worker" not in worker.output()
