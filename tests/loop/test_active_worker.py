"""The admin's "refresh priorities now" through a real Celery worker (SQLite database, kombu's
SQL transport): the worker scores the open tasks with the project's newest reward model (a tiny
random-weight one) and the next labeler gets the constructed ambiguous task first; the project
page says when and from which model; a later upload's task is scored by the refresh it asks for.
The scoring itself: test_active_order.py."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.models import Project, RankingTask, Role
from tests.admin.helpers import admin_client, fresh
from tests.factories import make_user
from tests.labeling.helpers import next_view
from tests.loop.helpers import Api, wait_for
from tests.loop.test_active_order import CAT, GOOD, ambiguous_project
from tests.rounds.helpers import make_version


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_refresh_now_runs_on_the_worker_and_the_handout_follows(db, client, admin_token, start_worker, tiny_model_dir):
    project, _clear, ambiguous, _other = ambiguous_project(db)
    api = Api(client, admin_token)
    refused = client.post(f"/api/v1/projects/{project.id}/priorities/refresh", headers=api.headers)
    assert refused.status_code == 409 and "reward_model" in refused.json()["detail"]
    version = make_version(db, project, kind="reward", name="round 0 reward model", artifact_path=str(tiny_model_dir))
    worker = start_worker(RANKLAB_ACTIVE_MIN_RANKED_TASKS="1")

    queued = api.post(f"/api/v1/projects/{project.id}/priorities/refresh", expect=202)

    assert queued == {"queued": True, "reward_model_id": version.id}

    def refreshed():
        fresh(db)
        return db.get(Project, project.id).priorities_refreshed_at is not None

    wait_for(refreshed, timeout=120, what="the worker's refresh", worker=worker)
    stored = db.get(Project, project.id)
    assert (stored.priority_model_id, stored.priority_method, stored.priority_stats["tasks"]) == (
        version.id,
        "uncertainty",
        4,
    )
    labeler = make_user(db, role=Role.labeler, projects=[stored])
    assert next_view(db, labeler, stored).task_id == ambiguous.id
    admin_client(client, db)
    page = client.get(f"/admin/projects/{project.id}").text
    assert "round 0 reward model" in page and "4 tasks scored on 12 rankings" in page

    # An upload under the active order asks for a refresh that names its task; the worker scores it.
    line = {"external_id": "late", "text": "a late prompt", "completions": [{"text": CAT}, {"text": GOOD}]}
    uploaded = client.post(
        f"/api/v1/projects/{project.id}/completions/jsonl",
        content=(json.dumps(line) + "\n").encode(),
        headers={**api.headers, "Content-Type": "application/x-ndjson"},
    )
    assert uploaded.status_code == 200 and uploaded.json()["created"] == 1, uploaded.text
    fresh(db)
    late = db.scalar(select(func.max(RankingTask.id)))

    def late_scored():
        fresh(db)
        return db.get(RankingTask, late).handout_priority is not None

    wait_for(late_scored, timeout=120, what="the refresh after the upload", worker=worker)
    assert db.get(Project, project.id).priority_stats["newest_task_id"] == late
