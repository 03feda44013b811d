"""Queues by role and GPU class (worker/celery_app.queue_for): the settings decide where each kind
of task goes, every enqueue site asks queue_for, and the fleet CLI builds a worker's queue list.
The fleet end to end, on real workers, is test_two_workers.py."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.models import TrainingRound
from app.models.jobs import TrainingJob
from app.rounds import lifecycle
from app.rounds.queue import pending
from app.settings import ROOT, Settings
from app.sft import jobs
from worker import fleet
from worker.celery_app import (
    DEFAULT_QUEUES,
    EVALUATE_ROUND,
    GENERATE_EVAL,
    GENERATE_NEXT,
    JUDGE_RUN,
    TASK_ROLES,
    TRAIN_POLICY,
    TRAIN_REWARD,
    TRAIN_SFT,
    queue_for,
    solo_worker_command,
    unserved_evaluate,
)

CLASSES = Settings(train_gpu_class="a100", evaluate_gpu_class="a100", generate_gpu_class="l4", _env_file=None)
PLAIN = Settings(_env_file=None)


def test_a_role_goes_to_its_plain_queue_unless_the_settings_name_a_gpu_class():
    assert [queue_for(role, PLAIN) for role in ("train", "generate", "evaluate")] == list(DEFAULT_QUEUES)
    assert [queue_for(role, CLASSES) for role in ("train", "generate", "evaluate")] == [
        "train.a100",
        "generate.l4",
        "evaluate.a100",
    ]
    assert queue_for("train", CLASSES, gpu_class="") == "train"  # an explicit class wins over the settings
    assert queue_for("train", PLAIN, gpu_class="h100") == "train.h100"
    with pytest.raises(ValueError, match="role: 'rank' is not one of train, generate, evaluate"):
        queue_for("rank", PLAIN)
    with pytest.raises(ValueError, match="gpu_class: 'A100' is not lower-case"):
        queue_for("train", PLAIN, gpu_class="A100")


def test_a_gpu_class_that_cannot_name_a_queue_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv("RANKLAB_TRAIN_GPU_CLASS", "a100.big")  # a dot would make `train.a100.big`
    with pytest.raises(ValidationError) as error:
        Settings(_env_file=None)
    assert error.value.errors()[0]["loc"] == ("train_gpu_class",)
    monkeypatch.setenv("RANKLAB_TRAIN_GPU_CLASS", "a100-80gb")
    assert queue_for("train", Settings(_env_file=None)) == "train.a100-80gb"


def test_every_task_has_the_role_the_docs_give_it():
    assert {name: TASK_ROLES[name] for name in (TRAIN_REWARD, TRAIN_POLICY, TRAIN_SFT)} == dict.fromkeys(
        (TRAIN_REWARD, TRAIN_POLICY, TRAIN_SFT), "train"
    )
    assert TASK_ROLES[EVALUATE_ROUND] == TASK_ROLES[GENERATE_EVAL] == "evaluate"
    assert TASK_ROLES[GENERATE_NEXT] == TASK_ROLES[JUDGE_RUN] == "generate"
    for name, role in lifecycle.STEP_TASKS.values():  # a round step is enqueued with its task's role
        assert TASK_ROLES[name] == role, name


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("status", "task", "queue"),
    [
        ("training_reward", TRAIN_REWARD, "train.a100"),
        ("training_policy", TRAIN_POLICY, "train.a100"),
        ("evaluating", EVALUATE_ROUND, "evaluate.a100"),
        ("generating_next", GENERATE_NEXT, "generate.l4"),
    ],
)
def test_round_steps_and_jobs_are_enqueued_on_the_sessions_gpu_class(db, status, task, queue):
    """The session's settings (the web's or the worker's) route the step; nothing is sent, as the
    session rolls back instead of committing (in a transaction: a rollback of none drops nothing)."""
    db.info["settings"] = CLASSES
    db.connection()
    assert lifecycle.enqueue_step(db, training_round=TrainingRound(id=7, status=status)) == [task]
    jobs.enqueue(db, job=TrainingJob(id=3, kind="sft"))
    assert [(m.name, m.args, m.queue) for m in pending(db)] == [(task, (7,), queue), (TRAIN_SFT, (3,), "train.a100")]
    db.rollback()
    db.info["settings"] = PLAIN
    db.connection()
    lifecycle.enqueue_step(db, training_round=TrainingRound(id=7, status=status))
    assert pending(db)[0].queue == queue.split(".")[0]
    db.rollback()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_rounds_own_gpu_class_wins_over_the_deployments(db):
    db.info["settings"] = CLASSES
    db.connection()
    for status, queue in (("training_reward", "train.h100"), ("evaluating", "evaluate.h100")):
        lifecycle.enqueue_step(db, training_round=TrainingRound(id=7, status=status, config={"gpu_class": "h100"}))
        assert pending(db)[-1].queue == queue
    lifecycle.enqueue_step(db, training_round=TrainingRound(id=7, status="training_reward", config={"gpu_class": ""}))
    assert pending(db)[-1].queue == "train.a100"  # empty: the deployment's class for the role
    db.rollback()


def test_no_enqueue_site_names_a_queue_of_its_own():
    """Every `enqueue_on_commit(..., queue=...)` in app/ and worker/ asks queue_for, so a GPU class
    set in the settings reaches every kind of task."""
    sites = []
    for path in [*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("worker").rglob("*.py")]:
        text = path.read_text()
        if "enqueue_on_commit(" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "enqueue_on_commit":
                (queue,) = [k.value for k in node.keywords if k.arg == "queue"]
                assert isinstance(queue, ast.Call) and getattr(queue.func, "id", None) == "queue_for", (
                    f"{path.relative_to(ROOT)}:{node.lineno} enqueues without queue_for"
                )
                sites.append(path.relative_to(ROOT).as_posix())
    assert {"app/rounds/lifecycle.py", "app/sft/jobs.py", "app/judges/service.py"} <= set(sites)
    assert "app/evaluation/service.py" in sites


def test_the_embedded_worker_listens_on_every_default_queue_and_the_configured_classes():
    command = solo_worker_command(settings=PLAIN)
    assert command[command.index("-Q") + 1] == "train,generate,evaluate"
    command = solo_worker_command(settings=CLASSES)
    assert command[command.index("-Q") + 1].split(",") == [
        *DEFAULT_QUEUES,
        "train.a100",
        "generate.l4",
        "evaluate.a100",
    ]


def test_a_worker_started_the_old_way_is_told_it_leaves_evaluation_unserved():
    """`-Q train,generate` was the documented worker before evaluation had its queue; such a worker
    logs a warning at start (celeryd_after_setup; seen by hand: "legacy@x serves train and generate
    but not evaluate: ..."). A worker of one role, or of all three, is not warned."""
    assert unserved_evaluate(["train", "generate"]) == ["evaluate"]
    assert unserved_evaluate(["train.a100", "generate.a100", "generate", "evaluate"]) == ["evaluate.a100"]
    for queues in (
        ["train"],
        ["generate"],
        ["train", "evaluate"],
        list(DEFAULT_QUEUES),
        fleet.queues(["train"], ["a100"]),
    ):
        assert unserved_evaluate(queues) == [], queues


def test_the_fleet_cli_prints_the_celery_command_for_its_roles_and_classes():
    run = subprocess.run(
        [sys.executable, "-m", "worker.fleet", "--roles", "train,evaluate", "--gpu-class", "a100,default", "--print"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    command = run.stdout.split()
    assert command[1:6] == ["-m", "celery", "-A", "worker.celery_app", "worker"]
    assert "--concurrency=1" in command and "--prefetch-multiplier=1" in command
    assert command[command.index("-Q") + 1] == "train.a100,evaluate.a100,train,evaluate"
    assert command[command.index("-n") + 1] == "train-evaluate-a100-default@%h"
    assert fleet.queues(["generate"]) == ["generate"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--roles", "train,rank"], "--roles: rank is not one of train, generate, evaluate"),
        (["--gpu-class", "A100"], "gpu_class: 'A100' is not lower-case"),
        (["--gpu-class", ","], "gpu_class: name at least one GPU class, or default"),
    ],
)
def test_the_fleet_cli_refuses_unknown_roles_and_bad_classes(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        fleet.main([*argv, "--print"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
