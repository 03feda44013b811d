"""A judge in mode "compare" writes Rankings only to be measured against the humans: they stay out
of training data, exports and the human agreement figures, while a judgment that took a slot
(mode "slot") counts like a labeler's (app/judges/data_filter.py)."""

from __future__ import annotations

from app.admin import stats
from app.models import Ranking
from app.models.judges import AI_ROLE
from tests.factories import make_project, make_ranking, make_task, make_token, make_user
from worker.loop import data


def test_compare_only_judgments_are_not_labelling_data(db, client):
    project = make_project(db, overlap=3)
    human = make_user(db, projects=[project])
    judge = make_user(db, role=AI_ROLE, email="judge-v1@ai.invalid")
    slot_judge = make_user(db, role=AI_ROLE, email="judge-v2@ai.invalid")
    task = make_task(db, project, k=4)
    best_first = [[cid] for cid in task.completion_ids]
    make_ranking(db, task, human, best_first)
    make_ranking(db, task, slot_judge, best_first)  # through the handout: it holds an assignment
    db.add(Ranking(task_id=task.id, user_id=judge.id, project_id=project.id, groups=best_first[::-1]))  # compare
    db.commit()

    assert len(data.rankings(db, project_id=project.id)) == 2  # the human's and the slot judge's
    token = make_token(db, "export")
    exported = client.get(
        f"/api/v1/projects/{project.id}/exports/rankings", headers={"Authorization": f"Bearer {token}"}
    ).text.splitlines()
    assert len(exported) == 2 and "judge-v1" not in "".join(exported)
    counted = {row.user.email: row.rankings for row in stats.labeler_stats(db, project_id=project.id)}
    assert "judge-v1@ai.invalid" not in counted and counted[slot_judge.email] == 1
