"""/api/v1 for evaluations: launch (both ways of choosing versions), refusals naming the field,
the eval set, reading results with intervals, close and cancel, token scopes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.evaluation import service
from app.models import RankingTask
from tests.api.conftest import bearer
from tests.evaluation.helpers import add_prompts, judge, opened, setup
from tests.factories import make_project, make_token
from tests.rounds.helpers import make_version


@pytest.fixture
def admin_auth(db) -> dict[str, str]:
    return bearer(make_token(db, "admin"))


def test_launch_list_and_read_an_evaluation(client, db, admin_auth):
    s = setup(db)
    answer = client.post(
        f"/api/v1/projects/{s.project.id}/evaluations",
        json={"version_ids": [s.policy.id, s.base.id], "prompts": 2, "name": "r0 vs base"},
        headers=admin_auth,
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "generating" and body["name"] == "r0 vs base"
    assert body["comparisons"] == [[s.policy.id, s.base.id]] and body["config"]["prompts"] == 2
    assert body["progress"]["tasks_expected"] == 2 and body["results"]["comparisons"][0]["n"] == 0
    listed = client.get(f"/api/v1/projects/{s.project.id}/evaluations", headers=admin_auth)
    assert [e["id"] for e in listed.json()] == [body["id"]]

    preset = client.post(
        f"/api/v1/projects/{s.project.id}/evaluations",
        json={"version_id": s.policy.id, "against": ["previous", "base", "sft"]},
        headers=admin_auth,
    )
    assert preset.status_code == 201, preset.text
    assert preset.json()["comparisons"] == [[s.policy.id, s.base.id]]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"version_ids": ["A"]}, 422, "version_ids"),
        ({"version_ids": [1]}, 422, "version_ids: choose at least two"),
        ({"version_ids": [1, 999999]}, 422, "version_ids: no model version 999999"),
        ({"version_ids": [1, "other"]}, 422, "version_ids: model version"),
        ({}, 422, "version_ids: missing"),
        ({"version_id": 1}, 422, "against: missing"),
        ({"version_id": 1, "against": ["best"]}, 422, "against"),
        ({"version_ids": [1, 2], "prompts": 0}, 422, "prompts"),
        ({"version_ids": [1, 2], "comparisons": [[1, 1]]}, 422, "comparisons[0]"),
    ],
)
def test_launch_refusals_name_the_field(client, db, admin_auth, body, status, words):
    s = setup(db)
    other = make_version(db, make_project(db), kind="base")
    mapping = {1: s.policy.id, 2: s.base.id, "other": other.id}
    for key in ("version_ids",):
        if key in body and all(v in mapping or v == 999999 for v in body[key]):
            body = {**body, key: [mapping.get(v, v) for v in body[key]]}
    if "version_id" in body:
        body = {**body, "version_id": s.policy.id}
    if "comparisons" in body:
        body = {**body, "comparisons": [[s.policy.id, s.policy.id]]}
    answer = client.post(f"/api/v1/projects/{s.project.id}/evaluations", json=body, headers=admin_auth)
    assert answer.status_code == status, answer.text
    detail = answer.json().get("message") or answer.json()["detail"]
    assert words in str(detail), detail


def test_launch_without_eval_prompts_says_how_to_make_them(client, db, admin_auth):
    project = make_project(db)
    a, b = make_version(db, project, kind="base"), make_version(db, project, kind="policy")
    add_prompts(db, project, 3, split="train")
    answer = client.post(
        f"/api/v1/projects/{project.id}/evaluations", json={"version_ids": [a.id, b.id]}, headers=admin_auth
    )
    assert answer.status_code == 422 and "prompts: the project has no eval prompts" in answer.json()["detail"]

    held = client.post(f"/api/v1/projects/{project.id}/eval-set", json={"count": 2, "seed": 1}, headers=admin_auth)
    assert held.status_code == 200, held.text
    assert held.json()["eval_prompts"] == 2 and len(held.json()["moved"]) == 2
    too_many = client.post(f"/api/v1/projects/{project.id}/eval-set", json={"count": 5}, headers=admin_auth)
    assert too_many.status_code == 422 and too_many.json()["detail"].startswith("count: only 1 prompt")
    progress = client.get(f"/api/v1/projects/{project.id}/progress", headers=admin_auth).json()
    assert progress["eval_prompts"] == 2
    again = client.post(
        f"/api/v1/projects/{project.id}/evaluations", json={"version_ids": [a.id, b.id]}, headers=admin_auth
    )
    assert again.status_code == 201 and again.json()["config"]["prompts"] == 2


def test_results_give_win_rates_per_labeler_and_the_leaderboard(client, db, admin_auth):
    """3 prompts, 2 labelers (overlap 2): ann prefers the policy on all 3; bob prefers it once,
    the base once, and calls one both bad. Overall: 4 wins, 1 loss, 1 both bad of 6, so ties
    split (4 + ½)/6 = 0.75 and ties excluded 4/5 = 0.8."""
    s = setup(db, prompts=3, overlap=2)
    evaluation = opened(db, s)
    ann, bob = s.labelers
    tasks = list(
        db.scalars(select(RankingTask).where(RankingTask.evaluation_id == evaluation.id).order_by(RankingTask.id))
    )
    for task in tasks:
        judge(db, task, ann, "win", winner_version=s.policy.id)
    judge(db, tasks[0], bob, "win", winner_version=s.policy.id)
    judge(db, tasks[1], bob, "win", winner_version=s.base.id)
    judge(db, tasks[2], bob, "both_bad")

    body = client.get(f"/api/v1/evaluations/{evaluation.id}", headers=admin_auth).json()
    assert body["status"] == "labeling"
    assert body["progress"] | {"generation": None} == {
        "tasks": 3,
        "tasks_expected": 3,
        "tasks_complete": 3,
        "judgments": 6,
        "wanted": 6,
        "share": 1.0,
        "generation": None,
    }
    (pair,) = body["results"]["comparisons"]
    assert (pair["a"], pair["b"], pair["wins"], pair["losses"], pair["ties"], pair["both_bad"]) == (
        s.policy.id,
        s.base.id,
        4,
        1,
        0,
        1,
    )
    assert pair["split"]["rate"] == pytest.approx(0.75) and pair["excluded"]["rate"] == pytest.approx(0.8)
    assert pair["split"]["low"] < 0.75 < pair["split"]["high"]
    by_labeler = {row["labeler"]: row for row in pair["per_labeler"]}
    assert by_labeler[ann.email]["split"]["rate"] == 1.0 and by_labeler[bob.email]["both_bad"] == 1
    assert "half a win" in body["results"]["tie_rule"]
    board = body["results"]["leaderboard"]
    assert board["anchor"] == s.base.id and [r["version"] for r in board["ratings"]] == [s.policy.id, s.base.id]
    assert board["ratings"][1]["elo"] == 1000.0 and board["ratings"][0]["elo_low"] < board["ratings"][0]["elo"]


def test_close_and_cancel_over_the_api(client, db, admin_auth):
    s = setup(db, prompts=2)
    evaluation = opened(db, s)
    closed = client.post(f"/api/v1/evaluations/{evaluation.id}/close", headers=admin_auth)
    assert closed.status_code == 200 and closed.json()["status"] == "done"
    again = client.post(f"/api/v1/evaluations/{evaluation.id}/cancel", headers=admin_auth)
    assert again.status_code == 409 and again.json()["detail"].startswith("status: evaluation")
    missing = client.get("/api/v1/evaluations/999999", headers=admin_auth)
    assert missing.status_code == 404 and "evaluation_id" in missing.json()["detail"]


def test_only_admin_tokens_reach_evaluations(client, db):
    s = setup(db)
    evaluation = service.launch(db, project_id=s.project.id, version_ids=[s.policy.id, s.base.id], check_queue=False)
    db.commit()
    export = bearer(make_token(db, "export"))
    assert client.get(f"/api/v1/evaluations/{evaluation.id}", headers=export).status_code == 403
    assert client.get(f"/api/v1/evaluations/{evaluation.id}").status_code == 401


def test_prompts_upload_into_the_eval_set_but_completions_do_not(client, db, admin_auth):
    project = make_project(db)
    upload = bearer(make_token(db, "upload"))
    prompts = [{"external_id": "q1", "text": "Name a prime.", "split": "eval"}, {"external_id": "q2", "text": "Hi"}]
    stored = client.post(f"/api/v1/projects/{project.id}/prompts", json={"prompts": prompts}, headers=upload)
    assert stored.status_code == 200 and stored.json()["created"] == 2
    assert [p.external_id for p in service.eval_prompts(db, project_id=project.id, limit=None)] == ["q1"]
    line = {
        "external_id": "q3",
        "text": "Say hi",
        "split": "eval",
        "completions": [{"text": f"hi {i}"} for i in range(4)],
    }
    answer = client.post(
        f"/api/v1/projects/{project.id}/completions/jsonl",
        content=(json.dumps(line) + "\n").encode(),
        headers={**upload, "Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["rejected"] == 1 and answer.json()["errors"][0]["reason"].startswith("split: eval prompts")


def test_launch_with_the_queue_down_is_a_503_with_retry_after(settings, db, admin_auth):
    """A broker nobody listens on (a closed local port): refused before anything is stored, with
    the same Retry-After as a round launch, on the API and on the page."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.models import Evaluation
    from app.refusals import QUEUE_RETRY_AFTER_SECONDS
    from tests.factories import csrf_of, login, make_user

    s = setup(db)
    admin = make_user(db, role="admin")
    down = create_app(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    try:
        with TestClient(down) as client:
            answer = client.post(
                f"/api/v1/projects/{s.project.id}/evaluations",
                json={"version_ids": [s.policy.id, s.base.id]},
                headers=admin_auth,
            )
            assert answer.status_code == 503 and answer.json()["detail"].startswith("queue:"), answer.text
            assert answer.headers["retry-after"] == str(QUEUE_RETRY_AFTER_SECONDS)
            login(client, admin)
            page = client.post(
                f"/admin/projects/{s.project.id}/evaluations",
                data={"version_ids": [str(s.policy.id), str(s.base.id)], "csrf_token": csrf_of(client, db)},
            )
            assert page.status_code == 503 and page.headers["retry-after"] == str(QUEUE_RETRY_AFTER_SECONDS)
        db.rollback()
        assert db.scalar(select(Evaluation.id).where(Evaluation.project_id == s.project.id)) is None
    finally:
        down.state.engine.dispose()
