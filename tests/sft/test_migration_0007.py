"""Migration 0007 (training jobs) on a database populated at 0006, on both backends: every row
kept both ways, job rows stored at 0007, and the app serves at head. Uses tests/test_migrations.py's
sample (rows written at head by the app's own code) and helpers."""

from __future__ import annotations

from types import SimpleNamespace

from alembic import command
from sqlalchemy import select

from app.db import make_engine
from app.models import ModelVersion, Project
from app.models.demonstrations import Demonstration
from tests.test_migrations import _alembic, _columns, _dump, _load, _projected, _serves, empty_database, sample

__all__ = ["empty_database", "sample"]  # fixtures, used by name


def test_0007_keeps_rows_and_stores_jobs_both_ways(empty_database, sample, tmp_path):
    cfg = _alembic(empty_database)
    command.upgrade(cfg, "0006")
    engine = make_engine(empty_database)
    try:
        _load(engine, sample)
        before_columns = _columns(engine)
        before = _projected(_dump(engine), before_columns)
        assert before["demonstrations"], "the sample has demonstrations at 0006"

        command.upgrade(cfg, "0007")
        kept = {name: cols & _columns(engine).get(name, set()) for name, cols in before_columns.items()}
        assert _projected(_dump(engine), kept) == _projected(before, kept)
        assert {"training_jobs", "job_events", "job_demonstrations"} <= set(_columns(engine))

        # A finished SFT job with its version and lineage stores at 0007 ...
        from sqlalchemy.orm import Session

        from tests.sft.helpers import populate_jobs

        with Session(engine) as db:
            # Not the ORM row: later revisions add project columns the ORM maps and 0007 lacks.
            project = SimpleNamespace(id=db.scalar(select(Project.id).order_by(Project.id)))
            start = db.scalars(select(ModelVersion).where(ModelVersion.kind == "base")).first()
            job = populate_jobs(db, project, start=start)
            demos = db.scalars(select(Demonstration.id).where(Demonstration.project_id == project.id)).all()
            assert job.result_model_id is not None and demos

        # ... and downgrading drops the job tables and model_versions.job_id, keeping the rest.
        command.downgrade(cfg, "0006")
        after = _dump(engine)
        assert "training_jobs" not in after and "job_id" not in after["model_versions"][0]
        unchanged = {name: rows for name, rows in _projected(after, before_columns).items() if name != "model_versions"}
        assert unchanged == {name: rows for name, rows in before.items() if name != "model_versions"}

        command.upgrade(cfg, "head")
        _serves(engine, empty_database, tmp_path)
    finally:
        engine.dispose()
