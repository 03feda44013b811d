"""The job's progress reporter in-process (worker/loop/job_runtime.py), against the test database:
progress and loss points land as events, and a cancel or a lost claim stops the run at its next
report. (The worker tests cover the rest through a real Celery worker.)"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app import db as app_db
from app import settings as app_settings
from app.models.jobs import JobEvent, TrainingJob
from app.sft import service
from tests.factories import make_project
from tests.rounds.helpers import make_version
from tests.sft.helpers import add_demonstrations
from worker.loop import job_runtime
from worker.loop.runtime import Cancelled


@pytest.fixture
def worker_side(settings, monkeypatch):
    """worker.loop's sessions on the test's database (they read get_settings(), cached)."""
    monkeypatch.setattr(app_settings, "get_settings", lambda: settings)
    monkeypatch.setattr(job_runtime, "settings", lambda: settings)
    monkeypatch.setattr("worker.loop.runtime.settings", lambda: settings)
    engine = app_db.make_engine(settings.sqlalchemy_url)
    maker = app_db.sessionmaker(bind=engine, expire_on_commit=False)
    monkeypatch.setattr(app_db, "get_sessionmaker", lambda: maker)
    yield
    engine.dispose()


def test_reports_land_and_a_cancel_stops_the_run(db, settings, worker_side):
    project = make_project(db)
    add_demonstrations(db, project, 1)
    job = TrainingJob(
        project_id=project.id,
        kind="sft",
        status="pending",
        config={"demonstrations": {"statuses": ["accepted"]}},
        start_model_id=make_version(db, project, kind="base").id,
        current_step="pending",
        metrics={},
    )
    db.add(job)
    db.commit()
    assert job_runtime.claim(job.id, "token-a") and not job_runtime.claim(job.id, "token-b")  # fresh claim held
    reporter = job_runtime.JobReporter(job.id, "token-a")
    reporter(1, 4, "train")
    reporter.point(1, {"loss": 2.5, "learning_rate": 1e-4, "note": "dropped"})
    db.rollback()
    db.expire_all()
    row = db.get_one(TrainingJob, job.id)
    assert (row.status, row.current_step, row.progress) == ("running", "train", 0.25)
    metric = db.scalar(select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.kind == "metric"))
    assert (metric.step, metric.data) == (1, {"loss": 2.5, "learning_rate": 1e-4})

    service.cancel(db, job=row)
    db.commit()
    with pytest.raises(Cancelled, match="cancelled"):
        reporter.point(2, {"loss": 2.0})
    with pytest.raises(Cancelled):
        job_runtime.JobReporter(job.id, "token-b")(2, 4, "evaluate")  # another run's token stops too
