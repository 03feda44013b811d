"""The labeler pages and JSON API through HTTP (TestClient), on SQLite and Postgres."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from app.models import Assignment, Prompt, Ranking, RankingTask, utcnow
from tests.factories import csrf_of, login, make_eval_task, make_project, make_ranking, make_task, make_user
from tests.labeling.helpers import fresh, snapshot

HX = {"HX-Request": "true"}


def _form_fields(html: str) -> dict:
    assignment_id = int(re.search(r'data-assignment-id="(\d+)"', html).group(1))
    ranking = json.loads(re.search(r'name="ranking" value="([^"]*)"', html).group(1).replace("&#34;", '"'))
    return {"assignment_id": assignment_id, "ranking": ranking}


def _labeler_with_task(client, db, *, overlap=1, tasks=2, **project_fields):
    project = make_project(db, overlap=overlap, **project_fields)
    for _ in range(tasks):
        make_task(db, project)
    user = make_user(db, projects=[project])
    login(client, user)
    return project, user


def test_the_queue_page_lists_only_my_projects_with_progress(client, db):
    mine, _other = make_project(db, name="Mine"), make_project(db, name="Not mine")
    make_task(db, mine)
    user = make_user(db, projects=[mine])
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    login(client, user)
    page = client.get("/")
    assert page.status_code == 200
    assert "Mine" in page.text and "Not mine" not in page.text
    assert f'href="/projects/{mine.id}/label"' in page.text and "Start labeling" in page.text
    assert "<strong>0</strong> done by you · <strong>1</strong> left for you" in page.text


def test_the_queue_page_counts_rankings_and_verdicts_as_done_not_ranked(client, db):
    """A verdict on a blind comparison is not a ranking: the projects list says "done", which is
    true for both kinds (the labeling page says "ranked" or "judged" per task kind)."""
    project = make_project(db, name="Mixed", overlap=1)
    ranked, judged = make_task(db, project), make_eval_task(db, project)
    make_task(db, project)
    user = make_user(db, projects=[project])
    make_ranking(db, ranked, user, [[c] for c in ranked.completion_ids])
    make_ranking(db, judged, user, [judged.completion_ids])  # a tie
    login(client, user)
    page = client.get("/")
    assert page.status_code == 200
    assert "<strong>2</strong> done by you · <strong>1</strong> left for you" in page.text
    assert "ranked by you" not in page.text


def test_the_ranking_page_renders_whole_or_as_a_block_for_htmx(client, db):
    project, _ = _labeler_with_task(client, db, guidelines="# Be *kind*\n<script>alert(1)</script>")
    page = client.get(f"/projects/{project.id}/label")
    assert page.status_code == 200 and page.headers["vary"] == "HX-Request"
    assert page.text.startswith("<!doctype html>") and "<h1>Be <em>kind</em></h1>" in page.text
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)" in page.text
    assert "/static/vendor/Sortable.min.js" in page.text and "/static/js/ranking.js" in page.text

    block = client.get(f"/projects/{project.id}/label", headers=HX)
    assert block.status_code == 200 and "<html" not in block.text and "Guidelines" not in block.text
    assert _form_fields(block.text) == _form_fields(page.text)  # same lease on refresh


def test_untrusted_prompt_and_completion_text_is_rendered_inert(client, db):
    project = make_project(db, overlap=1)
    task = make_task(
        db,
        project,
        texts=[
            "<script>window.__pwned=1</script>",
            '<img src=x onerror="window.__pwned=2">',
            "[click](javascript:alert(1))",
            "```\ncode <b>x</b>\n```",
        ],
    )
    db.execute(
        update(Prompt)
        .where(Prompt.id == task.prompt_id)
        .values(
            text=None,
            messages=[
                {"role": "system", "content": "Be brief <iframe src=//evil>"},
                {"role": 'user" onmouseover="x', "content": "Hi <b>there</b>"},
            ],
        )
    )
    db.commit()
    login(client, make_user(db, projects=[project]))
    html = client.get(f"/projects/{project.id}/label").text
    for raw in ("<script>window", "<img src=x", 'href="javascript:', "<iframe", "<b>there", "<b>x", 'onmouseover="x'):
        assert raw not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert 'class="turn turn-system"' in html and 'class="turn turn-other"' in html


def test_submitting_swaps_in_the_next_task_and_stores_the_ranking(client, db):
    project, user = _labeler_with_task(client, db, overlap=1, tasks=2)
    page = client.get(f"/projects/{project.id}/label")
    fields = _form_fields(page.text)
    first_id = fields["ranking"][0][0]
    groups = [fields["ranking"][0] + fields["ranking"][1]] + fields["ranking"][2:]  # a tie on top
    response = client.post(
        f"/projects/{project.id}/label/{fields['assignment_id']}",
        headers={**HX, "X-CSRF-Token": csrf_of(client, db)},
        data={
            "ranking": json.dumps(groups),
            "flag": [f"{first_id}:unsafe"],
            "none_acceptable": "on",
            "time_spent_ms": "5300",
            "comment": "fine",
        },
    )
    assert response.status_code == 200, response.text
    assert "<html" not in response.text and "Saved." in response.text
    assert _form_fields(response.text)["assignment_id"] != fields["assignment_id"]
    assert "<strong>1</strong> ranked by you" in response.text

    fresh(db)
    ranking = db.scalar(select(Ranking).where(Ranking.user_id == user.id))
    assert ranking.groups == groups and ranking.flags == {str(first_id): ["unsafe"]}
    assert ranking.none_acceptable and ranking.time_spent_ms == 5300 and ranking.comment == "fine"

    # a retry of the same submission answers the same next task and stores nothing new
    retry = client.post(
        f"/projects/{project.id}/label/{fields['assignment_id']}",
        headers={**HX, "X-CSRF-Token": csrf_of(client, db)},
        data={"ranking": json.dumps(groups)},
    )
    assert retry.status_code == 200
    assert _form_fields(retry.text)["assignment_id"] == _form_fields(response.text)["assignment_id"]
    fresh(db)
    assert db.scalar(select(func.count()).select_from(Ranking)) == 1


def test_a_plain_form_post_redirects_to_the_next_task(client, db):
    project, _ = _labeler_with_task(client, db)
    fields = _form_fields(client.get(f"/projects/{project.id}/label").text)
    response = client.post(
        f"/projects/{project.id}/label/{fields['assignment_id']}",
        follow_redirects=False,
        data={"ranking": json.dumps(fields["ranking"]), "csrf_token": csrf_of(client, db)},
    )
    assert response.status_code == 303 and response.headers["location"] == f"/projects/{project.id}/label"


def test_state_changes_need_the_csrf_token(client, db):
    project, _ = _labeler_with_task(client, db)
    fields = _form_fields(client.get(f"/projects/{project.id}/label").text)
    before = snapshot(db)
    response = client.post(
        f"/projects/{project.id}/label/{fields['assignment_id']}",
        headers=HX,
        data={"ranking": json.dumps(fields["ranking"])},
    )
    assert response.status_code == 403 and "CSRF" in response.text
    assert snapshot(db) == before


def test_an_invalid_ranking_is_shown_inline_with_422_and_nothing_is_stored(client, db):
    project, _ = _labeler_with_task(client, db)
    fields = _form_fields(client.get(f"/projects/{project.id}/label").text)
    before = snapshot(db)
    url = f"/projects/{project.id}/label/{fields['assignment_id']}"
    headers = {**HX, "X-CSRF-Token": csrf_of(client, db)}

    response = client.post(url, headers=headers, data={"ranking": json.dumps(fields["ranking"][1:])})
    assert response.status_code == 422 and "<html" not in response.text
    assert "Please fix:" in response.text and "are missing; rank every completion" in response.text
    response = client.post(url, headers=headers, data={"ranking": "[[1,"})
    assert response.status_code == 422 and "ranking: not valid JSON" in response.text
    response = client.post(url, headers=headers, data={"ranking": json.dumps(fields["ranking"]), "time_spent_ms": "x"})
    assert response.status_code == 422 and "time_spent_ms: Input should be a valid integer" in response.text
    response = client.post(
        url,
        headers=headers,
        data={"ranking": json.dumps(fields["ranking"]), "flag": [f"{fields['ranking'][0][0]}:made_up"]},
    )
    assert response.status_code == 422 and "unknown flag &#39;made_up&#39;" in response.text
    assert snapshot(db) == before


def test_a_late_submission_nobody_needs_any_more_gets_a_409_explaining_why(client, db):
    project, _ = _labeler_with_task(client, db, overlap=1, tasks=1)
    fields = _form_fields(client.get(f"/projects/{project.id}/label").text)
    db.execute(
        update(Assignment)
        .where(Assignment.id == fields["assignment_id"])
        .values(lease_expires_at=utcnow() - timedelta(minutes=5))
    )
    db.commit()
    with type(client)(client.app) as other:  # another labeler takes the freed slot and completes the task
        login(other, make_user(db, projects=[project]))
        other_fields = _form_fields(other.get(f"/projects/{project.id}/label").text)
        assert (
            other.post(
                f"/projects/{project.id}/label/{other_fields['assignment_id']}",
                headers={**HX, "X-CSRF-Token": csrf_of(other, db)},
                data={"ranking": json.dumps(other_fields["ranking"])},
            ).status_code
            == 200
        )

    before = snapshot(db)
    response = client.post(
        f"/projects/{project.id}/label/{fields['assignment_id']}",
        headers={**HX, "X-CSRF-Token": csrf_of(client, db)},
        data={"ranking": json.dumps(fields["ranking"])},
    )
    assert response.status_code == 409
    assert "completed by other labelers while your lease had expired; your ranking was not needed" in response.text
    assert "Go to your next task" in response.text
    assert snapshot(db) == before


def test_skip_needs_a_reason_and_then_shows_the_next_task(client, db):
    project, user = _labeler_with_task(client, db, overlap=1, tasks=2)
    fields = _form_fields(client.get(f"/projects/{project.id}/label").text)
    url = f"/projects/{project.id}/label/{fields['assignment_id']}/skip"
    headers = {**HX, "X-CSRF-Token": csrf_of(client, db)}
    response = client.post(url, headers=headers, data={"reason": "  "})
    assert response.status_code == 422 and "reason: Value error, say why you skip this task" in response.text

    response = client.post(url, headers=headers, data={"reason": "Other", "detail": "not my language"})
    assert response.status_code == 200 and "Skipped." in response.text
    assert _form_fields(response.text)["assignment_id"] != fields["assignment_id"]
    fresh(db)
    assert db.get(Assignment, fields["assignment_id"]).skip_reason == "Other: not my language"


def test_an_empty_queue_says_so_and_polls(client, db):
    project, _ = _labeler_with_task(client, db, tasks=0)
    page = client.get(f"/projects/{project.id}/label")
    assert "Queue empty" in page.text
    assert f'hx-get="/projects/{project.id}/label" hx-trigger="every 10s"' in page.text


def test_projects_i_do_not_belong_to_are_refused(client, db):
    project, _ = _labeler_with_task(client, db)
    other = make_project(db)
    make_task(db, other)
    response = client.get(f"/projects/{other.id}/label")
    assert response.status_code == 403 and "ask an admin to add you" in response.text
    assert client.get(f"/projects/{other.id + 99}/label").status_code == 404
    api = client.get(f"/api/v1/labeling/projects/{other.id}/next")
    assert api.status_code == 403 and "not a member" in api.json()["detail"]
    fresh(db)
    assert db.scalar(select(func.count()).select_from(Assignment).where(Assignment.project_id == other.id)) == 0


def test_the_json_api_hands_out_takes_rankings_idempotently_and_skips(client, db):
    project, user = _labeler_with_task(client, db, overlap=1, tasks=3, flags=["unsafe"])
    headers = {"X-CSRF-Token": csrf_of(client, db)}
    task = client.get(f"/api/v1/labeling/projects/{project.id}/next").json()["task"]
    assert task["flags"] == ["unsafe"] and len(task["completions"]) == 4
    assert client.get(f"/api/v1/labeling/projects/{project.id}/next").json()["task"] == task

    url = f"/api/v1/labeling/projects/{project.id}/assignments/{task['assignment_id']}/ranking"
    body = {
        "ranking": [[c["id"]] for c in task["completions"]],
        "flags": {str(task["completions"][0]["id"]): ["unsafe"]},
    }
    assert client.post(url, json=body).status_code == 403  # no CSRF header
    first = client.post(url, json=body, headers=headers).json()
    again = client.post(url, json=body, headers=headers).json()
    assert not first["duplicate"] and again["duplicate"] and again["ranking_id"] == first["ranking_id"]
    assert again["next"] == first["next"] and first["next"]["task_id"] != task["task_id"]

    bad = client.post(
        f"/api/v1/labeling/projects/{project.id}/assignments/{first['next']['assignment_id']}/ranking",
        json={"ranking": [["a"]]},
        headers=headers,
    )
    assert bad.status_code == 422 and "ranking.0.0" in bad.json()["message"]

    skip_url = f"/api/v1/labeling/projects/{project.id}/assignments/{first['next']['assignment_id']}/skip"
    skipped = client.post(skip_url, json={"reason": "broken prompt"}, headers=headers)
    assert skipped.status_code == 200 and skipped.json()["next"]["task_id"] not in (
        task["task_id"],
        first["next"]["task_id"],
    )
    fresh(db)
    assert db.scalar(select(RankingTask.rankings_count).where(RankingTask.id == task["task_id"])) == 1


def test_the_api_answers_401_when_not_logged_in(client, db):
    project = make_project(db)
    response = client.get(f"/api/v1/labeling/projects/{project.id}/next")
    assert response.status_code == 401 and response.json() == {"detail": "Not logged in."}


def test_concurrent_submits_wait_their_turn_for_the_labeling_threads_and_all_land(settings):
    """Six labelers submit at the same moment on a process allowed one submit at a time
    (settings.labeling_threads): they queue, none fails or deadlocks, every ranking is stored."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from app.labeling.hot_path import labeling_limiter
    from app.main import create_app
    from tests.factories import PASSWORD

    app = create_app(settings.model_copy(update={"labeling_threads": 1}))
    db = sessionmaker(bind=app.state.engine, expire_on_commit=False)()
    try:
        project = make_project(db, overlap=1)
        for _ in range(8):
            make_task(db, project)
        users = [make_user(db, projects=[project]) for _ in range(6)]

        async def ready_to_submit(client: httpx.AsyncClient, user) -> tuple[str, dict, dict]:
            await client.post("/login", data={"email": user.email, "password": PASSWORD})
            page = (await client.get(f"/projects/{project.id}/label")).text
            csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', page).group(1)
            fields = _form_fields(page)
            url = f"/projects/{project.id}/label/{fields['assignment_id']}"
            return url, {"ranking": json.dumps(fields["ranking"])}, {**HX, "X-CSRF-Token": csrf}

        async def run() -> tuple[list[httpx.Response], int, int]:
            transport = httpx.ASGITransport(app=app)
            clients = [httpx.AsyncClient(transport=transport, base_url="http://testserver") for _ in users]
            prepared = [await ready_to_submit(c, u) for c, u in zip(clients, users, strict=True)]
            limiter = labeling_limiter(app)
            most_borrowed = most_waiting = 0
            submits = asyncio.gather(
                *(
                    c.post(url, data=form, headers=headers)
                    for c, (url, form, headers) in zip(clients, prepared, strict=True)
                )
            )
            while not submits.done():
                stats = limiter.statistics()
                most_borrowed = max(most_borrowed, stats.borrowed_tokens)
                most_waiting = max(most_waiting, stats.tasks_waiting)
                await asyncio.sleep(0.001)
            for client in clients:
                await client.aclose()
            return submits.result(), most_borrowed, most_waiting

        # Its own thread: the browser tests' Playwright keeps an event loop running on this one.
        with ThreadPoolExecutor(max_workers=1) as thread:
            responses, most_borrowed, most_waiting = thread.submit(asyncio.run, run()).result()
        assert [r.status_code for r in responses] == [200] * 6
        assert all("Saved." in r.text for r in responses)
        assert most_borrowed == 1 and most_waiting >= 1  # one at a time, the others queued
        fresh(db)
        assert sorted(db.scalars(select(Ranking.user_id))) == sorted(u.id for u in users)
    finally:
        db.close()
        app.state.engine.dispose()
