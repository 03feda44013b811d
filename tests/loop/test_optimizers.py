"""Each policy optimizer a round may name runs a round through a real Celery worker: generate →
label over HTTP → reward model → DPO / RLOO / GRPO → the next round's completions from the new
policy, with its metrics on the round page. DPO also runs a second round on the rankings of its
policy line (iterative DPO), continuing the first round's adapter.

One backend per sampling optimizer (RLOO and GRPO share every line but the advantage, unit-tested
in tests/ml/test_rloo.py); DPO, which reads rankings across rounds, on both."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sqlalchemy import select

from app.models import RankingTask, RoundEvent
from tests.admin.helpers import admin_client
from tests.loop.helpers import Api, label_everything
from tests.loop.test_loop import tiny_config
from worker.loop.optimizers import OPTIMIZERS

SECTIONS = {
    "dpo": {"dpo": {"batch_rankings": 2, "max_length": 64, "lora_r": 4, "epochs": 2, "learning_rate": 1e-3}},
    "rloo": {"rloo": {"steps": 2, "prompts_per_step": 2, "minibatch_size": 4, "max_new_tokens": 8, "lora_r": 4}},
    "grpo": {"rloo": {"steps": 2, "prompts_per_step": 2, "minibatch_size": 4, "max_new_tokens": 8, "lora_r": 4}},
    # KTO's held-out AUC needs two held-out prompts (its reference point pairs prompts).
    "kto": {
        "kto": {"batch_prompts": 2, "max_length": 64, "lora_r": 4, "epochs": 2, "learning_rate": 1e-3},
        "prompts": {"validation_fraction": 0.5},
    },
}
CHART_KEYS = {
    "dpo": {"loss", "accuracy", "val_accuracy", "chosen_drift"},
    "rloo": {"score", "advantage_std", "kl"},
    "kto": {"loss", "val_auc", "reward_desirable", "kl"},
}
CHART_KEYS["grpo"] = CHART_KEYS["rloo"]
CHART_TITLES = {
    "dpo": "Held-out implicit-reward accuracy",
    "rloo": "Advantage spread (sd)",
    "grpo": "Groups with",
    "kto": "Held-out AUC (good above bad)",
}
FORMS = {"kto": "good_bad"}
"""A project of another feedback form than ranking for the optimizers that train on it."""


def task_kinds(db, round_id: int) -> str:
    db.rollback()
    (kind,) = set(db.scalars(select(RankingTask.kind).where(RankingTask.round_id == round_id)))
    return kind


def policy_metric_keys(db, round_id: int) -> set[str]:
    db.rollback()
    rows = db.scalars(
        select(RoundEvent.data).where(
            RoundEvent.round_id == round_id, RoundEvent.kind == "metric", RoundEvent.stage == "training_policy"
        )
    )
    return {key for data in rows for key in data}


@pytest.mark.parametrize(
    ("db_url", "optimizer"),
    [
        ("sqlite", "rloo"),
        ("postgres", "grpo"),
        ("sqlite", "dpo"),
        ("postgres", "dpo"),
        ("sqlite", "kto"),
        ("postgres", "kto"),
    ],
    indirect=["db_url"],
)
def test_a_round_with_each_optimizer(
    app, db, client, admin_token, loop_project, tiny_model_dir, start_worker, optimizer
):
    project, labelers = loop_project
    if optimizer in FORMS:  # no tasks yet, so the form may still change
        project.feedback_form = FORMS[optimizer]
        db.commit()
    api = Api(client, admin_token)
    worker = start_worker()
    config = tiny_config(tiny_model_dir, optimizer=optimizer, **SECTIONS[optimizer])
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", config, expect=201)
    api.wait_status(round0["id"], "labeling", worker=worker)
    assert label_everything(app, db, labelers, project.id) == 8
    round0 = api.wait_status(round0["id"], "done", worker=worker)
    assert round0["error_message"] is None

    # The policy step ran the chosen optimizer and saved a policy adapter any later step continues.
    policy = round0["metrics"]["policy"]
    assert policy["optimizer"] == optimizer
    models = {m["id"]: m for m in api.get(f"/api/v1/projects/{project.id}/models")}
    p0 = models[round0["policy_out_id"]]
    assert p0["name"] == f"round 0 policy ({OPTIMIZERS[optimizer].label})" and p0["parent_id"] == round0["policy_in_id"]
    card = json.loads((Path(p0["artifact_path"]) / "ranklab_card.json").read_text())
    assert card["kind"] == "policy"
    assert CHART_KEYS[optimizer] <= policy_metric_keys(db, round0["id"])
    if optimizer == "kto":
        # 2 train prompts × 2 labelers × 4 completions labelled good or bad; 2 prompts held out.
        assert (policy["train_examples"], policy["val_examples"]) == (16, 16)
        assert policy["val_auc_before"] == 0.5 and 0.0 <= policy["val_auc"] <= 1.0
    elif optimizer == "dpo":
        # 4 prompts, one held out for validation: 3 × 2 labelers train, 1 × 2 measure.
        assert (policy["train_rankings"], policy["val_rankings"]) == (6, 2)
        assert 0.0 <= policy["val_accuracy"] <= 1.0 and policy["val_accuracy_before"] == 0.5
        assert policy["val_loss_before"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at first
    else:
        assert card["optimizer"] == optimizer and policy["steps"] == 2
        assert {"score", "score_first", "kl", "advantage_std"} <= set(policy)

    # The round page draws this optimizer's charts.
    admin_client(client, db)
    page = client.get(f"/admin/rounds/{round0['id']}").text
    assert CHART_TITLES[optimizer] in page

    # The next round's completions come from the new policy.
    round1 = api.rounds(project.id)[0]
    assert (round1["number"], round1["status"], round1["policy_in_id"]) == (1, "labeling", p0["id"])
    if optimizer != "dpo":
        assert {"kind": FORMS.get(optimizer, "ranking")} == {"kind": task_kinds(db, round1["id"])}
        return

    # Iterative DPO: round 1 trains on rounds 0 and 1's rankings, continuing round 0's adapter.
    label_everything(app, db, labelers, project.id)
    round1 = api.wait_status(round1["id"], "done", worker=worker)
    policy1 = round1["metrics"]["policy"]
    assert (policy1["train_rankings"], policy1["val_rankings"]) == (12, 4)
    p1 = {m["id"]: m for m in api.get(f"/api/v1/projects/{project.id}/models")}[round1["policy_out_id"]]
    assert p1["parent_id"] == p0["id"]
    adapter = json.loads((Path(p1["artifact_path"]) / "adapter_config.json").read_text())
    # Continued from round 0's adapter: the same base (the tiny model, the reference), not p0's folder.
    assert Path(adapter["base_model_name_or_path"]).resolve() == tiny_model_dir.resolve()
    # Its reference is still the line's start, so before training the policy already differs from it.
    assert abs(policy1["val_loss_before"] - math.log(2)) > 1e-4
