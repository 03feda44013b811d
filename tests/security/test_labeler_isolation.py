"""A labeler never sees or touches another labeler's work, even in the same project: every
labeler-facing answer is checked for a ranking's comment, and another's assignment is a 404."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import Assignment, Ranking
from tests.factories import csrf_of, login, make_project, make_task, make_user
from tests.labeling.helpers import snapshot

SECRET_COMMENT = "completion two is subtly wrong about TCP"


def test_a_labeler_cannot_see_or_change_another_labelers_ranking(app, db):
    project = make_project(db, overlap=2)  # both labelers rank the same task
    make_task(db, project)
    alice, bob = make_user(db, projects=[project]), make_user(db, projects=[project])
    with TestClient(app) as alice_client, TestClient(app) as bob_client:
        login(alice_client, alice)
        login(bob_client, bob)
        alice_csrf, bob_csrf = csrf_of(alice_client, db), csrf_of(bob_client, db)
        db.rollback()
        api = f"/api/v1/labeling/projects/{project.id}"

        task = alice_client.get(f"{api}/next").json()["task"]
        ranking = [[c["id"]] for c in task["completions"]]
        response = alice_client.post(
            f"{api}/assignments/{task['assignment_id']}/ranking",
            json={"ranking": ranking, "comment": SECRET_COMMENT},
            headers={"X-CSRF-Token": alice_csrf},
        )
        assert response.status_code == 200
        before = snapshot(db)
        assert db.scalar(select(Ranking.comment).where(Ranking.user_id == alice.id)) == SECRET_COMMENT

        # Bob retries Alice's submission (a retry of one's own returns the stored ranking) and skips her task.
        answers = [
            bob_client.post(
                f"{api}/assignments/{task['assignment_id']}/ranking",
                json={"ranking": ranking[::-1]},
                headers={"X-CSRF-Token": bob_csrf},
            ),
            bob_client.post(
                f"{api}/assignments/{task['assignment_id']}/skip",
                json={"reason": "unclear"},
                headers={"X-CSRF-Token": bob_csrf},
            ),
            bob_client.post(
                f"/projects/{project.id}/label/{task['assignment_id']}", data={"ranking": "[]", "csrf_token": bob_csrf}
            ),
        ]
        for response in answers:
            assert response.status_code == 404 and "You hold no task" in response.text
            assert "ranking_id" not in response.text and SECRET_COMMENT not in response.text
        assert snapshot(db) == before  # nothing of Alice's (or anyone's) changed
        assert db.scalar(select(Assignment.state).where(Assignment.user_id == alice.id)) == "submitted"

        # Everything Bob's labeling pages and API show him: the same task, never Alice's judgement.
        for path in ("/", f"/projects/{project.id}/label", f"{api}/next"):
            response = bob_client.get(path)
            assert response.status_code == 200, path
            assert SECRET_COMMENT not in response.text and str(alice.email) not in response.text, path
        bob_task = bob_client.get(f"{api}/next").json()["task"]
        assert bob_task["task_id"] == task["task_id"] and bob_task["assignment_id"] != task["assignment_id"]
