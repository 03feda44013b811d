"""Per-labeler counts, median time and agreement on hand-made overlapped rankings."""

import pytest

from app.admin import stats
from app.models import Role
from tests.admin.helpers import admin_client
from tests.factories import make_eval_task, make_project, make_ranking, make_task, make_user


@pytest.fixture
def labeled(db):
    """Three labelers; t1 ranked identically by a and b, t2 ranked oppositely by a and c, t3 by a alone."""
    project = make_project(db, overlap=2)
    a, b, c = (make_user(db, email=f"{name}@example.com", projects=[project]) for name in "abc")
    idle = make_user(db, email="idle@example.com", projects=[project])
    t1, t2, t3 = (make_task(db, project, k=4) for _ in range(3))
    best_first = lambda task: [[cid] for cid in task.completion_ids]  # noqa: E731
    make_ranking(db, t1, a, best_first(t1), time_spent_ms=10_000)
    make_ranking(db, t1, b, best_first(t1), time_spent_ms=20_000)
    make_ranking(db, t2, a, best_first(t2), time_spent_ms=30_000)
    make_ranking(db, t2, c, best_first(t2)[::-1], time_spent_ms=4_000)
    make_ranking(db, t3, a, [t3.completion_ids[:2], t3.completion_ids[2:]])  # no time reported
    return project, {"a": a, "b": b, "c": c, "idle": idle}


def test_labeler_counts_and_median_time(db, labeled):
    project, users = labeled
    rows = {row.user.email: row for row in stats.labeler_stats(db, project_id=project.id)}
    assert set(rows) == {"a@example.com", "b@example.com", "c@example.com", "idle@example.com"}
    assert rows["a@example.com"].rankings == 3
    assert rows["a@example.com"].median_seconds == 20.0  # median of 10 s and 30 s; the untimed one is left out
    assert rows["b@example.com"].median_seconds == 20.0
    assert rows["c@example.com"].median_seconds == 4.0
    assert rows["idle@example.com"].rankings == 0 and rows["idle@example.com"].median_seconds is None


def test_rating_form_judgments_count_as_answers(db):
    from app.models import Feedback

    project = make_project(db, feedback_form="likert", k_min=1, k_max=9)
    rater = make_user(db, email="rater@example.com", projects=[project])
    for spent in (6_000, 8_000):
        task = make_task(db, project, k=2)
        task.kind = "likert"
        db.add(Feedback(task_id=task.id, user_id=rater.id, project_id=project.id, form="likert", time_spent_ms=spent))
    db.commit()
    (row,) = stats.labeler_stats(db, project_id=project.id)
    assert (row.rankings, row.median_seconds) == (2, 7.0) and row.last_ranking_at is not None


def test_agreement_on_overlapped_tasks(db, labeled):
    project, users = labeled
    report = stats.project_agreement(db, project_id=project.id)
    # t1: a vs b agree on 6/6 pairs, tau 1. t2: a vs c agree on 0/6, tau -1. t3 has one ranking.
    assert report.overall.comparisons == 2 and len(report.overall.tasks) == 2
    assert report.overall.agreement_pct == 50.0 and report.overall.mean_tau_b == 0.0
    assert report.per_labeler[users["a"].id].agreement_pct == 50.0
    assert report.per_labeler[users["b"].id].mean_tau_b == 1.0
    assert report.per_labeler[users["c"].id].agreement_pct == 0.0
    assert users["idle"].id not in report.per_labeler


def test_project_page_shows_the_numbers(client, db, labeled):
    project, users = labeled
    admin_client(client, db)
    page = client.get(f"/admin/projects/{project.id}").text
    row_a = page.split("a@example.com")[1].split("</tr>")[0]
    cells = [cell.split(">", 1)[1] for cell in row_a.split("</td>")[1:7]]
    assert cells == ["3", "0", "20.0 s", "50.0%", "0.00", "2"]
    row_c = page.split("c@example.com")[1].split("</tr>")[0]
    assert "4.0 s" in row_c and "0.0%" in row_c and "-1.00" in row_c
    assert "on 2 overlapped tasks" in page and "agreement <strong>50.0%</strong>" in page
    assert "<dt>Rankings</dt><dd>5</dd>" in page


def test_rankings_by_an_admin_outside_membership_are_listed(client, db, labeled):
    project, _users = labeled
    admin = make_user(db, role=Role.admin, email="boss@example.com")
    task = make_task(db, project)
    make_ranking(db, task, admin, [[cid] for cid in task.completion_ids], time_spent_ms=1500)
    rows = {row.user.email: row for row in stats.labeler_stats(db, project_id=project.id)}
    assert rows["boss@example.com"].is_member is False and rows["boss@example.com"].median_seconds == 1.5


@pytest.fixture
def judged(db):
    """A ranking task and three blind evaluation tasks (x, y its two completions), overlap 3:
    e1: a and b prefer x (a saw x on the left, b on the right: different sides, same verdict), c y;
    e2: a and b tie, c says both bad; e3: a alone. Worked out by hand: pairs (a,b) (a,c) (b,c) on
    e1 and e2 -> 2 of 6 agree; a 2 of 4, b 2 of 4, c 0 of 4."""
    project = make_project(db, overlap=3)
    a, b, c = (make_user(db, email=f"{name}@example.com", projects=[project]) for name in "abc")
    ranked = make_task(db, project, k=4)
    order = [[cid] for cid in ranked.completion_ids]
    make_ranking(db, ranked, a, order, time_spent_ms=10_000)
    make_ranking(db, ranked, b, order, time_spent_ms=12_000)
    e1, e2, e3 = (make_eval_task(db, project) for _ in range(3))
    x, y = e1.completion_ids
    make_ranking(db, e1, a, [[x], [y]], display_order=[x, y], time_spent_ms=2_000)
    make_ranking(db, e1, b, [[x], [y]], display_order=[y, x], time_spent_ms=2_000)
    make_ranking(db, e1, c, [[y], [x]], display_order=[x, y])
    tie = [list(e2.completion_ids)]
    make_ranking(db, e2, a, tie, time_spent_ms=1_000)
    make_ranking(db, e2, b, tie)
    make_ranking(db, e2, c, tie, none_acceptable=True)
    make_ranking(db, e3, a, [[e3.completion_ids[1]], [e3.completion_ids[0]]])
    return project, {"a": a, "b": b, "c": c}


def test_evaluation_verdicts_are_measured_apart_from_rankings(db, judged):
    project, users = judged
    report = stats.project_agreement(db, project_id=project.id)
    # Ranking agreement: the ranking task only (a and b identical), no evaluation task in it.
    assert report.overall.comparisons == 1 and report.overall.agreement_pct == 100.0
    assert report.overall.mean_tau_b == 1.0 and users["c"].id not in report.per_labeler
    verdicts = report.evaluation
    assert (verdicts.overall.comparisons, verdicts.overall.agreeing, len(verdicts.overall.tasks)) == (6, 2, 2)
    assert verdicts.overall.agreement_pct == pytest.approx(100 * 2 / 6)
    assert verdicts.per_labeler[users["a"].id].agreement_pct == 50.0
    assert verdicts.per_labeler[users["b"].id].agreement_pct == 50.0
    assert verdicts.per_labeler[users["c"].id].agreement_pct == 0.0


def test_judgments_are_counted_apart_and_kept_out_of_the_ranking_median(db, judged):
    project, _users = judged
    rows = {row.user.email: row for row in stats.labeler_stats(db, project_id=project.id)}
    assert (rows["a@example.com"].rankings, rows["a@example.com"].judgments) == (1, 3)
    assert rows["a@example.com"].median_seconds == 10.0  # the 2 s and 1 s verdicts are not rankings
    assert (rows["c@example.com"].rankings, rows["c@example.com"].judgments) == (0, 2)
    assert rows["c@example.com"].median_seconds is None


def test_project_page_shows_the_evaluation_agreement_apart(client, db, judged):
    project, _users = judged
    admin_client(client, db)
    page = client.get(f"/admin/projects/{project.id}").text
    row_a = page.split("a@example.com")[1].split("</tr>")[0]
    cells = [cell.split(">", 1)[1] for cell in row_a.split("</td>")[1:9]]
    # Rankings, skips, median, ranking agreement, tau-b, shared ranking tasks; eval judgments, same verdict.
    assert cells == ["1", "0", "10.0 s", "100.0%", "1.00", "1", "3", "50.0%"]
    row_c = page.split("c@example.com")[1].split("</tr>")[0]
    assert [cell.split(">", 1)[1] for cell in row_c.split("</td>")[1:9]][-2:] == ["2", "0.0%"]
    assert "on 1 overlapped task (1 labeler pairs): agreement <strong>100.0%</strong>" in " ".join(page.split())
    evaluation = " ".join(page.split('id="evaluation-agreement">')[1].split("</p>")[0].split())
    assert evaluation.startswith(
        "Blind evaluations, on 2 overlapped tasks (6 labeler pairs): same verdict <strong>33.3%</strong>"
    )
