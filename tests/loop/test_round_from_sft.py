"""A round started from an SFT model version, through a real Celery worker (SQLite + SQL broker,
Postgres + Redis): the SFT model writes the completions to label, the reward model starts from it
(reward.init_from "sft", the default), and it is PPO's KL reference — the reference's logits equal
the SFT model's, not the pre-SFT base's. Plus which backbone `init_from` picks along a lineage."""

from __future__ import annotations

import torch
from sqlalchemy import select

from app.models import ModelVersion
from app.rounds import lifecycle
from tests.factories import make_project
from tests.loop.helpers import Api, label_everything
from tests.loop.test_loop import task_model_versions, tiny_config
from tests.rounds.helpers import make_version
from worker.loop.configs import reward_backbone


def _sft_adapter(tiny_model_dir, folder):
    """An SFT result as worker.ml writes it: a LoRA adapter on the tiny model (non-zero, so the SFT
    model differs from its base) with the tokenizer and an "sft" card."""
    from peft import LoraConfig, get_peft_model

    from worker.ml.models import load_causal_lm, load_tokenizer, save_artifact

    torch.manual_seed(0)
    base = load_causal_lm(tiny_model_dir, device="cpu")
    sft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    save_artifact(sft, load_tokenizer(tiny_model_dir), folder, {"kind": "sft", "base_model": str(tiny_model_dir)})
    return folder


def _logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(["say cat please"], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_a_round_from_an_sft_version_generates_with_it_and_keeps_it_as_reference(
    app, db, client, admin_token, loop_project, tiny_model_dir, start_worker, tmp_path
):
    from worker.ml.models import load_causal_lm, load_tokenizer
    from worker.ml.ppo_config import PPOConfig
    from worker.ml.ppo_policy import build_policy

    project, labelers = loop_project
    base = lifecycle.base_version(db, project_id=project.id, base_model=str(tiny_model_dir))
    db.commit()
    folder = _sft_adapter(tiny_model_dir, tmp_path / "sft")
    sft = make_version(db, project, kind="sft", name="sft", parent=base, artifact_path=str(folder))
    api = Api(client, admin_token)
    worker = start_worker()

    config = tiny_config(tiny_model_dir, evaluation={"metrics": False})
    config.pop("model")
    config["start_version_id"] = sft.id
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", config, expect=201)
    round0 = api.wait_status(round0["id"], "labeling", worker=worker)
    assert round0["policy_in_id"] == sft.id
    assert task_model_versions(db, round0["id"]) == {sft.id}  # the SFT model wrote the completions
    label_everything(app, db, labelers, project.id)
    round0 = api.wait_status(round0["id"], ("generating_next", "done"), worker=worker)

    db.rollback()
    reward = db.get_one(ModelVersion, round0["reward_model_id"])
    policy = db.get_one(ModelVersion, round0["policy_out_id"])
    assert reward.parent_id == sft.id and reward.config["model"] == str(folder)  # RM initialised from SFT
    assert policy.parent_id == sft.id

    # PPO's reference (the adapter disabled) is the SFT model, merged; not the pre-SFT base.
    tokenizer = load_tokenizer(tiny_model_dir)
    sft_logits = _logits(load_causal_lm(folder, device="cpu"), tokenizer)
    base_logits = _logits(load_causal_lm(tiny_model_dir, device="cpu"), tokenizer)
    assert not torch.allclose(sft_logits, base_logits, atol=1e-3)
    continued, _ = build_policy(
        PPOConfig(model=policy.artifact_path, lora_r=4, device="cpu", autocast=False), torch.device("cpu")
    )
    with continued.peft_model.disable_adapter():
        torch.testing.assert_close(_logits(continued.peft_model, tokenizer), sft_logits, atol=1e-5, rtol=1e-5)


def test_reward_init_from_picks_the_lineage_sft_model_or_the_base(db):
    project = make_project(db)
    base = make_version(db, project, kind="base")
    sft = make_version(db, project, kind="sft", parent=base)
    policy0 = make_version(db, project, kind="policy", parent=sft)
    policy1 = make_version(db, project, kind="policy", parent=policy0)
    assert reward_backbone(db, policy1, "sft").id == sft.id
    assert reward_backbone(db, sft, "sft").id == sft.id
    assert reward_backbone(db, policy1, "base").id == base.id
    plain = make_version(db, project, kind="policy", parent=base)
    assert reward_backbone(db, plain, "sft").id == base.id  # no SFT in the lineage: the base


def test_launch_refuses_a_reward_model_or_another_projects_version(db, client, admin_token, loop_project):
    project, _ = loop_project
    other = make_project(db)
    api = Api(client, admin_token)
    for version, words in (
        (make_version(db, project, kind="reward"), "reward model"),
        (make_version(db, other, kind="sft"), "no model version"),
        (_prompt_tuned(db, project), "prompt-tuning adapter"),
    ):
        answer = api.post(f"/api/v1/projects/{project.id}/rounds", {"start_version_id": version.id}, expect=422)
        assert answer["detail"].startswith("start_version_id: ") and words in answer["detail"], answer
    both = api.post(f"/api/v1/projects/{project.id}/rounds", {"start_version_id": 1, "model": "x"}, expect=422)
    assert "start_version_id" in both["message"]
    assert db.scalar(select(ModelVersion.id).where(ModelVersion.kind == "policy")) is None


def _prompt_tuned(db, project) -> ModelVersion:
    """An SFT version trained with prompt tuning: its soft prompt cannot be merged to train on."""
    version = make_version(db, project, kind="sft")
    version.config = {"peft_method": "prompt_tuning"}
    db.commit()
    return version
