"""An evaluation from launch to results through the product: an admin launches it over the API,
the answers are stored as GENERATE_EVAL stores them and open_for_labeling runs as the worker
calls it, two labelers judge through the labeling JSON API (each sees A and B in their own
order and never the versions), and the results and the training pairs come back right."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.evaluation import service
from app.models import Completion, Evaluation
from tests.api.conftest import bearer
from tests.evaluation.helpers import add_eval_completions, setup
from tests.factories import csrf_of, login, make_token


def _judge_everything(client: TestClient, db, project_id: int, labeler, prefers: int, policy_texts: set[str]) -> int:
    """Leases and judges every task it is given: the policy's answer wins when `prefers` is 1,
    loses when -1, ties when 0. Returns how many it judged."""
    login(client, labeler)
    db.rollback()  # a fresh snapshot, to read the session the login just made
    headers = {"X-CSRF-Token": csrf_of(client, db)}
    task = client.get(f"/api/v1/labeling/projects/{project_id}/next").json()["task"]
    judged = 0
    while task is not None:
        assert task["kind"] == "pairwise_eval" and len(task["completions"]) == 2
        assert "version" not in str(task).lower().replace("conversion", "")  # nothing says who wrote what
        a_is_policy = task["completions"][0]["text"] in policy_texts
        verdict = "tie" if prefers == 0 else ("A" if a_is_policy == (prefers > 0) else "B")
        answer = client.post(
            f"/api/v1/labeling/projects/{project_id}/assignments/{task['assignment_id']}/ranking",
            json={"verdict": verdict, "comment": "reason", "time_spent_ms": 1200},
            headers=headers,
        )
        assert answer.status_code == 200, answer.text
        judged += 1
        task = answer.json()["next"]
    return judged


def test_launch_label_and_read_an_evaluation(client, other_client, db):
    s = setup(db, prompts=4, overlap=2)
    auth = bearer(make_token(db, "admin", "export"))
    launched = client.post(
        f"/api/v1/projects/{s.project.id}/evaluations",
        json={"version_id": s.policy.id, "against": ["previous"], "prompts": 4},
        headers=auth,
    )
    assert launched.status_code == 201, launched.text
    evaluation = db.get(Evaluation, launched.json()["id"])
    # The answers exist already (setup made them with the default seed), as after a round's eval step.
    assert service.missing_completions(db, evaluation=evaluation) == {}
    assert service.open_for_labeling(db, evaluation) == 4
    db.commit()

    policy_texts = {c.text for c in db.query(Completion).filter(Completion.model_version_id == s.policy.id)}
    ann, bob = s.labelers
    assert _judge_everything(client, db, s.project.id, ann, +1, policy_texts) == 4
    assert _judge_everything(other_client, db, s.project.id, bob, 0, policy_texts) == 4

    body = client.get(f"/api/v1/evaluations/{evaluation.id}", headers=auth).json()
    assert body["status"] == "labeling" and body["progress"]["judgments"] == 8 and body["progress"]["share"] == 1.0
    (pair,) = body["results"]["comparisons"]
    assert (pair["a"], pair["b"], pair["wins"], pair["losses"], pair["ties"]) == (s.policy.id, s.base.id, 4, 0, 4)
    assert pair["split"]["rate"] == 0.75 and pair["excluded"]["rate"] == 1.0
    by_labeler = {row["labeler"]: row["split"]["rate"] for row in pair["per_labeler"]}
    assert by_labeler == {ann.email: 1.0, bob.email: 0.5}
    assert [r["version"] for r in body["results"]["leaderboard"]["ratings"]] == [s.policy.id, s.base.id]

    pairs = client.get(f"/api/v1/projects/{s.project.id}/exports/pairs?tasks=evaluation", headers=auth)
    rows = [line for line in pairs.text.splitlines() if line]
    assert len(rows) == 4 and all('"source": "evaluation"' in r for r in rows)  # bob's ties give no pair
    closed = client.post(f"/api/v1/evaluations/{evaluation.id}/close", headers=auth)
    assert closed.json()["status"] == "done"


def test_missing_answers_are_generated_only_for_whoever_lacks_them(db):
    """A new version joins an evaluation: only its answers are missing (the others are reused)."""
    s = setup(db, prompts=2)
    from tests.rounds.helpers import make_version

    sft = make_version(db, s.project, kind="sft")
    evaluation = service.launch(
        db, project_id=s.project.id, version_ids=[sft.id, s.policy.id, s.base.id], check_queue=False
    )
    db.commit()
    assert service.missing_completions(db, evaluation=evaluation) == {sft.id: [p.id for p in s.prompts]}
    add_eval_completions(db, sft, s.prompts)
    assert service.open_for_labeling(db, evaluation) == 2 * 3
