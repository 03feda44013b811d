"""The loop tests' fixtures (a tiny model, a project with labelers and prompts, an admin token),
with settings that route training and evaluation to the GPU class `a100`."""

from __future__ import annotations

import pytest

from app.settings import Settings
from tests.loop.conftest import _redis_url, admin_token, loop_project, tiny_model_dir  # noqa: F401 - fixtures

GPU_CLASS = "a100"


@pytest.fixture
def settings(db_url, tmp_path) -> Settings:
    """The web's settings; every worker gets the same routing through its environment. The data
    dir stands for the volume all machines mount at the same path."""
    broker = "" if db_url.startswith("sqlite") else _redis_url()
    return Settings(
        data_dir=tmp_path / "shared-volume" / "data",
        database_url=db_url,
        secret_key="test-secret",
        embedded_worker=False,
        broker_url=broker,
        round_stale_seconds=3,
        round_sweep_seconds=1,
        train_gpu_class=GPU_CLASS,
        evaluate_gpu_class=GPU_CLASS,
        _env_file=None,
    )
