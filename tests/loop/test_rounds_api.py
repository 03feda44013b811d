"""The rounds API and service without a worker: validation, refusals, enqueue-after-commit, and
state changes an admin makes (start, cancel, retry), on SQLite and Postgres."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.main import create_app
from app.models import ModelVersion, RoundPrompt, TrainingRound
from app.rounds import service
from app.rounds.queue import celery_for, pending
from app.rounds.schemas import RoundConfigIn
from tests.factories import make_project, make_ranking, make_task, make_token, make_user
from tests.loop.helpers import Api


def queued(settings, queue: str) -> int:
    """Messages waiting in a broker queue (the embedded SQL transport or Redis)."""
    with celery_for(settings).connection_for_read() as conn:
        return conn.default_channel.queue_declare(
            queue=queue, passive=False, durable=True, auto_delete=False
        ).message_count


@pytest.fixture
def project_with_prompts(db, client, admin_token):
    project = make_project(db, k_min=4, k_max=6)
    prompts = [{"external_id": f"q{i}", "text": f"question {i}"} for i in range(5)]
    response = client.post(
        f"/api/v1/projects/{project.id}/prompts",
        json={"prompts": prompts},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert response.status_code == 200, response.text
    return project


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"k": 0}, "body.k", "greater than or equal to 1"),
        ({"reward": {"loss": "mse"}}, "body.reward.loss", "'kwise' or 'plackett_luce'"),
        ({"ppo": {"stepz": 3}}, "body.ppo.stepz", "Extra inputs are not permitted"),
        ({"ppo": {"batch_size": 4, "minibatch_size": 8}}, "body.ppo", "minibatch_size (8) must be ≤ batch_size (4)"),
        ({"prompts": {"validation_fraction": 0.9}}, "body.prompts.validation_fraction", "less than or equal to 0.5"),
        ({"labeling": {"min_coverage": "all"}}, "body.labeling.min_coverage", "valid number"),
    ],
)
def test_bad_settings_get_a_422_naming_the_field(client, admin_token, project_with_prompts, body, field, words):
    response = client.post(
        f"/api/v1/projects/{project_with_prompts.id}/rounds",
        json=body,
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert response.status_code == 422
    assert f"{field}: " in response.json()["message"] and words in response.json()["message"]


def test_k_outside_the_projects_range_is_refused_naming_k(client, admin_token, project_with_prompts):
    response = client.post(
        f"/api/v1/projects/{project_with_prompts.id}/rounds",
        json={"k": 3},  # the schema takes 1–9 (a Likert project may show one completion); this project wants 4–6
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "k: must be within the project's range 4–6, got 3"


def test_launch_stores_the_round_and_enqueues_generation_after_commit(
    db, client, admin_token, settings, project_with_prompts
):
    api = Api(client, admin_token)
    before = queued(settings, "generate")
    config = {"k": 6, "prompts": {"count": 4, "validation_fraction": 0.25}, "generation": {"prompts_per_task": 3}}
    round0 = api.post(f"/api/v1/projects/{project_with_prompts.id}/rounds", config, expect=201)
    assert (round0["status"], round0["number"], round0["config"]["k"]) == ("pending", 0, 6)
    assert round0["config"]["reward"]["epochs"] == 1 and round0["config"]["labeling"]["auto_start"] is False
    assert queued(settings, "generate") - before == 2  # 4 prompts in jobs of 3
    batches = db.execute(
        select(RoundPrompt.batch, func.count())
        .where(RoundPrompt.round_id == round0["id"])
        .group_by(RoundPrompt.batch)
        .order_by(RoundPrompt.batch)
    ).all()
    assert [tuple(b) for b in batches] == [(0, 3), (1, 1)]
    base = db.get(ModelVersion, round0["policy_in_id"])
    assert (base.kind, base.base_model) == ("base", "bundled:SmolLM2-135M-Instruct")
    events = api.round(round0["id"], events_after=0)["events"]
    assert events[0]["message"].startswith("round 0 launched by an API token: 4 prompts × K=6")

    # One active round per project; k must fit the project's range.
    conflict = client.post(f"/api/v1/projects/{project_with_prompts.id}/rounds", json={}, headers=api.headers)
    assert conflict.status_code == 409 and "round 0 is still pending" in conflict.json()["detail"]


def test_k_outside_the_project_range_and_no_prompts_are_refused(db, client, admin_token, project_with_prompts):
    api = Api(client, admin_token)
    wide = api.post(f"/api/v1/projects/{project_with_prompts.id}/rounds", {"k": 9}, expect=422)
    assert wide["detail"] == "k: must be within the project's range 4–6, got 9"
    empty = make_project(db)
    refused = api.post(f"/api/v1/projects/{empty.id}/rounds", {}, expect=422)
    assert refused["detail"] == "prompts: the project has no unused prompts; upload prompts first"
    assert db.scalar(select(func.count()).select_from(TrainingRound)) == 0


def test_an_unreachable_queue_refuses_the_launch_and_stores_nothing(db, settings, project_with_prompts):
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0", "result_backend": ""})
    app = create_app(broken)
    try:
        with TestClient(app) as client:
            token = make_token(db, "admin")
            response = client.post(
                f"/api/v1/projects/{project_with_prompts.id}/rounds",
                json={},
                headers={"Authorization": f"Bearer {token}"},
            )
    finally:
        app.state.engine.dispose()
    assert response.status_code == 503
    assert response.json()["detail"].startswith("queue: task queue unreachable — is Redis running?")
    db.rollback()
    for table in (TrainingRound, RoundPrompt, ModelVersion):
        assert db.scalar(select(func.count()).select_from(table)) == 0


def test_a_rolled_back_session_enqueues_nothing(db, settings, project_with_prompts):
    db.info["settings"] = settings
    before = queued(settings, "generate")
    round0 = service.launch_round(db, project=project_with_prompts, config=RoundConfigIn(), user=None)
    assert [m.name for m in pending(db)] == ["ranklab.round.generate_batch"]
    db.rollback()
    assert pending(db) == [] and queued(settings, "generate") == before
    assert db.scalar(select(func.count()).select_from(TrainingRound)) == 0
    assert round0.id is not None  # it existed only inside the rolled-back transaction


def _labeling_round(db, client, api, project, *, threshold: dict) -> tuple[dict, list]:
    """A launched round moved to labeling with two tasks, as the generation step would leave it."""
    round0 = api.post(
        f"/api/v1/projects/{project.id}/rounds", {"labeling": threshold, "prompts": {"count": 2}}, expect=201
    )
    tasks = [make_task(db, project) for _ in range(2)]
    for task in tasks:
        task.round_id = round0["id"]
    db.execute(update(TrainingRound).where(TrainingRound.id == round0["id"]).values(status="labeling"))
    db.commit()
    return round0, tasks


def test_training_waits_for_the_threshold_unless_forced(db, client, admin_token, settings, project_with_prompts):
    api = Api(client, admin_token)
    round0, tasks = _labeling_round(db, client, api, project_with_prompts, threshold={"min_coverage": 1.0})
    labeler = make_user(db, projects=[project_with_prompts])
    make_ranking(db, tasks[0], labeler, [[c] for c in tasks[0].completion_ids])
    status = api.round(round0["id"])
    assert status["labeling"] == {"tasks": 2, "rankings": 1, "wanted": 2, "coverage": 0.5, "threshold_met": False}

    refused = api.post(f"/api/v1/rounds/{round0['id']}/start", expect=409)
    assert refused["detail"] == (
        "labeling: threshold not reached: 1 rankings (need 1), coverage 50% (need 100%); label more or force the start"
    )
    before = queued(settings, "train")
    started = api.post(f"/api/v1/rounds/{round0['id']}/start", {"force": True})
    assert started["status"] == "training_reward" and started["started_at"] is not None
    assert queued(settings, "train") - before == 1
    api.post(f"/api/v1/rounds/{round0['id']}/start", expect=409)  # only from labeling


def test_cancel_and_retry_follow_the_state_machine(db, client, admin_token, project_with_prompts):
    api = Api(client, admin_token)
    round0, _ = _labeling_round(db, client, api, project_with_prompts, threshold={})
    refused = api.post(f"/api/v1/rounds/{round0['id']}/retry", expect=409)
    assert refused["detail"].startswith("status: round 0 is labeling; only a failed or running round")
    cancelled = api.post(f"/api/v1/rounds/{round0['id']}/cancel")
    assert (cancelled["status"], cancelled["current_step"]) == ("cancelled", "cancelled during labeling")
    again = api.post(f"/api/v1/rounds/{round0['id']}/cancel", expect=409)
    assert again["detail"] == "status: round 0 is cancelled and cannot be cancelled"
    # The project is free for a new round, which takes only prompts no round used yet.
    round1 = api.post(
        f"/api/v1/projects/{project_with_prompts.id}/rounds", {"prompts": {"all_unlabeled": True}}, expect=201
    )
    assert round1["number"] == 1
    db.rollback()
    taken = {
        rid: set(db.scalars(select(RoundPrompt.prompt_id).where(RoundPrompt.round_id == rid)))
        for rid in (round0["id"], round1["id"])
    }
    assert (len(taken[round0["id"]]), len(taken[round1["id"]])) == (2, 3)
    assert not taken[round0["id"]] & taken[round1["id"]]


def test_round_api_needs_an_admin_token_and_names_missing_rounds(db, client, admin_token, project_with_prompts):
    upload_only = make_token(db, "upload")
    response = client.get("/api/v1/rounds/1", headers={"Authorization": f"Bearer {upload_only}"})
    assert response.status_code == 403 and response.json()["detail"] == "This token lacks the 'admin' scope."
    missing = client.get("/api/v1/rounds/999", headers={"Authorization": f"Bearer {admin_token}"})
    assert missing.status_code == 404 and missing.json()["detail"] == "round_id: no training round 999"
    assert Api(client, admin_token).get(f"/api/v1/projects/{project_with_prompts.id}/models") == []


def test_evaluating_is_a_running_step_between_ppo_and_the_next_round(
    db, client, admin_token, settings, project_with_prompts
):
    """The evaluating step (worker/loop/evaluation.py) runs on the evaluate queue; retry re-enqueues
    it while running and resumes a failure there; the round page names it; cancel stops it."""
    from app.rounds import lifecycle
    from worker.celery_app import EVALUATE_QUEUE, EVALUATE_ROUND

    assert lifecycle.STEP_TASKS["evaluating"] == (EVALUATE_ROUND, EVALUATE_QUEUE)
    assert "evaluating" in lifecycle.RUNNING and "evaluating" in lifecycle.ACTIVE
    api = Api(client, admin_token)
    round0, _ = _labeling_round(db, client, api, project_with_prompts, threshold={})
    db.execute(update(TrainingRound).where(TrainingRound.id == round0["id"]).values(status="evaluating"))
    db.commit()
    before = queued(settings, EVALUATE_QUEUE)
    assert api.post(f"/api/v1/rounds/{round0['id']}/retry")["status"] == "evaluating"
    assert queued(settings, EVALUATE_QUEUE) - before == 1
    # a transition moves only a round in one of its source statuses (a stale PPO delivery cannot)
    assert not lifecycle.transition(db, round_id=round0["id"], source=["training_policy"], target="evaluating")
    failed = lifecycle.transition(
        db, round_id=round0["id"], source=["evaluating"], target="failed", error_step="evaluating"
    )
    db.commit()
    assert failed and api.round(round0["id"])["error_step"] == "evaluating"
    resumed = api.post(f"/api/v1/rounds/{round0['id']}/retry")
    assert (resumed["status"], resumed["error_step"]) == ("evaluating", None)
    assert queued(settings, EVALUATE_QUEUE) - before == 2
    cancelled = api.post(f"/api/v1/rounds/{round0['id']}/cancel")
    assert (cancelled["status"], cancelled["current_step"]) == ("cancelled", "cancelled during evaluating")
