"""docker-compose.yml and the Dockerfile, checked statically (no Docker daemon on CI machines)."""

import re
import subprocess
import sys

import yaml

from app.settings import ROOT

WORKERS = {"worker": "cpu-worker", "gpu-worker": "gpu-worker", "multi-gpu-worker": "multi-gpu-worker"}
"""Each worker service and the one profile that starts it."""


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_healthchecks():
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "web", "flower", *WORKERS}
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "/login" in " ".join(services["web"]["healthcheck"]["test"])


def test_dependencies_wait_for_healthy_services():
    services = _compose()["services"]
    for name in ("web", *WORKERS):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    for name in WORKERS:
        assert services[name]["depends_on"]["web"]["condition"] == "service_healthy"
    assert services["flower"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_web_migrates_then_serves_against_postgres_and_redis():
    web = _compose()["services"]["web"]
    assert web["command"][-1] == "ranklab bootstrap && exec ranklab serve"
    env = {key: _default(value) for key, value in web["environment"].items()}
    assert env["RANKLAB_DATABASE_URL"] == "postgresql+psycopg://ranklab:ranklab@postgres:5432/ranklab"
    assert env["RANKLAB_BROKER_URL"] == "redis://redis:6379/0"
    assert env["RANKLAB_EMBEDDED_WORKER"] == "false"  # the worker service does the training
    assert web["build"]["args"]["TORCH_INDEX"] == "none"


def _default(value: str) -> str:
    """What compose makes of `${NAME:-default}` when NAME is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_each_worker_has_its_own_profile_and_only_the_web_and_services_start_without_one():
    services = _compose()["services"]
    assert {name: services[name]["profiles"] for name in WORKERS} == {n: [p] for n, p in WORKERS.items()}
    assert [name for name, service in services.items() if "profiles" not in service] == [
        "postgres",
        "redis",
        "web",
        "flower",
    ]


def test_workers_serve_every_default_queue_one_task_at_a_time_through_the_fleet_cli():
    """The worker command, with compose's defaults filled in, is what worker/fleet.py runs: its
    printed celery command listens on the three plain queues, one task at a time."""
    services = _compose()["services"]
    commands = {name: services[name]["command"] for name in WORKERS}
    assert len({tuple(c) for c in commands.values()}) == 1  # the same command; devices differ
    command = [_default(part) for part in commands["worker"]]
    assert command == ["python", "-m", "worker.fleet", "--roles", "train,generate,evaluate", "--gpu-class", "default"]
    printed = subprocess.run(
        [sys.executable, *command[1:], "--print"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    from worker.celery_app import DEFAULT_QUEUES

    assert printed[printed.index("-Q") + 1].split(",") == list(DEFAULT_QUEUES)
    assert "--concurrency=1" in printed and "--prefetch-multiplier=1" in printed


def test_gpu_workers_reserve_their_gpus_and_all_share_the_artifact_volume():
    services = _compose()["services"]
    assert "deploy" not in services["worker"]
    assert _default(services["worker"]["build"]["args"]["TORCH_INDEX"]) == "cpu"
    devices = {
        name: services[name]["deploy"]["resources"]["reservations"]["devices"] for name in WORKERS if name != "worker"
    }
    assert devices == {
        "gpu-worker": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}],
        "multi-gpu-worker": [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}],
    }
    for name in ("gpu-worker", "multi-gpu-worker"):
        assert _default(services[name]["build"]["args"]["TORCH_INDEX"]) == "cu128"
    for name in WORKERS:
        assert services[name]["volumes"] == services["web"]["volumes"] == ["ranklab-data:/data"]  # artifacts shared
        assert _default(services[name]["environment"]["RANKLAB_BROKER_URL"]) == "redis://redis:6379/0"
        assert (
            services[name]["environment"]["RANKLAB_DATABASE_URL"]
            == services["web"]["environment"]["RANKLAB_DATABASE_URL"]
        )
        assert services[name]["environment"]["RANKLAB_DATA_DIR"] == "/data"


def test_the_multi_gpu_worker_trains_in_several_processes_with_room_for_nccl():
    from app.settings import Settings

    multi = _compose()["services"]["multi-gpu-worker"]
    env = {key: _default(value) for key, value in multi["environment"].items() if key.startswith("RANKLAB_TRAIN_")}
    settings = Settings(**{key.removeprefix("RANKLAB_").lower(): value for key, value in env.items()}, _env_file=None)
    assert (settings.train_processes, settings.train_strategy, settings.train_mixed_precision) == (2, "ddp", "no")
    assert multi["shm_size"] == "16gb"


def test_web_and_workers_share_the_queue_routing():
    services = _compose()["services"]
    routing = {f"RANKLAB_{role.upper()}_GPU_CLASS" for role in ("train", "generate", "evaluate")}
    for name in ("web", *WORKERS):
        assert routing <= set(services[name]["environment"]), name
        assert all(_default(services[name]["environment"][key]) == "" for key in routing)


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
    for name in WORKERS:
        assert "RANKLAB_GENERATION_API_KEY" in services[name]["environment"]
    assert "RANKLAB_GENERATION_API_KEY" not in services["web"]["environment"]
