"""Two worker machines against one Postgres + Redis and one artifact volume (docs/deployment.md):
a generation worker on the plain `generate` queue and a training worker of GPU class a100 on
`train.a100,evaluate.a100`, each started by `python -m worker.fleet` in a working directory, temp
dir and environment of its own. A round runs end to end; Celery's stored results say which
worker ran each task from which queue, and round 1's completions come from the policy the
training worker wrote, read by the generation worker from the shared volume."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from app.models import Completion, ModelVersion
from app.settings import Settings
from tests.fleet.conftest import GPU_CLASS
from tests.loop.helpers import Api, WorkerProcess, label_everything
from tests.loop.test_loop import task_model_versions, tiny_config
from worker.celery_app import (
    EVALUATE_ROUND,
    GENERATE_BATCH,
    GENERATE_NEXT,
    TRAIN_POLICY,
    TRAIN_REWARD,
)


class FleetWorker(WorkerProcess):
    """`python -m worker.fleet --roles ... --gpu-class ...` on a machine of its own: its own working
    directory and TMPDIR, the same database, broker, routing settings and data volume."""

    def __init__(self, settings: Settings, *, machine: Path, roles: str, gpu_class: str):
        machine.mkdir(parents=True)
        (machine / "tmp").mkdir()
        env = {
            "TMPDIR": str(machine / "tmp"),
            "RANKLAB_TRAIN_GPU_CLASS": settings.train_gpu_class,
            "RANKLAB_GENERATE_GPU_CLASS": settings.generate_gpu_class,
            "RANKLAB_EVALUATE_GPU_CLASS": settings.evaluate_gpu_class,
        }
        super().__init__(settings, log_path=machine / "worker.log", env=env)
        self.machine, self.node = machine, f"{roles.replace(',', '-')}-{uuid.uuid4().hex[:6]}@{machine.name}"
        self.args = ["--roles", roles, "--gpu-class", gpu_class, "--name", self.node]

    def start(self) -> None:
        # No gossip or mingle: nothing here depends on them, and mingle waits for replies at start.
        command = [sys.executable, "-m", "worker.fleet", *self.args, "--without-gossip", "--without-mingle"]
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(
            command,
            cwd=self.machine,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )


def task_results(url: str) -> list[dict]:
    """Celery's stored results (result_extended): each task's name, args, worker node and queue."""
    client = redis.Redis.from_url(url)
    found = [json.loads(raw) for key in client.scan_iter("celery-task-meta-*") if (raw := client.get(key))]
    return [r for r in found if r["status"] == "SUCCESS"]


@pytest.fixture
def fleet(settings, tmp_path):
    started: list[FleetWorker] = []

    def start(name: str, roles: str, gpu_class: str) -> FleetWorker:
        worker = FleetWorker(settings, machine=tmp_path / name, roles=roles, gpu_class=gpu_class)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.discard()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_round_runs_on_two_machines_each_step_on_its_role(
    app, db, client, settings, admin_token, loop_project, tiny_model_dir, fleet
):
    project, labelers = loop_project
    api = Api(client, admin_token)
    generator = fleet("gen-machine", "generate", "default")
    trainer = fleet("gpu-machine", "train,evaluate", GPU_CLASS)

    round0 = api.post(
        f"/api/v1/projects/{project.id}/rounds", tiny_config(tiny_model_dir, ppo={"steps": 1}), expect=201
    )
    api.wait_status(round0["id"], "labeling", worker=generator)
    label_everything(app, db, labelers, project.id)
    round0 = api.wait_status(round0["id"], "done", timeout=180, worker=trainer)
    round1 = api.rounds(project.id)[0]
    assert (round1["number"], round1["status"], round1["policy_in_id"]) == (1, "labeling", round0["policy_out_id"])

    ran = {(r["name"], tuple(r["args"])): (r["worker"], r["queue"]) for r in task_results(settings.broker_url)}
    on_generator, on_trainer = (generator.node, "generate"), (trainer.node, f"train.{GPU_CLASS}")
    expected = {
        (GENERATE_BATCH, (round0["id"], 0)): on_generator,
        (GENERATE_BATCH, (round0["id"], 1)): on_generator,
        (TRAIN_REWARD, (round0["id"],)): on_trainer,
        (TRAIN_POLICY, (round0["id"],)): on_trainer,
        (EVALUATE_ROUND, (round0["id"],)): (trainer.node, f"evaluate.{GPU_CLASS}"),
        (GENERATE_NEXT, (round0["id"],)): on_generator,
        (GENERATE_BATCH, (round1["id"], 0)): on_generator,
        (GENERATE_BATCH, (round1["id"], 1)): on_generator,
    }
    logs = f"--- generator ---\n{generator.output()}\n--- trainer ---\n{trainer.output()}"
    assert {key: ran.get(key) for key in expected} == expected, logs

    # The policy the training machine wrote to the volume is what the generation machine read.
    db.rollback()
    policy = db.get(ModelVersion, round0["policy_out_id"])
    assert Path(policy.artifact_path).is_relative_to(settings.artifacts_dir)
    assert (Path(policy.artifact_path) / "ranklab_card.json").is_file()
    assert task_model_versions(db, round1["id"]) == {policy.id}
    assert db.scalar(select(Completion.id).where(Completion.model_version_id == policy.id).limit(1)) is not None
    # Nothing a step needed was left in a machine's own folder: only its log and its temp dir.
    for worker in (generator, trainer):
        assert sorted(p.name for p in worker.machine.iterdir()) == ["tmp", "worker.log"]
