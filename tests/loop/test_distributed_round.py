"""A training worker that owns several devices trains the round's reward model and its PPO
policy across all of them (Settings.train_processes; worker/ml/distributed.py,
distributed_policy.py): here 2 processes on gloo, as CI has no GPU, through a real Celery
worker. 1-process vs 2-process equality is tests/ml/test_distributed_*."""

from __future__ import annotations

import pytest

from tests.loop.helpers import Api, label_everything
from tests.loop.test_loop import tiny_config


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_round_trains_its_reward_model_in_two_processes(
    app, db, client, admin_token, loop_project, tiny_model_dir, start_worker
):
    project, labelers = loop_project
    api = Api(client, admin_token)
    worker = start_worker(RANKLAB_TRAIN_PROCESSES="2")
    config = tiny_config(tiny_model_dir, ppo={"steps": 1})
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", config, expect=201)
    api.wait_status(round0["id"], "labeling", worker=worker)
    label_everything(app, db, labelers, project.id)
    round0 = api.wait_status(round0["id"], "done", worker=worker)
    reward = round0["metrics"]["reward"]
    assert reward["processes"] == 2 and reward["train_rankings"] == 6 and 0.0 <= reward["val_accuracy"] <= 1.0
    # the policy step ran PPO in 2 processes too (TINY's batch of 2 prompts, one per rank)
    policy = round0["metrics"]["policy"]
    assert policy["optimizer"] == "ppo" and policy["processes"] == 2 and policy["steps"] == 1
