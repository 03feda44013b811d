"""docker-compose.yml and the Dockerfile, checked statically (no Docker daemon on CI machines)."""

import re

import yaml

from app.settings import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_healthchecks():
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "web", "worker", "flower"}
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "/login" in " ".join(services["web"]["healthcheck"]["test"])


def test_dependencies_wait_for_healthy_services():
    services = _compose()["services"]
    for name in ("web", "worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert services["flower"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_web_migrates_then_serves_against_postgres_and_redis():
    web = _compose()["services"]["web"]
    assert web["command"][-1] == "ranklab bootstrap && exec ranklab serve"
    env = web["environment"]
    assert (
        env["RANKLAB_DATABASE_URL"].startswith("postgresql+psycopg://")
        and "@postgres:5432/" in env["RANKLAB_DATABASE_URL"]
    )
    assert env["RANKLAB_BROKER_URL"] == "redis://redis:6379/0"
    assert env["RANKLAB_EMBEDDED_WORKER"] == "false"  # the worker service does the training
    assert web["build"]["args"]["TORCH_INDEX"] == "none"


def test_worker_runs_one_task_at_a_time_on_a_gpu():
    worker = _compose()["services"]["worker"]
    command = worker["command"]
    assert command[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert "--concurrency=1" in command and "--prefetch-multiplier=1" in command
    queues = command[command.index("-Q") + 1].split(",")
    from worker.celery_app import GENERATE_QUEUE, TRAIN_QUEUE

    assert set(queues) == {TRAIN_QUEUE, GENERATE_QUEUE}
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert worker["environment"]["RANKLAB_BROKER_URL"] == "redis://redis:6379/0"
    assert worker["volumes"] == _compose()["services"]["web"]["volumes"]  # artifacts are shared


def test_dockerfile_installs_torch_before_the_project_and_copies_existing_paths():
    text = (ROOT / "Dockerfile").read_text()
    torch_at = text.index('pip install "torch==')
    project_at = text.index("pip install -e")
    assert torch_at < project_at
    assert "ARG TORCH_INDEX" in text and "npm ci" in text
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for match in re.finditer(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in match.group(1).split():
            assert (ROOT / source).exists(), source
            assert source not in ignored, source
    assert "static/vendor" in ignored and ".venv" in ignored and "data" in ignored


def test_a_served_models_api_key_reaches_the_worker_only():
    services = _compose()["services"]
    assert "RANKLAB_GENERATION_API_KEY" in services["worker"]["environment"]
    assert "RANKLAB_GENERATION_API_KEY" not in services["web"]["environment"]
