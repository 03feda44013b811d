"""Cancelling a running SFT job through a real Celery worker, on SQLite (SQL transport) and
Postgres (Redis): the REST cancel lands while the worker trains, the worker stops the run at its
next report, nothing is registered or left on disk, and the same worker then runs the next job.

The running job is a long one (~1800 optimizer steps of one example on the tiny model, minutes)
rather than RANKLAB_FAULT_INJECT=sft:stall: a stalled run never reaches another report, so it
could neither notice the cancel nor free its worker (the stall is for kill tests)."""

from __future__ import annotations

from sqlalchemy import func, select

from app.models import ModelVersion
from app.models.jobs import JobDemonstration, JobEvent, TrainingJob
from app.rounds import lifecycle
from tests.factories import make_project
from tests.loop.helpers import wait_for
from tests.sft.helpers import add_demonstrations

TINY = {"max_length": 32, "eval_fraction": 0.25, "lora_r": 4, "lora_alpha": 8}
LONG = {**TINY, "epochs": 100, "batch_tokens": 8}
"""One example per step, 18 training examples, 100 epochs: far longer than the test waits."""
SHORT = {**TINY, "epochs": 1, "batch_tokens": 48}


def _job(db, job_id: int) -> TrainingJob:
    db.commit()  # ends the read snapshot (SQLite WAL keeps one per transaction)
    return db.get_one(TrainingJob, job_id, populate_existing=True)


def _events(db, job_id: int) -> list[JobEvent]:
    db.commit()
    return list(db.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def test_a_running_job_cancelled_over_rest_stops_and_frees_the_worker(
    db, client, admin_token, tiny_model_dir, start_worker, settings
):
    headers = {"Authorization": f"Bearer {admin_token}"}
    project = make_project(db)
    add_demonstrations(db, project, 24)
    start = lifecycle.base_version(db, project_id=project.id, base_model=str(tiny_model_dir))
    db.commit()

    def launch(sft: dict) -> int:
        body = {"start_model_id": start.id, "name": "tiny sft", "sft": sft}
        response = client.post(f"/api/v1/projects/{project.id}/sft-runs", json=body, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    long_id = launch(LONG)
    worker = start_worker()

    def training() -> dict | None:
        status = client.get(f"/api/v1/sft-runs/{long_id}", headers=headers).json()
        return status if status["status"] == "running" and status["progress"] > 0 else None

    running = wait_for(training, timeout=240, what="training progress", worker=worker)
    assert running["current_step"] in ("train", "evaluate") and running["result_model_id"] is None

    cancelled = client.post(f"/api/v1/sft-runs/{long_id}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished_at"] is not None
    at_cancel = _events(db, long_id)
    cancel_event = next(e for e in at_cancel if e.message == "cancelled while running")
    last_step = max(e.step for e in at_cancel if e.kind == "metric")

    # The worker notices at its next report and ends the run there, letting go of the claim.
    def stopped() -> JobEvent | None:
        return next((e for e in _events(db, long_id) if e.message.startswith("stopped: ")), None)

    stop = wait_for(stopped, timeout=60, what="the worker to stop the cancelled run", worker=worker)
    assert stop.message == f"stopped: job {long_id} is cancelled; this run stops here"
    late = [e for e in _events(db, long_id) if e.id > cancel_event.id and e.kind == "metric"]
    # At most the one report already past its check when the cancel committed (Postgres reads
    # committed rows between statements), never training on.
    assert len(late) <= 1 and all(e.step <= last_step + 1 for e in late), [(e.step, e.data) for e in late]
    job = _job(db, long_id)
    assert (job.status, job.claim_token, job.heartbeat_at, job.result_model_id) == ("cancelled", None, None, None)
    assert 0 < job.progress < 0.5
    assert db.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.job_id == long_id)) == 0
    assert db.scalar(select(func.count()).where(JobDemonstration.job_id == long_id)) == 0
    folder = settings.artifacts_dir / f"project-{project.id}" / "sft"
    assert not folder.exists() or list(folder.iterdir()) == []  # no model, no temp folder left
    assert client.post(f"/api/v1/sft-runs/{long_id}/cancel", headers=headers).status_code == 409

    # The same worker is free: the next job runs to done and registers its version.
    short_id = launch(SHORT)
    wait_for(lambda: _job(db, short_id).status in ("done", "failed"), timeout=240, what="the next job", worker=worker)
    done = _job(db, short_id)
    assert done.status == "done", (done.error_message, worker.output())
    assert db.get_one(ModelVersion, done.result_model_id).job_id == short_id
    assert _job(db, long_id).status == "cancelled"  # untouched by the next run
