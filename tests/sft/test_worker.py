"""SFT runs through a real Celery worker: launch → train → an sft ModelVersion with lineage, and
a worker killed mid-training replaced by the sweep, on SQLite (SQL transport) and Postgres (Redis)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import ModelVersion
from app.models.jobs import JobDemonstration, JobEvent, TrainingJob
from app.rounds import lifecycle
from tests.factories import make_project
from tests.loop.helpers import wait_for
from tests.sft.helpers import add_demonstrations

TINY_SFT = {"epochs": 1, "batch_tokens": 48, "max_length": 32, "eval_fraction": 0.25, "lora_r": 4, "lora_alpha": 8}
"""A few optimizer steps of LoRA on the tiny model: seconds on one CPU thread."""


def _launch(db, client, admin_token, tiny_model_dir, **body):
    project = make_project(db)
    demos = add_demonstrations(db, project, 8)
    add_demonstrations(db, project, 2, status="rejected", tag="r")  # never trains
    start = lifecycle.base_version(db, project_id=project.id, base_model=str(tiny_model_dir))
    db.commit()
    response = client.post(
        f"/api/v1/projects/{project.id}/sft-runs",
        json={"start_model_id": start.id, "name": "tiny sft", "sft": TINY_SFT, **body},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert response.status_code == 201, response.text
    return project, demos, start, response.json()["id"]


def _job(db, job_id: int) -> TrainingJob:
    db.commit()  # ends the read snapshot (SQLite WAL keeps one per transaction)
    return db.get_one(TrainingJob, job_id, populate_existing=True)


def test_an_sft_run_registers_an_sft_version_with_lineage(db, client, admin_token, tiny_model_dir, start_worker):
    project, demos, start, job_id = _launch(db, client, admin_token, tiny_model_dir)
    worker = start_worker()
    wait_for(lambda: _job(db, job_id).status in ("done", "failed"), timeout=240, what="the SFT job", worker=worker)
    job = _job(db, job_id)
    assert job.status == "done", (job.error_message, worker.output())
    version = db.get_one(ModelVersion, job.result_model_id)
    assert (version.kind, version.name, version.parent_id, version.job_id) == ("sft", "tiny sft", start.id, job_id)
    assert version.base_model == str(tiny_model_dir)
    lineage = db.scalars(select(JobDemonstration.demonstration_id).where(JobDemonstration.job_id == job_id)).all()
    assert sorted(lineage) == [d.id for d in demos]
    assert job.progress == 1.0 and job.claim_token is None and job.metrics["demonstrations"] == 8
    assert job.metrics["steps"] >= 2 and job.metrics["eval_loss"]
    points = db.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "metric")).all()
    assert sum("loss" in p.data for p in points) == job.metrics["steps"]
    assert any("eval_loss" in p.data for p in points)

    # The artifact is what worker.ml wrote: an adapter folder with an "sft" card, loadable as is.
    from worker.ml.models import load_causal_lm, read_card

    assert read_card(version.artifact_path)["kind"] == "sft"
    load_causal_lm(version.artifact_path, device="cpu")

    # The API answers what the page polls.
    status = client.get(
        f"/api/v1/sft-runs/{job_id}?events_after=0", headers={"Authorization": f"Bearer {admin_token}"}
    ).json()
    assert status["status"] == "done" and status["result_model_id"] == version.id and status["demonstrations"] == 8


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # the sweep is the rounds' (tested on both)
def test_a_worker_killed_mid_training_is_replaced_and_the_job_finishes_once(
    db, client, admin_token, tiny_model_dir, start_worker
):
    _, _, _, job_id = _launch(db, client, admin_token, tiny_model_dir)
    worker = start_worker(RANKLAB_FAULT_INJECT="sft:stall")  # stops for good after its first step
    wait_for(lambda: _job(db, job_id).current_step == "train", timeout=240, what="training progress", worker=worker)
    worker.kill()
    killed = _job(db, job_id)
    assert killed.status == "running" and killed.claim_token is not None and killed.progress < 1

    replacement = start_worker()  # its sweep finds the stale heartbeat and enqueues the job again
    wait_for(lambda: _job(db, job_id).status == "done", timeout=240, what="the job to finish", worker=replacement)
    messages = db.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
    # The killed run and at least one more (the sweep's delivery, or a duplicate that found the
    # heartbeat stale); whichever finished registered the one version.
    assert sum(m.startswith("started (run") for m in messages) >= 2, messages
    assert len(db.scalars(select(ModelVersion.id).where(ModelVersion.job_id == job_id)).all()) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_failed_run_keeps_its_error_and_a_retry_finishes_it(db, client, admin_token, tiny_model_dir, start_worker):
    _, _, _, job_id = _launch(db, client, admin_token, tiny_model_dir)
    faulty = start_worker(RANKLAB_FAULT_INJECT="sft")
    wait_for(lambda: _job(db, job_id).status == "failed", timeout=120, what="the injected failure", worker=faulty)
    failed = _job(db, job_id)
    assert "fault injected at sft" in failed.error_message and failed.result_model_id is None
    faulty.stop()

    headers = {"Authorization": f"Bearer {admin_token}"}
    retried = client.post(f"/api/v1/sft-runs/{job_id}/retry", headers=headers)
    assert retried.status_code == 200 and retried.json()["status"] == "pending", retried.text
    worker = start_worker()
    wait_for(lambda: _job(db, job_id).status == "done", timeout=240, what="the retried run", worker=worker)
    done = _job(db, job_id)
    assert done.error_message is None and done.result_model_id is not None
    assert client.post(f"/api/v1/sft-runs/{job_id}/retry", headers=headers).status_code == 409
