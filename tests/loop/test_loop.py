"""The whole loop through a real Celery worker: generate → label over HTTP → reward model → PPO →
the new policy's completions become the next round's tasks, with lineage — on SQLite with the
embedded SQL broker, and on Postgres with Redis."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select, update

from app.markdown import RENDERER_VERSION, render_markdown
from app.models import (
    Completion,
    Evaluation,
    ModelVersion,
    Ranking,
    RankingTask,
    RoundEvent,
    TaskCompletion,
    TrainingRound,
)
from tests.admin.helpers import admin_client
from tests.loop.eval_checks import (
    EVAL_SETTINGS,
    check_version_metrics,
    eval_answers,
    human_evaluation,
    scores_by_rm,
    upload_eval_prompts,
    version_evals,
)
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
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
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
    """Also the evaluating step with an eval set (tests/loop/eval_checks.py): every round's new
    policy is measured on the eval prompts and a human evaluation is launched."""
    project, labelers = loop_project
    api = Api(client, admin_token)
    worker = start_worker()
    upload_eval_prompts(api, project.id)

    # Round 0: the base model's completions become ranking tasks.
    config = tiny_config(tiny_model_dir, evaluation=EVAL_SETTINGS)
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", config, expect=201)
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
    check_round0_evaluation(db, api, round0)

    # Round 1 was created from the new policy and is open for labeling.
    rounds = api.rounds(project.id)
    assert [r["number"] for r in rounds] == [1, 0]
    round1 = rounds[0]
    assert round1["status"] == "labeling" and round1["policy_in_id"] == round0["policy_out_id"]
    assert task_model_versions(db, round1["id"]) == {round0["policy_out_id"]}

    # Second round: its reward model also scores round 0's model on these fresh rankings.
    label_everything(app, db, labelers, project.id)
    round1 = api.wait_status(round1["id"], "done", worker=worker)
    check_round1_evaluation(db, api, round0, round1)
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

    # A second delivery of round 1's evaluating step (a redelivered message, here: the step set
    # running again and its task enqueued by retry) stores nothing twice.
    check_evaluating_again(db, api, worker, round1)


def check_round0_evaluation(db, api: Api, round0: dict) -> None:
    """Round 0: base (= previous) and the new policy answered the 3 eval prompts once each; the
    round's RM scored them; one VersionEval per version; a human evaluation of the two opened."""
    base_id, policy_id, rm_id = round0["policy_in_id"], round0["policy_out_id"], round0["reward_model_id"]
    assert eval_answers(db) == {base_id: 3, policy_id: 3}
    assert scores_by_rm(db) == {rm_id: 6}
    rows = version_evals(db, reward_model_id=rm_id)
    assert set(rows) == {base_id, policy_id} and {r["round_id"] for r in rows.values()} == {round0["id"]}
    for metrics in rows.values():
        check_version_metrics(metrics, prompts=3)
    assert rows[base_id]["kl_to_reference"] == 0.0  # the base is round 0's PPO reference
    assert rows[base_id]["roles"] == ["base", "previous"] and rows[policy_id]["roles"] == ["new"]
    assert rows[policy_id]["own_rm_score"] == rows[policy_id]["rm_score"]  # trained against this RM
    versus = rows[policy_id]["lc_win_rate_vs_previous"]
    assert versus["prompts"] == 3 and 0 <= versus["lc_win_rate"] <= 1 and 0 <= versus["win_rate"] <= 1
    assert versus["lc_win_rate_ci"][0] <= versus["lc_win_rate_ci"][1]
    assert len(rows[policy_id]["samples"]) == 3 and "lc_win_rate_vs_base" not in rows[policy_id]
    summary = round0["metrics"]["evaluation"]
    assert summary["versions"] == {"base": base_id, "previous": base_id, "new": policy_id}
    assert summary["by_role"]["new"]["rm_score"] == rows[policy_id]["rm_score"]
    evaluation, task_versions = human_evaluation(db, round_id=round0["id"])
    assert evaluation.status == "labeling" and evaluation.comparisons == [[policy_id, base_id]]
    assert task_versions == [{policy_id, base_id}] * 3  # the metric answers, reused


def check_round1_evaluation(db, api: Api, round0: dict, round1: dict) -> None:
    """Round 1: only the new policy needed answers; round 1's RM scored all 9 eval answers; rows
    for base, previous and new; the LC win rate against both opponents."""
    base_id, p0, p1 = round0["policy_in_id"], round0["policy_out_id"], round1["policy_out_id"]
    rm0, rm1 = round0["reward_model_id"], round1["reward_model_id"]
    assert eval_answers(db) == {base_id: 3, p0: 3, p1: 3}
    assert scores_by_rm(db) == {rm0: 6, rm1: 9}
    rows = version_evals(db, reward_model_id=rm1)
    assert set(rows) == {base_id, p0, p1}
    for metrics in rows.values():
        check_version_metrics(metrics, prompts=3)
    assert rows[p0]["own_rm_score"] == version_evals(db, reward_model_id=rm0)[p0]["rm_score"]
    assert rows[base_id]["own_rm_score"] is None  # the base was trained against no RM
    assert {"lc_win_rate_vs_previous", "lc_win_rate_vs_base", "samples"} <= set(rows[p1])
    events = [e["message"] for e in api.round(round1["id"], events_after=0)["events"]]
    assert any(m.startswith("eval metrics on 3 prompts: new policy RM score") for m in events)
    evaluation, _tasks = human_evaluation(db, round_id=round1["id"])
    assert evaluation.comparisons == [[p1, p0]]
    # round 0's evaluation was judged through the labeling API while round 1 was labeled
    judged = human_evaluation(db, round_id=round0["id"])[0]
    judgments = select(func.count()).select_from(Ranking).join(RankingTask, RankingTask.id == Ranking.task_id)
    assert db.scalar(judgments.where(RankingTask.evaluation_id == judged.id)) == 3 * 2  # 3 tasks, overlap 2
    # the round page's Evaluation card shows what the worker stored (tests/rounds: its layout)
    admin_client(api.client, db)
    page = api.client.get(f"/admin/rounds/{round1['id']}", headers={"HX-Request": "true"}).text
    assert page.count('data-metric="rm_score"') == 3 and 'data-lc-vs="previous policy"' in page
    assert 'data-lc-vs="base"' in page and "LC reward win rate vs previous" in page


def check_evaluating_again(db, api: Api, worker, round1: dict) -> None:
    before = (eval_answers(db), scores_by_rm(db), version_evals(db, reward_model_id=round1["reward_model_id"]))
    db.execute(update(TrainingRound).where(TrainingRound.id == round1["id"]).values(status="evaluating"))
    db.commit()
    api.post(f"/api/v1/rounds/{round1['id']}/retry")
    api.wait_status(round1["id"], "generating_next", worker=worker)
    after = (eval_answers(db), scores_by_rm(db), version_evals(db, reward_model_id=round1["reward_model_id"]))
    assert after == before
    assert db.scalar(select(func.count()).select_from(Evaluation).where(Evaluation.round_id == round1["id"])) == 1
