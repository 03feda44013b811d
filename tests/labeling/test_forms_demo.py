"""The feedback-form demo projects `ranklab bootstrap` seeds (app/demo_forms.py): each has tasks
of its form that its labeler can open, the script payload shown as text. SQLite and Postgres."""

from __future__ import annotations

from sqlalchemy import select

from app.demo import seed_demo
from app.demo_forms import FORM_DEMOS, PROMPTS_PER_DEMO
from app.models import Project, RankingTask
from tests.factories import login, make_user


def test_each_form_demo_has_tasks_of_its_form_that_the_labeler_can_open(client, db):
    labeler = make_user(db)
    seed_demo(db, labeler=labeler)
    db.commit()
    login(client, labeler)
    for form, (name, _settings, k, _guidelines) in FORM_DEMOS.items():
        project = db.scalars(select(Project).where(Project.name == name)).one()
        assert project.feedback_form == form and (project.k_min, project.k_max) == (k, k)
        tasks = db.scalars(select(RankingTask).where(RankingTask.project_id == project.id)).all()
        assert len(tasks) == PROMPTS_PER_DEMO and {t.kind for t in tasks} == {form}
        assert all(len(t.items) == k for t in tasks)
        page = client.get(f"/projects/{project.id}/label")
        assert page.status_code == 200, page.text
        assert "&lt;script" in page.text and "<script>alert" not in page.text  # the first task holds the payload
