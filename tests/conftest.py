"""Fixtures: a migrated database per test (SQLite always, Postgres when reachable), the app,
an HTTP client, and factories. Nothing we own or run is mocked."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from app.db import Base, make_engine
from app.main import create_app
from app.settings import ROOT, Settings
from tests import services

BACKENDS = ["sqlite", "postgres"]


def _migrate(url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """Migrated once with Alembic; each test gets a copy of the file."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_migrated() -> str:
    url = services.postgres_url()
    if url is None:
        services.missing("PostgreSQL")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    _migrate(url)
    return url


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "ranklab.sqlite"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_migrated")
    yield url
    _empty_postgres(url)


def _empty_postgres(url: str) -> None:
    """Every row gone and every id sequence restarted, as TRUNCATE ... RESTART IDENTITY does, but
    with DELETE: TRUNCATE gives each table and index new files, 0.2-0.5 s per test on two cores,
    while deleting the few rows a test leaves takes ~0.01 s. Every foreign key has an ON DELETE
    action, so the order does not matter."""
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        conn.execute(text("SELECT setval(oid, 1, false) FROM pg_class WHERE relkind = 'S'"))
    engine.dispose()


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database_url=db_url, secret_key="test-secret", embedded_worker=False, _env_file=None
    )


@pytest.fixture
def app(settings):
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def db(app) -> Iterator[Session]:
    """A session on the same database the app uses; tests commit through it to set up data."""
    session = sessionmaker(bind=app.state.engine, expire_on_commit=False)()
    yield session
    session.close()


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    """One browser on the app: its cookies carry the session once a test logs in."""
    with TestClient(app) as c:
        yield c


@pytest.fixture
def other_client(app) -> Iterator[TestClient]:
    """A second browser with cookies of its own, for tests where two people act at once (an admin
    in `client` while a labeler or a stranger tries the same pages here)."""
    with TestClient(app) as c:
        yield c
