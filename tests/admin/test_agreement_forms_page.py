"""Feedback-form agreement read from the database (both backends) and shown on the admin page."""

import pytest

from app.admin import form_stats, stats
from app.models import Role
from tests.admin.forms_data import form_project, form_task, pairwise_judgment, rating_judgment
from tests.admin.helpers import admin_client
from tests.factories import make_user


def _users(db, project, n):
    return [make_user(db, role=Role.labeler, projects=[project]) for _ in range(n)]


def _measure(report, key):
    return next(m for m in report.measures if m.key == key)


def test_pairwise_verdicts_compare_completions_not_sides(db):
    project = form_project(db, "pairwise")
    a, b, c = _users(db, project, 3)
    t1 = form_task(db, project, texts=["x", "y"])
    t2 = form_task(db, project, texts=["u", "v"])
    x, y = t1.completion_ids
    # On t1 a saw (x, y) and b saw (y, x): both said the first completion (x) is better, a as "A",
    # b as "B". c says y. On t2 a and b say tie, c both bad. Sides are irrelevant to agreement.
    pairwise_judgment(db, t1, a, "first", sides=(x, y))
    pairwise_judgment(db, t1, b, "first", sides=(y, x))
    pairwise_judgment(db, t1, c, "second", sides=(x, y))
    pairwise_judgment(db, t2, a, "tie")
    pairwise_judgment(db, t2, b, "tie", sides=tuple(reversed(t2.completion_ids)))
    pairwise_judgment(db, t2, c, "both_bad")
    report = form_stats.project_form_agreement(db, project_id=project.id, form_settings=project.form_settings)
    (m,) = report.measures
    assert (m.key, m.units, m.comparisons, m.agreeing) == ("pairwise", 2, 6, 2)
    # Fleiss: P_1 = P_2 = 2/6 -> P-bar 1/3; first 2, second 1, tie 2, both_bad 1 of 6:
    # P_e = (4 + 1 + 4 + 1) / 36 = 10/36 -> kappa = (12/36 - 10/36) / (26/36) = 1/13.
    assert m.kappa == pytest.approx(1 / 13)
    assert m.per_labeler[a.id].agreement_pct == 50.0 and m.per_labeler[c.id].agreement_pct == 0.0
    # c never uses a category the others use: observed and chance agreement are both 0 -> kappa 0.
    # a vs others: (f,f) (f,s) (t,t) (t,bb): p_o = 1/2; a: f 2, t 2; others: f 1, s 1, t 1, bb 1
    # -> p_e = (2*1 + 2*1) / 16 = 1/4 -> kappa = (1/2 - 1/4) / (3/4) = 1/3.
    assert m.per_labeler[c.id].kappa == 0.0
    assert m.per_labeler[a.id].kappa == pytest.approx(1 / 3)
    assert report.emails[c.id] == c.email
    # The ranking figures leave the pairwise form's two-completion rankings out (tau-b on a tie
    # against a win would read as disagreement on an order nobody gave).
    assert stats.project_agreement(db, project_id=project.id).overall.comparisons == 0


def test_likert_and_good_bad_measures(db):
    likert = form_project(db, "likert")
    a, b = _users(db, likert, 2)
    task = form_task(db, likert, texts=["p", "q", "r"])
    p, q, r = task.completion_ids
    # Units [1,1], [2,3], [3,3] (tests/admin/test_agreement_forms_stats.py): alpha interval 24/29,
    # ordinal 7/9. A third completion rated by one labeler only is not a unit.
    rating_judgment(db, task, a, {p: 1, q: 2, r: 3})
    rating_judgment(db, task, b, {p: 1, q: 3, r: 3})
    lone = form_task(db, likert, texts=["s"])
    rating_judgment(db, lone, a, {lone.completion_ids[0]: 7})
    m = _measure(
        form_stats.project_form_agreement(db, project_id=likert.id, form_settings=likert.form_settings), "likert"
    )
    assert (m.units, m.judgments, m.agreeing) == (3, 6, 2)
    assert m.alpha_interval == pytest.approx(24 / 29) and m.alpha_ordinal == pytest.approx(7 / 9)
    assert m.per_labeler[a.id].alpha_interval == pytest.approx(24 / 29)

    good_bad = form_project(db, "good_bad")
    c, d = _users(db, good_bad, 2)
    task = form_task(db, good_bad, texts=["1", "2", "3", "4"])
    w, x, y, z = task.completion_ids
    rating_judgment(db, task, c, {w: "good", x: "good", y: "bad", z: "bad"})
    rating_judgment(db, task, d, {w: "good", x: "bad", y: "bad", z: "bad"})
    m = _measure(form_stats.project_form_agreement(db, project_id=good_bad.id, form_settings={}), "good_bad")
    # 4 units, 3 agree. Fleiss (Scott's pi): good 3/8, bad 5/8 -> P_e = 34/64; P-bar = 3/4 ->
    # (48/64 - 34/64) / (30/64) = 14/30. Cohen (c vs d): c good 2/4, d good 1/4 ->
    # p_e = (2*1 + 2*3) / 16 = 1/2 -> (3/4 - 1/2) / (1/2) = 1/2.
    assert m.agreement_pct == 75.0 and m.kappa == pytest.approx(14 / 30)
    assert m.per_labeler[c.id].kappa == pytest.approx(0.5) == m.per_labeler[d.id].kappa


def test_multi_aspect_measures_each_aspect_by_its_scale(db):
    project = form_project(db, "multi_aspect")
    a, b = _users(db, project, 2)
    task = form_task(db, project, texts=["one", "two", "three"])
    i, j, k = task.completion_ids
    # helpfulness identical; honesty reversed; style (ranked) and the overall ranking agree.
    rating_judgment(
        db,
        task,
        a,
        {
            i: {"": 0, "helpfulness": 5, "honesty": 1, "style": 0},
            j: {"": 1, "helpfulness": 3, "honesty": 3, "style": 1},
            k: {"": 2, "helpfulness": 1, "honesty": 5, "style": 1},
        },
    )
    rating_judgment(
        db,
        task,
        b,
        {
            i: {"": 0, "helpfulness": 5, "honesty": 5, "style": 0},
            j: {"": 1, "helpfulness": 3, "honesty": 3, "style": 1},
            k: {"": 2, "helpfulness": 1, "honesty": 1, "style": 1},
        },
    )
    report = form_stats.project_form_agreement(db, project_id=project.id, form_settings=project.form_settings)
    assert [m.key for m in report.measures] == [
        "overall_ranking",
        "aspect:helpfulness",
        "aspect:honesty",
        "aspect:style",
    ]
    overall, helpful, honest, style = report.measures
    assert helpful.alpha_interval == pytest.approx(1.0) and helpful.alpha_ordinal == pytest.approx(1.0)
    assert honest.alpha_interval < 0 and honest.label == "Honest (Likert)"
    assert style.label == "Style (ranked)" and not style.interval and style.alpha_interval is None
    assert style.alpha_ordinal == pytest.approx(1.0) and overall.alpha_ordinal == pytest.approx(1.0)


def test_admin_page_shows_form_agreement_beside_ranking_figures(client, db):
    project = form_project(db, "likert", name="rated")
    a, b = _users(db, project, 2)
    task = form_task(db, project, texts=["p", "q", "r"])
    p, q, r = task.completion_ids
    rating_judgment(db, task, a, {p: 1, q: 2, r: 3})
    rating_judgment(db, task, b, {p: 1, q: 3, r: 3})
    admin_client(client, db)
    page = client.get(f"/admin/projects/{project.id}").text
    section = " ".join(page.split('id="form-agreement"')[1].split("</section>")[0].split())
    assert "Agreement on the likert form" in section
    assert "On 3 completions judged by two or more labelers (3 labeler pairs)" in section
    assert "same answer <strong>66.7%</strong>" in section
    assert "ordinal <strong>0.78</strong>, interval <strong>0.83</strong>" in section  # 7/9, 24/29
    assert a.email in section and b.email in section
    assert 'id="evaluation-agreement"' in page  # today's figures are still there


def test_ranking_project_page_has_no_form_section(client, db):
    project = form_project(db, "pairwise")
    project.feedback_form = "ranking"
    db.commit()
    admin_client(client, db)
    page = client.get(f"/admin/projects/{project.id}").text
    assert 'id="form-agreement"' not in page
