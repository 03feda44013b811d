"""Fixtures for the backup tests. The source install is the suite's usual one (`settings`, `app`,
`db` from tests/conftest.py, on SQLite and Postgres) but, like a real install, signs with the key
generated in its data dir, which a backup must carry over. Postgres targets live in their own
schema of the test database, so no second database is needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.backup.dump import export_all
from app.db import make_engine
from app.settings import Settings
from tests import services
from tests.backup.helpers import make_settings, target_settings, write_artifact
from tests.factories import make_project, make_user
from tests.rounds.helpers import make_version

PG_SCHEMA = "backup_target"


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    source = make_settings(tmp_path / "source", db_url)
    source.resolved_secret_key()
    return source


@pytest.fixture
def source(settings) -> Settings:
    """The install being backed up (the app and db fixtures run on it)."""
    return settings


@pytest.fixture
def pg_target_url() -> str:
    """An empty schema of the test database, reached through search_path (even alembic_version)."""
    url = services.postgres_url()
    if url is None:
        services.missing("PostgreSQL")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {PG_SCHEMA}"))
    yield make_url(url).update_query_dict({"options": f"-csearch_path={PG_SCHEMA}"}).render_as_string(False)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path) -> Settings:
    """A fresh, not even migrated, database and data dir: import-all migrates it."""
    return target_settings(request, tmp_path, request.param)


@pytest.fixture
def small_archive(sqlite_template, tmp_path) -> tuple[Path, Settings]:
    """A SQLite install with a project, a member, a model version and its artifact, exported."""
    data = tmp_path / "small"
    data.mkdir()
    (data / "ranklab.sqlite").write_bytes(sqlite_template.read_bytes())
    settings = make_settings(data, f"sqlite:///{data / 'ranklab.sqlite'}")
    engine = make_engine(settings.sqlalchemy_url)
    with Session(engine, expire_on_commit=False) as db:
        project = make_project(db)
        make_user(db, projects=[project])
        write_artifact(settings.artifacts_dir / "project-1" / "round-0" / "policy", 5)
        make_version(db, project, artifact_path=str(settings.artifacts_dir / "project-1" / "round-0" / "policy"))
    engine.dispose()
    archive = tmp_path / "small.tar"
    export_all(settings, archive)
    return archive, settings
