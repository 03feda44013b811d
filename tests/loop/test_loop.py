"""The whole loop through a real Celery worker: generate → label over HTTP → reward model → PPO →
the new policy's completions become the next round's tasks, with lineage — on SQLite with the
embedded SQL broker, and on Postgres with Redis."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from app.markdown import RENDERER_VERSION, render_markdown
from app.models import Completion, ModelVersion, RankingTask, RoundEvent, TaskCompletion
from tests.loop.helpers import Api, label_everything

TINY = {
    "k": 4,
    "prompts": {"count": 4, "validation_fraction": 0.25},
    "generation": {"max_new_tokens": 8, "prompts_per_task": 2},
    "reward": {"batch_rankings": 4, "max_length": 64, "lora_r": 4},
    "ppo": {"steps": 2, "batch_size": 2, "minibatch_size": 2, "ppo_epochs": 1, "max_new_tokens": 8, "lora_r": 4},
    "labeling": {"min_coverage": 1.0, "auto_start": True},
}


def tiny_config(model_dir: Path, **changes) -> dict:
    config = {**TINY, "model": str(model_dir)}
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


def task_model_versions(db, round_id: int) -> set[int | None]:
    db.rollback()  # a fresh snapshot: the worker wrote since the last read
    return set(
        db.scalars(
            select(Completion.model_version_id)
            .join(TaskCompletion)
            .join(RankingTask)
            .where(RankingTask.round_id == round_id)
        )
    )


def test_two_rounds_of_the_loop_with_lineage(app, db, client, admin_token, loop_project, tiny_model_dir, start_worker):
    project, labelers = loop_project
    api = Api(client, admin_token)
    worker = start_worker()

    # Round 0: the base model's completions become ranking tasks.
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", tiny_config(tiny_model_dir), expect=201)
    assert round0["status"] == "pending" and round0["number"] == 0
    round0 = api.wait_status(round0["id"], "labeling", worker=worker)
    assert round0["labeling"] == {"tasks": 4, "rankings": 0, "wanted": 8, "coverage": 0.0, "threshold_met": False}
    base_id = round0["policy_in_id"]
    assert task_model_versions(db, round0["id"]) == {base_id}
    assert round0["metrics"]["generation"]["completions"] == 16
    generated = db.execute(
        select(Completion.text, Completion.text_html, Completion.html_renderer).where(
            Completion.model_version_id == base_id
        )
    ).all()
    assert len(generated) == 16  # stored with their HTML, so the ranking page does not render them
    assert all(html == str(render_markdown(text)) and version == RENDERER_VERSION for text, html, version in generated)

    # Two labelers rank everything over HTTP; the last ranking starts training by itself.
    assert label_everything(app, db, labelers, project.id) == 8
    round0 = api.wait_status(round0["id"], "done", worker=worker)
    assert round0["finished_at"] is not None and round0["error_message"] is None
    reward, policy = round0["metrics"]["reward"], round0["metrics"]["policy"]
    assert reward["train_rankings"] == 6 and reward["val_rankings"] == 2  # one prompt of four held out
    assert 0.0 <= reward["val_accuracy"] <= 1.0 and reward["val_pairs"] > 0
    assert policy["steps"] == 2 and "kl" in policy and "score" in policy

    # Round 1 was created from the new policy and is open for labeling.
    rounds = api.rounds(project.id)
    assert [r["number"] for r in rounds] == [1, 0]
    round1 = rounds[0]
    assert round1["status"] == "labeling" and round1["policy_in_id"] == round0["policy_out_id"]
    assert task_model_versions(db, round1["id"]) == {round0["policy_out_id"]}

    # Second round: its reward model also scores round 0's model on these fresh rankings.
    label_everything(app, db, labelers, project.id)
    round1 = api.wait_status(round1["id"], "done", worker=worker)
    round0 = api.round(round0["id"])
    assert round0["metrics"]["reward_next_round"]["round"] == 1
    assert round0["metrics"]["reward_next_round"]["rankings"] == 8

    models = {m["id"]: m for m in api.get(f"/api/v1/projects/{project.id}/models")}
    p0, p1 = models[round0["policy_out_id"]], models[round1["policy_out_id"]]
    assert (p1["parent_id"], p0["parent_id"], models[base_id]["kind"]) == (p0["id"], base_id, "base")
    assert sorted(m["kind"] for m in models.values()) == ["base", "policy", "policy", "reward", "reward"]
    for version in (p0, p1, models[round0["reward_model_id"]]):
        assert (Path(version["artifact_path"]) / "ranklab_card.json").is_file()
    round2 = api.rounds(project.id)[0]
    assert (round2["number"], round2["status"]) == (2, "labeling")
    assert task_model_versions(db, round2["id"]) == {p1["id"]}

    # The UI polls our DB: progress lines and metric points were written along the way.
    db.rollback()
    kinds = dict(
        db.execute(
            select(RoundEvent.kind, func.count()).where(RoundEvent.round_id == round0["id"]).group_by(RoundEvent.kind)
        ).all()
    )
    assert kinds["log"] >= 5 and kinds["metric"] >= 3
    events = api.round(round0["id"], events_after=0)["events"]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert {"training_reward", "training_policy"} <= {e["stage"] for e in events}
    assert db.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.round_id == round0["id"])) == 2
