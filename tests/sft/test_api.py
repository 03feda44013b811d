"""The SFT API and service without a worker: validation naming the field, refusals, the
demonstration filter, enqueue-after-commit, cancel and retry, on SQLite and Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.models.jobs import TrainingJob
from app.rounds.queue import celery_for
from tests.factories import make_project, make_user
from tests.rounds.helpers import make_version
from tests.sft.helpers import add_demonstrations


def queued(settings, queue: str = "train") -> int:
    with celery_for(settings).connection_for_read() as conn:
        return conn.default_channel.queue_declare(
            queue=queue, passive=False, durable=True, auto_delete=False
        ).message_count


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"sft": {"learning_rate": 5}}, "body.sft.learning_rate", "less than 1"),
        ({"sft": {"epochs": 0}}, "body.sft.epochs", "greater than or equal to 1"),
        ({"sft": {"peft_method": "adapterz"}}, "body.sft.peft_method", "'lora', 'dora'"),
        ({"sft": {"mode": "full", "peft_method": "ia3"}}, "body.sft", "peft_method 'ia3' is an adapter method"),
        ({"sft": {"lr": 0.1}}, "body.sft.lr", "Extra inputs are not permitted"),
        ({"demonstrations": {"statuses": ["maybe"]}}, "body.demonstrations.statuses.0", "'accepted'"),
    ],
)
def test_bad_hyper_parameters_get_a_422_naming_the_field(db, client, admin_token, body, field, words):
    project = make_project(db)
    add_demonstrations(db, project, 2)
    response = client.post(f"/api/v1/projects/{project.id}/sft-runs", json=body, headers=auth(admin_token))
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert f"{field}: " in message and words in message, message
    assert db.query(TrainingJob).count() == 0


def test_launch_selects_demonstrations_and_enqueues_after_commit(db, client, admin_token, settings):
    project, other = make_project(db), make_project(db)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    old = datetime.now(UTC) - timedelta(days=3)
    add_demonstrations(db, project, 3, author=alice, created_at=old, tag="a")
    add_demonstrations(db, project, 2, author=bob, tag="b")
    add_demonstrations(db, project, 2, author=bob, status="rejected", tag="r")
    add_demonstrations(db, project, 1, source="upload", tag="u")
    before = queued(settings)

    response = client.post(f"/api/v1/projects/{project.id}/sft-runs", json={}, headers=auth(admin_token))
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "pending" and job["kind"] == "sft" and job["demonstrations"] == 6
    assert job["config"]["sft"]["learning_rate"] == 2e-4  # the defaults are stored with the run
    assert queued(settings) == before + 1

    def selected(filter_: dict) -> int:
        answer = client.post(
            f"/api/v1/projects/{project.id}/sft-runs", json={"demonstrations": filter_}, headers=auth(admin_token)
        )
        assert answer.status_code == 201, answer.text
        return answer.json()["demonstrations"]

    assert selected({"labeler_ids": [bob.id]}) == 2
    assert selected({"source": "upload"}) == 1
    assert selected({"created_after": (old + timedelta(days=1)).isoformat()}) == 3
    assert selected({"statuses": ["accepted", "rejected"], "limit": 7}) == 7

    # Refusals name the field and store nothing.
    count = db.query(TrainingJob).count()
    none = client.post(
        f"/api/v1/projects/{project.id}/sft-runs",
        json={"demonstrations": {"labeler_ids": [10**6]}},
        headers=auth(admin_token),
    )
    assert none.status_code == 422 and none.json()["detail"].startswith("demonstrations: "), none.text
    foreign = make_version(db, other, kind="base")
    wrong = client.post(
        f"/api/v1/projects/{project.id}/sft-runs", json={"start_model_id": foreign.id}, headers=auth(admin_token)
    )
    assert wrong.status_code == 422 and wrong.json()["detail"].startswith("start_model_id: "), wrong.text
    reward = make_version(db, project, kind="reward")
    wrong = client.post(
        f"/api/v1/projects/{project.id}/sft-runs", json={"start_model_id": reward.id}, headers=auth(admin_token)
    )
    assert wrong.status_code == 422 and "reward model" in wrong.json()["detail"], wrong.text
    assert db.query(TrainingJob).count() == count


def test_cancel_and_retry(db, client, admin_token, settings):
    project = make_project(db)
    add_demonstrations(db, project, 2)
    job = client.post(f"/api/v1/projects/{project.id}/sft-runs", json={}, headers=auth(admin_token)).json()
    retry_early = client.post(f"/api/v1/sft-runs/{job['id']}/retry", headers=auth(admin_token))
    assert retry_early.status_code == 200 and retry_early.json()["status"] == "pending"

    cancelled = client.post(f"/api/v1/sft-runs/{job['id']}/cancel", headers=auth(admin_token))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"/api/v1/sft-runs/{job['id']}/cancel", headers=auth(admin_token))
    assert again.status_code == 409 and again.json()["detail"].startswith("status: ")

    before = queued(settings)
    retried = client.post(f"/api/v1/sft-runs/{job['id']}/retry", headers=auth(admin_token))
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert queued(settings) == before + 1
    status = client.get(f"/api/v1/sft-runs/{job['id']}?events_after=0", headers=auth(admin_token)).json()
    assert [e["message"] for e in status["events"]][-2:] == ["cancelled while pending", "retry after cancelled"]
    assert client.get("/api/v1/sft-runs/999999", headers=auth(admin_token)).status_code == 404
    listed = client.get(f"/api/v1/projects/{project.id}/sft-runs", headers=auth(admin_token)).json()
    assert [j["id"] for j in listed] == [job["id"]]


def test_model_versions_name_the_run_that_trained_them(db, client, admin_token):
    from tests.sft.helpers import populate_jobs

    project = make_project(db)
    add_demonstrations(db, project, 1)
    job = populate_jobs(db, project, start=make_version(db, project, kind="base"))
    versions = client.get(f"/api/v1/projects/{project.id}/models", headers=auth(admin_token)).json()
    assert {(v["kind"], v["job_id"]) for v in versions} == {("base", None), ("sft", job.id)}
