"""Which database errors mean "unavailable, retry" (503) and which stay bugs (500), with real
errors from real engines: a refused connection, an exhausted pool, a broken constraint."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.db import make_engine
from app.main import create_app
from app.settings import Settings
from app.unavailable import MESSAGE, RETRY_AFTER_SECONDS, is_unavailable
from tests.faults.servers import free_port


def _refused() -> OperationalError:
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")  # nothing listens
    with pytest.raises(OperationalError) as caught, engine.connect():
        pass
    return caught.value


def _pool_exhausted(tmp_path) -> PoolTimeout:
    engine = make_engine(f"sqlite:///{tmp_path / 'pool.sqlite'}", pool_size=1, max_overflow=0, pool_timeout=0.01)
    with engine.connect(), pytest.raises(PoolTimeout) as caught, engine.connect():
        pass
    return caught.value


def _constraint(tmp_path) -> IntegrityError:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    return caught.value


def test_unreachable_and_exhausted_are_unavailable_a_broken_constraint_is_not(tmp_path):
    assert is_unavailable(_refused())
    assert is_unavailable(_pool_exhausted(tmp_path))
    assert not is_unavailable(_constraint(tmp_path))


def test_the_app_answers_503_for_an_outage_and_keeps_500_for_a_bug(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, secret_key="x", embedded_worker=False, _env_file=None))
    errors = {"outage": _refused(), "bug": _constraint(tmp_path)}

    def fail(kind: str):
        raise errors[kind]

    app.add_api_route("/api/v1/test-fail/{kind}", fail)
    with TestClient(app, raise_server_exceptions=False) as client:
        outage, bug = client.get("/api/v1/test-fail/outage"), client.get("/api/v1/test-fail/bug")
    app.state.engine.dispose()
    assert (outage.status_code, outage.json(), outage.headers["retry-after"]) == (
        503,
        {"detail": MESSAGE},
        str(RETRY_AFTER_SECONDS),
    )
    assert bug.status_code == 500 and "retry-after" not in bug.headers


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_nul_character_that_reaches_postgres_is_a_422_not_a_500(app, db_url):
    """The backstop behind the schemas' own NUL checks: PostgreSQL refuses NUL in text."""
    engine = make_engine(db_url)

    def store_nul():
        with engine.connect() as conn:
            conn.execute(text("SELECT CAST(:value AS text)"), {"value": "a\x00b"})

    app.add_api_route("/api/v1/test-nul", store_nul)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/test-nul")
    engine.dispose()
    assert response.status_code == 422 and "NUL character" in response.json()["detail"]
