"""A round on a project of each feedback form through a real Celery worker: the round's tasks take
the form, labelers answer them over HTTP, and the reward model trains on the answers — pairwise
verdicts as rankings of two, Likert ratings grouped by point, a multi-aspect project with one score
head per aspect combined by the round's weights — before PPO and the next round.

Ranking and good/bad rounds run in test_loop.py and test_optimizers.py (KTO)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from app.models import RankingTask
from tests.loop.helpers import Api, label_everything
from tests.loop.test_loop import tiny_config

ASPECTS = [
    {"name": "helpfulness", "label": "Helpful", "scale": "likert"},
    {"name": "brevity", "label": "Brief", "scale": "ranking"},
]
FORMS = {
    "pairwise": ({}, 2),
    "likert": ({"likert_points": 5, "likert_labels": []}, 4),
    "multi_aspect": ({"likert_points": 5, "likert_labels": [], "overall_ranking": False, "aspects": ASPECTS}, 4),
}


@pytest.mark.parametrize(
    ("db_url", "form"),
    [("sqlite", "pairwise"), ("postgres", "likert"), ("sqlite", "multi_aspect")],
    indirect=["db_url"],
)
def test_a_round_on_each_feedback_form(app, db, client, admin_token, loop_project, tiny_model_dir, start_worker, form):
    project, labelers = loop_project
    settings, k = FORMS[form]
    project.feedback_form, project.form_settings, project.k_min, project.k_max = form, settings, k, k
    db.commit()
    api = Api(client, admin_token)
    worker = start_worker()
    changes: dict = {"k": k}
    if form == "multi_aspect":
        changes["reward"] = {"weights": {"helpfulness": 0.75, "brevity": 0.25}}
    round0 = api.post(f"/api/v1/projects/{project.id}/rounds", tiny_config(tiny_model_dir, **changes), expect=201)
    api.wait_status(round0["id"], "labeling", worker=worker)
    db.rollback()
    assert set(db.scalars(select(RankingTask.kind).where(RankingTask.round_id == round0["id"]))) == {form}

    assert label_everything(app, db, labelers, project.id) == 8
    round0 = api.wait_status(round0["id"], "done", worker=worker)
    reward = round0["metrics"]["reward"]
    # 4 prompts, one held out: 3 × 2 labelers train the reward model, 1 × 2 measure it.
    assert (reward["train_rankings"], reward["val_rankings"]) == (6, 2)
    assert 0.0 <= reward["val_accuracy"] <= 1.0 and reward["val_pairs"] > 0
    assert round0["metrics"]["policy"]["steps"] == 2
    if form == "multi_aspect":
        assert set(reward["val_accuracy_by_aspect"]) == {"helpfulness", "brevity"}
        models = {m["id"]: m for m in api.get(f"/api/v1/projects/{project.id}/models")}
        card = json.loads((Path(models[round0["reward_model_id"]]["artifact_path"]) / "ranklab_card.json").read_text())
        assert card["aspect_weights"] == {"helpfulness": 0.75, "brevity": 0.25}
    assert api.rounds(project.id)[0]["status"] == "labeling"  # the next round, of the same form


def test_weights_name_the_projects_aspects(db, client, admin_token, loop_project):
    project, _ = loop_project
    api = Api(client, admin_token)
    response = client.post(
        f"/api/v1/projects/{project.id}/rounds",
        json={"reward": {"weights": {"helpfulness": 1}}},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert response.status_code == 422
    assert (
        response.json()["detail"]
        == "reward.weights: only a multi-aspect project has aspects; this one's form is ranking"
    )
    project.feedback_form, project.form_settings = "multi_aspect", FORMS["multi_aspect"][0]
    project.k_min = 1
    db.commit()
    for weights, message in [
        ({"speed": 1}, "'speed' is not one of the project's aspects (helpfulness, brevity)"),
        ({"helpfulness": 0}, "give at least one aspect a weight above 0"),
    ]:
        response = client.post(
            f"/api/v1/projects/{project.id}/rounds",
            json={"reward": {"weights": weights}},
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        assert response.status_code == 422 and response.json()["detail"] == f"reward.weights: {message}"
    assert api.rounds(project.id) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_round_generates_from_a_served_model(
    app, db, client, admin_token, loop_project, tiny_model_dir, start_worker
):
    """generation.backend openai: the completions to label come from an OpenAI-compatible server
    (a real one on this machine), with the API key taken from the worker's environment; the round
    keeps its starting policy for training and names the served model on each completion."""
    from app.models import Completion
    from tests.openai_server import TEST_API_KEY, OpenAIServer

    project, _ = loop_project
    api = Api(client, admin_token)
    with OpenAIServer(api_key=TEST_API_KEY, model_name="served") as server:
        worker = start_worker(RANKLAB_GENERATION_API_KEY_TEAM=TEST_API_KEY)
        generation = {
            "backend": "openai",
            "base_url": server.url,
            "remote_model": "served",
            "api_key_env": "RANKLAB_GENERATION_API_KEY_TEAM",
        }
        round0 = api.post(
            f"/api/v1/projects/{project.id}/rounds", tiny_config(tiny_model_dir, generation=generation), expect=201
        )
        round0 = api.wait_status(round0["id"], "labeling", worker=worker)
        assert round0["metrics"]["generation"]["completions"] == 16
        assert {seen.authorization for seen in server.requests} == {f"Bearer {TEST_API_KEY}"}
    db.rollback()
    names = set(db.scalars(select(Completion.model_name).where(Completion.model_version_id == round0["policy_in_id"])))
    assert names == {f"served (served at {server.url})"}
    assert TEST_API_KEY not in worker.output()  # the key never reaches the worker's log
