"""Failure, retry, cancel and a worker killed mid-step, through a real Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.models import ModelVersion, RoundEvent, TrainingRound
from app.settings import ROOT
from tests.loop.eval_checks import (
    EVAL_SETTINGS,
    eval_answers,
    human_evaluation,
    scores_by_rm,
    upload_eval_prompts,
    version_evals,
)
from tests.loop.helpers import ONE_THREAD, Api, label_everything, wait_for
from tests.loop.test_loop import tiny_config

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def launch_and_label(api: Api, app, db, project, labelers, config: dict, worker) -> dict:
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", config, expect=201)
    api.wait_status(round0["id"], "labeling", worker=worker)
    label_everything(app, db, labelers, project.id)
    return round0


def step_progress(db, round_id: int, step: str = "training_policy") -> int:
    """How many progress reports past the start the worker has written for the round's step
    (worker/loop/runtime.Reporter: log events of that stage with step = iterations done)."""
    db.rollback()
    return db.scalar(
        select(func.count())
        .select_from(RoundEvent)
        .where(
            RoundEvent.round_id == round_id, RoundEvent.stage == step, RoundEvent.kind == "log", RoundEvent.step >= 1
        )
    )


def versions(db, round_id: int, kind: str) -> int:
    db.rollback()
    return db.scalar(
        select(func.count())
        .select_from(ModelVersion)
        .where(ModelVersion.round_id == round_id, ModelVersion.kind == kind)
    )


@SQLITE_ONLY
def test_a_failed_step_is_shown_then_retried_to_completion(
    app, db, client, admin_token, loop_project, tiny_model_dir, start_worker
):
    """Also the zero-reward control (ppo.reward_source "zero": PPO on the KL penalty alone) and
    the evaluating step without an eval set, which skips and moves on."""
    project, labelers = loop_project
    api = Api(client, admin_token)
    faulty = start_worker(RANKLAB_FAULT_INJECT="training_policy")
    config = tiny_config(tiny_model_dir, ppo={"reward_source": "zero"})
    round0 = launch_and_label(api, app, db, project, labelers, config, faulty)

    failed = api.wait_status(round0["id"], "failed", worker=faulty)
    assert failed["error_step"] == "training_policy"
    assert (
        failed["error_message"]
        == "FaultInjected: fault injected at training_policy (RANKLAB_FAULT_INJECT=training_policy)"
    )
    assert failed["reward_model_id"] is not None and failed["policy_out_id"] is None  # the RM step was kept
    # Re-raised: Celery records the task as failed, not swallowed. It logs the traceback after the
    # task has marked the round failed, so the log line may come a moment after the status.
    wait_for(lambda: "Traceback" in faulty.output(), timeout=30, what="the task's traceback in the log", worker=faulty)

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
    assert done["metrics"]["policy"]["score"] == 0.0 and done["metrics"]["policy"]["score_first"] == 0.0
    skipped = "no eval set: skipped (hold out eval prompts to get eval metrics)"
    assert done["metrics"]["evaluation"] == {"skipped": skipped} and skipped in messages
    api.post(f"/api/v1/rounds/{round0['id']}/retry", expect=409)  # a done round has nothing to retry


@SQLITE_ONLY
def test_cancel_stops_a_running_step_at_its_next_progress_report(
    app, db, client, admin_token, loop_project, tiny_model_dir, start_worker
):
    project, labelers = loop_project
    api = Api(client, admin_token)
    worker = start_worker()
    config = tiny_config(tiny_model_dir, ppo={"steps": 500})  # far longer than the test waits
    round0 = launch_and_label(api, app, db, project, labelers, config, worker)
    wait_for(lambda: step_progress(db, round0["id"]) >= 1, timeout=240, what="PPO progress", worker=worker)

    cancelled = api.post(f"/api/v1/rounds/{round0['id']}/cancel")
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None

    def stopped():
        events = api.round(round0["id"], events_after=0)["events"]
        return any(e["message"].startswith("stopped: round") for e in events)

    wait_for(stopped, timeout=120, what="the PPO step to stop", worker=worker)
    assert versions(db, round0["id"], "policy") == 0
    assert step_progress(db, round0["id"]) < 500
    api.post(f"/api/v1/rounds/{round0['id']}/cancel", expect=409)
    # The worker is free again: a new round (on the remaining prompts) runs to labeling.
    round1 = api.post(f"/api/v1/projects/{project.id}/rounds", tiny_config(tiny_model_dir), expect=201)
    assert round1["number"] == 1
    api.wait_status(round1["id"], "labeling", worker=worker)


TRAINED = {"training_reward": ("reward", "reward model trained"), "training_policy": ("policy", "policy trained")}
HALF_WRITTEN = """
import sys, threading
from worker.ml.models import save_artifact
from worker.ml.tiny import tiny_causal_lm
model, tokenizer = tiny_causal_lm()

class StopsAfterTheWeights:  # the real weights land in the temp folder, then the write hangs
    def save_pretrained(self, path):
        model.save_pretrained(path)
        print("weights written", flush=True)
        threading.Event().wait()

save_artifact(StopsAfterTheWeights(), tokenizer, sys.argv[1], {})
"""


def half_written_artifact(out: Path) -> str:
    """What a writer SIGKILLed mid-save leaves: worker.ml's save_artifact in a real process,
    killed once the weights are in its temp folder. Returns the leftover folder's name."""
    process = subprocess.Popen(
        [sys.executable, "-c", HALF_WRITTEN, str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, **ONE_THREAD},
    )
    assert process.stdout.readline() == b"weights written\n"
    process.kill()
    process.wait(timeout=30)
    process.stdout.close()
    [leftover] = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-")]
    assert (leftover / "model.safetensors").is_file() and not (leftover / "ranklab_card.json").exists()
    return leftover.name


@pytest.mark.parametrize(
    ("db_url", "step"), [("sqlite", "training_reward"), ("postgres", "training_policy")], indirect=["db_url"]
)
def test_a_worker_killed_mid_step_is_replaced_and_the_step_completes_once(
    step, app, db, client, admin_token, loop_project, tiny_model_dir, start_worker, settings
):
    """SIGKILL mid reward-model training on SQLite (SQL transport) and mid PPO on Postgres
    (Redis): the step runs again on a new worker, registers one model, and the round finishes.
    (Each step on one backend: the recovery code is the same for both steps and both backends,
    and each pairing costs ~25 s.)"""
    project, labelers = loop_project
    api = Api(client, admin_token)
    worker = start_worker(RANKLAB_FAULT_INJECT=f"{step}:stall")  # stops for good after its first step of 3
    config = tiny_config(tiny_model_dir, reward={"epochs": 3}, ppo={"steps": 3})
    round0 = launch_and_label(api, app, db, project, labelers, config, worker)
    wait_for(lambda: step_progress(db, round0["id"], step) >= 1, timeout=240, what=f"{step} progress", worker=worker)
    worker.kill()
    db.rollback()
    killed = db.get(TrainingRound, round0["id"])
    assert killed.status == step and killed.claim_token is not None and killed.progress < 1
    kind, trained = TRAINED[step]
    assert versions(db, round0["id"], kind) == 0
    round_folder = Path(settings.artifacts_dir) / f"project-{project.id}" / "round-0"
    leftover = half_written_artifact(round_folder / kind)  # as if the kill had come mid-save

    # A new worker finds the stale heartbeat, enqueues the step again and finishes it.
    replacement = start_worker()
    done = api.wait_status(round0["id"], "done", worker=replacement, timeout=240)
    assert versions(db, round0["id"], "reward") == 1 and versions(db, round0["id"], "policy") == 1
    messages = [e["message"] for e in api.round(round0["id"], events_after=0)["events"]]
    assert f"{step}: no live worker (heartbeat stopped); enqueued again" in messages
    assert sum(m.startswith(f"{step} started") for m in messages) == 2  # the killed run and the new one
    assert sum(m.startswith("reward model trained") for m in messages) == 1
    assert sum(m.startswith("policy trained") for m in messages) == 1
    assert any(m.startswith(trained) for m in messages)
    assert sorted(p.name for p in round_folder.iterdir()) == ["policy", "reward"]  # the leftover is gone
    assert leftover not in {p.name for p in round_folder.iterdir()}
    for version in (done["reward_model_id"], done["policy_out_id"]):
        model = db.get(ModelVersion, version)
        assert (Path(model.artifact_path) / "ranklab_card.json").is_file()  # complete, under its final name
    assert api.rounds(project.id)[0]["policy_in_id"] == done["policy_out_id"]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite's recovery: the test above
def test_a_worker_killed_mid_evaluating_is_replaced_and_nothing_is_stored_twice(
    app, db, client, admin_token, loop_project, tiny_model_dir, start_worker
):
    """SIGKILL in the evaluating step, at its first progress report (generating eval answers), on
    SQLite and Postgres: the sweep enqueues the step again, the new run finishes it, and each
    version has its eval answers, RM scores and metrics once, and the round one human evaluation."""
    project, labelers = loop_project
    api = Api(client, admin_token)
    upload_eval_prompts(api, project.id)
    worker = start_worker(RANKLAB_FAULT_INJECT="evaluating:stall")
    config = tiny_config(tiny_model_dir, evaluation=EVAL_SETTINGS)
    round0 = launch_and_label(api, app, db, project, labelers, config, worker)
    wait_for(
        lambda: step_progress(db, round0["id"], "evaluating") >= 1, timeout=240, what="eval progress", worker=worker
    )
    worker.kill()
    db.rollback()
    killed = db.get(TrainingRound, round0["id"])
    assert killed.status == "evaluating" and killed.claim_token is not None and killed.progress < 1
    assert version_evals(db, reward_model_id=killed.reward_model_id) == {}

    replacement = start_worker()
    done = api.wait_status(round0["id"], "done", worker=replacement, timeout=240)
    messages = [e["message"] for e in api.round(round0["id"], events_after=0)["events"]]
    assert "evaluating: no live worker (heartbeat stopped); enqueued again" in messages
    assert sum(m.startswith("evaluating started") for m in messages) == 2  # the killed run and the new one
    assert sum(m.startswith("eval metrics on 3 prompts") for m in messages) == 1
    base_id, policy_id, rm_id = done["policy_in_id"], done["policy_out_id"], done["reward_model_id"]
    assert eval_answers(db) == {base_id: 3, policy_id: 3}
    assert scores_by_rm(db) == {rm_id: 6}
    assert set(version_evals(db, reward_model_id=rm_id)) == {base_id, policy_id}
    assert set(done["metrics"]["evaluation"]["versions"].values()) == {base_id, policy_id}
    evaluation, task_versions = human_evaluation(db, round_id=round0["id"])  # one: .one() raises otherwise
    assert evaluation.comparisons == [[policy_id, base_id]] and len(task_versions) == 3
