"""Failure, retry, cancel and a worker killed mid-step, through a real Celery worker."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.models import ModelVersion, RoundEvent, TrainingRound
from tests.loop.helpers import Api, label_everything, wait_for
from tests.loop.test_loop import tiny_config

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def launch_and_label(api: Api, app, db, project, labelers, config: dict, worker) -> dict:
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", config, expect=201)
    api.wait_status(round0["id"], "labeling", worker=worker)
    label_everything(app, db, labelers, project.id)
    return round0


def policy_progress(db, round_id: int) -> int:
    """How many PPO progress reports the worker has written for the round."""
    db.rollback()
    return db.scalar(select(func.count()).select_from(RoundEvent).where(
        RoundEvent.round_id == round_id, RoundEvent.stage == "training_policy", RoundEvent.kind == "log",
        RoundEvent.step >= 1))


def versions(db, round_id: int, kind: str) -> int:
    db.rollback()
    return db.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.round_id == round_id,
                                                                           ModelVersion.kind == kind))


@SQLITE_ONLY
def test_a_failed_step_is_shown_then_retried_to_completion(app, db, client, admin_token, loop_project,
                                                           tiny_model_dir, start_worker):
    project, labelers = loop_project
    api = Api(client, admin_token)
    faulty = start_worker(RANKLAB_FAULT_INJECT="training_policy")
    round0 = launch_and_label(api, app, db, project, labelers, tiny_config(tiny_model_dir), faulty)

    failed = api.wait_status(round0["id"], "failed", worker=faulty)
    assert failed["error_step"] == "training_policy"
    assert failed["error_message"] == "FaultInjected: fault injected at training_policy (RANKLAB_FAULT_INJECT=training_policy)"
    assert failed["reward_model_id"] is not None and failed["policy_out_id"] is None  # the RM step was kept
    assert "Traceback" in faulty.output()  # re-raised: Celery recorded the task as failed, not swallowed

    # The admin fixes the cause (a worker without the fault) and retries: it resumes at PPO.
    faulty.stop()
    worker = start_worker()
    retried = api.post(f"/api/v1/rounds/{round0['id']}/retry")
    assert (retried["status"], retried["error_message"], retried["error_step"]) == ("training_policy", None, None)
    done = api.wait_status(round0["id"], "done", worker=worker)
    assert done["reward_model_id"] == failed["reward_model_id"]  # not trained again
    assert versions(db, round0["id"], "reward") == 1 and versions(db, round0["id"], "policy") == 1
    assert api.rounds(project.id)[0]["status"] == "labeling"
    messages = [e["message"] for e in api.round(round0["id"], events_after=0)["events"]]
    assert any(m.startswith("failed at training_policy: FaultInjected") for m in messages)
    assert "retry: resuming at training_policy" in messages
    api.post(f"/api/v1/rounds/{round0['id']}/retry", expect=409)  # a done round has nothing to retry


@SQLITE_ONLY
def test_cancel_stops_a_running_step_at_its_next_progress_report(app, db, client, admin_token, loop_project,
                                                                 tiny_model_dir, start_worker):
    project, labelers = loop_project
    api = Api(client, admin_token)
    worker = start_worker()
    config = tiny_config(tiny_model_dir, ppo={"steps": 500})  # far longer than the test waits
    round0 = launch_and_label(api, app, db, project, labelers, config, worker)
    wait_for(lambda: policy_progress(db, round0["id"]) >= 1, timeout=240, what="PPO progress", worker=worker)

    cancelled = api.post(f"/api/v1/rounds/{round0['id']}/cancel")
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None

    def stopped():
        events = api.round(round0["id"], events_after=0)["events"]
        return any(e["message"].startswith("stopped: round") for e in events)

    wait_for(stopped, timeout=120, what="the PPO step to stop", worker=worker)
    assert versions(db, round0["id"], "policy") == 0
    assert policy_progress(db, round0["id"]) < 500
    api.post(f"/api/v1/rounds/{round0['id']}/cancel", expect=409)
    # The worker is free again: a new round (on the remaining prompts) runs to labeling.
    round1 = api.post(f"/api/v1/projects/{project.id}/rounds", tiny_config(tiny_model_dir), expect=201)
    assert round1["number"] == 1
    api.wait_status(round1["id"], "labeling", worker=worker)


@SQLITE_ONLY
def test_a_worker_killed_mid_step_is_replaced_and_the_step_completes_once(app, db, client, admin_token,
                                                                        loop_project, tiny_model_dir,
                                                                        start_worker, settings):
    project, labelers = loop_project
    api = Api(client, admin_token)
    worker = start_worker()
    config = tiny_config(tiny_model_dir, ppo={"steps": 12})
    round0 = launch_and_label(api, app, db, project, labelers, config, worker)
    wait_for(lambda: policy_progress(db, round0["id"]) >= 1, timeout=240, what="PPO progress", worker=worker)
    worker.kill()
    db.rollback()
    killed = db.get(TrainingRound, round0["id"])
    assert killed.status == "training_policy" and killed.claim_token is not None

    # A new worker finds the stale heartbeat, enqueues the step again and finishes it.
    replacement = start_worker()
    done = api.wait_status(round0["id"], "done", worker=replacement, timeout=120)
    assert versions(db, round0["id"], "policy") == 1
    messages = [e["message"] for e in api.round(round0["id"], events_after=0)["events"]]
    assert "training_policy: no live worker (heartbeat stopped); enqueued again" in messages
    assert sum(m.startswith("policy trained") for m in messages) == 1
    round_folder = Path(settings.artifacts_dir) / f"project-{project.id}" / "round-0"
    assert sorted(p.name for p in round_folder.iterdir()) == ["policy", "reward"]  # no half-written leftovers
    assert api.rounds(project.id)[0]["policy_in_id"] == done["policy_out_id"]
