"""The admin's demonstrations page: the numbers on constructed data, the latest answers rendered
without running anything in them, and the download link. Both backends."""

from __future__ import annotations

import json
import re

from app.demonstrations import stats
from tests.demonstrations.data_helpers import write_demonstration
from tests.factories import login, make_project, make_user


def _constructed(db):
    """Labeler A: reviewed accept (2 words, 10 s), reviewed reject (4 words, 20 s), pending
    (6 words, 30 s). Labeler B: two accepted without review (1 and 3 words; 5 s and no time).
    One upload (5 words)."""
    project = make_project(db, demonstration_review=True)
    a = make_user(db, email="a@example.com", projects=[project])
    b = make_user(db, email="b@example.com", projects=[project])
    reviewer = make_user(db, email="r@example.com", projects=[project])
    write_demonstration(db, project.id, a, "two words", reviewer=reviewer, time_spent_ms=10_000)
    write_demonstration(
        db, project.id, a, "one two three four", status="rejected", reviewer=reviewer, time_spent_ms=20_000
    )
    write_demonstration(db, project.id, a, "a b c d e f", status="pending_review", time_spent_ms=30_000)
    write_demonstration(db, project.id, b, "single", time_spent_ms=5_000)
    write_demonstration(db, project.id, b, "x y\nz")
    write_demonstration(db, project.id, None, "uploaded answer of five words")
    return project


def test_the_numbers_on_constructed_data(db):
    project = _constructed(db)
    report = stats.project_stats(db, project_id=project.id)
    assert report.total == 6
    assert dict(report.by_status) == {"accepted": 4, "rejected": 1, "pending_review": 1}
    assert dict(report.by_source) == {"labeler": 5, "upload": 1}
    assert report.acceptance_rate == 50.0
    assert report.median_words == 3.5  # of 2, 4, 6, 1, 3, 5
    assert report.median_seconds == 15.0  # of 10, 20, 30, 5 (one without a time)

    a, b, uploaded = report.authors
    assert (a.label, a.written, a.reviewed, a.acceptance_rate, a.median_words, a.median_seconds) == (
        "a@example.com",
        3,
        2,
        50.0,
        4,
        20.0,
    )
    assert (b.label, b.written, b.reviewed, b.acceptance_rate, b.median_words, b.median_seconds) == (
        "b@example.com",
        2,
        0,
        None,  # accepted without review: no rate
        2,
        5.0,
    )
    assert (uploaded.label, uploaded.user, uploaded.written, uploaded.median_words) == ("uploaded", None, 1, 5)


def _cell(html: str, author: str, name: str) -> str:
    row = re.search(rf'<tr data-author="{re.escape(author)}">(.*?)</tr>', html, re.S).group(1)
    return re.search(rf"<td[^>]*data-{name}>(.*?)</td>", row, re.S).group(1).strip()


def test_the_admin_page_shows_them_and_escapes_untrusted_text(client, db):
    project = _constructed(db)
    admin = make_user(db, role="admin")
    script = write_demonstration(
        db,
        project.id,
        make_user(db, email="evil@example.com"),
        'Look: <script>alert("x")</script> and [link](javascript:alert(1)) **bold**',
        prompt_text="<img src=x onerror=alert(2)>",
    )
    login(client, admin)
    response = client.get(f"/admin/projects/{project.id}/demonstrations")
    assert response.status_code == 200
    html = response.text
    assert re.search(r"data-total>\s*7<", html)
    assert re.search(r'data-status="pending_review">\s*1<', html)
    assert _cell(html, "a@example.com", "acceptance") == "50.0%"
    assert _cell(html, "a@example.com", "median-words") == "4 words"
    assert _cell(html, "a@example.com", "median-time") == "20.0 s"
    assert _cell(html, "b@example.com", "acceptance") == "—"

    latest = re.search(rf'<article class="demonstration" data-demonstration="{script.id}">(.*?)</article>', html, re.S)
    shown = latest.group(1)
    assert "<script" not in shown and "&lt;script&gt;" in shown
    assert "<img" not in shown and "&lt;img src=x onerror=alert(2)&gt;" in shown
    assert "javascript:" not in shown.replace("[link](javascript:alert(1))", "")
    assert "<strong>bold</strong>" in shown  # markdown still renders


def test_the_project_page_links_to_it_and_the_download_is_admin_only(client, other_client, db):
    project = _constructed(db)
    write_demonstration(db, project.id, None, "Reviewed?", reviewed_response=None)
    login(client, make_user(db, role="admin"))
    assert f'href="/admin/projects/{project.id}/demonstrations"' in client.get(f"/admin/projects/{project.id}").text

    url = f"/admin/projects/{project.id}/demonstrations/export.jsonl"
    response = client.get(url, params={"format": "prompt_completion", "style": "standard"})
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    rows = [json.loads(line) for line in response.text.splitlines()]
    assert [r["completion"] for r in rows] == [
        "two words",
        "single",
        "x y\nz",
        "uploaded answer of five words",
        "Reviewed?",
    ]
    assert set(rows[0]) == {"id", "prompt", "completion"}

    login(other_client, make_user(db, projects=[project]))
    assert other_client.get(url).status_code == 403
    assert other_client.get(f"/admin/projects/{project.id}/demonstrations").status_code == 403
