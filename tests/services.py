"""Finding the real services the suite runs against (Postgres, Redis, Chromium).

Locally a missing service skips its tests with the reason; with RANKLAB_REQUIRE_SERVICES=1
(set by .ci/run) a missing service fails them instead, so CI never counts a skip as a pass.

Under pytest-xdist (`make test` runs two processes) each worker gets a database and a Redis
database of its own: worker gw0 the configured ones, worker gwN the PostgreSQL database
`<name>_gwN` (created on first use) and the Redis database N above the configured one. Tests
empty their database between them, so two workers sharing one would delete each other's rows.
"""

from __future__ import annotations

import os
import shutil
from functools import lru_cache

import pytest

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def xdist_worker_index() -> int:
    """0 in a plain run and on xdist's first worker (gw0); N on worker gwN."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def services_required() -> bool:
    return os.environ.get("RANKLAB_REQUIRE_SERVICES") == "1"


def missing(what: str) -> None:
    if services_required():
        pytest.fail(f"{what} is required in CI (RANKLAB_REQUIRE_SERVICES=1) but is not available")
    pytest.skip(f"{what} not available")


@lru_cache
def postgres_url() -> str | None:
    url = os.environ.get("RANKLAB_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    if url == "off":
        return None
    try:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), connect_timeout=2) as conn:
            return _worker_database(conn, url)
    except Exception:
        return None


def _worker_database(conn, url: str) -> str:
    """`url`, or on xdist worker gwN its own database beside it, created if missing."""
    index = xdist_worker_index()
    if index == 0:
        return url
    from sqlalchemy.engine import make_url

    name = f"{make_url(url).database}_gw{index}"
    conn.autocommit = True
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@lru_cache
def redis_url() -> str | None:
    url = worker_redis_db(os.environ.get("RANKLAB_TEST_REDIS_URL", DEFAULT_REDIS))
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return url
    except Exception:
        return None


def worker_redis_db(url: str) -> str:
    """`url`, or on xdist worker gwN the Redis database N above the one it names (mod 16)."""
    index = xdist_worker_index()
    if index == 0:
        return url
    base, _, db = url.rpartition("/")
    if not db.isdigit():
        base, db = url.rstrip("/"), "0"
    return f"{base}/{(int(db) + index) % 16}"


@lru_cache
def chromium_path() -> str | None:
    return os.environ.get("RANKLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
