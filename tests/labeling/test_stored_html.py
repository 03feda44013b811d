"""Completions are rendered to HTML once, when stored, and the ranking page shows that HTML only
while it was made by the current renderer (app/markdown.py): a renderer change, a safety fix
above all, takes effect for every stored completion at once."""

from __future__ import annotations

from sqlalchemy import select, update

from app.markdown import RENDERER_VERSION, render_markdown
from app.models import Completion, Role
from tests.factories import login, make_project, make_task, make_token, make_user

ANSWER = "Steps:\n\n1. **mix**\n2. bake <script>alert(1)</script>\n\n```py\nprint('x')\n```"


def _page(client, project_id: int) -> str:
    response = client.get(f"/projects/{project_id}/label")
    assert response.status_code == 200, response.text
    return response.text


def test_uploaded_completions_are_stored_with_their_html(client, db):
    project = make_project(db, k_min=4, k_max=4)
    auth = {"Authorization": f"Bearer {make_token(db, 'upload')}"}
    assert (
        client.post(
            f"/api/v1/projects/{project.id}/prompts",
            headers=auth,
            json={"prompts": [{"external_id": "q1", "text": "How?"}]},
        ).status_code
        == 200
    )
    texts = [ANSWER] + [f"answer *{i}*" for i in range(3)]
    response = client.post(
        f"/api/v1/projects/{project.id}/prompts/q1/completions",
        headers=auth,
        json={"completions": [{"text": t} for t in texts]},
    )
    assert response.status_code == 201, response.text

    stored = db.execute(
        select(Completion.text, Completion.text_html, Completion.html_renderer).order_by(Completion.id)
    ).all()
    assert [(text, html, version) for text, html, version in stored] == [
        (text, str(render_markdown(text)), RENDERER_VERSION) for text in texts
    ]
    assert "&lt;script&gt;" in stored[0].text_html and "<script>" not in stored[0].text_html


def test_the_page_shows_stored_html_of_the_current_renderer_and_renders_anything_else_again(app, db, client):
    project = make_project(db, k_min=4, k_max=4)
    task = make_task(db, project, texts=["current one", "older one", "not stored", "also not stored"])
    current, older, *_ = db.scalars(
        select(Completion).where(Completion.prompt_id == task.prompt_id).order_by(Completion.id)
    ).all()
    # Marked HTML that differs from what the text renders to, to see which one the page shows.
    db.execute(
        update(Completion)
        .where(Completion.id == current.id)
        .values(text_html="<p>stored by the current renderer</p>", html_renderer=RENDERER_VERSION)
    )
    db.execute(
        update(Completion)
        .where(Completion.id == older.id)
        .values(
            text_html="<p>stored by an older renderer <img src=x onerror=alert(1)></p>",
            html_renderer=RENDERER_VERSION - 1,
        )
    )
    db.commit()
    login(client, make_user(db, role=Role.labeler, projects=[project]))

    page = _page(client, project.id)
    assert "stored by the current renderer" in page and "current one" not in page
    assert "older one" in page and "stored by an older renderer" not in page and "onerror" not in page
    assert "not stored" in page and "also not stored" in page  # rows from before the column: rendered now
