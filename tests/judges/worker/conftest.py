"""A real Celery worker on the test's database and broker (the loop's fixtures)."""

from tests.loop.conftest import settings, start_worker, workers  # noqa: F401
