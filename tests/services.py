"""Finding the real services the suite runs against (Postgres, Redis, Chromium).

Locally a missing service skips its tests with the reason; with RANKLAB_REQUIRE_SERVICES=1
(set by .ci/run) a missing service fails them instead, so CI never counts a skip as a pass.
"""

from __future__ import annotations

import os
import shutil
from functools import lru_cache

import pytest

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


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

        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), connect_timeout=2):
            return url
    except Exception:
        return None


@lru_cache
def redis_url() -> str | None:
    url = os.environ.get("RANKLAB_TEST_REDIS_URL", DEFAULT_REDIS)
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return url
    except Exception:
        return None


@lru_cache
def chromium_path() -> str | None:
    return os.environ.get("RANKLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
