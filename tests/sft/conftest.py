"""SFT runs reuse the loop's fixtures: a real Celery worker on the test's database and broker
(SQL transport for SQLite, Redis for Postgres), the tiny model, an admin token."""

from tests.loop.conftest import admin_token, settings, start_worker, tiny_model_dir, workers  # noqa: F401
