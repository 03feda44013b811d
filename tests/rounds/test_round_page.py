"""The round page: admin only, CSRF on actions, the live fragment (htmx polling) in each state,
escaped logs, charts from metric events, and the actions that call the rounds service."""

import re

from fastapi.routing import APIRoute
from sqlalchemy import select

from app.models import Project, Role, TrainingRound
from app.rounds.pages import router
from tests.admin.helpers import admin_client, fresh
from tests.factories import csrf_of, login, make_project, make_ranking, make_user
from tests.rounds.helpers import add_event, make_round, make_round_task, make_version

HX = {"HX-Request": "true"}


def step_states(html: str) -> dict[str, str]:
    return dict(
        (label, state)
        for state, label in re.findall(
            r'<li class="step step-(\w+)".*?<span class="step-label">([^<]+)</span>', html, re.S
        )
    )


def test_round_pages_are_admin_only(client, other_client, db):
    project = make_project(db)
    training_round = make_round(db, project)
    version = make_version(db, project, training_round=training_round)
    gets = [
        f"/admin/projects/{project.id}/rounds",
        f"/admin/projects/{project.id}/rounds/new",
        f"/admin/rounds/{training_round.id}",
        f"/admin/projects/{project.id}/models",
        f"/admin/models/{version.id}",
        f"/admin/models/{version.id}/download",
    ]
    for path in gets:
        response = other_client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=/admin"), path
    login(client, make_user(db, projects=[project]))
    csrf = csrf_of(client, db)
    for path in gets:
        assert client.get(path).status_code == 403, path
    for action in ("start-training", "cancel", "retry"):
        response = client.post(f"/admin/rounds/{training_round.id}/{action}", data={"csrf_token": csrf})
        assert response.status_code == 403, action
    assert client.post(f"/admin/projects/{project.id}/rounds", data={"csrf_token": csrf}).status_code == 403
    fresh(db)
    assert db.get(TrainingRound, training_round.id).status == "generating"
    assert db.scalar(select(TrainingRound).where(TrainingRound.number == 1)) is None


def test_every_rounds_post_needs_the_csrf_token(client, db):
    admin_client(client, db)
    project = make_project(db)
    training_round = make_round(db, project, status="labeling")
    posts = [route.path for route in router.routes if isinstance(route, APIRoute) and "POST" in route.methods]
    assert len(posts) == 4
    for path in posts:
        response = client.post(path.format(project_id=project.id, round_id=training_round.id), data={"k": "4"})
        assert response.status_code == 403 and "CSRF" in response.text, path
    fresh(db)
    assert db.get(TrainingRound, training_round.id).status == "labeling"


def test_same_url_answers_page_or_polling_fragment(client, db):
    admin_client(client, db)
    project = make_project(db, name="Support")
    training_round = make_round(db, project, number=3, status="generating", progress=0.25)
    url = f"/admin/rounds/{training_round.id}"
    full = client.get(url)
    assert full.status_code == 200 and full.headers["vary"] == "HX-Request"
    assert "<html" in full.text and "Round 3" in full.text and "Support" in full.text
    fragment = client.get(url, headers=HX)
    assert fragment.status_code == 200 and fragment.headers["vary"] == "HX-Request"
    assert "<html" not in fragment.text and fragment.text.lstrip().startswith('<div id="round-live"')
    assert f'hx-get="{url}" hx-trigger="every 2s" hx-swap="outerHTML"' in fragment.text
    assert "data-percent>25%" in fragment.text


def test_fragment_shows_the_running_state(client, db):
    admin_client(client, db)
    project = make_project(db)
    training_round = make_round(
        db,
        project,
        status="training_policy",
        progress=0.42,
        eta_seconds=125,
        current_step="ppo step 3/8: score 0.41, kl 0.02",
    )
    html = client.get(f"/admin/rounds/{training_round.id}", headers=HX).text
    assert step_states(html) == {
        "Generating": "done",
        "Labeling": "done",
        "Training reward model": "done",
        "Training policy": "current",
        "Evaluating": "todo",
        "Generating next": "todo",
        "Done": "todo",
    }
    assert "data-percent>42%" in html and "ETA 2 min 5 s" in html
    assert "ppo step 3/8: score 0.41, kl 0.02" in html
    assert "Cancel round" in html and "Start training now" not in html and "Retry" not in html


def test_finished_rounds_stop_polling(client, db):
    admin_client(client, db)
    project = make_project(db)
    done = make_round(db, project, number=0, status="done")
    failed = make_round(
        db,
        project,
        number=1,
        status="failed",
        error_step="training_reward",
        error_message="CUDA out of memory <b>while</b> scoring",
    )
    cancelled = make_round(db, project, number=2, status="cancelled")
    add_event(db, cancelled, stage="labeling", message="cancelled during labeling")
    for row in (done, failed, cancelled):
        html = client.get(f"/admin/rounds/{row.id}", headers=HX).text
        assert "hx-trigger" not in html and f'data-status="{row.status}"' in html
        assert "Cancel round" not in html
    assert set(step_states(client.get(f"/admin/rounds/{done.id}", headers=HX).text).values()) == {"done"}
    html = client.get(f"/admin/rounds/{failed.id}", headers=HX).text
    assert step_states(html)["Training reward model"] == "failed" and step_states(html)["Labeling"] == "done"
    assert "Failed during Training reward model" in html
    assert "CUDA out of memory &lt;b&gt;while&lt;/b&gt; scoring" in html and "<b>while" not in html
    assert "Retry from the failed step" in html
    html = client.get(f"/admin/rounds/{cancelled.id}", headers=HX).text
    assert step_states(html)["Labeling"] == "cancelled" and step_states(html)["Training policy"] == "todo"


def test_log_tail_is_escaped_newest_last_and_limited(client, db):
    admin_client(client, db)
    project = make_project(db)
    training_round = make_round(db, project)
    for i in range(60):
        add_event(db, training_round, stage="generating", message=f"line {i:02d} <script>alert({i})</script>")
    add_event(db, training_round, kind="metric", stage="generating", step=1, data={"x": 1}, message="metric, not a log")
    html = client.get(f"/admin/rounds/{training_round.id}", headers=HX).text
    shown = re.findall(r"line (\d\d) ", html)
    assert shown == [f"{i:02d}" for i in range(10, 60)]
    assert "<script>alert" not in html and "&lt;script&gt;alert(59)&lt;/script&gt;" in html
    assert "metric, not a log" not in html


def test_charts_draw_the_metric_points(client, db):
    admin_client(client, db)
    project = make_project(db)
    training_round = make_round(db, project, status="training_policy")
    for step, accuracy in ((1, 0.55), (2, 0.61), (3, 0.7)):
        add_event(
            db, training_round, kind="metric", stage="training_reward", step=step, data={"val_accuracy": accuracy}
        )
    for step in range(1, 6):
        add_event(
            db,
            training_round,
            kind="metric",
            stage="training_policy",
            step=step,
            data={"score": 0.1 * step, "kl": 0.01 * step, "entropy": 2.0 - 0.1 * step, "response_length": 20 + step},
        )
    # a reward-model 'kl' must not leak into the PPO KL chart
    add_event(db, training_round, kind="metric", stage="training_reward", step=9, data={"kl": 99.0})
    html = client.get(f"/admin/rounds/{training_round.id}", headers=HX).text
    figures = dict(
        re.findall(r'<figure class="chart"><figcaption>([^<]+?) <span.*?<polyline[^>]* points="([^"]+)"', html, re.S)
    )
    assert {title: len(points.split()) for title, points in figures.items()} == {
        "RM validation accuracy": 3,
        "PPO reward": 5,
        "KL to reference": 5,
        "Entropy": 5,
        "Response length": 5,
    }
    assert "step 3 · 0.7" in html and "step 5 · 25 tokens" in html and "step 5 · 0.05<" in html
    assert "99" not in re.search(r"KL to reference.*?</figure>", html, re.S).group(0)
    assert "Charted per step once" not in html


def test_reward_summary_without_a_step_is_drawn_at_its_last_step(client, db):
    """The worker logs the reward model's held-out accuracy once, when training ends (step None)."""
    admin_client(client, db)
    training_round = make_round(db, make_project(db), status="training_policy")
    add_event(
        db,
        training_round,
        kind="metric",
        stage="training_reward",
        data={"val_accuracy": 0.64, "steps": 12, "train_rankings": 40},
    )
    add_event(db, training_round, kind="metric", stage="training_reward", data={"val_accuracy": None, "steps": 3})
    add_event(db, training_round, kind="metric", stage="labeling", data={"tasks": 16})  # no chart wants it
    html = client.get(f"/admin/rounds/{training_round.id}", headers=HX).text
    figure = re.search(r'<figure class="chart"><figcaption>RM validation accuracy.*?</figure>', html, re.S).group(0)
    assert "step 12 · 0.64" in figure and "1 point, latest 0.64" in figure and "<polyline" not in figure
    assert html.count('<figure class="chart">') == 1


def test_charts_wait_for_points(client, db):
    admin_client(client, db)
    training_round = make_round(db, make_project(db))
    html = client.get(f"/admin/rounds/{training_round.id}", headers=HX).text
    assert "<svg" not in html
    assert (
        "Charted per step once training reports RM validation accuracy, PPO reward, KL to reference, Entropy, "
        "Response length."
    ) in html


def test_labeling_progress_and_start_training(client, db):
    _admin, csrf = admin_client(client, db)
    project = make_project(db, overlap=2)
    labeler = make_user(db, role=Role.labeler, projects=[project])
    base = make_version(db, project, kind="base", name="tiny base")
    training_round = make_round(db, project, status="labeling", policy_in_id=base.id)
    tasks = [make_round_task(db, project, training_round) for _ in range(2)]
    make_ranking(db, tasks[0], labeler, [[c] for c in tasks[0].completion_ids])
    url = f"/admin/rounds/{training_round.id}"
    html = client.get(url, headers=HX).text
    assert "data-rankings>1 / 4<" in html and "25% covered" in html and "not reached yet" in html
    assert step_states(html)["Labeling"] == "current" and "Start training now" in html
    response = client.post(f"{url}/start-training", data={"csrf_token": csrf}, headers=HX)
    assert response.status_code == 200 and 'data-status="training_reward"' in response.text
    assert 'hx-trigger="every 2s"' in response.text
    fresh(db)
    assert db.get(TrainingRound, training_round.id).status == "training_reward"
    assert "forced by an admin" in client.get(url).text


def test_a_refused_action_is_shown_in_the_page(client, db):
    _admin, csrf = admin_client(client, db)
    training_round = make_round(db, make_project(db), status="generating")
    response = client.post(f"/admin/rounds/{training_round.id}/start-training", data={"csrf_token": csrf}, headers=HX)
    assert response.status_code == 409
    assert 'class="error banner" role="alert"' in response.text and "training starts from labeling" in response.text
    finished = make_round(db, db.get(Project, training_round.project_id), number=1, status="done")
    plain = client.post(f"/admin/rounds/{finished.id}/retry", data={"csrf_token": csrf})
    assert plain.status_code == 409 and "<html" in plain.text and "only a failed or running round" in plain.text
    fresh(db)
    assert db.get(TrainingRound, training_round.id).status == "generating"
    assert db.get(TrainingRound, finished.id).status == "done"


def test_cancel_and_retry(client, db):
    _admin, csrf = admin_client(client, db)
    project = make_project(db)
    running = make_round(db, project, number=0, status="training_reward")
    response = client.post(f"/admin/rounds/{running.id}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/admin/rounds/{running.id}"
    fresh(db)
    assert db.get(TrainingRound, running.id).status == "cancelled"
    failed = make_round(db, project, number=1, status="failed", error_step="training_policy", error_message="boom")
    response = client.post(f"/admin/rounds/{failed.id}/retry", data={"csrf_token": csrf}, headers=HX)
    assert response.status_code == 200
    assert 'data-status="training_policy"' in response.text and "boom" not in response.text
    fresh(db)
    row = db.get(TrainingRound, failed.id)
    assert (row.status, row.error_message) == ("training_policy", None)


def test_rounds_list(client, db):
    admin_client(client, db)
    project = make_project(db)
    other = make_project(db)
    make_round(db, project, number=0, status="done")
    make_round(db, project, number=1, status="labeling")
    make_round(db, other, number=7, status="labeling")
    html = client.get(f"/admin/projects/{project.id}/rounds").text
    assert re.findall(r">Round (\d+)</a>", html) == ["1", "0"]
    assert 'class="status status-labeling">Labeling<' in html and 'class="status status-done">Done<' in html
    assert f'href="/admin/projects/{project.id}/rounds/new"' in html
    project_page = client.get(f"/admin/projects/{project.id}").text
    for path in ("rounds/new", "rounds", "models"):
        assert f'href="/admin/projects/{project.id}/{path}"' in project_page
